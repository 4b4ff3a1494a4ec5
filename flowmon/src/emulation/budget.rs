//! What one event may cost: a deadline on the wall clock (which bounds its CPU time from above,
//! whatever else the machine does), fuel for the interpreters' steps, and a cap on the answer.

use std::time::{Duration, Instant};

/// An emulator ran out of time or steps: its answer is abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the emulator overran its time or step budget")]
pub struct Overrun;

/// Steps between two reads of the clock.
const CLOCK_EVERY: u32 = 64;

/// The time and steps left to one event's emulation.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    fuel: u64,
    until_clock: u32,
}

impl Budget {
    pub fn new(time: Duration, fuel: u64) -> Self {
        Self {
            deadline: Instant::now() + time,
            fuel,
            until_clock: CLOCK_EVERY,
        }
    }

    /// One step of an interpreter.
    pub fn step(&mut self) -> Result<(), Overrun> {
        self.spend(1)
    }

    /// `steps` steps at once, e.g. one per kilobyte of text an operation walks.
    pub fn spend(&mut self, steps: u64) -> Result<(), Overrun> {
        self.fuel = self.fuel.checked_sub(steps).ok_or(Overrun)?;
        self.until_clock = self.until_clock.saturating_sub(1);
        if self.until_clock == 0 {
            self.until_clock = CLOCK_EVERY;
            if Instant::now() >= self.deadline {
                return Err(Overrun);
            }
        }
        Ok(())
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

/// `text` cut to at most `cap` bytes, on a character boundary.
pub fn cut(mut text: String, cap: usize) -> String {
    text.truncate(text.floor_char_boundary(cap));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuel_and_time_both_end_a_run() {
        let mut budget = Budget::new(Duration::from_secs(10), 3);
        assert_eq!(budget.step(), Ok(()));
        assert_eq!(budget.spend(2), Ok(()));
        assert_eq!(budget.step(), Err(Overrun));

        let mut budget = Budget::new(Duration::ZERO, u64::MAX);
        let steps = (0..1000).take_while(|_| budget.step().is_ok()).count();
        assert_eq!(steps, CLOCK_EVERY as usize - 1);
    }

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("héllo".into(), 2), "h");
        assert_eq!(cut("abc".into(), 5), "abc");
    }
}
