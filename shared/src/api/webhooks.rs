//! The tenant's webhook endpoints (`/v1/webhooks`) and their dead letters. Managing them takes the
//! same grant as app registrations (`manage_apps`): both are the tenant's configuration, and a key that
//! may point the tenant's apps elsewhere is trusted with where its events go. The signing secret is in
//! the answer to the registration only; afterwards no answer carries it.

use super::problem::{ApiError, ProblemKind};
use super::service::{Caller, IntegrationApi};
use crate::domain::StatusKind;
use crate::events::webhook::{check_url, generate_secret, MAX_WEBHOOKS_PER_TENANT};
use crate::events::{DeliveryRecord, DeliveryState, Target, Webhook};
use crate::ids::WebhookId;
use crate::secret::WebhookSecret;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Dead letters one listing returns at most.
const DEAD_LETTERS_LISTED: u32 = 100;
/// A description longer than this is refused (it is shown in listings, not processed).
const MAX_DESCRIPTION: usize = 200;

/// `POST /v1/webhooks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    pub url: String,
    #[serde(default)]
    pub description: String,
}

/// An endpoint as listings show it.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub id: String,
    pub url: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

impl WebhookView {
    fn of(webhook: &Webhook) -> Self {
        Self {
            id: webhook.id.to_string(),
            url: webhook.url.to_string(),
            description: webhook.description.clone(),
            created_at: webhook.created_at,
        }
    }
}

/// The answer to a registration: the endpoint and, this once, its signing secret.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// Shown here only: keep it where your receiver verifies signatures.
    pub secret: SecretShownOnce,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The signing secret in the one answer that carries it.
#[derive(Debug, Clone)]
pub struct SecretShownOnce(pub WebhookSecret);

impl Serialize for SecretShownOnce {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose())
    }
}

/// `GET /v1/webhooks`.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookList {
    pub webhooks: Vec<WebhookView>,
}

/// One delivery given up on.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub event_id: String,
    /// The endpoint it was for; `null` for the event bus.
    pub webhook_id: Option<String>,
    pub connection: String,
    pub from: StatusKind,
    pub to: StatusKind,
    pub event_time: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub given_up_at: DateTime<Utc>,
}

/// `GET /v1/webhooks/dead-letters`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterView>,
}

impl DeadLetterView {
    fn of(record: &DeliveryRecord) -> Option<Self> {
        let DeliveryState::Dead { at } = record.state else {
            return None;
        };
        let event = &record.ticket.event;
        Some(Self {
            event_id: event.id.clone(),
            webhook_id: match &record.ticket.target {
                Target::Webhook { id } => Some(id.to_string()),
                Target::Bus => None,
            },
            connection: event.connection.to_string(),
            from: event.from,
            to: event.to,
            event_time: event.time,
            attempts: record.attempts,
            last_error: record.last_error.clone(),
            given_up_at: at,
        })
    }
}

fn webhook_not_found() -> ApiError {
    ApiError::new(
        ProblemKind::NotFound,
        "your tenant has no webhook by that id: list them with GET /v1/webhooks",
    )
}

impl IntegrationApi {
    pub async fn register_webhook(
        &self,
        caller: &Caller,
        request: NewWebhook,
    ) -> Result<CreatedWebhook, ApiError> {
        caller.require_app_management()?;
        let invalid = |detail: String| ApiError::new(ProblemKind::ValidationFailed, detail);
        let description = request.description.trim().to_string();
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(invalid(format!(
                "description is longer than {MAX_DESCRIPTION} characters: shorten it"
            )));
        }
        let policy = self.ctx.providers.http().settings().addresses;
        let (url, warning) = check_url(&request.url, policy)
            .await
            .map_err(|refused| invalid(refused.to_string()))?;
        let existing = self.tenant_webhooks(caller).await?;
        if existing.len() >= MAX_WEBHOOKS_PER_TENANT {
            return Err(invalid(format!(
                "your tenant has {MAX_WEBHOOKS_PER_TENANT} webhooks, the most it may have: delete one with DELETE /v1/webhooks/{{id}} first"
            )));
        }
        let webhook = Webhook {
            id: WebhookId::generate(),
            tenant: caller.tenant().clone(),
            url,
            description,
            created_at: self.ctx.clock.now(),
        };
        let secret = generate_secret();
        // The secret first: an endpoint without one could not be signed for.
        self.ctx
            .backend
            .vault
            .put_webhook_secret(&webhook.tenant, &webhook.id, &secret)
            .await
            .map_err(|e| {
                ApiError::internal("the webhook's signing secret could not be stored", e)
            })?;
        self.ctx
            .backend
            .store
            .insert_webhook(&webhook)
            .await
            .map_err(|e| ApiError::internal("the webhook could not be stored", e))?;
        tracing::info!(key_prefix = caller.prefix(), webhook = %webhook.id, "webhook registered");
        Ok(CreatedWebhook {
            webhook: WebhookView::of(&webhook),
            secret: SecretShownOnce(secret),
            warnings: warning.into_iter().collect(),
        })
    }

    async fn tenant_webhooks(&self, caller: &Caller) -> Result<Vec<Webhook>, ApiError> {
        self.ctx
            .backend
            .store
            .list_webhooks(caller.tenant())
            .await
            .map_err(|e| ApiError::internal("the webhooks could not be listed", e))
    }

    pub async fn list_webhooks(&self, caller: &Caller) -> Result<WebhookList, ApiError> {
        caller.require_app_management()?;
        Ok(WebhookList {
            webhooks: self
                .tenant_webhooks(caller)
                .await?
                .iter()
                .map(WebhookView::of)
                .collect(),
        })
    }

    /// Deletes the endpoint, then its secret. Deliveries still due to it are dropped when their turn
    /// comes.
    pub async fn delete_webhook(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        caller.require_app_management()?;
        let id = WebhookId::parse(id.trim()).map_err(|_| webhook_not_found())?;
        let deleted = self
            .ctx
            .backend
            .store
            .delete_webhook(caller.tenant(), &id)
            .await
            .map_err(|e| ApiError::internal("the webhook could not be deleted", e))?;
        if !deleted {
            return Err(webhook_not_found());
        }
        self.ctx
            .backend
            .vault
            .delete_webhook_secret(caller.tenant(), &id)
            .await
            .map_err(|e| {
                ApiError::internal("the webhook's signing secret could not be deleted", e)
            })?;
        tracing::info!(key_prefix = caller.prefix(), webhook = %id, "webhook deleted");
        Ok(())
    }

    /// The tenant's dead letters, newest first; with `webhook`, only that endpoint's.
    pub async fn dead_letters(
        &self,
        caller: &Caller,
        webhook: Option<&str>,
    ) -> Result<DeadLetterList, ApiError> {
        caller.require_app_management()?;
        let only = match webhook.map(str::trim).filter(|w| !w.is_empty()) {
            Some(raw) => Some(WebhookId::parse(raw).map_err(|_| {
                ApiError::new(
                    ProblemKind::ValidationFailed,
                    "webhook is not a webhook id (whk_…): take it from GET /v1/webhooks",
                )
            })?),
            None => None,
        };
        let records = self
            .ctx
            .backend
            .store
            .dead_letters(caller.tenant(), DEAD_LETTERS_LISTED)
            .await
            .map_err(|e| ApiError::internal("the dead letters could not be listed", e))?;
        Ok(DeadLetterList {
            dead_letters: records
                .iter()
                .filter(|r| match &only {
                    Some(id) => r.ticket.target == Target::Webhook { id: id.clone() },
                    None => true,
                })
                .filter_map(DeadLetterView::of)
                .collect(),
        })
    }
}
