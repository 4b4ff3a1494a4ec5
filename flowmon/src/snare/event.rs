//! Validation (spec section 2): an `/event` body read leniently into an [`Event`].
//!
//! Whatever parses as JSON becomes an event. A field of the wrong type reads as missing, except
//! that numbers and booleans where text belongs read as their JSON text and numeric text where a
//! number belongs reads as the number. Unknown keys are read through and dropped. Every text is
//! cut to a size that fits its use, and maps keep at most [`MAX_ENTRIES`] entries, so a body
//! costs memory in proportion to what flowmon keeps, not to what was sent. What Python reads
//! beyond strict JSON (`NaN`, `1e400`, lone surrogate escapes, deep nesting) is read as
//! [`python_json`] says; nesting deeper than Python reads is refused like malformed JSON.

use std::{fmt, marker::PhantomData};

use indexmap::IndexMap;
use serde::{
    Deserialize, Deserializer, Serialize,
    de::{MapAccess, SeqAccess, Visitor},
};
use serde_json::Number;

use super::{python_json, tanner_time};

/// Method, sensor uuid, peer ip, and the names in headers, cookies and POST fields.
const MAX_SHORT: usize = 256;
/// The path and header values.
pub const MAX_PATH: usize = 8 * 1024;
/// Cookie values, which sessions keep.
const MAX_COOKIE: usize = 4 * 1024;
/// POST field values: scanned and logged whole up to this, never kept in a session.
const MAX_FIELD: usize = 64 * 1024;
/// Headers, cookies and POST fields each.
pub const MAX_ENTRIES: usize = 64;

/// Header names, cookies or POST fields: insertion-ordered, a repeated name keeps its first place
/// and takes the later value, as a Python dict does.
pub type Fields = IndexMap<String, Option<String>>;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Peer {
    pub ip: Option<String>,
    pub port: Option<u16>,
}

/// A validated event: what SNARE sent with Tanner's defaults filled in. Serialises as the event
/// log's validated event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub method: Option<String>,
    /// The raw request target, percent-encoding kept.
    pub path: Option<String>,
    /// Lower-cased names; `user-agent` is always present.
    pub headers: Fields,
    /// The sensor's uuid.
    pub uuid: Option<String>,
    pub peer: Peer,
    pub status: i64,
    /// Trimmed names; `sess_uuid` is always present.
    pub cookies: Fields,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_data: Option<Fields>,
    /// The sender's own time for the event (a logged event's `timestamp`), epoch seconds.
    #[serde(skip)]
    pub timestamp: Option<f64>,
}

/// Why a body is not an event, named after the Python exception Tanner reports for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    NotUtf8,
    NotJson,
}

impl Rejection {
    pub fn name(self) -> &'static str {
        match self {
            Rejection::NotUtf8 => "UnicodeDecodeError",
            Rejection::NotJson => "JSONDecodeError",
        }
    }
}

impl Event {
    /// The event in `body`: any text Python's `json.loads` reads (strict JSON first, else
    /// what [`python_json::to_strict`] makes of it).
    pub fn parse(body: &[u8]) -> Result<Event, Rejection> {
        let text = std::str::from_utf8(body).map_err(|_| Rejection::NotUtf8)?;
        let draft = match serde_json::from_str::<Object<Draft>>(text) {
            Ok(Object(draft)) => draft,
            Err(_) => {
                let strict = python_json::to_strict(text).ok_or(Rejection::NotJson)?;
                let Object(draft) = serde_json::from_str::<Object<Draft>>(&strict)
                    .map_err(|_| Rejection::NotJson)?;
                draft
            }
        };
        Ok(draft.unwrap_or_default().validate())
    }

    /// When the event happened: its own `timestamp`, else `now`.
    pub fn time(&self, now: f64) -> f64 {
        self.timestamp.unwrap_or(now)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.as_deref()
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.header("user-agent")
    }

    pub fn sess_uuid_cookie(&self) -> Option<&str> {
        self.cookies.get("sess_uuid")?.as_deref()
    }
}

/// An event as sent, before Tanner's defaults.
#[derive(Default)]
struct Draft {
    method: Option<String>,
    path: Option<String>,
    headers: Option<Fields>,
    uuid: Option<String>,
    peer: Option<Peer>,
    status: Option<i64>,
    has_error: bool,
    cookies: Option<Fields>,
    post_data: Option<Fields>,
    timestamp: Option<f64>,
}

impl Draft {
    fn validate(self) -> Event {
        let mut headers: Fields = self
            .headers
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name.to_lowercase(), cut(value, MAX_PATH)))
            .collect();
        headers.entry("user-agent".into()).or_default();
        // SNARE splits the Cookie header on ';' without trimming, so later names start with a space.
        let mut cookies: Fields = self
            .cookies
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name.trim().to_owned(), cut(value, MAX_COOKIE)))
            .collect();
        cookies.entry("sess_uuid".into()).or_default();
        Event {
            method: cut(self.method, MAX_SHORT),
            path: cut(self.path, MAX_PATH),
            headers,
            uuid: cut(self.uuid, MAX_SHORT),
            peer: self.peer.unwrap_or_default(),
            status: self
                .status
                .unwrap_or(if self.has_error { 500 } else { 200 }),
            cookies,
            post_data: self.post_data,
            timestamp: self.timestamp,
        }
    }
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: Option<String>, max: usize) -> Option<String> {
    text.map(|mut text| {
        text.truncate(text.floor_char_boundary(max));
        text
    })
}

/// A JSON value where text or a number belongs. Containers are read through (element by
/// element, so within serde_json's depth limit) and count as nothing.
enum Scalar {
    Nothing,
    Bool(bool),
    Number(Number),
    /// Cut to [`MAX_FIELD`] as it is read.
    Text(String),
}

impl Scalar {
    fn text(self) -> Option<String> {
        match self {
            Scalar::Text(text) => Some(text),
            Scalar::Number(number) => Some(number.to_string()),
            Scalar::Bool(bool) => Some(bool.to_string()),
            Scalar::Nothing => None,
        }
    }

    fn short_text(self) -> Option<String> {
        cut(self.text(), MAX_SHORT)
    }

    fn integer(self) -> Option<i64> {
        match self {
            Scalar::Number(number) => number.as_i64().or_else(|| {
                let float = number.as_f64()?;
                (float.fract() == 0.0 && float.abs() < i64::MAX as f64).then_some(float as i64)
            }),
            Scalar::Text(text) => text.trim().parse().ok(),
            Scalar::Bool(_) | Scalar::Nothing => None,
        }
    }

    /// Epoch seconds from a number or a time in Tanner's format.
    fn seconds(self) -> Option<f64> {
        match self {
            Scalar::Number(number) => number.as_f64(),
            Scalar::Text(text) => tanner_time::parse(&text),
            Scalar::Bool(_) | Scalar::Nothing => None,
        }
        .filter(|seconds| seconds.is_finite())
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
        Ok(Number::from_f64(v).map_or(Scalar::Nothing, Scalar::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Text(
            v[..v.floor_char_boundary(MAX_FIELD)].to_owned(),
        ))
    }

    fn visit_unit<E>(self) -> Result<Scalar, E> {
        Ok(Scalar::Nothing)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<Scalar>()?.is_some() {}
        Ok(Scalar::Nothing)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<Scalar, Scalar>()?.is_some() {}
        Ok(Scalar::Nothing)
    }
}

/// What an object's entries make.
trait FromEntries: Sized {
    fn from_entries<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error>;
}

/// A JSON value where an object belongs: anything else reads as absent.
struct Object<T>(Option<T>);

impl<'de, T: FromEntries> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: FromEntries> Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Object<T>, A::Error> {
        T::from_entries(map).map(|value| Object(Some(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Object<T>, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| Object(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Object<T>, E> {
        Ok(Object(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Object<T>, E> {
        Ok(Object(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Object<T>, E> {
        Ok(Object(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Object<T>, E> {
        Ok(Object(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<Object<T>, E> {
        Ok(Object(None))
    }

    fn visit_unit<E>(self) -> Result<Object<T>, E> {
        Ok(Object(None))
    }
}

/// Reads the next key, cut to [`MAX_SHORT`].
fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<String>, A::Error> {
    Ok(map
        .next_key::<Scalar>()?
        .map(|key| key.short_text().unwrap_or_default()))
}

impl FromEntries for Fields {
    fn from_entries<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut fields = Fields::new();
        while let Some(name) = next_key(&mut map)? {
            let value = map.next_value::<Scalar>()?.text();
            if fields.len() < MAX_ENTRIES || fields.contains_key(&name) {
                fields.insert(name, value);
            }
        }
        Ok(fields)
    }
}

impl FromEntries for Peer {
    fn from_entries<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut peer = Peer::default();
        while let Some(key) = next_key(&mut map)? {
            let value = map.next_value::<Scalar>()?;
            match key.as_str() {
                "ip" => peer.ip = value.short_text(),
                "port" => peer.port = value.integer().and_then(|port| port.try_into().ok()),
                _ => {}
            }
        }
        Ok(peer)
    }
}

impl FromEntries for Draft {
    /// A repeated key takes its later value, as Python's `json.loads` does.
    fn from_entries<'de, A: MapAccess<'de>>(mut map: A) -> Result<Self, A::Error> {
        let mut draft = Draft::default();
        while let Some(key) = next_key(&mut map)? {
            match key.as_str() {
                "method" => draft.method = map.next_value::<Scalar>()?.short_text(),
                "path" => draft.path = map.next_value::<Scalar>()?.text(),
                "headers" => draft.headers = map.next_value::<Object<Fields>>()?.0,
                "uuid" => draft.uuid = map.next_value::<Scalar>()?.short_text(),
                "peer" => draft.peer = map.next_value::<Object<Peer>>()?.0,
                "status" => draft.status = map.next_value::<Scalar>()?.integer(),
                "cookies" => draft.cookies = map.next_value::<Object<Fields>>()?.0,
                "post_data" => draft.post_data = map.next_value::<Object<Fields>>()?.0,
                "timestamp" => draft.timestamp = map.next_value::<Scalar>()?.seconds(),
                other => {
                    map.next_value::<Scalar>()?;
                    draft.has_error |= other == "error";
                }
            }
        }
        Ok(draft)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: serde_json::Value) -> Event {
        Event::parse(value.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn snares_event_is_validated_as_tanner_does() {
        let event = parse(json!({
            "method": "GET",
            "path": "/index.html?id=1%20UNION%20SELECT%201",
            "headers": {"Host": "example.com", "User-Agent": "curl/8.0", "Cookie": "sess_uuid=2c7b; foo=bar"},
            "uuid": "9c10172f-7ce2-4fb4-b1c6-abc70141db56",
            "peer": {"ip": "203.0.113.7", "port": 51234},
            "status": 200,
            "cookies": {"sess_uuid": "2c7b", " foo": "bar"},
        }));
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
                "method": "GET",
                "path": "/index.html?id=1%20UNION%20SELECT%201",
                "headers": {"host": "example.com", "user-agent": "curl/8.0", "cookie": "sess_uuid=2c7b; foo=bar"},
                "uuid": "9c10172f-7ce2-4fb4-b1c6-abc70141db56",
                "peer": {"ip": "203.0.113.7", "port": 51234},
                "status": 200,
                "cookies": {"sess_uuid": "2c7b", "foo": "bar"},
            })
        );
        assert_eq!(event.user_agent(), Some("curl/8.0"));
        assert_eq!(event.sess_uuid_cookie(), Some("2c7b"));
        assert_eq!(event.timestamp, None);
    }

    #[test]
    fn missing_fields_get_tanners_defaults() {
        let expected = json!({
            "method": null, "path": null, "headers": {"user-agent": null}, "uuid": null,
            "peer": {"ip": null, "port": null}, "status": 200, "cookies": {"sess_uuid": null},
        });
        for empty in [json!({}), json!([1, 2]), json!("x"), json!(null), json!(7)] {
            assert_eq!(serde_json::to_value(parse(empty)).unwrap(), expected);
        }
        let nulls = parse(json!({
            "method": null, "path": null, "headers": null, "uuid": null, "peer": null,
            "status": null, "cookies": null, "post_data": null,
        }));
        assert_eq!(serde_json::to_value(nulls).unwrap(), expected);
        assert_eq!(parse(json!({"error": null})).status, 500);
        assert_eq!(parse(json!({"error": "x", "status": 404})).status, 404);
        assert_eq!(
            parse(json!({"cookies": {"a": "b"}})).cookies,
            Fields::from([("a".into(), Some("b".into())), ("sess_uuid".into(), None)])
        );
    }

    #[test]
    fn wrong_types_read_leniently() {
        let event = parse(json!({
            "method": 1, "path": ["/"], "headers": "x", "uuid": true,
            "peer": {"ip": 2130706433u32, "port": "8080"}, "status": "404",
            "cookies": {"n": 5, "o": {"x": 1}}, "post_data": {"a": [1]}, "timestamp": "soon",
        }));
        assert_eq!(event.method.as_deref(), Some("1"));
        assert_eq!(event.path, None);
        assert_eq!(event.uuid.as_deref(), Some("true"));
        assert_eq!(
            event.peer,
            Peer {
                ip: Some("2130706433".into()),
                port: Some(8080)
            }
        );
        assert_eq!(event.status, 404);
        assert_eq!(event.cookies.get("n"), Some(&Some("5".into())));
        assert_eq!(event.cookies.get("o"), Some(&None));
        assert_eq!(event.post_data, Some(Fields::from([("a".into(), None)])));
        assert_eq!(event.timestamp, None);
        assert_eq!(parse(json!({"peer": {"port": 70000}})).peer.port, None);
        assert_eq!(parse(json!({"status": 301.0})).status, 301);
        assert_eq!(parse(json!({"timestamp": 12.5})).timestamp, Some(12.5));
        assert_eq!(
            parse(json!({"timestamp": "2016-06-16T15:43:33.478017"})).timestamp,
            Some(1466091813.478017)
        );
    }

    #[test]
    fn repeated_names_keep_the_later_value_in_the_first_place() {
        let event = Event::parse(
            br#"{"path": "/a", "path": "/b", "headers": {"User-Agent": "x", "Host": "h", "user-agent": "y"}}"#,
        )
        .unwrap();
        assert_eq!(event.path.as_deref(), Some("/b"));
        assert_eq!(
            event.headers.into_iter().collect::<Vec<_>>(),
            [
                ("user-agent".into(), Some("y".into())),
                ("host".into(), Some("h".into()))
            ]
        );
    }

    #[test]
    fn oversized_fields_are_cut() {
        let long = "é".repeat(MAX_FIELD);
        let headers: serde_json::Map<_, _> =
            (0..200).map(|i| (format!("h{i}"), json!("v"))).collect();
        let event = parse(json!({
            "method": long, "path": long, "uuid": long, "headers": headers,
            "cookies": {"c": long, long.clone(): "v"}, "post_data": {"f": long},
        }));
        assert_eq!(event.method.unwrap().len(), MAX_SHORT);
        assert_eq!(event.path.unwrap().len(), MAX_PATH);
        assert_eq!(event.uuid.unwrap().len(), MAX_SHORT);
        // 64 sent headers plus the user-agent default.
        assert_eq!(event.headers.len(), MAX_ENTRIES + 1);
        assert_eq!(event.cookies["c"].as_ref().unwrap().len(), MAX_COOKIE);
        assert!(event.cookies.keys().all(|name| name.len() <= MAX_SHORT));
        assert_eq!(
            event.post_data.unwrap()["f"].as_ref().unwrap().len(),
            MAX_FIELD
        );
    }

    #[test]
    fn what_is_not_json_is_rejected_by_name() {
        assert_eq!(Event::parse(b"\xff{}"), Err(Rejection::NotUtf8));
        for body in [
            &b""[..],
            b"{",
            b"{\"path\": \"/\"",
            b"nope",
            b"{} {}",
            b"{\"a\" 1}",
        ] {
            assert_eq!(Event::parse(body), Err(Rejection::NotJson), "{body:?}");
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(Event::parse(deep.as_bytes()), Err(Rejection::NotJson));
        let deep_inside = format!(
            r#"{{"path": "/", "extra": {}{}}}"#,
            "[".repeat(900),
            "]".repeat(900)
        );
        assert_eq!(
            Event::parse(deep_inside.as_bytes())
                .unwrap()
                .path
                .as_deref(),
            Some("/")
        );
    }

    #[test]
    fn what_python_reads_beyond_json_is_an_event() {
        let event = Event::parse(
            br#"{"path": "/\ud800", "headers": {"User-Agent": "bad\udcffagent", "X": NaN},
                "peer": {"ip": "1.2.3.4", "port": 1e400}, "status": -Infinity,
                "cookies": {"c": 99999999999999999999999, "d": Infinity}, "timestamp": NaN}"#,
        )
        .unwrap();
        assert_eq!(event.path.as_deref(), Some("/\u{fffd}"));
        assert_eq!(event.user_agent(), Some("bad\u{fffd}agent"));
        assert_eq!(event.header("x"), Some("NaN"));
        assert_eq!(event.peer.port, None);
        assert_eq!(event.status, 200);
        assert_eq!(event.cookies["c"].as_deref(), Some("1e+23"));
        assert_eq!(event.cookies["d"].as_deref(), Some("Infinity"));
        assert_eq!(event.timestamp, None);
    }
}
