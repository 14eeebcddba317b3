//! `/_sim/...`: the control surface over HTTP as JSON, for a broker or sandbox in another process.
//! Every route maps onto one `Control` call; the route list is in the crate documentation.

use crate::accounts::{
    AcumaticaClientRegistration, AcumaticaInstance, ClientRegistration, ExactUser,
    LegacyCredentials, LogonBehaviour, Provider, TwinfieldOrganisation, TwinfieldUser,
};
use crate::config::Knobs;
use crate::control::{Control, MintRequest};
use crate::error::SimulatorError;
use crate::faults::FaultRule;
use crate::state::{ConsentOverride, Sim};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

pub(crate) fn routes() -> Router<Sim> {
    Router::new()
        .route(
            "/_sim/health",
            get(|| async { Json(json!({ "ok": true })) }),
        )
        .route("/_sim/urls", get(urls))
        .route("/_sim/clock", get(clock))
        .route("/_sim/clock/advance", post(advance))
        .route("/_sim/clock/set", post(set_clock))
        .route("/_sim/knobs", get(knobs).put(put_knobs))
        .route("/_sim/consent/auto", post(auto_consent))
        .route("/_sim/consent/next", post(consent_next))
        .route("/_sim/twinfield/clients", post(twinfield_client))
        .route("/_sim/twinfield/organisations", post(twinfield_org))
        .route("/_sim/twinfield/users", post(twinfield_user))
        .route("/_sim/twinfield/logon-behaviour", post(twinfield_behaviour))
        .route("/_sim/twinfield/legacy-credentials", post(twinfield_legacy))
        .route("/_sim/exact/clients", post(exact_client))
        .route("/_sim/exact/users", post(exact_user))
        .route("/_sim/exact/division-scope", post(exact_division_scope))
        .route("/_sim/acumatica/instances", post(acumatica_instance))
        .route("/_sim/acumatica/{instance}/clients", post(acumatica_client))
        .route("/_sim/acumatica/{instance}/users", post(acumatica_user))
        .route(
            "/_sim/acumatica/{instance}/login-limit",
            post(acumatica_limit),
        )
        .route(
            "/_sim/faults",
            get(faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/latency", put(latency))
        .route("/_sim/inspect/presentations", get(presentations))
        .route("/_sim/inspect/calls", get(calls))
        .route("/_sim/inspect/access-tokens", get(access_tokens))
        .route("/_sim/inspect/sessions", get(sessions))
        .route("/_sim/grants/revoke", post(revoke))
        .route("/_sim/mint", post(mint))
}

fn control(sim: Sim) -> Control {
    Control { sim }
}

fn done(result: Result<(), SimulatorError>) -> Response {
    match result {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

async fn urls(State(sim): State<Sim>) -> Json<Value> {
    let c = control(sim);
    Json(json!({
        "base": c.base_url(),
        "twinfield_login": c.twinfield_login_base(),
        "twinfield_cluster_example": c.twinfield_cluster_url("accounting"),
        "exact": crate::accounts::EXACT_COUNTRIES.iter().map(|k| (k.to_string(), json!(c.exact_base(k)))).collect::<serde_json::Map<_, _>>(),
        "acumatica_example": c.acumatica_instance_url("demo"),
    }))
}

async fn clock(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({ "now": sim.clock.now() }))
}

#[derive(Deserialize)]
struct Advance {
    seconds: i64,
}

async fn advance(State(sim): State<Sim>, Json(by): Json<Advance>) -> Json<Value> {
    sim.clock.advance(Duration::seconds(by.seconds));
    Json(json!({ "now": sim.clock.now() }))
}

#[derive(Deserialize)]
struct SetClock {
    now: DateTime<Utc>,
}

async fn set_clock(State(sim): State<Sim>, Json(to): Json<SetClock>) -> Json<Value> {
    sim.clock.set(to.now);
    Json(json!({ "now": sim.clock.now() }))
}

async fn knobs(State(sim): State<Sim>) -> Json<Knobs> {
    Json(control(sim).knobs())
}

/// Merges the given fields into the current knobs, so a caller can change one at a time.
async fn put_knobs(State(sim): State<Sim>, Json(patch): Json<Value>) -> Response {
    let c = control(sim);
    let mut merged = serde_json::to_value(c.knobs()).expect("knobs serialize");
    let (Some(target), Value::Object(fields)) = (merged.as_object_mut(), patch) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "send a JSON object of knob fields" })),
        )
            .into_response();
    };
    target.extend(fields);
    match serde_json::from_value::<Knobs>(merged) {
        Ok(knobs) => {
            c.update_knobs(|k| *k = knobs.clone());
            Json(knobs).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct Auto {
    auto: bool,
}

async fn auto_consent(State(sim): State<Sim>, Json(a): Json<Auto>) -> Response {
    control(sim).set_auto_consent(a.auto);
    done(Ok(()))
}

async fn consent_next(State(sim): State<Sim>, Json(o): Json<ConsentOverride>) -> Response {
    control(sim).push_consent_override(o);
    done(Ok(()))
}

async fn twinfield_client(State(sim): State<Sim>, Json(c): Json<ClientRegistration>) -> Response {
    control(sim).register_twinfield_client(c);
    done(Ok(()))
}

async fn twinfield_org(State(sim): State<Sim>, Json(o): Json<TwinfieldOrganisation>) -> Response {
    control(sim).add_twinfield_organisation(o);
    done(Ok(()))
}

async fn twinfield_user(State(sim): State<Sim>, Json(u): Json<TwinfieldUser>) -> Response {
    done(control(sim).add_twinfield_user(u))
}

#[derive(Deserialize)]
struct BehaviourRequest {
    organisation: String,
    user: Option<String>,
    /// `null` clears the setting.
    behaviour: Option<LogonBehaviour>,
}

async fn twinfield_behaviour(State(sim): State<Sim>, Json(b): Json<BehaviourRequest>) -> Response {
    done(control(sim).set_twinfield_logon_behaviour(
        &b.organisation,
        b.user.as_deref(),
        b.behaviour,
    ))
}

async fn twinfield_legacy(State(sim): State<Sim>, Json(c): Json<LegacyCredentials>) -> Response {
    done(control(sim).add_twinfield_legacy_credentials(c))
}

async fn exact_client(State(sim): State<Sim>, Json(c): Json<ClientRegistration>) -> Response {
    control(sim).register_exact_client(c);
    done(Ok(()))
}

async fn exact_user(State(sim): State<Sim>, Json(u): Json<ExactUser>) -> Response {
    control(sim).add_exact_user(u);
    done(Ok(()))
}

#[derive(serde::Deserialize)]
struct DivisionScope {
    user: String,
    divisions: Option<Vec<i64>>,
}

async fn exact_division_scope(State(sim): State<Sim>, Json(s): Json<DivisionScope>) -> Response {
    control(sim).set_exact_division_scope(&s.user, s.divisions);
    done(Ok(()))
}

async fn acumatica_instance(State(sim): State<Sim>, Json(i): Json<AcumaticaInstance>) -> Response {
    control(sim).add_acumatica_instance(i);
    done(Ok(()))
}

async fn acumatica_client(
    State(sim): State<Sim>,
    Path(instance): Path<String>,
    Json(c): Json<AcumaticaClientRegistration>,
) -> Response {
    done(control(sim).register_acumatica_client(&instance, c))
}

#[derive(Deserialize)]
struct TenantUser {
    tenant: String,
    user: String,
}

async fn acumatica_user(
    State(sim): State<Sim>,
    Path(instance): Path<String>,
    Json(u): Json<TenantUser>,
) -> Response {
    done(control(sim).add_acumatica_user(&instance, &u.tenant, &u.user))
}

#[derive(Deserialize)]
struct Limit {
    tenant: String,
    limit: Option<u32>,
}

async fn acumatica_limit(
    State(sim): State<Sim>,
    Path(instance): Path<String>,
    Json(l): Json<Limit>,
) -> Response {
    done(control(sim).set_acumatica_login_limit(&instance, &l.tenant, l.limit))
}

async fn faults(State(sim): State<Sim>) -> Json<Vec<FaultRule>> {
    Json(control(sim).faults())
}

async fn add_fault(State(sim): State<Sim>, Json(rule): Json<FaultRule>) -> Response {
    control(sim).inject_fault(rule);
    done(Ok(()))
}

async fn clear_faults(State(sim): State<Sim>) -> Response {
    control(sim).clear_faults();
    done(Ok(()))
}

#[derive(Deserialize)]
struct Latency {
    /// A route key or pattern; `null` sets the global latency.
    route: Option<String>,
    ms: u64,
}

async fn latency(State(sim): State<Sim>, Json(l): Json<Latency>) -> Response {
    let c = control(sim);
    let d = std::time::Duration::from_millis(l.ms);
    match l.route {
        Some(route) => c.set_route_latency(&route, d),
        None => c.set_global_latency(d),
    }
    done(Ok(()))
}

async fn presentations(State(sim): State<Sim>) -> Json<Value> {
    let c = control(sim);
    let map = c.refresh_token_presentations();
    let max = map.values().copied().max().unwrap_or(0);
    Json(json!({ "presentations": map, "max": max }))
}

async fn calls(State(sim): State<Sim>) -> Json<Value> {
    Json(json!(control(sim).route_calls()))
}

async fn access_tokens(State(sim): State<Sim>) -> Json<Value> {
    Json(json!(control(sim).valid_access_tokens()))
}

async fn sessions(State(sim): State<Sim>) -> Json<Value> {
    let c = control(sim.clone());
    let tenants: Vec<(String, String)> = {
        let state = sim.lock();
        let mut list: Vec<_> = state
            .accounts
            .acumatica
            .iter()
            .flat_map(|(i, e)| e.tenants.keys().map(move |t| (i.clone(), t.clone())))
            .collect();
        list.sort();
        list
    };
    let acumatica: Vec<Value> = tenants
        .into_iter()
        .map(|(i, t)| json!({ "instance": i, "tenant": t, "active": c.acumatica_active_sessions(&i, &t) }))
        .collect();
    Json(json!({ "twinfield": c.twinfield_session_count(), "acumatica": acumatica }))
}

#[derive(Deserialize)]
struct Revoke {
    provider: Provider,
    user: String,
    client_id: Option<String>,
}

async fn revoke(State(sim): State<Sim>, Json(r): Json<Revoke>) -> Json<Value> {
    Json(
        json!({ "revoked": control(sim).revoke_grant(r.provider, &r.user, r.client_id.as_deref()) }),
    )
}

async fn mint(State(sim): State<Sim>, Json(r): Json<MintRequest>) -> Response {
    match control(sim).mint_tokens(r) {
        Ok(t) => Json(t).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}
