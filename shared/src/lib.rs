//! The core of the OAuth connection broker: the domain, the ports the functions depend on, the logic
//! that keeps credentials safe, and the adapters for AWS and for the embedded local store.
//!
//! No Lambda or HTTP-framework types appear here; the functions under `functions/` map their transport
//! onto these types.

pub mod adapters;
pub mod api;
pub mod backend;
pub mod clock;
pub mod connect;
pub mod context;
pub mod credential_keeper;
// On the embedded store in memory.
#[cfg(all(test, feature = "embedded"))]
mod credential_keeper_tests;
pub mod domain;
pub mod escrow;
pub mod events;
#[cfg(test)]
mod fixtures;
pub mod history;
pub mod html;
pub mod ids;
pub mod notify;
pub mod ports;
pub mod providers;
pub mod random;
pub mod refresh;
pub mod secret;
pub mod telemetry;
pub mod wording;

pub use clock::{Clock, ManualClock, SystemClock};
pub use credential_keeper::{CredentialKeeper, KeeperError};
