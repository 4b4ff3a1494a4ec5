//! Tanner's read API (`--api-listen`) over the sessions in Redis, with Tanner's routes and
//! envelope `{"version": 1, "response": {"message": ...}}`, without its faults; plus
//! `/flows?peer=<ip>`. Documented in `docs/analyzer.md`.
//!
//! - [`reads`]: what is read from Redis (also for the console);
//! - [`filters`]: Tanner's session filters.

pub mod filters;
pub mod reads;

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
use redis::RedisError;
use serde::Serialize;
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::store::{self, Connection, Patience, RedisTarget};
use filters::Filter;
use reads::{ReadError, SensorStats};

/// Tanner's API port, on loopback: the sessions are the operator's, not the attackers'.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8092";

/// Sessions `/snare/<uuid>` lists, newest first (Tanner's number).
const NEWEST: isize = 50;
/// How long requests in flight may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// The bearer token requests must carry; none when `None` (never empty).
    pub token: Option<String>,
    /// Where the sessions are read.
    pub redis: RedisTarget,
}

/// The running API.
pub struct ApiServer {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl ApiServer {
    /// Serves on `config.listen`.
    pub async fn start(config: &ApiConfig) -> Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen for the read API on {}", config.listen))?;
        let redis = Connection::open(&config.redis, Patience::READ)?;
        Ok(Self::serve(listener, redis, config.token.clone()))
    }

    /// Serves on a listener already bound.
    pub fn serve(listener: TcpListener, redis: Connection, token: Option<String>) -> Self {
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

fn router(redis: Connection, token: Option<String>) -> Router {
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

impl From<ReadError> for Failure {
    fn from(err: ReadError) -> Self {
        match err {
            ReadError::UnknownSensor => Self::UnknownSensor,
            ReadError::Redis(err) => Self::Redis(err),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Self::UnknownSensor => message(StatusCode::NOT_FOUND, "Invalid SNARE UUID"),
            Self::UnknownSession => message(StatusCode::NOT_FOUND, Value::Null),
            Self::BadRequest(why) => message(StatusCode::BAD_REQUEST, why),
            Self::Redis(err) if store::unreachable(&err) => {
                tracing::warn!(%err, "read API: Redis unavailable");
                message(StatusCode::SERVICE_UNAVAILABLE, "Redis unavailable")
            }
            Self::Redis(err) => {
                tracing::warn!(%err, "read API: Redis answered with an error");
                message(StatusCode::BAD_GATEWAY, "Redis error")
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
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn snares(State(mut redis): State<Connection>) -> Answer {
    Ok(message(StatusCode::OK, reads::sensors(&mut redis).await?))
}

async fn snare(State(mut redis): State<Connection>, Path(uuid): Path<String>) -> Answer {
    let sessions = reads::sensor_sessions(&mut redis, &uuid, NEWEST).await?;
    Ok(message(StatusCode::OK, sessions))
}

async fn snare_stats(State(mut redis): State<Connection>, Path(uuid): Path<String>) -> Answer {
    let sessions = reads::sensor_sessions(&mut redis, &uuid, -1).await?;
    Ok(message(StatusCode::OK, SensorStats::of(&sessions)))
}

async fn sessions(
    State(mut redis): State<Connection>,
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
    let sessions = reads::sensor_sessions(&mut redis, &uuid, -1).await?;
    let matching: Vec<&Value> = sessions
        .iter()
        .filter(|session| filters.iter().all(|filter| filter.matches(*session)))
        .map(|session| &session["sess_uuid"])
        .collect();
    Ok(message(StatusCode::OK, matching))
}

async fn session(State(mut redis): State<Connection>, Path(sess_uuid): Path<String>) -> Answer {
    match reads::session(&mut redis, &sess_uuid).await? {
        Some(found) => Ok(message(StatusCode::OK, found)),
        None => Err(Failure::UnknownSession),
    }
}

async fn flows(State(mut redis): State<Connection>, RawQuery(query): RawQuery) -> Answer {
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
        .ok_or_else(|| Failure::BadRequest("Invalid peer".into()))?;
    let bound = |name: &str, default: f64| match param(name) {
        None => Ok(default),
        Some(value) => finite(value).ok_or_else(|| Failure::BadRequest(format!("Invalid {name}"))),
    };
    let (from, to) = (
        bound("from", f64::NEG_INFINITY)?,
        bound("to", f64::INFINITY)?,
    );
    let records = reads::peer_flows(&mut redis, peer, from, to).await?;
    Ok(message(StatusCode::OK, records))
}

/// A finite number: `nan` or `inf` would reach Redis as a bound it refuses.
pub fn finite(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|number| number.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
    }

    #[test]
    fn only_finite_numbers_are_bounds() {
        assert_eq!(finite("1.5"), Some(1.5));
        assert_eq!(finite("-3e2"), Some(-300.0));
        for bad in [
            "nan", "NaN", "-NaN", "inf", "-inf", "infinity", "1e400", "", "x",
        ] {
            assert_eq!(finite(bad), None, "{bad}");
        }
    }
}
