//! The kernel stamps flows with jiffies (a load, where a clock helper call doubled the cost of a
//! flow update); the agent turns them into CLOCK_MONOTONIC nanoseconds, the clock it keeps
//! everything else in. The kernel's tick length is not exported, so it is measured: the clock
//! program reads jiffies and the coarse monotonic clock, which advance together at each tick.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use flowmon_common::ClockSample;

/// Whole ticks to watch go by: enough that the jitter of when a tick is handled stays far
/// below the difference between two possible tick lengths (HZ 250 and 300 differ by 17 %).
const CALIBRATION_TICKS: usize = 4;
/// The slowest tick Linux offers is 10 ms (HZ=100); give up well after.
const CALIBRATION_LIMIT: Duration = Duration::from_secs(1);

/// Converts the kernel's jiffies into CLOCK_MONOTONIC nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelClock {
    tick_ns: u64,
    /// One instant in both clocks.
    reference: ClockSample,
}

impl KernelClock {
    /// Measures the tick with the clock program. Spins rather than sleeps: on a CPU that stays
    /// busy, ticks are handled on time, so both clocks advance in step.
    pub fn calibrate(program: &Xdp) -> Result<Self> {
        let started = Instant::now();
        let mut calibration = Calibration::default();
        loop {
            calibration.add(sample(program)?);
            if let Some(clock) = calibration.clock() {
                return Ok(clock);
            }
            if started.elapsed() > CALIBRATION_LIMIT {
                bail!("the kernel's jiffies did not advance in {CALIBRATION_LIMIT:?}");
            }
        }
    }

    /// The clock whose tick, measured as `measured_tick_ns`, passes through `reference`. The
    /// tick is the kernel's exact one for the nearest whole HZ (`TICK_NSEC`).
    fn from_tick(measured_tick_ns: f64, reference: ClockSample) -> Self {
        let hz = (1e9 / measured_tick_ns).round().max(1.0) as u64;
        Self {
            tick_ns: (1_000_000_000 + hz / 2) / hz,
            reference,
        }
    }

    /// CLOCK_MONOTONIC nanoseconds at the start of the tick `jiffies`; 0 stays 0 (never set).
    pub fn monotonic_ns(&self, jiffies: u64) -> u64 {
        if jiffies == 0 {
            return 0;
        }
        let ticks = jiffies as i128 - self.reference.jiffies as i128;
        (self.reference.coarse_ns as i128 + ticks * self.tick_ns as i128).max(0) as u64
    }

    /// The jiffy CLOCK_MONOTONIC `monotonic_ns` falls in.
    pub fn jiffies(&self, monotonic_ns: u64) -> u64 {
        let since = monotonic_ns as i128 - self.reference.coarse_ns as i128;
        (self.reference.jiffies as i128 + since.div_euclid(self.tick_ns as i128)).max(0) as u64
    }

    pub fn tick_ns(&self) -> u64 {
        self.tick_ns
    }

    /// A kernel at HZ=250 whose jiffy 1000 was 5 s after boot: for unit tests of what is
    /// made of blocks.
    #[cfg(test)]
    pub fn test_clock() -> Self {
        Self::from_tick(
            4_000_000.0,
            ClockSample {
                jiffies: 1_000,
                coarse_ns: 5_000_000_000,
            },
        )
    }
}

/// Samples of the two clocks, reduced to the freshest coarse time seen in each jiffy: jiffies
/// advance first and the coarse clock a moment later, so a sample taken in between pairs a new
/// jiffy with the previous tick's time, a whole tick early.
#[derive(Default)]
struct Calibration {
    freshest: Vec<ClockSample>,
}

impl Calibration {
    fn add(&mut self, sample: ClockSample) {
        match self.freshest.last_mut() {
            Some(last) if last.jiffies == sample.jiffies => {
                last.coarse_ns = last.coarse_ns.max(sample.coarse_ns);
            }
            _ => self.freshest.push(sample),
        }
    }

    /// The clock, once enough whole jiffies were seen (not the first nor the latest: those
    /// were only seen in part).
    fn clock(&self) -> Option<KernelClock> {
        let [_, whole @ .., _] = self.freshest.as_slice() else {
            return None;
        };
        if whole.len() <= CALIBRATION_TICKS {
            return None;
        }
        let (first, last) = (whole[0], whole[whole.len() - 1]);
        let ticks = last.jiffies - first.jiffies;
        let measured = last.coarse_ns.saturating_sub(first.coarse_ns) as f64 / ticks as f64;
        Some(KernelClock::from_tick(measured, last))
    }
}

fn sample(program: &Xdp) -> Result<ClockSample> {
    let frame = [0u8; 64];
    let mut out = [0u8; 64];
    program
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .context("run the clock program")?;
    let word = |at: usize| u64::from_ne_bytes(out[at..at + 8].try_into().expect("8 bytes"));
    Ok(ClockSample {
        jiffies: word(0),
        coarse_ns: word(8),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_measured_tick_snaps_to_the_kernels_tick_for_its_hz() {
        let reference = ClockSample {
            jiffies: 1_000,
            coarse_ns: 5_000_000_000,
        };
        for (measured, tick) in [
            (4_000_900.0, 4_000_000),
            (3_333_100.0, 3_333_333),
            (9_990_000.0, 10_000_000),
            (1_000_050.0, 1_000_000),
        ] {
            assert_eq!(KernelClock::from_tick(measured, reference).tick_ns(), tick);
        }
    }

    #[test]
    fn samples_that_caught_a_new_jiffy_before_its_coarse_time_are_not_the_reference() {
        let mut calibration = Calibration::default();
        // HZ=250; the coarse clock shows each tick 20 us after jiffies advance.
        let tick = 4_000_000;
        for jiffy in 100..107u64 {
            let fresh = 5_000_000_000 + (jiffy - 100) * tick;
            assert!(calibration.clock().is_none());
            // Right after the jiffy: still the previous tick's time; then the fresh one.
            calibration.add(ClockSample {
                jiffies: jiffy,
                coarse_ns: fresh - tick,
            });
            calibration.add(ClockSample {
                jiffies: jiffy,
                coarse_ns: fresh + 20_000,
            });
        }
        let clock = calibration.clock().expect("five whole jiffies seen");
        assert_eq!(clock.tick_ns(), 4_000_000);
        assert_eq!(clock.monotonic_ns(105), 5_020_020_000);
        assert_eq!(clock.monotonic_ns(106), 5_024_020_000);
    }

    #[test]
    fn jiffies_convert_through_the_reference_both_ways() {
        let clock = KernelClock::test_clock();
        assert_eq!(clock.monotonic_ns(1_000), 5_000_000_000);
        assert_eq!(clock.monotonic_ns(1_250), 6_000_000_000);
        assert_eq!(clock.monotonic_ns(750), 4_000_000_000);
        assert_eq!(clock.monotonic_ns(0), 0);
        assert_eq!(clock.jiffies(6_000_000_000), 1_250);
        assert_eq!(clock.jiffies(6_003_999_999), 1_250);
        assert_eq!(clock.jiffies(4_000_000_000), 750);
    }
}
