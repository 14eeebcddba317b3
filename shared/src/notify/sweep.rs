//! The daily sweep: finds connections about to stop working and creates their warnings (one per
//! scheduled send time, under a deterministic key, so a repeated sweep creates nothing new), marks
//! those whose refresh token's lifetime has ended as needing a reconnect (a transition, hence a
//! notice), reminds the people of connections that still wait for them, then drains the outbox.
//!
//! It pages over the due index with a far horizon (every connection the broker keeps alive is
//! scheduled there), then over the awaiting index (every connection only a person can fix: they were
//! told by their transition's email, and are reminded every `reminder_every` after it, up to
//! `max_reminders`).

use super::notifier::{Notifier, NotifyError, RunSummary};
use super::record::{NoticeSubject, Reminder, Warning, WarningKind};
use crate::domain::{
    Actor, Connection, ConnectionStatus, ReconnectKind, ReconnectReason, StatusEvent,
};
use crate::ports::{Fence, PageRequest, StoreError};
use crate::refresh::TokenGrant;
use chrono::{DateTime, Duration, Utc};

/// How far ahead the sweep looks in the due index: past any schedule the refresh engine sets.
const HORIZON: Duration = Duration::days(3650);

/// When warnings for a connection that stops working at `deadline` are due: at each lead time before
/// it, and in between every `every`, starting at the longest lead time; a reminder closer than `every`
/// to the previous send is dropped. Ascending.
pub fn warning_times(
    deadline: DateTime<Utc>,
    leads: &[Duration],
    every: Duration,
) -> Vec<DateTime<Utc>> {
    let Some(longest) = leads
        .iter()
        .copied()
        .filter(|l| *l > Duration::zero())
        .max()
    else {
        return Vec::new();
    };
    let mut leads_at: Vec<DateTime<Utc>> = leads.iter().map(|l| deadline - *l).collect();
    leads_at.sort();
    leads_at.dedup();
    let mut reminders = Vec::new();
    if every > Duration::zero() {
        let mut at = deadline - longest + every;
        while at < deadline {
            reminders.push(at);
            at += every;
        }
    }
    let mut all: Vec<(DateTime<Utc>, bool)> = leads_at
        .into_iter()
        .map(|t| (t, true))
        .chain(reminders.into_iter().map(|t| (t, false)))
        .collect();
    all.sort();
    let mut kept: Vec<DateTime<Utc>> = Vec::new();
    for (at, is_lead) in all {
        match kept.last() {
            Some(last) if *last == at => {}
            Some(last) if !is_lead && at - *last < every => {}
            _ => kept.push(at),
        }
    }
    kept
}

/// The daily run's two passes over connections.
#[derive(Debug, Clone, Copy)]
enum Visit {
    /// Connections due for refresh soon: expiry warnings, and expiries.
    Expiry,
    /// Connections waiting for a person: reminders.
    Reminder,
}

impl Visit {
    fn failed(self) -> &'static str {
        match self {
            Self::Expiry => "a connection could not be checked for expiry",
            Self::Reminder => {
                "a connection waiting for a person could not be checked for a reminder"
            }
        }
    }
}

impl Notifier {
    /// The daily run: warnings, expiries, then every unsettled notice.
    pub async fn daily(&self) -> Result<RunSummary, NotifyError> {
        let mut summary = RunSummary::default();
        let now = self.ctx.clock.now();
        self.visit_all(Visit::Expiry, now, &mut summary).await?;
        self.visit_all(Visit::Reminder, now, &mut summary).await?;
        let drained = self.drain_outbox().await?;
        summary.sent += drained.sent;
        summary.skipped += drained.skipped;
        summary.failed += drained.failed;
        summary.unknown += drained.unknown;
        summary.busy += drained.busy;
        summary.retry_later += drained.retry_later;
        summary.errors += drained.errors;
        Ok(summary)
    }

    /// Visits every connection `visit`'s listing names. A connection that fails is counted and
    /// logged, and the run goes on; a listing that fails ends it.
    async fn visit_all(
        &self,
        visit: Visit,
        now: DateTime<Utc>,
        summary: &mut RunSummary,
    ) -> Result<(), StoreError> {
        let store = &self.ctx.backend.store;
        let mut cursor = None;
        loop {
            let request = PageRequest::after(200, cursor);
            let (ids, next_cursor) = match visit {
                Visit::Expiry => {
                    let page = store.due_for_refresh(now + HORIZON, request).await?;
                    let ids: Vec<_> = page.items.into_iter().map(|due| due.id).collect();
                    (ids, page.next_cursor)
                }
                Visit::Reminder => {
                    let page = store.awaiting_person(request).await?;
                    let ids: Vec<_> = page.items.into_iter().map(|waiting| waiting.id).collect();
                    (ids, page.next_cursor)
                }
            };
            for id in ids {
                let visited = match store.get_connection(&id).await {
                    Ok(Some(connection)) => match visit {
                        Visit::Expiry => self.check(connection, now, summary).await,
                        Visit::Reminder => self.remind(connection, now, summary).await,
                    },
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                };
                if let Err(e) = visited {
                    summary.errors += 1;
                    tracing::error!(connection = %id, error = %e, "{}", visit.failed());
                }
            }
            cursor = next_cursor;
            if cursor.is_none() {
                return Ok(());
            }
        }
    }

    async fn check(
        &self,
        connection: Connection,
        now: DateTime<Utc>,
        summary: &mut RunSummary,
    ) -> Result<(), StoreError> {
        let store = &self.ctx.backend.store;
        if !connection.status().is_usable() {
            return Ok(());
        }
        let Some(deadline) = connection.refresh_expires_at else {
            return Ok(());
        };
        let absolute = match store.get_app(&connection.tenant, &connection.app).await? {
            Some(app) => self
                .ctx
                .providers
                .rules(&app.for_connection(&connection))
                .end_is_fixed(deadline, connection.grant_started_at()),
            None => false,
        };
        let kind = if absolute {
            WarningKind::AbsoluteExpiry
        } else if matches!(connection.status(), ConnectionStatus::RefreshFailing { .. }) {
            WarningKind::IdleExpiry
        } else {
            return Ok(());
        };
        if now >= deadline {
            return self.mark_expired(connection, deadline, now, summary).await;
        }
        let due = warning_times(
            deadline,
            &self.settings.lead_times,
            self.settings.reminder_every,
        )
        .into_iter()
        .filter(|at| *at <= now)
        .max();
        if let Some(at) = due {
            let name = format!(
                "{}#{}#{}",
                kind_name(kind),
                deadline.timestamp(),
                at.timestamp()
            );
            self.create_warning(&connection, kind, Some(deadline), &name, now, summary)
                .await?;
        }
        Ok(())
    }

    /// The reminder due now for a connection that waits for a person, if any: the n-th comes n ×
    /// `reminder_every` after the wait began. Only the latest due one is created (a sweep that missed
    /// days sends one reminder, not a burst), under a key naming the wait and the number, so a repeated
    /// sweep finds it instead of creating another. A connection working on legacy credentials gets its
    /// warning on the first sweep and then at the reminders' pace.
    async fn remind(
        &self,
        connection: Connection,
        now: DateTime<Utc>,
        summary: &mut RunSummary,
    ) -> Result<(), StoreError> {
        let store = &self.ctx.backend.store;
        let Some(since) = connection.awaiting_person_since() else {
            return Ok(());
        };
        if connection.status().is_usable() {
            let Some(number) = periods_since(since, now, self.settings.reminder_every)
                .filter(|n| *n <= self.settings.max_reminders)
            else {
                return Ok(());
            };
            let name = format!("legacy#{}#{number}", since.timestamp());
            return self
                .create_warning(
                    &connection,
                    WarningKind::LegacyCredentials,
                    None,
                    &name,
                    now,
                    summary,
                )
                .await;
        }
        let Some(number) = reminder_number(
            since,
            now,
            self.settings.reminder_every,
            self.settings.max_reminders,
        ) else {
            return Ok(());
        };
        let name = format!("reminder#{}#{number}", since.timestamp());
        let reminder = NoticeSubject::Reminder(Reminder {
            status: connection.status().kind(),
            since,
            number,
            created_at: now,
        });
        if store
            .create_notice(&connection.id, &name, &reminder)
            .await?
        {
            summary.reminders_created += 1;
        }
        Ok(())
    }

    async fn create_warning(
        &self,
        connection: &Connection,
        kind: WarningKind,
        deadline: Option<DateTime<Utc>>,
        name: &str,
        now: DateTime<Utc>,
        summary: &mut RunSummary,
    ) -> Result<(), StoreError> {
        let store = &self.ctx.backend.store;
        let warning = NoticeSubject::Warning(Warning {
            kind,
            deadline,
            created_at: now,
        });
        if store.create_notice(&connection.id, name, &warning).await? {
            summary.warnings_created += 1;
        }
        Ok(())
    }

    /// The refresh token's lifetime has ended: only a person can fix it. Recorded as the refresh engine
    /// would (a transition, fenced on the version read), so the transition's notice follows.
    async fn mark_expired(
        &self,
        mut connection: Connection,
        deadline: DateTime<Utc>,
        now: DateTime<Utc>,
        summary: &mut RunSummary,
    ) -> Result<(), StoreError> {
        let reason = ReconnectReason::new(
            ReconnectKind::RefreshTokenExpired,
            format!(
                "the refresh token's lifetime ended on {}",
                deadline.format("%Y-%m-%d %H:%M UTC")
            ),
        );
        let Ok(transition) = connection.apply(
            StatusEvent::ReconnectNeeded(reason),
            Actor::System("expiry-notifier".into()),
            now,
        ) else {
            return Ok(());
        };
        match self
            .ctx
            .backend
            .store
            .save_connection(&connection, Fence::Version, &[transition])
            .await
        {
            Ok(_) => {
                summary.marked_expired += 1;
                Ok(())
            }
            // Someone changed it meanwhile (a refresh, a reconnect): the next sweep looks again.
            Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Which reminder is due at `now` for a wait that began at `since`: the n-th falls due n × `every`
/// after it; none before the first, none past `max`.
pub fn reminder_number(
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    every: Duration,
    max: u32,
) -> Option<u32> {
    periods_since(since, now, every).filter(|n| (1..=max).contains(n))
}

/// Whole periods of `every` from `since` to `now` (0 in the first); `None` before `since`.
fn periods_since(since: DateTime<Utc>, now: DateTime<Utc>, every: Duration) -> Option<u32> {
    let every = every.num_seconds();
    if every <= 0 || now < since {
        return None;
    }
    u32::try_from((now - since).num_seconds() / every).ok()
}

fn kind_name(kind: WarningKind) -> &'static str {
    match kind {
        WarningKind::AbsoluteExpiry => "absolute",
        WarningKind::IdleExpiry => "idle",
        WarningKind::LegacyCredentials => "legacy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn warnings_at_each_lead_time_with_reminders_between() {
        let deadline = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let d = Duration::days;
        let times = warning_times(deadline, &[d(7), d(1)], d(3));
        assert_eq!(
            times,
            vec![deadline - d(7), deadline - d(4), deadline - d(1)]
        );
        let times = warning_times(deadline, &[d(7), d(1)], d(2));
        assert_eq!(
            times,
            vec![
                deadline - d(7),
                deadline - d(5),
                deadline - d(3),
                deadline - d(1)
            ]
        );
        let times = warning_times(deadline, &[d(7), d(2)], d(3));
        // A reminder a day after the 2-day warning would come too soon.
        assert_eq!(
            times,
            vec![deadline - d(7), deadline - d(4), deadline - d(2)]
        );
        assert!(warning_times(deadline, &[], d(3)).is_empty());
    }

    #[test]
    fn reminders_every_period_after_the_wait_began_up_to_the_limit() {
        let since = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let d = Duration::days;
        let at = |days: i64, hours: i64| since + d(days) + Duration::hours(hours);
        assert_eq!(reminder_number(since, at(0, 0), d(3), 10), None);
        assert_eq!(reminder_number(since, at(2, 23), d(3), 10), None);
        assert_eq!(reminder_number(since, at(3, 0), d(3), 10), Some(1));
        assert_eq!(reminder_number(since, at(5, 23), d(3), 10), Some(1));
        assert_eq!(reminder_number(since, at(6, 0), d(3), 10), Some(2));
        assert_eq!(reminder_number(since, at(30, 0), d(3), 10), Some(10));
        assert_eq!(reminder_number(since, at(33, 0), d(3), 10), None);
        assert_eq!(reminder_number(since, at(9, 0), d(3), 0), None);
        assert_eq!(reminder_number(since, since - d(1), d(3), 10), None);
    }
}
