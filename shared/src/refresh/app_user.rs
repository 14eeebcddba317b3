//! Limits a provider sets per app and user rather than per connection. Exact Online allows 200 token
//! calls per app per user per day, and blocks the app for an hour after more than 10 failed ones in an
//! hour; one Exact user may authorize several connections under one app (one per division), and
//! together they could pass either limit even though each keeps to its own.
//!
//! So before a token call the engine checks, and takes from, counters in the store ([`UsageStore`])
//! keyed by tenant, app and the provider's user: shared by every connection of that user and by every
//! process. A day's unit is taken *before* the call, so a crash after taking over-counts, which is the
//! safe side. Failed calls are counted after the answer, per UTC hour; a call is allowed only while the
//! current and the previous hour together hold fewer than the limit, so no sliding hour (which always
//! lies within two consecutive clock hours) can hold more, whatever Exact's own hour is.
//!
//! A connection whose user is not known (no binding recorded) is held to its own limits only.

use super::grant::AppUserLimits;
use crate::domain::{Connection, ProviderContext};
use crate::ports::{StoreError, UsageCounter, UsageKey, UsageStore, UsageTake, UsageWindow};
use chrono::{DateTime, Duration, Utc};

/// Which shared limit holds a connection back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AppUserHold {
    /// The day's token calls are spent.
    DailyCalls { until: DateTime<Utc> },
    /// Too many failed token calls in the last hours.
    FailedCalls { until: DateTime<Utc> },
}

impl AppUserHold {
    pub fn until(self) -> DateTime<Utc> {
        match self {
            Self::DailyCalls { until } | Self::FailedCalls { until } => until,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::DailyCalls { .. } => "token_calls_per_day",
            Self::FailedCalls { .. } => "failed_token_calls_per_hour",
        }
    }
}

/// The shared limits of one connection's provider user under its app.
#[derive(Debug, Clone)]
pub(crate) struct AppUserBudget {
    limits: AppUserLimits,
    calls: UsageKey,
}

impl AppUserBudget {
    /// `None` when the provider sets no such limit or the connection's user is not known.
    pub(crate) fn of(connection: &Connection, limits: AppUserLimits) -> Option<Self> {
        if limits == AppUserLimits::default() {
            return None;
        }
        let user = provider_user(connection)?;
        let calls = UsageKey::new(
            connection.tenant.clone(),
            connection.app.clone(),
            user,
            UsageCounter::TokenCalls,
        )?;
        Some(Self { limits, calls })
    }

    pub(crate) fn user(&self) -> &str {
        self.calls.user()
    }

    fn failures(&self) -> UsageKey {
        self.calls.with_counter(UsageCounter::FailedTokenCalls)
    }

    /// Right before a token call at `now`: `None` when it may go (a unit of the day's calls is then
    /// taken), else what holds it back and until when.
    pub(crate) async fn before_call<S: UsageStore + ?Sized>(
        &self,
        store: &S,
        now: DateTime<Utc>,
    ) -> Result<Option<AppUserHold>, StoreError> {
        if let Some(max) = self.limits.failed_token_calls_per_hour {
            let hour = UsageWindow::utc_hour(now);
            let key = self.failures();
            let this_hour = store.units_used(&key, hour).await?;
            let recent = this_hour + store.units_used(&key, hour.previous()).await?;
            if recent >= max {
                // This hour's failures count again as the previous hour's in the next one.
                let until = if this_hour >= max {
                    hour.end + Duration::hours(1)
                } else {
                    hour.end
                };
                return Ok(Some(AppUserHold::FailedCalls { until }));
            }
        }
        if let Some(max) = self.limits.token_calls_per_day {
            let day = UsageWindow::utc_day(now);
            if let UsageTake::Refused { .. } = store.take_unit(&self.calls, day, max).await? {
                return Ok(Some(AppUserHold::DailyCalls { until: day.end }));
            }
        }
        Ok(None)
    }

    /// After a token call the provider refused, at `at`. Every refusal is counted, beyond the limit
    /// too: the previous hour's count must be exact when it is added to the next one's.
    pub(crate) async fn count_failure<S: UsageStore + ?Sized>(
        &self,
        store: &S,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if self.limits.failed_token_calls_per_hour.is_some() {
            store
                .take_unit(&self.failures(), UsageWindow::utc_hour(at), u32::MAX)
                .await?;
        }
        Ok(())
    }
}

/// Who the provider counts a connection's calls under: for Exact Online the `UserID` the connection
/// is bound to (`domain::binding`).
fn provider_user(connection: &Connection) -> Option<&str> {
    match &connection.context {
        Some(ProviderContext::ExactOnline {
            user_id: Some(user),
            ..
        }) => Some(user.as_str()),
        _ => None,
    }
}

// The counters on the embedded store in memory.
#[cfg(all(test, feature = "embedded"))]
mod tests {
    use super::*;
    use crate::adapters::embedded::EmbeddedStore;
    use crate::domain::ServiceUrl;

    use chrono::TimeZone;

    fn counters() -> EmbeddedStore {
        EmbeddedStore::in_memory().unwrap()
    }

    fn connection(user: Option<&str>) -> Connection {
        let mut c = crate::fixtures::acme_connection(Utc::now());
        c.context = Some(ProviderContext::ExactOnline {
            base_url: ServiceUrl::parse("https://start.exactonline.nl").unwrap(),
            division: 1,
            user_id: user.map(str::to_string),
            divisions: vec![],
        });
        c
    }

    const LIMITS: AppUserLimits = AppUserLimits {
        token_calls_per_day: Some(3),
        failed_token_calls_per_hour: Some(4),
    };

    #[test]
    fn only_a_known_user_with_limits_shares_a_budget() {
        assert!(AppUserBudget::of(&connection(Some("U1")), LIMITS).is_some());
        assert!(AppUserBudget::of(&connection(None), LIMITS).is_none());
        assert!(AppUserBudget::of(&connection(Some("  ")), LIMITS).is_none());
        assert!(
            AppUserBudget::of(&connection(Some("U1")), AppUserLimits::default()).is_none(),
            "a provider without such limits needs no counters"
        );
        // Exact compares user ids without case; so do the counters.
        let a = AppUserBudget::of(&connection(Some(" ABC ")), LIMITS).unwrap();
        let b = AppUserBudget::of(&connection(Some("abc")), LIMITS).unwrap();
        assert_eq!(a.calls, b.calls);
    }

    #[tokio::test]
    async fn the_day_is_shared_and_ends_at_utc_midnight() {
        let store = counters();
        let noon = Utc.with_ymd_and_hms(2026, 3, 2, 12, 0, 0).unwrap();
        let first = AppUserBudget::of(&connection(Some("u1")), LIMITS).unwrap();
        let second = AppUserBudget::of(&connection(Some("u1")), LIMITS).unwrap();
        for budget in [&first, &second, &first] {
            assert_eq!(budget.before_call(&store, noon).await.unwrap(), None);
        }
        let midnight = Utc.with_ymd_and_hms(2026, 3, 3, 0, 0, 0).unwrap();
        assert_eq!(
            second.before_call(&store, noon).await.unwrap(),
            Some(AppUserHold::DailyCalls { until: midnight })
        );
        let other = AppUserBudget::of(&connection(Some("u2")), LIMITS).unwrap();
        assert_eq!(other.before_call(&store, noon).await.unwrap(), None);
        assert_eq!(first.before_call(&store, midnight).await.unwrap(), None);
    }

    #[tokio::test]
    async fn failures_count_over_this_hour_and_the_previous_one() {
        let store = counters();
        let budget = AppUserBudget::of(&connection(Some("u1")), LIMITS).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 12, 50, 0).unwrap();
        for _ in 0..3 {
            budget.count_failure(&store, at).await.unwrap();
        }
        assert_eq!(budget.before_call(&store, at).await.unwrap(), None);
        // One more in the next clock hour: four within twenty minutes, the limit.
        let next_hour = at + Duration::minutes(20);
        budget.count_failure(&store, next_hour).await.unwrap();
        let hour_end = Utc.with_ymd_and_hms(2026, 3, 2, 14, 0, 0).unwrap();
        assert_eq!(
            budget.before_call(&store, next_hour).await.unwrap(),
            Some(AppUserHold::FailedCalls { until: hour_end })
        );
        // Once the earlier hour is no longer the previous one, only the later failure counts.
        assert_eq!(budget.before_call(&store, hour_end).await.unwrap(), None);
        // A hold took no unit of the day's calls.
        assert_eq!(
            store
                .units_used(&budget.calls, UsageWindow::utc_day(at))
                .await
                .unwrap(),
            2
        );
        // The limit reached within one hour holds through the next one too.
        let later = hour_end + Duration::minutes(5);
        for _ in 0..4 {
            budget.count_failure(&store, later).await.unwrap();
        }
        assert_eq!(
            budget.before_call(&store, later).await.unwrap(),
            Some(AppUserHold::FailedCalls {
                until: hour_end + Duration::hours(2)
            })
        );
    }

    #[test]
    fn windows_are_fixed_utc_days_and_hours() {
        let at = Utc.with_ymd_and_hms(2026, 3, 2, 23, 59, 59).unwrap();
        let day = UsageWindow::utc_day(at);
        assert_eq!(
            day.start,
            Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap()
        );
        assert_eq!(day.end, Utc.with_ymd_and_hms(2026, 3, 3, 0, 0, 0).unwrap());
        let hour = UsageWindow::utc_hour(at);
        assert_eq!(
            hour.start,
            Utc.with_ymd_and_hms(2026, 3, 2, 23, 0, 0).unwrap()
        );
        assert_eq!(hour.previous().end, hour.start);
        assert_eq!(
            hour.previous().start,
            Utc.with_ymd_and_hms(2026, 3, 2, 22, 0, 0).unwrap()
        );
        assert!(day.expires_at() > day.end);
    }
}
