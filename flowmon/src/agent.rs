//! The daemon: attaches the datapath, runs the flow monitor and the services, and shuts all of
//! it down cleanly on SIGINT or SIGTERM.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Settings, datapath::Datapath, flow::monitor::FlowMonitor, sinks::json_lines::JsonLines,
};

pub async fn run(settings: Settings) -> Result<()> {
    let monitor = if settings.iface.is_empty() {
        tracing::info!("no --iface given: not monitoring flows");
        None
    } else {
        Some(start_flow_monitor(&settings)?)
    };

    wait_for_shutdown_signal().await?;
    tracing::info!("shutting down");

    if let Some((stop, thread)) = monitor {
        drop(stop);
        tokio::task::spawn_blocking(move || thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the flow monitor panicked"))??;
    }
    Ok(())
}

type MonitorHandle = (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<Result<()>>,
);

fn start_flow_monitor(settings: &Settings) -> Result<MonitorHandle> {
    let timeouts = settings.timeouts()?;
    let poll_interval = settings.poll_interval()?;
    let flow_log = settings
        .flow_log
        .as_deref()
        .map(JsonLines::open)
        .transpose()?;
    let mut datapath = Datapath::load(settings.max_flows())?;
    let mut ifaces = HashMap::new();
    for iface in &settings.iface {
        let attachment = datapath.attach(iface, settings.xdp_mode())?;
        tracing::info!(
            iface = %attachment.iface,
            xdp_mode = attachment.xdp_mode,
            "attached XDP on ingress and TC on egress"
        );
        ifaces.insert(attachment.ifindex, attachment.iface);
    }
    let monitor = FlowMonitor::new(
        datapath,
        ifaces,
        timeouts,
        settings.sensor_id(),
        flow_log,
        poll_interval,
    );
    let (stop, stopped) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("flow-monitor".into())
        .spawn(move || monitor.run(stopped))
        .context("cannot start the flow monitor thread")?;
    Ok((stop, thread))
}

async fn wait_for_shutdown_signal() -> Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}
