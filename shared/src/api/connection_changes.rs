//! `PATCH /v1/connections/{id}` (display name, recipients, required identity, locale, time zone) and
//! `GET /v1/connections/{id}/events` (the connection's history, see [`crate::history`]).
//!
//! A change is applied under the connection's refresh lease, to the connection as stored right after
//! taking it: a refresh cannot save in between (it needs the lease), so a change never undoes a
//! refresh's fields, and a change never makes a refresh in progress lose its save (the lease waits
//! for it to finish instead). The save releases the lease and records the change in the same write.

use super::problem::{ApiError, ProblemKind};
use super::service::{disconnected, Caller, IntegrationApi};
use super::types::{ConnectionView, IdentityInput};
use crate::domain::{
    plain_label, Connection, ConnectionChange, ConnectionStatus, FieldChange, Identity, Locale,
    Recipients, TimeZone,
};
use crate::history::{self, HistoryPage, DEFAULT_LIMIT, MAX_LIMIT};
use crate::ids::LeaseOwner;
use crate::ports::{Fence, LeaseAttempt, StoreError};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

/// How long a change waits for a refresh that holds the lease before answering 503.
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const LEASE_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// How long the lease is taken for: a change is two store writes.
const LEASE_TTL: chrono::Duration = chrono::Duration::seconds(15);
/// Saves tried before giving up on a connection that keeps changing.
const SAVE_ATTEMPTS: usize = 3;
/// The longest display name, as on creation.
const MAX_DISPLAY_NAME: usize = 200;

/// `PATCH /v1/connections/{id}`, a JSON merge patch (RFC 7396): a field left out stays as it is, a
/// field set to `null` is cleared (recipients: none), any other value replaces it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionChanges {
    #[serde(default, deserialize_with = "present")]
    pub display_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub recipients: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "present")]
    pub required_identity: Option<Option<IdentityInput>>,
    /// `nl` or `en` (any tag of those languages, e.g. `nl-BE`).
    #[serde(default, deserialize_with = "present")]
    pub locale: Option<Option<String>>,
    /// An IANA time zone name, e.g. `Europe/Amsterdam`.
    #[serde(default, deserialize_with = "present")]
    pub time_zone: Option<Option<String>>,
}

/// A field that is present in the body, `null` included (serde reads a missing field as `None` through
/// `default`, and a present one through this).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The changes, checked: every value is one the connection can hold.
#[derive(Debug, Default)]
struct Patch {
    display_name: Option<Option<String>>,
    recipients: Option<Recipients>,
    required_identity: Option<Option<Identity>>,
    locale: Option<Option<Locale>>,
    time_zone: Option<Option<TimeZone>>,
}

fn invalid(field: &str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::new(ProblemKind::ValidationFailed, format!("{field}: {detail}"))
}

impl Patch {
    fn parse(changes: ConnectionChanges) -> Result<Self, ApiError> {
        let display_name = match changes.display_name {
            Some(Some(name)) => {
                // Labels reach pages and emails: no control or bidirectional characters.
                let name = plain_label(&name);
                if name.chars().count() > MAX_DISPLAY_NAME {
                    return Err(invalid(
                        "display_name",
                        format!("longer than {MAX_DISPLAY_NAME} characters: shorten it"),
                    ));
                }
                Some((!name.is_empty()).then_some(name))
            }
            other => other,
        };
        let recipients = match changes.recipients {
            Some(list) => Some(
                Recipients::parse(&list.unwrap_or_default())
                    .map_err(|e| invalid("recipients", e))?,
            ),
            None => None,
        };
        let required_identity = match changes.required_identity {
            Some(Some(input)) => {
                let mut identity =
                    Identity::new(input.subject).map_err(|e| invalid("required_identity", e))?;
                identity.display_name = input
                    .display_name
                    .map(|n| plain_label(&n))
                    .filter(|n| !n.is_empty());
                Some(Some(identity))
            }
            Some(None) => Some(None),
            None => None,
        };
        let locale = match changes.locale {
            Some(Some(tag)) => Some(Some(Locale::parse(&tag).map_err(|e| invalid("locale", e))?)),
            Some(None) => Some(None),
            None => None,
        };
        let time_zone = match changes.time_zone {
            Some(Some(name)) => Some(Some(
                TimeZone::parse(&name).map_err(|e| invalid("time_zone", e))?,
            )),
            Some(None) => Some(None),
            None => None,
        };
        Ok(Self {
            display_name,
            recipients,
            required_identity,
            locale,
            time_zone,
        })
    }

    /// Applies the patch; the fields that changed, from what to what (as the API shows them).
    fn apply(&self, c: &mut Connection) -> Vec<FieldChange> {
        let mut changed = Vec::new();
        let mut note = |field: &str, from: Value, to: Value| {
            if from != to {
                changed.push(FieldChange {
                    field: field.into(),
                    from,
                    to,
                });
            }
        };
        if let Some(name) = &self.display_name {
            note("display_name", json!(c.display_name), json!(name));
            c.display_name = name.clone();
        }
        if let Some(recipients) = &self.recipients {
            note("recipients", json!(c.recipients), json!(recipients));
            c.recipients = recipients.clone();
        }
        if let Some(identity) = &self.required_identity {
            note(
                "required_identity",
                json!(c.required_identity),
                json!(identity),
            );
            c.required_identity = identity.clone();
        }
        if let Some(locale) = &self.locale {
            note("locale", json!(c.locale), json!(locale));
            c.locale = *locale;
        }
        if let Some(zone) = &self.time_zone {
            note("time_zone", json!(c.time_zone), json!(zone));
            c.time_zone = *zone;
        }
        changed
    }
}

impl IntegrationApi {
    /// Changes what the request names and records the change in the connection's history.
    pub async fn update_connection(
        &self,
        caller: &Caller,
        id: &str,
        changes: ConnectionChanges,
    ) -> Result<ConnectionView, ApiError> {
        caller.require_full_access()?;
        let patch = Patch::parse(changes)?;
        let connection = self.connection_for(caller, id).await?;
        if connection.status() == ConnectionStatus::Disconnected {
            return Err(disconnected());
        }
        let store = &self.ctx.backend.store;
        let owner = LeaseOwner::generate();
        let give_up = tokio::time::Instant::now() + LEASE_WAIT;
        let mut attempts = 0;
        while attempts < SAVE_ATTEMPTS {
            let now = self.ctx.clock.now();
            let mut leased = match store
                .acquire_lease(&connection.id, &owner, now, LEASE_TTL)
                .await
                .map_err(|e| ApiError::internal("the connection could not be locked", e))?
            {
                LeaseAttempt::Acquired(c) => c,
                LeaseAttempt::Busy { .. } if tokio::time::Instant::now() + LEASE_POLL < give_up => {
                    tokio::time::sleep(LEASE_POLL).await;
                    continue;
                }
                LeaseAttempt::Busy { .. } => break,
                LeaseAttempt::Missing => return Err(ApiError::connection_not_found()),
            };
            attempts += 1;
            let fields = patch.apply(&mut leased);
            if fields.is_empty() {
                self.release(&leased, &owner).await;
                return Ok(ConnectionView::from(&leased));
            }
            leased.updated_at = now;
            let change = ConnectionChange {
                at: now,
                actor: caller.actor(),
                fields,
            };
            match store
                .save_connection_change(&leased, Fence::LeaseReleased(&owner), &change)
                .await
            {
                Ok(saved) => {
                    tracing::info!(key_prefix = caller.prefix(), connection = %saved.id, fields = ?change.fields.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), "connection changed");
                    return Ok(ConnectionView::from(&saved));
                }
                // The lease expired and another writer took over: read again and apply afresh.
                Err(StoreError::Conflict) => self.release(&leased, &owner).await,
                Err(e) => {
                    self.release(&leased, &owner).await;
                    return Err(ApiError::internal("the connection could not be saved", e));
                }
            }
        }
        Err(ApiError::new(
            ProblemKind::TemporarilyUnavailable,
            "a token refresh of this connection is under way: retry the change in a few seconds",
        )
        .retry_after(5))
    }

    async fn release(&self, connection: &Connection, owner: &LeaseOwner) {
        if let Err(e) = self
            .ctx
            .backend
            .store
            .release_lease(&connection.id, owner)
            .await
        {
            tracing::warn!(connection = %connection.id, error = %e, "could not release the lease; it will expire");
        }
    }

    /// A page of the connection's history, newest first (see [`crate::history`]).
    pub async fn connection_events(
        &self,
        caller: &Caller,
        id: &str,
        limit: Option<u32>,
        cursor: Option<String>,
    ) -> Result<HistoryPage, ApiError> {
        caller.require_full_access()?;
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::new(
                ProblemKind::InvalidRequest,
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let connection = self.connection_for(caller, id).await?;
        // This process's own counts belong on the page; a failure leaves them for the next write.
        if let Err(e) = self.session_reads().flush().await {
            tracing::warn!(error = %e, "session-read counts could not be written before reading the history");
        }
        history::connection_history(
            self.ctx.backend.store.as_ref(),
            &connection.id,
            limit,
            cursor.as_deref(),
        )
        .await
        .map_err(|e| match e {
            StoreError::InvalidCursor => ApiError::new(ProblemKind::InvalidRequest, e.to_string()),
            other => ApiError::internal("the connection's history could not be read", other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_tells_absent_from_null() {
        let parsed: ConnectionChanges =
            serde_json::from_value(json!({"display_name": null, "locale": "nl-BE"})).unwrap();
        assert_eq!(parsed.display_name, Some(None));
        assert_eq!(parsed.locale, Some(Some("nl-BE".into())));
        assert!(parsed.recipients.is_none() && parsed.time_zone.is_none());
        let refused =
            serde_json::from_value::<ConnectionChanges>(json!({"timezone": "UTC"})).unwrap_err();
        assert!(refused.to_string().contains("unknown field"), "{refused}");
    }

    #[test]
    fn refused_values_name_their_field_and_what_is_accepted() {
        let refusal = |body: Value| {
            Patch::parse(serde_json::from_value(body).unwrap())
                .unwrap_err()
                .detail
        };
        let locale = refusal(json!({"locale": "fr"}));
        assert!(
            locale.starts_with("locale: ") && locale.contains("\"en\""),
            "{locale}"
        );
        let zone = refusal(json!({"time_zone": "Mars/Olympus"}));
        assert!(
            zone.starts_with("time_zone: ") && zone.contains("Europe/Amsterdam"),
            "{zone}"
        );
        let recipients = refusal(json!({"recipients": ["not-an-address"]}));
        assert!(recipients.starts_with("recipients: "), "{recipients}");
        let identity = refusal(json!({"required_identity": {"subject": " "}}));
        assert!(identity.starts_with("required_identity: "), "{identity}");
        let name = refusal(json!({"display_name": "x".repeat(201)}));
        assert!(name.starts_with("display_name: "), "{name}");
    }
}
