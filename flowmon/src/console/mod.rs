//! The operator's web console (`--web-listen`, default 127.0.0.1:8091): the traffic and the
//! honeypot's visitors, live, and the join between them. Pages are rendered on the server; a
//! small script updates the overview's figures and draws its charts. Documented in
//! `docs/console.md`.
//!
//! - [`sources`]: what the console reads, behind traits: the live flow table, the live
//!   sessions, what Redis stores.
//! - [`history`]: the overview's figures and an hour of them for the charts.
//! - [`auth`]: the login (`--api-token`).
//! - `pages`: one module per page; `assets`: the stylesheet and the script.

mod assets;
pub mod auth;
pub mod history;
mod pages;
pub mod sources;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    extract::{RawQuery, Request, State},
    http::{HeaderName, HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{
    analyzer::FlowSource,
    metrics::Metrics,
    store::{RedisTarget, Store},
};
use auth::Auth;
use history::{Counters, SharedHistory};
use sources::{LiveFlows, LiveSessions, Storage};

/// Where the console listens unless told: the port of Tanner's web UI, on loopback.
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:8091";
/// How long requests in flight may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a Redis health check is trusted, and how long it may take.
const REDIS_CHECK_AGE: Duration = Duration::from_secs(5);
const REDIS_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct ConsoleConfig {
    pub listen: SocketAddr,
    /// `--api-token`: the console asks for it.
    pub token: Option<String>,
    /// `--session-timeout`: a session's flows are looked for from this long before its first
    /// request, as the analyzer does.
    pub session_timeout: Duration,
    /// Where stored sessions are read; `None` with `--no-redis`.
    pub redis: Option<RedisTarget>,
}

/// What the console reads.
pub struct Sources {
    pub metrics: Arc<Metrics>,
    /// The Redis store, for its spool.
    pub store: Option<Store>,
    /// `None` without `--iface`.
    pub flows: Option<Arc<dyn LiveFlows>>,
    pub sessions: Arc<dyn LiveSessions>,
    /// `None` with `--no-redis`.
    pub storage: Option<Arc<dyn Storage>>,
    /// The flow records this agent keeps itself (with `--iface`): shown when Redis is not.
    pub records: Option<Arc<dyn FlowSource>>,
}

/// What the pages say about this agent.
#[derive(Clone, Debug, Default)]
pub struct About {
    pub sensor_id: String,
    /// Monitored interfaces.
    pub ifaces: Vec<String>,
    /// Where records and sessions go, in a few words.
    pub records: String,
}

/// The state every handler gets.
#[derive(Clone)]
pub(crate) struct Ctx(Arc<Inner>);

pub(crate) struct Inner {
    sources: Sources,
    history: SharedHistory,
    about: About,
    auth_required: bool,
    session_timeout: f64,
    redis_health: Mutex<Option<(Instant, RedisHealth)>>,
}

impl std::ops::Deref for Ctx {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Redis as the overview reports it.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", content = "detail", rename_all = "snake_case")]
pub enum RedisHealth {
    /// `--no-redis`.
    None,
    Reachable,
    Unreachable(String),
}

impl Inner {
    /// Redis's health, checked at most every [`REDIS_CHECK_AGE`].
    async fn redis_health(&self) -> RedisHealth {
        let Some(storage) = &self.sources.storage else {
            return RedisHealth::None;
        };
        let lock = || {
            self.redis_health
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
        };
        if let Some((at, health)) = lock().as_ref()
            && at.elapsed() < REDIS_CHECK_AGE
        {
            return health.clone();
        }
        let health = match tokio::time::timeout(REDIS_CHECK_TIMEOUT, storage.ping()).await {
            Ok(Ok(())) => RedisHealth::Reachable,
            Ok(Err(err)) => RedisHealth::Unreachable(format!("{err:#}")),
            Err(_) => RedisHealth::Unreachable(format!("no answer within {REDIS_CHECK_TIMEOUT:?}")),
        };
        *lock() = Some((Instant::now(), health.clone()));
        health
    }
}

/// The running console.
pub struct Console {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    sampler: JoinHandle<()>,
}

impl Console {
    /// Serves on `config.listen`.
    pub async fn start(config: ConsoleConfig, sources: Sources, about: About) -> Result<Self> {
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen for the console on {}", config.listen))?;
        Ok(Self::serve(listener, config, sources, about))
    }

    /// Serves on a listener already bound.
    pub fn serve(
        listener: TcpListener,
        config: ConsoleConfig,
        sources: Sources,
        about: About,
    ) -> Self {
        let local_addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let auth = Auth::new(config.token.clone());
        if !auth.required() && !local_addr.ip().is_loopback() {
            tracing::warn!(
                %local_addr,
                "the console is open to anyone who reaches it: set --api-token"
            );
        }
        let history = SharedHistory::default();
        let sampler = tokio::spawn(history.clone().sample(Counters {
            metrics: sources.metrics.clone(),
            store: sources.store.clone(),
        }));
        let ctx = Ctx(Arc::new(Inner {
            sources,
            history,
            about,
            auth_required: auth.required(),
            session_timeout: config.session_timeout.as_secs_f64(),
            redis_health: Mutex::new(None),
        }));
        let app = router(ctx, auth);
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            // axum's serve only ends, without error, once shut down.
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        tracing::info!(%local_addr, "serving the console");
        Self {
            local_addr,
            stop,
            server,
            sampler,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and lets the requests in flight finish.
    pub async fn shutdown(self) {
        self.sampler.abort();
        let _ = self.stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, self.server)
            .await
            .is_err()
        {
            tracing::warn!("console requests still in flight after {SHUTDOWN_GRACE:?}");
        }
    }
}

fn router(ctx: Ctx, auth: Auth) -> Router {
    let pages = Router::new()
        .route("/", get(pages::overview::show))
        .route("/api/overview", get(overview_update))
        .route("/flows", get(pages::flows::list))
        .route("/flows/{flow}", get(pages::flows::one))
        .route("/sessions", get(pages::sessions::list))
        .route("/sessions/{sess_uuid}", get(pages::sessions::one))
        .route("/sensors", get(pages::sessions::sensors))
        .route("/peers", get(pages::peers::search))
        .route("/peers/{ip}", get(pages::peers::one))
        .with_state(ctx)
        .layer(middleware::from_fn_with_state(auth.clone(), auth::require));
    let open = Router::new()
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .with_state(auth)
        .route("/assets/{name}", get(assets::serve));
    pages
        .merge(open)
        .layer(axum::extract::DefaultBodyLimit::max(16 << 10))
        .layer(middleware::from_fn(security_headers))
}

/// The figures and the chart points a client lacks (`?since=<points it has>`).
async fn overview_update(State(ctx): State<Ctx>, RawQuery(query): RawQuery) -> Response {
    let params = pages::params(query.as_deref());
    let since = pages::param(&params, "since").parse().unwrap_or(0);
    #[derive(Serialize)]
    struct Overview {
        #[serde(flatten)]
        update: history::Update,
        redis: RedisHealth,
    }
    let redis = ctx.redis_health().await;
    let update = ctx.history.lock().update(since);
    let json = serde_json::to_vec(&Overview { update, redis }).expect("figures serialise");
    ([(header::CONTENT_TYPE, "application/json")], json).into_response()
}

/// Pages run no script but their own and load nothing from elsewhere.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (HeaderName::from_static("x-frame-options"), "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests;
