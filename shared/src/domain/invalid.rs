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

/// Conversions to and from `String` through the type's `parse`, for serde (`try_from`/`into`): a
/// value read from storage or a request is checked as one typed in is.
macro_rules! text_through_parse {
    ($name:ident) => {
        impl TryFrom<String> for $name {
            type Error = $crate::domain::InvalidValue;
            fn try_from(value: String) -> Result<Self, $crate::domain::InvalidValue> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0.into()
            }
        }
    };
}
pub(crate) use text_through_parse;
