//! The simulated clock shared by all three providers.
//!
//! It runs with real time plus an offset rather than standing still: a person clicking through the
//! sandbox should see tokens expire as they would in production, while a test can still jump 30 days
//! ahead in a millisecond. Every expiry decision in the simulators reads this clock, never `Utc::now()`.

use chrono::{DateTime, Duration, Utc};
use std::sync::{Arc, Mutex};

/// A controllable clock. Clones share the same offset.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    offset: Arc<Mutex<Duration>>,
}

impl SimClock {
    /// A clock that starts at `start` and then runs with real time.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        let clock = Self::default();
        clock.set(start);
        clock
    }

    /// The simulated now.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + *self.offset.lock().expect("clock lock poisoned")
    }

    /// Moves simulated time forward (or back, with a negative duration).
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().expect("clock lock poisoned") += by;
    }

    /// Jumps simulated time to `to`; it keeps running from there.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.offset.lock().expect("clock lock poisoned") = to - Utc::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_now_forward_by_the_given_duration() {
        let clock = SimClock::default();
        let before = clock.now();
        clock.advance(Duration::days(30));
        let gained = clock.now() - before;
        assert!(gained >= Duration::days(30) && gained < Duration::days(30) + Duration::seconds(5));
    }

    #[test]
    fn set_jumps_to_the_given_instant() {
        let clock = SimClock::default();
        let target = DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        clock.set(target);
        assert!((clock.now() - target).num_seconds().abs() < 5);
    }
}
