//! Why a connect attempt stopped, in words for people, and what they can do next.

use crate::credential_keeper::KeeperError;
use crate::domain::{BindingRefusal, ProviderKind};
use crate::ports::{StoreError, VaultError};
use crate::providers::{ErrorClass, ProviderError};
use url::Url;

use super::STATE_LIFETIME;

/// Why a connect attempt stopped. `Display` is one sentence for people; none of it ever carries a
/// secret (provider errors are redacted at the source, query values are bounded text).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the request is malformed: {0}")]
    MalformedRequest(String),
    #[error("this link is not valid (it may have been mistyped or replaced by a newer one)")]
    LinkUnknown,
    #[error("this link has expired")]
    LinkExpired,
    /// The link worked once: the connection was authorized after it was issued. It starts nothing
    /// again; the page says how the connection stands.
    #[error("this link was already used: the {} connection{} is {status}", .provider.display_name(), describe_name(.name))]
    LinkSpent {
        provider: ProviderKind,
        name: Option<String>,
        status: String,
    },
    /// A newer link was issued for the same connection (a reconnect link, a reminder email).
    #[error("a newer link replaced this one: the {} connection{} is {status}", .provider.display_name(), describe_name(.name))]
    LinkReplaced {
        provider: ProviderKind,
        name: Option<String>,
        status: String,
    },
    #[error("this sign-in attempt is unknown or was already used")]
    StateUnknown,
    #[error("this sign-in attempt took longer than {} minutes and expired", STATE_LIFETIME.num_minutes())]
    StateExpired,
    #[error("this sign-in attempt was started in another browser")]
    WrongBrowser,
    #[error("access was not granted at {}{}", .provider.display_name(), describe_words(.description))]
    Denied {
        provider: ProviderKind,
        description: Option<String>,
    },
    #[error("{} refused the authorization ({error}){}", .provider.display_name(), describe_words(.description))]
    ProviderRefused {
        provider: ProviderKind,
        error: String,
        description: Option<String>,
    },
    #[error("{0}")]
    Provider(#[from] ProviderError),
    /// An id_token was asked for (scope `openid`) but none came back to check the nonce against.
    #[error("{} sent no id_token, so the sign-in could not be verified", .provider.display_name())]
    NonceUnverified { provider: ProviderKind },
    #[error("{provider} was authorized by {actual}, but this connection must be authorized by {required}", provider = .provider.display_name())]
    IdentityMismatch {
        provider: ProviderKind,
        required: String,
        actual: String,
    },
    #[error("{provider} authorized {actual}, but this connection belongs to {expected}", provider = .provider.display_name())]
    OrganisationMismatch {
        provider: ProviderKind,
        expected: String,
        actual: String,
    },
    #[error("{provider} was authorized by {actual}, but this connection was authorized by {expected}", provider = .provider.display_name())]
    OtherUser {
        provider: ProviderKind,
        expected: String,
        actual: String,
    },
    #[error("this authorization does not give access to Exact Online division {division}, which this connection works in (it gives access to {})", list(.granted))]
    DivisionNotGranted { division: i64, granted: Vec<i64> },
    #[error("Exact Online did not say which divisions this authorization gives access to (division {current_division}, open in Exact Online, is not one of them)")]
    DivisionsUnknown { current_division: i64 },
    #[error("this choice of division is unknown or was already made")]
    DivisionChoiceUnknown,
    #[error("the time to choose a division has passed; the connection works in Exact Online division {bound}")]
    DivisionChoiceClosed { bound: i64 },
    #[error("this connection was disconnected and can no longer be connected")]
    ConnectionGone,
    #[error("the connection changed while it was being authorized")]
    Conflict,
    #[error("the app registration is incomplete: {0}")]
    Misconfigured(String),
    #[error("the broker's storage is unavailable: {0}")]
    Unavailable(String),
}

fn list(codes: &[i64]) -> String {
    let codes: Vec<String> = codes.iter().map(i64::to_string).collect();
    match codes.len() {
        0 => "no division".into(),
        1 => format!("division {}", codes[0]),
        _ => format!("divisions {}", codes.join(", ")),
    }
}

fn describe_name(name: &Option<String>) -> String {
    match name {
        Some(n) if !n.is_empty() => format!(" \u{201c}{n}\u{201d}"),
        _ => String::new(),
    }
}

fn describe_words(description: &Option<String>) -> String {
    match description {
        Some(d) if !d.is_empty() => format!(": {d}"),
        _ => String::new(),
    }
}

impl ConnectError {
    /// The refusal of an authorization that cannot become the connection's.
    pub fn refused_binding(provider: ProviderKind, why: BindingRefusal) -> Self {
        match why {
            BindingRefusal::OtherOrganisation { expected, actual } => Self::OrganisationMismatch {
                provider,
                expected,
                actual,
            },
            BindingRefusal::OtherUser { expected, actual } => Self::OtherUser {
                provider,
                expected,
                actual,
            },
            BindingRefusal::DivisionNotGranted { division, granted } => {
                Self::DivisionNotGranted { division, granted }
            }
            BindingRefusal::GrantsUnknown { current_division } => {
                Self::DivisionsUnknown { current_division }
            }
        }
    }

    /// What the person can do about it.
    pub fn what_to_do(&self) -> String {
        match self {
            Self::MalformedRequest(_) | Self::StateUnknown | Self::WrongBrowser => {
                "Open the connect link you were given again, in the browser you will finish in.".into()
            }
            Self::LinkSpent { status, .. } | Self::LinkReplaced { status, .. }
                if status == "connected" =>
            {
                "Nothing to do: it is connected. If something still does not work, ask the integration for a new link.".into()
            }
            Self::LinkSpent { .. } => {
                "Use the most recent link you received (the newest email), or ask the integration for a new one.".into()
            }
            Self::LinkReplaced { .. } => {
                "Use the most recent link you received: the newest email, or the link the integration shows now.".into()
            }
            Self::LinkUnknown | Self::LinkExpired => {
                "Ask for a new connect link: the integration can issue one, and reminders carry one.".into()
            }
            Self::StateExpired => "Start again from the connect link.".into(),
            Self::Denied { provider, .. } => format!(
                "Nothing was changed. To connect, start again and choose to allow access at {}.",
                provider.display_name()
            ),
            Self::Provider(e) if e.class == ErrorClass::ClientMisconfigured => {
                "Nothing was changed. Contact the integration's support: the app registration needs fixing.".into()
            }
            Self::ProviderRefused { .. } | Self::Provider(_) | Self::NonceUnverified { .. } => {
                "Nothing was changed. Try again in a few minutes; if it keeps failing, contact the integration's support.".into()
            }
            Self::IdentityMismatch { provider, required, .. } => format!(
                "Nothing was changed. Sign out of {}, then start again and sign in as the designated integration user, {required}.",
                provider.display_name()
            ),
            Self::OrganisationMismatch { provider, expected, .. } => format!(
                "Nothing was changed. Start again and choose {expected} at {}. To move the integration to another organisation, create a new connection.",
                provider.display_name()
            ),
            Self::OtherUser { provider, expected, .. } => format!(
                "Nothing was changed. Sign out of {}, then start again and sign in as {expected}. To connect with another user's access, create a new connection.",
                provider.display_name()
            ),
            Self::DivisionNotGranted { division, .. } => format!(
                "Nothing was changed. Start again and, on Exact Online's consent page, include division {division} among the divisions you give access to (or add it in Exact Online under App privileges, Manage divisions). To work in other divisions instead, create a new connection."
            ),
            Self::DivisionsUnknown { .. } => "Nothing was changed. In Exact Online, open one of the divisions you give this app access to, then start again from the connect link.".into(),
            Self::DivisionChoiceUnknown => "Nothing was changed by this request. The connection works in the division chosen first (the integration can see it); to work in another, ask the integration for a new connection that names it.".into(),
            Self::DivisionChoiceClosed { .. } => "Nothing was changed. To work in another division, ask the integration for a new connection that names it.".into(),
            Self::ConnectionGone => "Create a new connection in the integration.".into(),
            Self::Conflict | Self::Unavailable(_) => "Nothing was changed. Try again in a minute.".into(),
            Self::Misconfigured(_) => "Contact the integration's support: the app registration needs fixing.".into(),
        }
    }

    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::MalformedRequest(_) => "malformed_request",
            Self::LinkUnknown => "link_unknown",
            Self::LinkExpired => "link_expired",
            Self::LinkSpent { .. } => "link_spent",
            Self::LinkReplaced { .. } => "link_replaced",
            Self::StateUnknown => "state_unknown",
            Self::StateExpired => "state_expired",
            Self::WrongBrowser => "wrong_browser",
            Self::Denied { .. } => "denied",
            Self::ProviderRefused { .. } => "provider_refused",
            Self::Provider(_) => "provider_error",
            Self::NonceUnverified { .. } => "nonce_unverified",
            Self::IdentityMismatch { .. } => "identity_mismatch",
            Self::OrganisationMismatch { .. } => "organisation_mismatch",
            Self::OtherUser { .. } => "other_user",
            Self::DivisionNotGranted { .. } => "division_not_granted",
            Self::DivisionsUnknown { .. } => "divisions_unknown",
            Self::DivisionChoiceUnknown => "division_choice_unknown",
            Self::DivisionChoiceClosed { .. } => "division_choice_closed",
            Self::ConnectionGone => "connection_gone",
            Self::Conflict => "conflict",
            Self::Misconfigured(_) => "misconfigured",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl From<StoreError> for ConnectError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => Self::Conflict,
            other => Self::Unavailable(other.to_string()),
        }
    }
}

impl From<VaultError> for ConnectError {
    fn from(e: VaultError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<KeeperError> for ConnectError {
    fn from(e: KeeperError) -> Self {
        match e {
            KeeperError::Store(s) => s.into(),
            KeeperError::Vault(v) => v.into(),
        }
    }
}

/// A failed attempt: why, and the link to start again from when one makes sense.
#[derive(Debug)]
pub struct ConnectFailure {
    pub error: ConnectError,
    pub provider: Option<ProviderKind>,
    /// The connect link, when it is still valid and trying again can help.
    pub try_again: Option<Url>,
    /// Whether the attempt's state was consumed: only then are the browser's cookies for it spent.
    /// (A request with a forged or malformed state must not end the browser's real attempt.)
    pub state_consumed: bool,
    /// The connection's readers, once the attempt is known to be for one: the page's language and
    /// time zone, and the way back to the integration.
    pub audience: Option<super::Audience>,
}

impl<E: Into<ConnectError>> From<E> for ConnectFailure {
    fn from(error: E) -> Self {
        Self {
            error: error.into(),
            provider: None,
            try_again: None,
            state_consumed: false,
            audience: None,
        }
    }
}
