//! The analyzer at work: a task that takes ended sessions from a channel as they come, runs up
//! to [`IN_FLIGHT`] analyses at once, off the SNARE request path, and hands each analysis to
//! the store.

use std::sync::Arc;

use anyhow::Result;
use tokio::{
    sync::mpsc,
    task::{JoinHandle, JoinSet},
};

use super::{
    Analysis, Analyzer, AnalyzerConfig, Dorks, FlowSource, RedisFlowSource, SessionWrites,
};
use crate::{
    metrics::AnalyzerMetrics,
    snare::{
        HANDOFF_CAPACITY, Session,
        dorks::{self, DORKS_KEY},
    },
    store::{Connection, Patience, RedisTarget, Store, StoreConfig},
};

/// Analyses running at once; beyond, ended sessions wait in the channel.
pub const IN_FLIGHT: usize = 256;

impl Analyzer {
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

/// The running analyzer.
pub struct Running {
    consumer: JoinHandle<u64>,
    /// A store the analyzer opened itself, closed when it finishes.
    own_store: Option<Store>,
}

impl Running {
    /// Waits until the channel of ended sessions has closed and every session is analysed and
    /// submitted. Returns the number of sessions analysed.
    pub async fn finish(self) -> u64 {
        let analysed = self.consumer.await.unwrap_or_else(|err| {
            tracing::error!(%err, "the session analyzer failed");
            0
        });
        if let Some(store) = self.own_store {
            store.close().await;
        }
        analysed
    }
}

/// The analyzer of the agent: takes the sessions `ended` by the SNARE service, joins them
/// with `local_flows` (this host's flow monitor) or else with the flows in Redis, stores them
/// through `store` and counts into `metrics`.
pub async fn start(
    config: AnalyzerConfig,
    ended: mpsc::Receiver<Session>,
    store: Option<Store>,
    local_flows: Option<Arc<dyn FlowSource>>,
    metrics: AnalyzerMetrics,
) -> Result<Running> {
    let writes = SessionWrites::new(config.session_retention);
    let (flows, dorks) = match &config.redis {
        Some(redis) => {
            let mut connection = Connection::open(redis, Patience::READ)?;
            let dorks = load_dorks(&mut connection).await;
            let flows = local_flows.or_else(|| redis_flows(connection, &config.sensor_id));
            (flows, dorks)
        }
        None => (local_flows, dorks::shipped().map(str::to_owned).collect()),
    };
    let analyzer = Analyzer::from_config(config, flows, dorks);
    Ok(Running {
        consumer: analyzer.spawn(ended, store, writes, metrics),
        own_store: None,
    })
}

fn redis_flows(connection: Connection, sensor_id: &str) -> Option<Arc<dyn FlowSource>> {
    Some(Arc::new(RedisFlowSource::new(
        connection,
        sensor_id.to_owned(),
    )))
}

/// The dorks SNARE may plant, for `hidden_links`: flowmon's shipped list and those in
/// Tanner's SET in Redis (the shipped list alone when Redis cannot be read).
pub async fn load_dorks(connection: &mut Connection) -> Dorks {
    let members = redis::cmd("SMEMBERS")
        .arg(DORKS_KEY)
        .query_async::<Vec<String>>(connection)
        .await;
    let shipped = dorks::shipped().map(str::to_owned);
    match members {
        Ok(dorks) => dorks.into_iter().chain(shipped).collect(),
        Err(err) => {
            tracing::info!(%err, "no dorks read from Redis: hidden_links counts the shipped ones");
            shipped.collect()
        }
    }
}

/// The analyzer of `flowmon replay`, with a store of its own (`store`) and the flows in Redis,
/// and no API: the sender takes the replayed sessions.
pub async fn for_replay(
    config: AnalyzerConfig,
    store: StoreConfig,
) -> Result<(mpsc::Sender<Session>, Running)> {
    let redis: &RedisTarget = &store.redis;
    let mut connection = Connection::open(redis, Patience::READ)?;
    let dorks = load_dorks(&mut connection).await;
    let flows = redis_flows(connection, &config.sensor_id);
    let writes = SessionWrites::new(config.session_retention);
    let analyzer = Analyzer::from_config(config, flows, dorks);
    let store = Store::start(store)?;
    let (sessions, ended) = mpsc::channel(HANDOFF_CAPACITY);
    let running = Running {
        // A replay serves no metrics: its report says what it did.
        consumer: analyzer.spawn(
            ended,
            Some(store.clone()),
            writes,
            AnalyzerMetrics::default(),
        ),
        own_store: Some(store),
    };
    Ok((sessions, running))
}
