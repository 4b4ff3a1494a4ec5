//! The daemon: attaches the datapath, runs the flow monitor and the services, and stops all of
//! it cleanly on SIGINT or SIGTERM.

use std::{collections::HashMap, path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    analyzer::{self, FlowSource},
    api::ApiServer,
    config::{Config, FlowsConfig},
    console::{
        About, Console, Sources,
        sources::{LiveFlows, RedisStorage, Storage},
    },
    datapath::Datapath,
    flow::{monitor::FlowMonitor, peers::PeerFlows, query::LiveFlowTable},
    lifecycle::Part,
    metrics::{self, Metrics},
    sinks::{FlowSinks, ipfix::IpfixSink, json_lines::JsonLines, redis::RedisFlowSink},
    snare,
    store::{
        Connection, Patience, RedisTarget, Store,
        local_redis::{self, LocalRedis, LocalRedisConfig},
    },
};

pub async fn run(config: Config) -> Result<()> {
    // First of all, so that a signal during start-up is not fatal but a clean shutdown.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    raise_open_file_limit();
    let metrics = Metrics::new();
    // Before the store, so that its first writes find the server up.
    let local_redis = match config.local_redis {
        Some(local) => start_local_redis(local).await,
        None => None,
    };
    let redis_target = config.store.as_ref().map(|store| store.redis.clone());
    let spool_dir = config.store.as_ref().map(|store| store.spool_dir.clone());
    let flow_log = config
        .flows
        .as_ref()
        .and_then(|flows| flows.monitor.sinks.flow_log.clone());
    let store = config.store.map(Store::start).transpose()?;
    if let Some(store) = &store {
        metrics.watch_store(store.clone());
    }
    // The flows of this host's peers, for the session analyzer's join (without a flow monitor
    // here, the analyzer reads those the monitors of other sensors write to Redis).
    let peers = config.flows.as_ref().map(|_| {
        Arc::new(PeerFlows::new(
            config.peer_flows_retention.as_secs_f64(),
            config.max_peer_flows,
        ))
    });
    let (ended_sessions, ended_rx) = tokio::sync::mpsc::channel(snare::HANDOFF_CAPACITY);
    let local_flows = peers.clone().map(|peers| peers as Arc<dyn FlowSource>);
    let analyzer = analyzer::start(
        config.analyzer,
        ended_rx,
        store.clone(),
        local_flows,
        metrics.analyzer.clone(),
    )
    .await?;
    let analyzer = Part::hold("session analyzer", analyzer, |analyzer| async {
        analyzer.finish().await;
    });
    let api = match &config.api {
        Some(api) => Some(ApiServer::start(api).await?),
        None => {
            tracing::info!("--no-redis: no read API");
            None
        }
    };
    let api = api.map(|api| Part::hold("read API", api, ApiServer::shutdown));
    let snare = snare::Service::start(
        &config.snare,
        ended_sessions,
        store.clone(),
        metrics.snare.clone(),
    )
    .await?;
    let live_sessions = snare.live_sessions();
    let snare = Part::hold("SNARE service", snare, |snare| async {
        snare.shutdown().await;
    });
    let ifaces = config
        .flows
        .as_ref()
        .map(|flows| flows.datapath.ifaces.clone())
        .unwrap_or_default();
    let (monitor, live_flows) = match (config.flows, peers.clone()) {
        (Some(flows), Some(peers)) => {
            let (monitor, live_flows) =
                start_flow_monitor(flows, store.clone(), peers, metrics.clone())?;
            (Some(monitor), Some(live_flows))
        }
        _ => {
            tracing::info!("no --iface given: not monitoring flows");
            (None, None)
        }
    };
    let redis_state = match &redis_target {
        Some(target) => Some(redis_answers(target).await),
        None => None,
    };
    let destinations = Destinations {
        redis: redis_target.as_ref(),
        answers: redis_state,
        local: local_redis.as_ref(),
        spool_dir: spool_dir.as_deref(),
        flow_log: flow_log.as_deref(),
        monitoring: !ifaces.is_empty(),
    }
    .to_string();
    let console = match config.console {
        Some(console_config) => {
            let storage = console_config
                .redis
                .as_ref()
                .map(|target| -> Result<Arc<dyn Storage>> {
                    let connection = Connection::open(target, Patience::READ)?;
                    Ok(Arc::new(RedisStorage::new(connection)))
                })
                .transpose()?;
            let sources = Sources {
                metrics: metrics.clone(),
                store: store.clone(),
                flows: live_flows.map(|table| Arc::new(table) as Arc<dyn LiveFlows>),
                sessions: Arc::new(live_sessions),
                storage,
                records: peers.map(|peers| peers as Arc<dyn FlowSource>),
            };
            let about = About {
                sensor_id: config.sensor_id.clone(),
                ifaces,
                records: destinations.clone(),
            };
            Some(Console::start(console_config, sources, about).await?)
        }
        None => None,
    };
    let console_line = match &console {
        Some(console) => format!("console http://{}/", console.local_addr()),
        None => "no console (--no-console)".to_owned(),
    };
    let console = console.map(|console| Part::hold("console", console, Console::shutdown));
    // Last: a metrics endpoint that answers means everything is attached and serving.
    let metrics = metrics::serve(config.metrics_listen, metrics.clone()).await?;
    let store = store.map(|store| Part::hold("Redis store", store, Store::close));
    let local_redis =
        local_redis.map(|local| Part::hold("local redis-server", local, LocalRedis::stop));
    tracing::info!("ready: {destinations}; {console_line}");

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    // Producers first: every live SNARE session is ended and handed to the analyzer, which
    // hands its analysis to the store; the flow monitor writes a final record of every flow;
    // then the store writes everything to Redis or its spool.
    let parts = [
        console,
        Some(snare),
        Some(analyzer),
        monitor,
        store,
        local_redis,
        api,
        Some(metrics),
    ];
    for part in parts.into_iter().flatten() {
        part.stop().await;
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard one (systemd's default soft limit is 1024,
/// as many as `--snare-max-connections` allows by default, before Redis and the maps).
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the rlimit we own.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if !raised {
        tracing::warn!(
            "cannot raise the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

fn start_flow_monitor(
    FlowsConfig {
        datapath: datapath_config,
        monitor: config,
    }: FlowsConfig,
    store: Option<Store>,
    peers: Arc<PeerFlows>,
    metrics: Arc<Metrics>,
) -> Result<(Part, LiveFlowTable)> {
    let log = config
        .sinks
        .flow_log
        .as_deref()
        .map(JsonLines::open)
        .transpose()?;
    let redis = store
        .zip(config.sinks.redis)
        .map(|(store, writes)| RedisFlowSink::new(store, writes));
    let mut sinks = FlowSinks::new(log, redis, Some(peers), metrics.clone());
    if let Some(ipfix) = &config.sinks.ipfix {
        let interfaces = datapath_config
            .ifaces
            .iter()
            .map(|iface| Ok((iface.clone(), crate::datapath::ifindex(iface)?)))
            .collect::<Result<_>>()?;
        sinks = sinks.with_ipfix(IpfixSink::start(ipfix, interfaces, &metrics.ipfix)?);
    }
    let mut datapath = Datapath::load(datapath_config.max_flows, Some(&datapath_config.pin_dir))?;
    let mut ifaces = HashMap::new();
    for iface in &datapath_config.ifaces {
        let attachment = match datapath.attach(
            iface,
            datapath_config.ingress_hook,
            datapath_config.xdp_mode,
        ) {
            Ok(attachment) => attachment,
            Err(err) => {
                datapath.abandon();
                return Err(err);
            }
        };
        tracing::info!(
            iface = %attachment.iface,
            ingress = attachment.ingress.as_str(),
            why = %attachment.reason,
            "{} on ingress, TC on egress",
            attachment.ingress.as_str().to_uppercase()
        );
        metrics
            .flows
            .hook(&attachment.iface, attachment.ingress.as_str());
        ifaces.insert(attachment.ifindex, attachment.iface.clone());
    }
    let mut monitor = FlowMonitor::new(datapath, ifaces, config, sinks, metrics)
        .context("cannot start the flow monitor")?;
    let live_flows = monitor.live_flows()?;
    let part = Part::spawn_blocking("flow monitor", move |token| {
        if let Err(err) = monitor.run(token) {
            tracing::error!("the flow monitor failed: {err:#}");
        }
    });
    Ok((part, live_flows))
}

/// A redis-server of flowmon's own, unless something answers at its address already (or it
/// cannot start: then records wait in the spool).
async fn start_local_redis(config: LocalRedisConfig) -> Option<LocalRedis> {
    if local_redis::answers(config.addr).await {
        return None;
    }
    match LocalRedis::start(config).await {
        Ok(local) => {
            tracing::info!(dir = %local.dir().display(), "started a redis-server of flowmon's own");
            Some(local)
        }
        Err(err) => {
            tracing::warn!("no Redis answers and flowmon cannot start one: {err}");
            None
        }
    }
}

/// Whether Redis answers a PING within a few seconds.
async fn redis_answers(target: &RedisTarget) -> Result<(), String> {
    let ping = async {
        let mut connection = Connection::open(target, Patience::READ)?;
        redis::cmd("PING").query_async::<()>(&mut connection).await
    };
    match tokio::time::timeout(Patience::READ.response, ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {:?}", Patience::READ.response)),
    }
}

/// Where records and sessions go, in one line for the log and the console.
struct Destinations<'a> {
    redis: Option<&'a RedisTarget>,
    /// Whether Redis answered at start.
    answers: Option<Result<(), String>>,
    local: Option<&'a LocalRedis>,
    spool_dir: Option<&'a Path>,
    flow_log: Option<&'a Path>,
    monitoring: bool,
}

impl std::fmt::Display for Destinations<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.monitoring {
            "flow records and sessions"
        } else {
            "sessions (no --iface: no flows)"
        };
        match (self.redis, &self.answers, self.spool_dir) {
            (Some(redis), Some(Ok(())), _) => {
                write!(f, "{what} to Redis {}", redis.redacted())?;
                if let Some(local) = self.local {
                    write!(
                        f,
                        " (flowmon's own redis-server, data in {})",
                        local.dir().display()
                    )?;
                }
            }
            (Some(redis), Some(Err(err)), Some(spool)) => write!(
                f,
                "{what} spooled to {} until Redis {} answers ({err})",
                spool.display(),
                redis.redacted()
            )?,
            _ => write!(f, "{what} to no Redis (--no-redis)")?,
        }
        match self.flow_log {
            Some(log) => write!(f, ", flow log {}", log.display()),
            None if self.monitoring => write!(f, ", no flow log"),
            None => Ok(()),
        }
    }
}
