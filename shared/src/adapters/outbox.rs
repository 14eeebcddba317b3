//! The `Mailer` for local runs: a folder of `.eml` files.

use crate::notify::mailer::message_token;
use crate::notify::{Email, MailError, Mailer};
use async_trait::async_trait;
use chrono::Utc;
use std::path::{Path, PathBuf};

/// Local mode: each message becomes one `.eml` file in a folder (owner-only), written to a temporary
/// name and renamed, so a reader never sees half a message. The file name says when and what:
/// `20261102T060000.000000Z-reconnect-required-acumatica-<random>.eml`, so the folder sorts by time
/// and a person finds the email they are looking for without opening each one.
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
        let raw = email
            .to_mime(now, &token)
            .map_err(|e| MailError::NotSent(e.to_string()))?;
        let dir = self.dir.clone();
        let name = file_name(now, &email.topic, &token);
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
            std::io::Write::write_all(&mut options.open(&partial)?, &raw)?;
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

/// The file name of one email: its time, its topic (reduced to lowercase letters, digits and '-', so
/// no topic can leave the folder) and part of its random token, which keeps two emails of the same
/// topic in the same microsecond apart.
fn file_name(at: chrono::DateTime<Utc>, topic: &str, token: &str) -> String {
    let mut slug = String::new();
    for c in topic.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "email" } else { slug };
    let token: String = token.chars().take(12).collect();
    format!("{}-{slug}-{token}.eml", at.format("%Y%m%dT%H%M%S%.6fZ"))
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
            topic: "reconnect-required-exact-online".into(),
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
        let name = files[0].file_name().into_string().unwrap();
        assert!(
            name.ends_with(".eml") && name.contains("Z-reconnect-required-exact-online-"),
            "{name}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_name_says_when_and_what_and_stays_in_the_folder() {
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 2, 6, 0, 0).unwrap();
        assert_eq!(
            file_name(
                at,
                "Warning absolute_expiry / Acumatica",
                "0123456789abcdef"
            ),
            "20261102T060000.000000Z-warning-absolute-expiry-acumatica-0123456789ab.eml"
        );
        assert_eq!(
            file_name(at, "../../etc/passwd", "ab"),
            "20261102T060000.000000Z-etc-passwd-ab.eml"
        );
        assert_eq!(
            file_name(at, "", "ab"),
            "20261102T060000.000000Z-email-ab.eml"
        );
    }
}
