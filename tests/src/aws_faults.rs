//! A fault-injecting HTTP proxy between the AWS SDK clients and moto: the way AWS misbehaves
//! (throttling, HTTP 500, a reset connection, an answer that comes after the client gave up), on chosen
//! operations, for the next N calls, for a time window, until cleared, or for a share of calls.
//!
//! The SDK clients reach it through `endpoint_url` ([`FaultProxy::sdk_config`]); it forwards every call
//! it does not fault to moto. An operation is named `<service>.<Operation>` — `dynamodb.UpdateItem`,
//! `secretsmanager.PutSecretValue`, `kms.GenerateDataKey`, `ses.SendEmail` — from the `X-Amz-Target`
//! header of the JSON protocols or, for SES v2 (REST), from the path.
//!
//! Each fault answers the way the service does: throttling is a 400 `ThrottlingException` (DynamoDB,
//! Secrets Manager, KMS) or a 429 `TooManyRequestsException` (SES v2), which the SDK classifies as
//! throttling; a 500 is `InternalFailure`; a reset closes the socket with RST before the call reaches
//! moto; a timeout holds the call past the client's attempt timeout and *then* forwards it, so the
//! write lands while the client has already given up on it (the answer is lost, not the request).

use anyhow::{bail, Context, Result};
use aws_config::SdkConfig;
use broker_core::backend::AwsCallLimits;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What a faulted call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The service's throttling error.
    Throttle,
    /// HTTP 500 `InternalFailure`.
    ServerError,
    /// The connection is reset before the call reaches the service.
    Reset,
    /// The call is held this long (past the client's attempt timeout), then delivered; its answer is
    /// thrown away.
    Timeout(Duration),
}

impl Fault {
    /// A hold past [`FaultProxy::test_call_limits`]'s attempt timeout.
    pub const TIMEOUT: Fault = Fault::Timeout(Duration::from_secs(4));

    /// The four kinds, for tests that try each.
    pub const ALL: [Fault; 4] = [
        Fault::Throttle,
        Fault::ServerError,
        Fault::Reset,
        Fault::TIMEOUT,
    ];

    pub fn label(&self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::ServerError => "500",
            Self::Reset => "reset",
            Self::Timeout(_) => "timeout",
        }
    }
}

/// How long a rule stays in force.
#[derive(Debug, Clone, Copy)]
enum Span {
    /// The next N matching calls (after any skipped).
    Next(u32),
    /// Matching calls until this instant.
    Until(Instant),
    /// Until [`FaultProxy::clear`].
    UntilCleared,
}

/// Which calls to fault, how, and for how long.
#[derive(Debug, Clone)]
pub struct FaultRule {
    /// `service.Operation`, `service.*`, or several separated by `|`.
    operations: String,
    /// Only calls whose body contains this text (e.g. a DynamoDB update expression).
    body_contains: Option<String>,
    /// Matching calls let through before the rule starts.
    skip: u32,
    span: Span,
    /// The share of matching calls faulted (deterministic sequence per proxy).
    share: f64,
    fault: Fault,
}

impl FaultRule {
    /// `fault` on every call of `operations` until the proxy is cleared.
    pub fn on(operations: &str, fault: Fault) -> Self {
        Self {
            operations: operations.to_string(),
            body_contains: None,
            skip: 0,
            span: Span::UntilCleared,
            share: 1.0,
            fault,
        }
    }

    /// Only the next `n` matching calls.
    pub fn next(mut self, n: u32) -> Self {
        self.span = Span::Next(n);
        self
    }

    /// Only matching calls in the next `window`.
    pub fn for_window(mut self, window: Duration) -> Self {
        self.span = Span::Until(Instant::now() + window);
        self
    }

    /// Only calls whose request body contains `text`.
    pub fn when_body_contains(mut self, text: &str) -> Self {
        self.body_contains = Some(text.to_string());
        self
    }

    /// Lets the first `n` matching calls through.
    pub fn after(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    /// Faults only this share (0..=1) of the matching calls.
    pub fn share(mut self, share: f64) -> Self {
        self.share = share.clamp(0.0, 1.0);
        self
    }

    fn matches(&self, operation: &str, body: &[u8]) -> bool {
        let named = self
            .operations
            .split('|')
            .any(|pattern| match pattern.strip_suffix(".*") {
                Some(service) => operation.split_once('.').is_some_and(|(s, _)| s == service),
                None => pattern == operation,
            });
        named
            && self.body_contains.as_ref().is_none_or(|text| {
                body.windows(text.len().max(1))
                    .any(|window| window == text.as_bytes())
            })
    }
}

#[derive(Default)]
struct State {
    rules: Vec<(FaultRule, u32)>,
    /// Calls seen per operation.
    calls: BTreeMap<String, u64>,
    /// Faults injected per operation and kind.
    injected: BTreeMap<(String, &'static str), u64>,
    random: u64,
}

impl State {
    fn next_unit(&mut self) -> f64 {
        // xorshift64*: a fixed sequence, so a benchmark's faulted share is the same run after run.
        let mut x = self.random;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Counts the call and decides its fault, if any.
    fn decide(&mut self, operation: &str, body: &[u8]) -> Option<Fault> {
        *self.calls.entry(operation.to_string()).or_default() += 1;
        let now = Instant::now();
        let mut chosen = None;
        for index in 0..self.rules.len() {
            let (rule, seen) = &mut self.rules[index];
            if !rule.matches(operation, body) {
                continue;
            }
            *seen += 1;
            if *seen <= rule.skip {
                continue;
            }
            let active = match rule.span {
                Span::Next(n) => *seen - rule.skip <= n,
                Span::Until(end) => now < end,
                Span::UntilCleared => true,
            };
            let (share, fault) = (rule.share, rule.fault);
            if active && chosen.is_none() && (share >= 1.0 || self.next_unit() < share) {
                chosen = Some(fault);
            }
        }
        if let Some(fault) = chosen {
            *self
                .injected
                .entry((operation.to_string(), fault.label()))
                .or_default() += 1;
        }
        chosen
    }
}

/// A running proxy in front of `upstream`; it stops when dropped.
pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream` (e.g. moto's endpoint).
    pub async fn start(upstream: &str) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(Mutex::new(State {
            random: 0x9E37_79B9_7F4A_7C15,
            ..State::default()
        }));
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()?;
        let upstream = upstream.trim_end_matches('/').to_string();
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((socket, _)) = listener.accept().await else {
                        continue;
                    };
                    let (state, client, upstream) =
                        (state.clone(), client.clone(), upstream.clone());
                    tokio::spawn(async move {
                        let _ = serve(socket, state, client, upstream).await;
                    });
                }
            })
        };
        Ok(Self {
            endpoint,
            state,
            task,
        })
    }

    pub fn inject(&self, rule: FaultRule) {
        self.state.lock().unwrap().rules.push((rule, 0));
    }

    /// Removes every rule: the faults clear.
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Calls of `operation` seen so far, faulted or not.
    pub fn calls(&self, operation: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    /// Faults injected so far on operations of `service` (`dynamodb`, `secretsmanager`, ...).
    pub fn injected(&self, service: &str) -> u64 {
        self.state
            .lock()
            .unwrap()
            .injected
            .iter()
            .filter(|((operation, _), _)| {
                operation.split_once('.').is_some_and(|(s, _)| s == service)
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// The SDK clients' timeouts and retries in tests: the production shape, scaled down so a held
    /// call ([`Fault::TIMEOUT`]) times out in seconds, yet long enough for moto, which serves one call
    /// at a time, under parallel tests: an attempt that times out there is retried, and moto does not
    /// honour the idempotency token of a retried transaction that had landed, as DynamoDB does.
    pub fn test_call_limits() -> AwsCallLimits {
        AwsCallLimits {
            connect: Duration::from_secs(1),
            attempt: Duration::from_secs(3),
            operation: Duration::from_secs(10),
            max_attempts: 3,
        }
    }

    /// SDK configuration pointing every client at this proxy, with throwaway credentials and the
    /// broker's timeouts and retries ([`Self::test_call_limits`]).
    pub async fn sdk_config(&self) -> SdkConfig {
        self.sdk_config_with(Self::test_call_limits()).await
    }

    /// As [`Self::sdk_config`], with these timeouts and retries.
    pub async fn sdk_config_with(&self, limits: AwsCallLimits) -> SdkConfig {
        let loader = limits.apply(broker_core::backend::aws_config_loader());
        crate::moto::sdk_config_at(&self.endpoint, loader).await
    }
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `service.Operation`.
    fn operation(&self) -> String {
        if let Some(target) = self.header("x-amz-target") {
            let (prefix, operation) = target.split_once('.').unwrap_or((target, ""));
            let service = match prefix {
                p if p.starts_with("DynamoDB") => "dynamodb",
                p if p.starts_with("DynamoDBStreams") => "dynamodbstreams",
                "secretsmanager" => "secretsmanager",
                "TrentService" => "kms",
                other => other,
            };
            return format!("{service}.{operation}");
        }
        if self.path.starts_with("/v2/email/outbound-emails") && self.method == "POST" {
            return "ses.SendEmail".into();
        }
        if self.path.starts_with("/v2/email") {
            return format!("ses.{} {}", self.method, self.path);
        }
        format!("unknown.{} {}", self.method, self.path)
    }
}

/// Reads one HTTP/1.1 request; `None` when the client closed the connection between requests.
async fn read_request(reader: &mut BufReader<TcpStream>) -> Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        bail!("not an HTTP request line: {line:?}");
    };
    let (method, path) = (method.to_string(), path.to_string());
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            bail!("connection closed in the headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').context("a header without a colon")?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut request = Request {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).await?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .context("a chunk size")?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await?;
            if size == 0 {
                break;
            }
            request.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = request.header("content-length") {
        let mut body = vec![0; length.parse().context("a content length")?];
        reader.read_exact(&mut body).await?;
        request.body = body;
    }
    Ok(Some(request))
}

async fn serve(
    socket: TcpStream,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
) -> Result<()> {
    let mut reader = BufReader::new(socket);
    while let Some(request) = read_request(&mut reader).await? {
        let operation = request.operation();
        let fault = state.lock().unwrap().decide(&operation, &request.body);
        let (status, headers, body) = match fault {
            Some(Fault::Reset) => {
                // SO_LINGER 0 makes the close an RST, as a load balancer dropping the call would.
                // Deprecated only because a non-zero linger blocks on drop; zero does not.
                #[allow(deprecated)]
                reader.get_ref().set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Some(Fault::Throttle) => error_answer(&operation, true),
            Some(Fault::ServerError) => error_answer(&operation, false),
            Some(Fault::Timeout(hold)) => {
                tokio::time::sleep(hold).await;
                forward(&client, &upstream, &request).await?
            }
            None => forward(&client, &upstream, &request).await?,
        };
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let socket = reader.get_mut();
        socket.write_all(head.as_bytes()).await?;
        socket.write_all(&body).await?;
        socket.flush().await?;
    }
    Ok(())
}

type Answer = (u16, Vec<(String, String)>, Vec<u8>);

async fn forward(client: &reqwest::Client, upstream: &str, request: &Request) -> Result<Answer> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes())?;
    let mut call = client.request(method, format!("{upstream}{}", request.path));
    for (name, value) in &request.headers {
        let hop = ["host", "content-length", "transfer-encoding", "connection"];
        if !hop.iter().any(|h| name.eq_ignore_ascii_case(h)) {
            call = call.header(name, value);
        }
    }
    let answer = call.body(request.body.clone()).send().await?;
    let status = answer.status().as_u16();
    let headers = answer
        .headers()
        .iter()
        .filter(|(name, _)| {
            !["content-length", "transfer-encoding", "connection"].contains(&name.as_str())
        })
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect();
    Ok((status, headers, answer.bytes().await?.to_vec()))
}

/// The service's own error answer for a throttled or failed call.
fn error_answer(operation: &str, throttled: bool) -> Answer {
    let service = operation.split_once('.').map_or(operation, |(s, _)| s);
    let request_id = vec![("x-amzn-RequestId".to_string(), "fault-proxy".to_string())];
    if service == "ses" {
        let (status, code) = if throttled {
            (429, "TooManyRequestsException")
        } else {
            (500, "InternalFailure")
        };
        let mut headers = request_id;
        headers.push(("x-amzn-ErrorType".into(), code.into()));
        headers.push(("content-type".into(), "application/json".into()));
        let body = format!(r#"{{"message":"{code} (injected)"}}"#);
        return (status, headers, body.into_bytes());
    }
    let (content_type, code) = match (service, throttled) {
        ("dynamodb", true) => (
            "application/x-amz-json-1.0",
            "com.amazonaws.dynamodb.v20120810#ThrottlingException",
        ),
        ("dynamodb", false) => (
            "application/x-amz-json-1.0",
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
        ),
        (_, true) => ("application/x-amz-json-1.1", "ThrottlingException"),
        (_, false) => ("application/x-amz-json-1.1", "InternalFailure"),
    };
    let status = if throttled { 400 } else { 500 };
    let mut headers = request_id;
    headers.push(("content-type".into(), content_type.into()));
    let body = format!(r#"{{"__type":"{code}","message":"Rate exceeded or failure (injected)"}}"#);
    (status, headers, body.into_bytes())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_operations_bodies_and_spans() {
        let mut state = State {
            random: 7,
            ..State::default()
        };
        state.rules.push((
            FaultRule::on("dynamodb.UpdateItem", Fault::Throttle)
                .when_body_contains("#owner = :owner")
                .after(1)
                .next(2),
            0,
        ));
        let lease = b"{\"UpdateExpression\":\"SET #owner = :owner\"}";
        assert_eq!(state.decide("dynamodb.UpdateItem", b"{}"), None);
        assert_eq!(state.decide("dynamodb.UpdateItem", lease), None, "skipped");
        assert_eq!(
            state.decide("dynamodb.UpdateItem", lease),
            Some(Fault::Throttle)
        );
        assert_eq!(state.decide("dynamodb.GetItem", lease), None);
        assert_eq!(
            state.decide("dynamodb.UpdateItem", lease),
            Some(Fault::Throttle)
        );
        assert_eq!(state.decide("dynamodb.UpdateItem", lease), None, "two only");
        state.rules.clear();
        state.rules.push((
            FaultRule::on("secretsmanager.*", Fault::ServerError).share(0.3),
            0,
        ));
        let faulted = (0..10_000)
            .filter(|_| state.decide("secretsmanager.PutSecretValue", b"").is_some())
            .count();
        assert!((2_700..3_300).contains(&faulted), "{faulted}");
        assert_eq!(state.decide("kms.Decrypt", b""), None);
    }
}
