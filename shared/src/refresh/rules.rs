//! When to refresh a connection, by its provider's rules. Pure functions of the connection and the time.

use crate::domain::Connection;
use chrono::{DateTime, Duration, Utc};

/// How a provider's refresh tokens age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTokenExpiry {
    /// Lives until revoked (Twinfield: documented as 25 years).
    Never,
    /// Dies when unused for this long (Exact Online: 30 days).
    Idle(Duration),
    /// Dies this long after the grant was first issued, however often it is used (Acumatica's
    /// default: 30 days).
    Absolute(Duration),
    /// Each refresh extends it by `window`, up to `cap` after first issue when set (Acumatica's
    /// sliding expiration, 2024 R1 and later).
    Sliding {
        window: Duration,
        cap: Option<Duration>,
    },
}

/// The rules the refresh engine follows for one connection's provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRules {
    /// Refresh tokens are single use: a new one comes with every refresh (Exact Online).
    pub rotating: bool,
    pub expiry: RefreshTokenExpiry,
    /// No refresh earlier than this after the previous token was received (Exact Online: 570 s).
    pub min_interval: Option<Duration>,
    /// Refresh at least this often even when nothing else requires it, so a revoked grant is found
    /// before someone needs the connection (Twinfield: daily).
    pub health_check: Option<Duration>,
}

impl RefreshRules {
    /// The earliest moment the provider accepts a refresh of tokens received at `received_at`.
    pub fn earliest_refresh(&self, received_at: DateTime<Utc>) -> DateTime<Utc> {
        received_at + self.min_interval.unwrap_or_else(Duration::zero)
    }

    /// When the scheduled refresh should next look at a connection whose tokens were received at
    /// `received_at` and whose refresh token expires at `refresh_expires_at` (if known).
    ///
    /// - idle expiry: well before it (at five sixths of the idle period: day 25 of Exact's 30), so a
    ///   failed keep-alive still has days of retries left;
    /// - sliding expiry: at half the window, for the same reason;
    /// - absolute expiry: refreshing cannot extend it; the health check (or a weekly look) keeps the
    ///   connection's status true, and the notifier warns ahead of the end;
    /// - the health check, when shorter, wins.
    pub fn next_scheduled_refresh(
        &self,
        received_at: DateTime<Utc>,
        refresh_expires_at: Option<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        let keep_alive = match self.expiry {
            RefreshTokenExpiry::Never => None,
            RefreshTokenExpiry::Idle(idle) => Some(received_at + idle * 5 / 6),
            RefreshTokenExpiry::Sliding { window, .. } => Some(received_at + window / 2),
            RefreshTokenExpiry::Absolute(_) => Some(received_at + Duration::days(7)),
        };
        let candidates = [keep_alive, self.health_check.map(|h| received_at + h)];
        let mut next = candidates
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(received_at + Duration::days(7));
        // Never schedule past the refresh token's own end: a refresh after it would only fail.
        if let Some(end) = refresh_expires_at {
            let before_end = end - Duration::hours(1);
            if before_end < next {
                next = before_end;
            }
        }
        next.max(self.earliest_refresh(received_at))
    }

    /// Whether a refresh token ending at `end` ends there whatever the broker does: an absolute
    /// lifetime, or a sliding one that has reached its cap (within an hour: the recorded end and the
    /// grant's start come from clocks read a moment apart). Only a person can go past such an end.
    pub fn end_is_fixed(&self, end: DateTime<Utc>, grant_started_at: DateTime<Utc>) -> bool {
        match self.expiry {
            RefreshTokenExpiry::Absolute(_) => true,
            RefreshTokenExpiry::Sliding { cap: Some(cap), .. } => {
                end + Duration::hours(1) >= grant_started_at + cap
            }
            _ => false,
        }
    }

    /// When the refresh token received from a refresh at `received_at` stops working. An absolute
    /// lifetime ends where it ended (it is fixed by the grant's first issue, and the end recorded at
    /// authorization may be the partner's own figure for registered tokens); a sliding one moves on,
    /// capped from the grant's start; an idle one moves on.
    pub fn refresh_token_expiry_after_refresh(
        &self,
        received_at: DateTime<Utc>,
        grant_started_at: DateTime<Utc>,
        previous_end: Option<DateTime<Utc>>,
    ) -> Option<DateTime<Utc>> {
        match self.expiry {
            RefreshTokenExpiry::Absolute(_) => {
                previous_end.or_else(|| self.refresh_token_expiry(received_at, grant_started_at))
            }
            _ => self
                .refresh_token_expiry(received_at, grant_started_at)
                .or(previous_end),
        }
    }

    /// When a refresh token received at `received_at` stops working, if the rules say.
    /// `first_issued_at` is when the grant began (for absolute and capped sliding expiry).
    pub fn refresh_token_expiry(
        &self,
        received_at: DateTime<Utc>,
        first_issued_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self.expiry {
            RefreshTokenExpiry::Never => None,
            RefreshTokenExpiry::Idle(idle) => Some(received_at + idle),
            RefreshTokenExpiry::Absolute(lifetime) => Some(first_issued_at + lifetime),
            RefreshTokenExpiry::Sliding { window, cap } => {
                let slid = received_at + window;
                Some(cap.map_or(slid, |cap| slid.min(first_issued_at + cap)))
            }
        }
    }
}

/// Backoff before the next attempt after `consecutive` failures: exponential from one minute, capped at
/// six hours, with up to 20 % jitter so a provider outage does not end in a synchronized storm.
pub fn backoff(consecutive: u32, jitter_unit: f64) -> Duration {
    let base_secs = 60f64 * 2f64.powi(consecutive.saturating_sub(1).min(12) as i32);
    let capped = base_secs.min(6.0 * 3600.0);
    let jitter = capped * 0.2 * jitter_unit.clamp(0.0, 1.0);
    Duration::milliseconds(((capped + jitter) * 1000.0) as i64)
}

/// A random number in [0, 1) for jitter.
pub fn jitter_unit() -> f64 {
    f64::from(u32::from_le_bytes(crate::random::bytes::<4>())) / (f64::from(u32::MAX) + 1.0)
}

/// The validity a caller may demand of an access token that lived `lifetime` when it was issued: what it
/// asked for, but never more than half the lifetime.
///
/// Why half: a caller's wish is only a wish; the provider decides how long tokens live. A demand longer
/// than the whole lifetime (a 60-s wish against 60-s tokens) can never be met, and every caller refreshes
/// again: one refresh per caller instead of one per expiry. Capped at half, a token that was just issued
/// always meets the demand (its refresh took less than half its life, for any provider worth calling), so
/// callers that waited for a refresh use its token; and each token serves callers for the first half of
/// its life at least, so under steady demand it is replaced once, in its second half, while it still
/// works. An unknown lifetime (records from before it was kept) leaves the wish as it is.
pub fn required_validity(wanted: Duration, lifetime: Option<Duration>) -> Duration {
    match lifetime {
        Some(lifetime) if lifetime > Duration::zero() => wanted.min(lifetime / 2),
        _ => wanted,
    }
}

/// The access token's lifetime as issued, when the connection knows it.
pub fn access_token_lifetime(connection: &Connection) -> Option<Duration> {
    Some(connection.access_expires_at? - connection.access_issued_at?)
}

/// Whether the connection's access token is valid for the validity a caller may demand of it (see
/// [`required_validity`]) when it wants `wanted`.
pub fn access_token_fresh(connection: &Connection, now: DateTime<Utc>, wanted: Duration) -> bool {
    let required = required_validity(wanted, access_token_lifetime(connection));
    connection
        .access_expires_at
        .is_some_and(|exp| exp - required > now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
    }

    fn exact() -> RefreshRules {
        RefreshRules {
            rotating: true,
            expiry: RefreshTokenExpiry::Idle(Duration::days(30)),
            min_interval: Some(Duration::seconds(570)),
            health_check: None,
        }
    }

    #[test]
    fn exact_is_kept_alive_well_before_day_30() {
        let next = exact().next_scheduled_refresh(t0(), Some(t0() + Duration::days(30)));
        assert_eq!(next, t0() + Duration::days(25));
        assert_eq!(
            exact().earliest_refresh(t0()),
            t0() + Duration::seconds(570)
        );
    }

    #[test]
    fn twinfield_is_checked_daily_and_acumatica_sliding_at_half_window() {
        let twinfield = RefreshRules {
            rotating: false,
            expiry: RefreshTokenExpiry::Never,
            min_interval: None,
            health_check: Some(Duration::days(1)),
        };
        assert_eq!(
            twinfield.next_scheduled_refresh(t0(), None),
            t0() + Duration::days(1)
        );
        let sliding = RefreshRules {
            rotating: true,
            expiry: RefreshTokenExpiry::Sliding {
                window: Duration::days(15),
                cap: None,
            },
            min_interval: None,
            health_check: None,
        };
        assert_eq!(
            sliding.next_scheduled_refresh(t0(), None),
            t0() + Duration::hours(180)
        );
        assert_eq!(
            sliding.refresh_token_expiry(t0() + Duration::days(40), t0()),
            Some(t0() + Duration::days(55))
        );
        let capped = RefreshRules {
            expiry: RefreshTokenExpiry::Sliding {
                window: Duration::days(15),
                cap: Some(Duration::days(45)),
            },
            ..sliding
        };
        assert_eq!(
            capped.refresh_token_expiry(t0() + Duration::days(40), t0()),
            Some(t0() + Duration::days(45))
        );
    }

    #[test]
    fn absolute_expiry_is_not_extended_and_never_scheduled_past_the_end() {
        let acumatica = RefreshRules {
            rotating: false,
            expiry: RefreshTokenExpiry::Absolute(Duration::days(30)),
            min_interval: None,
            health_check: None,
        };
        let received = t0() + Duration::days(26);
        assert_eq!(
            acumatica.refresh_token_expiry(received, t0()),
            Some(t0() + Duration::days(30))
        );
        let next = acumatica.next_scheduled_refresh(received, Some(t0() + Duration::days(30)));
        assert_eq!(next, t0() + Duration::days(30) - Duration::hours(1));
    }

    #[test]
    fn the_validity_a_caller_may_demand_is_at_most_half_the_lifetime() {
        let wanted = Duration::seconds(60);
        // (issued lifetime in seconds, required validity in milliseconds)
        let table = [
            (Some(86_400), 60_000),
            (Some(3_600), 60_000),
            (Some(600), 60_000), // Exact Online
            (Some(120), 60_000),
            (Some(90), 45_000),
            (Some(60), 30_000),
            (Some(30), 15_000),
            (Some(15), 7_500),
            (Some(5), 2_500),
            (Some(0), 60_000), // nonsense from a provider: the wish stands
            (None, 60_000),    // unknown (older records): the wish stands
        ];
        for (lifetime, required_ms) in table {
            assert_eq!(
                required_validity(wanted, lifetime.map(Duration::seconds)),
                Duration::milliseconds(required_ms),
                "lifetime {lifetime:?}"
            );
        }
        // A smaller wish is honoured as it is.
        assert_eq!(
            required_validity(Duration::seconds(5), Some(Duration::seconds(60))),
            Duration::seconds(5)
        );
    }

    #[test]
    fn a_token_just_issued_is_fresh_whatever_its_lifetime() {
        for lifetime in [5, 15, 30, 60, 600, 3_600] {
            let mut connection = Connection::new(
                crate::ids::TenantId::parse("acme").unwrap(),
                crate::ids::AppId::parse("app").unwrap(),
                crate::domain::ProviderKind::Generic,
                crate::domain::Recipients::default(),
                t0(),
            );
            connection.access_issued_at = Some(t0());
            connection.access_expires_at = Some(t0() + Duration::seconds(lifetime));
            let wanted = Duration::seconds(60);
            // Received a moment ago (a refresh's round trip): fresh for the callers waiting on it.
            assert!(
                access_token_fresh(&connection, t0() + Duration::milliseconds(200), wanted),
                "{lifetime} s"
            );
            // Past half its life (or the wish, when shorter), it is due for replacement.
            let due = required_validity(wanted, Some(Duration::seconds(lifetime)));
            let at = t0() + Duration::seconds(lifetime) - due;
            assert!(!access_token_fresh(&connection, at, wanted), "{lifetime} s");
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff(1, 0.0), Duration::seconds(60));
        assert_eq!(backoff(3, 0.0), Duration::seconds(240));
        assert_eq!(backoff(40, 0.0), Duration::hours(6));
        assert!(backoff(1, 0.99) > Duration::seconds(71));
        let u = jitter_unit();
        assert!((0.0..1.0).contains(&u));
    }
}
