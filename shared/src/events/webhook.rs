//! A tenant's webhook endpoints: where they may point, and how a delivery is signed.
//!
//! # Signature
//!
//! `Broker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`. The timestamp is
//! inside the signed text, so a receiver that rejects old timestamps (five minutes is usual) cannot be
//! replayed a captured delivery later; the body is signed byte for byte as sent.

use crate::ids::{TenantId, WebhookId};
use crate::providers::address_policy::{AddressPolicy, AddressRefused, HostCheck};
use crate::secret::WebhookSecret;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use url::{Host, Url};

/// The header a delivery's signature travels in.
pub const SIGNATURE_HEADER: &str = "Broker-Signature";
/// The header naming the event, for receivers that deduplicate before parsing the body.
pub const EVENT_ID_HEADER: &str = "Broker-Event-Id";

/// At most this many endpoints per tenant: each event's deliveries are created in one atomic write,
/// and DynamoDB takes at most 100 items in one.
pub const MAX_WEBHOOKS_PER_TENANT: usize = 20;

/// How long a registration waits for the URL's host to resolve.
const REGISTRATION_LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// A registered endpoint. Its signing secret is in the vault, never here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: WebhookId,
    pub tenant: TenantId,
    pub url: Url,
    #[serde(default)]
    pub description: String,
    pub created_at: DateTime<Utc>,
}

/// Why an endpoint URL is refused, in words that say what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlRefused {
    #[error("url is not an absolute URL: send the full https:// address of your endpoint")]
    NotAUrl,
    #[error("url must use https (http is accepted only for a loopback receiver in local runs)")]
    NotHttps,
    #[error(
        "url must not carry a user name or password: authenticate deliveries by their signature"
    )]
    Credentials,
    #[error("url must not carry a #fragment: it is never sent")]
    Fragment,
    #[error("{0}")]
    Address(String),
}

/// Checks an endpoint URL where it is registered: https (or, where loopback is allowed, http to a
/// loopback host), no credentials, and a host the address policy allows (the same rules as provider
/// URLs: no private, link-local or metadata addresses). Every delivery checks the addresses again.
pub async fn check_url(
    raw: &str,
    policy: AddressPolicy,
) -> Result<(Url, Option<String>), WebhookUrlRefused> {
    let url = Url::parse(raw.trim()).map_err(|_| WebhookUrlRefused::NotAUrl)?;
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(WebhookUrlRefused::NotAUrl);
    }
    let loopback_http =
        url.scheme() == "http" && policy == AddressPolicy::AllowLoopback && is_loopback_host(&url);
    if url.scheme() != "https" && !loopback_http {
        return Err(WebhookUrlRefused::NotHttps);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(WebhookUrlRefused::Credentials);
    }
    if url.fragment().is_some() {
        return Err(WebhookUrlRefused::Fragment);
    }
    let warning = match policy.check_url(&url, REGISTRATION_LOOKUP_TIMEOUT).await {
        Ok(HostCheck::Allowed) => None,
        Ok(HostCheck::Unresolved { detail }) => Some(format!(
            "{detail}; deliveries are retried, so make the name resolve soon"
        )),
        Err(refused) => return Err(address_refused(&refused)),
    };
    Ok((url, warning))
}

fn address_refused(refused: &AddressRefused) -> WebhookUrlRefused {
    let what = match refused.address {
        Some(ip) => format!(
            "{} resolves to or is {ip}, {}",
            refused.host,
            refused.class.describe()
        ),
        None => format!("{} names this machine", refused.host),
    };
    WebhookUrlRefused::Address(format!(
        "{what}: webhooks are delivered only to public addresses, so that an endpoint cannot reach \
         the broker's own network or the cloud metadata service. Register your endpoint's public https URL"
    ))
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A new signing secret: `whsec_` and 32 random bytes, base64url.
pub fn generate_secret() -> WebhookSecret {
    let raw = crate::random::bytes::<32>();
    WebhookSecret::new(format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    ))
}

/// The `Broker-Signature` value of `body` sent at `timestamp`.
pub fn signature(secret: &WebhookSecret, timestamp: i64, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_https_urls_without_credentials_at_allowed_addresses_are_accepted() {
        let public = AddressPolicy::PublicOnly;
        assert!(check_url("https://93.184.215.14/hooks", public)
            .await
            .is_ok());
        for (raw, refused) in [
            ("http://93.184.215.14/hooks", WebhookUrlRefused::NotHttps),
            ("hooks.example.com/x", WebhookUrlRefused::NotAUrl),
            ("https://u:p@93.184.215.14/", WebhookUrlRefused::Credentials),
            ("https://93.184.215.14/#x", WebhookUrlRefused::Fragment),
            ("http://127.0.0.1:9/x", WebhookUrlRefused::NotHttps),
        ] {
            assert_eq!(check_url(raw, public).await.unwrap_err(), refused, "{raw}");
        }
        for raw in [
            "https://10.0.0.8/x",
            "https://169.254.169.254/latest",
            "https://127.0.0.1/x",
            "https://localhost/x",
        ] {
            let refused = check_url(raw, public).await.unwrap_err();
            assert!(
                matches!(&refused, WebhookUrlRefused::Address(m) if m.contains("public https URL")),
                "{raw}: {refused:?}"
            );
        }
        let local = AddressPolicy::AllowLoopback;
        assert!(check_url("http://127.0.0.1:9/x", local).await.is_ok());
        assert!(check_url("http://10.0.0.8/x", local).await.is_err());
        assert!(check_url("https://169.254.169.254/x", local).await.is_err());
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed independently: Python hmac.new(b"whsec_test", b"1700000000.{}", sha256).
        let secret = WebhookSecret::new("whsec_test");
        assert_eq!(
            signature(&secret, 1_700_000_000, "{}"),
            "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn secrets_are_unique_and_never_debug_printed() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("whsec_"));
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
