//! Errors as one line of text, causes included, for logs, statuses and
//! JSON answers (where no error chain is printed for us).

/// An error and its causes, outermost first, each once: a wrapper's own
/// message often names only what failed (a URL, a file), the cause says why.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_causes;

    #[derive(Debug, thiserror::Error)]
    #[error("state store /d/state.redb failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn names_each_cause_once() {
        let e = Outer(std::io::Error::other("Input/output error"));
        assert_eq!(
            with_causes(&e),
            "state store /d/state.redb failed: Input/output error"
        );
    }
}
