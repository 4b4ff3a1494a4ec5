//! The kernel stamps flows with jiffies (a load, where a clock helper call doubled the cost of a
//! flow update); the agent turns them into CLOCK_MONOTONIC nanoseconds, the clock it keeps
//! everything else in. The kernel's tick length is not exported, so it is measured: the clock
//! program reads jiffies and the coarse monotonic clock, which advance together at each tick.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use flowmon_common::ClockSample;

/// Ticks to watch go by: enough that the jitter of when a tick is handled stays far below
/// the difference between two possible tick lengths (HZ 250 and 300 differ by 17 %).
const CALIBRATION_TICKS: u64 = 4;
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
        let first = sample(program)?;
        let started = Instant::now();
        loop {
            let last = sample(program)?;
            let ticks = last.jiffies.saturating_sub(first.jiffies);
            if ticks >= CALIBRATION_TICKS {
                let measured = last.coarse_ns.saturating_sub(first.coarse_ns) as f64 / ticks as f64;
                return Ok(Self::from_tick(measured, last));
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
    fn jiffies_convert_through_the_reference_both_ways() {
        let clock = KernelClock::test_clock();
        assert_eq!(clock.monotonic_ns(1_000), 5_000_000_000);
        assert_eq!(clock.monotonic_ns(1_250), 6_000_000_000);
        assert_eq!(clock.monotonic_ns(750), 4_000_000_000);
        assert_eq!(clock.monotonic_ns(0), 0);
    }
}
