//! The authorization endpoint and consent page shared by the three providers, plus small helpers
//! for token endpoints (form parsing, client credentials, JSON answers).
//!
//! The rules follow RFC 6749 §4.1.2.1: a bad `client_id` or `redirect_uri` is shown on an HTML page
//! and never redirected (redirecting to an unregistered URI would make the simulator an open
//! redirector, which the real providers are not); everything else goes back to the client.

use crate::accounts::Provider;
use crate::state::{ConsentDecision, Sim, State};
use crate::store::AuthRequest;
use crate::util::escape;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::Duration;
use serde_json::Value;
use std::collections::HashMap;

pub(crate) type Params = HashMap<String, String>;

/// Handles `GET authorize`: validates, then shows the consent page or answers automatically.
pub(crate) fn authorize(
    sim: &Sim,
    provider: Provider,
    location: &str,
    action_path: &str,
    params: &Params,
) -> Response {
    let mut state = sim.lock();
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(client_id) = get("client_id") else {
        return error_page("The request has no client_id.");
    };
    let Some(client) = state.client(provider, location, client_id) else {
        return error_page(&format!("Unknown client_id {client_id:?}."));
    };
    let Some(redirect_uri) =
        get("redirect_uri").filter(|r| client.redirect_uris.iter().any(|u| u == r))
    else {
        return error_page("The redirect_uri is missing or not registered for this client.");
    };
    let state_param = get("state").unwrap_or_default().to_string();
    let back = |error: &str, description: &str| {
        redirect_error(redirect_uri, error, description, &state_param)
    };
    if get("response_type") != Some("code") {
        return back(
            "unsupported_response_type",
            "Only response_type=code is supported.",
        );
    }
    if state_param.is_empty() {
        return back("invalid_request", "The state parameter is required.");
    }
    if provider == Provider::Twinfield && get("nonce").is_none() {
        return back("invalid_request", "The nonce parameter is required.");
    }
    let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (None, None) => None,
        (Some(c), Some("S256")) => Some(c.to_string()),
        _ => {
            return back(
                "invalid_request",
                "PKCE needs code_challenge with code_challenge_method=S256.",
            )
        }
    };
    let request = AuthRequest {
        provider,
        location: location.to_string(),
        client_id: client_id.to_string(),
        redirect_uri: redirect_uri.to_string(),
        state: state_param.clone(),
        scope: get("scope").unwrap_or_default().to_string(),
        nonce: get("nonce").map(str::to_string),
        code_challenge,
    };
    let (decision, user) = match state.consent_overrides.pop_front() {
        Some(o) => (o.decision, o.user),
        None if state.knobs.auto_consent => (ConsentDecision::Allow, None),
        None => (ConsentDecision::ShowPage, None),
    };
    let user = user.unwrap_or_else(|| state.default_user(provider));
    match decision {
        ConsentDecision::Allow => issue_code_redirect(sim, &mut state, request, user),
        ConsentDecision::Deny => redirect_error(
            redirect_uri,
            "access_denied",
            "The user denied access.",
            &state_param,
        ),
        ConsentDecision::ShowPage => {
            let now = sim.clock.now();
            let id = state.oauth.add_pending(request.clone(), now);
            consent_page(StatusCode::OK, action_path, &id, &request, &user, None)
        }
    }
}

/// Handles the consent form's `POST authorize` (fields `request_id`, `user`, `decision`).
pub(crate) fn consent_decision(
    sim: &Sim,
    provider: Provider,
    action_path: &str,
    form: &Params,
) -> Response {
    let mut state = sim.lock();
    let id = form.get("request_id").cloned().unwrap_or_default();
    let Some((request, _)) = state.oauth.pending.remove(&id) else {
        return error_page(
            "This sign-in request is unknown or has already been answered; start again.",
        );
    };
    if request.provider != provider {
        return error_page("This sign-in request belongs to another provider.");
    }
    if form.get("decision").map(String::as_str) != Some("allow") {
        return redirect_error(
            &request.redirect_uri,
            "access_denied",
            "The user denied access.",
            &request.state,
        );
    }
    let user = form
        .get("user")
        .map(|u| u.trim().to_string())
        .unwrap_or_default();
    if !state.user_exists(provider, &request.location, &request.client_id, &user) {
        let now = sim.clock.now();
        let id = state.oauth.add_pending(request.clone(), now);
        let message = format!("Unknown user {user:?}.");
        return consent_page(
            StatusCode::BAD_REQUEST,
            action_path,
            &id,
            &request,
            &user,
            Some(&message),
        );
    }
    issue_code_redirect(sim, &mut state, request, user)
}

fn issue_code_redirect(
    sim: &Sim,
    state: &mut State,
    request: AuthRequest,
    user: String,
) -> Response {
    let lifetime = match request.provider {
        Provider::Exact => state.knobs.exact_code_lifetime_secs,
        _ => state.knobs.code_lifetime_secs,
    };
    let expires_at = sim.clock.now() + Duration::seconds(lifetime);
    let (redirect_uri, state_param) = (request.redirect_uri.clone(), request.state.clone());
    let code = state.oauth.issue_code(request, user, expires_at);
    redirect_with(&redirect_uri, &[("code", &code), ("state", &state_param)])
}

fn redirect_error(redirect_uri: &str, error: &str, description: &str, state: &str) -> Response {
    let mut pairs = vec![("error", error), ("error_description", description)];
    if !state.is_empty() {
        pairs.push(("state", state));
    }
    redirect_with(redirect_uri, &pairs)
}

fn redirect_with(redirect_uri: &str, pairs: &[(&str, &str)]) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return error_page("The registered redirect_uri is not an absolute URL.");
    };
    url.query_pairs_mut().extend_pairs(pairs.iter().copied());
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

fn error_page(message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><title>Sign-in error</title></head><body>\
         <h1>Sign-in error</h1><p id=\"error\">{}</p></body></html>",
        escape(message)
    );
    (StatusCode::BAD_REQUEST, Html(body)).into_response()
}

const SANDBOX_STYLE: &str = "*{box-sizing:border-box}body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,Arial,sans-serif;line-height:1.5;color:#1b1b1b;background:#f3f4f6}\
.sandbox{margin:0;padding:.75rem 1.25rem;background:#7a1d00;color:#fff}.sandbox strong{display:inline-block;margin-right:.5rem;padding:0 .5rem;border:2px solid #fff;border-radius:4px;letter-spacing:.1em}\
main{max-width:32rem;margin:1.5rem auto;background:#fff;border:3px dashed #7a1d00;border-radius:10px;padding:1.5rem}h1{font-size:1.5rem;margin:0 0 .75rem}\
label{display:block;font-weight:600;margin-top:1rem}input[type=text]{width:100%;padding:.6rem;font:inherit;border:1px solid #6b7280;border-radius:6px}\
.actions{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1.25rem}button{padding:.7rem 1.2rem;min-height:2.75rem;border-radius:6px;border:2px solid #0b57d0;background:#0b57d0;color:#fff;font:inherit;font-weight:600;cursor:pointer}\
.deny{background:#fff;color:#0b57d0}.error{color:#a8200d;font-weight:600}\
@media (max-width:30rem){main{margin:0;border-radius:0;border-width:3px 0}.actions button{flex:1 1 100%}}";

fn consent_page(
    status: StatusCode,
    action: &str,
    request_id: &str,
    request: &AuthRequest,
    user: &str,
    error: Option<&str>,
) -> Response {
    let title = match request.provider {
        Provider::Twinfield => "Twinfield".to_string(),
        Provider::Exact => format!("Exact Online ({})", request.location),
        Provider::Acumatica => format!("Acumatica ({})", request.location),
    };
    let error = error
        .map(|e| {
            format!(
                "<p id=\"error\" class=\"error\" role=\"alert\">{}</p>",
                escape(e)
            )
        })
        .unwrap_or_default();
    // Styled like the broker's pages, and marked SANDBOX on every screen size, so nobody mistakes
    // it for the real provider's sign-in.
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>SANDBOX: {title} sign in (simulator)</title><style>{SANDBOX_STYLE}</style></head><body>\
         <p class=\"sandbox\" id=\"sandbox\"><strong>SANDBOX</strong> A simulated {title} for trying the connection broker. Nothing here reaches the real {title}.</p>\
         <main><h1>{title}</h1>\
         <p>The application <b id=\"client\">{client}</b> asks for access{scope}.</p>{error}\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"request_id\" value=\"{id}\">\
         <label for=\"user\">User</label><input type=\"text\" id=\"user\" name=\"user\" value=\"{user}\" autocomplete=\"username\">\
         <div class=\"actions\"><button type=\"submit\" id=\"allow\" name=\"decision\" value=\"allow\">Allow</button>\
         <button type=\"submit\" id=\"deny\" class=\"deny\" name=\"decision\" value=\"deny\">Deny</button></div>\
         </form></main></body></html>",
        title = escape(&title),
        client = escape(&request.client_id),
        scope = if request.scope.is_empty() { String::new() } else { format!(" ({})", escape(&request.scope)) },
        action = escape(action),
        id = escape(request_id),
        user = escape(user),
    );
    (status, Html(body)).into_response()
}

/// Parses a form-encoded body without insisting on the content type, as the providers do.
pub(crate) fn parse_form(body: &[u8]) -> Params {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// `Authorization: Basic` credentials, form-decoded as RFC 6749 §2.3.1 requires.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let (id, secret) = basic_credentials_unencoded(headers)?;
    let unform = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unform(&id)?, unform(&secret)?))
}

/// `Authorization: Basic` credentials split at the first colon and not decoded any further: what
/// Twinfield's article "How to create an authorization string" builds, and what its IdentityServer
/// (3) login service reads. A form-encoded secret does not match there.
pub(crate) fn basic_credentials_unencoded(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((id.to_string(), secret.to_string()))
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?;
    Some(token.trim().to_string())
}

/// A JSON answer from a token endpoint: never cached, as RFC 6749 §5.1 requires.
pub(crate) fn json(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub(crate) fn oauth_error(status: u16, error: &str, description: Option<&str>) -> Response {
    let mut body = serde_json::json!({ "error": error });
    if let Some(d) = description {
        body["error_description"] = Value::String(d.to_string());
    }
    json(status, body)
}

pub(crate) fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split_whitespace().any(|s| s == wanted)
}

/// 401 for a missing, unknown or expired bearer token (RFC 6750 §3).
pub(crate) fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
    )
        .into_response()
}
