//! The HTTP service SNARE sensors call (spec section 1), and its lifecycle: a sweep of expired
//! sessions every second while it runs, every live session ended and handed on when it stops.
//!
//! Bodies are read frame by frame into one buffer sized by what arrived, up to
//! `--max-event-bytes` (beyond, 413 and the connection closed). Whatever the service answers
//! without using a body (404, 405, the liveness page) it reads and discards first, so the
//! connection stays usable for the client's next request.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    http::{
        HeaderValue, StatusCode,
        header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE},
    },
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use http_body_util::BodyExt as _;
use tokio::{net::TcpListener, sync::mpsc, task::JoinHandle, time::MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{
    SnareConfig,
    connections::{self, ConnectionLimits},
    event::Event,
    event_log::EventLogWriter,
    pipeline::{Pipeline, Stats},
    session::Session,
    tanner_time, wire,
};
use crate::{metrics::SnareMetrics, store::Store};

/// How often expired sessions are looked for (Tanner: every 300 s).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The running service.
pub struct Service {
    local_addr: SocketAddr,
    pipeline: Arc<Pipeline>,
    stop: CancellationToken,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    event_log: Option<EventLogWriter>,
}

impl Service {
    /// Serves on `config.listen`; ended sessions go to `ended`, sensors are added to
    /// `snare_ids` through `store` from their first event, counts go to `metrics`.
    pub async fn start(
        config: &SnareConfig,
        ended: mpsc::Sender<Session>,
        store: Option<Store>,
        metrics: SnareMetrics,
    ) -> Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen for SNARE sensors on {}", config.listen))?;
        Self::serve(listener, config, ended, store, metrics)
    }

    /// Serves on a listener already bound.
    pub fn serve(
        listener: TcpListener,
        config: &SnareConfig,
        ended: mpsc::Sender<Session>,
        store: Option<Store>,
        metrics: SnareMetrics,
    ) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let (pipeline, event_log) = Pipeline::open(config, ended, store, metrics.clone())?;
        let pipeline = Arc::new(pipeline);
        let stop = CancellationToken::new();
        let app = router(pipeline.clone(), config.max_event_bytes);
        let limits = ConnectionLimits {
            max: config.max_connections,
            request_timeout: config.request_timeout,
        };
        let server = tokio::spawn(connections::serve(
            listener,
            app,
            limits,
            metrics,
            stop.clone(),
        ));
        let sweeper = tokio::spawn(sweep_periodically(pipeline.clone(), stop.clone()));
        tracing::info!(%local_addr, "serving SNARE sensors");
        Ok(Self {
            local_addr,
            pipeline,
            stop,
            server,
            sweeper,
            event_log,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Stats {
        self.pipeline.stats()
    }

    /// A look at the live sessions, for as long as the service runs.
    pub fn live_sessions(&self) -> LiveSessionTable {
        LiveSessionTable(self.pipeline.clone())
    }

    /// Stops accepting events, lets those in flight finish (for at most five seconds), ends
    /// and hands on every live session and completes the event log.
    pub async fn shutdown(self) -> Stats {
        self.stop.cancel();
        let _ = self.server.await;
        let _ = self.sweeper.await;
        self.pipeline.end_all().await;
        let stats = self.pipeline.stats();
        // The last holder now: dropping it closes the hand-off and the event log.
        drop(self.pipeline);
        if let Some(event_log) = self.event_log {
            event_log.finish().await;
        }
        tracing::info!(?stats, "SNARE service stopped");
        stats
    }
}

/// The service's live sessions; clones look at the same.
#[derive(Clone)]
pub struct LiveSessionTable(Arc<Pipeline>);

impl LiveSessionTable {
    /// Copies of the live sessions `keep` accepts, the most recently active first, at most
    /// `limit`; and the number of live sessions. `keep` runs with the table locked.
    pub fn recent(
        &self,
        keep: impl FnMut(&Session) -> bool,
        limit: usize,
    ) -> (Vec<Session>, usize) {
        self.0.recent(keep, limit)
    }

    pub fn get(&self, sess_uuid: &uuid::Uuid) -> Option<Session> {
        self.0.live_session(sess_uuid)
    }

    /// Live sessions by sensor uuid.
    pub fn by_sensor(&self) -> std::collections::BTreeMap<Option<String>, usize> {
        self.0.live_by_sensor()
    }
}

fn router(pipeline: Arc<Pipeline>, max_event_bytes: usize) -> Router {
    let shared = Arc::new(Shared {
        pipeline,
        max_event_bytes,
    });
    Router::new()
        .route("/", any(|| async { "Tanner server" }))
        .route("/version", get(|| async { json(wire::version()) }))
        .route(
            "/dorks",
            get(|State(shared): State<Arc<Shared>>| async move {
                json(wire::dorks(&shared.pipeline.dorks()))
            }),
        )
        .route_layer(middleware::from_fn_with_state(shared.clone(), discard_body))
        .route("/event", post(event))
        .fallback(|state, request| discarding(state, request, StatusCode::NOT_FOUND))
        .method_not_allowed_fallback(|state, request| {
            discarding(state, request, StatusCode::METHOD_NOT_ALLOWED)
        })
        .with_state(shared)
}

struct Shared {
    pipeline: Arc<Pipeline>,
    max_event_bytes: usize,
}

async fn event(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let _in_flight = shared.pipeline.metrics().event_in_flight();
    let body = match read_body(request, shared.max_event_bytes).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let pipeline = &shared.pipeline;
    json(match Event::parse(&body) {
        Ok(event) => wire::to_python_json(&pipeline.handle(event, tanner_time::now()).await),
        Err(rejection) => {
            pipeline.reject();
            wire::error(rejection.name())
        }
    })
}

/// Reads and discards the body of a request answered without it, so that the connection can
/// carry the next one.
async fn discard_body(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let request = Request::from_parts(parts.clone(), body);
    if let Err(refusal) = read_body(request, shared.max_event_bytes).await {
        return refusal;
    }
    next.run(Request::from_parts(parts, Body::empty())).await
}

/// `status`, once the body is read and discarded.
async fn discarding(
    State(shared): State<Arc<Shared>>,
    request: Request,
    status: StatusCode,
) -> Response {
    match read_body(request, shared.max_event_bytes).await {
        Ok(_) => status.into_response(),
        Err(refusal) => refusal,
    }
}

/// The body of `request`, at most `max` bytes, in one buffer grown as frames arrive (each
/// frame is dropped once copied, so the connection's read buffer is reused): a body that
/// trickles in byte by byte costs its length, not a buffer a byte. A larger body is refused
/// with 413 before it is read, when its length is announced, or as soon as it passes `max`;
/// the answer closes the connection, whose unread rest would otherwise be the next request.
async fn read_body(request: Request, max: usize) -> Result<Vec<u8>, Response> {
    let announced = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|length| length > max as u64) {
        return Err(closing(StatusCode::PAYLOAD_TOO_LARGE));
    }
    let mut body = request.into_body();
    let mut buffer = Vec::with_capacity(announced.map_or(0, |length| length as usize));
    while let Some(frame) = body.frame().await {
        // A client that broke off mid-body gets no answer it could read.
        let Ok(frame) = frame else {
            return Err(closing(StatusCode::BAD_REQUEST));
        };
        if let Some(data) = frame.data_ref() {
            if buffer.len() + data.len() > max {
                return Err(closing(StatusCode::PAYLOAD_TOO_LARGE));
            }
            buffer.extend_from_slice(data);
        }
    }
    Ok(buffer)
}

/// An answer with no body after which the connection is closed.
fn closing(status: StatusCode) -> Response {
    (status, [(CONNECTION, HeaderValue::from_static("close"))]).into_response()
}

fn json(body: Vec<u8>) -> Response {
    ([(CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
}

async fn sweep_periodically(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => pipeline.sweep(tanner_time::now()).await,
            () = stop.cancelled() => return,
        }
    }
}
