//! CPU time, for the benchmarks: of this thread, and of named threads of this process.

/// CPU time this thread has used, seconds.
pub fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU time the live threads of this process named `name` have used, seconds (the
/// scheduler's count, to the nanosecond).
pub fn threads_cpu(name: &str) -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("list this process's threads") {
        let path = task.expect("a thread").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        // A thread may end between the listing and this read.
        if let Ok(schedstat) = std::fs::read_to_string(path.join("schedstat")) {
            let on_cpu = schedstat
                .split_whitespace()
                .next()
                .expect("a schedstat line");
            ns += on_cpu.parse::<u64>().expect("nanoseconds on the CPU");
        }
    }
    ns as f64 / 1e9
}
