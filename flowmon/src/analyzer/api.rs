//! Tanner's read API (`--api-listen`, default 127.0.0.1:8092) over the sessions in Redis, with
//! Tanner's routes and envelope `{"version": 1, "response": {"message": ...}}`, without its
//! faults; plus `/flows?peer=<ip>`. Documented in `docs/analyzer.md`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    extract::{Path, RawQuery, Request, State},
    http::{
        HeaderValue, StatusCode,
        header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use redis::{AsyncCommands as _, RedisError};
use serde::Serialize;
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use uuid::Uuid;

use super::{
    connection::ReadConnection,
    storage::{SNARE_IDS, sensor_key},
};
use crate::{config::Settings, sinks::redis::peer_index};

/// Sessions `/snare/<uuid>` lists, newest first (Tanner's number).
const NEWEST: isize = 50;
/// Flow records `/flows` returns at most, oldest first.
const MAX_FLOW_RECORDS: isize = 10_000;
/// How long requests in flight may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The running API.
pub struct ApiServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl ApiServer {
    /// Serves on `--api-listen`, reading `--redis-url`, behind `--api-token` if set.
    pub async fn start(settings: &Settings) -> Result<Self> {
        let addr = settings.api_listen()?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for the read API on {addr}"))?;
        // Not the URL itself: it may hold a password.
        let redis = ReadConnection::from_settings(settings).context("invalid Redis URL")?;
        Ok(Self::serve(listener, redis, settings.api_token.clone()))
    }

    /// Serves on a listener already bound.
    pub fn serve(listener: TcpListener, redis: ReadConnection, token: Option<String>) -> Self {
        let local_addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(redis, token);
        let server = tokio::spawn(async move {
            // axum's serve only ends, without error, once shut down.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        tracing::info!(%local_addr, "serving the read API");
        Self {
            local_addr,
            stop,
            server,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and lets the requests in flight finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, self.server)
            .await
            .is_err()
        {
            tracing::warn!("read API requests still in flight after {SHUTDOWN_GRACE:?}");
        }
    }
}

fn router(redis: ReadConnection, token: Option<String>) -> Router {
    let routes = Router::new()
        .route("/", get(|| async { message(StatusCode::OK, "tanner api") }))
        .route("/snares", get(snares))
        .route("/snare/{snare_uuid}", get(snare))
        .route("/snare-stats/{snare_uuid}", get(snare_stats))
        .route("/{snare_uuid}/sessions", get(sessions))
        .route("/session/{sess_uuid}", get(session))
        .route("/flows", get(flows))
        .with_state(redis);
    match token.filter(|token| !token.is_empty()) {
        Some(token) => routes.layer(middleware::from_fn_with_state(
            Arc::<str>::from(token),
            authorise,
        )),
        None => routes,
    }
}

/// Tanner's envelope around `body`, as JSON.
fn message(status: StatusCode, body: impl Serialize) -> Response {
    #[derive(Serialize)]
    struct Envelope<T> {
        version: u8,
        response: Message<T>,
    }
    #[derive(Serialize)]
    struct Message<T> {
        message: T,
    }
    let json = serde_json::to_vec(&Envelope {
        version: 1,
        response: Message { message: body },
    })
    .expect("API answers serialise");
    (
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json,
    )
        .into_response()
}

/// Why a request gets no answer of its route.
enum Failure {
    /// 404 with Tanner's message.
    UnknownSensor,
    /// 404 with `null`, as Tanner answers for a session it does not find.
    UnknownSession,
    BadRequest(String),
    Redis(RedisError),
}

impl From<RedisError> for Failure {
    fn from(err: RedisError) -> Self {
        Self::Redis(err)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Self::UnknownSensor => message(StatusCode::NOT_FOUND, "Invalid SNARE UUID"),
            Self::UnknownSession => message(StatusCode::NOT_FOUND, Value::Null),
            Self::BadRequest(why) => message(StatusCode::BAD_REQUEST, why),
            Self::Redis(err) => {
                tracing::warn!(%err, "read API: Redis failed");
                message(StatusCode::SERVICE_UNAVAILABLE, "Redis unavailable")
            }
        }
    }
}

type Answer = Result<Response, Failure>;

async fn authorise(State(token): State<Arc<str>>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    if given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let mut denied = message(StatusCode::UNAUTHORIZED, "Unauthorized");
    denied
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    denied
}

/// Compares in a time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn snares(State(mut redis): State<ReadConnection>) -> Answer {
    let mut ids: Vec<String> = redis.smembers(SNARE_IDS).await?;
    ids.sort_unstable();
    Ok(message(StatusCode::OK, ids))
}

async fn snare(State(mut redis): State<ReadConnection>, Path(uuid): Path<String>) -> Answer {
    let sessions = sensor_sessions(&mut redis, &uuid, NEWEST).await?;
    Ok(message(StatusCode::OK, sessions))
}

/// Attack types `/snare-stats` counts, in Tanner's order.
#[derive(Default, Serialize)]
struct AttackFrequency {
    sqli: u64,
    lfi: u64,
    xss: u64,
    rfi: u64,
    cmd_exec: u64,
}

impl AttackFrequency {
    fn count(&mut self, attack: &str) {
        match attack {
            "sqli" => self.sqli += 1,
            "lfi" => self.lfi += 1,
            "xss" => self.xss += 1,
            "rfi" => self.rfi += 1,
            "cmd_exec" => self.cmd_exec += 1,
            _ => {}
        }
    }
}

#[derive(Serialize)]
struct SnareStats {
    total_sessions: usize,
    total_duration: f64,
    attack_frequency: AttackFrequency,
}

async fn snare_stats(State(mut redis): State<ReadConnection>, Path(uuid): Path<String>) -> Answer {
    let sessions = sensor_sessions(&mut redis, &uuid, -1).await?;
    let mut stats = SnareStats {
        total_sessions: sessions.len(),
        total_duration: 0.0,
        attack_frequency: AttackFrequency::default(),
    };
    for session in &sessions {
        let time = |key: &str| session[key].as_f64().unwrap_or_default();
        stats.total_duration += time("end_time") - time("start_time");
        for attack in attack_types(session) {
            stats.attack_frequency.count(attack);
        }
    }
    Ok(message(StatusCode::OK, stats))
}

async fn sessions(
    State(mut redis): State<ReadConnection>,
    Path(uuid): Path<String>,
    RawQuery(query): RawQuery,
) -> Answer {
    let filters = query
        .as_deref()
        .and_then(|query| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "filters")
                .map(|(_, filters)| Filter::parse_all(&filters))
        })
        .transpose()
        .map_err(Failure::BadRequest)?
        .unwrap_or_default();
    let sessions = sensor_sessions(&mut redis, &uuid, -1).await?;
    let matching: Vec<&Value> = sessions
        .iter()
        .filter(|session| filters.iter().all(|filter| filter.matches(session)))
        .map(|session| &session["sess_uuid"])
        .collect();
    Ok(message(StatusCode::OK, matching))
}

async fn session(State(mut redis): State<ReadConnection>, Path(sess_uuid): Path<String>) -> Answer {
    let Ok(sess_uuid) = Uuid::try_parse(&sess_uuid) else {
        return Err(Failure::UnknownSession);
    };
    let sess_uuid = sess_uuid.simple().to_string();
    let sensors: Vec<String> = redis.smembers(SNARE_IDS).await?;
    for sensor in sensors {
        if let Some(found) = find_session(&mut redis, &sensor, &sess_uuid).await? {
            return Ok(message(StatusCode::OK, found));
        }
    }
    Err(Failure::UnknownSession)
}

async fn flows(State(mut redis): State<ReadConnection>, RawQuery(query): RawQuery) -> Answer {
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let peer = param("peer")
        .and_then(|peer| peer.parse::<IpAddr>().ok())
        .ok_or_else(|| Failure::BadRequest("Invalid peer".into()))?
        .to_canonical();
    let bound = |name: &str, default: f64| match param(name) {
        None => Ok(default),
        Some(value) => value
            .parse::<f64>()
            .map_err(|_| Failure::BadRequest(format!("Invalid {name}"))),
    };
    let (from, to) = (
        bound("from", f64::NEG_INFINITY)?,
        bound("to", f64::INFINITY)?,
    );
    let members: Vec<String> = redis
        .zrangebyscore_limit(
            peer_index(&peer.to_string()),
            score_arg(from),
            score_arg(to),
            0,
            MAX_FLOW_RECORDS,
        )
        .await?;
    Ok(message(StatusCode::OK, parse_members(&members)))
}

/// A score bound as Redis spells it.
fn score_arg(score: f64) -> String {
    match score {
        f64::NEG_INFINITY => "-inf".into(),
        f64::INFINITY => "+inf".into(),
        score => score.to_string(),
    }
}

/// The sessions of sensor `uuid`, newest first, at most `limit` (-1: all). A sensor none of
/// whose sessions are left (retention) has none; one never seen is unknown.
async fn sensor_sessions(
    redis: &mut ReadConnection,
    uuid: &str,
    limit: isize,
) -> Result<Vec<Value>, Failure> {
    let sensor = sensor_key(uuid).ok_or(Failure::UnknownSensor)?;
    let members: Vec<String> = redis
        .zrevrangebyscore_limit(&sensor, "+inf", "-inf", 0, limit)
        .await?;
    if members.is_empty() && !redis.sismember(SNARE_IDS, &sensor).await? {
        return Err(Failure::UnknownSensor);
    }
    Ok(parse_members(&members))
}

/// The JSON members; any that is not JSON (not written by flowmon or Tanner) is left out.
fn parse_members(members: &[String]) -> Vec<Value> {
    members
        .iter()
        .filter_map(|member| serde_json::from_str(member).ok())
        .collect()
}

/// Searches `sensor`'s set on the server for members holding `sess_uuid` (32 hex digits, so no
/// glob characters), then checks the one that is that session.
async fn find_session(
    redis: &mut ReadConnection,
    sensor: &str,
    sess_uuid: &str,
) -> Result<Option<Value>, RedisError> {
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("ZSCAN")
            .arg(sensor)
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("*{sess_uuid}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await?;
        // Members and their scores alternate.
        let found = page
            .iter()
            .step_by(2)
            .filter_map(|member| serde_json::from_str::<Value>(member).ok())
            .find(|session| session["sess_uuid"] == sess_uuid);
        if found.is_some() || next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

fn attack_types(session: &Value) -> impl Iterator<Item = &str> {
    session["attack_types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// One of Tanner's session filters, `name:value`; several are separated by spaces.
#[derive(Debug, PartialEq)]
enum Filter {
    /// The user agent contains the value (a null one contains nothing).
    UserAgent(String),
    PeerIp(String),
    /// One of the attack types is the value.
    AttackType(String),
    /// The value is one of the possible owners (one with a score).
    PossibleOwner(String),
    /// The session started at or after the value.
    StartTime(f64),
    /// The session ended at or before the value.
    EndTime(f64),
    SnareUuid(String),
    /// The value is the country code, country or city, in any case.
    Location(String),
}

impl Filter {
    fn parse_all(filters: &str) -> Result<Vec<Self>, String> {
        filters.split_whitespace().map(Self::parse).collect()
    }

    fn parse(filter: &str) -> Result<Self, String> {
        // At the first colon only, so that IPv6 addresses are values.
        let (name, value) = filter
            .split_once(':')
            .ok_or_else(|| "Invalid filter definition".to_owned())?;
        let time = || {
            value
                .parse::<f64>()
                .map_err(|_| "Invalid filter definition".to_owned())
        };
        let value = value.to_owned();
        Ok(match name {
            "user_agent" => Self::UserAgent(value),
            "peer_ip" => Self::PeerIp(value),
            "attack_types" => Self::AttackType(value),
            "possible_owners" => Self::PossibleOwner(value),
            "start_time" => Self::StartTime(time()?),
            "end_time" => Self::EndTime(time()?),
            "snare_uuid" => Self::SnareUuid(value),
            "location" => Self::Location(value),
            _ => return Err(format!("Invalid filter : {name}")),
        })
    }

    fn matches(&self, session: &Value) -> bool {
        let text = |key: &str| session[key].as_str();
        match self {
            Self::UserAgent(part) => {
                text("user_agent").is_some_and(|ua| ua.contains(part.as_str()))
            }
            Self::PeerIp(ip) => text("peer_ip") == Some(ip.as_str()),
            Self::AttackType(attack) => attack_types(session).any(|a| a == attack),
            Self::PossibleOwner(owner) => session["possible_owners"].get(owner).is_some(),
            Self::StartTime(since) => session["start_time"].as_f64().is_some_and(|t| *since <= t),
            Self::EndTime(by) => session["end_time"].as_f64().is_some_and(|t| *by >= t),
            Self::SnareUuid(uuid) => text("snare_uuid")
                .and_then(sensor_key)
                .is_some_and(|s| Some(s) == sensor_key(uuid)),
            Self::Location(place) => ["country_code", "country", "city"].iter().any(|key| {
                session["location"][key]
                    .as_str()
                    .is_some_and(|name| name.eq_ignore_ascii_case(place))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_parse_as_tanner_reads_them_with_its_faults_fixed() {
        assert_eq!(
            Filter::parse_all("user_agent:curl peer_ip:2001:db8::1 start_time:1.5 location:US"),
            Ok(vec![
                Filter::UserAgent("curl".into()),
                Filter::PeerIp("2001:db8::1".into()),
                Filter::StartTime(1.5),
                Filter::Location("US".into()),
            ])
        );
        assert_eq!(Filter::parse_all(""), Ok(vec![]));
        assert_eq!(
            Filter::parse_all("user_agent"),
            Err("Invalid filter definition".into())
        );
        assert_eq!(
            Filter::parse_all("end_time:soon"),
            Err("Invalid filter definition".into())
        );
        assert_eq!(
            Filter::parse_all("colour:red"),
            Err("Invalid filter : colour".into())
        );
    }

    #[test]
    fn filters_match_sessions_and_null_fields_match_nothing() {
        let session = json!({
            "sess_uuid": "c546114f97f548f982756495f963e280", "peer_ip": "74.217.37.84",
            "user_agent": null, "snare_uuid": "78e51180-bf0d-4757-8a04-f000e5efa179",
            "start_time": 10.0, "end_time": 20.0, "attack_types": ["index", "lfi"],
            "possible_owners": {"attacker": 1.0},
            "location": {"country": "United States", "country_code": "US", "city": "Smyrna",
                         "zip_code": "30080"},
        });
        let matches = |filter: &str| Filter::parse(filter).unwrap().matches(&session);
        assert!(!matches("user_agent:Mozilla"));
        assert!(matches("peer_ip:74.217.37.84") && !matches("peer_ip:74.217.37.8"));
        assert!(matches("attack_types:lfi") && !matches("attack_types:sqli"));
        assert!(matches("possible_owners:attacker") && !matches("possible_owners:user"));
        assert!(matches("start_time:10") && !matches("start_time:10.5"));
        assert!(matches("end_time:20") && !matches("end_time:19.9"));
        assert!(matches("snare_uuid:78E51180-BF0D-4757-8A04-F000E5EFA179"));
        assert!(!matches("snare_uuid:snare_ids"));
        assert!(matches("location:us") && matches("location:Smyrna"));
        assert!(!matches("location:country") && !matches("location:U"));
        let unlocated = json!({"location": "NA", "user_agent": "curl/8.0"});
        assert!(!Filter::parse("location:NA").unwrap().matches(&unlocated));
        assert!(
            Filter::parse("user_agent:curl")
                .unwrap()
                .matches(&unlocated)
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert_eq!(score_arg(f64::NEG_INFINITY), "-inf");
        assert_eq!(score_arg(1.5), "1.5");
    }
}
