//! Connecting and reconnecting: the links that start the OAuth flow.

pub mod flow;
pub mod links;

pub use links::{issue_link, resolve_link, LINK_LIFETIME};
