//! Connecting and reconnecting: the links that start the OAuth flow.

pub mod flow;
// On the embedded store in memory.
#[cfg(all(test, feature = "embedded"))]
mod flow_tests;
pub mod links;

pub use links::{issue_link, resolve_link, LINK_LIFETIME};
