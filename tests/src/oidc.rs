//! oidc-provider (npm): a real OAuth 2.0 / OpenID Connect server for the generic provider tests.
