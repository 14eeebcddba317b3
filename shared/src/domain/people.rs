//! People: who gets notified, and who authorized (or must authorize) a connection.

use super::InvalidValue;
use serde::{Deserialize, Serialize};
use std::fmt;

/// An email address, checked for the shape mail systems accept: one `@`, a non-empty local part of
/// at most 64 characters, and a domain of dot-separated labels with a dot in it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let value = value.trim();
        let bad = |why: &str| {
            Err(InvalidValue::new(
                "email address",
                format!("{value:?} is not a usable email address: {why}"),
            ))
        };
        if value.len() > 254 {
            return bad("it is longer than 254 characters");
        }
        let Some((local, domain)) = value.split_once('@') else {
            return bad("it has no '@'");
        };
        if local.is_empty() || local.len() > 64 {
            return bad("the part before '@' must be 1 to 64 characters");
        }
        if local
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\@".contains(c))
        {
            return bad("the part before '@' contains a character mail systems refuse");
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return bad("the part before '@' has a misplaced '.'");
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return bad("the domain after '@' must be a name like example.com");
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

super::invalid::text_through_parse!(EmailAddress);

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The people told when a connection needs attention: at most 20 distinct addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Recipients(Vec<EmailAddress>);

impl Recipients {
    pub const MAX: usize = 20;

    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, InvalidValue> {
        if values.len() > Self::MAX {
            return Err(InvalidValue::new(
                "recipients",
                format!("at most {} notification recipients are allowed", Self::MAX),
            ));
        }
        let mut out: Vec<EmailAddress> = Vec::with_capacity(values.len());
        for value in values {
            let email = EmailAddress::parse(value.as_ref())?;
            if !out.contains(&email) {
                out.push(email);
            }
        }
        Ok(Self(out))
    }

    pub fn addresses(&self) -> &[EmailAddress] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<Vec<String>> for Recipients {
    type Error = InvalidValue;
    fn try_from(values: Vec<String>) -> Result<Self, InvalidValue> {
        Self::parse(&values)
    }
}

impl From<Recipients> for Vec<String> {
    fn from(r: Recipients) -> Vec<String> {
        r.0.into_iter().map(String::from).collect()
    }
}

/// Characters that change how the text around them is shown without being visible themselves: the
/// bidirectional embeddings, overrides and isolates, and the direction marks. In a name on a page or in
/// an email, U+202E makes "Acme\u{202E}fdp.exe" read as "Acmeexe.pdf".
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// A label as people will see it on pages and in emails: control characters become spaces,
/// bidirectional controls are dropped, and runs of whitespace fold into one space.
pub fn plain_label(text: &str) -> String {
    text.chars()
        .filter(|c| !is_bidi_control(*c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A user as the provider identifies them (Twinfield organisation user code, Exact user id, Acumatica
/// subject), with a name for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub subject: String,
    pub display_name: Option<String>,
}

impl Identity {
    pub fn new(subject: impl Into<String>) -> Result<Self, InvalidValue> {
        let subject = subject.into().trim().to_string();
        if subject.is_empty() {
            return Err(InvalidValue::new(
                "identity",
                "an identity needs the provider's user id or user code",
            ));
        }
        Ok(Self {
            subject,
            display_name: None,
        })
    }

    /// The person for a message: the name with the user id, or the id alone.
    pub fn describe(&self) -> String {
        match &self.display_name {
            Some(name) => format!("{name} ({})", self.subject),
            None => self.subject.clone(),
        }
    }

    /// Providers differ in case handling of user codes; compare without case.
    pub fn same_person(&self, other: &Identity) -> bool {
        self.subject.eq_ignore_ascii_case(&other.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_lose_control_and_bidirectional_characters() {
        assert_eq!(plain_label("Acme\u{202E}fdp.exe"), "Acmefdp.exe");
        assert_eq!(
            plain_label(" Acme\u{0007}\n\tBV \u{2066}x\u{2069} "),
            "Acme BV x"
        );
        assert_eq!(
            plain_label("Bakkerij De Vries – Zuid"),
            "Bakkerij De Vries – Zuid"
        );
        assert_eq!(plain_label("\u{200F}\u{061C}"), "");
    }

    #[test]
    fn email_addresses_are_checked_with_a_reason() {
        assert_eq!(
            EmailAddress::parse(" Finance@Example.COM ")
                .unwrap()
                .as_str(),
            "Finance@example.com"
        );
        for (bad, why) in [
            ("no-at-sign", "no '@'"),
            ("@example.com", "before '@'"),
            ("a@localhost", "domain"),
            ("a b@example.com", "refuse"),
            ("a@exa_mple.com", "domain"),
            ("a..b@example.com", "misplaced"),
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert!(err.message.contains(why), "{bad}: {err}");
            assert_eq!(err.kind, "email address");
        }
    }

    #[test]
    fn recipients_deduplicate_and_are_bounded() {
        let r =
            Recipients::parse(&["a@example.com", "A@EXAMPLE.com".to_lowercase().as_str()]).unwrap();
        assert_eq!(r.addresses().len(), 1);
        let many: Vec<String> = (0..21).map(|i| format!("u{i}@example.com")).collect();
        assert!(Recipients::parse(&many).is_err());
    }
}
