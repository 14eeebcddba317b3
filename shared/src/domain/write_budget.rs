//! How often a connection's credentials may be written to the vault.
//!
//! Secrets Manager keeps every version younger than 24 h and caps a secret at about 100 versions, so a
//! secret written more than ~100 times in any 24 hours starts failing (see PROVIDERS.md, "AWS limits").
//! A provider whose access tokens live a minute, refreshed on demand, would reach that in two hours.
//! Each vault slot therefore has a budget, kept as a generic cell rate algorithm (GCRA): one timestamp
//! per slot, the *theoretical arrival time* of the next write. A write at `now` is allowed when
//! `tat - burst_tolerance <= now`; it moves `tat` to `max(tat, now) + interval`. That is a token bucket
//! of `burst` writes refilled at one per `interval`, so in any window of 24 hours a slot takes at most
//! `burst + 24 h / interval` writes: [`WriteBudgetPolicy::per_day`] by construction.

use super::connection::VaultSlot;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The limit: at most `per_day` writes per slot in any 24 hours, of which `burst` may come at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBudgetPolicy {
    pub per_day: u32,
    pub burst: u32,
}

impl Default for WriteBudgetPolicy {
    /// 90 per slot per day, ten under Secrets Manager's ceiling of about 100: room for the writes a
    /// person causes (connect, reconnect, registered credentials), which are not budgeted. Exact Online
    /// in continuous use (a refresh every 570–600 s, alternating slots) needs about 75 per slot.
    fn default() -> Self {
        Self {
            per_day: 90,
            burst: 6,
        }
    }
}

impl WriteBudgetPolicy {
    /// The sustained spacing of writes to one slot.
    pub fn interval(&self) -> Duration {
        let sustained = self.per_day.saturating_sub(self.burst).max(1);
        Duration::milliseconds(Duration::days(1).num_milliseconds() / i64::from(sustained))
    }

    fn tolerance(&self) -> Duration {
        self.interval() * self.burst.saturating_sub(1) as i32
    }
}

/// The budget's state: per slot, when the next write would be on schedule (`None`: never written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultWriteBudget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    b: Option<DateTime<Utc>>,
}

impl VaultWriteBudget {
    pub fn is_empty(&self) -> bool {
        self.a.is_none() && self.b.is_none()
    }

    fn tat(&self, slot: VaultSlot) -> Option<DateTime<Utc>> {
        match slot {
            VaultSlot::A => self.a,
            VaultSlot::B => self.b,
        }
    }

    /// From when a write to `slot` is allowed (a time at or before `now`: allowed now).
    pub fn allowed_from(
        &self,
        slot: VaultSlot,
        policy: &WriteBudgetPolicy,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        self.tat(slot).map_or(now, |tat| tat - policy.tolerance())
    }

    pub fn allows(&self, slot: VaultSlot, policy: &WriteBudgetPolicy, now: DateTime<Utc>) -> bool {
        self.allowed_from(slot, policy, now) <= now
    }

    /// Records a write to `slot` at `now` (whether or not the budget allowed it: the vault counts
    /// every version).
    pub fn spend(&mut self, slot: VaultSlot, policy: &WriteBudgetPolicy, now: DateTime<Utc>) {
        let next = self.tat(slot).map_or(now, |tat| tat.max(now)) + policy.interval();
        match slot {
            VaultSlot::A => self.a = Some(next),
            VaultSlot::B => self.b = Some(next),
        }
    }

    /// Writes `slot` could still take at once at `now` (the bucket's level, rounded down).
    pub fn spare(&self, slot: VaultSlot, policy: &WriteBudgetPolicy, now: DateTime<Utc>) -> u32 {
        let Some(tat) = self.tat(slot) else {
            return policy.burst;
        };
        let backlog = (tat - now).max(Duration::zero());
        let interval = policy.interval().num_milliseconds();
        let used = (backlog.num_milliseconds() + interval - 1) / interval;
        policy.burst.saturating_sub(used as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    /// Writes a slot takes in `window` when asked every `every`: taken whenever allowed.
    fn writes_in(window: Duration, every: Duration, policy: &WriteBudgetPolicy) -> u32 {
        let mut budget = VaultWriteBudget::default();
        let mut now = t0();
        let mut taken = 0;
        while now < t0() + window {
            if budget.allows(VaultSlot::A, policy, now) {
                budget.spend(VaultSlot::A, policy, now);
                taken += 1;
            }
            now += every;
        }
        taken
    }

    #[test]
    fn a_burst_is_allowed_then_the_sustained_rate() {
        let policy = WriteBudgetPolicy::default();
        assert_eq!(policy.interval(), Duration::milliseconds(86_400_000 / 84));
        let mut budget = VaultWriteBudget::default();
        for i in 0..policy.burst {
            assert!(budget.allows(VaultSlot::A, &policy, t0()), "write {i}");
            assert_eq!(budget.spare(VaultSlot::A, &policy, t0()), policy.burst - i);
            budget.spend(VaultSlot::A, &policy, t0());
        }
        assert!(!budget.allows(VaultSlot::A, &policy, t0()));
        assert_eq!(budget.spare(VaultSlot::A, &policy, t0()), 0);
        assert_eq!(
            budget.allowed_from(VaultSlot::A, &policy, t0()),
            t0() + policy.interval()
        );
        // The other slot has its own budget.
        assert!(budget.allows(VaultSlot::B, &policy, t0()));
    }

    #[test]
    fn no_demand_pattern_exceeds_the_daily_limit_in_any_24_hours() {
        let policy = WriteBudgetPolicy::default();
        for every in [1, 10, 30, 60, 299, 600, 1_000] {
            let taken = writes_in(Duration::days(1), Duration::seconds(every), &policy);
            assert!(
                taken <= policy.per_day,
                "a demand every {every} s took {taken} writes in a day"
            );
        }
        // Demand below the sustained rate is never held back: Exact Online's 570-600 s rotation,
        // alternating slots, asks each slot every ~1,200 s.
        let exact = writes_in(Duration::days(1), Duration::seconds(1_200), &policy);
        assert_eq!(exact, 72);
    }

    #[test]
    fn it_survives_a_round_trip_and_old_records_have_none() {
        let policy = WriteBudgetPolicy::default();
        let mut budget = VaultWriteBudget::default();
        assert_eq!(serde_json::to_string(&budget).unwrap(), "{}");
        budget.spend(VaultSlot::B, &policy, t0());
        let json = serde_json::to_string(&budget).unwrap();
        assert_eq!(
            serde_json::from_str::<VaultWriteBudget>(&json).unwrap(),
            budget
        );
    }
}
