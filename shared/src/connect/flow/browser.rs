//! What the callback reads from the browser (its query and cookies) and the cookies it sets, each
//! bounded and redacting.

use crate::secret::{AuthorizationCode, OneTimeSecret};
use std::fmt;
use url::Url;

use super::ConnectError;

/// The cookie binding an authorization to the browser that started it.
pub const BINDING_COOKIE: &str = "broker_authorization";
/// The cookie remembering which link started the flow, so a failure page can offer it again. It
/// holds the link token the browser already had in its address bar, nothing new.
pub const LINK_COOKIE: &str = "broker_connect_link";
/// Binds an offered choice of division to the browser that authorized (see `division`).
pub const DIVISION_COOKIE: &str = "broker_division_choice";

/// Longest query string the callback reads; real provider redirects are a few hundred bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Longest single parameter value (authorization codes of the simulated and real providers are well
/// under 1 KiB; a JWT-shaped code still fits).
pub const MAX_PARAM_BYTES: usize = 2048;

/// The callback's query, parsed and bounded. Unknown parameters (`iss`, `session_state`, `scope`)
/// are ignored; a repeated known one is refused.
#[derive(Clone, Default)]
pub struct CallbackQuery {
    pub state: Option<OneTimeSecret>,
    pub code: Option<AuthorizationCode>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

impl fmt::Debug for CallbackQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackQuery")
            .field("state", &self.state)
            .field("code", &self.code)
            .field("error", &self.error)
            .field("error_description", &self.error_description)
            .finish()
    }
}

impl CallbackQuery {
    /// Parses the raw query string (without `?`).
    pub fn parse(raw: Option<&str>) -> Result<Self, ConnectError> {
        let raw = raw.unwrap_or_default();
        if raw.len() > MAX_QUERY_BYTES {
            return Err(ConnectError::MalformedRequest(format!(
                "the address is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        let mut query = CallbackQuery::default();
        let mut seen: Vec<String> = Vec::new();
        for (name, value) in url::form_urlencoded::parse(raw.as_bytes()) {
            let limit = match name.as_ref() {
                "state" => 256,
                "code" => MAX_PARAM_BYTES,
                "error" => 128,
                "error_description" => 1024,
                _ => MAX_PARAM_BYTES,
            };
            if value.len() > limit {
                return Err(ConnectError::MalformedRequest(format!(
                    "the parameter '{}' is too long",
                    printable(&name, 40)
                )));
            }
            if !matches!(
                name.as_ref(),
                "state" | "code" | "error" | "error_description"
            ) {
                continue;
            }
            if seen.iter().any(|n| n == name.as_ref()) {
                return Err(ConnectError::MalformedRequest(format!(
                    "the parameter '{name}' appears more than once"
                )));
            }
            seen.push(name.to_string());
            let value = value.into_owned();
            match name.as_ref() {
                "state" => query.state = Some(OneTimeSecret::new(value)),
                "code" => query.code = Some(AuthorizationCode::new(value)),
                "error" => query.error = Some(printable(&value, 128)),
                _ => query.error_description = Some(printable(&value, 1024)),
            }
        }
        Ok(query)
    }
}

/// Control characters out, length bounded: provider text is shown to people and logged.
fn printable(value: &str, max_chars: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

/// The cookies a callback request carried (from its `Cookie` header).
#[derive(Clone, Default)]
pub struct BrowserCookies {
    pub(super) binding: Option<OneTimeSecret>,
    pub(super) link: Option<String>,
    pub(super) division: Option<OneTimeSecret>,
}

impl fmt::Debug for BrowserCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrowserCookies")
            .field("binding", &self.binding)
            .field("link", &self.link.as_ref().map(|_| "[redacted]"))
            .field("division", &self.division)
            .finish()
    }
}

impl BrowserCookies {
    /// Reads the broker's two cookies out of `Cookie` header values; others are ignored.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = Self::default();
        for header in headers {
            for pair in header.split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                if value.is_empty() || value.len() > 128 {
                    continue;
                }
                match name.trim() {
                    BINDING_COOKIE => out.binding = Some(OneTimeSecret::new(value)),
                    LINK_COOKIE => out.link = Some(value.to_string()),
                    DIVISION_COOKIE => out.division = Some(OneTimeSecret::new(value)),
                    _ => {}
                }
            }
        }
        out
    }
}

/// A cookie to set on the response: `Set-Cookie` header values, ready to send.
#[derive(Clone)]
pub struct SetCookies(pub(super) Vec<String>);

impl SetCookies {
    pub fn header_values(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Debug for SetCookies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SetCookies([redacted; {}])", self.0.len())
    }
}

/// http on a loopback host: a local run, where browsers refuse `Secure` cookies.
pub(super) fn is_local_http(url: &Url) -> bool {
    url.scheme() == "http"
        && match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_bounded_and_unambiguous() {
        let q = CallbackQuery::parse(Some("code=abc&state=xyz&iss=https%3A%2F%2Fx")).unwrap();
        assert_eq!(q.code.unwrap().expose(), "abc");
        assert_eq!(q.state.unwrap().expose(), "xyz");
        assert!(CallbackQuery::parse(Some("state=a&state=b")).is_err());
        let long = format!("state=s&code={}", "c".repeat(MAX_PARAM_BYTES + 1));
        assert!(CallbackQuery::parse(Some(&long)).is_err());
        let huge = format!("x={}", "y".repeat(MAX_QUERY_BYTES));
        assert!(CallbackQuery::parse(Some(&huge)).is_err());
        let q = CallbackQuery::parse(Some("state=s&error=access_denied&error_description=a%0Ab"))
            .unwrap();
        assert_eq!(q.error_description.as_deref(), Some("ab"));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let c = BrowserCookies::from_headers([
            "a=1; broker_authorization=xyz",
            "broker_connect_link=L",
        ]);
        assert_eq!(c.binding.unwrap().expose(), "xyz");
        assert_eq!(c.link.as_deref(), Some("L"));
        let printed = format!(
            "{:?}",
            BrowserCookies::from_headers(["broker_connect_link=SECRETLINK"])
        );
        assert!(!printed.contains("SECRETLINK"));
    }

    #[test]
    fn only_http_on_loopback_is_local() {
        assert!(is_local_http(&Url::parse("http://127.0.0.1:8080").unwrap()));
        assert!(is_local_http(&Url::parse("http://localhost").unwrap()));
        assert!(is_local_http(&Url::parse("http://[::1]:3000").unwrap()));
        assert!(!is_local_http(&Url::parse("https://127.0.0.1").unwrap()));
        assert!(!is_local_http(
            &Url::parse("http://broker.example.com").unwrap()
        ));
    }
}
