//! Protocol-faithful simulators of Twinfield, Exact Online and Acumatica, served by one axum server
//! on loopback, for the broker's tests and its local sandbox. Facts come from `shared/PROVIDERS.md`;
//! where it says a behaviour is uncertain, the simulator makes it a knob ([`Knobs`]). The ledger in
//! `README.md` beside this crate lists every behaviour with its public source, or "assumed" and the
//! variants it is tested under.
//!
//! ```no_run
//! # async fn demo() -> Result<(), provider_simulators::SimulatorError> {
//! use provider_simulators::{ClientRegistration, Simulator, SimulatorConfig};
//! let sim = Simulator::start(SimulatorConfig::default()).await?;
//! sim.register_exact_client(ClientRegistration {
//!     client_id: "app".into(),
//!     client_secret: "secret".into(),
//!     redirect_uris: vec!["http://localhost/cb".into()],
//! });
//! sim.set_auto_consent(true);
//! let token_url = format!("{}/api/oauth2/token", sim.exact_base("nl"));
//! # let _ = token_url; Ok(()) }
//! ```
//!
//! # URL layout (one host, `{base}` = `http://127.0.0.1:PORT`)
//!
//! | provider | base the broker is configured with | endpoints below it |
//! |---|---|---|
//! | Twinfield login host | `{base}/twinfield` | `/auth/authentication/connect/{authorize,token,accesstokenvalidation,userinfo}`, `/webservices/session.asmx` |
//! | Twinfield cluster | `{base}/twinfield/clusters/{cluster}` (= `twf.clusterUrl`) | `/webservices/session.asmx` |
//! | Exact Online | `{base}/exact/{nl,be,de,co.uk,com,fr,es}` | `/api/oauth2/auth`, `/api/oauth2/token`, `/api/v1/current/Me`, `/api/v1/{division}/system/Divisions` |
//! | Acumatica | `{base}/acumatica/{instance}` | `/identity/connect/{authorize,token,userinfo}`, `/identity/.well-known/openid-configuration`, `/entity/{endpoint}/{version}/{entity}` |
//!
//! The consent page is the authorize URL itself: `GET` shows it, its form `POST`s `request_id`,
//! `user` and `decision=allow|deny` back to the same path.
//!
//! # Route keys (for faults and call counts)
//!
//! `twinfield.{authorize,token,accesstokenvalidation,userinfo,session,cluster_session}`,
//! `exact.{authorize,token,me,api}`, `acumatica.{authorize,token,userinfo,discovery,api}`.
//! A fault rule's route may also be `exact.*` or `*`.
//!
//! # Admin routes (JSON; mirror [`Control`])
//!
//! | route | body → answer |
//! |---|---|
//! | `GET /_sim/health` | `{"ok":true}` |
//! | `GET /_sim/urls` | the bases above |
//! | `GET /_sim/clock` | `{"now":RFC3339}` |
//! | `POST /_sim/clock/advance` | `{"seconds":i64}` → `{"now"}` |
//! | `POST /_sim/clock/set` | `{"now":RFC3339}` → `{"now"}` |
//! | `GET /_sim/knobs`, `PUT /_sim/knobs` | [`Knobs`]; `PUT` merges the given fields |
//! | `POST /_sim/consent/auto` | `{"auto":bool}` |
//! | `POST /_sim/consent/next` | [`ConsentOverride`] `{"decision":"allow"\|"deny"\|"show_page","user":null}` |
//! | `POST /_sim/twinfield/clients`, `POST /_sim/exact/clients` | [`ClientRegistration`] |
//! | `POST /_sim/twinfield/organisations` | [`TwinfieldOrganisation`] |
//! | `POST /_sim/twinfield/users` | [`TwinfieldUser`] |
//! | `POST /_sim/twinfield/logon-behaviour` | `{"organisation","user":null,"behaviour":{"result":"Blocked","next_action":"SMSLogon"}}` (`behaviour:null` clears) |
//! | `POST /_sim/twinfield/legacy-credentials` | [`LegacyCredentials`] |
//! | `POST /_sim/exact/users` | [`ExactUser`] |
//! | `POST /_sim/exact/division-scope` | `{"user","divisions":[i64]\|null}`: what the user's next consents grant |
//! | `POST /_sim/acumatica/instances` | [`AcumaticaInstance`] |
//! | `POST /_sim/acumatica/{instance}/clients` | [`AcumaticaClientRegistration`] |
//! | `POST /_sim/acumatica/{instance}/users` | `{"tenant","user"}` |
//! | `POST /_sim/acumatica/{instance}/login-limit` | `{"tenant","limit":n\|null}` |
//! | `GET/POST/DELETE /_sim/faults` | list / add a [`FaultRule`] / clear all |
//! | `PUT /_sim/latency` | `{"route":"exact.token"\|null,"ms":100}` (`null` = global) |
//! | `GET /_sim/inspect/presentations` | `{"presentations":{sha256hex:n},"max":n}` |
//! | `GET /_sim/inspect/calls` | `{route key: n}` |
//! | `GET /_sim/inspect/access-tokens` | a JSON array of [`AccessTokenInfo`] |
//! | `GET /_sim/inspect/sessions` | Twinfield legacy sessions and Acumatica sessions per tenant |
//! | `POST /_sim/grants/revoke` | `{"provider","user","client_id":null}` → `{"revoked":n}` |
//! | `POST /_sim/mint` | [`MintRequest`] → [`MintedTokens`] |
//!
//! A fault rule in JSON: `{"route":"exact.token","trigger":{"next":2},"action":{"kind":"status","status":503,"body":"down"}}`;
//! triggers `"always"`, `{"next":n}`, `{"probability":p}`; action kinds `status`, `status_utf16`,
//! `too_many_requests` (`retry_after_secs`), `hang`, `drop`, `issue_then500`, `issue_then_drop`, `latency` (`ms`).
//!
//! # Choices where the providers' behaviour is undocumented
//!
//! - Twinfield: a failed client authentication answers 400 `invalid_client`; an invalid token at
//!   `accesstokenvalidation` 400 `{"Message":...}`; an unknown or expired legacy session a
//!   `soap:Client` fault; logons other than `Ok` return an empty `SessionID`. Sessions idle out
//!   after `twinfield_session_idle_timeout_secs` (unpublished; 20 minutes assumed). How
//!   `AccessTokenLogon` refuses a token (`twinfield_invalid_token_logon`), the 354 fault's detail
//!   layout and its language are knobs; the reported cluster URL can be overridden.
//! - Exact: blocked apps (more than `exact_error_block_threshold` 4xx answers per app and user in an
//!   hour) get 429 + `Retry-After` with `{"error":"too_many_errors"}` for `exact_error_block_secs`;
//!   the daily cap (per UTC day of the simulated clock) 429 `{"error":"rate_limit_exceeded"}`. The
//!   refusal of a refresh within the minimum interval is whatever `exact_early_refresh_status` and
//!   `exact_early_refresh_body` say. A spent refresh token is never honoured again.
//! - Acumatica: Basic client authentication is refused; over the login limit the code exchange
//!   answers 400 `invalid_grant` with "API Login Limit" in the description; refresh tokens are
//!   one-time unless the client registration says otherwise. The discovery document and its PKCE
//!   advertisement are switches (`acumatica_discovery_document`, `acumatica_advertises_pkce`); with
//!   `openid` the code exchange adds an unsigned id_token (the document names no `jwks_uri`).
//! - Revoking a grant kills its access tokens too, so "is this token still accepted" has one answer.

mod accounts;
mod acumatica;
mod admin;
mod clock;
mod config;
mod control;
mod error;
mod exact;
mod exact_api;
mod faults;
mod oauth_common;
mod server;
mod soap;
mod state;
mod store;
mod twinfield;
mod twinfield_soap;
mod util;

pub use accounts::{
    AcumaticaClientRegistration, AcumaticaInstance, AcumaticaRefreshPolicy, ClientRegistration,
    ExactUser, LegacyCredentials, LogonBehaviour, LogonResult, NextAction, Provider,
    TwinfieldOrganisation, TwinfieldUser, EXACT_COUNTRIES,
};
pub use clock::SimClock;
pub use config::{FaultLanguage, InvalidTokenLogon, Knobs, SimulatorConfig};
pub use control::{Control, MintRequest, MintedTokens};
pub use error::SimulatorError;
pub use faults::{FaultAction, FaultRule, FaultTrigger, EXTRACT_VARIABLES_FAULT, ROUTE_KEYS};
pub use state::{ConsentDecision, ConsentOverride};
pub use store::AccessTokenInfo;
pub use util::{pkce_s256, token_hash};

use axum::response::Html;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

pub struct Simulator;

impl Simulator {
    /// Binds the listener, seeds the demo accounts (unless turned off) and starts serving.
    pub async fn start(config: SimulatorConfig) -> Result<SimulatorHandle, SimulatorError> {
        let listener = tokio::net::TcpListener::bind(config.bind).await?;
        let addr = listener.local_addr()?;
        let clock = config
            .start_time
            .map(SimClock::starting_at)
            .unwrap_or_default();
        let mut accounts = accounts::Accounts::default();
        if config.seed_demo_accounts {
            accounts.seed_demo(&config.knobs);
        }
        let shared = state::Shared {
            faults: Mutex::new(faults::FaultState::new(config.knobs.fault_seed)),
            state: Mutex::new(state::State {
                knobs: config.knobs,
                accounts,
                oauth: Default::default(),
                consent_overrides: Default::default(),
                twinfield_sessions: Default::default(),
                exact_limits: Default::default(),
            }),
            calls: Mutex::new(Default::default()),
            clock,
            base_url: format!("http://{addr}"),
        };
        let sim = Arc::new(shared);
        let router = router(&sim);
        let server = server::spawn(listener, router);
        tracing::info!(base_url = %sim.base_url, "provider simulators listening");
        Ok(SimulatorHandle {
            control: Control { sim },
            addr,
            server: Arc::new(server),
        })
    }
}

fn router(sim: &state::Sim) -> Router {
    Router::new()
        .merge(twinfield::routes(sim))
        .merge(exact::routes(sim))
        .merge(acumatica::routes(sim))
        .merge(admin::routes())
        .route("/", get(index))
        .with_state(sim.clone())
}

/// A landing page for a person running the binary.
async fn index(axum::extract::State(sim): axum::extract::State<state::Sim>) -> Html<String> {
    let base = &sim.base_url;
    Html(format!(
        "<!doctype html><html><head><title>Provider simulators</title></head><body><h1>Provider simulators</h1><ul>\
         <li>Twinfield login host: <code>{base}/twinfield</code></li>\
         <li>Twinfield cluster: <code>{base}/twinfield/clusters/accounting</code></li>\
         <li>Exact Online (nl): <code>{base}/exact/nl</code></li>\
         <li>Acumatica instance: <code>{base}/acumatica/demo</code></li>\
         <li>Admin: <a href=\"/_sim/urls\">/_sim/urls</a>, <a href=\"/_sim/knobs\">/_sim/knobs</a></li></ul></body></html>"
    ))
}

/// A running simulator. Derefs to [`Control`]; the server stops on [`SimulatorHandle::shutdown`]
/// or when the last clone is dropped.
#[derive(Clone)]
pub struct SimulatorHandle {
    control: Control,
    addr: SocketAddr,
    server: Arc<server::ServerGuard>,
}

impl SimulatorHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A control handle that does not keep the server alive (for use by other components).
    pub fn control(&self) -> Control {
        self.control.clone()
    }

    /// Stops accepting and closes every open connection, hung ones included.
    pub fn shutdown(&self) {
        self.server.shutdown();
    }
}

impl std::ops::Deref for SimulatorHandle {
    type Target = Control;

    fn deref(&self) -> &Control {
        &self.control
    }
}
