//! The status-change event outbox and webhook endpoints: an event per status change, written with
//! it; a fan-out that happens once; claims that only one holder gets and that go stale; settles fenced
//! by the claim; dead letters and endpoints seen by their own tenant only.

use super::*;
use broker_core::events::{
    DeliveryClaim, DeliverySettle, DeliveryState, DeliveryTicket, StatusChangeEvent, Target,
    Webhook,
};
use broker_core::ids::WebhookId;

contract!(
    every_status_change_is_one_pending_event_and_fans_out_once,
    a_delivery_is_claimed_once_retried_when_due_and_settled_by_its_claim_only,
    dead_letters_and_webhooks_are_their_tenants_only,
);

fn transition(from: StatusKind, to: StatusKind, at: DateTime<Utc>) -> StatusTransition {
    StatusTransition {
        from,
        to,
        at,
        actor: Actor::System("contract".into()),
        reason: "contract".into(),
    }
}

/// A connection with two recorded transitions, one a status change and one not; its event's tickets
/// for two endpoints.
async fn one_event(backend: &Backend, tenant_id: &TenantId) -> (Vec<DeliveryTicket>, String) {
    let c = new_connection(tenant_id, t0());
    backend
        .store
        .insert_connection(
            &c,
            &[
                transition(StatusKind::NotConnected, StatusKind::Connected, t0()),
                transition(StatusKind::Connected, StatusKind::Connected, t0()),
            ],
        )
        .await
        .unwrap();
    let pending: Vec<_> = backend
        .store
        .pending_events(100)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.connection == c.id)
        .collect();
    assert_eq!(pending.len(), 1, "{}: {pending:?}", backend.name);
    let event = StatusChangeEvent::of(
        tenant_id.clone(),
        c.id.clone(),
        &pending[0].key,
        &pending[0].transition,
    )
    .unwrap();
    let tickets = [WebhookId::generate(), WebhookId::generate()]
        .into_iter()
        .map(|id| DeliveryTicket {
            tenant: tenant_id.clone(),
            target: Target::Webhook { id },
            event: event.clone(),
            created_at: t0(),
        })
        .collect();
    (tickets, pending[0].key.clone())
}

async fn every_status_change_is_one_pending_event_and_fans_out_once(backend: Backend) {
    let name = backend.name;
    let store = &backend.store;
    let (tickets, key) = one_event(&backend, &tenant("acme")).await;
    assert_eq!(tickets[0].event.from, StatusKind::NotConnected);
    assert!(
        store.fan_out_event(&key, &tickets, t0()).await.unwrap(),
        "{name}"
    );
    assert!(
        !store.fan_out_event(&key, &tickets, t0()).await.unwrap(),
        "{name}: twice"
    );
    assert!(
        store
            .pending_events(100)
            .await
            .unwrap()
            .iter()
            .all(|p| p.key != key),
        "{name}"
    );
    let mut due = store.due_deliveries(t0(), 100).await.unwrap();
    due.sort();
    let mut expected: Vec<_> = tickets.iter().map(DeliveryTicket::key).collect();
    expected.sort();
    assert_eq!(due, expected, "{name}");
    let record = store.get_delivery(&expected[0]).await.unwrap().unwrap();
    assert_eq!(
        record.state,
        DeliveryState::Pending { due_at: t0() },
        "{name}"
    );
    assert_eq!(record.attempts, 0);
    // A refused save writes no event.
    let c = store
        .list_connections(&tenant("acme"), PageRequest::first(10))
        .await
        .unwrap()
        .items[0]
        .clone();
    let stale = c.clone().read_at_version(c.version() + 7);
    assert!(store
        .save_connection(
            &stale,
            Fence::Version,
            &[transition(
                StatusKind::Connected,
                StatusKind::Disabled,
                t0()
            )]
        )
        .await
        .is_err());
    assert!(
        store.pending_events(100).await.unwrap().is_empty(),
        "{name}"
    );
}

async fn a_delivery_is_claimed_once_retried_when_due_and_settled_by_its_claim_only(
    backend: Backend,
) {
    let name = backend.name;
    let store = &backend.store;
    let (tickets, key) = one_event(&backend, &tenant("acme")).await;
    store.fan_out_event(&key, &tickets, t0()).await.unwrap();
    let delivery = tickets[0].key();
    let stale_before = |now: DateTime<Utc>| now - Duration::minutes(5);
    let now = t0();
    let DeliveryClaim::Claimed(claimed) = store
        .claim_delivery(&delivery, now, stale_before(now))
        .await
        .unwrap()
    else {
        panic!("{name}: not claimed")
    };
    assert_eq!(
        claimed.state,
        DeliveryState::Sending { claimed_at: now },
        "{name}"
    );
    assert_eq!(claimed.ticket, tickets[0], "{name}");
    assert_eq!(
        store
            .claim_delivery(&delivery, now, stale_before(now))
            .await
            .unwrap(),
        DeliveryClaim::Busy,
        "{name}"
    );
    // Stale: taken over; the first claimant's settle is then refused.
    let later = now + Duration::minutes(6);
    assert!(matches!(
        store
            .claim_delivery(&delivery, later, stale_before(later))
            .await
            .unwrap(),
        DeliveryClaim::Claimed(_)
    ));
    let retry = DeliverySettle::Retry {
        due_at: later + Duration::minutes(1),
        attempts: 1,
        last_error: "HTTP 503".into(),
    };
    assert_eq!(
        store.settle_delivery(&delivery, now, &retry).await,
        Err(StoreError::Conflict),
        "{name}"
    );
    store
        .settle_delivery(&delivery, later, &retry)
        .await
        .unwrap();
    let record = store.get_delivery(&delivery).await.unwrap().unwrap();
    assert_eq!(
        record.state,
        DeliveryState::Pending {
            due_at: later + Duration::minutes(1)
        }
    );
    assert_eq!(
        (record.attempts, record.last_error.as_deref()),
        (1, Some("HTTP 503")),
        "{name}"
    );
    assert_eq!(
        store
            .claim_delivery(&delivery, later, stale_before(later))
            .await
            .unwrap(),
        DeliveryClaim::NotDue,
        "{name}"
    );
    assert!(
        !store
            .due_deliveries(later, 10)
            .await
            .unwrap()
            .contains(&delivery),
        "{name}"
    );
    let due_at = later + Duration::minutes(1);
    assert!(
        store
            .due_deliveries(due_at, 10)
            .await
            .unwrap()
            .contains(&delivery),
        "{name}"
    );
    assert!(matches!(
        store
            .claim_delivery(&delivery, due_at, stale_before(due_at))
            .await
            .unwrap(),
        DeliveryClaim::Claimed(_)
    ));
    let delivered = DeliverySettle::Delivered {
        at: due_at,
        attempts: 2,
    };
    store
        .settle_delivery(&delivery, due_at, &delivered)
        .await
        .unwrap();
    assert_eq!(
        store
            .claim_delivery(&delivery, due_at, stale_before(due_at))
            .await
            .unwrap(),
        DeliveryClaim::Settled,
        "{name}"
    );
    let record = store.get_delivery(&delivery).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.attempts),
        (DeliveryState::Delivered { at: due_at }, 2),
        "{name}"
    );
    // The other endpoint's delivery was untouched by all this.
    let other = store
        .get_delivery(&tickets[1].key())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        other.state,
        DeliveryState::Pending { due_at: t0() },
        "{name}"
    );
}

async fn dead_letters_and_webhooks_are_their_tenants_only(backend: Backend) {
    let name = backend.name;
    let store = &backend.store;
    let (acme, globex) = (tenant("acme"), tenant("globex"));
    let (tickets, key) = one_event(&backend, &acme).await;
    store.fan_out_event(&key, &tickets, t0()).await.unwrap();
    let delivery = tickets[0].key();
    let at = t0() + Duration::hours(24);
    assert!(matches!(
        store
            .claim_delivery(&delivery, at, at - Duration::minutes(5))
            .await
            .unwrap(),
        DeliveryClaim::Claimed(_)
    ));
    let dead = DeliverySettle::Dead {
        at,
        attempts: 18,
        last_error: "HTTP 500".into(),
    };
    store.settle_delivery(&delivery, at, &dead).await.unwrap();
    let letters = store.dead_letters(&acme, 10).await.unwrap();
    assert_eq!(letters.len(), 1, "{name}");
    assert_eq!(letters[0].ticket, tickets[0]);
    assert_eq!(
        (letters[0].state.clone(), letters[0].attempts),
        (DeliveryState::Dead { at }, 18)
    );
    assert!(
        store.dead_letters(&globex, 10).await.unwrap().is_empty(),
        "{name}"
    );
    assert!(!store
        .due_deliveries(at + Duration::days(9), 10)
        .await
        .unwrap()
        .contains(&delivery));

    let hook = |tenant: &TenantId, minute: i64| Webhook {
        id: WebhookId::generate(),
        tenant: tenant.clone(),
        url: url::Url::parse("https://hooks.example.com/x").unwrap(),
        description: String::new(),
        created_at: t0() + Duration::minutes(minute),
    };
    let (first, second, theirs) = (hook(&acme, 1), hook(&acme, 2), hook(&globex, 0));
    for h in [&second, &first, &theirs] {
        store.insert_webhook(h).await.unwrap();
    }
    assert!(
        matches!(
            store.insert_webhook(&first).await,
            Err(StoreError::AlreadyExists(_))
        ),
        "{name}"
    );
    assert_eq!(
        store.list_webhooks(&acme).await.unwrap(),
        [first.clone(), second.clone()],
        "{name}"
    );
    assert_eq!(
        store.list_webhooks(&globex).await.unwrap(),
        [theirs],
        "{name}"
    );
    assert!(
        !store.delete_webhook(&globex, &first.id).await.unwrap(),
        "{name}: another tenant's"
    );
    assert!(store.delete_webhook(&acme, &first.id).await.unwrap());
    assert!(!store.delete_webhook(&acme, &first.id).await.unwrap());
    assert_eq!(
        store.list_webhooks(&acme).await.unwrap(),
        [second],
        "{name}"
    );
}
