//! The daemon: attaches the datapath, runs the flow monitor and the services, and shuts all of
//! it down cleanly on SIGINT or SIGTERM.

use std::{collections::HashMap, sync::Arc};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    analyzer::{self, FlowSource, ReadConnection, RedisFlowSource},
    config::Settings,
    datapath::Datapath,
    flow::{
        monitor::{FlowMonitor, MonitorConfig},
        peers::PeerFlows,
    },
    metrics::{self, Metrics},
    sinks::{FlowSinks, json_lines::JsonLines, redis::RedisFlowSink},
    snare,
    store::{Store, StoreConfig},
};

pub async fn run(settings: Settings) -> Result<()> {
    // First of all, so that a signal during start-up is not fatal but a clean shutdown.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    raise_open_file_limit();
    let metrics = Metrics::new();
    let store = if settings.no_redis {
        None
    } else {
        Some(Store::start(StoreConfig::from_settings(&settings))?)
    };
    // The flows of this host's peers, for the session analyzer's join; from Redis when this
    // host monitors no interface (the flow monitors of other sensors write them there).
    let peers = if settings.iface.is_empty() {
        None
    } else {
        Some(Arc::new(peer_flows(&settings)?))
    };
    let flows: Option<Arc<dyn FlowSource>> = match (&peers, &store) {
        (Some(peers), _) => Some(peers.clone()),
        (None, Some(_)) => Some(Arc::new(RedisFlowSource::new(
            ReadConnection::from_settings(&settings)?,
            settings.sensor_id(),
        ))),
        (None, None) => None,
    };
    let dorks = match store {
        Some(_) => analyzer::load_dorks(&mut ReadConnection::from_settings(&settings)?).await,
        None => analyzer::Dorks::new(),
    };
    let (ended_sessions, ended_rx) = tokio::sync::mpsc::channel(snare::HANDOFF_CAPACITY);
    if let Some(store) = &store {
        metrics.watch_store(store.clone());
    }
    let analyzer = analyzer::start(
        &settings,
        ended_rx,
        store.clone(),
        flows,
        dorks,
        metrics.analyzer.clone(),
    )
    .await?;
    let snare = snare::Service::start(&settings, ended_sessions, metrics.snare.clone()).await?;
    let monitor = match peers {
        None => {
            tracing::info!("no --iface given: not monitoring flows");
            None
        }
        Some(peers) => Some(start_flow_monitor(
            &settings,
            store.clone(),
            peers,
            metrics.clone(),
        )?),
    };
    // Last: a metrics endpoint that answers means everything is attached and serving.
    let metrics_server = metrics::serve(settings.metrics_listen()?, metrics.clone()).await?;
    tracing::info!("ready");

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");

    // Every live SNARE session is ended, analysed and handed to the store.
    snare.shutdown().await;
    analyzer.finish().await;

    if let Some((stop, thread)) = monitor {
        drop(stop);
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the flow monitor panicked"))??;
    }
    // Everything handed to the store reaches Redis or its spool before flowmon exits.
    if let Some(store) = store {
        store.close().await;
    }
    metrics_server.abort();
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

type MonitorHandle = (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Result<()>>,
);

/// Kept long enough for a session's join: its timeout, plus an interim interval for flows
/// that had no record yet when the session began, plus a minute of slack.
fn peer_flows(settings: &Settings) -> Result<PeerFlows> {
    let retention = settings.session_timeout()?.as_secs_f64()
        + settings.timeouts()?.interim as f64 / 1e9
        + 60.0;
    Ok(PeerFlows::new(retention, MAX_PEER_FLOWS))
}

/// Flows held for the join at most (a record's worth of memory each).
const MAX_PEER_FLOWS: usize = 1_000_000;

fn start_flow_monitor(
    settings: &Settings,
    store: Option<Store>,
    peers: Arc<PeerFlows>,
    metrics: Arc<Metrics>,
) -> Result<MonitorHandle> {
    let config = MonitorConfig {
        timeouts: settings.timeouts()?,
        sensor_id: settings.sensor_id(),
        state_dir: settings.state_dir(),
        poll_interval: settings.poll_interval()?,
        keep_attached: settings.keep_attached,
    };
    let log = settings
        .flow_log
        .as_deref()
        .map(JsonLines::open)
        .transpose()?;
    let redis = store
        .map(|store| RedisFlowSink::new(store, settings))
        .transpose()?;
    let sinks = FlowSinks::new(log, redis, Some(peers), metrics.clone());
    // Before anything is loaded or pinned: a typo in an interface name leaves nothing behind.
    for iface in &settings.iface {
        crate::datapath::ifindex(iface)?;
    }
    let mut datapath = Datapath::load(settings.max_flows(), Some(&settings.pin_dir()))?;
    let mut ifaces = HashMap::new();
    for iface in &settings.iface {
        let attachment = match datapath.attach(iface, settings.xdp_mode()) {
            Ok(attachment) => attachment,
            Err(err) => {
                datapath.abandon();
                return Err(err);
            }
        };
        tracing::info!(
            iface = %attachment.iface,
            xdp_mode = attachment.xdp_mode,
            "XDP on ingress, TC on egress"
        );
        ifaces.insert(attachment.ifindex, attachment.iface.clone());
    }
    let monitor = FlowMonitor::new(datapath, ifaces, config, sinks, metrics)?;
    let (stop, stopped) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("flow-monitor".into())
        .spawn(move || monitor.run(stopped))
        .context("cannot start the flow monitor thread")?;
    Ok((stop, thread))
}
