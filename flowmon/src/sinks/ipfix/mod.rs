//! IPFIX export (RFC 7011) of the flow records, to every `--ipfix` collector over UDP or TCP:
//! biflow records (RFC 5103) in one template per IP version, flowmon's own fields as
//! enterprise elements. The wire format is documented in `docs/ipfix.md`.
//!
//! The flow monitor hands each poll's records over and goes on: a thread of this sink encodes
//! them once (the poll never waits for it, and never for a collector) and gives the encoded
//! records to each collector's queue; a thread per collector frames and sends them.

pub mod config;
mod encode;
mod message;
mod queue;
mod tcp;
pub mod template;
mod udp;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        mpsc::{Receiver, SyncSender, TrySendError},
    },
    thread::JoinHandle,
};

use anyhow::{Context as _, Result};

pub use config::{CollectorUrl, IpfixConfig, IpfixConfigError, Transport};
pub use encode::UnreadableRecord;

use self::{
    encode::Encoder, message::Chunk, queue::ChunkQueue, tcp::TcpExporter, template::Family,
    udp::UdpExporter,
};

#[cfg(test)]
mod tests;
use crate::{
    flow::record::FlowRecord,
    metrics::{CollectorMetrics, IpfixMetrics},
};

/// Polls' worth of records that may wait for the encoder; more are dropped, and counted.
const HANDOFF_BATCHES: usize = 4;

/// The sink: hands records to the encoder thread.
pub struct IpfixSink {
    records: Option<SyncSender<Vec<FlowRecord>>>,
    encoder: Option<JoinHandle<()>>,
    collectors: Vec<CollectorMetrics>,
}

/// A collector's queue, its exporter thread and its series.
struct Collector {
    queue: Arc<ChunkQueue>,
    thread: JoinHandle<()>,
    metrics: CollectorMetrics,
}

impl IpfixSink {
    /// Starts an exporter thread per collector of `config` and the encoder thread.
    /// `interfaces` gives each monitored interface's index, for ingressInterface.
    pub fn start(
        config: &IpfixConfig,
        interfaces: HashMap<String, u32>,
        metrics: &IpfixMetrics,
    ) -> Result<Self> {
        config.check().context("IPFIX settings")?;
        let templates = Arc::new(config.templates());
        let mut collectors = Vec::new();
        for url in &config.collectors {
            let queue = Arc::new(ChunkQueue::new(config.queue_bytes));
            let series = metrics.collector(&url.to_string());
            let thread = match url.transport {
                Transport::Udp => {
                    let exporter = UdpExporter::new(
                        url,
                        templates.clone(),
                        config.observation_domain,
                        config.udp_message_size,
                        config.template_refresh,
                        queue.clone(),
                        series.clone(),
                    )?;
                    spawn(url, move || exporter.run())?
                }
                Transport::Tcp => {
                    let exporter = TcpExporter::new(
                        url,
                        templates.clone(),
                        config.observation_domain,
                        queue.clone(),
                        series.clone(),
                        config.shutdown_grace,
                    );
                    spawn(url, move || exporter.run())?
                }
            };
            collectors.push(Collector {
                queue,
                thread,
                metrics: series,
            });
        }
        let series = collectors.iter().map(|c| c.metrics.clone()).collect();
        let chunk_records = [Family::V4, Family::V6]
            .map(|family| udp::records_per_send(templates.get(family), config.udp_message_size));
        let encoder = Encoder::new((*templates).clone(), &config.sensor_id, interfaces);
        let (records, batches) = std::sync::mpsc::sync_channel(HANDOFF_BATCHES);
        let encoder = std::thread::Builder::new()
            .name("ipfix-encoder".into())
            .spawn(move || encode_batches(&batches, &encoder, chunk_records, collectors))
            .context("cannot start the IPFIX encoder thread")?;
        Ok(Self {
            records: Some(records),
            encoder: Some(encoder),
            collectors: series,
        })
    }

    /// Hands `records` to the encoder without waiting; when it is too far behind they are
    /// dropped, and counted for every collector.
    pub fn write(&self, records: Vec<FlowRecord>) {
        let Some(sender) = &self.records else {
            return;
        };
        match sender.try_send(records) {
            Ok(()) => {}
            Err(TrySendError::Full(records) | TrySendError::Disconnected(records)) => {
                tracing::warn!(
                    records = records.len(),
                    "IPFIX encoder behind by {HANDOFF_BATCHES} polls: records dropped"
                );
                for collector in &self.collectors {
                    collector.records_dropped.inc_by(records.len() as u64);
                }
            }
        }
    }
}

impl Drop for IpfixSink {
    /// Sends what is queued: the encoder finishes, then each exporter (TCP collectors get the
    /// shutdown grace to take it).
    fn drop(&mut self) {
        drop(self.records.take());
        if let Some(encoder) = self.encoder.take()
            && encoder.join().is_err()
        {
            tracing::error!("the IPFIX encoder panicked");
        }
    }
}

fn spawn(url: &CollectorUrl, run: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ipfix-export".into())
        .spawn(run)
        .with_context(|| format!("cannot start the exporter thread of {url}"))
}

/// The encoder thread: encodes each batch once into chunks of one template's records, gives
/// every chunk to every collector, and at the end closes their queues and waits for them.
fn encode_batches(
    batches: &Receiver<Vec<FlowRecord>>,
    encoder: &Encoder,
    chunk_records: [usize; 2],
    collectors: Vec<Collector>,
) {
    let templates = encoder.templates();
    let capacity =
        |family: Family| chunk_records[family as usize] * templates.get(family).record_len;
    let mut pending = [Family::V4, Family::V6].map(|family| Vec::with_capacity(capacity(family)));
    let ship = |family: Family, records: &mut Vec<u8>| {
        if records.is_empty() {
            return;
        }
        let template = templates.get(family);
        let chunk = Arc::new(Chunk {
            template_id: template.id,
            record_len: template.record_len,
            records: std::mem::replace(records, Vec::with_capacity(capacity(family))),
        });
        for collector in &collectors {
            if !collector.queue.push(chunk.clone()) {
                collector
                    .metrics
                    .records_dropped
                    .inc_by(chunk.count() as u64);
            }
        }
    };
    for batch in batches {
        for record in &batch {
            let [v4, v6] = &mut pending;
            match encoder.encode(record, v4, v6) {
                Ok(family) => {
                    let records = &mut pending[family as usize];
                    if records.len() >= capacity(family) {
                        ship(family, records);
                    }
                }
                Err(err) => {
                    tracing::error!("IPFIX: {err}; the record is dropped");
                    for collector in &collectors {
                        collector.metrics.records_dropped.inc();
                    }
                }
            }
        }
        for family in [Family::V4, Family::V6] {
            ship(family, &mut pending[family as usize]);
        }
    }
    for collector in &collectors {
        collector.queue.close();
    }
    for collector in collectors {
        if collector.thread.join().is_err() {
            tracing::error!("an IPFIX exporter panicked");
        }
    }
}
