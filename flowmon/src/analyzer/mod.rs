//! The session analyzer (spec sections 5 and 6): every ended SNARE session is analysed as
//! Tanner does it, joined with the kernel's flows of its peer, stored in Redis in Tanner's
//! layout and served by Tanner's read API. Documented in `docs/analyzer.md`.
//!
//! - [`analysis`]: the analysis JSON; [`owners`]: `possible_owners`; [`crawlers`]: crawler
//!   user agents; [`rdns`]: reverse DNS; [`geoip`]: locations.
//! - [`network`]: the join with flows, through a [`FlowSource`].
//! - [`storage`]: the Redis writes; [`runner`]: the task that analyses ended sessions as
//!   they come.

pub mod analysis;
pub mod crawlers;
pub mod geoip;
pub mod network;
pub mod owners;
pub mod rdns;
mod runner;
pub mod storage;

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

pub use analysis::{Analysis, Dorks};
pub use geoip::GeoIp;
pub use network::{FlowOrigin, FlowSource, FlowsFuture, Network, RedisFlowSource};
pub use rdns::ReverseDns;
pub use runner::{IN_FLIGHT, Running, for_replay, load_dorks, start};
pub use storage::SessionWrites;

use crate::{snare::Session, store::RedisTarget};

/// How the analyzer works.
#[derive(Debug)]
pub struct AnalyzerConfig {
    /// Flows from this long before a session's first request are its own.
    pub session_timeout: Duration,
    /// Where sessions are located (`--geoip-db`).
    pub geoip: GeoIp,
    /// How long an analysed session is kept in Redis; forever when `None`.
    pub session_retention: Option<Duration>,
    /// Where the dorks are read, and the flows when this host monitors none; `None` with
    /// `--no-redis`.
    pub redis: Option<RedisTarget>,
    /// The flow monitor's `--sensor-id`: the flow records in Redis that are this sensor's.
    pub sensor_id: String,
}

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
    /// An analyzer with the system's resolver, from `config`.
    pub fn from_config(
        config: AnalyzerConfig,
        flows: Option<Arc<dyn FlowSource>>,
        dorks: Dorks,
    ) -> Self {
        Self::new(
            config.session_timeout,
            config.geoip,
            ReverseDns::system(RDNS_TIMEOUT),
            flows,
            dorks,
        )
    }

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
                    return records
                        .map(|records| Network::of(flows.origin(), peer, &records, from, to));
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use super::*;

    /// A flow source that is away, counting the calls it gets.
    #[derive(Default)]
    struct Away(AtomicUsize);

    impl FlowSource for Away {
        fn origin(&self) -> FlowOrigin {
            FlowOrigin::Redis
        }

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
