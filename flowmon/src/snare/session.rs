//! Sessions (spec section 3): one client's visit to one sensor, from its first request until
//! it has been idle for the session timeout.
//!
//! Identity: a request whose `sess_uuid` cookie names a live session of the same sensor continues
//! it (the fix of Tanner's bug, where a returned cookie always started a new session); otherwise
//! the client (sensor, ip, user agent) decides, with the peer port left out as in Tanner.
//!
//! Memory is bounded three ways, each ending sessions early rather than dropping what they hold:
//! at most `max_sessions` live sessions and `max_bytes` of their data (beyond either, the least
//! recently active ends, *evicted*), and at most `max_paths` requests in one session (the next
//! request ends it, *full*, and starts the client's next session).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    detection::AttackType,
    event::{Event, Fields, MAX_ENTRIES},
};
use crate::emulation::{Evidence, SessionState};

/// One request of a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathEntry {
    /// The raw request target.
    pub path: Option<String>,
    /// Epoch seconds.
    pub timestamp: f64,
    pub response_status: i64,
    /// The detection of this request.
    pub attack_type: AttackType,
}

/// A session with exactly the attributes of spec section 3.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Peer address of the first request.
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub user_agent: Option<String>,
    /// The sensor's uuid.
    pub snare_uuid: Option<String>,
    /// Every request, in arrival order.
    pub paths: Vec<PathEntry>,
    /// Random (v4), made when the session starts; serialised hyphenated.
    pub sess_uuid: Uuid,
    /// First and latest request time, epoch seconds.
    pub start_timestamp: f64,
    pub timestamp: f64,
    /// Number of requests.
    pub count: u64,
    /// Union of the cookies seen; a later value wins.
    pub cookies: Fields,
    /// Path part of the first request's `referer` header.
    pub referer: Option<String>,
    /// What the session's attacker tried, as the emulators saw it (flowmon's, not Tanner's:
    /// absent when nothing was emulated).
    #[serde(default, skip_serializing_if = "Evidence::is_empty")]
    pub emulation: Evidence,
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// Idle for the session timeout.
    Expired,
    /// The least recently active when the table was over a limit.
    Evicted,
    /// It held `max_paths` requests when another came.
    Full,
    /// flowmon stopped, or a replay reached its end.
    Shutdown,
}

impl EndReason {
    pub const ALL: [EndReason; 4] = [
        EndReason::Expired,
        EndReason::Evicted,
        EndReason::Full,
        EndReason::Shutdown,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EndReason::Expired => "expired",
            EndReason::Evicted => "evicted",
            EndReason::Full => "full",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// Tanner's `KEEP_ALIVE_TIME`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(75);
/// Live sessions at most, by default.
pub const DEFAULT_MAX_SESSIONS: usize = 100_000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SessionLimits {
    /// How long after its latest request a session ends.
    pub timeout: Duration,
    pub max_sessions: usize,
    /// Requests kept in one session.
    pub max_paths: usize,
    /// Approximate bytes of all live sessions.
    pub max_bytes: usize,
}

impl SessionLimits {
    /// With the defaults for what has no setting.
    pub fn new(timeout: Duration, max_sessions: usize) -> Self {
        Self {
            timeout,
            max_sessions,
            max_paths: 1000,
            max_bytes: 512 << 20,
        }
    }
}

/// Bookkeeping bytes counted for a session and for each request, beyond their text.
const SESSION_OVERHEAD: usize = 512;
const ENTRY_OVERHEAD: usize = 64;

/// Who a cookieless request belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Client {
    sensor: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
}

impl Client {
    fn of(event: &Event) -> Self {
        Self {
            sensor: event.uuid.clone(),
            ip: event.peer.ip.clone(),
            user_agent: event.user_agent().map(str::to_owned),
        }
    }
}

/// Orders sessions by the clock at their latest request, then by arrival: the first is the next
/// to expire and the least recently active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Activity {
    micros: i64,
    seq: u64,
}

impl Activity {
    /// A request at `time`, after every one before it.
    fn next(time: f64, seq: &mut u64) -> Self {
        *seq += 1;
        Self {
            micros: (time * 1e6) as i64,
            seq: *seq,
        }
    }

    fn seconds(self) -> f64 {
        self.micros as f64 / 1e6
    }
}

struct Live {
    session: Session,
    client: Client,
    activity: Activity,
    /// Counted bytes, `emulation_bytes` included.
    bytes: usize,
    /// What the session's emulation holds, made at its first emulated attack and shared with
    /// the request being emulated (the table's lock is not held while an emulator runs).
    emulation: Option<Arc<Mutex<SessionState>>>,
    emulation_bytes: usize,
}

/// What an emulator needs of the session a request joined.
pub struct EmulationContext {
    pub state: Arc<Mutex<SessionState>>,
    /// The page an answer is shown in: the latest of the session's paths that names an HTML
    /// file, as Tanner picks it.
    pub page: Option<String>,
}

/// What recording a request did.
#[derive(Debug)]
pub struct Recorded {
    /// The session the request joined.
    pub sess_uuid: Uuid,
    /// Sessions that ended to make room.
    pub ended: Vec<(Session, EndReason)>,
}

/// The live sessions.
pub struct SessionTable {
    limits: SessionLimits,
    live: HashMap<Uuid, Live>,
    by_client: HashMap<Client, Uuid>,
    by_activity: BTreeMap<Activity, Uuid>,
    bytes: usize,
    next_seq: u64,
}

impl SessionTable {
    pub fn new(limits: SessionLimits) -> Self {
        Self {
            limits,
            live: HashMap::new(),
            by_client: HashMap::new(),
            by_activity: BTreeMap::new(),
            bytes: 0,
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Files one request, detected as `attack`. `now` is flowmon's clock (epoch seconds), which
    /// expiry and recency are measured on; the request is dated by its own `timestamp` if it
    /// has one, so that old events resent late are dated right yet do not expire at once.
    pub fn record(&mut self, event: &Event, attack: AttackType, now: f64) -> Recorded {
        let mut ended = Vec::new();
        let client = Client::of(event);
        let found = loop {
            match self.find(event, &client) {
                Some(id) if self.live[&id].session.paths.len() >= self.limits.max_paths => {
                    ended.push((self.remove(id), EndReason::Full));
                }
                found => break found,
            }
        };
        let at = event.time(now);
        let id = found.unwrap_or_else(|| self.start(event, client, at, now));
        self.add_request(id, event, attack, at, now);
        while self.live.len() > self.limits.max_sessions || self.bytes > self.limits.max_bytes {
            let Some(&oldest) = self.by_activity.values().find(|&&other| other != id) else {
                break;
            };
            ended.push((self.remove(oldest), EndReason::Evicted));
        }
        Recorded {
            sess_uuid: id,
            ended,
        }
    }

    /// Copies of the live sessions that `keep` accepts, the most recently active first, at
    /// most `limit`.
    pub fn recent(&self, mut keep: impl FnMut(&Session) -> bool, limit: usize) -> Vec<Session> {
        self.by_activity
            .values()
            .rev()
            .map(|id| &self.live[id].session)
            .filter(|session| keep(session))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The live session `sess_uuid`, and its emulation state if it has one (its evidence
    /// joins the session when it ends).
    pub fn get(&self, sess_uuid: &Uuid) -> Option<(&Session, Option<Arc<Mutex<SessionState>>>)> {
        self.live
            .get(sess_uuid)
            .map(|live| (&live.session, live.emulation.clone()))
    }

    /// Live sessions by sensor uuid.
    pub fn by_sensor(&self) -> BTreeMap<Option<String>, usize> {
        let mut sensors = BTreeMap::new();
        for live in self.live.values() {
            *sensors.entry(live.session.snare_uuid.clone()).or_default() += 1;
        }
        sensors
    }

    /// Ends the sessions idle for longer than the timeout at `now`.
    pub fn sweep(&mut self, now: f64) -> Vec<Session> {
        let mut expired = Vec::new();
        while let Some((activity, &id)) = self.by_activity.first_key_value() {
            if now - activity.seconds() <= self.limits.timeout.as_secs_f64() {
                break;
            }
            expired.push(self.remove(id));
        }
        expired
    }

    /// Ends every live session, least recently active first.
    pub fn end_all(&mut self) -> Vec<Session> {
        let ids: Vec<Uuid> = self.by_activity.values().copied().collect();
        ids.into_iter().map(|id| self.remove(id)).collect()
    }

    fn find(&self, event: &Event, client: &Client) -> Option<Uuid> {
        event
            .sess_uuid_cookie()
            .and_then(|cookie| Uuid::try_parse(cookie).ok())
            .filter(|id| {
                self.live
                    .get(id)
                    .is_some_and(|live| live.session.snare_uuid == event.uuid)
            })
            .or_else(|| self.by_client.get(client).copied())
    }

    fn start(&mut self, event: &Event, client: Client, at: f64, now: f64) -> Uuid {
        let session = Session {
            ip: event.peer.ip.clone(),
            port: event.peer.port,
            user_agent: client.user_agent.clone(),
            snare_uuid: event.uuid.clone(),
            paths: Vec::new(),
            sess_uuid: Uuid::new_v4(),
            start_timestamp: at,
            timestamp: at,
            count: 0,
            cookies: Fields::new(),
            referer: event
                .header("referer")
                .map(|referer| url_path(referer).to_owned()),
            emulation: Evidence::default(),
        };
        let text = |field: &Option<String>| field.as_ref().map_or(0, String::len);
        let bytes = SESSION_OVERHEAD
            + text(&session.ip)
            + 2 * text(&session.user_agent)
            + 2 * text(&session.snare_uuid)
            + text(&session.referer);
        let id = session.sess_uuid;
        let activity = Activity::next(now, &mut self.next_seq);
        self.by_client.insert(client.clone(), id);
        self.by_activity.insert(activity, id);
        self.bytes += bytes;
        self.live.insert(
            id,
            Live {
                session,
                client,
                activity,
                bytes,
                emulation: None,
                emulation_bytes: 0,
            },
        );
        id
    }

    fn add_request(&mut self, id: Uuid, event: &Event, attack: AttackType, at: f64, now: f64) {
        let live = self
            .live
            .get_mut(&id)
            .expect("the session was just found or started");
        let session = &mut live.session;
        let before = live.bytes;
        session.count += 1;
        session.timestamp = session.timestamp.max(at);
        session.paths.push(PathEntry {
            path: event.path.clone(),
            timestamp: at,
            response_status: event.status,
            attack_type: attack,
        });
        live.bytes += ENTRY_OVERHEAD + event.path.as_ref().map_or(0, String::len);
        for (name, value) in &event.cookies {
            let len = value.as_ref().map_or(0, String::len);
            if let Some(old) = session.cookies.get_mut(name) {
                live.bytes = live.bytes + len - old.as_ref().map_or(0, String::len);
                old.clone_from(value);
            } else if session.cookies.len() < MAX_ENTRIES {
                live.bytes += ENTRY_OVERHEAD + name.len() + len;
                session.cookies.insert(name.clone(), value.clone());
            }
        }
        self.bytes = self.bytes - before + live.bytes;
        self.by_activity.remove(&live.activity);
        live.activity = Activity::next(now, &mut self.next_seq);
        self.by_activity.insert(live.activity, id);
    }

    /// The emulation state of the live session `id` (made now if it has none) and the page
    /// its answers are shown in.
    pub fn emulation(&mut self, id: Uuid) -> Option<EmulationContext> {
        let live = self.live.get_mut(&id)?;
        let state = live.emulation.get_or_insert_with(Arc::default).clone();
        Some(EmulationContext {
            state,
            page: latest_page(&live.session.paths),
        })
    }

    /// Counts what the live session `id`'s emulation now holds, `bytes`, against the limits.
    pub fn emulation_grew(&mut self, id: Uuid, bytes: usize) {
        let Some(live) = self.live.get_mut(&id) else {
            return;
        };
        self.bytes = self.bytes - live.emulation_bytes + bytes;
        live.bytes = live.bytes - live.emulation_bytes + bytes;
        live.emulation_bytes = bytes;
    }

    fn remove(&mut self, id: Uuid) -> Session {
        let live = self
            .live
            .remove(&id)
            .expect("every indexed session is live");
        self.by_activity.remove(&live.activity);
        if self.by_client.get(&live.client) == Some(&id) {
            self.by_client.remove(&live.client);
        }
        self.bytes -= live.bytes;
        let mut session = live.session;
        if let Some(state) = live.emulation {
            session.emulation = state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take_evidence();
        }
        session
    }
}

/// The latest of `paths` that names an HTML file (by its extension, as Python's `mimetypes`
/// guesses), percent-decoded and without its query, as SNARE's pages are keyed; `None` when
/// there is none. Tanner looked at the raw path, so that a page asked with a query never
/// counted.
fn latest_page(paths: &[PathEntry]) -> Option<String> {
    paths.iter().rev().find_map(|entry| {
        let path = entry.path.as_deref()?;
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
        let extension = decoded.rsplit_once('.')?.1.to_ascii_lowercase();
        (decoded.starts_with('/') && ["html", "htm", "shtml"].contains(&extension.as_str()))
            .then(|| decoded.into_owned())
    })
}

/// The path part of a URL as Python's `urlparse(url).path` gives it.
fn url_path(url: &str) -> &str {
    let mut rest = url;
    if let Some((scheme, after)) = rest.split_once(':')
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        rest = after;
    }
    if let Some(after_slashes) = rest.strip_prefix("//") {
        rest = after_slashes
            .find(['/', '?', '#'])
            .map_or("", |at| &after_slashes[at..]);
    }
    rest.split(['?', '#']).next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SENSOR: &str = "9c10172f-7ce2-4fb4-b1c6-abc70141db56";

    fn event(value: serde_json::Value) -> Event {
        Event::parse(value.to_string().as_bytes()).unwrap()
    }

    fn request(ip: &str, user_agent: &str, path: &str, cookie: Option<Uuid>) -> Event {
        let mut value = json!({
            "method": "GET", "path": path, "uuid": SENSOR,
            "headers": {"User-Agent": user_agent}, "peer": {"ip": ip, "port": 40000},
            "status": 200,
        });
        if let Some(cookie) = cookie {
            value["cookies"] = json!({"sess_uuid": cookie.to_string()});
        }
        event(value)
    }

    fn limits() -> SessionLimits {
        SessionLimits::new(DEFAULT_TIMEOUT, 100)
    }

    #[test]
    fn a_session_holds_every_request_with_its_detection() {
        let mut table = SessionTable::new(limits());
        let first = event(json!({
            "method": "GET", "path": "/", "uuid": SENSOR,
            "headers": {"User-Agent": "ua", "Referer": "http://example.com/from/here?x=1"},
            "peer": {"ip": "203.0.113.7", "port": 51234},
            "cookies": {"a": "1", " b": "2"},
        }));
        let id = table.record(&first, AttackType::Index, 100.0).sess_uuid;
        let second = event(json!({
            "method": "GET", "path": "/x?q=%3Cb%3E", "uuid": SENSOR, "status": 404,
            "headers": {"user-agent": "ua", "referer": "/elsewhere"},
            "peer": {"ip": "203.0.113.7", "port": 51299},
            "cookies": {"b": "3", "c": "4"},
        }));
        assert_eq!(table.record(&second, AttackType::Xss, 101.5).sess_uuid, id);
        let [session] = &table.end_all()[..] else {
            panic!("one session")
        };
        assert_eq!(
            serde_json::to_value(session).unwrap(),
            json!({
                "ip": "203.0.113.7", "port": 51234, "user_agent": "ua", "snare_uuid": SENSOR,
                "paths": [
                    {"path": "/", "timestamp": 100.0, "response_status": 200, "attack_type": "index"},
                    {"path": "/x?q=%3Cb%3E", "timestamp": 101.5, "response_status": 404, "attack_type": "xss"},
                ],
                "sess_uuid": id.to_string(), "start_timestamp": 100.0, "timestamp": 101.5,
                "count": 2,
                "cookies": {"a": "1", "b": "3", "sess_uuid": null, "c": "4"},
                "referer": "/from/here",
            })
        );
        let round_trip: Session =
            serde_json::from_value(serde_json::to_value(session).unwrap()).unwrap();
        assert_eq!(&round_trip, session);
        assert!(table.is_empty());
    }

    #[test]
    fn identity_is_ip_and_user_agent_unless_a_live_cookie_says_otherwise() {
        let mut table = SessionTable::new(limits());
        let index = AttackType::Index;
        let a = table
            .record(&request("10.0.0.1", "ua", "/", None), index, 1.0)
            .sess_uuid;
        assert_eq!(
            table
                .record(&request("10.0.0.1", "ua", "/2", None), index, 2.0)
                .sess_uuid,
            a
        );
        // The cookie continues the session even from another address.
        assert_eq!(
            table
                .record(&request("10.0.0.9", "ua", "/3", Some(a)), index, 3.0)
                .sess_uuid,
            a
        );
        let b = table
            .record(&request("10.0.0.1", "other", "/", None), index, 4.0)
            .sess_uuid;
        assert_ne!(a, b);
        let c = table
            .record(&request("10.0.0.2", "ua", "/", None), index, 5.0)
            .sess_uuid;
        assert!(c != a && c != b);
        // An unknown cookie falls back to the client.
        let unknown = Uuid::new_v4();
        assert_eq!(
            table
                .record(&request("10.0.0.1", "ua", "/", Some(unknown)), index, 6.0)
                .sess_uuid,
            a
        );
        // A cookie of another sensor's session does not continue it.
        let mut elsewhere = request("10.0.0.3", "ua", "/", Some(a));
        elsewhere.uuid = Some("another-sensor".into());
        let d = table.record(&elsewhere, index, 7.0).sess_uuid;
        assert!(![a, b, c].contains(&d));
        assert_eq!(table.len(), 4);
        // The most recently active first.
        let ids = |sessions: Vec<Session>| sessions.iter().map(|s| s.sess_uuid).collect::<Vec<_>>();
        assert_eq!(ids(table.recent(|_| true, 2)), [d, a]);
        let of_sensor = |s: &Session| s.snare_uuid.as_deref() == Some(SENSOR);
        assert_eq!(ids(table.recent(of_sensor, 9)), [a, c, b]);
        assert_eq!(table.get(&a).map(|(s, _)| s.count), Some(4));
        assert_eq!(
            table.by_sensor(),
            [
                (Some(SENSOR.to_owned()), 3),
                (Some("another-sensor".to_owned()), 1)
            ]
            .into()
        );
        assert_eq!(table.end_all().iter().map(|s| s.count).sum::<u64>(), 7);
    }

    #[test]
    fn sessions_expire_after_the_timeout_since_their_latest_request() {
        let mut table = SessionTable::new(SessionLimits::new(Duration::from_secs(10), 100));
        let index = AttackType::Index;
        let a = table
            .record(&request("10.0.0.1", "ua", "/", None), index, 100.0)
            .sess_uuid;
        let b = table
            .record(&request("10.0.0.2", "ua", "/", None), index, 105.0)
            .sess_uuid;
        table.record(&request("10.0.0.1", "ua", "/", None), index, 108.0);
        assert!(table.sweep(114.0).is_empty());
        assert!(
            table.sweep(115.0).is_empty(),
            "idle for exactly the timeout is still live"
        );
        let expired = table.sweep(115.5);
        assert_eq!(expired.iter().map(|s| s.sess_uuid).collect::<Vec<_>>(), [b]);
        let expired = table.sweep(118.5);
        assert_eq!(
            expired
                .iter()
                .map(|s| (s.sess_uuid, s.count))
                .collect::<Vec<_>>(),
            [(a, 2)]
        );
        assert!(table.is_empty());
        // An event dated long ago is filed with its date but lives on the clock.
        let mut late = request("10.0.0.3", "ua", "/", None);
        late.timestamp = Some(5.0);
        let id = table.record(&late, index, 150.0).sess_uuid;
        assert!(table.sweep(159.0).is_empty());
        let [session] = &table.sweep(161.0)[..] else {
            panic!("one session")
        };
        assert_eq!(
            (
                session.sess_uuid,
                session.start_timestamp,
                session.timestamp
            ),
            (id, 5.0, 5.0)
        );
        assert_eq!(session.paths[0].timestamp, 5.0);
        // A new request of an expired client starts a new session.
        assert_ne!(
            table
                .record(&request("10.0.0.1", "ua", "/", None), index, 200.0)
                .sess_uuid,
            a
        );
    }

    #[test]
    fn limits_end_sessions_early() {
        let mut table = SessionTable::new(SessionLimits {
            max_paths: 3,
            ..SessionLimits::new(DEFAULT_TIMEOUT, 2)
        });
        let index = AttackType::Index;
        let a = table
            .record(&request("10.0.0.1", "ua", "/", None), index, 1.0)
            .sess_uuid;
        let b = table.record(&request("10.0.0.2", "ua", "/", None), index, 2.0);
        assert!(b.ended.is_empty());
        table.record(&request("10.0.0.1", "ua", "/", None), index, 3.0);
        // A third client evicts the least recently active (b), not a.
        let c = table.record(&request("10.0.0.3", "ua", "/", None), index, 4.0);
        assert_eq!(c.ended.len(), 1);
        assert_eq!(
            (c.ended[0].0.sess_uuid, c.ended[0].1),
            (b.sess_uuid, EndReason::Evicted)
        );
        table.record(&request("10.0.0.1", "ua", "/", None), index, 5.0);
        // a holds three requests: the fourth ends it and starts the next.
        let next = table.record(&request("10.0.0.1", "ua", "/", None), index, 6.0);
        assert_ne!(next.sess_uuid, a);
        assert_eq!(next.ended.len(), 1);
        assert_eq!(
            (next.ended[0].0.count, next.ended[0].1),
            (3, EndReason::Full)
        );

        let mut table = SessionTable::new(SessionLimits {
            max_bytes: 3000,
            ..limits()
        });
        let long = format!("/{}", "x".repeat(1000));
        let first = table
            .record(&request("10.0.0.1", "ua", &long, None), index, 1.0)
            .sess_uuid;
        table.record(&request("10.0.0.1", "ua", &long, None), index, 2.0);
        let other = table.record(&request("10.0.0.2", "ua", &long, None), index, 3.0);
        assert_eq!(other.ended.len(), 1);
        assert_eq!(
            (other.ended[0].0.sess_uuid, other.ended[0].1),
            (first, EndReason::Evicted)
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn answers_are_shown_in_the_latest_html_page() {
        let entry = |path: &str| PathEntry {
            path: Some(path.into()),
            timestamp: 0.0,
            response_status: 200,
            attack_type: AttackType::Index,
        };
        let paths: Vec<PathEntry> = ["/a.html", "/b%20c.HTM?x=1", "/x.php?q=1", "/", "/d"]
            .into_iter()
            .map(entry)
            .collect();
        assert_eq!(latest_page(&paths).as_deref(), Some("/b c.HTM"));
        assert_eq!(latest_page(&paths[2..]), None);
        let mut table = SessionTable::new(limits());
        let id = table
            .record(
                &request("10.0.0.1", "ua", "/shop.html", None),
                AttackType::Index,
                1.0,
            )
            .sess_uuid;
        let context = table.emulation(id).unwrap();
        assert_eq!(context.page.as_deref(), Some("/shop.html"));
        table.emulation_grew(id, 5000);
        assert_eq!(table.bytes, table.live[&id].bytes);
        assert!(table.bytes > 5000);
        table.emulation_grew(id, 10);
        assert!(table.bytes < 5000);
        let [session] = &table.end_all()[..] else {
            panic!("one session")
        };
        assert!(session.emulation.is_empty());
        assert_eq!(table.bytes, 0);
    }

    #[test]
    fn referers_keep_their_path_as_urlparse_does() {
        assert_eq!(url_path("http://example.com/a/b?x=1#f"), "/a/b");
        assert_eq!(url_path("https://example.com"), "");
        assert_eq!(url_path("/local/page?q"), "/local/page");
        assert_eq!(url_path("//host/p"), "/p");
        assert_eq!(url_path("example.com/x"), "example.com/x");
        assert_eq!(url_path("mailto:someone"), "someone");
        assert_eq!(url_path(""), "");
    }
}
