//! `ferry log inspect|dump|verify` run as the real binary against a data
//! directory written through the library.

use ferry::log::{Log, LogOptions};
use std::path::Path;

mod common;

use common::{ferry_cli as ferry, text};

/// A data dir with 60 records over several segments: JSON, text and binary payloads.
fn make_data_dir(root: &Path) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let log = Log::open(
        &root.join("log"),
        LogOptions {
            segment_bytes: 1024,
            min_free_bytes: 0,
            ..LogOptions::default()
        },
    )
    .unwrap();
    let mut names = Vec::new();
    rt.block_on(async {
        for i in 0..60u64 {
            let p = match i % 3 {
                0 => format!(r#"{{"type":"track","event":"e{i}","n":{i}}}"#).into_bytes(),
                1 => format!("plain text {i}").into_bytes(),
                _ => vec![0xff, 0xfe, i as u8],
            };
            log.append(vec![p]).await.unwrap();
        }
    });
    drop(log);
    for e in std::fs::read_dir(root.join("log")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            names.push(name);
        }
    }
    names.sort();
    names
}

#[test]
fn inspect_lists_every_segment_and_totals() {
    let tmp = tempfile::tempdir().unwrap();
    let segments = make_data_dir(tmp.path());
    assert!(segments.len() > 2);
    let out = ferry(&["log", "inspect", "--data-dir", tmp.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for name in &segments {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"));
        assert!(row.ends_with("ok"), "{row}");
    }
    assert!(
        stdout.contains(&format!("total: {} segments, 60 records", segments.len())),
        "{stdout}"
    );
    assert!(stdout.contains("offsets [0, 60)"), "{stdout}");

    let out = ferry(&[
        "log",
        "inspect",
        "--json",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = doc["segments"].as_array().unwrap();
    assert_eq!(rows.len(), segments.len());
    let total: u64 = rows.iter().map(|r| r["records"].as_u64().unwrap()).sum();
    assert_eq!(total, 60);
    assert_eq!(rows[0]["first_offset"], 0);
}

#[test]
fn dump_prints_json_lines_from_an_offset() {
    let tmp = tempfile::tempdir().unwrap();
    make_data_dir(tmp.path());
    let out = ferry(&[
        "log",
        "dump",
        "--data-dir",
        tmp.path().to_str().unwrap(),
        "--from",
        "30",
        "--limit",
        "4",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["offset"], 30);
    assert_eq!(lines[0]["payload"]["event"], "e30");
    assert_eq!(lines[1]["payload_text"], "plain text 31");
    assert!(lines[2]["payload_base64"].is_string());
    assert_eq!(lines[3]["offset"], 33);
    // Whole log by default.
    let out = ferry(&["log", "dump", "--data-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(text(&out.stdout).lines().count(), 60);
    // Past the end: a clear error.
    let out = ferry(&[
        "log",
        "dump",
        "--data-dir",
        tmp.path().to_str().unwrap(),
        "--from",
        "61",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("offset 61 is outside the log [0, 60)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn verify_is_clean_then_reports_corruption_with_segment_and_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let segments = make_data_dir(tmp.path());
    let dd = tmp.path().to_str().unwrap();
    let out = ferry(&["log", "verify", "--data-dir", dd]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("verify: ok, 60 records"));

    // A torn tail (as a crash leaves it) is a warning, not a failure.
    let last = tmp.path().join("log").join(segments.last().unwrap());
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[0u8; 100]);
    std::fs::write(&last, &bytes).unwrap();
    let out = ferry(&["log", "verify", "--data-dir", dd]);
    assert!(out.status.success());
    assert!(
        text(&out.stdout).contains("warning:"),
        "{}",
        text(&out.stdout)
    );

    // A flipped byte in a sealed segment is an error naming file and byte.
    let victim = tmp.path().join("log").join(&segments[1]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[32 + 24 + 2] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();
    let out = ferry(&["log", "verify", "--data-dir", dd]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("error: {} at byte 32:", victim.display())),
        "{stdout}"
    );
    let out = ferry(&["log", "inspect", "--data-dir", dd]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("CORRUPT at byte 32"));
}

#[test]
fn missing_and_foreign_directories_get_a_sentence_and_non_zero_exit() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope");
    let out = ferry(&["log", "inspect", "--data-dir", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );

    let out = ferry(&["log", "verify", "--data-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a ferry data directory"),
        "{}",
        text(&out.stderr)
    );

    std::fs::create_dir(tmp.path().join("log")).unwrap();
    std::fs::write(tmp.path().join("log").join("notes.txt"), "hi").unwrap();
    let out = ferry(&["log", "dump", "--data-dir", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("holds no segment files"),
        "{}",
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn log_commands_do_not_modify_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let segments = make_data_dir(tmp.path());
    let last = tmp.path().join("log").join(segments.last().unwrap());
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(b"garbage tail");
    std::fs::write(&last, &bytes).unwrap();
    for cmd in ["inspect", "dump", "verify"] {
        ferry(&["log", cmd, "--data-dir", tmp.path().to_str().unwrap()]);
        assert_eq!(
            std::fs::read(&last).unwrap(),
            bytes,
            "{cmd} changed the log"
        );
    }
}

#[test]
fn dump_into_a_closed_pipe_ends_quietly_without_a_panic() {
    // `ferry log dump | head -1`: the reader goes away. The command must end
    // as other tools do (SIGPIPE), not panic in `println!`.
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    make_data_dir(dir.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["log", "dump", "--data-dir", dir.path().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // closed before the first record is written
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.signal() == Some(13) || out.status.success(),
        "{:?}: {stderr}",
        out.status
    );
}

/// `ferry --version` names the release and the commit it was built from;
/// `ferry man` and `ferry completions` print what packages install.
#[test]
fn version_man_page_and_completions() {
    let out = ferry(&["--version"]);
    assert!(out.status.success());
    let version = text(&out.stdout);
    assert!(
        version.starts_with(&format!("ferry {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let man = ferry(&["man"]);
    assert!(man.status.success());
    let page = text(&man.stdout);
    assert!(page.contains(".TH ferry 1"), "{page}");
    for sub in ["serve", "log", "cursors", "dlq", "config", "dedup"] {
        assert!(page.contains(sub), "the man page lists {sub}");
    }
    for (shell, marker) in [
        ("bash", "_ferry()"),
        ("zsh", "#compdef ferry"),
        ("fish", "complete -c ferry"),
    ] {
        let out = ferry(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("serve"),
            "{shell} completes the subcommands"
        );
    }
    let bad = ferry(&["completions", "nosh"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("invalid value 'nosh'"));
}
