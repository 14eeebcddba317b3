//! Claim → send → settle, for one notice or for the whole outbox (see the module documentation).

use super::compose::{compose, EmailFacts};
use super::mailer::{MailError, Mailer};
use super::record::{
    Claim, NoticeKey, NoticeKind, NoticeOutcome, NoticeRecord, NoticeSubject, Release, WarningKind,
};
use super::settings::NotifySettings;
use crate::connect::{issue_link, LINK_LIFETIME};
use crate::context::BrokerContext;
use crate::domain::{AuthorizationPurpose, Connection};
use crate::ports::StoreError;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The notice was put back to pending after a failed attempt: try again later.
    #[error("sending failed and will be retried: {0}")]
    RetryLater(String),
}

/// What became of one notice in this invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Sent {
        recipients: u32,
    },
    /// Settled without an email (see [`NoticeOutcome::Skipped`]).
    Skipped(String),
    /// Settled as failed after the last attempt.
    Failed,
    /// Settled as delivery unknown (a stale claim, or an uncertain send).
    Unknown,
    /// Another notifier holds the claim.
    Busy,
    AlreadySettled,
    Missing,
}

/// Counts of one run, by outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub sent: usize,
    pub skipped: usize,
    pub failed: usize,
    pub unknown: usize,
    pub busy: usize,
    pub retry_later: usize,
    pub errors: usize,
    pub warnings_created: usize,
    pub reminders_created: usize,
    pub marked_expired: usize,
}

impl RunSummary {
    fn count(&mut self, outcome: &Result<Delivery, NotifyError>) {
        match outcome {
            Ok(Delivery::Sent { .. }) => self.sent += 1,
            Ok(Delivery::Skipped(_)) => self.skipped += 1,
            Ok(Delivery::Failed) => self.failed += 1,
            Ok(Delivery::Unknown) => self.unknown += 1,
            Ok(Delivery::Busy) => self.busy += 1,
            Ok(Delivery::AlreadySettled | Delivery::Missing) => {}
            Err(NotifyError::RetryLater(_)) => self.retry_later += 1,
            Err(NotifyError::Store(_)) => self.errors += 1,
        }
    }
}

pub struct Notifier {
    pub(super) ctx: BrokerContext,
    pub(super) mailer: Arc<dyn Mailer>,
    pub(super) settings: NotifySettings,
}

impl Notifier {
    pub fn new(ctx: BrokerContext, mailer: Arc<dyn Mailer>, settings: NotifySettings) -> Self {
        Self {
            ctx,
            mailer,
            settings,
        }
    }

    pub fn settings(&self) -> &NotifySettings {
        &self.settings
    }

    /// Handles one notice: claims it, sends it, settles it. Safe to call any number of times for the
    /// same key, concurrently too: at most one call sends.
    pub async fn notify(&self, key: &NoticeKey) -> Result<Delivery, NotifyError> {
        let store = &self.ctx.backend.store;
        let now = self.ctx.clock.now();
        match store
            .claim_notice(key, now, now - self.settings.stale_after)
            .await?
        {
            Claim::Missing => Ok(Delivery::Missing),
            Claim::Busy => Ok(Delivery::Busy),
            Claim::Settled(_) => Ok(Delivery::AlreadySettled),
            Claim::Stale { claimed_at } => {
                // Its claimant died between claiming and settling: it may have sent. Never resend.
                store
                    .release_notice(
                        key,
                        claimed_at,
                        &Release::Settle(NoticeOutcome::DeliveryUnknown { at: now }),
                    )
                    .await?;
                tracing::warn!(notice = %key, claimed_at = %claimed_at, "a notice's claimant never settled it; recorded as delivery unknown and not sent again");
                Ok(Delivery::Unknown)
            }
            Claim::Claimed(record) => self.deliver(record, now).await,
        }
    }

    /// Every unsettled notice, oldest first, each at most once per run.
    pub async fn drain_outbox(&self) -> Result<RunSummary, NotifyError> {
        let mut summary = RunSummary::default();
        let mut seen = HashSet::new();
        loop {
            let keys = self.ctx.backend.store.unsettled_notices(100).await?;
            let fresh: Vec<NoticeKey> = keys
                .into_iter()
                .filter(|k| seen.insert(k.clone()))
                .collect();
            if fresh.is_empty() {
                return Ok(summary);
            }
            for key in fresh {
                let outcome = self.notify(&key).await;
                if let Err(NotifyError::Store(e)) = &outcome {
                    tracing::error!(notice = %key, error = %e, "a notice could not be handled; the next run tries again");
                }
                summary.count(&outcome);
            }
        }
    }

    async fn deliver(
        &self,
        record: NoticeRecord,
        claimed_at: DateTime<Utc>,
    ) -> Result<Delivery, NotifyError> {
        let store = &self.ctx.backend.store;
        let key = record.key.clone();
        let now = claimed_at;
        let skip = |why: &str| {
            Release::Settle(NoticeOutcome::Skipped {
                at: now,
                why: why.into(),
            })
        };
        let settle = |release: Release| {
            let key = key.clone();
            async move { store.release_notice(&key, claimed_at, &release).await }
        };
        let Some(kind) = record.subject.kind() else {
            settle(skip("not a notice-worthy transition")).await?;
            return Ok(Delivery::Skipped("not a notice-worthy transition".into()));
        };
        let connection = match store.get_connection(&record.connection).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                settle(skip("the connection no longer exists")).await?;
                return Ok(Delivery::Skipped("the connection no longer exists".into()));
            }
            Err(e) => return Err(self.retry(&record, claimed_at, e.to_string()).await),
        };
        if let Some(why) = why_not_send(&record.subject, kind, &connection, &self.settings) {
            settle(skip(why)).await?;
            tracing::info!(notice = %key, kind = kind.as_str(), why, "notice settled without an email");
            return Ok(Delivery::Skipped(why.into()));
        }
        let tenant = match store.get_tenant(&connection.tenant).await {
            Ok(tenant) => tenant,
            Err(e) => return Err(self.retry(&record, claimed_at, e.to_string()).await),
        };
        let link = if kind == NoticeKind::Recovered {
            None
        } else {
            match issue_link(
                &self.ctx,
                &connection.tenant,
                &connection.id,
                AuthorizationPurpose::Reconnect,
            )
            .await
            {
                Ok(url) => Some((url, self.ctx.clock.now() + LINK_LIFETIME)),
                Err(e) => return Err(self.retry(&record, claimed_at, e.to_string()).await),
            }
        };
        let email = compose(&EmailFacts {
            kind,
            subject: &record.subject,
            connection: &connection,
            tenant: tenant.as_ref(),
            link: link.as_ref().map(|(u, until)| (u, *until)),
            from: &self.settings.sender,
            reply_to: self.settings.reply_to.as_ref(),
        });
        let sent = self.mailer.send(&email).await;
        let recipients = u32::try_from(email.to.len()).unwrap_or(u32::MAX);
        self.settle_sent(&record, claimed_at, kind, recipients, sent)
            .await
    }

    /// Records what the mailer said: sent, delivery unknown (never sent again), or not sent (tried
    /// again until the attempts run out).
    async fn settle_sent(
        &self,
        record: &NoticeRecord,
        claimed_at: DateTime<Utc>,
        kind: NoticeKind,
        recipients: u32,
        sent: Result<(), MailError>,
    ) -> Result<Delivery, NotifyError> {
        let key = &record.key;
        let settle = |release: Release| async move {
            self.ctx
                .backend
                .store
                .release_notice(key, claimed_at, &release)
                .await
        };
        match sent {
            Ok(()) => {
                let sent = NoticeOutcome::Sent {
                    at: self.ctx.clock.now(),
                    kind,
                    recipients,
                };
                if let Err(e) = settle(Release::Settle(sent)).await {
                    // Sent, not recorded: the claim stays and a later run records "delivery unknown";
                    // it is never sent again.
                    tracing::error!(notice = %key, error = %e, "an email was sent but could not be recorded");
                    return Err(e.into());
                }
                tracing::info!(notice = %key, kind = kind.as_str(), recipients, "notification sent");
                Ok(Delivery::Sent { recipients })
            }
            Err(MailError::Uncertain(e)) => {
                settle(Release::Settle(NoticeOutcome::DeliveryUnknown {
                    at: self.ctx.clock.now(),
                }))
                .await?;
                tracing::error!(notice = %key, kind = kind.as_str(), error = %e, "the mail service's answer was lost; recorded as delivery unknown and not sent again");
                Ok(Delivery::Unknown)
            }
            Err(MailError::NotSent(e)) => {
                let attempts = record.attempts.saturating_add(1);
                if attempts >= self.settings.max_attempts {
                    settle(Release::Settle(NoticeOutcome::Failed {
                        at: self.ctx.clock.now(),
                        kind: Some(kind),
                        attempts,
                        error: e.clone(),
                    }))
                    .await?;
                    tracing::error!(notice = %key, kind = kind.as_str(), attempts, error = %e, "a notification could not be sent; recorded as failed");
                    Ok(Delivery::Failed)
                } else {
                    settle(Release::Retry { attempts }).await?;
                    tracing::warn!(notice = %key, kind = kind.as_str(), attempts, error = %e, "a notification could not be sent; it will be retried");
                    Err(NotifyError::RetryLater(e))
                }
            }
        }
    }

    /// Nothing was sent (the failure came before the mailer): back to pending, same attempt count.
    async fn retry(
        &self,
        record: &NoticeRecord,
        claimed_at: DateTime<Utc>,
        why: String,
    ) -> NotifyError {
        let release = Release::Retry {
            attempts: record.attempts,
        };
        match self
            .ctx
            .backend
            .store
            .release_notice(&record.key, claimed_at, &release)
            .await
        {
            Ok(()) => NotifyError::RetryLater(why),
            Err(e) => e.into(),
        }
    }
}

/// Why a claimed notice is settled without an email, if it is: the connection moved on since (a
/// newer status has its own email), recovery emails are off, or nobody is named to hear of it.
fn why_not_send(
    subject: &NoticeSubject,
    kind: NoticeKind,
    connection: &Connection,
    settings: &NotifySettings,
) -> Option<&'static str> {
    let superseded = match subject {
        NoticeSubject::Transition(t) => connection.status().kind() != t.to,
        NoticeSubject::Warning(w) => {
            !connection.status().is_usable()
                || (w.kind == WarningKind::LegacyCredentials && !connection.legacy_credentials)
        }
        // Reconnected meanwhile, or waiting again for a new reason: that wait has its own email.
        NoticeSubject::Reminder(r) => connection.awaiting_person_since() != Some(r.since),
    };
    if superseded {
        Some("the connection's status changed since")
    } else if kind == NoticeKind::Recovered && !settings.recovery_emails {
        Some("recovery emails are turned off")
    } else if connection.recipients.is_empty() {
        Some("the connection names no recipients")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Actor, ProviderKind, Recipients, StatusEvent};
    use crate::ids::{AppId, TenantId};
    use crate::notify::Warning;

    fn settings(recovery_emails: bool) -> NotifySettings {
        let mut settings = NotifySettings::from_lookup(|_| None).unwrap();
        settings.recovery_emails = recovery_emails;
        settings
    }

    /// A connected connection and the transition that connected it.
    fn connected(recipients: &[&str]) -> (Connection, NoticeSubject) {
        let now = Utc::now();
        let mut c = Connection::new(
            TenantId::parse("acme").unwrap(),
            AppId::parse("exact-nl").unwrap(),
            ProviderKind::ExactOnline,
            Recipients::parse(recipients).unwrap(),
            now,
        );
        let transition = c
            .apply(StatusEvent::Authorized, Actor::System("test".into()), now)
            .unwrap();
        (c, NoticeSubject::Transition(transition))
    }

    #[test]
    fn a_notice_is_sent_only_while_it_is_still_true_wanted_and_addressed() {
        let (c, recovered) = connected(&["finance@example.com"]);
        let kind = NoticeKind::Recovered;
        assert_eq!(why_not_send(&recovered, kind, &c, &settings(true)), None);
        assert_eq!(
            why_not_send(&recovered, kind, &c, &settings(false)),
            Some("recovery emails are turned off")
        );
        let (nobody, recovered) = connected(&[]);
        assert_eq!(
            why_not_send(&recovered, kind, &nobody, &settings(true)),
            Some("the connection names no recipients")
        );

        // A legacy-credentials warning for a connection that moved to OAuth 2.0 meanwhile.
        let warning = NoticeSubject::Warning(Warning {
            kind: WarningKind::LegacyCredentials,
            deadline: None,
            created_at: Utc::now(),
        });
        let kind = NoticeKind::Warning(WarningKind::LegacyCredentials);
        assert_eq!(
            why_not_send(&warning, kind, &c, &settings(true)),
            Some("the connection's status changed since")
        );
        let mut legacy = c.clone();
        legacy.legacy_credentials = true;
        assert_eq!(why_not_send(&warning, kind, &legacy, &settings(true)), None);
    }

    #[test]
    fn a_transition_the_connection_has_left_is_not_announced() {
        let (mut c, connected) = connected(&["finance@example.com"]);
        c.apply(
            StatusEvent::Disconnect,
            Actor::System("test".into()),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(
            why_not_send(&connected, NoticeKind::Recovered, &c, &settings(true)),
            Some("the connection's status changed since")
        );
    }
}
