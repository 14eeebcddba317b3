//! Status-change events: every change of a connection's status, delivered to integrators two ways from
//! one outbox — put on the broker's EventBridge bus, and posted, signed, to the webhook endpoints
//! their tenant registered.
//!
//! # Delivery: at least once, with a stable id
//!
//! 1. **No event is lost.** A transition that changes the status is its own outbox entry, written in
//!    the same atomic write as the connection change (DynamoDB: attributes and the sparse `EVENTS`
//!    entry of `gsi1` on the transition item; embedded: a trigger inserts the `status_events` row in
//!    the same transaction).
//! 2. **One delivery per target, created atomically.** The dispatcher turns an event into one delivery
//!    for the bus and one per endpoint, and marks the event done, in one atomic write; of concurrent
//!    dispatchers one does it, the others find it done.
//! 3. **Claim, send, settle — each delivery on its own.** A delivery is sent only after a conditional
//!    write moved it from pending to sending; it is then settled delivered, put back pending with its
//!    next due time (exponential backoff, [`RetryPolicy`]), or, when the retry window is spent, settled
//!    dead: a dead letter its tenant can list. One endpoint that is down holds back nothing else.
//! 4. **A stale claim is taken over.** A crash between the send and the settle leaves a claim that
//!    another dispatcher takes over after [`RetryPolicy::stale_after`] and sends again. So a delivery can
//!    repeat — as EventBridge's own delivery to targets can — and every event carries an `id` that is
//!    the same on every repeat: receivers deduplicate on it.
//!
//! An event carries ids, statuses, a reason and a time; never a token or any other secret.

mod bus;
mod delivery;
mod dispatcher;
mod event;
pub mod webhook;

pub use bus::EventBus;
pub use delivery::{
    DeliveryClaim, DeliveryKey, DeliveryRecord, DeliverySettle, DeliveryState, DeliveryTicket,
    PendingEvent, RetryPolicy, Target,
};
pub use dispatcher::{DispatchSummary, Dispatcher};
pub use event::{is_status_change, StatusChangeEvent, DETAIL_TYPE, EVENT_SOURCE, EVENT_TYPE};
pub use webhook::Webhook;
