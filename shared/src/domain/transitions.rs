//! How a connection changes: each transition applies the status change and the fields that go with
//! it together, so no caller has to remember which fields a transition clears.
//!
//! The invariants kept here:
//! - a connection that waits for a person (reconnect required, disabled) or is disconnected has no
//!   refresh scheduled;
//! - a disconnected connection points at no credentials and has no refresh in flight;
//! - a person's authorization spends every connect link issued so far, forgets the failure history
//!   and any interrupted refresh of the old grant;
//! - a successful refresh forgets the failure history and the refresh marker.

use super::connection::Connection;
use super::people::Identity;
use super::provider::ProviderContext;
use super::status::{
    Actor, ConnectionStatus, InvalidTransition, ReconnectReason, StatusEvent, StatusKind,
    StatusTransition,
};
use chrono::{DateTime, Utc};

/// What a person's authorization grants a connection.
#[derive(Debug, Clone, Default)]
pub struct NewGrant {
    /// What it is bound to (organisation, division, tenant), when the authorization tells.
    pub context: Option<ProviderContext>,
    /// Who authorized, when the provider tells.
    pub authorized_by: Option<Identity>,
    /// When its tokens were received and when the broker refreshes next; `None` for credentials the
    /// broker does not refresh.
    pub schedule: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Connection {
    /// Applies a status event and the fields that go with the new status (see the module
    /// documentation), and returns the transition to store with the change. Nothing changes when the
    /// current status does not take the event.
    pub fn apply(
        &mut self,
        event: StatusEvent,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<StatusTransition, InvalidTransition> {
        let authorized = matches!(event, StatusEvent::Authorized);
        let (next, transition) = self.status.apply(event, actor, at)?;
        if authorized {
            self.authorized_at = Some(at);
        }
        if transition.from != transition.to {
            self.status_changed_at = Some(at);
        }
        self.status = next;
        self.updated_at = at;
        if self.status.needs_person() {
            self.next_refresh_at = None;
        }
        if self.status == ConnectionStatus::Disconnected {
            self.credentials = None;
            self.access_expires_at = None;
            self.refresh_expires_at = None;
            self.next_refresh_at = None;
            self.refresh_in_flight = None;
        }
        Ok(transition)
    }

    /// A person authorized it (connect, reconnect, registered credentials): bound to what the grant
    /// says, every link issued so far spent, the old grant's failures and interrupted refresh
    /// forgotten, and the next refresh scheduled as the grant says.
    pub fn authorized(
        &mut self,
        grant: NewGrant,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<StatusTransition, InvalidTransition> {
        let transition = self.apply(StatusEvent::Authorized, actor, at)?;
        if let Some(context) = grant.context {
            self.context = Some(context);
        }
        if grant.authorized_by.is_some() {
            self.authorized_by = grant.authorized_by;
        }
        match grant.schedule {
            Some((received_at, next_refresh_at)) => {
                self.last_refresh_at = Some(received_at);
                self.next_refresh_at = Some(next_refresh_at);
            }
            None => self.next_refresh_at = None,
        }
        self.failures.clear();
        self.refresh_in_flight = None;
        self.spend_links();
        Ok(transition)
    }

    /// A refresh's tokens are stored (or an interrupted refresh's were adopted): the marker and the
    /// failure history are gone, the next refresh is scheduled when `schedule` (received, next) is
    /// known, and a failing connection is connected again — the transition, when there is one.
    pub fn refreshed(
        &mut self,
        schedule: Option<(DateTime<Utc>, DateTime<Utc>)>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Option<StatusTransition>, InvalidTransition> {
        let transition = if self.status.kind() == StatusKind::Connected {
            self.updated_at = at;
            None
        } else {
            Some(self.apply(StatusEvent::RefreshSucceeded, actor, at)?)
        };
        if let Some((received_at, next_refresh_at)) = schedule {
            self.last_refresh_at = Some(received_at);
            self.next_refresh_at = Some(next_refresh_at);
        }
        self.refresh_in_flight = None;
        self.failures.clear();
        Ok(transition)
    }

    /// A refresh failed in a way that may pass with time (the caller has recorded it in the failure
    /// history): tried again at `retry_at`, and the connection is failing with `error` — unless there
    /// is none because it was only too early for the provider, which is no failure of the connection.
    pub fn refresh_failed(
        &mut self,
        error: Option<String>,
        retry_at: DateTime<Utc>,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<Option<StatusTransition>, InvalidTransition> {
        let transition = match error {
            Some(error) => Some(self.apply(StatusEvent::RefreshFailed { error }, actor, at)?),
            None => None,
        };
        self.refresh_in_flight = None;
        self.next_refresh_at = Some(retry_at);
        Ok(transition)
    }

    /// Only a person can move it on: no refresh is scheduled, and an interrupted refresh's marker is
    /// dropped (the caller has settled what it held).
    pub fn require_reconnect(
        &mut self,
        reason: ReconnectReason,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<StatusTransition, InvalidTransition> {
        let transition = self.apply(StatusEvent::ReconnectNeeded(reason), actor, at)?;
        self.refresh_in_flight = None;
        Ok(transition)
    }

    /// Disconnected on request: no credentials, no schedule, nothing in flight.
    pub fn disconnect(
        &mut self,
        actor: Actor,
        at: DateTime<Utc>,
    ) -> Result<StatusTransition, InvalidTransition> {
        self.apply(StatusEvent::Disconnect, actor, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        CredentialsPointer, FailureRecord, ReconnectKind, RefreshInFlight, VaultSlot,
    };
    use crate::ids::WriteId;
    use chrono::Duration;

    fn actor() -> Actor {
        Actor::System("test".into())
    }

    fn pointer(slot: VaultSlot) -> CredentialsPointer {
        CredentialsPointer {
            slot,
            write: WriteId::generate(),
        }
    }

    /// A connected connection with tokens, a schedule, a failure on record and a refresh in flight.
    fn busy_connection(at: DateTime<Utc>) -> Connection {
        let mut c = crate::fixtures::acme_connection(at);
        c.authorized(
            NewGrant {
                schedule: Some((at, at + Duration::minutes(5))),
                ..NewGrant::default()
            },
            actor(),
            at,
        )
        .unwrap();
        c.credentials = Some(pointer(VaultSlot::A));
        c.access_expires_at = Some(at + Duration::minutes(10));
        c.refresh_expires_at = Some(at + Duration::days(30));
        c.failures.record(FailureRecord {
            at,
            class: "provider_unavailable".into(),
            message: "503".into(),
        });
        c.refresh_in_flight = Some(RefreshInFlight {
            started_at: at,
            spending: pointer(VaultSlot::A),
            target: pointer(VaultSlot::B),
            escrow: None,
        });
        c
    }

    #[test]
    fn a_disconnect_leaves_no_credentials_schedule_or_refresh_in_flight() {
        let at = Utc::now();
        let mut c = busy_connection(at);
        let transition = c.disconnect(actor(), at).unwrap();
        assert_eq!(transition.to, StatusKind::Disconnected);
        assert!(c.credentials.is_none() && c.refresh_in_flight.is_none());
        assert!(c.next_refresh_at.is_none() && c.access_expires_at.is_none());
        assert!(c.schedule_entry().is_none(), "in neither index");
        assert!(
            c.disconnect(actor(), at).is_err(),
            "once disconnected, always"
        );
    }

    #[test]
    fn waiting_for_a_person_takes_the_connection_off_the_schedule() {
        let at = Utc::now();
        let mut c = busy_connection(at);
        let reason = ReconnectReason::new(ReconnectKind::GrantRevoked, "invalid_grant");
        c.require_reconnect(reason, actor(), at).unwrap();
        assert!(c.next_refresh_at.is_none() && c.refresh_in_flight.is_none());
        assert!(
            c.credentials.is_some(),
            "kept until a person reconnects or disconnects"
        );

        // Any path into a status that needs a person does the same, the marker aside.
        let mut c = busy_connection(at);
        c.apply(
            StatusEvent::ProviderDisabled {
                reason: "blocked".into(),
            },
            actor(),
            at,
        )
        .unwrap();
        assert!(c.next_refresh_at.is_none());
        assert!(
            c.refresh_in_flight.is_some(),
            "a crash marker is recovered, not dropped"
        );
    }

    #[test]
    fn an_authorization_spends_links_and_forgets_the_old_grants_troubles() {
        let at = Utc::now();
        let mut c = busy_connection(at);
        let generation = c.link_generation;
        let later = at + Duration::hours(1);
        c.authorized(
            NewGrant {
                schedule: Some((later, later + Duration::minutes(9))),
                ..NewGrant::default()
            },
            actor(),
            later,
        )
        .unwrap();
        assert_eq!(c.link_generation, generation + 1);
        assert_eq!(c.failures.consecutive, 0);
        assert!(c.refresh_in_flight.is_none());
        assert_eq!(c.authorized_at, Some(later));
        assert_eq!(c.next_refresh_at, Some(later + Duration::minutes(9)));
    }

    #[test]
    fn a_failing_refresh_is_scheduled_again_and_a_success_ends_the_failing() {
        let at = Utc::now();
        let mut c = busy_connection(at);
        let retry = at + Duration::minutes(2);
        // Too early for the provider: no transition, only a later try.
        assert!(c
            .refresh_failed(None, retry, actor(), at)
            .unwrap()
            .is_none());
        assert_eq!(c.status.kind(), StatusKind::Connected);
        assert_eq!(c.next_refresh_at, Some(retry));

        let failing = c
            .refresh_failed(Some("provider_unavailable: 503".into()), retry, actor(), at)
            .unwrap()
            .unwrap();
        assert_eq!(failing.to, StatusKind::RefreshFailing);
        let next = at + Duration::minutes(9);
        let recovered = c.refreshed(Some((at, next)), actor(), at).unwrap().unwrap();
        assert_eq!(recovered.to, StatusKind::Connected);
        assert_eq!(c.failures.consecutive, 0);
        assert_eq!(c.next_refresh_at, Some(next));
        assert!(
            c.refreshed(None, actor(), at).unwrap().is_none(),
            "connected stays connected without a transition"
        );
    }
}
