//! Configuration and the runtime knobs.
//!
//! Knobs cover the provider behaviours PROVIDERS.md marks as uncertain or undocumented, so a test can
//! pick the variant it wants to exercise instead of the simulator pretending to know the truth.
//! Durations are plain seconds (milliseconds for latencies) so the same struct is the JSON body of
//! `GET/PUT /_sim/knobs`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::SocketAddr;

/// How the simulator starts.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Where to listen; loopback on an ephemeral port by default.
    pub bind: SocketAddr,
    /// Initial simulated time; `None` starts at the real now.
    pub start_time: Option<DateTime<Utc>>,
    /// Create the demo organisation, users and instance (see `accounts::seed_defaults`).
    pub seed_demo_accounts: bool,
    pub knobs: Knobs,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            start_time: None,
            seed_demo_accounts: true,
            knobs: Knobs::default(),
        }
    }
}

/// Behaviour switches, changeable at runtime (`SimulatorHandle::update_knobs`, `PUT /_sim/knobs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Knobs {
    /// Skip the consent page and redirect with a code for the default user.
    pub auto_consent: bool,
    /// Lifetime of a Twinfield / Acumatica authorization code.
    pub code_lifetime_secs: i64,

    pub twinfield_default_user: String,
    pub twinfield_access_token_lifetime_secs: i64,
    /// Documented as 25 years.
    pub twinfield_refresh_token_lifetime_secs: i64,
    /// Rotation is undocumented; real clients keep reusing the token, so the default is off.
    pub twinfield_rotate_refresh_tokens: bool,
    /// Idle time after which a session.asmx session is gone (any call on it, KeepAlive included, resets
    /// it). Not published by Twinfield: 20 minutes is ASP.NET's default session timeout, an assumption.
    pub twinfield_session_idle_timeout_secs: i64,
    /// How `AccessTokenLogon` refuses an unknown or expired access token; unpublished, so both.
    pub twinfield_invalid_token_logon: InvalidTokenLogon,
    /// Inner XML of the `detail` of the "token invalid" fault. Its layout is unpublished; only the
    /// code, 354, is known (Invantive's forum quotes "Access denied. Token invalid (code 354)").
    pub twinfield_token_fault_detail: String,
    /// The language of fault texts: Twinfield answers in the user's language (php-twinfield quotes
    /// "Toegang geweigerd. ..."). The Dutch sentences here are assumed translations.
    pub twinfield_fault_language: FaultLanguage,
    /// Reported instead of the organisation's real cluster URL (`twf.clusterUrl`, `<cluster>`): lets a
    /// test play a hostile or broken answer.
    pub twinfield_cluster_url_override: Option<String>,

    pub exact_default_user: String,
    pub exact_code_lifetime_secs: i64,
    pub exact_access_token_lifetime_secs: i64,
    pub exact_refresh_token_lifetime_secs: i64,
    /// A refresh earlier than this after the previous issue is refused.
    pub exact_min_refresh_interval_secs: i64,
    /// The refusal for an early refresh; the real status and text are undocumented (assumed; tested as
    /// 400 `invalid_request` and as a bare 401 without an `error` field).
    pub exact_early_refresh_status: u16,
    pub exact_early_refresh_body: Value,
    pub exact_daily_token_cap: u32,
    /// More than this many 4xx answers per app/user in an hour blocks the app for the user.
    pub exact_error_block_threshold: u32,
    pub exact_error_block_secs: i64,
    /// A refresh refused by the daily cap still rotates and carries the new pair (PROVIDERS.md).
    pub exact_rate_limited_refresh_issues_tokens: bool,
    pub exact_api_minutely_limit: u32,
    pub exact_api_daily_limit: u32,
    /// `system/Divisions` refuses (403) a URL naming a division outside the grant's scope (assumed
    /// either way, see `exact_api`; tested both ways). Off: the URL's division is not checked.
    pub exact_divisions_checks_url_division: bool,
    /// Rows per page of `system/Divisions` (Exact's REST pages hold 60).
    pub exact_page_size: usize,

    pub acumatica_default_user: String,
    pub acumatica_access_token_lifetime_secs: i64,
    /// `expires_in` as a JSON string instead of a number.
    pub acumatica_expires_in_as_string: bool,
    /// Serve the discovery document (assumed; undocumented by Acumatica). Off: 404.
    pub acumatica_discovery_document: bool,
    /// The document lists `code_challenge_methods_supported: ["S256"]` (assumed; undocumented).
    pub acumatica_advertises_pkce: bool,

    /// Added before every provider route (the broker's benchmark uses 100 ms).
    pub global_latency_ms: u64,
    /// How long a `hang` fault holds the request before dropping the connection.
    pub hang_secs: u64,
    /// Seed of the RNG behind probabilistic faults, so runs repeat.
    pub fault_seed: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            auto_consent: false,
            code_lifetime_secs: 300,
            twinfield_default_user: "DEMO".into(),
            twinfield_access_token_lifetime_secs: 3600,
            twinfield_refresh_token_lifetime_secs: 25 * 365 * 86_400,
            twinfield_rotate_refresh_tokens: false,
            twinfield_session_idle_timeout_secs: 20 * 60,
            twinfield_invalid_token_logon: InvalidTokenLogon::Result,
            twinfield_token_fault_detail: "<code>354</code>".into(),
            twinfield_fault_language: FaultLanguage::En,
            twinfield_cluster_url_override: None,
            exact_default_user: "demo.user".into(),
            exact_code_lifetime_secs: 180,
            exact_access_token_lifetime_secs: 600,
            exact_refresh_token_lifetime_secs: 30 * 86_400,
            exact_min_refresh_interval_secs: 570,
            exact_early_refresh_status: 400,
            exact_early_refresh_body: json!({
                "error": "invalid_request",
                "error_description": "Access token is not yet expired."
            }),
            exact_daily_token_cap: 200,
            exact_error_block_threshold: 10,
            exact_error_block_secs: 3600,
            exact_rate_limited_refresh_issues_tokens: false,
            exact_api_minutely_limit: 60,
            exact_api_daily_limit: 5000,
            exact_divisions_checks_url_division: true,
            exact_page_size: 60,
            acumatica_default_user: "admin".into(),
            acumatica_access_token_lifetime_secs: 3600,
            acumatica_expires_in_as_string: false,
            acumatica_discovery_document: true,
            acumatica_advertises_pkce: true,
            global_latency_ms: 0,
            hang_secs: 300,
            fault_seed: 42,
        }
    }
}

/// How `AccessTokenLogon` answers an access token it does not accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum InvalidTokenLogon {
    /// `AccessTokenLogonResult` `TokenInvalid` (the value the WSDL lists).
    #[default]
    Result,
    /// The SOAP fault other calls give: `soap:Client`, "Access denied. Token invalid.", code 354.
    Fault,
}

/// The language Twinfield's fault texts come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FaultLanguage {
    #[default]
    En,
    Nl,
}
