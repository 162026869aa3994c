//! Build script: names the commit the binary is built from (`ferry
//! --version`), and turns on `cfg(tmpfs_tests)` where the build may mount
//! file systems, so the real full-disk tests (tests/disk_full_real.rs) run
//! there and show as ignored elsewhere.

use std::path::Path;
use std::process::Command;

fn main() {
    commit();
    println!("cargo::rustc-check-cfg=cfg(tmpfs_tests)");
    println!("cargo::rerun-if-changed=build.rs");
    // Decided again when the build runs as another user (sudo, su).
    println!("cargo::rerun-if-env-changed=USER");
    println!("cargo::rerun-if-env-changed=SUDO_UID");
    if may_mount() {
        println!("cargo::rustc-cfg=tmpfs_tests");
    }
}

/// Whether CAP_SYS_ADMIN (bit 21), which mounting a tmpfs needs and root
/// has, is among this process's effective capabilities (Linux only).
fn may_mount() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 21) != 0)
}

/// Sets `FERRY_COMMIT` for the crate: `$FERRY_COMMIT` when given (a
/// packager building from a source tarball), else the checkout's short commit
/// hash, else `unknown`.
fn commit() {
    println!("cargo::rerun-if-env-changed=FERRY_COMMIT");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let commit = std::env::var("FERRY_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]));
    println!(
        "cargo::rustc-env=FERRY_COMMIT={}",
        commit.as_deref().unwrap_or("unknown")
    );
    // Rebuilt when HEAD moves (a commit, a checkout): watch the files git
    // changes then, where they exist (a missing one would rerun every build).
    let (Some(dir), Some(common)) = (
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ) else {
        return;
    };
    let mut watch = vec![
        Path::new(&dir).join("HEAD"),
        Path::new(&common).join("packed-refs"),
    ];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(Path::new(&common).join(branch));
    }
    for path in watch.iter().filter(|p| p.exists()) {
        println!("cargo::rerun-if-changed={}", path.display());
    }
}
