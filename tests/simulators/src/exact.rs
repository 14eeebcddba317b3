//! Exact Online's OAuth endpoints, one host per country (PROVIDERS.md, "Exact Online").
//!
//! Sources: single-use refresh tokens and 401 `{"error":"unauthorized_client","error_description":
//! "Old refresh token used."}` (picqer/exact-php-client issues #300, #311 quoting Exact's 2018 notice,
//! #549, #640); the expired refresh token's 400 `invalid_request` "The refresh token expired at ..."
//! (websmurf/laravel-exact-online #23); the 570-second rule, 200 token calls per app per user per day
//! and "more than 10 errors per hour blocks the app for an hour" (Exact's published rules, see
//! PROVIDERS.md).
//!
//! Choices where the real behaviour is undocumented (all documented in lib.rs too):
//! - assumed: an app blocked after too many errors gets HTTP 429 with `Retry-After` and
//!   `{"error":"too_many_errors",...}`; the daily cap gets 429 `{"error":"rate_limit_exceeded",...}`.
//!   Neither counts as an error itself, so a block ends an hour after it started.
//! - assumed: limits are counted per app and user; a request whose user cannot be told (unknown code
//!   or token) is counted under the user "".
//! - assumed: the refusal of a refresh within 570 s. Its status and body are knobs
//!   (`exact_early_refresh_status`, `exact_early_refresh_body`); the broker's tests run it as a 400
//!   `invalid_request` with a description and as a bare 401 without an `error` field.
//! - A spent refresh token is refused at once, however soon it comes back: no public source says
//!   Exact honours one again (reports of a grace period are unconfirmed), so the simulator does not.

use crate::accounts::{Provider, EXACT_COUNTRIES};
use crate::exact_api;
use crate::faults;
use crate::oauth_common::{self as oc, Params};
use crate::state::{Sim, State};
use crate::store::{CodeError, CodeExchange};
use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;

type AppUser = (String, String);

/// Token endpoint limits per app and user, and API call windows per division.
#[derive(Default)]
pub(crate) struct ExactLimits {
    daily_calls: HashMap<(AppUser, NaiveDate), u32>,
    errors: HashMap<AppUser, Vec<DateTime<Utc>>>,
    blocked_until: HashMap<AppUser, DateTime<Utc>>,
    pub api: HashMap<i64, exact_api::ApiWindow>,
}

pub(crate) fn routes(sim: &Sim) -> Router<Sim> {
    let keyed = |key: &'static str, route: MethodRouter<Sim>| {
        route.layer(axum::middleware::from_fn_with_state(
            (sim.clone(), key),
            faults::apply,
        ))
    };
    Router::new()
        .route(
            "/exact/{country}/api/oauth2/auth",
            keyed("exact.authorize", get(authorize).post(consent)),
        )
        .route(
            "/exact/{country}/api/oauth2/token",
            keyed("exact.token", post(token)),
        )
        .route(
            "/exact/{country}/api/v1/current/Me",
            keyed("exact.me", get(exact_api::me)),
        )
        .route(
            "/exact/{country}/api/v1/{division}/system/Divisions",
            keyed("exact.api", get(exact_api::divisions)),
        )
}

pub(crate) fn known_country(country: &str) -> bool {
    EXACT_COUNTRIES.contains(&country)
}

fn auth_path(country: &str) -> String {
    format!("/exact/{country}/api/oauth2/auth")
}

async fn authorize(
    AxState(sim): AxState<Sim>,
    Path(country): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    if !known_country(&country) {
        return StatusCode::NOT_FOUND.into_response();
    }
    oc::authorize(
        &sim,
        Provider::Exact,
        &country,
        &auth_path(&country),
        &params,
    )
}

async fn consent(
    AxState(sim): AxState<Sim>,
    Path(country): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    oc::consent_decision(&sim, Provider::Exact, &auth_path(&country), &form)
}

/// Fixes a new grant's division scope as the user's consent set it (see `exact_api`).
pub(crate) fn scope_grant(state: &mut State, grant_id: u64) {
    let scope = state
        .oauth
        .grants
        .get(&grant_id)
        .filter(|g| g.provider == Provider::Exact)
        .and_then(|g| state.accounts.exact_division_scopes.get(&g.user))
        .cloned();
    if let Some(grant) = state.oauth.grants.get_mut(&grant_id) {
        grant.division_scope = scope;
    }
}

fn chain_error() -> Response {
    let d = "Token is not allowed, because of invalid or empty chainId";
    oc::oauth_error(400, "invalid_grant", Some(d))
}

/// .NET-style timestamps, as in "The refresh token expired at 6/3/2024 10:00:00 AM ...".
fn dotnet_time(t: DateTime<Utc>) -> String {
    t.format("%-m/%-d/%Y %-I:%M:%S %p").to_string()
}

async fn token(
    AxState(sim): AxState<Sim>,
    Path(country): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !known_country(&country) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let form = oc::parse_form(&body);
    let mut state = sim.lock();
    let now = sim.clock.now();
    let app_user = (
        form.get("client_id").cloned().unwrap_or_default(),
        user_of(&state, &form),
    );

    if let Some(until) = state
        .exact_limits
        .blocked_until
        .get(&app_user)
        .copied()
        .filter(|u| *u > now)
    {
        let d = format!(
            "The app is blocked for this user until {} because it made more than {} failed token requests within an hour.",
            dotnet_time(until),
            state.knobs.exact_error_block_threshold
        );
        return too_many(
            until - now,
            json!({ "error": "too_many_errors", "error_description": d }),
        );
    }
    let day = now.date_naive();
    let calls = state
        .exact_limits
        .daily_calls
        .get(&(app_user.clone(), day))
        .copied()
        .unwrap_or(0);
    if calls >= state.knobs.exact_daily_token_cap {
        let midnight = day
            .succ_opt()
            .expect("date in range")
            .and_hms_opt(0, 0, 0)
            .expect("valid time")
            .and_utc();
        let d = format!(
            "Too many token requests: at most {} per app per user per day. Try again after {}.",
            state.knobs.exact_daily_token_cap,
            dotnet_time(midnight)
        );
        let mut body = json!({ "error": "rate_limit_exceeded", "error_description": d });
        // PROVIDERS.md: a refused refresh may still carry a new pair, which the client must keep.
        if state.knobs.exact_rate_limited_refresh_issues_tokens
            && form.get("grant_type").map(String::as_str) == Some("refresh_token")
        {
            if let Ok(Value::Object(pair)) = process(&mut state, &country, &headers, &form, now) {
                body.as_object_mut().expect("object").extend(pair);
            }
        }
        return too_many(midnight - now, body);
    }
    *state
        .exact_limits
        .daily_calls
        .entry((app_user.clone(), day))
        .or_default() += 1;

    let response = match process(&mut state, &country, &headers, &form, now) {
        Ok(body) => oc::json(200, body),
        Err(response) => response,
    };
    if response.status().is_client_error() {
        record_error(&mut state, app_user, now);
    }
    response
}

fn too_many(retry_after: Duration, body: Value) -> Response {
    let mut response = oc::json(429, body);
    let secs = retry_after.num_seconds().max(1) as u64;
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

fn record_error(state: &mut State, app_user: AppUser, now: DateTime<Utc>) {
    let errors = state
        .exact_limits
        .errors
        .entry(app_user.clone())
        .or_default();
    errors.retain(|t| now - *t < Duration::hours(1));
    errors.push(now);
    if errors.len() > state.knobs.exact_error_block_threshold as usize {
        errors.clear();
        let until = now + Duration::seconds(state.knobs.exact_error_block_secs);
        state.exact_limits.blocked_until.insert(app_user, until);
    }
}

/// The user a token request is about, for the per-app-per-user limits.
fn user_of(state: &State, form: &Params) -> String {
    let o = &state.oauth;
    let user = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => form
            .get("code")
            .and_then(|c| o.codes.get(c))
            .map(|c| c.user.clone()),
        Some("refresh_token") => form
            .get("refresh_token")
            .and_then(|t| o.refresh.get(t))
            .and_then(|r| o.grants.get(&r.grant_id))
            .map(|g| g.user.clone()),
        _ => None,
    };
    user.unwrap_or_default()
}

/// The token endpoint's rules; `Ok` is the 200 body.
#[allow(clippy::result_large_err)] // the error is the finished answer, built once per request
fn process(
    state: &mut State,
    country: &str,
    headers: &HeaderMap,
    form: &Params,
    now: DateTime<Utc>,
) -> Result<Value, Response> {
    if oc::basic_credentials(headers).is_some() {
        let d =
            "Send client_id and client_secret in the request body, not in an Authorization header.";
        return Err(oc::oauth_error(401, "invalid_client", Some(d)));
    }
    let field = |k: &str| form.get(k).map(String::as_str);
    let client_id = field("client_id").unwrap_or_default();
    if state
        .client(Provider::Exact, country, client_id)
        .is_none_or(|c| Some(c.secret.as_str()) != field("client_secret"))
    {
        return Err(oc::oauth_error(401, "invalid_client", None));
    }
    let k = state.knobs.clone();
    let grant_id = match field("grant_type") {
        Some("authorization_code") => {
            let ask = CodeExchange::from_form(Provider::Exact, country, client_id, form);
            let redeemed = state.oauth.redeem_code(&ask, now);
            match redeemed {
                Ok(code) => {
                    let grant_id = state.oauth.new_grant(&code, now);
                    scope_grant(state, grant_id);
                    grant_id
                }
                Err(e @ (CodeError::VerifierMissing | CodeError::VerifierMismatch)) => {
                    return Err(oc::oauth_error(400, "invalid_grant", Some(e.describe())))
                }
                Err(_) => return Err(chain_error()),
            }
        }
        Some("refresh_token") => {
            let presented = field("refresh_token").unwrap_or_default();
            let Some((record, grant)) = state.oauth.present_refresh(Provider::Exact, presented)
            else {
                return Err(chain_error());
            };
            if grant.revoked || grant.client_id != client_id || grant.location != country {
                return Err(chain_error());
            }
            if record.spent_at.is_some() {
                return Err(oc::oauth_error(
                    401,
                    "unauthorized_client",
                    Some("Old refresh token used."),
                ));
            }
            if now >= record.expires_at {
                let d = format!(
                    "The refresh token expired at {} and it is now {}.",
                    dotnet_time(record.expires_at),
                    dotnet_time(now)
                );
                return Err(oc::oauth_error(400, "invalid_request", Some(&d)));
            }
            if now < grant.last_issued_at + Duration::seconds(k.exact_min_refresh_interval_secs) {
                return Err(oc::json(
                    k.exact_early_refresh_status,
                    k.exact_early_refresh_body.clone(),
                ));
            }
            // Single use: this token and any sibling issued on the chain are spent now.
            for r in state
                .oauth
                .refresh
                .values_mut()
                .filter(|r| r.grant_id == record.grant_id)
            {
                r.spent_at.get_or_insert(now);
            }
            record.grant_id
        }
        _ => return Err(oc::oauth_error(400, "unsupported_grant_type", None)),
    };
    let access = state.oauth.issue_access(
        grant_id,
        now,
        Duration::seconds(k.exact_access_token_lifetime_secs),
    );
    let refresh = state.oauth.issue_refresh(
        grant_id,
        now + Duration::seconds(k.exact_refresh_token_lifetime_secs),
    );
    Ok(json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": k.exact_access_token_lifetime_secs.to_string(),
        "refresh_token": refresh,
    }))
}
