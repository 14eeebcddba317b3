//! The status-change event outbox and the webhook endpoints, in memory. An event is every stored
//! transition that changes the status and is not yet marked fanned out: derived from the transitions
//! themselves, so it exists exactly when its transition does, as on the real backends.

use super::*;
use crate::events::{
    DeliveryClaim, DeliveryKey, DeliveryRecord, DeliverySettle, DeliveryState, DeliveryTicket,
    PendingEvent, Webhook,
};
use crate::ids::WebhookId;
use crate::ports::EventStore;
use crate::secret::WebhookSecret;
use std::collections::HashSet;

#[derive(Default)]
pub(super) struct Events {
    fanned_out: HashSet<u64>,
    deliveries: BTreeMap<String, DeliveryRecord>,
    webhooks: BTreeMap<(TenantId, WebhookId), Webhook>,
    secrets: HashMap<(TenantId, WebhookId), WebhookSecret>,
}

const KEY_PREFIX: &str = "transition:";

#[async_trait]
impl EventStore for MemoryStore {
    async fn pending_events(&self, limit: u32) -> Result<Vec<PendingEvent>, StoreError> {
        let state = self.state();
        let mut pending: Vec<_> = state
            .transitions
            .iter()
            .flat_map(|(connection, list)| list.iter().map(move |(seq, t)| (*seq, connection, t)))
            .filter(|(seq, _, t)| t.from != t.to && !state.events.fanned_out.contains(seq))
            .map(|(seq, connection, t)| PendingEvent {
                key: format!("{KEY_PREFIX}{seq}"),
                connection: connection.clone(),
                transition: t.clone(),
            })
            .collect();
        pending.sort_by_key(|p| p.key[KEY_PREFIX.len()..].parse::<u64>().unwrap_or(0));
        pending.truncate(limit as usize);
        Ok(pending)
    }

    async fn fan_out_event(
        &self,
        key: &str,
        deliveries: &[DeliveryTicket],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let seq: u64 = key
            .strip_prefix(KEY_PREFIX)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::NotFound(format!("event {key}")))?;
        let mut state = self.state();
        if !state.events.fanned_out.insert(seq) {
            return Ok(false);
        }
        for ticket in deliveries {
            state
                .events
                .deliveries
                .entry(ticket.key().to_string())
                .or_insert_with(|| DeliveryRecord {
                    ticket: ticket.clone(),
                    state: DeliveryState::Pending { due_at: now },
                    attempts: 0,
                    last_error: None,
                });
        }
        Ok(true)
    }

    async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<DeliveryKey>, StoreError> {
        let state = self.state();
        let mut due: Vec<_> = state
            .events
            .deliveries
            .iter()
            .filter_map(|(key, d)| match d.state {
                DeliveryState::Pending { due_at } if due_at <= now => Some((due_at, key.clone())),
                // Claims are listed from their claim time: the claimer decides whether it is stale.
                DeliveryState::Sending { claimed_at } => Some((claimed_at, key.clone())),
                _ => None,
            })
            .collect();
        due.sort();
        Ok(due
            .into_iter()
            .take(limit as usize)
            .map(|(_, key)| DeliveryKey::new(key))
            .collect())
    }

    async fn claim_delivery(
        &self,
        key: &DeliveryKey,
        now: DateTime<Utc>,
        stale_before: DateTime<Utc>,
    ) -> Result<DeliveryClaim, StoreError> {
        let mut state = self.state();
        let Some(record) = state.events.deliveries.get_mut(key.as_str()) else {
            return Ok(DeliveryClaim::Missing);
        };
        match record.state {
            DeliveryState::Pending { due_at } if due_at <= now => {}
            DeliveryState::Pending { .. } => return Ok(DeliveryClaim::NotDue),
            DeliveryState::Sending { claimed_at } if claimed_at < stale_before => {}
            DeliveryState::Sending { .. } => return Ok(DeliveryClaim::Busy),
            _ => return Ok(DeliveryClaim::Settled),
        }
        record.state = DeliveryState::Sending { claimed_at: now };
        Ok(DeliveryClaim::Claimed(record.clone()))
    }

    async fn settle_delivery(
        &self,
        key: &DeliveryKey,
        claimed_at: DateTime<Utc>,
        settle: &DeliverySettle,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let Some(record) = state.events.deliveries.get_mut(key.as_str()) else {
            return Err(StoreError::Conflict);
        };
        if record.state != (DeliveryState::Sending { claimed_at }) {
            return Err(StoreError::Conflict);
        }
        record.state = settle.state();
        record.attempts = settle.attempts(record.attempts);
        if let Some(error) = settle.last_error() {
            record.last_error = Some(error.to_string());
        }
        Ok(())
    }

    async fn get_delivery(&self, key: &DeliveryKey) -> Result<Option<DeliveryRecord>, StoreError> {
        Ok(self.state().events.deliveries.get(key.as_str()).cloned())
    }

    async fn dead_letters(
        &self,
        tenant: &TenantId,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let state = self.state();
        let mut dead: Vec<_> = state
            .events
            .deliveries
            .values()
            .filter(|d| &d.ticket.tenant == tenant)
            .filter_map(|d| match d.state {
                DeliveryState::Dead { at } => Some((std::cmp::Reverse(at), d.key(), d.clone())),
                _ => None,
            })
            .collect();
        dead.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(dead
            .into_iter()
            .take(limit as usize)
            .map(|(_, _, d)| d)
            .collect())
    }

    async fn insert_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let mut state = self.state();
        let key = (webhook.tenant.clone(), webhook.id.clone());
        if state.events.webhooks.contains_key(&key) {
            return Err(StoreError::AlreadyExists(format!("webhook {}", webhook.id)));
        }
        state.events.webhooks.insert(key, webhook.clone());
        Ok(())
    }

    async fn list_webhooks(&self, tenant: &TenantId) -> Result<Vec<Webhook>, StoreError> {
        let state = self.state();
        let mut hooks: Vec<_> = state
            .events
            .webhooks
            .values()
            .filter(|w| &w.tenant == tenant)
            .cloned()
            .collect();
        hooks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(hooks)
    }

    async fn delete_webhook(&self, tenant: &TenantId, id: &WebhookId) -> Result<bool, StoreError> {
        Ok(self
            .state()
            .events
            .webhooks
            .remove(&(tenant.clone(), id.clone()))
            .is_some())
    }
}

impl MemoryStore {
    pub(super) fn put_memory_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
        secret: &WebhookSecret,
    ) {
        self.state()
            .events
            .secrets
            .insert((tenant.clone(), webhook.clone()), secret.clone());
    }

    pub(super) fn get_memory_webhook_secret(
        &self,
        tenant: &TenantId,
        webhook: &WebhookId,
    ) -> Option<WebhookSecret> {
        self.state()
            .events
            .secrets
            .get(&(tenant.clone(), webhook.clone()))
            .cloned()
    }

    pub(super) fn delete_memory_webhook_secret(&self, tenant: &TenantId, webhook: &WebhookId) {
        self.state()
            .events
            .secrets
            .remove(&(tenant.clone(), webhook.clone()));
    }
}
