//! The oauth-callback function: connect and reconnect in the browser.
//!
//! - `GET /connect/{token}`: a connect link was opened; the page shows the connection as its customer
//!   should see it (connected, to reconnect and why, not connected). It changes nothing: mail
//!   scanners fetch links.
//! - `POST /connect/{token}`: the page's button; the browser is sent to the provider with a fresh
//!   single-use state bound to it by a cookie.
//! - `GET /oauth/callback`: the provider sent the browser back; the authorization is completed and a
//!   page says what happened (for Exact Online with several granted divisions and none named, with a
//!   form to choose the division).
//! - `POST /connect/division`: that form, once, from the browser that authorized.
//! - `POST /connect/{token}/settings`: the form a connection page shows first when the connection
//!   needs its customer's own settings (an Acumatica instance); saved, it leads back to the page.
//! - `GET /`: a page naming the service; `GET /health`: 200 for load balancers, touching nothing.
//!
//! Pages are in the connection's language, else its tenant's, else the browser's (`Accept-Language`).
//!
//! The handlers only map HTTP onto [`ConnectFlow`] (the logic lives in the core crate) and its typed
//! outcomes onto pages and status codes. The same router runs on Lambda (`lambda_http`) and locally
//! (`axum::serve`).

pub mod pages;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use broker_core::connect::flow::division::DivisionForm;
use broker_core::connect::flow::onboarding::{SettingsForm, SettingsRefused};
use broker_core::connect::flow::{
    Audience, BrowserCookies, ConnectError, ConnectFailure, ConnectFlow, LinkPage, LinkUse,
};
use broker_core::context::BrokerContext;
use broker_core::domain::Locale;
use broker_core::wording::{words, Words};
use std::sync::{Arc, LazyLock};

/// The router of both routes, over one context.
pub fn router(ctx: BrokerContext) -> Router {
    let flow = Arc::new(ConnectFlow::new(ctx));
    Router::new()
        // HEAD is answered on its own: axum would run the GET handler for it, and a link checker or a
        // mail scanner's HEAD must neither start an authorization nor spend a state and its code.
        .route("/", get(home).head(head_only))
        .route("/health", get(health).head(health))
        .route(
            "/connect/{token}",
            get(link_page).post(start).head(head_only),
        )
        .route("/oauth/callback", get(callback).head(head_only))
        .route("/connect/division", post(choose_division))
        .route("/connect/{token}/settings", post(save_settings))
        .fallback(not_found)
        .with_state(flow)
}

/// `HEAD` on a page: the headers a page would have, and no side effect.
async fn head_only() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut headers, None);
    (StatusCode::OK, headers).into_response()
}

/// For load balancers: answers from the process alone (no store, no provider), so a provider outage
/// never takes the pages out of rotation.
async fn health() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (
        StatusCode::OK,
        headers,
        words(Locale::English).text("page-health-ok"),
    )
        .into_response()
}

async fn home(request_headers: HeaderMap) -> Response {
    let words = reader_words(None, &request_headers);
    page(StatusCode::OK, pages::home(words), HeaderMap::new())
}

/// The language a page is written in: the connection's, else its tenant's (both in the audience),
/// else the first the browser asks for that pages are written in, else English.
pub fn reader_words(audience: Option<&Audience>, request_headers: &HeaderMap) -> &'static Words {
    let locale = audience.and_then(|a| a.locale).or_else(|| {
        request_headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .and_then(Locale::from_accept_language)
    });
    words(locale.unwrap_or(Locale::English))
}

/// `GET` on a link: the connection page. A spent or replaced link shows it read-only (410: the link
/// itself is gone, the connection is not).
async fn link_page(
    State(flow): State<Arc<ConnectFlow>>,
    Path(token): Path<String>,
    request_headers: HeaderMap,
) -> Response {
    match flow.link_page(&token).await {
        Ok(view) => connection_page(&flow, &token, &view, &request_headers, None),
        Err(failure) => {
            log_failure("link", &failure);
            failed(&failure, &request_headers, HeaderMap::new())
        }
    }
}

/// The connection page of a link; `retry` is a settings form shown again, with why.
fn connection_page(
    flow: &ConnectFlow,
    token: &str,
    view: &LinkPage,
    request_headers: &HeaderMap,
    retry: Option<(&SettingsForm, SettingsRefused)>,
) -> Response {
    let words = reader_words(Some(&view.audience), request_headers);
    // Absolute: the public base may carry a path (a stage) the request path does not show.
    let action = flow.context().public_url(&format!("connect/{token}"));
    let settings = flow
        .context()
        .public_url(&format!("connect/{token}/settings"));
    let html = pages::connection(view, words, action.as_str(), settings.as_str(), retry);
    let (status, form_target) = match &view.link {
        LinkUse::Usable { authorize_origin } => (StatusCode::OK, Some(authorize_origin.as_str())),
        LinkUse::AsksFirst(_) if retry.is_some() => (StatusCode::UNPROCESSABLE_ENTITY, None),
        LinkUse::AsksFirst(_) => (StatusCode::OK, None),
        LinkUse::Spent | LinkUse::Replaced => (StatusCode::GONE, None),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut headers, form_target);
    (status, headers, html).into_response()
}

/// The settings form: saved, the browser goes back to the page (now with its Connect button);
/// refused, the page shows the form again with what was typed and why.
async fn save_settings(
    State(flow): State<Arc<ConnectFlow>>,
    Path(token): Path<String>,
    request_headers: HeaderMap,
    form: Result<Form<SettingsForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        let failure = ConnectFailure::from(ConnectError::MalformedRequest(
            "it is not the settings form".into(),
        ));
        log_failure("settings", &failure);
        return failed(&failure, &request_headers, HeaderMap::new());
    };
    let refused = match flow.save_settings(&token, &form).await {
        Ok(Ok(())) => {
            let mut headers = HeaderMap::new();
            let page = flow.context().public_url(&format!("connect/{token}"));
            if let Ok(location) = HeaderValue::from_str(page.as_str()) {
                headers.insert(header::LOCATION, location);
            }
            secure_headers(&mut headers, None);
            // See Other: the browser reads the page with a GET, and a reload does not post again.
            return (StatusCode::SEE_OTHER, headers).into_response();
        }
        Ok(Err(refused)) => refused,
        Err(failure) => {
            log_failure("settings", &failure);
            return failed(&failure, &request_headers, HeaderMap::new());
        }
    };
    match flow.link_page(&token).await {
        Ok(view) => connection_page(
            &flow,
            &token,
            &view,
            &request_headers,
            Some((&form, refused)),
        ),
        Err(failure) => {
            log_failure("settings", &failure);
            failed(&failure, &request_headers, HeaderMap::new())
        }
    }
}

/// The status a failure is answered with.
pub fn status_of(error: &ConnectError) -> StatusCode {
    match error {
        ConnectError::MalformedRequest(_)
        | ConnectError::LinkUnknown
        | ConnectError::StateUnknown
        | ConnectError::WrongBrowser
        | ConnectError::DivisionChoiceUnknown => StatusCode::BAD_REQUEST,
        ConnectError::LinkExpired
        | ConnectError::LinkSpent { .. }
        | ConnectError::LinkReplaced { .. }
        | ConnectError::StateExpired
        | ConnectError::ConnectionGone
        | ConnectError::DivisionChoiceClosed { .. } => StatusCode::GONE,
        // The person said no, or is the wrong person or organisation: understood, and refused.
        ConnectError::Denied { .. }
        | ConnectError::IdentityMismatch { .. }
        | ConnectError::OrganisationMismatch { .. }
        | ConnectError::OtherUser { .. }
        | ConnectError::DivisionNotGranted { .. }
        | ConnectError::DivisionsUnknown { .. } => StatusCode::FORBIDDEN,
        ConnectError::ProviderRefused { .. }
        | ConnectError::Provider(_)
        | ConnectError::NonceUnverified { .. } => StatusCode::BAD_GATEWAY,
        ConnectError::Conflict => StatusCode::CONFLICT,
        ConnectError::Misconfigured(_) => StatusCode::INTERNAL_SERVER_ERROR,
        ConnectError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The connection page's button: starts the authorization.
async fn start(
    State(flow): State<Arc<ConnectFlow>>,
    Path(token): Path<String>,
    request_headers: HeaderMap,
) -> Response {
    match flow.start(&token).await {
        Ok(started) => {
            let mut headers = HeaderMap::new();
            match HeaderValue::from_str(started.redirect.as_str()) {
                Ok(location) => headers.insert(header::LOCATION, location),
                Err(_) => {
                    return failed(
                        &ConnectFailure::from(ConnectError::Misconfigured(
                            "the provider's authorization URL is not a valid header".into(),
                        )),
                        &request_headers,
                        HeaderMap::new(),
                    )
                }
            };
            for cookie in started.cookies.header_values() {
                if let Ok(value) = HeaderValue::from_str(cookie) {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            secure_headers(&mut headers, None);
            // Browsers follow a 302 after a form's POST with a GET, as the provider expects.
            (StatusCode::FOUND, headers).into_response()
        }
        Err(failure) => {
            log_failure("start", &failure);
            if matches!(
                failure.error,
                ConnectError::LinkSpent { .. } | ConnectError::LinkReplaced { .. }
            ) {
                // The page says how the connection stands now, read-only.
                let mut headers = HeaderMap::new();
                let page = flow.context().public_url(&format!("connect/{token}"));
                if let Ok(location) = HeaderValue::from_str(page.as_str()) {
                    headers.insert(header::LOCATION, location);
                    secure_headers(&mut headers, None);
                    return (StatusCode::SEE_OTHER, headers).into_response();
                }
            }
            failed(&failure, &request_headers, HeaderMap::new())
        }
    }
}

async fn callback(
    State(flow): State<Arc<ConnectFlow>>,
    uri: Uri,
    headers_in: HeaderMap,
) -> Response {
    let cookies = BrowserCookies::from_headers(
        headers_in
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    // Once the state is spent, so are the browser's cookies for it.
    let mut spent = HeaderMap::new();
    for cookie in flow.clearing_cookies().header_values() {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            spent.append(header::SET_COOKIE, value);
        }
    }
    match flow.complete(uri.query(), &cookies).await {
        Ok(done) => {
            let mut headers = spent;
            if let Some(offer) = &done.division_choice {
                append_cookies(&mut headers, offer.cookies.header_values());
            }
            let words = reader_words(Some(&done.audience), &headers_in);
            page(StatusCode::OK, pages::success(&done, words), headers)
        }
        Err(failure) => {
            log_failure("callback", &failure);
            let headers = if failure.state_consumed {
                spent
            } else {
                HeaderMap::new()
            };
            failed(&failure, &headers_in, headers)
        }
    }
}

async fn choose_division(
    State(flow): State<Arc<ConnectFlow>>,
    headers: HeaderMap,
    form: Result<Form<DivisionForm>, FormRejection>,
) -> Response {
    let cookies = BrowserCookies::from_headers(
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let Ok(Form(form)) = form else {
        let failure = ConnectFailure::from(ConnectError::MalformedRequest(
            "it is not the division form".into(),
        ));
        log_failure("division", &failure);
        return failed(&failure, &headers, HeaderMap::new());
    };
    match flow.choose_division(&form, &cookies).await {
        Ok(chosen) => {
            let words = reader_words(Some(&chosen.audience), &headers);
            let mut out = HeaderMap::new();
            append_cookies(&mut out, flow.clearing_division_cookie().header_values());
            page(StatusCode::OK, pages::division_chosen(&chosen, words), out)
        }
        Err(failure) => {
            log_failure("division", &failure);
            failed(&failure, &headers, HeaderMap::new())
        }
    }
}

fn append_cookies(headers: &mut HeaderMap, cookies: &[String]) {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
}

async fn not_found(request_headers: HeaderMap) -> Response {
    let failure = ConnectFailure::from(ConnectError::MalformedRequest(
        "this address is not one the broker serves".into(),
    ));
    let mut response = failed(&failure, &request_headers, HeaderMap::new());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

fn log_failure(step: &str, failure: &ConnectFailure) {
    // The error's text is built for people and never carries a secret.
    tracing::info!(step, reason = failure.error.label(), detail = %failure.error, "connect attempt failed");
}

fn failed(failure: &ConnectFailure, request_headers: &HeaderMap, headers: HeaderMap) -> Response {
    let words = reader_words(failure.audience.as_ref(), request_headers);
    page(
        status_of(&failure.error),
        pages::failure(failure, words),
        headers,
    )
}

fn page(status: StatusCode, html: String, mut headers: HeaderMap) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut headers, None);
    (status, headers, html).into_response()
}

/// The style block's hash, which the policy names.
static STYLE_HASH: LazyLock<String> = LazyLock::new(|| {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(pages::STYLE))
});

/// `default-src 'none'` and the page's one style block allowed by its hash. Forms post to the broker
/// only, except the connection page's, whose answer redirects to the provider: browsers hold a form's
/// redirects to `form-action` too, so that page also names the provider's authorization origin.
fn content_security_policy(form_target: Option<&str>) -> Option<HeaderValue> {
    let also = form_target.map(|o| format!(" {o}")).unwrap_or_default();
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{}'; frame-ancestors 'none'; form-action 'self'{also}; base-uri 'none'",
        *STYLE_HASH
    ))
    .ok()
}

fn secure_headers(headers: &mut HeaderMap, form_target: Option<&str>) {
    // An origin is ASCII without quotes or semicolons; should one ever not be, the stricter policy.
    let policy = content_security_policy(form_target)
        .or_else(|| content_security_policy(None))
        .expect("a policy of ASCII text");
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker_core::domain::ProviderKind;

    #[test]
    fn failures_map_to_the_promised_status_codes() {
        let cases = [
            (ConnectError::MalformedRequest("x".into()), 400),
            (ConnectError::StateUnknown, 400),
            (ConnectError::WrongBrowser, 400),
            (ConnectError::StateExpired, 410),
            (ConnectError::LinkExpired, 410),
            (
                ConnectError::ProviderRefused {
                    provider: ProviderKind::ExactOnline,
                    error: "server_error".into(),
                    description: None,
                },
                502,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(status_of(&error).as_u16(), status, "{error}");
        }
    }

    #[test]
    fn the_policy_allows_exactly_the_page_style() {
        let policy = content_security_policy(None).unwrap();
        let policy = policy.to_str().unwrap();
        assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(policy.contains("form-action 'self';"));
        assert!(!policy.contains("unsafe"));
        let connect = content_security_policy(Some("https://login.twinfield.com")).unwrap();
        assert!(connect
            .to_str()
            .unwrap()
            .contains("form-action 'self' https://login.twinfield.com;"));
    }

    #[test]
    fn the_connection_speaks_before_the_browser() {
        let mut browser = HeaderMap::new();
        browser.insert(
            header::ACCEPT_LANGUAGE,
            HeaderValue::from_static("nl-BE,nl;q=0.9,en;q=0.8"),
        );
        assert_eq!(reader_words(None, &browser).locale(), Locale::Dutch);
        assert_eq!(
            reader_words(None, &HeaderMap::new()).locale(),
            Locale::English
        );
    }
}
