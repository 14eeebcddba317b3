//! Twinfield's legacy session service (`session.asmx`): logons on the login host, and
//! SelectCompany / KeepAlive / Abandon on the cluster (seed 004, PROVIDERS.md).

use crate::accounts::{LogonBehaviour, LogonResult, NextAction, Provider};
use crate::config::{FaultLanguage, InvalidTokenLogon};
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

/// The texts of the two faults the broker meets, per [`FaultLanguage`]. The English ones are quoted by
/// PROVIDERS.md's sources; the Dutch ones are assumed translations (only "Toegang geweigerd." is
/// quoted, by php-twinfield), which is the point: the broker must not depend on the words.
fn session_gone_text(language: FaultLanguage) -> &'static str {
    match language {
        FaultLanguage::En => "Your logon credentials are not valid anymore. Try to log on again.",
        FaultLanguage::Nl => "Uw inloggegevens zijn niet meer geldig. Log opnieuw in.",
    }
}

fn token_invalid_text(language: FaultLanguage) -> &'static str {
    match language {
        FaultLanguage::En => "Access denied. Token invalid.",
        FaultLanguage::Nl => "Toegang geweigerd. Token ongeldig.",
    }
}

/// The cluster URL the simulator reports for `cluster` (`twf.clusterUrl`, `<cluster>`).
pub(crate) fn reported_cluster_url(sim: &Sim, state: &State, cluster: &str) -> String {
    state
        .knobs
        .twinfield_cluster_url_override
        .clone()
        .unwrap_or_else(|| sim.twinfield_cluster_url(cluster))
}

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
    let fault_for_token = state.knobs.twinfield_invalid_token_logon == InvalidTokenLogon::Fault;
    if matches!(outcome, Logon::Rejected(LogonResult::TokenInvalid)) && fault_for_token {
        return token_invalid_fault(&state, request.version);
    }
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
        .map(|(_, c)| element("cluster", &reported_cluster_url(&sim, &state, &c)))
        .unwrap_or_default();
    // The published AccessTokenLogon answer (session.asmx?op=AccessTokenLogon) has no nextAction;
    // OAuthLogon's and Logon's have one (seed 004).
    let next_action = match op.as_str() {
        "AccessTokenLogon" => String::new(),
        _ => element("nextAction", result.next_action.as_str()),
    };
    let body = format!(
        "<{op}Response xmlns=\"{TWINFIELD_NS}\">{}{next_action}{cluster_element}</{op}Response>",
        element(&format!("{op}Result"), result.result.as_str()),
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
                let text = session_gone_text(state.knobs.twinfield_fault_language);
                return soap::fault(version, FaultCode::Client, text, None);
            }
            let session = state.twinfield_sessions.get_mut(id).expect("checked above");
            session.last_used = now;
            session.organisation.clone()
        }
        (None, None) => {
            let text = session_gone_text(state.knobs.twinfield_fault_language);
            return soap::fault(version, FaultCode::Client, text, None);
        }
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
    (!live).then(|| token_invalid_fault(state, request.version))
}

/// "Access denied. Token invalid.", code 354, in the knobs' language and detail layout.
fn token_invalid_fault(state: &State, version: SoapVersion) -> Response {
    let knobs = &state.knobs;
    let text = token_invalid_text(knobs.twinfield_fault_language);
    let detail = Some(knobs.twinfield_token_fault_detail.as_str()).filter(|d| !d.is_empty());
    soap::fault(version, FaultCode::Client, text, detail)
}

fn unknown_operation(version: SoapVersion, op: &str) -> Response {
    let text = format!(
        "Server did not recognize the value of HTTP Header SOAPAction: {TWINFIELD_NS}{op}."
    );
    soap::fault(version, FaultCode::Client, &text, None)
}
