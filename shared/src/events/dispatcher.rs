//! The dispatcher: turns pending events into deliveries and delivers what is due.

use super::bus::EventBus;
use super::delivery::{
    DeliveryClaim, DeliveryKey, DeliveryRecord, DeliverySettle, DeliveryTicket, PendingEvent,
    RetryPolicy, Target,
};
use super::event::StatusChangeEvent;
use super::webhook::{signature, EVENT_ID_HEADER, SIGNATURE_HEADER};
use crate::clock::Clock;
use crate::ports::{MetadataStore, StoreError, TokenVault};
use crate::providers::ProviderHttp;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Pending events read per page.
const PAGE: u32 = 100;

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchSummary {
    /// Events turned into deliveries.
    pub events: usize,
    pub delivered: usize,
    /// Failed attempts that will be retried.
    pub retrying: usize,
    /// Deliveries given up on (dead letters).
    pub dead: usize,
    /// Deliveries to endpoints deleted before their turn.
    pub dropped: usize,
    /// Claimed by another dispatcher, or their claim changed under this one.
    pub busy: usize,
    /// Store failures (logged); the run is safe to repeat.
    pub errors: usize,
}

/// One attempt's result.
enum Attempt {
    Delivered,
    Failed(String),
    /// There is nothing to deliver to any more.
    Gone(String),
}

pub struct Dispatcher {
    store: Arc<dyn MetadataStore>,
    vault: Arc<dyn TokenVault>,
    http: ProviderHttp,
    bus: Option<Arc<dyn EventBus>>,
    clock: Arc<dyn Clock>,
    policy: RetryPolicy,
    /// A run starts no new delivery after this long, so it ends within its function's timeout.
    budget: Duration,
}

impl Dispatcher {
    /// `http` must be the guarded client (address policy, timeouts): the one provider calls use.
    pub fn new(
        store: Arc<dyn MetadataStore>,
        vault: Arc<dyn TokenVault>,
        http: ProviderHttp,
        bus: Option<Arc<dyn EventBus>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            vault,
            http,
            bus,
            clock,
            policy: RetryPolicy::default(),
            budget: Duration::from_secs(240),
        }
    }

    /// Over a context's store, vault, provider HTTP client and clock.
    pub fn for_context(
        ctx: &crate::context::BrokerContext,
        bus: Option<Arc<dyn EventBus>>,
    ) -> Self {
        Self::new(
            ctx.backend.store.clone(),
            ctx.backend.vault.clone(),
            ctx.providers.http().clone(),
            bus,
            ctx.clock.clone(),
        )
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn with_budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// Fans out every pending event, then delivers everything due. Safe to run concurrently and to
    /// repeat: claims decide who sends.
    pub async fn run(&self) -> DispatchSummary {
        let started = Instant::now();
        let mut summary = DispatchSummary::default();
        self.fan_out_pending(&mut summary).await;
        self.deliver_due(&mut summary, started).await;
        summary
    }

    /// Only the first half of [`Dispatcher::run`]: every pending event turned into its deliveries.
    pub async fn fan_out_all(&self) -> DispatchSummary {
        let mut summary = DispatchSummary::default();
        self.fan_out_pending(&mut summary).await;
        summary
    }

    async fn fan_out_pending(&self, summary: &mut DispatchSummary) {
        let mut seen = HashSet::new();
        loop {
            let pending = match self.store.pending_events(PAGE).await {
                Ok(pending) => pending,
                Err(e) => {
                    tracing::warn!(error = %e, "pending events could not be listed");
                    summary.errors += 1;
                    return;
                }
            };
            let fresh: Vec<_> = pending
                .into_iter()
                .filter(|p| seen.insert(p.key.clone()))
                .collect();
            if fresh.is_empty() {
                return;
            }
            for event in &fresh {
                match self.fan_out(event).await {
                    Ok(true) => summary.events += 1,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(connection = %event.connection, error = %e, "event not fanned out; the next run retries");
                        summary.errors += 1;
                    }
                }
            }
        }
    }

    /// The deliveries of one event: the bus (when there is one) and every endpoint its tenant has
    /// now. An endpoint registered later does not receive earlier events.
    async fn fan_out(&self, pending: &PendingEvent) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let Some(connection) = self.store.get_connection(&pending.connection).await? else {
            // Connections are never deleted; a transition without one has nobody to tell.
            tracing::warn!(connection = %pending.connection, "a transition's connection is missing; its event is dropped");
            return self.store.fan_out_event(&pending.key, &[], now).await;
        };
        let Some(event) = StatusChangeEvent::of(
            connection.tenant.clone(),
            connection.id.clone(),
            &pending.key,
            &pending.transition,
        ) else {
            return self.store.fan_out_event(&pending.key, &[], now).await;
        };
        let mut targets = Vec::new();
        if self.bus.is_some() {
            targets.push(Target::Bus);
        }
        for webhook in self.store.list_webhooks(&connection.tenant).await? {
            targets.push(Target::Webhook { id: webhook.id });
        }
        let tickets: Vec<_> = targets
            .into_iter()
            .map(|target| DeliveryTicket {
                tenant: connection.tenant.clone(),
                target,
                event: event.clone(),
                created_at: now,
            })
            .collect();
        self.store.fan_out_event(&pending.key, &tickets, now).await
    }

    async fn deliver_due(&self, summary: &mut DispatchSummary, started: Instant) {
        let mut seen = HashSet::new();
        loop {
            let due = match self.store.due_deliveries(self.clock.now(), PAGE).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "due deliveries could not be listed");
                    summary.errors += 1;
                    return;
                }
            };
            let fresh: Vec<_> = due.into_iter().filter(|k| seen.insert(k.clone())).collect();
            if fresh.is_empty() {
                return;
            }
            for key in fresh {
                if started.elapsed() > self.budget {
                    tracing::info!("dispatch budget spent; the next run delivers the rest");
                    return;
                }
                if let Err(e) = self.deliver(&key, summary).await {
                    tracing::warn!(delivery = %key, error = %e, "delivery not settled; it is retried when its claim is stale");
                    summary.errors += 1;
                }
            }
        }
    }

    /// Claims, sends and settles one delivery.
    pub async fn deliver(
        &self,
        key: &DeliveryKey,
        summary: &mut DispatchSummary,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let record = match self
            .store
            .claim_delivery(key, now, now - self.policy.stale_after)
            .await?
        {
            DeliveryClaim::Claimed(record) => record,
            DeliveryClaim::Busy => {
                summary.busy += 1;
                return Ok(());
            }
            DeliveryClaim::NotDue | DeliveryClaim::Settled | DeliveryClaim::Missing => {
                return Ok(())
            }
        };
        let attempt = self.attempt(&record).await;
        let attempts = record.attempts + 1;
        let done = self.clock.now();
        let event = &record.ticket.event.id;
        let target = &record.ticket.target;
        let settle = match attempt {
            Attempt::Delivered => DeliverySettle::Delivered { at: done, attempts },
            Attempt::Gone(reason) => {
                tracing::info!(event, ?target, reason, "delivery dropped");
                DeliverySettle::Dropped { at: done, reason }
            }
            Attempt::Failed(last_error) => {
                match self
                    .policy
                    .next_attempt(record.ticket.created_at, attempts, done)
                {
                    Some(due_at) => {
                        tracing::warn!(event, ?target, attempts, error = %last_error, %due_at, "delivery failed; retrying");
                        DeliverySettle::Retry {
                            due_at,
                            attempts,
                            last_error,
                        }
                    }
                    None => {
                        tracing::error!(event, tenant = %record.ticket.tenant, ?target, attempts, error = %last_error, "delivery given up: dead letter");
                        DeliverySettle::Dead {
                            at: done,
                            attempts,
                            last_error,
                        }
                    }
                }
            }
        };
        match self.store.settle_delivery(key, now, &settle).await {
            Ok(()) => {
                *match settle {
                    DeliverySettle::Delivered { .. } => &mut summary.delivered,
                    DeliverySettle::Dropped { .. } => &mut summary.dropped,
                    DeliverySettle::Retry { .. } => &mut summary.retrying,
                    DeliverySettle::Dead { .. } => &mut summary.dead,
                } += 1;
                Ok(())
            }
            Err(StoreError::Conflict) => {
                // Our claim was taken over as stale: the taker settles it.
                summary.busy += 1;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn attempt(&self, record: &DeliveryRecord) -> Attempt {
        let event = &record.ticket.event;
        match &record.ticket.target {
            Target::Bus => match &self.bus {
                Some(bus) => match bus.put(event).await {
                    Ok(()) => Attempt::Delivered,
                    Err(e) => Attempt::Failed(e),
                },
                // Created by a dispatcher with a bus; this one (a misconfigured run) has none.
                None => Attempt::Failed("this dispatcher has no event bus configured".into()),
            },
            Target::Webhook { id } => {
                let tenant = &record.ticket.tenant;
                let webhook = match self.store.list_webhooks(tenant).await {
                    Ok(hooks) => hooks.into_iter().find(|w| &w.id == id),
                    Err(e) => {
                        return Attempt::Failed(format!("the endpoint could not be read: {e}"))
                    }
                };
                let Some(webhook) = webhook else {
                    return Attempt::Gone("the webhook was deleted".into());
                };
                let secret = match self.vault.get_webhook_secret(tenant, id).await {
                    Ok(Some(secret)) => secret,
                    Ok(None) => {
                        return Attempt::Gone("the webhook's signing secret is gone".into())
                    }
                    Err(e) => {
                        return Attempt::Failed(format!(
                            "the signing secret could not be read: {e}"
                        ))
                    }
                };
                let body = event.body();
                let signed = signature(&secret, self.clock.now().timestamp(), &body);
                let request = self
                    .http
                    .client()
                    .post(webhook.url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header(SIGNATURE_HEADER, signed)
                    .header(EVENT_ID_HEADER, event.id.as_str())
                    .body(body);
                match self.http.send(request).await {
                    Ok(reply) if (200..300).contains(&reply.status) => Attempt::Delivered,
                    Ok(reply) => {
                        Attempt::Failed(format!("the endpoint answered HTTP {}", reply.status))
                    }
                    Err(failure) => Attempt::Failed(failure.detail),
                }
            }
        }
    }
}
