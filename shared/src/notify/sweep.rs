//! The daily sweep: finds connections about to stop working and creates their warnings (one per
//! scheduled send time, under a deterministic key, so a repeated sweep creates nothing new), marks
//! those whose refresh token's lifetime has ended as needing a reconnect (a transition, hence a
//! notice), then drains the outbox.
//!
//! It pages over the due index with a far horizon: every connection the broker keeps alive is
//! scheduled there. Connections already needing a person were told by their transition's email.

use super::notifier::{Notifier, NotifyError, RunSummary};
use super::record::{Warning, WarningKind};
use crate::domain::{
    Actor, Connection, ConnectionStatus, Credentials, ProviderKind, ReconnectKind, ReconnectReason,
    StatusEvent,
};
use crate::ports::{Fence, PageRequest, StoreError};
use crate::refresh::{RefreshTokenExpiry, TokenGrant};
use crate::CredentialKeeper;
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

impl Notifier {
    /// The daily run: warnings, expiries, then every unsettled notice.
    pub async fn daily(&self) -> Result<RunSummary, NotifyError> {
        let mut summary = RunSummary::default();
        let store = &self.ctx.backend.store;
        let now = self.ctx.clock.now();
        let mut cursor = None;
        loop {
            let page = store
                .due_for_refresh(now + HORIZON, PageRequest::after(200, cursor))
                .await?;
            for due in page.items {
                match self.check(&due.id, now, &mut summary).await {
                    Ok(()) => {}
                    Err(e) => {
                        summary.errors += 1;
                        tracing::error!(connection = %due.id, error = %e, "a connection could not be checked for expiry");
                    }
                }
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
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

    async fn check(
        &self,
        id: &crate::ids::ConnectionId,
        now: DateTime<Utc>,
        summary: &mut RunSummary,
    ) -> Result<(), StoreError> {
        let store = &self.ctx.backend.store;
        let Some(connection) = store.get_connection(id).await? else {
            return Ok(());
        };
        if !connection.status.is_usable() {
            return Ok(());
        }
        if connection.provider == ProviderKind::Twinfield
            && self.on_legacy_credentials(&connection).await
        {
            let every = self.settings.reminder_every;
            let slot = now.timestamp().div_euclid(every.num_seconds().max(1));
            return self
                .create_warning(
                    &connection,
                    WarningKind::LegacyCredentials,
                    None,
                    &format!("legacy#{slot}"),
                    now,
                    summary,
                )
                .await;
        }
        let Some(deadline) = connection.refresh_expires_at else {
            return Ok(());
        };
        let absolute = match store.get_app(&connection.tenant, &connection.app).await? {
            Some(app) => matches!(
                self.ctx.providers.rules(&app).expiry,
                RefreshTokenExpiry::Absolute(_)
            ),
            None => false,
        };
        let kind = if absolute {
            WarningKind::AbsoluteExpiry
        } else if matches!(connection.status, ConnectionStatus::RefreshFailing { .. }) {
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
        let key = store.warning_key(&connection.id, name);
        let warning = Warning {
            kind,
            deadline,
            created_at: now,
        };
        if store.create_notice(&key, &connection.id, &warning).await? {
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
        connection.next_refresh_at = None;
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

    async fn on_legacy_credentials(&self, connection: &Connection) -> bool {
        let keeper = CredentialKeeper::new(
            self.ctx.backend.store.clone(),
            self.ctx.backend.vault.clone(),
        );
        match keeper.current(connection).await {
            Ok(Some(Credentials::TwinfieldLegacy(_))) => true,
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(connection = %connection.id, error = %e, "could not tell whether a Twinfield connection uses legacy credentials");
                false
            }
        }
    }
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
}
