//! The provider HTTP client the tests use. Every provider they talk to (the simulators, oidc-provider,
//! their own hostile servers) listens on loopback, which the broker refuses on AWS; the allowance is
//! made here, once, so no test reaches a provider by another policy without saying so.

use broker_core::providers::{AddressPolicy, HttpSettings, ProviderHttp};

/// The default settings, with loopback allowed (private and link-local addresses stay refused).
pub fn provider_http_settings() -> HttpSettings {
    HttpSettings {
        addresses: AddressPolicy::AllowLoopback,
        ..HttpSettings::default()
    }
}

/// A client with [`provider_http_settings`].
pub fn provider_http() -> ProviderHttp {
    ProviderHttp::new(provider_http_settings()).expect("the provider HTTP client builds")
}
