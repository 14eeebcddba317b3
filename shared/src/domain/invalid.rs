//! The one error a domain type gives for a value it refuses.

/// A value a domain type refuses: which kind of value, and a message that quotes it (never a secret:
/// secrets are not parsed here) and says what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidValue {
    /// What was refused ("email address", "redirect URI", ...).
    pub kind: &'static str,
    pub message: String,
}

impl InvalidValue {
    pub fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<InvalidValue> for String {
    fn from(invalid: InvalidValue) -> String {
        invalid.message
    }
}
