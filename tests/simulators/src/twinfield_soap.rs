//! Twinfield's legacy session service (`session.asmx`): logons on the login host, and
//! SelectCompany / KeepAlive / Abandon on the cluster (seed 004, PROVIDERS.md).

use crate::accounts::{LogonBehaviour, LogonResult, NextAction, Provider};
use crate::soap::{self, element, FaultCode, SoapRequest, SoapVersion, TWINFIELD_NS};
use crate::state::{Sim, State};
use crate::util::new_guid;
use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};

/// A legacy session (`SessionID`), tied to the cluster it was handed out for.
#[derive(Debug, Clone)]
pub(crate) struct TwinfieldSession {
    pub organisation: String,
    pub cluster: String,
    pub company: Option<String>,
    pub last_used: DateTime<Utc>,
}

const SESSION_GONE: &str = "Your logon credentials are not valid anymore. Try to log on again.";
const TOKEN_INVALID: &str = "Access denied. Token invalid.";

/// `POST {login}/webservices/session.asmx`
pub(crate) async fn login_host(
    AxState(sim): AxState<Sim>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match read(&headers, &body) {
        Ok(r) => r,
        Err(fault) => return fault,
    };
    let mut state = sim.lock();
    let now = sim.clock.now();
    if let Some(fault) = check_header_token(&state, &request, now) {
        return fault;
    }
    let outcome = match request.operation.as_str() {
        "AccessTokenLogon" => access_token_logon(&state, request.param("accessToken"), now),
        "OAuthLogon" => oauth_logon(&state, &request),
        other => return unknown_operation(request.version, other),
    };
    let (result, cluster) = match &outcome {
        Logon::Known { user, behaviour } => {
            let org = state
                .accounts
                .twinfield_user_org(user)
                .map(|(_, o)| o.clone())
                .expect("user has an organisation");
            (*behaviour, Some((org.code, org.cluster)))
        }
        Logon::Rejected(result) => (
            LogonBehaviour {
                result: *result,
                next_action: NextAction::None,
            },
            None,
        ),
    };
    let mut session_id = String::new();
    if let (LogonResult::Ok, Some((organisation, cluster))) = (result.result, &cluster) {
        session_id = new_guid();
        let session = TwinfieldSession {
            organisation: organisation.clone(),
            cluster: cluster.clone(),
            company: None,
            last_used: now,
        };
        state.twinfield_sessions.insert(session_id.clone(), session);
    }
    let echoed_token = match request.operation.as_str() {
        "AccessTokenLogon" => request.param("accessToken"),
        _ => "",
    };
    let header = format!(
        "{}{}",
        element("SessionID", &session_id),
        element("AccessToken", echoed_token)
    );
    let op = &request.operation;
    let cluster_element = cluster
        .map(|(_, c)| element("cluster", &sim.twinfield_cluster_url(&c)))
        .unwrap_or_default();
    let body = format!(
        "<{op}Response xmlns=\"{TWINFIELD_NS}\">{}{}{cluster_element}</{op}Response>",
        element(&format!("{op}Result"), result.result.as_str()),
        element("nextAction", result.next_action.as_str()),
    );
    soap::answer(request.version, Some(&header), &body)
}

enum Logon {
    Known {
        user: String,
        behaviour: LogonBehaviour,
    },
    Rejected(LogonResult),
}

fn access_token_logon(state: &State, token: &str, now: DateTime<Utc>) -> Logon {
    match state
        .oauth
        .live_access(token, now)
        .filter(|g| g.provider == Provider::Twinfield)
    {
        Some(grant) => Logon::Known {
            user: grant.user.clone(),
            behaviour: state.accounts.twinfield_behaviour(&grant.user),
        },
        None => Logon::Rejected(LogonResult::TokenInvalid),
    }
}

fn oauth_logon(state: &State, request: &SoapRequest) -> Logon {
    let legacy = &state.accounts.twinfield_legacy;
    let client_ok = |c: &&crate::accounts::LegacyCredentials| {
        c.client_token == request.param("clientToken")
            && c.client_secret == request.param("clientSecret")
    };
    if !legacy.iter().any(|c| client_ok(&c)) {
        return Logon::Rejected(LogonResult::ClientInvalid);
    }
    let account = legacy.iter().filter(client_ok).find(|c| {
        c.access_token == request.param("accessToken")
            && c.access_secret == request.param("accessSecret")
    });
    match account {
        Some(c) => Logon::Known {
            user: c.user.clone(),
            behaviour: state.accounts.twinfield_behaviour(&c.user),
        },
        None => Logon::Rejected(LogonResult::Invalid),
    }
}

/// `POST {cluster_url}/webservices/session.asmx`
pub(crate) async fn cluster(
    AxState(sim): AxState<Sim>,
    Path(cluster): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match read(&headers, &body) {
        Ok(r) => r,
        Err(fault) => return fault,
    };
    let mut state = sim.lock();
    let now = sim.clock.now();
    if let Some(fault) = check_header_token(&state, &request, now) {
        return fault;
    }
    let version = request.version;
    if !matches!(
        request.operation.as_str(),
        "SelectCompany" | "KeepAlive" | "Abandon"
    ) {
        return unknown_operation(version, &request.operation);
    }
    // An OAuth2 call names its organisation through the token; a legacy one through its session.
    let organisation = match (request.header("AccessToken"), request.header("SessionID")) {
        (Some(token), _) => {
            let grant = state
                .oauth
                .live_access(token, now)
                .expect("checked by check_header_token");
            let org = state
                .accounts
                .twinfield_user_org(&grant.user)
                .map(|(_, o)| o.code.clone());
            org.unwrap_or_default()
        }
        (None, Some(id)) => {
            let idle = Duration::seconds(state.knobs.twinfield_session_idle_timeout_secs);
            let live = state
                .twinfield_sessions
                .get(id)
                .is_some_and(|s| s.cluster == cluster && now - s.last_used < idle);
            if !live {
                state.twinfield_sessions.remove(id);
                return soap::fault(version, FaultCode::Client, SESSION_GONE, None);
            }
            let session = state.twinfield_sessions.get_mut(id).expect("checked above");
            session.last_used = now;
            session.organisation.clone()
        }
        (None, None) => return soap::fault(version, FaultCode::Client, SESSION_GONE, None),
    };
    let body = match request.operation.as_str() {
        "SelectCompany" => {
            let company = request.param("company");
            let known = state
                .accounts
                .twinfield_orgs
                .get(&organisation)
                .is_some_and(|(o, _)| o.companies.iter().any(|c| c == company));
            if known {
                if let Some(s) = request
                    .header("SessionID")
                    .and_then(|id| state.twinfield_sessions.get_mut(id))
                {
                    s.company = Some(company.to_string());
                }
            }
            let result = if known { "Ok" } else { "Invalid" };
            format!(
                "<SelectCompanyResponse xmlns=\"{TWINFIELD_NS}\">{}</SelectCompanyResponse>",
                element("SelectCompanyResult", result)
            )
        }
        "KeepAlive" => format!("<KeepAliveResponse xmlns=\"{TWINFIELD_NS}\" />"),
        _ => {
            if let Some(id) = request.header("SessionID") {
                state.twinfield_sessions.remove(id);
            }
            format!("<AbandonResponse xmlns=\"{TWINFIELD_NS}\" />")
        }
    };
    soap::answer(version, None, &body)
}

/// Parses the envelope and checks that SOAP 1.1's `SOAPAction` (or 1.2's `action`) names the
/// operation in the body, as ASMX does.
#[allow(clippy::result_large_err)] // the error is the finished fault, built once per request
fn read(headers: &HeaderMap, body: &[u8]) -> Result<SoapRequest, Response> {
    let text = String::from_utf8_lossy(body);
    let request = soap::parse(&text)
        .map_err(|e| soap::fault(SoapVersion::Soap11, FaultCode::Client, &e, None))?;
    let expected = format!("{TWINFIELD_NS}{}", request.operation);
    match (request.version, soap::declared_action(headers)) {
        (_, Some(action)) if action == expected => Ok(request),
        (SoapVersion::Soap12, None) => Ok(request),
        (version, action) => {
            let text = format!(
                "Server did not recognize the value of HTTP Header SOAPAction: {}.",
                action.unwrap_or_default()
            );
            Err(soap::fault(version, FaultCode::Client, &text, None))
        }
    }
}

/// A call that carries an OAuth2 `AccessToken` header must carry a live Twinfield token.
fn check_header_token(
    state: &State,
    request: &SoapRequest,
    now: DateTime<Utc>,
) -> Option<Response> {
    let token = request.header("AccessToken")?;
    let live = state
        .oauth
        .live_access(token, now)
        .is_some_and(|g| g.provider == Provider::Twinfield);
    (!live).then(|| {
        soap::fault(
            request.version,
            FaultCode::Client,
            TOKEN_INVALID,
            Some("<code>354</code>"),
        )
    })
}

fn unknown_operation(version: SoapVersion, op: &str) -> Response {
    let text = format!(
        "Server did not recognize the value of HTTP Header SOAPAction: {TWINFIELD_NS}{op}."
    );
    soap::fault(version, FaultCode::Client, &text, None)
}
