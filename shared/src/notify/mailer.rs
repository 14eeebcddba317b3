//! The `Mailer` port. Its adapters: SES v2 (`adapters::ses`) and a local outbox folder
//! (`adapters::outbox`).

use super::email::Email;
use async_trait::async_trait;

/// Why a message was not (known to be) sent. The split is what keeps a notice at most once: only a
/// message that certainly did not leave may be tried again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// Certainly not sent (the service answered with an error, or the request never left).
    #[error("the message was not sent: {0}")]
    NotSent(String),
    /// The request may have been accepted (a timeout, a lost answer): never to be sent again.
    #[error("the message may or may not have been sent: {0}")]
    Uncertain(String),
}

#[async_trait]
pub trait Mailer: Send + Sync {
    async fn send(&self, email: &Email) -> Result<(), MailError>;
}

/// A random token for Message-IDs and MIME boundaries.
pub fn message_token() -> String {
    crate::random::bytes::<16>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
