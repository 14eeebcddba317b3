//! The test harness: starts the real services the tests run against — moto server for the AWS APIs
//! (directly, or through a fault-injecting proxy: [`aws_faults`]),
//! `oidc-provider` for a real OAuth 2.0 server — installing them first into the ignored `.tools/`
//! folder when a machine does not have them yet, on loopback, on free ports. Each service stops when
//! its handle is dropped, or when the test process ends.

pub mod aws_faults;
pub mod backends;
pub mod browser;
pub mod clock;
pub mod logs;
pub mod moto;
pub mod oidc;
pub mod provider_http;
pub mod providers;
pub mod tools;
pub mod vaults;
pub mod world;

pub use provider_http::{provider_http, provider_http_settings};
