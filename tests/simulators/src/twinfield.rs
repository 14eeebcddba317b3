//! Twinfield's OpenID Connect endpoints on the login host (PROVIDERS.md, "Twinfield").
//!
//! Client authentication is HTTP Basic over the plain `client_id:client_secret` (nothing URL-decoded),
//! or the credentials in the body; refresh tokens are long-lived and, unless
//! `twinfield_rotate_refresh_tokens` is on, reusable: the reply carries the same token again.

use crate::accounts::Provider;
use crate::faults;
use crate::oauth_common::{self as oc, Params};
use crate::state::{Sim, State};
use crate::store::{CodeExchange, CodeRecord, Grant};
use crate::twinfield_soap;
use axum::body::Bytes;
use axum::extract::{Form, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};

const CONNECT: &str = "/twinfield/auth/authentication/connect";

pub(crate) fn routes(sim: &Sim) -> Router<Sim> {
    let keyed = |key: &'static str, route: MethodRouter<Sim>| {
        route.layer(axum::middleware::from_fn_with_state(
            (sim.clone(), key),
            faults::apply,
        ))
    };
    Router::new()
        .route(
            &format!("{CONNECT}/authorize"),
            keyed("twinfield.authorize", get(authorize).post(consent)),
        )
        .route(
            &format!("{CONNECT}/token"),
            keyed("twinfield.token", post(token)),
        )
        .route(
            &format!("{CONNECT}/accesstokenvalidation"),
            keyed("twinfield.accesstokenvalidation", get(validation)),
        )
        .route(
            &format!("{CONNECT}/userinfo"),
            keyed("twinfield.userinfo", get(userinfo).post(userinfo)),
        )
        .route(
            "/twinfield/webservices/session.asmx",
            keyed("twinfield.session", post(twinfield_soap::login_host)),
        )
        .route(
            "/twinfield/clusters/{cluster}/webservices/session.asmx",
            keyed("twinfield.cluster_session", post(twinfield_soap::cluster)),
        )
}

async fn authorize(AxState(sim): AxState<Sim>, Query(params): Query<Params>) -> Response {
    oc::authorize(
        &sim,
        Provider::Twinfield,
        "",
        &format!("{CONNECT}/authorize"),
        &params,
    )
}

async fn consent(AxState(sim): AxState<Sim>, Form(form): Form<Params>) -> Response {
    oc::consent_decision(
        &sim,
        Provider::Twinfield,
        &format!("{CONNECT}/authorize"),
        &form,
    )
}

async fn token(AxState(sim): AxState<Sim>, headers: HeaderMap, body: Bytes) -> Response {
    let form = oc::parse_form(&body);
    // IdentityServer 3 reads Basic first, then the body (its Basic and post-body secret parsers):
    // Twinfield documents Basic, and php-twinfield, which posts the credentials, works too.
    let in_body = || {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        ))
    };
    let Some((client_id, secret)) = oc::basic_credentials_unencoded(&headers).or_else(in_body)
    else {
        return oc::oauth_error(
            400,
            "invalid_client",
            Some("Authenticate the client with HTTP Basic."),
        );
    };
    let mut state = sim.lock();
    let now = sim.clock.now();
    if state
        .client(Provider::Twinfield, "", &client_id)
        .is_none_or(|c| c.secret != secret)
    {
        return oc::oauth_error(400, "invalid_client", None);
    }
    let field = |k: &str| form.get(k).map(String::as_str);
    match field("grant_type") {
        Some("authorization_code") => {
            let ask = CodeExchange::from_form(Provider::Twinfield, "", &client_id, &form);
            let redeemed = state.oauth.redeem_code(&ask, now);
            let code = match redeemed {
                Ok(c) => c,
                Err(e) => return oc::oauth_error(400, "invalid_grant", Some(e.describe())),
            };
            let grant_id = state.oauth.new_grant(&code, now);
            let refresh = oc::has_scope(&code.request.scope, "offline_access").then(|| {
                let expiry =
                    now + Duration::seconds(state.knobs.twinfield_refresh_token_lifetime_secs);
                state.oauth.issue_refresh(grant_id, expiry)
            });
            token_reply(&sim, &mut state, grant_id, refresh, Some(&code), now)
        }
        Some("refresh_token") => {
            let presented = field("refresh_token").unwrap_or_default().to_string();
            let Some((record, grant)) =
                state.oauth.present_refresh(Provider::Twinfield, &presented)
            else {
                return oc::oauth_error(400, "invalid_grant", None);
            };
            let rotate = state.knobs.twinfield_rotate_refresh_tokens;
            let dead = grant.client_id != client_id
                || grant.revoked
                || now >= record.expires_at
                || record.spent_at.is_some();
            if dead {
                return oc::oauth_error(400, "invalid_grant", None);
            }
            let refresh = if rotate {
                state
                    .oauth
                    .refresh
                    .get_mut(&presented)
                    .expect("just presented")
                    .spent_at = Some(now);
                let expiry =
                    now + Duration::seconds(state.knobs.twinfield_refresh_token_lifetime_secs);
                state.oauth.issue_refresh(record.grant_id, expiry)
            } else {
                presented
            };
            token_reply(&sim, &mut state, record.grant_id, Some(refresh), None, now)
        }
        _ => oc::oauth_error(400, "unsupported_grant_type", None),
    }
}

fn token_reply(
    sim: &Sim,
    state: &mut State,
    grant_id: u64,
    refresh: Option<String>,
    code: Option<&CodeRecord>,
    now: DateTime<Utc>,
) -> Response {
    let lifetime = state.knobs.twinfield_access_token_lifetime_secs;
    let access = state
        .oauth
        .issue_access(grant_id, now, Duration::seconds(lifetime));
    let mut body =
        json!({ "access_token": access, "expires_in": lifetime, "token_type": "Bearer" });
    if let Some(r) = refresh {
        body["refresh_token"] = Value::String(r);
    }
    let grant = state.oauth.grants[&grant_id].clone();
    if oc::has_scope(&grant.scope, "openid") {
        body["id_token"] = Value::String(id_token(
            sim,
            state,
            &grant,
            code.and_then(|c| c.request.nonce.clone()),
            now,
        ));
    }
    oc::json(200, body)
}

/// An unsigned stand-in for the id_token: the broker only reads its claims.
fn id_token(
    sim: &Sim,
    state: &State,
    grant: &Grant,
    nonce: Option<String>,
    now: DateTime<Utc>,
) -> String {
    let sub = state
        .accounts
        .twinfield_users
        .get(&grant.user)
        .map(|u| u.sub.clone())
        .unwrap_or_default();
    let claims = json!({
        "iss": format!("{}/auth/authentication", sim.twinfield_login_base()),
        "aud": grant.client_id,
        "sub": sub,
        "nonce": nonce,
        "iat": now.timestamp(),
        "exp": (now + Duration::hours(1)).timestamp(),
        "auth_time": grant.first_issued_at.timestamp(),
    });
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(&json!({"alg": "none", "typ": "JWT"})),
        part(&claims),
        URL_SAFE_NO_PAD.encode("simulator")
    )
}

/// `GET accesstokenvalidation?token=`: the claims, with times as strings as the real one sends.
async fn validation(AxState(sim): AxState<Sim>, Query(params): Query<Params>) -> Response {
    let state = sim.lock();
    let now = sim.clock.now();
    let token = params.get("token").map(String::as_str).unwrap_or_default();
    let Some(claims) = claims(&sim, &state, token, now) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "Message": "The access token is invalid or has expired." })),
        )
            .into_response();
    };
    axum::Json(claims).into_response()
}

fn claims(sim: &Sim, state: &State, token: &str, now: DateTime<Utc>) -> Option<Value> {
    let grant = state
        .oauth
        .live_access(token, now)
        .filter(|g| g.provider == Provider::Twinfield)?;
    let record = state.oauth.access_record(token)?;
    let (user, org) = state.accounts.twinfield_user_org(&grant.user)?;
    let scopes: Vec<&str> = grant.scope.split_whitespace().collect();
    Some(json!({
        "iss": format!("{}/auth/authentication", sim.twinfield_login_base()),
        "aud": format!("{}/auth/authentication/resources", sim.twinfield_login_base()),
        "nbf": record.issued_at.timestamp().to_string(),
        "exp": record.expires_at.timestamp().to_string(),
        "auth_time": grant.first_issued_at.timestamp().to_string(),
        "client_id": grant.client_id,
        "scope": scopes,
        "sub": user.sub,
        // As Twinfield's own example answer ("Setting up OAuth 2.0 - Which cluster do I need for my
        // request?") shows them: `amr` a single string, not the JSON array OIDC Core describes.
        "idp": "idsrv",
        "amr": "external",
        "twf.organisationCode": org.code,
        "twf.organisationId": org.id,
        "twf.organisationUserCode": user.user.code,
        "twf.clusterUrl": twinfield_soap::reported_cluster_url(sim, state, &org.cluster),
    }))
}

async fn userinfo(AxState(sim): AxState<Sim>, headers: HeaderMap) -> Response {
    let state = sim.lock();
    let now = sim.clock.now();
    let info = oc::bearer(&headers).and_then(|t| {
        let grant = state
            .oauth
            .live_access(&t, now)
            .filter(|g| g.provider == Provider::Twinfield)?;
        let (user, org) = state.accounts.twinfield_user_org(&grant.user)?;
        Some(json!({
            "sub": user.sub,
            "name": user.user.name,
            "twf.organisationCode": org.code,
            "twf.organisationId": org.id,
            "twf.organisationUserCode": user.user.code,
        }))
    });
    match info {
        Some(v) => axum::Json(v).into_response(),
        None => oc::unauthorized(),
    }
}
