//! The SNARE service's connections, each watched so that no client can hold one for long:
//!
//! - a request (from its first byte to the first byte of its answer) that takes longer than
//!   the request timeout is cut off, whether its head or its body is slow, so a stalled
//!   client frees its connection within the timeout (and a quarter second);
//! - at the cap, a new connection takes the place of the least recently active one (the
//!   longest stalled, or idle between requests), closed at once: waiting clients are served
//!   without a slot being freed by a timeout first, and descriptors stay bounded by the cap.
//!
//! A connection idle between two requests is left to hyper, which closes it after 30 s
//! without a new request head (longer than SNARE's own keep-alive of 15 s, so SNARE never
//! sends on a connection flowmon is closing).

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;

use crate::metrics::{ConnectionCut, SnareMetrics};

/// How often requests are checked against the timeout.
const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How long requests in flight may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// `Activity::request` between requests.
const IDLE: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max: usize,
    /// Longest a request may take from its first byte to its answer.
    pub request_timeout: Duration,
}

/// What a connection did last, in milliseconds since the service started.
struct Activity {
    /// The last byte read or written.
    last: AtomicU64,
    /// The first byte of the request being read, [`IDLE`] once it is answered.
    request: AtomicU64,
}

/// A connection whose reads and writes are noted in its [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
    epoch: Instant,
}

impl Watched {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.now();
            // The first byte after an answer (or of the connection) begins a request.
            let _ = self
                .activity
                .request
                .compare_exchange(IDLE, now, Relaxed, Relaxed);
            self.activity.last.store(now, Relaxed);
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.request.store(IDLE, Relaxed);
            self.activity.last.store(self.now(), Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// An open connection, as the accept loop keeps it.
struct Open {
    activity: Arc<Activity>,
    cut: CancellationToken,
}

/// Serves connections on `listener` until `stop` is cancelled; then lets the requests in
/// flight finish for [`SHUTDOWN_GRACE`] and cuts off what remains, so that nothing of the
/// service outlives it.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    metrics: SnareMetrics,
    stop: CancellationToken,
) {
    let mut http = http1::Builder::new();
    // With a timer hyper closes a connection that sends no request head for 30 s.
    http.timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let epoch = Instant::now();
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    let mut checks = tokio::time::interval(CHECK_INTERVAL);
    checks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let timeout_ms = limits.request_timeout.as_millis() as u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if open.len() >= limits.max
                        && let Some(id) = least_recently_active(&open)
                        && let Some(evicted) = open.remove(&id)
                    {
                        evicted.cut.cancel();
                        metrics.connection_cut(ConnectionCut::Evicted);
                    }
                    // Answers are one small write each: never hold them back.
                    let _ = stream.set_nodelay(true);
                    let activity = Arc::new(Activity {
                        last: AtomicU64::new(epoch.elapsed().as_millis() as u64),
                        request: AtomicU64::new(IDLE),
                    });
                    let io = Watched { stream, activity: activity.clone(), epoch };
                    let cut = CancellationToken::new();
                    let service = TowerToHyperService::new(app.clone());
                    let connection = graceful.watch(http.serve_connection(TokioIo::new(io), service));
                    let id = next_id;
                    next_id += 1;
                    tasks.spawn({
                        let cut = cut.clone();
                        async move {
                            tokio::select! {
                                _ = connection => {}
                                () = cut.cancelled() => {}
                            }
                            id
                        }
                    });
                    open.insert(id, Open { activity, cut });
                }
                // Out of file descriptors, typically: give connections time to close.
                Err(err) => {
                    tracing::warn!("cannot accept a SNARE connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = tasks.join_next() => {
                if let Ok(id) = done {
                    open.remove(&id);
                }
            }
            _ = checks.tick() => {
                let now = epoch.elapsed().as_millis() as u64;
                open.retain(|_, connection| {
                    let began = connection.activity.request.load(Relaxed);
                    let overdue = began != IDLE && now.saturating_sub(began) > timeout_ms;
                    if overdue {
                        connection.cut.cancel();
                        metrics.connection_cut(ConnectionCut::RequestTimeout);
                    }
                    !overdue
                });
            }
            () = stop.cancelled() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("SNARE requests still in flight after {SHUTDOWN_GRACE:?}: cut off");
    }
    tasks.shutdown().await;
}

/// The connection whose last byte is oldest; of two in the same millisecond, the one opened
/// first.
fn least_recently_active(open: &HashMap<u64, Open>) -> Option<u64> {
    open.iter()
        .min_by_key(|&(&id, connection)| (connection.activity.last.load(Relaxed), id))
        .map(|(&id, _)| id)
}
