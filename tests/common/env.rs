//! Knobs of the long and seeded tests, read from the environment.

/// The variable `name` parsed as a `T`; `default` when it is unset or does
/// not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
