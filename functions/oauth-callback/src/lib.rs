//! The oauth-callback function: connect and reconnect in the browser.
//!
//! - `GET /connect/{token}`: a connect link was opened; the browser is sent to the provider with a
//!   fresh single-use state bound to it by a cookie.
//! - `GET /oauth/callback`: the provider sent the browser back; the authorization is completed and a
//!   page says what happened (for Exact Online with several granted divisions and none named, with a
//!   form to choose the division).
//! - `POST /connect/division`: that form, once, from the browser that authorized.
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
use broker_core::connect::flow::{BrowserCookies, ConnectError, ConnectFailure, ConnectFlow};
use broker_core::context::BrokerContext;
use std::sync::{Arc, LazyLock};

/// The router of both routes, over one context.
pub fn router(ctx: BrokerContext) -> Router {
    let flow = Arc::new(ConnectFlow::new(ctx));
    Router::new()
        // HEAD is answered on its own: axum would run the GET handler for it, and a link checker or a
        // mail scanner's HEAD must neither start an authorization nor spend a state and its code.
        .route("/connect/{token}", get(start).head(head_only))
        .route("/oauth/callback", get(callback).head(head_only))
        .route("/connect/division", post(choose_division))
        .fallback(not_found)
        .with_state(flow)
}

/// `HEAD` on either route: the headers a page would have, and no side effect.
async fn head_only() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut headers);
    (StatusCode::OK, headers).into_response()
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

async fn start(State(flow): State<Arc<ConnectFlow>>, Path(token): Path<String>) -> Response {
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
                        HeaderMap::new(),
                    )
                }
            };
            for cookie in started.cookies.header_values() {
                if let Ok(value) = HeaderValue::from_str(cookie) {
                    headers.append(header::SET_COOKIE, value);
                }
            }
            secure_headers(&mut headers);
            (StatusCode::FOUND, headers).into_response()
        }
        Err(failure) => {
            log_failure("start", &failure);
            failed(&failure, HeaderMap::new())
        }
    }
}

async fn callback(State(flow): State<Arc<ConnectFlow>>, uri: Uri, headers: HeaderMap) -> Response {
    let cookies = BrowserCookies::from_headers(
        headers
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
            page(StatusCode::OK, pages::success(&done), headers)
        }
        Err(failure) => {
            log_failure("callback", &failure);
            let headers = if failure.state_consumed {
                spent
            } else {
                HeaderMap::new()
            };
            failed(&failure, headers)
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
        return failed(&failure, HeaderMap::new());
    };
    match flow.choose_division(&form, &cookies).await {
        Ok(chosen) => {
            let mut headers = HeaderMap::new();
            append_cookies(
                &mut headers,
                flow.clearing_division_cookie().header_values(),
            );
            page(StatusCode::OK, pages::division_chosen(&chosen), headers)
        }
        Err(failure) => {
            log_failure("division", &failure);
            failed(&failure, HeaderMap::new())
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

async fn not_found() -> Response {
    let failure = ConnectFailure::from(ConnectError::MalformedRequest(
        "this address is not one the broker serves".into(),
    ));
    let mut response = failed(&failure, HeaderMap::new());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

fn log_failure(step: &str, failure: &ConnectFailure) {
    // The error's text is built for people and never carries a secret.
    tracing::info!(step, reason = failure.error.label(), detail = %failure.error, "connect attempt failed");
}

fn failed(failure: &ConnectFailure, headers: HeaderMap) -> Response {
    page(status_of(&failure.error), pages::failure(failure), headers)
}

fn page(status: StatusCode, html: String, mut headers: HeaderMap) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(&mut headers);
    (status, headers, html).into_response()
}

/// `default-src 'none'` and the page's one style block allowed by its hash.
static CONTENT_SECURITY_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    use base64::Engine;
    use sha2::Digest;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(pages::STYLE));
    HeaderValue::from_str(&format!(
        "default-src 'none'; style-src 'sha256-{hash}'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ))
    .expect("a policy of ASCII text")
});

fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY.clone(),
    );
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
        let policy = CONTENT_SECURITY_POLICY.to_str().unwrap();
        assert!(policy.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!policy.contains("unsafe"));
    }
}
