//! The `Mailer` on SES v2: raw MIME, so SES and the local outbox carry the same message.

use crate::notify::mailer::message_token;
use crate::notify::{Email, MailError, Mailer};
use async_trait::async_trait;
use aws_sdk_sesv2::error::{DisplayErrorContext, SdkError};
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent, RawMessage};
use chrono::Utc;

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
        let raw = email
            .to_mime(Utc::now(), &message_token())
            .map_err(|e| MailError::NotSent(e.to_string()))?;
        let destination = Destination::builder()
            .set_to_addresses(Some(email.to.iter().map(|a| a.to_string()).collect()))
            .build();
        let raw = RawMessage::builder()
            .data(Blob::new(raw))
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
