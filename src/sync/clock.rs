//! Hybrid logical clock: the order every device agrees on for edits.
//!
//! An [`Hlc`] is wall time in milliseconds, a counter for events within (or ahead of) one millisecond,
//! and the device id as the final tie break, so two distinct events never compare equal.
//! A [`Clock`] issues strictly increasing values and is advanced past every remote clock it observes:
//! an edit made after seeing another edit always carries a greater clock, even when this machine's
//! wall clock is minutes behind the other's.
//!
//! Must never: go backwards (after a restart it resumes from the persisted last value), read the system
//! time itself (the caller passes `now_ms`, which keeps this pure and testable), or do I/O.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Hybrid logical clock value. Total order: wall_ms, then counter, then device (final tie break).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    /// Milliseconds since the Unix epoch (the greatest wall time seen, not necessarily this machine's).
    pub wall_ms: u64,
    /// Orders events that share `wall_ms`.
    pub counter: u32,
    /// The device that issued this value.
    pub device: String,
}

impl Hlc {
    /// The smallest clock of `device`: what a fresh [`Clock`] starts from.
    pub fn zero(device: &str) -> Hlc {
        Hlc {
            wall_ms: 0,
            counter: 0,
            device: device.to_string(),
        }
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(out, "{}.{}@{}", self.wall_ms, self.counter, self.device)
    }
}

/// Issues clock values for one device.
#[derive(Clone, Debug)]
pub struct Clock {
    device: String,
    /// The greatest clock issued or observed (may carry another device's id).
    last: Hlc,
}

impl Clock {
    /// A clock for `device`, resuming after `last` (the value persisted before a restart), if any.
    pub fn new(device: &str, last: Option<Hlc>) -> Clock {
        Clock {
            device: device.to_string(),
            last: last.unwrap_or_else(|| Hlc::zero(device)),
        }
    }

    /// A new value for a local event: strictly greater than everything seen or issued before.
    /// Uses `now_ms` when the wall clock is ahead of everything seen, else counts on from the last value.
    pub fn tick(&mut self, now_ms: u64) -> Hlc {
        let (wall_ms, counter) = if now_ms > self.last.wall_ms {
            (now_ms, 0)
        } else if self.last.counter == u32::MAX {
            // A counter that runs out borrows the next millisecond; order is all that matters.
            (self.last.wall_ms + 1, 0)
        } else {
            (self.last.wall_ms, self.last.counter + 1)
        };
        self.last = Hlc {
            wall_ms,
            counter,
            device: self.device.clone(),
        };
        self.last.clone()
    }

    /// Advances past a clock seen in a remote log, so the next local tick orders after it.
    pub fn observe(&mut self, remote: &Hlc) {
        if *remote > self.last {
            self.last = remote.clone();
        }
    }

    /// The greatest clock issued or observed: what to persist so a restart resumes after it.
    pub fn last(&self) -> &Hlc {
        &self.last
    }

    /// How many milliseconds this clock runs ahead of the wall time `now_ms` (0 if not ahead).
    /// A device whose wall clock is far in the future drags every clock that observes it forward:
    /// order stays causal, but the wall times in the logs stop meaning anything, so callers warn
    /// when this grows large.
    pub fn ahead_of(&self, now_ms: u64) -> u64 {
        self.last.wall_ms.saturating_sub(now_ms)
    }

    /// The device this clock issues values for.
    pub fn device(&self) -> &str {
        &self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_strictly_increase_even_when_wall_time_stands_still_or_goes_back() {
        let mut clock = Clock::new("a", None);
        let first = clock.tick(1_000);
        let second = clock.tick(1_000);
        let third = clock.tick(500);
        assert!(first < second && second < third);
        assert_eq!(third.wall_ms, 1_000);
        assert_eq!(third.counter, 2);
    }

    #[test]
    fn wall_time_moving_forward_resets_the_counter() {
        let mut clock = Clock::new("a", None);
        clock.tick(1_000);
        clock.tick(1_000);
        let later = clock.tick(2_000);
        assert_eq!((later.wall_ms, later.counter), (2_000, 0));
    }

    #[test]
    fn a_machine_minutes_behind_orders_its_next_edit_after_what_it_saw() {
        let mut ahead = Clock::new("ahead", None);
        let mut behind = Clock::new("behind", None);
        let seen = ahead.tick(10 * 60_000); // ten minutes ahead of `behind`
        behind.observe(&seen);
        let reply = behind.tick(0);
        assert!(reply > seen, "{reply} must order after {seen}");
        assert_eq!(reply.device, "behind");
    }

    #[test]
    fn reports_how_far_a_remote_clock_dragged_it_ahead() {
        let mut clock = Clock::new("a", None);
        clock.tick(1_000);
        assert_eq!(clock.ahead_of(1_000), 0);
        clock.observe(&Hlc {
            wall_ms: 61_000,
            counter: 0,
            device: "future".into(),
        });
        assert_eq!(clock.ahead_of(1_000), 60_000);
        assert_eq!(clock.ahead_of(100_000), 0);
    }

    #[test]
    fn device_id_breaks_ties_between_equal_wall_and_counter() {
        let mut a = Clock::new("a", None);
        let mut b = Clock::new("b", None);
        let from_a = a.tick(7);
        let from_b = b.tick(7);
        assert_ne!(from_a, from_b);
        assert!(from_a < from_b);
    }

    #[test]
    fn observing_an_older_clock_changes_nothing() {
        let mut clock = Clock::new("a", None);
        let mine = clock.tick(5_000);
        clock.observe(&Hlc {
            wall_ms: 4_000,
            counter: 9,
            device: "z".into(),
        });
        assert_eq!(clock.last(), &mine);
    }

    #[test]
    fn resumes_after_the_persisted_last_value() {
        let persisted = Hlc {
            wall_ms: 9_000,
            counter: 3,
            device: "a".into(),
        };
        let mut clock = Clock::new("a", Some(persisted.clone()));
        assert!(clock.tick(1_000) > persisted);
    }

    #[test]
    fn counter_overflow_moves_to_the_next_millisecond() {
        let mut clock = Clock::new(
            "a",
            Some(Hlc {
                wall_ms: 10,
                counter: u32::MAX,
                device: "a".into(),
            }),
        );
        let next = clock.tick(0);
        assert_eq!((next.wall_ms, next.counter), (11, 0));
    }

    #[test]
    fn displays_compactly_for_logs() {
        let hlc = Hlc {
            wall_ms: 12,
            counter: 3,
            device: "dev".into(),
        };
        assert_eq!(hlc.to_string(), "12.3@dev");
    }
}
