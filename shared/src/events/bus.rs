//! The event bus port: where every status change is put for integrators to route with their own
//! rules (EventBridge on AWS, see `crate::adapters::eventbridge`).

use super::event::StatusChangeEvent;
use async_trait::async_trait;

#[async_trait]
pub trait EventBus: Send + Sync {
    /// Puts one event. An error says why in words fit for a log (never the event's content).
    async fn put(&self, event: &StatusChangeEvent) -> Result<(), String>;
}
