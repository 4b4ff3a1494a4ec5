//! The daemon: attaches the datapath, runs the flow monitor and the services, and shuts all of
//! it down cleanly on SIGINT or SIGTERM.

use std::{collections::HashMap, sync::Arc};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Settings,
    datapath::Datapath,
    flow::monitor::{FlowMonitor, MonitorConfig},
    metrics::{self, Metrics},
    sinks::{FlowSinks, json_lines::JsonLines, redis::RedisFlowSink},
    snare,
    store::{Store, StoreConfig},
};

pub async fn run(settings: Settings) -> Result<()> {
    // First of all, so that a signal during start-up is not fatal but a clean shutdown.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let metrics = Metrics::new();
    let store = if settings.no_redis {
        None
    } else {
        Some(Store::start(StoreConfig::from_settings(&settings))?)
    };
    let (ended_sessions, ended_rx) = tokio::sync::mpsc::channel(snare::HANDOFF_CAPACITY);
    let session_consumer = tokio::spawn(snare::log_ended_sessions(ended_rx));
    let snare = snare::Service::start(&settings, ended_sessions).await?;
    let monitor = if settings.iface.is_empty() {
        tracing::info!("no --iface given: not monitoring flows");
        None
    } else {
        Some(start_flow_monitor(
            &settings,
            store.clone(),
            metrics.clone(),
        )?)
    };
    // Last: a metrics endpoint that answers means everything is attached and serving.
    let metrics_server = metrics::serve(settings.metrics_listen()?, metrics.clone()).await?;
    tracing::info!("ready");

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");

    // Every live SNARE session is ended and handed on.
    snare.shutdown().await;
    session_consumer.await?;

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

type MonitorHandle = (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Result<()>>,
);

fn start_flow_monitor(
    settings: &Settings,
    store: Option<Store>,
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
    let sinks = FlowSinks::new(log, redis, None, metrics.clone());
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
