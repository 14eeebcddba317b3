//! The session-exchange function: HTTP onto [`broker_core::api::IntegrationApi`]. Everything the API
//! decides lives in the core; this crate maps paths, headers and bodies in, and answers (JSON, or RFC 9457
//! `application/problem+json`) out. The OpenAPI document of this API is `openapi.json` beside this crate's
//! `Cargo.toml` ([`OPENAPI`]); a test holds it and the router to the same routes.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use broker_core::api::{ApiError, Caller, IntegrationApi, ProblemKind};
use broker_core::api::{SessionOptions, TwinfieldSessionRequest};
use broker_core::context::BrokerContext;
use broker_core::secret::{AccessToken, SessionId};
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::request::Parts;
use http::Extensions;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

mod apps;
mod history;
mod webhooks;

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The OpenAPI 3 document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every route the router serves, as (method, path template). The OpenAPI test checks both ways.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/connections"),
    ("GET", "/v1/connections"),
    ("GET", "/v1/connections/{id}"),
    ("PATCH", "/v1/connections/{id}"),
    ("DELETE", "/v1/connections/{id}"),
    ("GET", "/v1/connections/{id}/events"),
    ("POST", "/v1/connections/{id}/reconnect-link"),
    ("POST", "/v1/connections/{id}/credentials"),
    ("POST", "/v1/connections/{id}/session"),
    ("POST", "/v1/connections/{id}/twinfield-session"),
    ("POST", "/v1/apps"),
    ("GET", "/v1/apps"),
    ("GET", "/v1/apps/{id}"),
    ("PATCH", "/v1/apps/{id}"),
    ("DELETE", "/v1/apps/{id}"),
    ("POST", "/v1/webhooks"),
    ("GET", "/v1/webhooks"),
    ("DELETE", "/v1/webhooks/{id}"),
    ("GET", "/v1/webhooks/dead-letters"),
];

pub(crate) type Api = Arc<IntegrationApi>;

/// The router, with a fresh [`IntegrationApi`] (and its caches) over `ctx`.
pub fn router(ctx: BrokerContext) -> Router {
    router_with(Arc::new(IntegrationApi::with_settings(
        ctx,
        broker_core::api::ApiSettings::from_env(),
    )))
}

/// The router over an existing API (tests choose its cache settings).
pub fn router_with(api: Api) -> Router {
    Router::new()
        .route("/v1/connections", post(create).get(list))
        .route(
            "/v1/connections/{id}",
            get(show).patch(history::update).delete(disconnect),
        )
        .route("/v1/connections/{id}/events", get(history::events))
        .route("/v1/connections/{id}/reconnect-link", post(reconnect_link))
        .route("/v1/connections/{id}/credentials", post(credentials))
        .route("/v1/connections/{id}/session", post(session))
        .route(
            "/v1/connections/{id}/twinfield-session",
            post(twinfield_session),
        )
        .merge(apps::routes())
        .merge(webhooks::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

pub(crate) type Body = Result<Bytes, BytesRejection>;

async fn create(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(async {
        let created = api
            .create_connection(&caller, json(&headers, body)?)
            .await?;
        Ok((StatusCode::CREATED, created))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    answer(async {
        let Query(q) = query.map_err(|e| {
            ApiError::new(
                ProblemKind::InvalidRequest,
                format!(
                    "the query string is not valid ({e}): use ?limit=1..200&cursor=<next_cursor>"
                ),
            )
        })?;
        Ok((
            StatusCode::OK,
            api.list_connections(&caller, q.limit, q.cursor).await?,
        ))
    })
    .await
}

async fn show(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Response {
    answer(async { Ok((StatusCode::OK, api.get_connection(&caller, &id).await?)) }).await
}

async fn disconnect(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Response {
    answer(async { Ok((StatusCode::OK, api.disconnect(&caller, &id).await?)) }).await
}

async fn reconnect_link(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Response {
    answer(async { Ok((StatusCode::CREATED, api.reconnect_link(&caller, &id).await?)) }).await
}

async fn credentials(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    answer(async {
        let request = json(&headers, body)?;
        Ok((
            StatusCode::OK,
            api.register_credentials(&caller, &id, request).await?,
        ))
    })
    .await
}

/// The optional body of `POST /v1/connections/{id}/session`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    /// How long the token should stay valid, in seconds.
    min_validity_secs: Option<u32>,
    /// An access token the broker handed out that the provider refused.
    rejected_access_token: Option<String>,
}

async fn session(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    extensions: Extensions,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let deadline = request_deadline(&extensions, api.settings().request_budget);
    answer(async {
        let request: SessionBody = match &body {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => SessionBody::default(),
            _ => json(&headers, body)?,
        };
        let options = SessionOptions {
            min_validity: request
                .min_validity_secs
                .map(|secs| chrono::Duration::seconds(i64::from(secs))),
            rejected_token: request.rejected_access_token.map(AccessToken::new),
            deadline: Some(deadline),
        };
        Ok((
            StatusCode::OK,
            api.session_with(&caller, &id, options).await?,
        ))
    })
    .await
}

/// Time kept back from the invocation's deadline to write the answer.
const ANSWER_MARGIN: Duration = Duration::from_millis(1_500);

/// When this request's answer is due: on Lambda, the invocation's deadline (the function's timeout,
/// 25 s, under the HTTP API's 30-s integration timeout) less [`ANSWER_MARGIN`]; elsewhere the API's
/// configured request budget from now, the same rule locally.
fn request_deadline(extensions: &Extensions, local_budget: Duration) -> Instant {
    let now = Instant::now();
    let left = match extensions.get::<lambda_http::Context>() {
        Some(invocation) => invocation
            .deadline()
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
        None => local_budget,
    };
    now + left.saturating_sub(ANSWER_MARGIN)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TwinfieldSessionQuery {
    /// A company to select on the session (one pooled session per company).
    company: Option<String>,
}

/// The optional body of `POST /v1/connections/{id}/twinfield-session`. The session id goes in the
/// body, not the query string: a URL ends up in access logs.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TwinfieldSessionBody {
    /// A session the broker handed out that Twinfield no longer accepts.
    rejected_session_id: Option<String>,
}

async fn twinfield_session(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    extensions: Extensions,
    Path(id): Path<String>,
    query: Result<Query<TwinfieldSessionQuery>, QueryRejection>,
    body: Body,
) -> Response {
    let deadline = request_deadline(&extensions, api.settings().request_budget);
    answer(async {
        let Query(q) = query.map_err(|e| {
            ApiError::new(
                ProblemKind::InvalidRequest,
                format!("the query string is not valid ({e}): the only parameter is ?company=<company code>"),
            )
        })?;
        let said: TwinfieldSessionBody = match &body {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => TwinfieldSessionBody::default(),
            _ => json(&headers, body)?,
        };
        let request = TwinfieldSessionRequest {
            company: q.company,
            rejected_session: said.rejected_session_id.map(SessionId::new),
            deadline: Some(deadline),
        };
        Ok((StatusCode::OK, api.twinfield_session(&caller, &id, request).await?))
    })
    .await
}

async fn not_found() -> Response {
    problem(ApiError::new(
        ProblemKind::NotFound,
        "no such route: the API lives under /v1 (see the OpenAPI document)",
    ))
}

async fn method_not_allowed() -> Response {
    problem(ApiError::new(
        ProblemKind::MethodNotAllowed,
        "this route does not take that method (see the OpenAPI document)",
    ))
}

/// The caller a request's `Authorization` header authenticates. A handler that takes it runs only for
/// an authenticated caller; any other request is answered with the problem (401, or 503 when the keys
/// cannot be read).
pub(crate) struct Authenticated(pub(crate) Caller);

impl FromRequestParts<Api> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, Response> {
        let authorization = match parts.headers.get(AUTHORIZATION) {
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| problem(ApiError::unauthorized()))?,
            ),
            None => None,
        };
        api.authenticate(authorization)
            .await
            .map(Self)
            .map_err(problem)
    }
}

/// Parses a JSON body declared as such (`Content-Type: application/json`, any parameters; 415
/// otherwise: a body sent as a form or as text is not what the caller meant to send). serde's messages
/// name fields, never values: a wrong-typed value would be quoted in them, so those are replaced by the
/// position only.
pub(crate) fn json<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let declared_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !declared_json && !matches!(&body, Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE) {
        return Err(ApiError::new(
            ProblemKind::UnsupportedMediaType,
            "send the body as JSON with the header Content-Type: application/json",
        ));
    }
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ProblemKind::PayloadTooLarge,
                format!(
                    "the body is larger than {} KiB: send less",
                    MAX_BODY_BYTES / 1024
                ),
            )
        } else {
            ApiError::new(
                ProblemKind::InvalidRequest,
                "the body could not be read: send it again",
            )
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let message = e.to_string();
        let detail = if message.starts_with("unknown field") || message.starts_with("missing field") {
            message
        } else if e.is_syntax() || e.is_eof() {
            format!(
                "the body is not valid JSON (line {}, column {}): send a JSON object",
                e.line(),
                e.column()
            )
        } else {
            format!(
                "a value in the body has the wrong type or form (line {}, column {}): see the OpenAPI document",
                e.line(),
                e.column()
            )
        };
        ApiError::new(ProblemKind::InvalidRequest, detail)
    })
}

pub(crate) async fn answer<T: Serialize>(
    work: impl std::future::Future<Output = Result<(StatusCode, T), ApiError>>,
) -> Response {
    match work.await {
        Ok((status, body)) => {
            let mut response = (status, Json(body)).into_response();
            // Answers may carry tokens or connect links: no cache may keep them.
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(e) => problem(e),
    }
}

/// An RFC 9457 answer.
pub fn problem(error: ApiError) -> Response {
    let status =
        StatusCode::from_u16(error.kind.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&error.problem()).unwrap_or_default();
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = error.retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if error.kind == ProblemKind::Unauthorized {
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_is_the_invocations_on_lambda_and_the_configured_budget_elsewhere() {
        let local = request_deadline(&Extensions::new(), Duration::from_secs(25)) - Instant::now();
        assert!(
            local <= Duration::from_secs(25) - ANSWER_MARGIN,
            "{local:?}"
        );
        assert!(local > Duration::from_secs(23), "{local:?}");

        // An invocation with 10 s left.
        let mut invocation = lambda_http::Context::default();
        let in_ten = SystemTime::now() + Duration::from_secs(10);
        invocation.deadline = in_ten
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut extensions = Extensions::new();
        extensions.insert(invocation);
        let on_lambda = request_deadline(&extensions, Duration::from_secs(25)) - Instant::now();
        assert!(
            on_lambda <= Duration::from_secs(10) - ANSWER_MARGIN,
            "{on_lambda:?}"
        );
        assert!(on_lambda > Duration::from_secs(8), "{on_lambda:?}");
    }
}
