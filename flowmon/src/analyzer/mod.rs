//! The session analyzer (spec sections 5 and 6): every ended SNARE session is analysed as
//! Tanner does it, joined with the kernel's flows of its peer, stored in Redis in Tanner's
//! layout and served by Tanner's read API. Documented in `docs/analyzer.md`.
//!
//! - [`analysis`]: the analysis JSON; [`owners`]: `possible_owners`; [`crawlers`]: crawler
//!   user agents; [`rdns`]: reverse DNS; [`geoip`]: locations.
//! - [`network`]: the join with flows, through a [`FlowSource`].
//! - [`storage`]: the Redis writes; [`api`]: the read API.
//!
//! Sessions are analysed concurrently, off the SNARE request path: the service only hands
//! them to a channel, which this drains at once into up to [`IN_FLIGHT`] analyses.

pub mod analysis;
pub mod api;
pub mod connection;
pub mod crawlers;
pub mod geoip;
pub mod network;
pub mod owners;
pub mod rdns;
pub mod storage;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::{
    sync::mpsc,
    task::{JoinHandle, JoinSet},
};

pub use analysis::{Analysis, Dorks};
pub use api::ApiServer;
pub use connection::ReadConnection;
pub use geoip::GeoIp;
pub use network::{FlowSource, FlowsFuture, Network, RedisFlowSource};
pub use rdns::ReverseDns;
pub use storage::SessionWrites;

use crate::{
    config::Settings,
    metrics::AnalyzerMetrics,
    snare::{HANDOFF_CAPACITY, Session},
    store::{Store, StoreConfig},
};

/// Analyses running at once; beyond, ended sessions wait in the channel.
pub const IN_FLIGHT: usize = 256;
const RDNS_TIMEOUT: Duration = Duration::from_secs(2);
/// A flow source slower than this leaves the session's `network` null...
const FLOWS_TIMEOUT: Duration = Duration::from_secs(5);
/// ...and is not asked again for this long; nor is one that failed.
const FLOWS_RETRY: Duration = Duration::from_secs(10);

/// What analyses sessions: the settings and the sources of what a session lacks.
pub struct Analyzer {
    /// Flows from this long before a session's first request are its own.
    session_timeout: f64,
    geoip: GeoIp,
    rdns: ReverseDns,
    flows: Option<Arc<dyn FlowSource>>,
    flows_health: FlowsHealth,
    dorks: Dorks,
}

impl Analyzer {
    pub fn new(
        session_timeout: Duration,
        geoip: GeoIp,
        rdns: ReverseDns,
        flows: Option<Arc<dyn FlowSource>>,
        dorks: Dorks,
    ) -> Self {
        Self {
            session_timeout: session_timeout.as_secs_f64(),
            geoip,
            rdns,
            flows,
            flows_health: FlowsHealth::default(),
            dorks,
        }
    }

    /// With `--session-timeout`, `--geoip-db` and the system's resolver.
    pub fn from_settings(
        settings: &Settings,
        flows: Option<Arc<dyn FlowSource>>,
        dorks: Dorks,
    ) -> Result<Self> {
        Ok(Self::new(
            settings.session_timeout()?,
            GeoIp::open(settings.geoip_db.as_deref())?,
            ReverseDns::system(RDNS_TIMEOUT),
            flows,
            dorks,
        ))
    }

    pub async fn analyse(&self, session: Session) -> Analysis {
        let peer = session
            .ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| ip.to_canonical());
        let network = match (&self.flows, peer) {
            (Some(flows), Some(peer)) => {
                let from = session.start_timestamp - self.session_timeout;
                self.network(flows.as_ref(), peer, from, session.timestamp)
                    .await
            }
            _ => None,
        };
        let location = self.geoip.locate(peer);
        let mut analysis = Analysis::new(session, &self.dorks, location, network);
        let host = match peer {
            Some(peer) if owners::wants_host_name(&analysis) => self.rdns.name_of(peer).await,
            _ => None,
        };
        analysis.possible_owners = owners::possible_owners(&analysis, host.as_deref());
        analysis
    }

    /// The network of `peer` between `from` and `to`; `None` when the source fails. After a
    /// failure the source rests for [`FLOWS_RETRY`], so that analyses do not queue up behind a
    /// source that is away; failures are logged when they begin and end, not for every session.
    async fn network(
        &self,
        flows: &dyn FlowSource,
        peer: IpAddr,
        from: f64,
        to: f64,
    ) -> Option<Network> {
        if self.flows_health.resting() {
            return None;
        }
        let failure =
            match tokio::time::timeout(FLOWS_TIMEOUT, flows.flows_of(peer, from, to)).await {
                Ok(Ok(records)) => {
                    if self.flows_health.recovered() {
                        tracing::info!("the flow source answers again");
                    }
                    return Some(Network::of(peer, &records, from, to));
                }
                Ok(Err(err)) => format!("{err:#}"),
                Err(_) => format!("no answer within {FLOWS_TIMEOUT:?}"),
            };
        if self.flows_health.failed() {
            tracing::warn!(
                "cannot read sessions' flows, their network is null until it answers: {failure}"
            );
        }
        None
    }

    /// Analyses the sessions from `ended` until it closes, storing each through `store` (with
    /// none, each is logged at debug level) and counting into `metrics`. Ends with the number
    /// analysed, once every one of them is submitted.
    pub fn spawn(
        self,
        ended: mpsc::Receiver<Session>,
        store: Option<Store>,
        writes: SessionWrites,
        metrics: AnalyzerMetrics,
    ) -> JoinHandle<u64> {
        let sink = Arc::new(Sink {
            store,
            writes,
            metrics,
        });
        tokio::spawn(consume(Arc::new(self), ended, sink))
    }
}

/// Until when the flow source rests after a failure, if it failed last.
#[derive(Default)]
struct FlowsHealth(Mutex<Option<Instant>>);

impl FlowsHealth {
    fn resting(&self) -> bool {
        self.lock().is_some_and(|until| Instant::now() < until)
    }

    /// Notes an answer: whether it ends a failure.
    fn recovered(&self) -> bool {
        self.lock().take().is_some()
    }

    /// Notes a failure: whether it is the first.
    fn failed(&self) -> bool {
        self.lock().replace(Instant::now() + FLOWS_RETRY).is_none()
    }

    fn lock(&self) -> MutexGuard<'_, Option<Instant>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where analyses go.
struct Sink {
    store: Option<Store>,
    writes: SessionWrites,
    metrics: AnalyzerMetrics,
}

impl Sink {
    fn take(&self, analysis: Analysis) {
        match &self.store {
            None => {
                let json = serde_json::to_string(&analysis).expect("an analysis serialises");
                tracing::debug!(analysis = %json, "session analysed");
            }
            Some(store) => match self.writes.write(&analysis) {
                Some(write) => store.submit(write),
                None => {
                    self.metrics.unstored();
                    tracing::warn!(
                        sess_uuid = %analysis.sess_uuid,
                        snare_uuid = ?analysis.snare_uuid,
                        "session analysed but not stored: its sensor id is no uuid"
                    )
                }
            },
        }
        // Counted once handed on: a panic on the way counts as a failure only.
        self.metrics.analysed(&analysis.possible_owners);
    }
}

async fn consume(
    analyzer: Arc<Analyzer>,
    mut ended: mpsc::Receiver<Session>,
    sink: Arc<Sink>,
) -> u64 {
    let mut analysing = JoinSet::new();
    let mut analysed = 0;
    let metrics = sink.metrics.clone();
    let mut count = |joined: Result<(), tokio::task::JoinError>| match joined {
        Ok(()) => analysed += 1,
        Err(err) => {
            metrics.failed();
            tracing::error!(%err, "a session's analysis failed")
        }
    };
    loop {
        tokio::select! {
            session = ended.recv(), if analysing.len() < IN_FLIGHT => {
                let Some(session) = session else { break };
                let (analyzer, sink) = (analyzer.clone(), sink.clone());
                analysing.spawn(async move { sink.take(analyzer.analyse(session).await) });
            }
            Some(joined) = analysing.join_next() => count(joined),
        }
    }
    while let Some(joined) = analysing.join_next().await {
        count(joined);
    }
    tracing::info!(sessions = analysed, "SNARE sessions analysed");
    analysed
}

/// The running analyzer, and its API.
pub struct Running {
    consumer: JoinHandle<u64>,
    api: Option<ApiServer>,
    /// A store the analyzer opened itself, closed when it finishes.
    own_store: Option<Store>,
}

impl Running {
    /// Waits until the channel of ended sessions has closed and every session is analysed and
    /// submitted, then stops the API. Returns the number of sessions analysed.
    pub async fn finish(self) -> u64 {
        let analysed = self.consumer.await.unwrap_or_else(|err| {
            tracing::error!(%err, "the session analyzer failed");
            0
        });
        if let Some(api) = self.api {
            api.shutdown().await;
        }
        if let Some(store) = self.own_store {
            store.close().await;
        }
        analysed
    }
}

/// The analyzer of the agent: takes the sessions `ended` by the SNARE service, stores them
/// through `store`, counts into `metrics` and, unless `--no-redis`, serves the read API on
/// `--api-listen`.
pub async fn start(
    settings: &Settings,
    ended: mpsc::Receiver<Session>,
    store: Option<Store>,
    flows: Option<Arc<dyn FlowSource>>,
    dorks: Dorks,
    metrics: AnalyzerMetrics,
) -> Result<Running> {
    let analyzer = Analyzer::from_settings(settings, flows, dorks)?;
    let writes = SessionWrites::from_settings(settings)?;
    let api = if settings.no_redis {
        tracing::info!("--no-redis: no read API");
        None
    } else {
        Some(ApiServer::start(settings).await?)
    };
    Ok(Running {
        consumer: analyzer.spawn(ended, store, writes, metrics),
        api,
        own_store: None,
    })
}

/// Tanner's dorks SET: the hidden-link paths planted in the sensors' pages.
pub const DORKS_KEY: &str = "9445102ddf663ed0a20382c219a952ba";

/// The dorks in Redis (Tanner's, when flowmon takes over its Redis), for `hidden_links`;
/// none when Redis cannot be read.
pub async fn load_dorks(connection: &mut ReadConnection) -> Dorks {
    let members = redis::cmd("SMEMBERS")
        .arg(DORKS_KEY)
        .query_async::<Vec<String>>(connection)
        .await;
    match members {
        Ok(dorks) => dorks.into_iter().collect(),
        Err(err) => {
            tracing::info!(%err, "no dorks read from Redis: hidden_links counts none");
            Dorks::new()
        }
    }
}

/// The analyzer of `flowmon replay`, with a store and a Redis flow source of its own and no
/// API: the sender takes the replayed sessions. `None` with `--no-redis`, where there is
/// nowhere to store them.
pub async fn for_replay(settings: &Settings) -> Result<Option<(mpsc::Sender<Session>, Running)>> {
    if settings.no_redis {
        return Ok(None);
    }
    let writes = SessionWrites::from_settings(settings)?;
    let mut connection = ReadConnection::from_settings(settings)?;
    let dorks = load_dorks(&mut connection).await;
    let flows = RedisFlowSource::new(connection, settings.sensor_id());
    let analyzer = Analyzer::from_settings(settings, Some(Arc::new(flows)), dorks)?;
    let store = Store::start(StoreConfig::from_settings(settings))?;
    let (sessions, ended) = mpsc::channel(HANDOFF_CAPACITY);
    let running = Running {
        // A replay serves no metrics: its report says what it did.
        consumer: analyzer.spawn(
            ended,
            Some(store.clone()),
            writes,
            AnalyzerMetrics::default(),
        ),
        api: None,
        own_store: Some(store),
    };
    Ok(Some((sessions, running)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;

    /// A flow source that is away, counting the calls it gets.
    #[derive(Default)]
    struct Away(AtomicUsize);

    impl FlowSource for Away {
        fn flows_of(&self, _: IpAddr, _: f64, _: f64) -> FlowsFuture<'_> {
            self.0.fetch_add(1, SeqCst);
            Box::pin(async { Err(anyhow::anyhow!("connection refused")) })
        }
    }

    #[tokio::test]
    async fn a_failing_flow_source_rests_and_leaves_network_null() {
        let away = Arc::new(Away::default());
        let analyzer = Analyzer::new(
            Duration::from_secs(75),
            GeoIp::default(),
            ReverseDns::with_lookup(|_| None, Duration::from_secs(1)),
            Some(away.clone()),
            Dorks::new(),
        );
        for _ in 0..3 {
            let analysis = analyzer.analyse(analysis::tests::tanner_fixture()).await;
            assert_eq!(analysis.network, None);
            assert_eq!(analysis.possible_owners.attacker, 1.0);
        }
        assert_eq!(away.0.load(SeqCst), 1, "asked once, then left to rest");
    }
}
