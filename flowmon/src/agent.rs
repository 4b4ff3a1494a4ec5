//! The daemon: attaches the datapath, runs the flow monitor and the services, and stops all of
//! it cleanly on SIGINT or SIGTERM.

use std::{collections::HashMap, sync::Arc};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    analyzer::{self, FlowSource},
    api::ApiServer,
    config::{Config, FlowsConfig},
    datapath::Datapath,
    flow::{monitor::FlowMonitor, peers::PeerFlows},
    lifecycle::Part,
    metrics::{self, Metrics},
    sinks::{FlowSinks, json_lines::JsonLines, redis::RedisFlowSink},
    snare,
    store::Store,
};

pub async fn run(config: Config) -> Result<()> {
    // First of all, so that a signal during start-up is not fatal but a clean shutdown.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    raise_open_file_limit();
    let metrics = Metrics::new();
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
    let snare = Part::hold("SNARE service", snare, |snare| async {
        snare.shutdown().await;
    });
    let monitor = match (config.flows, peers) {
        (Some(flows), Some(peers)) => Some(start_flow_monitor(
            flows,
            store.clone(),
            peers,
            metrics.clone(),
        )?),
        _ => {
            tracing::info!("no --iface given: not monitoring flows");
            None
        }
    };
    // Last: a metrics endpoint that answers means everything is attached and serving.
    let metrics = metrics::serve(config.metrics_listen, metrics.clone()).await?;
    let store = store.map(|store| Part::hold("Redis store", store, Store::close));
    tracing::info!("ready");

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
    // Producers first: every live SNARE session is ended and handed to the analyzer, which
    // hands its analysis to the store; the flow monitor writes a final record of every flow;
    // then the store writes everything to Redis or its spool.
    let parts = [
        Some(snare),
        Some(analyzer),
        monitor,
        store,
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
) -> Result<Part> {
    let log = config
        .sinks
        .flow_log
        .as_deref()
        .map(JsonLines::open)
        .transpose()?;
    let redis = store
        .zip(config.sinks.redis)
        .map(|(store, writes)| RedisFlowSink::new(store, writes));
    let sinks = FlowSinks::new(log, redis, Some(peers), metrics.clone());
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
    let monitor = FlowMonitor::new(datapath, ifaces, config, sinks, metrics)
        .context("cannot start the flow monitor")?;
    Ok(Part::spawn_blocking("flow monitor", move |token| {
        if let Err(err) = monitor.run(token) {
            tracing::error!("the flow monitor failed: {err:#}");
        }
    }))
}
