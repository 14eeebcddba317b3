//! `/v1/webhooks`: the tenant's webhook endpoints and their dead letters, onto the core's operations.

use crate::{answer, json, problem, Api, Authenticated, Body};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Router;
use broker_core::api::{ApiError, ProblemKind};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/webhooks", get(list).post(register))
        .route("/v1/webhooks/dead-letters", get(dead_letters))
        .route("/v1/webhooks/{id}", delete(remove))
}

async fn register(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(async {
        let created = api.register_webhook(&caller, json(&headers, body)?).await?;
        Ok((StatusCode::CREATED, created))
    })
    .await
}

async fn list(State(api): State<Api>, Authenticated(caller): Authenticated) -> Response {
    answer(async { Ok((StatusCode::OK, api.list_webhooks(&caller).await?)) }).await
}

async fn remove(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Response {
    match api.delete_webhook(&caller, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => problem(e),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterQuery {
    webhook: Option<String>,
}

async fn dead_letters(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Response {
    answer(async {
        let Query(q) = query.map_err(|e| {
            ApiError::new(
                ProblemKind::InvalidRequest,
                format!(
                    "the query string is not valid ({e}): use ?webhook=<webhook id> or nothing"
                ),
            )
        })?;
        Ok((
            StatusCode::OK,
            api.dead_letters(&caller, q.webhook.as_deref()).await?,
        ))
    })
    .await
}
