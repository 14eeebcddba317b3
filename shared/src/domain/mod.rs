//! The domain: types that cannot hold an invalid value.

pub mod api_key;
pub mod authorization;
pub mod binding;
pub mod branding;
pub mod connection;
pub mod credentials;
pub mod failure;
pub mod history;
pub mod invalid;
pub mod locale;
pub mod people;
pub mod provider;
pub mod return_url;
pub mod status;
pub mod tenant;
pub mod transitions;
pub mod write_budget;

pub use api_key::{ApiKeyPrefix, ApiKeyRecord, ApiKeyScope, NewApiKey};
pub use authorization::{
    new_one_time_secret, AuthorizationPurpose, ConnectLink, Consumed, DivisionChoice, OneTimeKey,
    PendingAuthorization,
};
pub use binding::{bind_authorization, BindingRefusal};
pub use branding::{AccentColour, Branding, LogoUrl};
pub use connection::{
    Connection, CredentialsPointer, DailyTokenCalls, FailureHistory, FailureRecord, Lease,
    RefreshInFlight, ScheduleEntry, VaultSlot,
};
pub use credentials::{Credentials, LegacyTwinfieldCredentials, TokenSet};
pub use failure::ErrorClass;
pub use history::{ConnectionChange, FieldChange, SessionReads};
pub use invalid::InvalidValue;
pub use locale::{LocalTime, Locale, TimeZone};
pub use people::{is_bidi_control, plain_label, EmailAddress, Identity, Recipients};
pub use provider::{
    AcumaticaInstance, AcumaticaRefreshTokens, ExactCountry, ExactDivision, ProviderContext,
    ProviderKind, ProviderSettings, ServiceUrl,
};
pub use return_url::{ReturnOrigin, ReturnUrl};
pub use status::{
    Actor, ConnectionStatus, InvalidTransition, ReconnectKind, ReconnectReason, StatusEvent,
    StatusKind, StatusTransition,
};
pub use tenant::{OAuthApp, RedirectUri, Tenant};
pub use transitions::NewGrant;
pub use write_budget::{VaultWriteBudget, WriteBudgetPolicy};
