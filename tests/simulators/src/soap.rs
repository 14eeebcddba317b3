//! Just enough SOAP 1.1 / 1.2 for an ASMX service: read the operation, its parameters and the
//! Twinfield header from a request; write answers and faults in the request's SOAP version.

use crate::util::escape;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use std::collections::HashMap;

pub(crate) const TWINFIELD_NS: &str = "http://www.twinfield.com/";
const SOAP11_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_NS: &str = "http://www.w3.org/2003/05/soap-envelope";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SoapVersion {
    Soap11,
    Soap12,
}

#[derive(Debug)]
pub(crate) struct SoapRequest {
    pub version: SoapVersion,
    pub operation: String,
    /// Children of `soap:Header/Header` (SessionID, AccessToken, CompanyCode), by local name.
    pub header: HashMap<String, String>,
    /// Children of the operation element, by local name.
    pub params: HashMap<String, String>,
}

impl SoapRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn param(&self, name: &str) -> &str {
        self.params
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// Parses an envelope; the error is the text of the fault to answer with.
pub(crate) fn parse(xml: &str) -> Result<SoapRequest, String> {
    let mut reader = NsReader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut path: Vec<String> = Vec::new();
    let mut version = None;
    let mut request = SoapRequest {
        version: SoapVersion::Soap11,
        operation: String::new(),
        header: HashMap::new(),
        params: HashMap::new(),
    };
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| format!("The request is not well-formed XML: {e}"))?;
        let ns = match ns {
            ResolveResult::Bound(n) => String::from_utf8_lossy(n.as_ref()).into_owned(),
            _ => String::new(),
        };
        match event {
            Event::Start(e) | Event::Empty(e) if path.is_empty() => {
                if e.local_name().as_ref() != b"Envelope" {
                    return Err("The root element is not a SOAP Envelope.".into());
                }
                version = Some(match ns.as_str() {
                    SOAP11_NS => SoapVersion::Soap11,
                    SOAP12_NS => SoapVersion::Soap12,
                    other => return Err(format!("Unknown SOAP envelope namespace {other:?}.")),
                });
                path.push("Envelope".into());
            }
            Event::Start(e) => path.push(local(&e)),
            Event::Empty(e) => {
                let name = local(&e);
                on_element(&mut request, &path, &name);
                path.push(name);
                on_text(&mut request, &path, "");
                path.pop();
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Text(t) => on_text(&mut request, &path, &t.decode().map_err(|e| e.to_string())?),
            Event::CData(t) => {
                on_text(&mut request, &path, &t.decode().map_err(|e| e.to_string())?)
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("Unknown entity &{name};"))?
                            .to_string()
                    }
                };
                on_text(&mut request, &path, &text);
            }
            Event::Eof => break,
            _ => {}
        }
        if let [_, body, op] = path.as_slice() {
            if body == "Body" && request.operation.is_empty() {
                request.operation = op.clone();
            }
        }
    }
    request.version = version.ok_or("The request has no SOAP Envelope.")?;
    if request.operation.is_empty() {
        return Err("The SOAP Body has no operation.".into());
    }
    Ok(request)
}

fn local(e: &quick_xml::events::BytesStart) -> String {
    String::from_utf8_lossy(e.local_name().as_ref()).into_owned()
}

/// An empty operation element (`<KeepAlive/>`) has no children to reveal it.
fn on_element(request: &mut SoapRequest, path: &[String], name: &str) {
    if path.len() == 2 && path[1] == "Body" && request.operation.is_empty() {
        request.operation = name.to_string();
    }
}

fn on_text(request: &mut SoapRequest, path: &[String], text: &str) {
    match path {
        [_, h, hh, name] if h == "Header" && hh == "Header" => request
            .header
            .entry(name.clone())
            .or_default()
            .push_str(text),
        [_, b, _, name] if b == "Body" => request
            .params
            .entry(name.clone())
            .or_default()
            .push_str(text),
        _ => {}
    }
}

/// The action a SOAP 1.1 request names in `SOAPAction`, or a 1.2 request in its content type.
pub(crate) fn declared_action(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get("SOAPAction").and_then(|v| v.to_str().ok()) {
        return Some(v.trim().trim_matches('"').to_string());
    }
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    content_type.split(';').find_map(|part| {
        let value = part.trim().strip_prefix("action=")?;
        Some(value.trim_matches('"').to_string())
    })
}

fn prefix(version: SoapVersion) -> (&'static str, &'static str) {
    match version {
        SoapVersion::Soap11 => ("soap", SOAP11_NS),
        SoapVersion::Soap12 => ("soap12", SOAP12_NS),
    }
}

fn envelope(version: SoapVersion, status: StatusCode, header: &str, body: &str) -> Response {
    let (p, ns) = prefix(version);
    let header = if header.is_empty() {
        String::new()
    } else {
        format!("<{p}:Header>{header}</{p}:Header>")
    };
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
         <{p}:Envelope xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" \
         xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" xmlns:{p}=\"{ns}\">\
         {header}<{p}:Body>{body}</{p}:Body></{p}:Envelope>"
    );
    let content_type = match version {
        SoapVersion::Soap11 => "text/xml; charset=utf-8",
        SoapVersion::Soap12 => "application/soap+xml; charset=utf-8",
    };
    (status, [(header::CONTENT_TYPE, content_type)], xml).into_response()
}

/// A successful answer: `header` is the inner XML of the Twinfield `Header`, if any.
pub(crate) fn answer(version: SoapVersion, header: Option<&str>, body: &str) -> Response {
    let header = header
        .map(|h| format!("<Header xmlns=\"{TWINFIELD_NS}\">{h}</Header>"))
        .unwrap_or_default();
    envelope(version, StatusCode::OK, &header, body)
}

/// `<name>value</name>` with the value escaped.
pub(crate) fn element(name: &str, value: &str) -> String {
    format!("<{name}>{}</{name}>", escape(value))
}

/// Who is at fault. Every fault the session service raises here blames the caller.
#[derive(Debug, Clone, Copy)]
pub(crate) enum FaultCode {
    /// SOAP 1.1 `Client`, 1.2 `Sender`.
    Client,
}

/// A fault, answered with HTTP 500 as ASMX does. `detail` is inner XML.
pub(crate) fn fault(
    version: SoapVersion,
    code: FaultCode,
    text: &str,
    detail: Option<&str>,
) -> Response {
    let (p, _) = prefix(version);
    let text = escape(text);
    let body = match version {
        SoapVersion::Soap11 => {
            let FaultCode::Client = code;
            let code = "Client";
            let detail = detail
                .map(|d| format!("<detail>{d}</detail>"))
                .unwrap_or_else(|| "<detail />".into());
            format!("<{p}:Fault><faultcode>{p}:{code}</faultcode><faultstring>{text}</faultstring>{detail}</{p}:Fault>")
        }
        SoapVersion::Soap12 => {
            let FaultCode::Client = code;
            let code = "Sender";
            let detail = detail
                .map(|d| format!("<{p}:Detail>{d}</{p}:Detail>"))
                .unwrap_or_default();
            format!(
                "<{p}:Fault><{p}:Code><{p}:Value>{p}:{code}</{p}:Value></{p}:Code>\
                 <{p}:Reason><{p}:Text xml:lang=\"en\">{text}</{p}:Text></{p}:Reason>{detail}</{p}:Fault>"
            )
        }
    };
    envelope(version, StatusCode::INTERNAL_SERVER_ERROR, "", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_operation_params_and_header_of_a_soap11_request() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
  <soap:Header><Header xmlns="http://www.twinfield.com/"><SessionID>abc</SessionID></Header></soap:Header>
  <soap:Body><SelectCompany xmlns="http://www.twinfield.com/"><company>A&amp;B</company></SelectCompany></soap:Body>
</soap:Envelope>"#;
        let r = parse(xml).unwrap();
        assert_eq!(r.version, SoapVersion::Soap11);
        assert_eq!(r.operation, "SelectCompany");
        assert_eq!(r.header("SessionID"), Some("abc"));
        assert_eq!(r.param("company"), "A&B");
    }

    #[test]
    fn reads_an_empty_operation_of_a_soap12_request() {
        let xml = r#"<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><KeepAlive xmlns="http://www.twinfield.com/"/></s:Body></s:Envelope>"#;
        let r = parse(xml).unwrap();
        assert_eq!(r.version, SoapVersion::Soap12);
        assert_eq!(r.operation, "KeepAlive");
    }

    #[test]
    fn rejects_a_foreign_envelope() {
        assert!(parse("<Envelope xmlns=\"urn:x\"><Body/></Envelope>").is_err());
        assert!(parse("not xml <").is_err());
    }
}
