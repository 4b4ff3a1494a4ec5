//! The JSON that SNARE reads back (spec section 1), byte for byte as Tanner 0.6.0 writes it:
//! Python's `json.dumps`, so `", "` and `": "` between items and every non-ASCII character
//! escaped.

use std::io;

use serde::Serialize;
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

/// What SNARE does with a request: type 1 (serve the page) is all flowmon answers for now.
#[derive(Serialize)]
struct Detection {
    name: AttackType,
    order: u8,
    #[serde(rename = "type")]
    kind: u8,
    version: &'static str,
}

#[derive(Serialize)]
struct EventMessage {
    detection: Detection,
    sess_uuid: Uuid,
}

/// The answer to an event that parsed: its detection and the session it joined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    pub attack: AttackType,
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
                        kind: 1,
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

/// `GET /dorks`: flowmon plants no hidden links yet, so the list is empty.
pub fn dorks() -> Vec<u8> {
    #[derive(Serialize)]
    struct Dorks {
        dorks: &'static [&'static str],
    }
    to_python_json(&Envelope {
        version: TANNER_VERSION,
        response: Dorks { dorks: &[] },
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
            sess_uuid,
        };
        assert_eq!(
            String::from_utf8(to_python_json(&answer)).unwrap(),
            r#"{"version": "0.6.0", "response": {"message": {"detection": {"name": "index", "order": 1, "type": 1, "version": "0.6.0"}, "sess_uuid": "f8d8c60e-2ab5-4958-b83a-23684b42d550"}}}"#
        );
        assert_eq!(version(), br#"{"version": "0.6.0"}"#);
        assert_eq!(
            dorks(),
            br#"{"version": "0.6.0", "response": {"dorks": []}}"#
        );
        assert_eq!(
            error("JSONDecodeError"),
            br#"{"version": "0.6.0", "response": {"message": "JSONDecodeError"}}"#
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
