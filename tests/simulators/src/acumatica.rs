//! Acumatica's identity endpoints and one REST entity, per instance (PROVIDERS.md, "Acumatica").
//!
//! Choices where the real behaviour is undocumented: a token request with Basic client
//! authentication is refused (400 invalid_client) so the broker is held to the documented body
//! credentials; over the API login limit the code exchange answers 400
//! `{"error":"invalid_grant","error_description":"API Login Limit ..."}`; a session is a grant whose
//! refresh token (or, without offline_access, access token) is still alive.
//!
//! The discovery document (`/identity/.well-known/openid-configuration`) and PKCE are assumed, not
//! documented by Acumatica: `acumatica_discovery_document` turns the document off (404) and
//! `acumatica_advertises_pkce` drops `code_challenge_methods_supported`; the broker's tests run with
//! PKCE advertised, not advertised, and without a document. A challenge that is sent is always
//! checked at the token endpoint (RFC 7636 §4.6).
//!
//! With the `openid` scope the code exchange answers with an id_token (OpenID Connect Core §3.1.3.3):
//! `iss` the document's issuer, `aud` the client id, the request's `nonce`. It is unsigned
//! (`alg: none`) and the document names no `jwks_uri` (assumed): the broker then checks the claims
//! only, as §3.1.3.7 allows for a token received directly from the token endpoint.

use crate::accounts::{acumatica_tenant_of, AcumaticaRefreshPolicy, Provider};
use crate::faults;
use crate::oauth_common::{self as oc, Params};
use crate::state::{Sim, State};
use crate::store::{CodeExchange, Grant};
use crate::util::new_guid;
use axum::body::Bytes;
use axum::extract::{Form, Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

pub(crate) fn routes(sim: &Sim) -> Router<Sim> {
    let keyed = |key: &'static str, route: MethodRouter<Sim>| {
        route.layer(axum::middleware::from_fn_with_state(
            (sim.clone(), key),
            faults::apply,
        ))
    };
    Router::new()
        .route(
            "/acumatica/{instance}/identity/connect/authorize",
            keyed("acumatica.authorize", get(authorize).post(consent)),
        )
        .route(
            "/acumatica/{instance}/identity/connect/token",
            keyed("acumatica.token", post(token)),
        )
        .route(
            "/acumatica/{instance}/identity/connect/userinfo",
            keyed("acumatica.userinfo", get(userinfo).post(userinfo)),
        )
        .route(
            "/acumatica/{instance}/identity/.well-known/openid-configuration",
            keyed("acumatica.discovery", get(discovery)),
        )
        .route(
            "/acumatica/{instance}/entity/{endpoint}/{version}/{entity}",
            keyed("acumatica.api", get(entity)),
        )
}

fn auth_path(instance: &str) -> String {
    format!("/acumatica/{instance}/identity/connect/authorize")
}

async fn authorize(
    AxState(sim): AxState<Sim>,
    Path(instance): Path<String>,
    Query(params): Query<Params>,
) -> Response {
    oc::authorize(
        &sim,
        Provider::Acumatica,
        &instance,
        &auth_path(&instance),
        &params,
    )
}

async fn consent(
    AxState(sim): AxState<Sim>,
    Path(instance): Path<String>,
    Form(form): Form<Params>,
) -> Response {
    oc::consent_decision(&sim, Provider::Acumatica, &auth_path(&instance), &form)
}

async fn token(
    AxState(sim): AxState<Sim>,
    Path(instance): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if oc::basic_credentials(&headers).is_some() {
        let d = "Send client_id and client_secret in the request body.";
        return oc::oauth_error(400, "invalid_client", Some(d));
    }
    let form = oc::parse_form(&body);
    let field = |k: &str| form.get(k).map(String::as_str);
    let client_id = field("client_id").unwrap_or_default();
    let mut state = sim.lock();
    let now = sim.clock.now();
    if state
        .client(Provider::Acumatica, &instance, client_id)
        .is_none_or(|c| Some(c.secret.as_str()) != field("client_secret"))
    {
        return oc::oauth_error(400, "invalid_client", None);
    }
    let client = state.accounts.acumatica[&instance].clients[client_id].clone();
    // Set by a code exchange: the id_token answers the authorization request (and its nonce).
    let mut nonce: Option<Option<String>> = None;
    let (grant_id, refresh) = match field("grant_type") {
        Some("authorization_code") => {
            let ask = CodeExchange::from_form(Provider::Acumatica, &instance, client_id, &form);
            let redeemed = state.oauth.redeem_code(&ask, now);
            let code = match redeemed {
                Ok(c) => c,
                Err(e) => return oc::oauth_error(400, "invalid_grant", Some(e.describe())),
            };
            let tenant = acumatica_tenant_of(client_id)
                .unwrap_or_default()
                .to_string();
            let limit = state.accounts.acumatica[&instance]
                .tenants
                .get(&tenant)
                .and_then(|t| t.login_limit);
            if let Some(limit) =
                limit.filter(|l| active_sessions(&state, &instance, &tenant, now) >= *l as usize)
            {
                let d = format!("API Login Limit: tenant {tenant} already has the {limit} concurrent API sessions its licence allows.");
                return oc::oauth_error(400, "invalid_grant", Some(&d));
            }
            let grant_id = state.oauth.new_grant(&code, now);
            let refresh = oc::has_scope(&code.request.scope, "offline_access").then(|| {
                let expiry = refresh_expiry(client.refresh_policy, now, now);
                state.oauth.issue_refresh(grant_id, expiry)
            });
            nonce = Some(code.request.nonce.clone());
            (grant_id, refresh)
        }
        Some("refresh_token") => {
            let presented = field("refresh_token").unwrap_or_default().to_string();
            let Some((record, grant)) =
                state.oauth.present_refresh(Provider::Acumatica, &presented)
            else {
                return oc::oauth_error(400, "invalid_grant", None);
            };
            let dead = grant.revoked
                || grant.client_id != client_id
                || grant.location != instance
                || record.spent_at.is_some()
                || now >= record.expires_at;
            if dead {
                return oc::oauth_error(400, "invalid_grant", None);
            }
            let expiry = match client.refresh_policy {
                AcumaticaRefreshPolicy::Absolute { .. } => record.expires_at,
                sliding => refresh_expiry(sliding, grant.first_issued_at, now),
            };
            let refresh = if client.rotate_refresh_tokens {
                state
                    .oauth
                    .refresh
                    .get_mut(&presented)
                    .expect("just presented")
                    .spent_at = Some(now);
                state.oauth.issue_refresh(record.grant_id, expiry)
            } else {
                state
                    .oauth
                    .refresh
                    .get_mut(&presented)
                    .expect("just presented")
                    .expires_at = expiry;
                presented
            };
            (record.grant_id, Some(refresh))
        }
        _ => return oc::oauth_error(400, "unsupported_grant_type", None),
    };
    let lifetime = state.knobs.acumatica_access_token_lifetime_secs;
    let access = state
        .oauth
        .issue_access(grant_id, now, Duration::seconds(lifetime));
    let expires_in = if state.knobs.acumatica_expires_in_as_string {
        json!(lifetime.to_string())
    } else {
        json!(lifetime)
    };
    let scope = state.oauth.grants[&grant_id].scope.clone();
    let mut body = json!({ "access_token": access, "expires_in": expires_in, "token_type": "Bearer", "scope": scope });
    if let Some(r) = refresh {
        body["refresh_token"] = Value::String(r);
    }
    if let Some(nonce) = nonce.filter(|_| oc::has_scope(&scope, "openid")) {
        let grant = &state.oauth.grants[&grant_id];
        let claims = json!({
            "iss": format!("{}/identity", sim.acumatica_instance_url(&instance)),
            "aud": grant.client_id,
            "sub": grant.user,
            "nonce": nonce,
            "iat": now.timestamp(),
            "exp": (now + Duration::seconds(lifetime)).timestamp(),
        });
        body["id_token"] = Value::String(unsigned_jwt(&claims));
    }
    oc::json(200, body)
}

fn unsigned_jwt(claims: &Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.",
        part(&json!({"alg": "none", "typ": "JWT"})),
        part(claims)
    )
}

/// When a refresh token issued `now` under a grant first issued at `first` dies.
fn refresh_expiry(
    policy: AcumaticaRefreshPolicy,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match policy {
        AcumaticaRefreshPolicy::Absolute { lifetime_secs } => {
            first + Duration::seconds(lifetime_secs)
        }
        AcumaticaRefreshPolicy::Sliding {
            sliding_secs,
            absolute_cap_secs,
        } => {
            let slid = now + Duration::seconds(sliding_secs);
            absolute_cap_secs.map_or(slid, |cap| slid.min(first + Duration::seconds(cap)))
        }
    }
}

/// Grants of the tenant that still hold a session: one per grant, reused across refreshes.
pub(crate) fn active_sessions(
    state: &State,
    instance: &str,
    tenant: &str,
    now: DateTime<Utc>,
) -> usize {
    let o = &state.oauth;
    let alive = |id: u64| {
        o.refresh
            .values()
            .any(|r| r.grant_id == id && r.spent_at.is_none() && now < r.expires_at)
            || o.access
                .values()
                .any(|a| a.grant_id == id && now < a.expires_at)
    };
    o.grants
        .iter()
        .filter(|(_, g)| {
            g.provider == Provider::Acumatica
                && g.location == instance
                && !g.revoked
                && acumatica_tenant_of(&g.client_id) == Some(tenant)
        })
        .filter(|(id, _)| alive(**id))
        .count()
}

fn live_grant(
    state: &State,
    instance: &str,
    headers: &HeaderMap,
    now: DateTime<Utc>,
) -> Option<Grant> {
    let token = oc::bearer(headers)?;
    let grant = state.oauth.live_access(&token, now)?;
    (grant.provider == Provider::Acumatica && grant.location == instance).then(|| grant.clone())
}

async fn userinfo(
    AxState(sim): AxState<Sim>,
    Path(instance): Path<String>,
    headers: HeaderMap,
) -> Response {
    let state = sim.lock();
    let Some(grant) = live_grant(&state, &instance, &headers, sim.clock.now()) else {
        return oc::unauthorized();
    };
    let tenant = acumatica_tenant_of(&grant.client_id).unwrap_or_default();
    let sub = state.accounts.acumatica[&instance]
        .tenants
        .get(tenant)
        .and_then(|t| t.users.get(&grant.user))
        .cloned();
    axum::Json(json!({ "sub": sub.unwrap_or_default(), "name": grant.user })).into_response()
}

async fn discovery(AxState(sim): AxState<Sim>, Path(instance): Path<String>) -> Response {
    let (known, knobs) = {
        let state = sim.lock();
        (
            state.accounts.acumatica.contains_key(&instance),
            state.knobs.clone(),
        )
    };
    if !known || !knobs.acumatica_discovery_document {
        return StatusCode::NOT_FOUND.into_response();
    }
    let identity = format!("{}/identity", sim.acumatica_instance_url(&instance));
    let mut doc = json!({
        "issuer": identity,
        "authorization_endpoint": format!("{identity}/connect/authorize"),
        "token_endpoint": format!("{identity}/connect/token"),
        "userinfo_endpoint": format!("{identity}/connect/userinfo"),
        "scopes_supported": ["openid", "profile", "email", "api", "offline_access", "api:concurrent_access"],
        "response_types_supported": ["code", "token", "id_token", "id_token token", "code id_token", "code token", "code id_token token"],
        "grant_types_supported": ["authorization_code", "client_credentials", "password", "refresh_token", "implicit", "hybrid"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
    });
    if knobs.acumatica_advertises_pkce {
        doc["code_challenge_methods_supported"] = json!(["S256"]);
    }
    axum::Json(doc).into_response()
}

/// A sample entity: only reachable with a live token of this instance carrying the `api` scope,
/// and it answers with the token's tenant's data only.
async fn entity(
    AxState(sim): AxState<Sim>,
    Path((instance, _endpoint, _version, entity)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let state = sim.lock();
    let Some(grant) = live_grant(&state, &instance, &headers, sim.clock.now()) else {
        return oc::unauthorized();
    };
    if !oc::has_scope(&grant.scope, "api") {
        let message = json!({ "message": "The access token does not carry the api scope." });
        return (StatusCode::FORBIDDEN, axum::Json(message)).into_response();
    }
    let tenant = acumatica_tenant_of(&grant.client_id).unwrap_or_default();
    let rows: Vec<Value> = (1..=2)
        .map(|i| {
            json!({
                "id": new_guid(),
                "rowNumber": i,
                "note": { "value": format!("{entity} of tenant {tenant}") },
                "CustomerID": { "value": format!("C{i:06}") },
                "CustomerName": { "value": format!("{tenant} customer {i}") },
                "custom": {},
            })
        })
        .collect();
    axum::Json(rows).into_response()
}
