//! One email: who, subject, plain text and HTML, built as an RFC 5322 message with a
//! multipart/alternative body. The same bytes go to SES (raw content) and to the local outbox.

use crate::domain::EmailAddress;
use chrono::{DateTime, Utc};
use lettre::message::header::{ContentTransferEncoding, ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::Message;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub from: EmailAddress,
    pub reply_to: Option<EmailAddress>,
    pub to: Vec<EmailAddress>,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// What the email is, in a few lowercase words joined by '-' ("reconnect-required-acumatica"):
    /// the outbox names its files by it. Never an id or anything secret.
    pub topic: String,
}

/// A message the MIME builder refused: an address it does not accept as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the email could not be built: {0}")]
pub struct UnbuildableEmail(String);

impl Email {
    /// The message as RFC 5322 bytes (CRLF line ends). `unique` makes the Message-ID; it must be
    /// random, never an internal id.
    ///
    /// Both parts are quoted-printable: the text part stays readable as it travels (a reader or a
    /// filter looking at the raw message sees words, not base64), and lines stay under the 998-byte
    /// limit whatever the wording.
    pub fn to_mime(&self, date: DateTime<Utc>, unique: &str) -> Result<Vec<u8>, UnbuildableEmail> {
        let domain = self.from.as_str().rsplit('@').next().unwrap_or("localhost");
        let mut message = Message::builder()
            .from(mailbox(&self.from)?)
            .subject(one_line(&self.subject))
            .date(date.into())
            .message_id(Some(format!("<{unique}@{domain}>")))
            // Notifications must not trigger vacation replies (RFC 3834).
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ));
        for to in &self.to {
            message = message.to(mailbox(to)?);
        }
        if let Some(reply_to) = &self.reply_to {
            message = message.reply_to(mailbox(reply_to)?);
        }
        let part = |content_type: ContentType, body: &str| {
            SinglePart::builder()
                .header(content_type)
                .header(ContentTransferEncoding::QuotedPrintable)
                .body(body.to_owned())
        };
        let message = message
            .multipart(
                MultiPart::alternative()
                    .singlepart(part(ContentType::TEXT_PLAIN, &self.text))
                    .singlepart(part(ContentType::TEXT_HTML, &self.html)),
            )
            .map_err(|e| UnbuildableEmail(e.to_string()))?;
        Ok(message.formatted())
    }
}

fn mailbox(address: &EmailAddress) -> Result<Mailbox, UnbuildableEmail> {
    address
        .as_str()
        .parse()
        .map_err(|e| UnbuildableEmail(format!("{}: {e}", address.as_str())))
}

/// A header value on one line: a line break in a subject would start a header of its own.
fn one_line(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{MessageParser, MimeHeaders};

    fn email(subject: &str, text: &str, html: &str) -> Email {
        Email {
            from: EmailAddress::parse("broker@example.com").unwrap(),
            reply_to: Some(EmailAddress::parse("help@example.com").unwrap()),
            to: vec![
                EmailAddress::parse("a@example.com").unwrap(),
                EmailAddress::parse("b@example.com").unwrap(),
            ],
            subject: subject.into(),
            text: text.into(),
            html: html.into(),
            topic: "reconnect-required-exact-online".into(),
        }
    }

    #[test]
    fn a_message_has_the_headers_and_both_parts_readable_as_they_travel() {
        let text =
            "Sinds 1 juli 2026 om 15:05 CEST kan Bakkerij Ål de koppeling niet meer bereiken. "
                .repeat(20);
        let email = email(
            "Koppel Exact Online opnieuw — déjà\r\nBcc: x@evil.example",
            &text,
            "<p>Hallo</p>",
        );
        let raw = email.to_mime(Utc::now(), "abc123").unwrap();
        let raw_text = String::from_utf8(raw.clone()).unwrap();
        assert!(!raw_text.contains("\r\nBcc:"), "{raw_text}");
        assert!(raw_text.lines().all(|l| l.len() <= 998));
        assert!(raw_text.contains("Auto-Submitted: auto-generated\r\n"));
        // Words stay words in the raw message: quoted-printable, not base64.
        assert!(raw_text.contains("Bakkerij"), "{raw_text}");

        let parsed = MessageParser::default().parse(&raw).unwrap();
        let subject = parsed.subject().unwrap();
        assert!(
            subject.starts_with("Koppel Exact Online opnieuw — déjà"),
            "{subject}"
        );
        assert!(subject.ends_with("Bcc: x@evil.example"), "{subject}");
        let to: Vec<_> = parsed
            .to()
            .unwrap()
            .iter()
            .filter_map(|a| a.address())
            .collect();
        assert_eq!(to, ["a@example.com", "b@example.com"]);
        assert_eq!(
            parsed.reply_to().unwrap().first().unwrap().address(),
            Some("help@example.com")
        );
        assert_eq!(parsed.message_id(), Some("abc123@example.com"));
        assert_eq!(parsed.body_text(0).unwrap(), text);
        assert_eq!(parsed.body_html(0).unwrap(), "<p>Hallo</p>");
        for part in &parsed.parts[1..] {
            let encoding = part
                .content_transfer_encoding()
                .unwrap()
                .to_ascii_lowercase();
            assert_eq!(encoding, "quoted-printable");
        }
    }
}
