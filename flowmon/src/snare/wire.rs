//! The JSON that SNARE reads back (spec section 1), byte for byte as Tanner 0.6.0 writes it:
//! Python's `json.dumps`, so `", "` and `": "` between items and every non-ASCII character
//! escaped.

use std::io;

use serde::{Serialize, ser::SerializeMap as _};
use serde_json::ser::Formatter;
use uuid::Uuid;

use super::detection::AttackType;

/// The Tanner version flowmon speaks for; SNARE 0.3.0 accepts 0.5.0 to 0.6.0.
pub const TANNER_VERSION: &str = "0.6.0";

/// Tanner's envelope around every answer.
#[derive(Serialize)]
struct Envelope<T> {
    version: &'static str,
    response: T,
}

#[derive(Serialize)]
struct Message<T> {
    message: T,
}

/// What SNARE does with a request, in Tanner's key order: type 1 without a payload (serve the
/// page), 2 with content, 3 with a status.
#[derive(Serialize)]
struct Detection<'a> {
    name: AttackType,
    order: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a Payload>,
    #[serde(rename = "type")]
    kind: u8,
    version: &'static str,
}

#[derive(Serialize)]
struct EventMessage<'a> {
    detection: Detection<'a>,
    sess_uuid: Uuid,
}

/// An emulated result for SNARE to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// `{"value": VALUE, "page": PATH or false[, "headers": {...}]}`: SNARE appends `value` to
    /// the `<body>` of `page`, or serves it alone as text/plain when `page` is `None`, and adds
    /// `headers`.
    Content {
        value: String,
        page: Option<String>,
        headers: Option<Vec<(String, String)>>,
    },
    /// `{"status_code": N}`: SNARE answers that status with no body.
    Status(u16),
}

impl Payload {
    /// Tanner's rule: no payload is type 1; one without `status_code` 2; else 3.
    fn kind(payload: Option<&Payload>) -> u8 {
        match payload {
            None => 1,
            Some(Payload::Content { .. }) => 2,
            Some(Payload::Status(_)) => 3,
        }
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// A page's path, or `false`.
        #[derive(Serialize)]
        #[serde(untagged)]
        enum Page<'a> {
            Path(&'a str),
            None(bool),
        }
        struct Headers<'a>(&'a [(String, String)]);
        impl Serialize for Headers<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (name, value) in self.0 {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(None)?;
        match self {
            Payload::Content {
                value,
                page,
                headers,
            } => {
                map.serialize_entry("value", value)?;
                let page = page.as_deref().map_or(Page::None(false), Page::Path);
                map.serialize_entry("page", &page)?;
                if let Some(headers) = headers {
                    map.serialize_entry("headers", &Headers(headers))?;
                }
            }
            Payload::Status(status) => map.serialize_entry("status_code", status)?,
        }
        map.end()
    }
}

/// The answer to an event that parsed: its detection, the emulated result if any, and the
/// session it joined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub attack: AttackType,
    pub payload: Option<Payload>,
    pub sess_uuid: Uuid,
}

impl Serialize for Answer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Envelope {
            version: TANNER_VERSION,
            response: Message {
                message: EventMessage {
                    detection: Detection {
                        name: self.attack,
                        order: self.attack.order(),
                        payload: self.payload.as_ref(),
                        kind: Payload::kind(self.payload.as_ref()),
                        version: TANNER_VERSION,
                    },
                    sess_uuid: self.sess_uuid,
                },
            },
        }
        .serialize(serializer)
    }
}

/// `GET /version`.
pub fn version() -> Vec<u8> {
    to_python_json(&serde_json::json!({ "version": TANNER_VERSION }))
}

/// `GET /dorks`: the hidden links for SNARE to plant.
pub fn dorks(dorks: &[String]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Dorks<'a> {
        dorks: &'a [String],
    }
    to_python_json(&Envelope {
        version: TANNER_VERSION,
        response: Dorks { dorks },
    })
}

/// The answer to a body that is not an event: Tanner names the Python exception it caught.
pub fn error(name: &'static str) -> Vec<u8> {
    to_python_json(&Envelope {
        version: TANNER_VERSION,
        response: Message { message: name },
    })
}

/// `value` as Python's `json.dumps(value)` writes it.
pub fn to_python_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    value
        .serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonFormatter,
        ))
        .expect("wire types have string keys and serialise infallibly into memory");
    out
}

/// `json.dumps` defaults: `separators=(", ", ": ")`, `ensure_ascii=True`.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { out.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        out: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { out.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, out: &mut W) -> io::Result<()> {
        out.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        out: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json has escaped quotes, backslashes and control characters already; Python also
        // escapes DEL and everything beyond ASCII, as UTF-16 units.
        let mut rest = fragment;
        while let Some(at) = rest.find(|c: char| !(' '..='~').contains(&c)) {
            out.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            for unit in c.encode_utf16(&mut [0; 2]) {
                write!(out, "\\u{unit:04x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        out.write_all(rest.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_byte_for_byte_tanners() {
        let sess_uuid = Uuid::parse_str("f8d8c60e-2ab5-4958-b83a-23684b42d550").unwrap();
        let answer = Answer {
            attack: AttackType::Index,
            payload: None,
            sess_uuid,
        };
        assert_eq!(
            String::from_utf8(to_python_json(&answer)).unwrap(),
            r#"{"version": "0.6.0", "response": {"message": {"detection": {"name": "index", "order": 1, "type": 1, "version": "0.6.0"}, "sess_uuid": "f8d8c60e-2ab5-4958-b83a-23684b42d550"}}}"#
        );
        assert_eq!(version(), br#"{"version": "0.6.0"}"#);
        assert_eq!(
            dorks(&["/index.php?id=".into(), "/é".into()]),
            br#"{"version": "0.6.0", "response": {"dorks": ["/index.php?id=", "/\u00e9"]}}"#
        );
        assert_eq!(
            error("JSONDecodeError"),
            br#"{"version": "0.6.0", "response": {"message": "JSONDecodeError"}}"#
        );
    }

    #[test]
    fn payloads_are_tanners_in_key_and_type() {
        let sess_uuid = Uuid::parse_str("f8d8c60e-2ab5-4958-b83a-23684b42d550").unwrap();
        let detection = |attack, payload| {
            let text = String::from_utf8(to_python_json(&Answer {
                attack,
                payload: Some(payload),
                sess_uuid,
            }))
            .unwrap();
            let start = text.find("{\"name\"").unwrap();
            let end = text.find(", \"sess_uuid\"").unwrap();
            text[start..end].to_owned()
        };
        assert_eq!(
            detection(
                AttackType::Xss,
                Payload::Content {
                    value: "<script>é</script>".into(),
                    page: Some("/index.html".into()),
                    headers: None,
                }
            ),
            r#"{"name": "xss", "order": 3, "payload": {"value": "<script>\u00e9</script>", "page": "/index.html"}, "type": 2, "version": "0.6.0"}"#
        );
        assert_eq!(
            detection(
                AttackType::Lfi,
                Payload::Content {
                    value: "root:x:0:0".into(),
                    page: None,
                    headers: None,
                }
            ),
            r#"{"name": "lfi", "order": 2, "payload": {"value": "root:x:0:0", "page": false}, "type": 2, "version": "0.6.0"}"#
        );
        assert_eq!(
            detection(
                AttackType::Crlf,
                Payload::Content {
                    value: String::new(),
                    page: Some("/a.html".into()),
                    headers: Some(vec![
                        ("next".into(), "/x".into()),
                        ("Set-Cookie".into(), "a=1".into())
                    ]),
                }
            ),
            r#"{"name": "crlf", "order": 2, "payload": {"value": "", "page": "/a.html", "headers": {"next": "/x", "Set-Cookie": "a=1"}}, "type": 2, "version": "0.6.0"}"#
        );
        assert_eq!(
            detection(AttackType::TemplateInjection, Payload::Status(500)),
            r#"{"name": "template_injection", "order": 4, "payload": {"status_code": 500}, "type": 3, "version": "0.6.0"}"#
        );
    }

    #[test]
    fn non_ascii_is_escaped_as_python_does() {
        let text = "a\u{7f}é😀\"\n~";
        assert_eq!(
            String::from_utf8(to_python_json(&[text, ""])).unwrap(),
            r#"["a\u007f\u00e9\ud83d\ude00\"\n~", ""]"#
        );
    }
}
