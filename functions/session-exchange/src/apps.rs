//! `/v1/apps`: the tenant's OAuth app registrations, onto the core's app operations.

use crate::{answer, json, problem, Api, Authenticated, Body};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::{HeaderMap, StatusCode};

pub(crate) fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/apps", get(list).post(register))
        .route("/v1/apps/{id}", get(show).patch(update).delete(delete))
}

async fn register(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Response {
    answer(async {
        let registered = api.register_app(&caller, json(&headers, body)?).await?;
        Ok((StatusCode::CREATED, registered))
    })
    .await
}

async fn list(State(api): State<Api>, Authenticated(caller): Authenticated) -> Response {
    answer(async { Ok((StatusCode::OK, api.list_apps(&caller).await?)) }).await
}

async fn show(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Response {
    answer(async { Ok((StatusCode::OK, api.get_app(&caller, &id).await?)) }).await
}

async fn update(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    answer(async {
        let changes = json(&headers, body)?;
        Ok((StatusCode::OK, api.update_app(&caller, &id, changes).await?))
    })
    .await
}

async fn delete(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Response {
    match api.delete_app(&caller, &id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => problem(e),
    }
}
