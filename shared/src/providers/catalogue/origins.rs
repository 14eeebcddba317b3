//! Origin patterns: where a provider may send the broker (Twinfield's cluster), as an allow-list.
//!
//! The cluster URL a Twinfield answer names (`twf.clusterUrl`, a logon's `<cluster>`) is handed to
//! integrations together with tokens and session ids, and the broker itself calls it with a session id.
//! An answer naming another host would send those there, so a reported URL must match a pattern:
//! `https://*.twinfield.com` (any subdomain, https, default port) or an exact origin such as
//! `http://127.0.0.1:8081` for a sandbox (http only on loopback).

use url::Url;

/// One allowed origin; `*.` before the host stands for one or more subdomain labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginPattern {
    scheme: String,
    host: String,
    any_subdomain: bool,
    port: Option<u16>,
}

impl OriginPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let (scheme, rest) = pattern.split_once("://").ok_or_else(|| {
            format!("origin pattern {pattern:?} must look like https://*.example.com")
        })?;
        let (any_subdomain, rest) = match rest.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let url = Url::parse(&format!("{scheme}://{rest}"))
            .map_err(|e| format!("origin pattern {pattern:?} is not an origin ({e})"))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let loopback = matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]");
        let scheme_ok =
            url.scheme() == "https" || (url.scheme() == "http" && loopback && !any_subdomain);
        if !scheme_ok || host.is_empty() || !matches!(url.path(), "" | "/") || url.query().is_some()
        {
            return Err(format!(
                "origin pattern {pattern:?} must be an https origin (http only for a loopback sandbox), without a path"
            ));
        }
        Ok(Self {
            scheme: url.scheme().to_string(),
            host,
            any_subdomain,
            port: url.port(),
        })
    }

    /// Whether `url`'s origin is allowed by this pattern.
    pub fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host_str().map(str::to_ascii_lowercase) else {
            return false;
        };
        let host_ok = if self.any_subdomain {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|label| label.len() > 1 && label.ends_with('.'))
        } else {
            host == self.host
        };
        url.scheme() == self.scheme
            && host_ok
            && url.port() == self.port
            && url.username().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> Url {
        Url::parse(u).unwrap()
    }

    #[test]
    fn subdomains_of_the_pattern_host_over_https_only() {
        let p = OriginPattern::parse("https://*.twinfield.com").unwrap();
        for ok in [
            "https://accounting.twinfield.com",
            "https://api.accounting.twinfield.com/webservices",
            "https://C3.TWINFIELD.COM",
        ] {
            assert!(p.matches(&url(ok)), "{ok}");
        }
        for bad in [
            "http://accounting.twinfield.com",
            "https://twinfield.com",
            "https://eviltwinfield.com",
            "https://accounting.twinfield.com.evil.example",
            "https://accounting.twinfield.com:8443",
            "https://user@accounting.twinfield.com",
            "https://evil.example.com/accounting.twinfield.com",
        ] {
            assert!(!p.matches(&url(bad)), "{bad}");
        }
    }

    #[test]
    fn an_exact_loopback_origin_for_sandboxes() {
        let p = OriginPattern::parse("http://127.0.0.1:8081").unwrap();
        assert!(p.matches(&url("http://127.0.0.1:8081/twinfield/clusters/a")));
        assert!(!p.matches(&url("http://127.0.0.1:8082/twinfield/clusters/a")));
        for bad in [
            "http://*.example.com",
            "http://example.com",
            "ftp://x.com",
            "https://x.com/path",
            "x.com",
        ] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
