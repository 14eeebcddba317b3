//! The `Mailer` for local runs: a folder of `.eml` files.

use crate::notify::mailer::message_token;
use crate::notify::{Email, MailError, Mailer};
use async_trait::async_trait;
use chrono::Utc;
use std::path::{Path, PathBuf};

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
