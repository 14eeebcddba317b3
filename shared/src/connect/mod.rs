//! Connecting and reconnecting: the links that start the OAuth flow.

pub mod flow;
#[cfg(test)]
mod flow_tests;
pub mod links;

pub use links::{issue_link, resolve_link, LINK_LIFETIME};
