//! Where a person goes back to after connecting: the integration's own page. The broker only sends a
//! browser to an address whose origin the tenant put on its allow-list, so a connection's return URL
//! can never turn the broker's pages into an open redirect.

use super::InvalidValue;
use serde::{Deserialize, Serialize};
use std::fmt;
use url::Url;

/// Longer addresses are refused: they end up in a button's `href` and in logs.
const MAX_LENGTH: usize = 2000;

/// An origin (`https://app.example.com`, `https://app.example.com:8443`) a tenant lets its
/// connections return to. Stored as the browser serialises an origin, so comparing is exact.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReturnOrigin(String);

impl ReturnOrigin {
    /// Reads an origin: scheme, host and port only (a trailing `/` is accepted), https, or http on
    /// loopback for local runs.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let invalid = |why: String| InvalidValue::new("return origin", why);
        let url = web_address(value.trim()).map_err(invalid)?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!(
                "{:?} is not an origin: give only the scheme, host and port, like https://app.example.com",
                value.trim()
            )));
        }
        Ok(Self(url.origin().ascii_serialization()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ReturnOrigin {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
        Self::parse(&value)
    }
}

impl From<ReturnOrigin> for String {
    fn from(origin: ReturnOrigin) -> String {
        origin.0
    }
}

impl fmt::Display for ReturnOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The integration's page a person returns to after connecting or failing to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReturnUrl(Url);

impl ReturnUrl {
    /// Reads an absolute https URL (http only on loopback), without credentials or fragment.
    pub fn parse(value: &str) -> Result<Self, InvalidValue> {
        let value = value.trim();
        let invalid = |why: String| InvalidValue::new("return URL", why);
        if value.len() > MAX_LENGTH {
            return Err(invalid(format!(
                "the return URL is longer than {MAX_LENGTH} characters: shorten it"
            )));
        }
        let url = web_address(value).map_err(invalid)?;
        if url.fragment().is_some() {
            return Err(invalid(
                "a return URL must not have a fragment (#...): the outcome is added to its query"
                    .into(),
            ));
        }
        Ok(Self(url))
    }

    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }

    /// Whether `origins` allows sending a browser here.
    pub fn allowed_by(&self, origins: &[ReturnOrigin]) -> bool {
        let origin = self.origin();
        origins.iter().any(|o| o.as_str() == origin)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// This address with the outcome appended to its query (its own parameters kept).
    pub fn with_outcome(&self, pairs: &[(&str, &str)]) -> Url {
        let mut url = self.0.clone();
        url.query_pairs_mut().extend_pairs(pairs.iter().copied());
        url
    }
}

impl TryFrom<String> for ReturnUrl {
    type Error = InvalidValue;
    fn try_from(value: String) -> Result<Self, InvalidValue> {
        Self::parse(&value)
    }
}

impl From<ReturnUrl> for String {
    fn from(url: ReturnUrl) -> String {
        url.0.into()
    }
}

/// An absolute web address a browser may be sent to: https, or http on a loopback host; no user or
/// password part (it would reach pages and logs).
fn web_address(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| format!("{value:?} is not an absolute URL ({e})"))?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if !(url.scheme() == "https" || (url.scheme() == "http" && loopback)) {
        return Err(format!(
            "{value:?} must use https (http only on this machine, for local runs)"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("an address must not carry a user name or password".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origin_is_scheme_host_and_port_only() {
        let origin = ReturnOrigin::parse("https://App.Example.com/").unwrap();
        assert_eq!(origin.as_str(), "https://app.example.com");
        assert_eq!(
            ReturnOrigin::parse("https://app.example.com:8443")
                .unwrap()
                .as_str(),
            "https://app.example.com:8443"
        );
        for refused in [
            "https://app.example.com/settings",
            "http://app.example.com",
            "javascript:alert(1)",
            "app.example.com",
        ] {
            assert!(ReturnOrigin::parse(refused).is_err(), "{refused}");
        }
        assert!(ReturnOrigin::parse("http://127.0.0.1:3000").is_ok());
    }

    #[test]
    fn a_return_url_is_followed_only_to_an_allowed_origin() {
        let allowed = [ReturnOrigin::parse("https://app.example.com").unwrap()];
        let url = ReturnUrl::parse("https://app.example.com/settings?tab=accounting").unwrap();
        assert!(url.allowed_by(&allowed));
        for other in [
            "https://app.example.com.evil.test/settings",
            "https://evil.test/?https://app.example.com",
            "https://app.example.com:444/settings",
        ] {
            assert!(
                !ReturnUrl::parse(other).unwrap().allowed_by(&allowed),
                "{other}"
            );
        }
        for refused in [
            "https://user:pw@app.example.com/",
            "https://app.example.com/#done",
            "data:text/html,x",
            "/relative",
        ] {
            assert!(ReturnUrl::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn the_outcome_is_added_to_the_query() {
        let url = ReturnUrl::parse("https://app.example.com/back?tab=a").unwrap();
        assert_eq!(
            url.with_outcome(&[("outcome", "connected")]).as_str(),
            "https://app.example.com/back?tab=a&outcome=connected"
        );
    }
}
