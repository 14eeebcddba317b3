//! The `Mailer` port and its two adapters: SES v2 (raw content) and a local outbox folder.

use super::email::Email;
use async_trait::async_trait;
use aws_sdk_sesv2::error::{DisplayErrorContext, SdkError};
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use chrono::Utc;
use std::path::{Path, PathBuf};

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

/// Sends through SES v2 as raw MIME, so SES and the outbox carry the same message.
///
/// Build the client WITHOUT retries ([`SesMailer::client`]): a retried SendEmail whose first attempt
/// was accepted would send the email twice. A failure is told to the notifier instead, which retries
/// only what certainly did not leave.
#[derive(Debug, Clone)]
pub struct SesMailer {
    client: aws_sdk_sesv2::Client,
}

impl SesMailer {
    pub fn new(client: aws_sdk_sesv2::Client) -> Self {
        Self { client }
    }

    /// An SES v2 client from the shared SDK configuration, with the SDK's retries turned off.
    pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_sesv2::Client {
        let config = aws_sdk_sesv2::config::Builder::from(sdk)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .interceptor(crate::adapters::aws_throttles::ThrottleCounter)
            .build();
        aws_sdk_sesv2::Client::from_conf(config)
    }
}

#[async_trait]
impl Mailer for SesMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let raw = email.to_rfc5322(Utc::now(), &message_token());
        let destination = Destination::builder()
            .set_to_addresses(Some(email.to.iter().map(|a| a.to_string()).collect()))
            .build();
        let raw = RawMessage::builder()
            .data(Blob::new(raw.into_bytes()))
            .build()
            .map_err(|e| MailError::NotSent(format!("the SES request could not be built: {e}")))?;
        let sent = self
            .client
            .send_email()
            .from_email_address(email.from.as_str())
            .destination(destination)
            .content(EmailContent::builder().raw(raw).build())
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            // SES answered with an error, or the request never left: nothing was sent.
            Err(SdkError::ServiceError(e)) => {
                Err(MailError::NotSent(format!("SES SendEmail: {}", e.err())))
            }
            Err(e @ (SdkError::ConstructionFailure(_) | SdkError::DispatchFailure(_))) => Err(
                MailError::NotSent(format!("SES SendEmail: {}", DisplayErrorContext(&e))),
            ),
            Err(e) => Err(MailError::Uncertain(format!(
                "SES SendEmail: {}",
                DisplayErrorContext(&e)
            ))),
        }
    }
}

/// Local mode: each message becomes one `.eml` file in a folder (owner-only), written to a temporary
/// name and renamed, so a reader never sees half a message.
#[derive(Debug, Clone)]
pub struct OutboxMailer {
    dir: PathBuf,
}

impl OutboxMailer {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, email: &Email) -> Result<(), MailError> {
        let now = Utc::now();
        let token = message_token();
        let raw = email.to_rfc5322(now, &token);
        let dir = self.dir.clone();
        let name = format!("{}-{token}.eml", now.format("%Y%m%dT%H%M%S%.6fZ"));
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(&dir)?;
            let partial = dir.join(format!(".{name}.partial"));
            // Owner-only, like the folder: an email carries a reconnect link, which authorizes.
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            std::io::Write::write_all(&mut options.open(&partial)?, raw.as_bytes())?;
            std::fs::rename(&partial, dir.join(&name))
        })
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(MailError::NotSent(format!(
                "writing to the outbox folder {}: {e}",
                self.dir.display()
            ))),
            Err(e) => Err(MailError::Uncertain(format!(
                "the outbox write was cancelled: {e}"
            ))),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::domain::EmailAddress;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn outbox_emails_are_readable_by_their_owner_only() {
        let dir = std::env::temp_dir().join(format!("outbox-mode-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let address = EmailAddress::parse("finance@example.com").unwrap();
        let email = Email {
            from: address.clone(),
            reply_to: None,
            to: vec![address],
            subject: "Reconnect".into(),
            text: "a reconnect link".into(),
            html: "<p>a reconnect link</p>".into(),
        };
        OutboxMailer::new(&dir).send(&email).await.unwrap();
        let folder = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(folder, 0o700);
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        assert_eq!(files.len(), 1);
        let mode = files[0].metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?}", files[0].path());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
