//! The HTTP service SNARE sensors call (spec section 1), and its lifecycle: a sweep of expired
//! sessions every second while it runs, every live session ended and handed on when it stops.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
    time::MissedTickBehavior,
};
use tower_http::limit::RequestBodyLimitLayer;

use super::{
    SnareConfig,
    event::Event,
    event_log::EventLogWriter,
    pipeline::{Pipeline, Stats},
    session::Session,
    tanner_time, wire,
};
use crate::metrics::SnareMetrics;

/// How often expired sessions are looked for (Tanner: every 300 s).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How long requests in flight may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The running service.
pub struct Service {
    local_addr: SocketAddr,
    pipeline: Arc<Pipeline>,
    stop: watch::Sender<()>,
    server: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    event_log: Option<EventLogWriter>,
}

impl Service {
    /// Serves on `config.listen`; ended sessions go to `ended`, counts to `metrics`.
    pub async fn start(
        config: &SnareConfig,
        ended: mpsc::Sender<Session>,
        metrics: SnareMetrics,
    ) -> Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen for SNARE sensors on {}", config.listen))?;
        Self::serve(listener, config, ended, metrics)
    }

    /// Serves on a listener already bound.
    pub fn serve(
        listener: TcpListener,
        config: &SnareConfig,
        ended: mpsc::Sender<Session>,
        metrics: SnareMetrics,
    ) -> Result<Self> {
        let local_addr = listener.local_addr()?;
        let (pipeline, event_log) = Pipeline::open(config, ended, metrics)?;
        let pipeline = Arc::new(pipeline);
        let (stop, stopped) = watch::channel(());
        let app = router(pipeline.clone(), config.max_event_bytes);
        let server = tokio::spawn(accept(
            listener,
            app,
            config.max_connections,
            stopped.clone(),
        ));
        let sweeper = tokio::spawn(sweep_periodically(pipeline.clone(), stopped));
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

    /// Stops accepting events, lets those in flight finish (for at most five seconds), ends
    /// and hands on every live session and completes the event log.
    pub async fn shutdown(self) -> Stats {
        drop(self.stop);
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

/// Serves connections, at most `max_connections` at once, until stopped; then lets the requests
/// in flight finish for [`SHUTDOWN_GRACE`] and cuts off what remains, so that nothing of the
/// service outlives it.
async fn accept(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    mut stopped: watch::Receiver<()>,
) {
    let mut http = http1::Builder::new();
    // With a timer hyper cuts off a client that takes more than 30 s to send a request head.
    http.timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        // At the cap, new connections wait in the kernel's backlog: a flood of them cannot take
        // the descriptors and memory that the sensors' connections need.
        let room = connections.len() < max_connections;
        tokio::select! {
            accepted = listener.accept(), if room => match accepted {
                Ok((tcp, _)) => {
                    // Answers are one small write each: never hold them back.
                    let _ = tcp.set_nodelay(true);
                    let service = TowerToHyperService::new(app.clone());
                    let connection = http.serve_connection(TokioIo::new(tcp), service);
                    connections.spawn(graceful.watch(connection));
                }
                // Out of file descriptors, typically: give connections time to close.
                Err(err) => {
                    tracing::warn!("cannot accept a SNARE connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next() => {}
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("SNARE requests still in flight after {SHUTDOWN_GRACE:?}: cut off");
    }
    connections.shutdown().await;
}

fn router(pipeline: Arc<Pipeline>, max_event_bytes: usize) -> Router {
    Router::new()
        .route("/", any(|| async { "Tanner server" }))
        .route("/version", get(|| async { json(wire::version()) }))
        .route("/dorks", get(|| async { json(wire::dorks()) }))
        .route("/event", post(event))
        // Larger bodies get 413, before they are read when the head gives their length.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(max_event_bytes))
        .with_state(pipeline)
}

async fn event(State(pipeline): State<Arc<Pipeline>>, body: Bytes) -> Response {
    json(match Event::parse(&body) {
        Ok(event) => wire::to_python_json(&pipeline.handle(event, tanner_time::now()).await),
        Err(rejection) => {
            pipeline.reject();
            wire::error(rejection.name())
        }
    })
}

fn json(body: Vec<u8>) -> Response {
    ([(CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
}

async fn sweep_periodically(pipeline: Arc<Pipeline>, mut stopped: watch::Receiver<()>) {
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => pipeline.sweep(tanner_time::now()).await,
            _ = stopped.changed() => return,
        }
    }
}
