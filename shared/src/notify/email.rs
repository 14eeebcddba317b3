//! One email: who, subject, plain text and HTML, rendered as an RFC 5322 message with a
//! multipart/alternative body. The same bytes go to SES (raw content) and to the local outbox.

use crate::domain::EmailAddress;
use base64::Engine;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub from: EmailAddress,
    pub reply_to: Option<EmailAddress>,
    pub to: Vec<EmailAddress>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

impl Email {
    /// The message as RFC 5322 text (CRLF line ends). `unique` makes the Message-ID and the MIME
    /// boundary; it must be random, never an internal id.
    pub fn to_rfc5322(&self, date: DateTime<Utc>, unique: &str) -> String {
        let boundary = format!("=_alt_{unique}");
        let domain = self.from.as_str().rsplit('@').next().unwrap_or("localhost");
        let to: Vec<&str> = self.to.iter().map(EmailAddress::as_str).collect();
        let mut out = String::new();
        let mut header = |name: &str, value: &str| {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        };
        header("From", self.from.as_str());
        header("To", &to.join(", "));
        if let Some(reply_to) = &self.reply_to {
            header("Reply-To", reply_to.as_str());
        }
        header("Subject", &encode_header(&self.subject));
        header("Date", &date.to_rfc2822());
        header("Message-ID", &format!("<{unique}@{domain}>"));
        header("MIME-Version", "1.0");
        header(
            "Content-Type",
            &format!("multipart/alternative; boundary=\"{boundary}\""),
        );
        // Notifications must not trigger vacation replies (RFC 3834).
        header("Auto-Submitted", "auto-generated");
        out.push_str("\r\n");
        for (mime, body) in [("text/plain", &self.text), ("text/html", &self.html)] {
            out.push_str(&format!("--{boundary}\r\n"));
            out.push_str(&format!("Content-Type: {mime}; charset=utf-8\r\n"));
            out.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
            let encoded = base64::engine::general_purpose::STANDARD.encode(body.as_bytes());
            for line in encoded.as_bytes().chunks(76) {
                out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
                out.push_str("\r\n");
            }
        }
        out.push_str(&format!("--{boundary}--\r\n"));
        out
    }
}

/// A header value: as is when it is printable ASCII, else an RFC 2047 encoded word. Line breaks are
/// never kept (no header injection).
fn encode_header(value: &str) -> String {
    let flat: String = value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.is_ascii() {
        flat
    } else {
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(flat.as_bytes())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_the_headers_and_both_parts() {
        let email = Email {
            from: EmailAddress::parse("broker@example.com").unwrap(),
            reply_to: Some(EmailAddress::parse("help@example.com").unwrap()),
            to: vec![
                EmailAddress::parse("a@example.com").unwrap(),
                EmailAddress::parse("b@example.com").unwrap(),
            ],
            subject: "Reconnect Exact Online — déjà\r\nBcc: x@evil.example".into(),
            text: "hello".into(),
            html: "<p>hello</p>".into(),
        };
        let raw = email.to_rfc5322(Utc::now(), "abc123");
        assert!(raw.contains("To: a@example.com, b@example.com\r\n"));
        assert!(raw.contains("Reply-To: help@example.com\r\n"));
        assert!(raw.contains("Subject: =?UTF-8?B?"));
        assert!(!raw.contains("\r\nBcc:"));
        assert!(raw.contains("boundary=\"=_alt_abc123\""));
        assert_eq!(raw.matches("--=_alt_abc123\r\n").count(), 2);
        assert!(raw.ends_with("--=_alt_abc123--\r\n"));
        assert!(raw.lines().all(|l| l.len() <= 998));
    }
}
