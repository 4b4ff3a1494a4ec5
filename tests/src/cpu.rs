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
    let ns: u64 = threads_read(name, "schedstat", |schedstat| {
        let on_cpu = schedstat
            .split_whitespace()
            .next()
            .expect("a schedstat line");
        on_cpu.parse::<u64>().expect("nanoseconds on the CPU")
    });
    ns as f64 / 1e9
}

/// The part of [`threads_cpu`] spent in the kernel, seconds (in clock ticks: to 10 ms).
pub fn threads_system_cpu(name: &str) -> f64 {
    let ticks: u64 = threads_read(name, "stat", |stat| {
        // After the command's closing parenthesis: state is field 3, stime field 15.
        let fields = stat.rsplit_once(") ").expect("a stat line").1;
        let stime = fields.split_whitespace().nth(12).expect("stime");
        stime.parse::<u64>().expect("clock ticks")
    });
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / per_second as f64
}

/// The sum of `value` of the `file` in /proc of each live thread of this process named `name`.
fn threads_read(name: &str, file: &str, value: impl Fn(&str) -> u64) -> u64 {
    let mut sum = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("list this process's threads") {
        let path = task.expect("a thread").path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        // A thread may end between the listing and this read.
        if let Ok(text) = std::fs::read_to_string(path.join(file)) {
            sum += value(&text);
        }
    }
    sum
}
