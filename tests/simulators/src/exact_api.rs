//! Exact Online's REST API, reduced to `current/Me` and one division endpoint: enough to prove a
//! token works, on the right country host, for the right division, with the rate headers clients read.
//!
//! Divisions and division scoping. Sources:
//! - `current/Me`'s `CurrentDivision` is the division the user last opened in Exact Online; `UserID`
//!   identifies the user (PROVIDERS.md; picqer/exact-php-client issue #470 relies on both).
//! - Since 2020 a user consenting to a published app can restrict it to a list of divisions
//!   ("division scoping"), which need not include `CurrentDivision` (picqer/exact-php-client issue
//!   #470; Invantive forum "What is division scoping?", forums.invantive.com/t/3060). Here: the
//!   scope is set per user with `Control::set_exact_division_scope` and fixed on each new grant.
//! - `system/Divisions` lists the divisions accessible to the user who granted the app
//!   (picqer/exact-php-client pull request #195), restricted to the grant's scope (issue #470:
//!   "get the list of available divisions and check whether CurrentDivision is in there").
//! - A call for a division outside the scope is refused: 403 "Forbidden - User division is not
//!   within division scope." (Invantive forum, forums.invantive.com/t/718 and t/3060).
//! - Whether `system/Divisions` checks the division in its own URL is contradictory: Exact support
//!   told a picqer user it is not validated ("could be anything", issue #470), while Invantive
//!   reported listing through an unscoped `CurrentDivision` failing since November 2021
//!   (forums.invantive.com/t/1739). Assumed either way: the knob
//!   `exact_divisions_checks_url_division` (default on: the refusal), tested both ways.
//! - Pages of 60 rows with `__next` (Exact's REST paging). Assumed: `$skiptoken` carries the last
//!   code of the previous page (the real token's form is Exact's business; clients follow `__next`).

use crate::accounts::Provider;
use crate::exact::known_country;
use crate::oauth_common as oc;
use crate::state::{Sim, State};
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, DurationRound, NaiveDate, Utc};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Calls of one division in the current minute and day (60 per minute, 5000 per day by default).
pub(crate) struct ApiWindow {
    minute_start: DateTime<Utc>,
    minute_calls: u32,
    day: NaiveDate,
    day_calls: u32,
}

pub(crate) async fn me(
    AxState(sim): AxState<Sim>,
    Path(country): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut state = sim.lock();
    let now = sim.clock.now();
    let Some(user) = authorised_user(&state, &country, &headers, now) else {
        return oc::unauthorized();
    };
    let Some(entry) = state.accounts.exact_users.get(&user) else {
        return oc::unauthorized();
    };
    let division = entry.user.current_division;
    let body = json!({ "d": { "results": [{
        "__metadata": {
            "uri": format!("{}/api/v1/current/Me(guid'{}')", sim.exact_base(&country), entry.user_id),
            "type": "Exact.Web.Api.System.Me"
        },
        "CurrentDivision": division,
        "UserID": entry.user_id,
        "UserName": entry.user.user_name,
        "FullName": entry.user.full_name,
    }]}});
    rated(&mut state, division, now, body)
}

pub(crate) async fn divisions(
    AxState(sim): AxState<Sim>,
    Path((country, division)): Path<(String, i64)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut state = sim.lock();
    let now = sim.clock.now();
    let Some((user, scope)) = authorised_grant(&state, &country, &headers, now) else {
        return oc::unauthorized();
    };
    let Some(entry) = state.accounts.exact_users.get(&user) else {
        return oc::unauthorized();
    };
    let mut granted: Vec<i64> = entry
        .user
        .divisions
        .iter()
        .copied()
        .filter(|d| scope.as_ref().is_none_or(|s| s.contains(d)))
        .collect();
    granted.sort_unstable();
    granted.dedup();
    if state.knobs.exact_divisions_checks_url_division && !granted.contains(&division) {
        let message = if entry.user.divisions.contains(&division) {
            "Forbidden - User division is not within division scope."
        } else {
            "Forbidden: the user has no access to this division."
        };
        return odata_error(StatusCode::FORBIDDEN, message);
    }
    // Paged by code: `$skiptoken` is the last code of the previous page.
    let after: Option<i64> = query.get("$skiptoken").and_then(|t| t.parse().ok());
    let page_size = state.knobs.exact_page_size.max(1);
    let rest: Vec<i64> = granted
        .into_iter()
        .filter(|d| after.is_none_or(|a| *d > a))
        .collect();
    let page = &rest[..rest.len().min(page_size)];
    let results: Vec<Value> = page
        .iter()
        .map(|d| json!({ "Code": d, "Description": format!("Demo division {d}"), "Country": country.to_uppercase() }))
        .collect();
    let mut d = json!({ "results": results });
    if rest.len() > page.len() {
        let last = page.last().expect("a page before the rest");
        d["__next"] = json!(format!(
            "{}/api/v1/{division}/system/Divisions?$skiptoken={last}",
            sim.exact_base(&country)
        ));
    }
    rated(&mut state, division, now, json!({ "d": d }))
}

/// The token's user, if the token is live and was issued on this country host.
fn authorised_user(
    state: &State,
    country: &str,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Option<String> {
    authorised_grant(state, country, headers, now).map(|(user, _)| user)
}

/// The token's user and its grant's division scope.
fn authorised_grant(
    state: &State,
    country: &str,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Option<(String, Option<Vec<i64>>)> {
    if !known_country(country) {
        return None;
    }
    let token = oc::bearer(headers)?;
    let grant = state.oauth.live_access(&token, now)?;
    (grant.provider == Provider::Exact && grant.location == country)
        .then(|| (grant.user.clone(), grant.division_scope.clone()))
}

fn odata_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({ "error": { "code": "", "message": { "lang": "", "value": message } } })),
    )
        .into_response()
}

/// Counts the call against the division's limits and adds the `X-RateLimit-*` headers.
fn rated(state: &mut State, division: i64, now: DateTime<Utc>, body: Value) -> Response {
    let (minutely_limit, daily_limit) = (
        state.knobs.exact_api_minutely_limit,
        state.knobs.exact_api_daily_limit,
    );
    let minute_start = now.duration_trunc(Duration::minutes(1)).unwrap_or(now);
    let w = state.exact_limits.api.entry(division).or_insert(ApiWindow {
        minute_start,
        minute_calls: 0,
        day: now.date_naive(),
        day_calls: 0,
    });
    if w.minute_start != minute_start {
        (w.minute_start, w.minute_calls) = (minute_start, 0);
    }
    if w.day != now.date_naive() {
        (w.day, w.day_calls) = (now.date_naive(), 0);
    }
    let over = w.minute_calls >= minutely_limit || w.day_calls >= daily_limit;
    if !over {
        w.minute_calls += 1;
        w.day_calls += 1;
    }
    let day_reset = w
        .day
        .succ_opt()
        .expect("date in range")
        .and_hms_opt(0, 0, 0)
        .expect("valid")
        .and_utc();
    let minute_reset = w.minute_start + Duration::minutes(1);
    let mut response = if over {
        odata_error(StatusCode::TOO_MANY_REQUESTS, "API rate limit exceeded.")
    } else {
        axum::Json(body).into_response()
    };
    let h = response.headers_mut();
    let mut put = |name: &'static str, value: i64| {
        h.insert(name, HeaderValue::from(value));
    };
    put("X-RateLimit-Limit", daily_limit as i64);
    put(
        "X-RateLimit-Remaining",
        daily_limit.saturating_sub(w.day_calls) as i64,
    );
    put("X-RateLimit-Reset", day_reset.timestamp_millis());
    put("X-RateLimit-Minutely-Limit", minutely_limit as i64);
    put(
        "X-RateLimit-Minutely-Remaining",
        minutely_limit.saturating_sub(w.minute_calls) as i64,
    );
    put(
        "X-RateLimit-Minutely-Reset",
        minute_reset.timestamp_millis(),
    );
    response
}
