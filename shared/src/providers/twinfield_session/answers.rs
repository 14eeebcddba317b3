//! Reading the session service's answers: envelopes in either SOAP version, faults, and every
//! `LogonResult`. Pure functions over bytes, fed anything by the fuzz test.

use crate::domain::{ReconnectKind, ServiceUrl};
use crate::providers::error::{tidy, Redactor};
use crate::providers::xml::{self, Element, XmlLimits};
use crate::secret::SessionId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

pub const TWINFIELD_NS: &str = "http://www.twinfield.com/";
pub const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
pub const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";
/// The fault detail code of "Access denied. Token invalid."
pub const TOKEN_INVALID_CODE: &str = "354";

/// Every value of the session service's `LogonResult` (seed 004).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LogonResult {
    Ok,
    Blocked,
    Untrusted,
    Invalid,
    Deleted,
    Disabled,
    OrganisationInactive,
    ClientInvalid,
    Failed,
    TokenInvalid,
    NoAvailableCompanies,
    OAuth2AuthenticationRequired,
}

impl LogonResult {
    pub const ALL: [LogonResult; 12] = [
        Self::Ok,
        Self::Blocked,
        Self::Untrusted,
        Self::Invalid,
        Self::Deleted,
        Self::Disabled,
        Self::OrganisationInactive,
        Self::ClientInvalid,
        Self::Failed,
        Self::TokenInvalid,
        Self::NoAvailableCompanies,
        Self::OAuth2AuthenticationRequired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "Ok",
            Self::Blocked => "Blocked",
            Self::Untrusted => "Untrusted",
            Self::Invalid => "Invalid",
            Self::Deleted => "Deleted",
            Self::Disabled => "Disabled",
            Self::OrganisationInactive => "OrganisationInactive",
            Self::ClientInvalid => "ClientInvalid",
            Self::Failed => "Failed",
            Self::TokenInvalid => "TokenInvalid",
            Self::NoAvailableCompanies => "NoAvailableCompanies",
            Self::OAuth2AuthenticationRequired => "OAuth2AuthenticationRequired",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(value.trim()))
    }

    /// What the caller does about it.
    pub fn verdict(self) -> LogonVerdict {
        match self {
            Self::Ok => LogonVerdict::Ok,
            // Twinfield: "Log-on is blocked, because of system maintenance."
            Self::Blocked | Self::Failed => LogonVerdict::RetryLater,
            Self::TokenInvalid => LogonVerdict::RefreshAccessToken,
            Self::Invalid => LogonVerdict::Reconnect(ReconnectKind::GrantRevoked),
            Self::ClientInvalid => LogonVerdict::Reconnect(ReconnectKind::ClientMisconfigured),
            Self::OAuth2AuthenticationRequired => {
                LogonVerdict::Reconnect(ReconnectKind::LegacyCredentialsRetired)
            }
            // A person must act at Twinfield; nothing about the grant or the organisation is known
            // to be wrong, so the connection stays as it is.
            Self::Untrusted | Self::NoAvailableCompanies => LogonVerdict::Refused,
            Self::Deleted | Self::Disabled | Self::OrganisationInactive => LogonVerdict::Disabled,
        }
    }

    /// A sentence for people.
    pub fn explain(self) -> &'static str {
        match self {
            Self::Ok => "Log-on successful.",
            Self::Blocked => "Log-on is blocked because of system maintenance; try again later.",
            Self::Untrusted => "Log-on is not trusted; an administrator must allow it in Twinfield.",
            Self::Invalid => "The credentials are invalid; authorize the connection again.",
            Self::Deleted => "The user has been deleted in Twinfield.",
            Self::Disabled => "The user has been disabled in Twinfield.",
            Self::OrganisationInactive => "The organisation is inactive in Twinfield.",
            Self::ClientInvalid => "Twinfield rejects the app's client credentials.",
            Self::Failed => "Log-on failed at Twinfield; try again later.",
            Self::TokenInvalid => "Twinfield rejected the access token; refresh it and try again.",
            Self::NoAvailableCompanies => "The user has no companies available in Twinfield.",
            Self::OAuth2AuthenticationRequired => {
                "The organisation has moved to OAuth 2.0; the old credentials no longer work: reconnect."
            }
        }
    }
}

impl fmt::Display for LogonResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `nextAction` of a logon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NextAction {
    None,
    SMSLogon,
    ChangePassword,
}

impl NextAction {
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            v if v.eq_ignore_ascii_case("None") || v.is_empty() => Some(Self::None),
            v if v.eq_ignore_ascii_case("SMSLogon") => Some(Self::SMSLogon),
            v if v.eq_ignore_ascii_case("ChangePassword") => Some(Self::ChangePassword),
            _ => None,
        }
    }
}

/// What to do about a logon's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogonVerdict {
    /// A session is open.
    Ok,
    /// Passing trouble (maintenance, a failed log-on): try again later.
    RetryLater,
    /// The access token was refused: refresh it and log on again; reconnect if that fails too.
    RefreshAccessToken,
    /// Only a person can fix it, by authorizing again.
    Reconnect(ReconnectKind),
    /// Twinfield blocked, disabled or deleted the user or organisation (connection status `disabled`).
    Disabled,
    /// Logged on, but the user must first act in Twinfield (SMS log-on, change password).
    PersonMustAct,
    /// Refused for a reason a person resolves in Twinfield (an untrusted log-on, no companies); the
    /// connection itself is not known to be broken.
    Refused,
}

/// An open session on a cluster. The id grants access like a token does.
#[derive(Debug, Clone)]
pub struct TwinfieldSession {
    pub session_id: SessionId,
    pub cluster_url: ServiceUrl,
}

/// A logon's answer.
#[derive(Debug, Clone)]
pub struct Logon {
    pub result: LogonResult,
    pub next_action: NextAction,
    /// From the answer's SOAP header; empty ids are dropped.
    pub session_id: Option<SessionId>,
    pub cluster_url: Option<ServiceUrl>,
    /// The answer's `Retry-After`, if it had one (a `Blocked` answer during maintenance may).
    pub retry_after: Option<Duration>,
}

impl Logon {
    pub fn verdict(&self) -> LogonVerdict {
        match (self.result.verdict(), self.next_action) {
            (LogonVerdict::Ok, NextAction::SMSLogon | NextAction::ChangePassword) => {
                LogonVerdict::PersonMustAct
            }
            (LogonVerdict::Ok, NextAction::None) if self.session().is_none() => {
                LogonVerdict::RetryLater
            }
            (verdict, _) => verdict,
        }
    }

    /// The session, when the logon opened one.
    pub fn session(&self) -> Option<TwinfieldSession> {
        match (self.result, &self.session_id, &self.cluster_url) {
            (LogonResult::Ok, Some(id), Some(cluster)) => Some(TwinfieldSession {
                session_id: id.clone(),
                cluster_url: cluster.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectCompanyResult {
    Ok,
    /// The company code is unknown to the organisation, or not available to the user.
    Invalid,
}

/// A SOAP fault, in the provider's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapFault {
    /// `soap:Client`, `soap12:Sender`, ...
    pub code: String,
    pub message: String,
    /// Twinfield's detail `code` (354: token invalid), when present.
    pub detail_code: Option<String>,
}

/// Why a session-service call failed. Messages carry no token or session id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("Twinfield rejected the access token ({message}): refresh it and try again")]
    AccessTokenInvalid { message: String },
    #[error("the Twinfield session is no longer valid ({message}): log on again")]
    SessionExpired { message: String },
    #[error("Twinfield answered with SOAP fault {}: {}", .0.code, .0.message)]
    Fault(SoapFault),
    #[error("Twinfield is rate limiting{}", retry_after.map(|d| format!("; retry after {} s", d.as_secs())).unwrap_or_default())]
    RateLimited { retry_after: Option<Duration> },
    #[error("Twinfield is unavailable: {detail}")]
    Unavailable {
        detail: String,
        /// The call may have been acted on.
        outcome_unknown: bool,
    },
    #[error("Twinfield's answer could not be read: {0}")]
    Malformed(String),
    /// The login host or cluster is at an address the broker does not call: a configuration
    /// problem, not an outage.
    #[error("Twinfield was not called: {0}")]
    AddressRefused(String),
}

impl SessionError {
    /// Whether trying again later may help without a person.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable { .. })
    }

    pub(super) fn scrub(self, redactor: &Redactor) -> Self {
        match self {
            Self::AccessTokenInvalid { message } => Self::AccessTokenInvalid {
                message: redactor.clean(&message),
            },
            Self::SessionExpired { message } => Self::SessionExpired {
                message: redactor.clean(&message),
            },
            Self::Fault(f) => Self::Fault(SoapFault {
                code: redactor.clean(&f.code),
                message: redactor.clean(&f.message),
                detail_code: f.detail_code.map(|c| redactor.clean(&c)),
            }),
            Self::Unavailable {
                detail,
                outcome_unknown,
            } => Self::Unavailable {
                detail: redactor.clean(&detail),
                outcome_unknown,
            },
            Self::Malformed(why) => Self::Malformed(redactor.clean(&why)),
            other => other,
        }
    }
}

/// An answer as it came: for the pure parsers below.
#[derive(Debug, Clone, Copy)]
pub struct SoapReply<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub retry_after: Option<Duration>,
    pub body: &'a [u8],
}

/// The SOAP header's Twinfield `Header` children and the operation's response element.
#[derive(Debug)]
pub struct SoapAnswer {
    pub header: Option<Element>,
    pub response: Element,
}

/// Reads an envelope and turns faults, rate limits and outages into errors. Never panics.
pub fn read_soap_answer(reply: SoapReply<'_>, operation: &str) -> Result<SoapAnswer, SessionError> {
    if reply.status == 429 {
        return Err(SessionError::RateLimited {
            retry_after: reply.retry_after,
        });
    }
    let not_soap = |why: String| {
        if reply.status >= 500 {
            SessionError::Unavailable {
                detail: format!("HTTP {} without a SOAP answer ({why})", reply.status),
                outcome_unknown: true,
            }
        } else {
            SessionError::Malformed(format!("HTTP {}: {why}", reply.status))
        }
    };
    let root = xml::parse(reply.body, reply.content_type, XmlLimits::default())
        .map_err(|e| not_soap(e.0))?;
    let soap_ns = root.namespace.as_deref();
    if root.name != "Envelope" || !matches!(soap_ns, Some(SOAP11_NS | SOAP12_NS)) {
        return Err(not_soap("not a SOAP envelope".into()));
    }
    let in_soap = |e: &&Element| e.namespace.as_deref() == soap_ns;
    let body = root
        .children
        .iter()
        .find(|e| e.name == "Body" && in_soap(e))
        .ok_or_else(|| not_soap("no SOAP Body".into()))?;
    let first = body
        .children
        .first()
        .ok_or_else(|| not_soap("an empty SOAP Body".into()))?;
    if first.name == "Fault" && first.namespace.as_deref() == soap_ns {
        return Err(fault_error(read_fault(first)));
    }
    if !(200..300).contains(&reply.status) {
        return Err(not_soap(format!(
            "a {} element instead of a fault",
            tidy(&first.name, 60)
        )));
    }
    let expected = format!("{operation}Response");
    if first.name != expected {
        return Err(SessionError::Malformed(format!(
            "expected {expected}, got {}",
            tidy(&first.name, 60)
        )));
    }
    let header = root
        .children
        .iter()
        .find(|e| e.name == "Header" && in_soap(e))
        .and_then(|h| h.children.iter().find(|c| c.name == "Header").cloned());
    Ok(SoapAnswer {
        header,
        response: first.clone(),
    })
}

fn read_fault(fault: &Element) -> SoapFault {
    // SOAP 1.1: faultcode / faultstring / detail. SOAP 1.2: Code/Value / Reason/Text / Detail.
    let code = fault
        .child_text("faultcode")
        .or_else(|| fault.child("Code").and_then(|c| c.child_text("Value")))
        .unwrap_or_default();
    let message = fault
        .child_text("faultstring")
        .or_else(|| fault.child("Reason").and_then(|r| r.child_text("Text")))
        .unwrap_or_default();
    let codes = numeric_codes(fault);
    // 354 wins over any other code the fault also carries: it is the one the caller acts on.
    let detail_code = codes
        .iter()
        .find(|c| *c == TOKEN_INVALID_CODE)
        .or(codes.first())
        .cloned();
    SoapFault {
        code: tidy(code, 100),
        message: tidy(message, 300),
        detail_code,
    }
}

/// Twinfield's numeric fault codes, wherever the fault carries them: a `code` element (detail or
/// elsewhere, any namespace, any case) or a `code` attribute on any element. The layout of the 354
/// fault is not published, and its text is localised ("Access denied." / "Toegang geweigerd."), so the
/// number is the only stable signal. SOAP 1.2's own `Code` holds a `Value` child, not a number, and
/// is skipped by the numeric test.
fn numeric_codes(fault: &Element) -> Vec<String> {
    let numeric = |v: &str| {
        let v = v.trim();
        (!v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.to_string())
    };
    let mut codes = Vec::new();
    for element in fault.walk() {
        if element.name.eq_ignore_ascii_case("code") {
            codes.extend(numeric(&element.text));
        }
        let attributes = element.attributes.iter();
        codes.extend(
            attributes
                .filter(|(n, _)| n.eq_ignore_ascii_case("code"))
                .filter_map(|(_, v)| numeric(v)),
        );
    }
    codes
}

fn fault_error(fault: SoapFault) -> SessionError {
    let lower = fault.message.to_lowercase();
    // The English text is a last resort for a fault that carries no code at all.
    let by_text = fault.detail_code.is_none() && lower.contains("token invalid");
    if fault.detail_code.as_deref() == Some(TOKEN_INVALID_CODE) || by_text {
        SessionError::AccessTokenInvalid {
            message: fault.message,
        }
    } else if lower.contains("not valid anymore") || lower.contains("log on again") {
        SessionError::SessionExpired {
            message: fault.message,
        }
    } else {
        SessionError::Fault(fault)
    }
}

/// Reads a logon answer (`AccessTokenLogon`, `OAuthLogon`, `Logon`). `cluster` checks the reported
/// cluster against the allow-list and applies the base-URL overrides.
pub fn read_logon(
    reply: SoapReply<'_>,
    operation: &str,
    cluster: &dyn Fn(&str) -> Result<ServiceUrl, String>,
) -> Result<Logon, SessionError> {
    let answer = read_soap_answer(reply, operation)?;
    let result_text = answer
        .response
        .child_text(&format!("{operation}Result"))
        .ok_or_else(|| SessionError::Malformed(format!("the answer has no {operation}Result")))?;
    let result = LogonResult::parse(result_text).ok_or_else(|| {
        SessionError::Malformed(format!("unknown LogonResult {:?}", tidy(result_text, 60)))
    })?;
    let next_action = match answer.response.child_text("nextAction") {
        None => NextAction::None,
        Some(v) => NextAction::parse(v).ok_or_else(|| {
            SessionError::Malformed(format!("unknown nextAction {:?}", tidy(v, 60)))
        })?,
    };
    let session_id = answer
        .header
        .as_ref()
        .and_then(|h| h.child_text("SessionID"))
        .filter(|id| !id.is_empty())
        .map(SessionId::new);
    let cluster_url = match answer
        .response
        .child_text("cluster")
        .filter(|c| !c.is_empty())
    {
        None => None,
        Some(c) => Some(
            cluster(c)
                .map_err(|e| SessionError::Malformed(format!("cluster: {}", tidy(&e, 400))))?,
        ),
    };
    if result == LogonResult::Ok && (session_id.is_none() || cluster_url.is_none()) {
        return Err(SessionError::Malformed(
            "a successful logon without a SessionID or cluster".into(),
        ));
    }
    Ok(Logon {
        result,
        next_action,
        session_id,
        cluster_url,
        retry_after: reply.retry_after,
    })
}

/// Reads a `SelectCompany` answer.
pub fn read_select_company(reply: SoapReply<'_>) -> Result<SelectCompanyResult, SessionError> {
    let answer = read_soap_answer(reply, "SelectCompany")?;
    match answer
        .response
        .child_text("SelectCompanyResult")
        .map(str::trim)
    {
        Some(v) if v.eq_ignore_ascii_case("Ok") => Ok(SelectCompanyResult::Ok),
        Some(v) if v.eq_ignore_ascii_case("Invalid") => Ok(SelectCompanyResult::Invalid),
        Some(v) => Err(SessionError::Malformed(format!(
            "unknown SelectCompanyResult {:?}",
            tidy(v, 60)
        ))),
        None => Err(SessionError::Malformed(
            "the answer has no SelectCompanyResult".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> SoapReply<'_> {
        SoapReply {
            status,
            content_type: Some("text/xml; charset=utf-8"),
            retry_after: None,
            body: body.as_bytes(),
        }
    }

    fn same(u: &str) -> Result<ServiceUrl, String> {
        ServiceUrl::parse(u).map_err(String::from)
    }

    const OK_11: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Header><Header xmlns="http://www.twinfield.com/"><SessionID>sess-1</SessionID><AccessToken>x</AccessToken></Header></soap:Header>
  <soap:Body><AccessTokenLogonResponse xmlns="http://www.twinfield.com/">
    <AccessTokenLogonResult>Ok</AccessTokenLogonResult><nextAction>None</nextAction><cluster>https://c3.twinfield.com</cluster>
  </AccessTokenLogonResponse></soap:Body></soap:Envelope>"#;

    #[test]
    fn a_successful_logon_gives_a_session() {
        let logon = read_logon(reply(200, OK_11), "AccessTokenLogon", &same).unwrap();
        assert_eq!(logon.verdict(), LogonVerdict::Ok);
        let session = logon.session().unwrap();
        assert_eq!(session.session_id.expose(), "sess-1");
        assert_eq!(session.cluster_url.base(), "https://c3.twinfield.com");
    }

    #[test]
    fn soap12_with_other_prefixes_is_read() {
        let xml = r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Header><t:Header xmlns:t="http://www.twinfield.com/"><t:SessionID>s2</t:SessionID></t:Header></e:Header>
<e:Body><t:OAuthLogonResponse xmlns:t="http://www.twinfield.com/"><t:OAuthLogonResult>OAuth2AuthenticationRequired</t:OAuthLogonResult><t:nextAction>None</t:nextAction></t:OAuthLogonResponse></e:Body></e:Envelope>"#;
        let logon = read_logon(reply(200, xml), "OAuthLogon", &same).unwrap();
        assert_eq!(
            logon.verdict(),
            LogonVerdict::Reconnect(ReconnectKind::LegacyCredentialsRetired)
        );
        assert!(logon.session().is_none());
    }

    /// Only `Ok` opens a session; a refusal's `SessionID` may be empty or missing, and is none either way.
    #[test]
    fn a_refused_logon_has_no_session_with_an_empty_or_absent_id() {
        let blocked = OK_11.replace(">Ok<", ">Blocked<");
        let empty = blocked.replace("sess-1", "");
        let absent = blocked.replace("<SessionID>sess-1</SessionID>", "");
        for xml in [blocked, empty, absent] {
            let logon = read_logon(reply(200, &xml), "AccessTokenLogon", &same).unwrap();
            assert!(logon.session().is_none(), "{xml}");
            assert_eq!(logon.verdict(), LogonVerdict::RetryLater);
        }
        let ok_without_id = OK_11.replace("sess-1", "");
        assert!(matches!(
            read_logon(reply(200, &ok_without_id), "AccessTokenLogon", &same),
            Err(SessionError::Malformed(_))
        ));
    }

    #[test]
    fn every_result_value_has_a_verdict_and_round_trips() {
        for result in LogonResult::ALL {
            assert_eq!(LogonResult::parse(result.as_str()), Some(result));
            let _ = result.verdict();
            assert!(!result.explain().is_empty());
        }
        assert_eq!(LogonResult::parse("Nope"), None);
    }

    #[test]
    fn faults_are_classified() {
        let fault = |text: &str, detail: &str| {
            format!(
                r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>{text}</faultstring><detail>{detail}</detail></soap:Fault></soap:Body></soap:Envelope>"#
            )
        };
        let e = read_logon(
            reply(
                500,
                &fault("Access denied. Token invalid.", "<code>354</code>"),
            ),
            "AccessTokenLogon",
            &same,
        );
        assert!(
            matches!(e, Err(SessionError::AccessTokenInvalid { .. })),
            "{e:?}"
        );
        let e = read_select_company(reply(
            500,
            &fault(
                "Your logon credentials are not valid anymore. Try to log on again.",
                "",
            ),
        ));
        assert!(
            matches!(e, Err(SessionError::SessionExpired { .. })),
            "{e:?}"
        );
        let e = read_select_company(reply(
            500,
            &fault("Something else", "<x><code>12</code></x>"),
        ));
        let Err(SessionError::Fault(f)) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            (f.code.as_str(), f.detail_code.as_deref()),
            ("soap:Client", Some("12"))
        );
        let soap12 = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason><s:Text xml:lang="en">Access denied. Token invalid.</s:Text></s:Reason><s:Detail><code>354</code></s:Detail></s:Fault></s:Body></s:Envelope>"#;
        assert!(matches!(
            read_select_company(reply(500, soap12)),
            Err(SessionError::AccessTokenInvalid { .. })
        ));
    }

    /// Every place the 354 may be carried, in either SOAP version, in Dutch, and in UTF-16.
    #[test]
    fn the_token_invalid_fault_is_known_by_its_code_in_any_shape() {
        let soap11 = |detail: &str, text: &str| {
            format!(
                r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><soap:Fault><faultcode>soap:Client</faultcode><faultstring>{text}</faultstring><detail>{detail}</detail></soap:Fault></soap:Body></soap:Envelope>"#
            )
        };
        let dutch = "Toegang geweigerd. Token ongeldig.";
        let shapes = [
            soap11("<code>354</code>", dutch),
            soap11(r#"<Error code="354" msg="x"/>"#, dutch),
            soap11(r#"<t:Errors xmlns:t="http://www.twinfield.com/"><t:Code>354</t:Code></t:Errors>"#, dutch),
            soap11(r#"<x:e xmlns:x="urn:x" x:code=" 354 "/>"#, "Zugriff verweigert."),
            soap11("<code>12</code><code>354</code>", dutch),
            r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body><e:Fault><e:Code><e:Value>e:Sender</e:Value></e:Code><e:Reason><e:Text xml:lang="nl">Toegang geweigerd. Token ongeldig.</e:Text></e:Reason><e:Detail><code>354</code></e:Detail></e:Fault></e:Body></e:Envelope>"#.to_string(),
        ];
        for xml in &shapes {
            let e = read_select_company(reply(500, xml));
            assert!(
                matches!(e, Err(SessionError::AccessTokenInvalid { .. })),
                "{xml}: {e:?}"
            );
        }
        let mut utf16 = vec![0xFF, 0xFE];
        let declared = format!("<?xml version=\"1.0\" encoding=\"utf-16\"?>{}", shapes[0]);
        utf16.extend(declared.encode_utf16().flat_map(u16::to_le_bytes));
        let e = read_select_company(SoapReply {
            status: 500,
            content_type: Some("text/xml; charset=utf-16"),
            retry_after: None,
            body: &utf16,
        });
        assert!(
            matches!(e, Err(SessionError::AccessTokenInvalid { .. })),
            "{e:?}"
        );
        // Another code is another fault, whatever the words; "Toegang geweigerd" alone is not 354 (it
        // also heads "Company ontbreekt in request header").
        for other in [
            soap11("<code>103</code>", "Access denied. Token invalid."),
            soap11(
                "",
                "Toegang geweigerd. Company ontbreekt in request header.",
            ),
            soap11(r#"<Error code="3540"/>"#, dutch),
        ] {
            let e = read_select_company(reply(500, &other));
            assert!(matches!(e, Err(SessionError::Fault(_))), "{other}: {e:?}");
        }
    }

    #[test]
    fn outages_and_junk_are_told_apart() {
        assert!(matches!(
            read_select_company(reply(503, "<html>down</html>")),
            Err(SessionError::Unavailable { .. })
        ));
        assert!(matches!(
            read_select_company(reply(200, "<html>hi</html>")),
            Err(SessionError::Malformed(_))
        ));
        assert!(matches!(
            read_select_company(reply(429, "")),
            Err(SessionError::RateLimited { .. })
        ));
        assert!(matches!(
            read_logon(
                reply(200, &OK_11.replace(">Ok<", ">Maybe<")),
                "AccessTokenLogon",
                &same
            ),
            Err(SessionError::Malformed(_))
        ));
    }
}
