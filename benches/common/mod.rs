//! Helpers shared by the benchmarks: settings from the environment, medians.

/// `name` from the environment as a number, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU time (user + system) of this process's threads whose name starts
/// with `prefix`, in µs, from `/proc/self/task/*/stat` (Linux; ticks of
/// USER_HZ, which is 100 on Linux, so 10 ms resolution: measure over
/// seconds). Threads that ended are not counted.
#[allow(dead_code)] // not every bench uses it
pub fn thread_cpu_us(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut total = 0.0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end().starts_with(prefix) {
            total += stat_cpu_us(&task.path().join("stat"));
        }
    }
    total
}

/// CPU time (user + system) of the calling thread so far, in µs, with the
/// resolution of [`thread_cpu_us`].
#[allow(dead_code)] // not every bench uses it
pub fn current_thread_cpu_us() -> f64 {
    stat_cpu_us(std::path::Path::new("/proc/thread-self/stat"))
}

/// utime + stime of one `/proc/…/stat` file, in µs (0 if unreadable).
fn stat_cpu_us(path: &std::path::Path) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised name: state is the 1st, utime the 12th
    // and stime the 13th.
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split(' ').collect();
    if f.len() <= 12 {
        return 0.0;
    }
    let ticks = f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0);
    ticks as f64 * 10_000.0
}
