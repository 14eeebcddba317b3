//! Reading token endpoint answers as providers really send them: `expires_in` as a number or a string,
//! `token_type` in any case, `scope` as a string or a list, a refresh token even inside an error answer.
//!
//! Pure functions over bytes, so they can be fed anything: they never panic and never hold more than a
//! bounded copy of the input.

use super::error::tidy;
use super::id_token::MAX_ID_TOKEN_BYTES;
use crate::secret::{AccessToken, RefreshToken};
use serde_json::{Map, Value};

/// Answers longer than this are not parsed (real ones are a few kilobytes at most, id_token included).
pub const MAX_TOKEN_REPLY_BYTES: usize = 256 * 1024;
const MAX_DETAIL_CHARS: usize = 300;

/// A successful answer's fields.
#[derive(Debug, Clone)]
pub struct ParsedTokens {
    pub access_token: AccessToken,
    /// As sent; `None` when absent.
    pub token_type: Option<String>,
    /// Seconds, when the answer said (as a number or a numeric string).
    pub expires_in: Option<i64>,
    /// `None` when absent or empty: for a refresh, the old one stays.
    pub refresh_token: Option<RefreshToken>,
    /// `refresh_expires_in` / `refresh_token_expires_in`, seconds, when the provider tells.
    pub refresh_expires_in: Option<i64>,
    /// Space-separated, whether it came as a string or a list.
    pub scope: Option<String>,
    /// The id_token as sent (bounded); [`super::id_token`] checks it.
    pub id_token: Option<String>,
}

impl ParsedTokens {
    /// Whether `token_type` allows using the token as a bearer token (absent counts as yes).
    pub fn is_bearer(&self) -> bool {
        self.token_type
            .as_deref()
            .is_none_or(|t| t.trim().eq_ignore_ascii_case("bearer"))
    }
}

/// An error answer (or a 2xx without an access token).
#[derive(Debug, Clone)]
pub struct RefusedReply {
    pub status: u16,
    pub error_code: Option<String>,
    /// The provider's text (`error_description`, `message`, a fault string, or the start of a non-JSON
    /// body). It may still contain what the request sent; the client blanks its secrets out.
    pub description: String,
    /// Tokens that came with the refusal: they must be kept.
    pub carried_access_token: Option<AccessToken>,
    pub carried_expires_in: Option<i64>,
    pub carried_refresh_token: Option<RefreshToken>,
}

#[derive(Debug, Clone)]
pub enum TokenReply {
    Tokens(ParsedTokens),
    Refused(RefusedReply),
}

/// Reads a token endpoint's answer.
pub fn read_token_reply(status: u16, body: &[u8]) -> TokenReply {
    let refused = |error_code: Option<String>, description: String| RefusedReply {
        status,
        error_code,
        description,
        carried_access_token: None,
        carried_expires_in: None,
        carried_refresh_token: None,
    };
    if body.len() > MAX_TOKEN_REPLY_BYTES {
        return TokenReply::Refused(refused(
            None,
            format!("the answer is larger than {MAX_TOKEN_REPLY_BYTES} bytes"),
        ));
    }
    let body = body
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(body);
    let fields = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => {
            return TokenReply::Refused(refused(
                None,
                "the answer is JSON but not an object".into(),
            ))
        }
        Err(_) => return TokenReply::Refused(refused(None, describe_non_json(body))),
    };
    let access_token = string(&fields, "access_token").map(AccessToken::new);
    let refresh_token = string(&fields, "refresh_token").map(RefreshToken::new);
    let expires_in = seconds(fields.get("expires_in"));
    let error_code = string(&fields, "error").map(|e| tidy(&e, 100));
    let success = (200..300).contains(&status) && error_code.is_none();
    match access_token {
        Some(access_token) if success => TokenReply::Tokens(ParsedTokens {
            access_token,
            token_type: string(&fields, "token_type"),
            expires_in,
            refresh_token,
            refresh_expires_in: seconds(fields.get("refresh_expires_in"))
                .or_else(|| seconds(fields.get("refresh_token_expires_in"))),
            scope: scope(fields.get("scope")),
            id_token: fields
                .get("id_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty() && t.len() <= MAX_ID_TOKEN_BYTES)
                .map(str::to_string),
        }),
        access_token => {
            let description = description(&fields).unwrap_or_else(|| {
                if success {
                    "the answer has no access_token".into()
                } else {
                    String::new()
                }
            });
            TokenReply::Refused(RefusedReply {
                status,
                error_code,
                description,
                carried_access_token: access_token,
                carried_expires_in: expires_in,
                carried_refresh_token: refresh_token,
            })
        }
    }
}

/// A non-empty string field, bounded in length (a token of 16 KiB is already absurd).
fn string(fields: &Map<String, Value>, key: &str) -> Option<String> {
    match fields.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 16 * 1024 => {
            Some(s.trim().to_string())
        }
        _ => None,
    }
}

/// Seconds as a JSON number (integer or not) or a numeric string, within ±100 years.
pub(crate) fn seconds(value: Option<&Value>) -> Option<i64> {
    const LIMIT: f64 = 100.0 * 365.0 * 86_400.0;
    let n = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (n.is_finite() && n.abs() <= LIMIT).then_some(n as i64)
}

fn scope(value: Option<&Value>) -> Option<String> {
    let joined = match value? {
        Value::String(s) => s.split_whitespace().collect::<Vec<_>>().join(" "),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        _ => return None,
    };
    (!joined.is_empty()).then(|| tidy(&joined, 2000))
}

/// The provider's words from an error object, wherever it put them.
pub(crate) fn description(fields: &Map<String, Value>) -> Option<String> {
    let pick = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
    };
    let nested = |outer: &str, inner: &str| {
        fields
            .get(outer)
            .and_then(Value::as_object)
            .and_then(|o| pick(o.get(inner)))
    };
    let odata = || {
        let message = fields.get("error")?.as_object()?.get("message")?;
        pick(Some(message)).or_else(|| pick(message.as_object()?.get("value")))
    };
    pick(fields.get("error_description"))
        .or_else(|| pick(fields.get("message")))
        .or_else(|| pick(fields.get("Message")))
        .or_else(|| nested("fault", "faultstring"))
        .or_else(odata)
        .map(|d| tidy(&d, MAX_DETAIL_CHARS))
}

/// The start of a non-JSON body (an HTML error page, a proxy's text), tags stripped.
pub(crate) fn describe_non_json(body: &[u8]) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return String::new();
    }
    let head = &body[..body.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    let text = tidy(&out, 200);
    if text.is_empty() {
        "the answer is not JSON".into()
    } else {
        format!("the answer is not JSON: {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(reply: TokenReply) -> ParsedTokens {
        match reply {
            TokenReply::Tokens(t) => t,
            TokenReply::Refused(r) => panic!("refused: {r:?}"),
        }
    }

    #[test]
    fn exact_style_replies_are_read() {
        let t = tokens(read_token_reply(
            200,
            br#"{"access_token":"a1","token_type":"bearer","expires_in":"600","refresh_token":"r1"}"#,
        ));
        assert_eq!(t.access_token.expose(), "a1");
        assert_eq!(t.expires_in, Some(600));
        assert!(t.is_bearer());
        assert_eq!(t.refresh_token.unwrap().expose(), "r1");
    }

    #[test]
    fn odd_but_valid_fields_are_tolerated() {
        let t = tokens(read_token_reply(
            200,
            "\u{feff}{\"access_token\":\"a\",\"token_type\":\"BEARER\",\"expires_in\":3599.7,\"scope\":[\"api\",\"openid\"],\"refresh_token\":\"\"}".as_bytes(),
        ));
        assert_eq!(t.expires_in, Some(3599));
        assert_eq!(t.scope.as_deref(), Some("api openid"));
        assert!(
            t.refresh_token.is_none(),
            "an empty refresh token is no refresh token"
        );
        let t = tokens(read_token_reply(
            200,
            br#"{"access_token":"a","expires_in":"soon","token_type":"mac"}"#,
        ));
        assert_eq!(t.expires_in, None);
        assert!(!t.is_bearer());
    }

    #[test]
    fn error_replies_keep_words_and_carried_tokens() {
        let TokenReply::Refused(r) = read_token_reply(
            429,
            br#"{"error":"rate_limit_exceeded","error_description":"Too many.","access_token":"a2","refresh_token":"r2","expires_in":600}"#,
        ) else {
            panic!("not refused")
        };
        assert_eq!(r.error_code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(r.description, "Too many.");
        assert_eq!(r.carried_refresh_token.unwrap().expose(), "r2");
        assert_eq!(r.carried_access_token.unwrap().expose(), "a2");
        let TokenReply::Refused(r) = read_token_reply(500, br#"{"fault":{"faultstring":"Failed to execute the ExtractVariables: ExtractAccessToken"}}"#)
        else {
            panic!()
        };
        assert!(r.description.contains("ExtractVariables"));
        let TokenReply::Refused(r) =
            read_token_reply(502, b"<html><body><h1>Bad gateway</h1></body></html>")
        else {
            panic!()
        };
        assert_eq!(r.description, "the answer is not JSON: Bad gateway");
        let TokenReply::Refused(r) = read_token_reply(200, br#"{"error":"invalid_grant"}"#) else {
            panic!()
        };
        assert_eq!(r.error_code.as_deref(), Some("invalid_grant"));
    }
}
