//! The integration API (`/v1`): what an integration holding an API key may do with its tenant's
//! connections — create them, change them, read their history, register pre-authenticated
//! credentials, disconnect them, and exchange them for a valid access token or a Twinfield SOAP
//! session.
//!
//! This module is transport-free: [`IntegrationApi`] takes parsed requests and returns typed answers
//! or an [`ApiError`] that knows its RFC 9457 problem (`type`, `title`, `status`, `detail`). The
//! `session-exchange` function only maps HTTP onto it.

mod app_rules;
mod apps;
pub(crate) mod caches;
mod connection_changes;
mod credentials;
mod problem;
mod service;
mod twinfield;
mod types;
mod webhooks;

pub use app_rules::{AppRefused, AppRules, ProviderFields};
pub use apps::{AppChanges, AppList, AppView, NewApp};
pub use caches::ApiSettings;
pub use connection_changes::ConnectionChanges;
pub use problem::{ApiError, Problem, ProblemKind, PROBLEM_BASE};
pub use service::{Caller, IntegrationApi, SessionOptions, MAX_REQUESTED_VALIDITY};
pub use twinfield::TwinfieldSessionRequest;
pub use types::{
    ConnectionPage, ConnectionView, CreateConnection, CreatedConnection, IdentityInput, LinkView,
    RegisterCredentials, SessionGrant, TwinfieldSessionGrant,
};
pub use webhooks::{
    CreatedWebhook, DeadLetterList, DeadLetterView, NewWebhook, WebhookList, WebhookView,
};
