//! The broker's clock following the provider simulators' clock, so both sides agree on "570 s later"
//! and "31 days later" when a test moves time.

use broker_core::clock::Clock;
use chrono::{DateTime, Utc};
use provider_simulators::SimClock;

pub struct SimulatorClock(pub SimClock);

impl Clock for SimulatorClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.now()
    }
}
