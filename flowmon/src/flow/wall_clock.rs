//! Wall time for records: the agent keeps flow times in CLOCK_MONOTONIC nanoseconds (the
//! kernel's jiffies converted, `datapath::KernelClock`), records carry epoch seconds. One
//! offset, taken once, converts between them, so every record of a run agrees.

/// Nanoseconds of `clock` now.
fn now_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC now.
pub fn monotonic_ns() -> u64 {
    now_ns(libc::CLOCK_MONOTONIC)
}

#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    /// Epoch nanoseconds minus monotonic nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    pub fn new() -> Self {
        let monotonic = monotonic_ns() as i128;
        let realtime = now_ns(libc::CLOCK_REALTIME) as i128;
        Self {
            offset_ns: realtime - monotonic,
        }
    }

    /// Epoch seconds of a monotonic timestamp.
    pub fn epoch_secs(&self, monotonic_ns: u64) -> f64 {
        (monotonic_ns as i128 + self.offset_ns) as f64 / 1e9
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}
