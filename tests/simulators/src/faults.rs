//! Fault injection, applied per route key by a middleware on every provider route.
//!
//! Route keys are `<provider>.<endpoint>` (see `ROUTE_KEYS`); a rule's `route` may also be `*` or
//! `<provider>.*`. Rules are tried in the order they were added and the first one that fires
//! decides; latency rules add up and let the request go on.

use crate::state::Sim;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// Every route key the simulator serves.
pub const ROUTE_KEYS: [&str; 15] = [
    "twinfield.authorize",
    "twinfield.token",
    "twinfield.accesstokenvalidation",
    "twinfield.userinfo",
    "twinfield.session",
    "twinfield.cluster_session",
    "exact.authorize",
    "exact.token",
    "exact.me",
    "exact.api",
    "acumatica.authorize",
    "acumatica.token",
    "acumatica.userinfo",
    "acumatica.discovery",
    "acumatica.api",
];

/// The body Exact's gateway sent when it lost a freshly issued token pair (PROVIDERS.md).
pub const EXTRACT_VARIABLES_FAULT: &str = r#"{"fault":{"faultstring":"Failed to execute the ExtractVariables: ExtractAccessToken","detail":{"errorcode":"steps.extractvariables.ExecutionFailed"}}}"#;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    pub route: String,
    pub action: FaultAction,
    #[serde(default)]
    pub trigger: FaultTrigger,
}

impl FaultRule {
    /// Fires on the next `count` matching calls, then disappears.
    pub fn next(route: &str, count: u32, action: FaultAction) -> Self {
        Self {
            route: route.into(),
            action,
            trigger: FaultTrigger::Next(count),
        }
    }

    pub fn always(route: &str, action: FaultAction) -> Self {
        Self {
            route: route.into(),
            action,
            trigger: FaultTrigger::Always,
        }
    }

    /// Fires with probability `p` per call, drawn from the RNG seeded by `Knobs::fault_seed`.
    pub fn with_probability(route: &str, p: f64, action: FaultAction) -> Self {
        Self {
            route: route.into(),
            action,
            trigger: FaultTrigger::Probability(p),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this status and body without reaching the provider.
    Status {
        status: u16,
        body: String,
        content_type: Option<String>,
    },
    /// Like `Status`, with the body sent as UTF-16LE behind a byte-order mark (an XML answer in the
    /// other encoding XML readers must take).
    StatusUtf16 {
        status: u16,
        body: String,
        content_type: Option<String>,
    },
    /// 429 with `Retry-After`, without reaching the provider.
    TooManyRequests {
        retry_after_secs: u64,
        body: Option<String>,
    },
    /// Hold the request for `Knobs::hang_secs`, then drop the connection.
    Hang,
    /// Close the socket without an answer.
    Drop,
    /// Let the provider do its work (a token pair is issued and the old refresh token spent), then
    /// answer 500 with `EXTRACT_VARIABLES_FAULT`: the known loss case.
    IssueThen500,
    /// Let the provider do its work, then close the socket without an answer.
    IssueThenDrop,
    /// Add this much latency and go on.
    Latency { ms: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FaultTrigger {
    #[default]
    Always,
    Next(u32),
    Probability(f64),
}

pub(crate) struct FaultState {
    rules: Vec<FaultRule>,
    route_latency: HashMap<String, u64>,
    rng: StdRng,
}

impl FaultState {
    pub fn new(seed: u64) -> Self {
        Self {
            rules: Vec::new(),
            route_latency: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    pub fn add(&mut self, rule: FaultRule) {
        self.rules.push(rule);
    }

    pub fn clear(&mut self, reseed: u64) {
        *self = Self::new(reseed);
    }

    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.clone()
    }

    pub fn set_route_latency(&mut self, route: &str, ms: u64) {
        self.route_latency.insert(route.to_string(), ms);
    }

    /// Decides what happens to one call of `key`: added latency and at most one fault.
    fn decide(&mut self, key: &str) -> (u64, Option<FaultAction>) {
        let mut latency: u64 = self
            .route_latency
            .iter()
            .filter(|(r, _)| matches(r, key))
            .map(|(_, ms)| ms)
            .sum();
        let mut chosen = None;
        let mut index = 0;
        while index < self.rules.len() {
            let rule = &mut self.rules[index];
            let fires = matches(&rule.route, key)
                && match &mut rule.trigger {
                    FaultTrigger::Always => true,
                    FaultTrigger::Next(n) => {
                        let fire = *n > 0;
                        *n = n.saturating_sub(1);
                        fire
                    }
                    FaultTrigger::Probability(p) => self.rng.random::<f64>() < *p,
                };
            let spent = rule.trigger == FaultTrigger::Next(0);
            let action = rule.action.clone();
            if spent {
                self.rules.remove(index);
            } else {
                index += 1;
            }
            if fires {
                if let FaultAction::Latency { ms } = action {
                    latency += ms;
                } else {
                    chosen = Some(action);
                    break;
                }
            }
        }
        (latency, chosen)
    }
}

fn matches(pattern: &str, key: &str) -> bool {
    pattern == "*"
        || pattern == key
        || pattern
            .strip_suffix('*')
            .is_some_and(|prefix| prefix.ends_with('.') && key.starts_with(prefix))
}

/// Marks a response whose connection the server must close without writing it.
#[derive(Clone, Copy)]
pub(crate) struct DropConnection;

pub(crate) fn drop_connection() -> Response {
    let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    response.extensions_mut().insert(DropConnection);
    response
}

/// The middleware on every provider route; `key` is the route key.
pub(crate) async fn apply(
    State((sim, key)): State<(Sim, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    *sim.calls
        .lock()
        .expect("call counter lock poisoned")
        .entry(key.to_string())
        .or_default() += 1;
    let (global_ms, hang_secs) = {
        let state = sim.lock();
        (state.knobs.global_latency_ms, state.knobs.hang_secs)
    };
    let (route_ms, action) = sim.faults.lock().expect("fault lock poisoned").decide(key);
    let latency = global_ms + route_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let Some(action) = action else {
        return next.run(request).await;
    };
    tracing::debug!(route = key, ?action, "injecting fault");
    match action {
        FaultAction::Status {
            status,
            body,
            content_type,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let content_type =
                content_type.unwrap_or_else(|| guess_content_type(&body).to_string());
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        FaultAction::StatusUtf16 {
            status,
            body,
            content_type,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let content_type =
                content_type.unwrap_or_else(|| "text/xml; charset=utf-16".to_string());
            let mut bytes = vec![0xFF, 0xFE];
            bytes.extend(body.encode_utf16().flat_map(u16::to_le_bytes));
            (status, [(header::CONTENT_TYPE, content_type)], bytes).into_response()
        }
        FaultAction::TooManyRequests {
            retry_after_secs,
            body,
        } => {
            let mut response =
                (StatusCode::TOO_MANY_REQUESTS, body.unwrap_or_default()).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            response
        }
        FaultAction::Hang => {
            tokio::time::sleep(Duration::from_secs(hang_secs)).await;
            drop_connection()
        }
        FaultAction::Drop => drop_connection(),
        FaultAction::IssueThen500 => {
            let _lost = next.run(request).await;
            let json = [(header::CONTENT_TYPE, "application/json")];
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                json,
                EXTRACT_VARIABLES_FAULT,
            )
                .into_response()
        }
        FaultAction::IssueThenDrop => {
            let _lost = next.run(request).await;
            drop_connection()
        }
        FaultAction::Latency { .. } => unreachable!("latency never ends the request"),
    }
}

fn guess_content_type(body: &str) -> &'static str {
    match body.trim_start().chars().next() {
        Some('{') | Some('[') => "application/json",
        Some('<') => "text/xml; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_rules_fire_count_times_then_vanish() {
        let mut f = FaultState::new(1);
        f.add(FaultRule::next("exact.token", 2, FaultAction::Drop));
        assert_eq!(f.decide("exact.token").1, Some(FaultAction::Drop));
        assert_eq!(f.decide("exact.me").1, None);
        assert_eq!(f.decide("exact.token").1, Some(FaultAction::Drop));
        assert_eq!(f.decide("exact.token").1, None);
        assert!(f.rules().is_empty());
    }

    #[test]
    fn wildcards_match_a_provider_or_everything() {
        assert!(matches("exact.*", "exact.token"));
        assert!(!matches("exact.*", "twinfield.token"));
        assert!(matches("*", "acumatica.api"));
        assert!(!matches("exact.tok", "exact.token"));
    }

    #[test]
    fn probability_is_repeatable_for_a_seed() {
        let run = || {
            let mut f = FaultState::new(7);
            f.add(FaultRule::with_probability("*", 0.5, FaultAction::Drop));
            (0..32)
                .map(|_| f.decide("x.y").1.is_some())
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().any(|x| *x) && first.iter().any(|x| !*x));
    }

    #[test]
    fn latency_rules_add_up_and_let_faults_through() {
        let mut f = FaultState::new(1);
        f.set_route_latency("exact.token", 5);
        f.add(FaultRule::always(
            "exact.*",
            FaultAction::Latency { ms: 10 },
        ));
        f.add(FaultRule::always("exact.token", FaultAction::Drop));
        assert_eq!(f.decide("exact.token"), (15, Some(FaultAction::Drop)));
    }
}
