//! Build script: turns on `cfg(tmpfs_tests)` where the build may mount file
//! systems, so the real full-disk tests (tests/disk_full_real.rs) run there
//! and show as ignored elsewhere. Nothing in `src/` reads it.

fn main() {
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
