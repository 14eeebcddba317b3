//! A small, bounded XML reader for SOAP answers, on quick-xml.
//!
//! Hostile input gets an error, never a panic or unbounded memory: the body size is capped before
//! parsing, and so are element depth and count; a DTD is refused outright, so no custom entity is ever
//! defined, let alone expanded; only the five predefined entities and character references are read.
//! UTF-8 and UTF-16 (with a byte-order mark, an `<?xml` start or a `charset` saying so) and ISO-8859-1
//! are accepted.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_elements: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024,
            max_depth: 32,
            max_elements: 4096,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable XML: {0}")]
pub struct XmlError(pub String);

fn fail<T>(why: impl Into<String>) -> Result<T, XmlError> {
    Err(XmlError(why.into()))
}

/// An element: namespace, local name, its attributes (local names, values unescaped; namespace
/// declarations left out), its own text (trimmed) and its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    pub namespace: Option<String>,
    pub name: String,
    pub attributes: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with this local name (any namespace).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The first element with this local name at any depth below this one.
    pub fn descendant(&self, name: &str) -> Option<&Element> {
        self.children.iter().find_map(|c| {
            if c.name == name {
                Some(c)
            } else {
                c.descendant(name)
            }
        })
    }

    /// The text of the first child with this local name.
    pub fn child_text(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }

    /// The value of this element's attribute with this local name (any namespace).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// This element and every element below it, depth first.
    pub fn walk(&self) -> Box<dyn Iterator<Item = &Element> + '_> {
        Box::new(std::iter::once(self).chain(self.children.iter().flat_map(Element::walk)))
    }
}

/// Parses a document into its root element.
pub fn parse(
    bytes: &[u8],
    content_type: Option<&str>,
    limits: XmlLimits,
) -> Result<Element, XmlError> {
    if bytes.len() > limits.max_bytes {
        return fail(format!(
            "the document is larger than {} bytes",
            limits.max_bytes
        ));
    }
    let text = decode(bytes, content_type)?;
    let mut reader = NsReader::from_str(&text);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| XmlError(short(&e.to_string())))?;
        let namespace = match ns {
            ResolveResult::Bound(n) => Some(String::from_utf8_lossy(n.as_ref()).into_owned()),
            ResolveResult::Unbound => None,
            ResolveResult::Unknown(prefix) => {
                return fail(format!(
                    "undeclared namespace prefix {:?}",
                    short(&String::from_utf8_lossy(&prefix))
                ))
            }
        };
        let self_closing = matches!(event, Event::Empty(_));
        match event {
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return fail("content after the root element")
            }
            Event::Start(start) | Event::Empty(start) => {
                elements += 1;
                if elements > limits.max_elements {
                    return fail(format!("more than {} elements", limits.max_elements));
                }
                if stack.len() >= limits.max_depth {
                    return fail(format!("nested deeper than {} levels", limits.max_depth));
                }
                let opened = element(&start, namespace)?;
                if self_closing {
                    close(&mut stack, &mut root, opened);
                } else {
                    stack.push(opened);
                }
            }
            Event::End(_) => {
                let Some(mut done) = stack.pop() else {
                    return fail("an end tag without a start tag");
                };
                done.text = done.text.trim().to_string();
                close(&mut stack, &mut root, done);
            }
            Event::Text(t) => {
                let value = t.decode().map_err(|e| XmlError(short(&e.to_string())))?;
                push_text(&mut stack, &value)?;
            }
            Event::CData(t) => {
                let value = t.decode().map_err(|e| XmlError(short(&e.to_string())))?;
                push_text(&mut stack, &value)?;
            }
            Event::GeneralRef(r) => {
                let resolved = match r
                    .resolve_char_ref()
                    .map_err(|e| XmlError(short(&e.to_string())))?
                {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| XmlError(short(&e.to_string())))?;
                        match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(v) => v.to_string(),
                            None => return fail(format!("undefined entity &{};", short(&name))),
                        }
                    }
                };
                push_text(&mut stack, &resolved)?;
            }
            Event::DocType(_) => return fail("a DTD is not accepted"),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return fail("the document ends inside an element");
    }
    root.ok_or_else(|| XmlError("the document has no root element".into()))
}

fn element(start: &BytesStart<'_>, namespace: Option<String>) -> Result<Element, XmlError> {
    let name = std::str::from_utf8(start.local_name().as_ref())
        .map_err(|_| XmlError("a name is not UTF-8".into()))?
        .to_string();
    let mut attributes = Vec::new();
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| XmlError(short(&e.to_string())))?;
        let key = attribute.key;
        let is_declaration =
            key.as_ref() == b"xmlns" || key.prefix().is_some_and(|p| p.as_ref() == b"xmlns");
        if is_declaration {
            continue;
        }
        let local = String::from_utf8_lossy(key.local_name().as_ref()).into_owned();
        let value = attribute
            .unescape_value()
            .map_err(|e| XmlError(short(&e.to_string())))?
            .into_owned();
        attributes.push((local, value));
    }
    Ok(Element {
        namespace,
        name,
        attributes,
        text: String::new(),
        children: Vec::new(),
    })
}

fn close(stack: &mut [Element], root: &mut Option<Element>, done: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(done),
        None => *root = Some(done),
    }
}

fn push_text(stack: &mut [Element], value: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(open) => {
            open.text.push_str(value);
            Ok(())
        }
        None if value.trim().is_empty() => Ok(()),
        None => fail("text outside the root element"),
    }
}

fn short(text: &str) -> String {
    super::error::tidy(text, 160)
}

/// Turns the bytes into text by their byte-order mark, their first characters, the declared charset,
/// or else UTF-8.
fn decode(bytes: &[u8], content_type: Option<&str>) -> Result<String, XmlError> {
    let charset = content_type
        .and_then(|ct| {
            ct.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix("charset=")
                    .or_else(|| p.trim().strip_prefix("CHARSET="))
            })
        })
        .map(|c| c.trim_matches('"').to_ascii_lowercase());
    match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => utf8(rest),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        [b'<', 0, b'?', 0, ..] => utf16(bytes, true),
        [0, b'<', 0, b'?', ..] => utf16(bytes, false),
        _ => match charset.as_deref() {
            Some("utf-16le") => utf16(bytes, true),
            Some("utf-16" | "utf-16be") => utf16(bytes, false),
            Some("iso-8859-1" | "latin1" | "latin-1" | "us-ascii") => {
                Ok(bytes.iter().map(|b| char::from(*b)).collect())
            }
            _ => utf8(bytes),
        },
    }
}

fn utf8(bytes: &[u8]) -> Result<String, XmlError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| XmlError("the document is not valid UTF-8".into()))
}

fn utf16(bytes: &[u8], little_endian: bool) -> Result<String, XmlError> {
    if !bytes.len().is_multiple_of(2) {
        return fail("a UTF-16 document with an odd number of bytes");
    }
    let units = bytes.chunks_exact(2).map(|p| {
        if little_endian {
            u16::from_le_bytes([p[0], p[1]])
        } else {
            u16::from_be_bytes([p[0], p[1]])
        }
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .map_err(|_| XmlError("the document is not valid UTF-16".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_default(xml: &str) -> Result<Element, XmlError> {
        parse(xml.as_bytes(), None, XmlLimits::default())
    }

    #[test]
    fn reads_namespaces_text_and_entities() {
        let root = parse_default(
            r#"<?xml version="1.0"?><a:Root xmlns:a="urn:a"><b xmlns="urn:b">x &amp; y&#33; <![CDATA[<z>]]></b><c/></a:Root>"#,
        )
        .unwrap();
        assert_eq!(root.name, "Root");
        assert_eq!(root.namespace.as_deref(), Some("urn:a"));
        let b = root.child("b").unwrap();
        assert_eq!(b.namespace.as_deref(), Some("urn:b"));
        assert_eq!(b.text, "x & y! <z>");
        assert!(root.child("c").unwrap().children.is_empty());
        let with = parse_default(r#"<r xmlns:t="urn:t" t:code="3&amp;4" plain="x"/>"#).unwrap();
        assert_eq!(with.attribute("code"), Some("3&4"));
        assert_eq!(with.attribute("plain"), Some("x"));
        assert_eq!(
            with.attributes.len(),
            2,
            "namespace declarations are not attributes"
        );
        assert_eq!(
            root.walk().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["Root", "b", "c"]
        );
    }

    #[test]
    fn utf16_documents_are_read() {
        let xml = "<?xml version=\"1.0\" encoding=\"utf-16\"?><r>é</r>";
        let mut le = vec![0xFF, 0xFE];
        le.extend(xml.encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(parse(&le, None, XmlLimits::default()).unwrap().text, "é");
        let be: Vec<u8> = xml.encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(
            parse(&be, Some("text/xml; charset=utf-16"), XmlLimits::default())
                .unwrap()
                .text,
            "é"
        );
    }

    #[test]
    fn hostile_documents_are_refused() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><r>&lol2;</r>"#;
        assert!(parse_default(laughs).unwrap_err().0.contains("DTD"));
        assert!(parse_default("<r>&custom;</r>")
            .unwrap_err()
            .0
            .contains("entity"));
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse_default(&deep).unwrap_err().0.contains("deeper"));
        let many = format!("<r>{}</r>", "<a/>".repeat(5000));
        assert!(parse_default(&many).unwrap_err().0.contains("elements"));
        let big = vec![b' '; 600 * 1024];
        assert!(parse(&big, None, XmlLimits::default())
            .unwrap_err()
            .0
            .contains("larger"));
        for truncated in [
            "<r><a>x</a>",
            "<r",
            "",
            "<r></s>",
            "<a/><b/>",
            "text",
            "<p:r/>",
        ] {
            assert!(
                parse_default(truncated).is_err(),
                "{truncated:?} was accepted"
            );
        }
    }
}
