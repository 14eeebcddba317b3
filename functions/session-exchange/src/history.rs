//! `PATCH /v1/connections/{id}` and `GET /v1/connections/{id}/events`, onto the core's connection
//! changes and history.

use crate::{answer, json, Api, Authenticated, Body};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use broker_core::api::{ApiError, ProblemKind};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

pub(crate) async fn update(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    answer(async {
        let changes = json(&headers, body)?;
        Ok((
            StatusCode::OK,
            api.update_connection(&caller, &id, changes).await?,
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

pub(crate) async fn events(
    State(api): State<Api>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, QueryRejection>,
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
            api.connection_events(&caller, &id, q.limit, q.cursor)
                .await?,
        ))
    })
    .await
}
