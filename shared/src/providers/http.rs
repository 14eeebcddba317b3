//! The HTTP client every provider call goes through: rustls, no redirects, connect and total timeouts,
//! answers read only up to a size cap, and only the addresses the [`AddressPolicy`] allows.

use super::address_policy::{AddressPolicy, AddressRefused, GuardedResolver};
use std::time::Duration;

/// Timeouts and limits for provider calls.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    /// For the whole call, body included.
    pub total_timeout: Duration,
    /// Answers longer than this are refused unread (token replies are a few hundred bytes).
    pub max_response_bytes: usize,
    pub user_agent: String,
    /// Which addresses calls may reach. The default, public only, is what runs on AWS; the local
    /// runner and the tests allow loopback for their simulators.
    pub addresses: AddressPolicy,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(15),
            max_response_bytes: 1024 * 1024,
            user_agent: concat!("connection-broker/", env!("CARGO_PKG_VERSION")).to_string(),
            addresses: AddressPolicy::PublicOnly,
        }
    }
}

/// A cheap-to-clone client for provider calls. Build it once per process.
#[derive(Debug, Clone)]
pub struct ProviderHttp {
    client: reqwest::Client,
    settings: HttpSettings,
}

/// An answer, read in full (within the cap).
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: Option<String>,
    /// The raw `Retry-After` header.
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// Why no answer could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportFailure {
    /// What went wrong, without the URL (it may carry a token in its query).
    pub detail: String,
    /// The request may have been sent and acted on.
    pub outcome_unknown: bool,
    /// The answer was larger than the cap: the provider answered, but not with anything usable.
    pub too_large: bool,
    /// Nothing was sent: the URL's host is, or resolves only to, an address the policy refuses. A
    /// configuration problem (the app's instance URL, the catalogue, the provider's answer), not an
    /// outage: trying again cannot help.
    pub address_refused: bool,
}

impl TransportFailure {
    fn refused(refused: &AddressRefused) -> Self {
        Self {
            detail: super::error::tidy(&format!("refused to connect: {refused}"), 600),
            outcome_unknown: false,
            too_large: false,
            address_refused: true,
        }
    }
}

impl ProviderHttp {
    pub fn new(settings: HttpSettings) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.total_timeout)
            .user_agent(settings.user_agent.clone())
            .https_only(false) // loopback http is allowed for tests; endpoint URLs are checked where built
            .dns_resolver(GuardedResolver::new(
                settings.addresses,
                settings.connect_timeout,
            ))
            .build()
            .map_err(|e| format!("cannot build the provider HTTP client: {}", e.without_url()))?;
        Ok(Self { client, settings })
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends the request and reads the answer up to the size cap.
    pub(crate) async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<HttpReply, TransportFailure> {
        let (client, request) = request.build_split();
        let request = request.map_err(|e| failure(&e))?;
        // The resolver never sees an IP-literal host: reqwest connects to it directly.
        self.settings
            .addresses
            .check_ip_literal(request.url())
            .map_err(|refused| TransportFailure::refused(&refused))?;
        let mut response = client.execute(request).await.map_err(|e| failure(&e))?;
        let status = response.status().as_u16();
        let header = |name: reqwest::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.chars().take(200).collect::<String>())
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let retry_after = header(reqwest::header::RETRY_AFTER);
        let cap = self.settings.max_response_bytes;
        if response
            .content_length()
            .is_some_and(|len| len > cap as u64)
        {
            return Err(too_large(cap));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failure(&e))? {
            if body.len() + chunk.len() > cap {
                return Err(too_large(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(HttpReply {
            status,
            content_type,
            retry_after,
            body,
        })
    }
}

fn too_large(cap: usize) -> TransportFailure {
    TransportFailure {
        detail: format!("the answer is larger than {cap} bytes"),
        outcome_unknown: true,
        too_large: true,
        address_refused: false,
    }
}

fn failure(error: &reqwest::Error) -> TransportFailure {
    if let Some(refused) = refused_by_resolver(error) {
        return TransportFailure::refused(refused);
    }
    // A connect failure means nothing was sent; anything later may have been acted on.
    let outcome_unknown = !error.is_connect() && !error.is_builder();
    let what = if error.is_timeout() {
        "the request timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut detail = what.to_string();
    let mut source = std::error::Error::source(error);
    let mut depth = 0;
    while let Some(cause) = source {
        if depth == 4 {
            break;
        }
        detail.push_str(&format!(": {cause}"));
        source = cause.source();
        depth += 1;
    }
    TransportFailure {
        detail: super::error::tidy(&detail, 300),
        outcome_unknown,
        too_large: false,
        address_refused: false,
    }
}

/// The resolver's refusal, found among the error's causes (reqwest and hyper wrap it).
fn refused_by_resolver(error: &reqwest::Error) -> Option<&AddressRefused> {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<AddressRefused>() {
            return Some(refused);
        }
        source = cause.source();
    }
    None
}

/// `Retry-After` as delta-seconds or an HTTP date, bounded to a day.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    let secs = match value.parse::<u64>() {
        Ok(secs) => secs,
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(value)
                .ok()?
                .with_timezone(&chrono::Utc);
            (at - now).num_seconds().max(0) as u64
        }
    };
    Some(Duration::from_secs(secs.min(86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-06-03T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Mon, 03 Jun 2024 10:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("99999999", now),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
