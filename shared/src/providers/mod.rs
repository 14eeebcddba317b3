//! Provider knowledge: the catalogue, the OAuth clients, discovery and the Twinfield session client.
//!
//! - [`catalogue`]: what each provider is, as data (`catalogue.json`, overridable at runtime), and the
//!   base-URL overrides that point the broker at the simulators or a sandbox.
//! - [`oauth`]: the one OAuth 2.0 client every provider shares (authorization URL, code exchange,
//!   refresh), with every failure classified into [`ErrorClass`].
//! - [`discovery`]: after authorization, where the data lives ([`crate::domain::ProviderContext`]) and who
//!   authorized ([`crate::domain::Identity`]).
//! - [`twinfield_session`]: Twinfield's SOAP session service, read with the bounded [`xml`] reader.
//! - [`token_response`]: the tolerant, pure token-answer reader.
//! - [`refresh_grant`]: the refresh engine's [`crate::refresh::TokenGrant`] port, implemented by [`Providers`].

pub mod address_policy;
pub mod catalogue;
mod clients;
pub mod discovery;
pub mod error;
pub mod http;
pub mod id_token;
mod metadata;
pub mod oauth;
pub mod refresh_grant;
pub mod revocation;
mod token_endpoint;
pub mod token_response;
pub mod twinfield_session;
pub mod xml;

pub use address_policy::{AddressPolicy, AddressRefused, HostCheck};
pub use catalogue::{
    Catalogue, CatalogueError, ClientAuth, DiscoveryStep, EndpointOverrides, ProviderDefinition,
    RefreshExpiry, RefreshPolicy, RefreshRotation, ResolvedProvider,
};
pub use clients::Providers;
pub use discovery::Discovered;
pub use error::{ErrorClass, ErrorRule, Operation, ProviderError, RecoveredTokens};
pub use http::{HttpSettings, ProviderHttp};
pub use id_token::IdTokenClaims;
pub use oauth::{
    AppRegistration, AuthorizationRequest, Authorized, EffectiveEndpoints, OAuthClient, Refreshed,
};
pub use twinfield_session::{
    LegacyConsumer, Logon, LogonResult, LogonVerdict, NextAction, PoolKey, PoolSettings,
    PooledSession, SelectCompanyResult, SessionError, SessionPool, SoapFault, TwinfieldSession,
    TwinfieldSessionClient,
};
