//! IPFIX export (RFC 7011) of the flow records, to every `--ipfix` collector over UDP or TCP:
//! biflow records (RFC 5103) in one template per IP version, flowmon's own fields as
//! enterprise elements. The wire format is documented in `docs/ipfix.md`.
//!
//! The flow monitor's thread encodes each poll's records once, 0.1 µs each (BENCHMARKS.md), and
//! queues them for every collector without ever waiting: a thread per collector frames and
//! sends them, and a collector that is slow or away only fills its own bounded queue. (Handing
//! the records themselves to another thread cost more: records are freed best on the thread
//! that made them.)

pub mod config;
mod encode;
mod message;
mod queue;
mod tcp;
mod template;
mod udp;

use std::{
    collections::HashMap,
    io,
    os::fd::AsRawFd,
    sync::{Arc, atomic::AtomicU64},
    thread::JoinHandle,
};

use anyhow::{Context as _, Result};
use prometheus_client::metrics::counter::Counter;

pub use config::{CollectorUrl, IpfixConfig, IpfixConfigError, Transport};

use self::{
    encode::Encoder,
    message::{BufferPool, Chunk},
    queue::ChunkQueue,
    tcp::TcpExporter,
    template::Family,
    udp::UdpExporter,
};
use crate::{
    flow::record::FlowRecord,
    metrics::{CollectorMetrics, IpfixMetrics},
};

#[cfg(test)]
mod tests;

/// Chunk buffers kept for reuse: 16 MiB.
const POOLED_BUFFERS: usize = 256;

/// The sink: encodes records into chunks of one template's records and queues every chunk
/// for every collector.
pub struct IpfixSink {
    encoder: Encoder,
    /// Bytes of a chunk: one UDP send's worth of records, for IPv4 and for IPv6.
    chunk_bytes: [usize; 2],
    /// Encoded records not yet queued, by family.
    pending: [Vec<u8>; 2],
    pool: Arc<BufferPool>,
    collectors: Vec<Collector>,
    encode_seconds: Counter<f64, AtomicU64>,
}

/// A collector's queue, its exporter thread and its series.
struct Collector {
    queue: Arc<ChunkQueue>,
    thread: Option<JoinHandle<()>>,
    metrics: CollectorMetrics,
}

impl IpfixSink {
    /// Starts an exporter thread per collector of `config`. `interfaces` gives each monitored
    /// interface's index, for ingressInterface.
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
                thread: Some(thread),
                metrics: series,
            });
        }
        // Chunks of one send's worth at the largest messages a collector may take: the framer
        // of each splits them into messages of its own size.
        let send_size = config.udp_message_size.unwrap_or(udp::MAX_SEND_BYTES);
        let chunk_bytes = [Family::V4, Family::V6].map(|family| {
            let template = templates.get(family);
            udp::records_per_send(template, send_size) * template.record_len
        });
        let encoder = Encoder::new(templates, &config.sensor_id, interfaces);
        let pending = chunk_bytes.map(Vec::with_capacity);
        Ok(Self {
            encoder,
            chunk_bytes,
            pending,
            pool: Arc::new(BufferPool::new(POOLED_BUFFERS)),
            collectors,
            encode_seconds: metrics.encode_seconds.clone(),
        })
    }

    /// Encodes `records` and queues them for every collector; never waits. A record that
    /// does not fit a collector's queue is dropped for it, and counted.
    pub fn write(&mut self, records: &[FlowRecord]) {
        let started = thread_cpu_seconds();
        for record in records {
            let [v4, v6] = &mut self.pending;
            let family = self.encoder.encode(record, v4, v6);
            if self.pending[family as usize].len() >= self.chunk_bytes[family as usize] {
                self.ship(family);
            }
        }
        for family in [Family::V4, Family::V6] {
            self.ship(family);
        }
        self.encode_seconds.inc_by(thread_cpu_seconds() - started);
    }

    /// Queues the pending records of `family` as one chunk for every collector.
    fn ship(&mut self, family: Family) {
        if self.pending[family as usize].is_empty() {
            return;
        }
        let template = self.encoder.templates().get(family);
        let capacity = self.chunk_bytes[family as usize];
        let records =
            std::mem::replace(&mut self.pending[family as usize], self.pool.take(capacity));
        let chunk = Arc::new(Chunk {
            template_id: template.id,
            record_len: template.record_len,
            records,
            pool: Some(self.pool.clone()),
        });
        for collector in &self.collectors {
            if !collector.queue.push(chunk.clone()) {
                collector
                    .metrics
                    .records_dropped
                    .inc_by(chunk.count() as u64);
            }
        }
    }
}

/// Sets a socket option of `socket` to `value`.
fn set_option<T>(socket: &impl AsRawFd, level: i32, option: i32, value: &T) -> io::Result<()> {
    // SAFETY: setsockopt reads size_of::<T>() bytes from the pointer to `value` we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            option,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU time this thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

impl Drop for IpfixSink {
    /// Sends what is queued: each exporter finishes (TCP collectors get the shutdown grace to
    /// take it).
    fn drop(&mut self) {
        for collector in &self.collectors {
            collector.queue.close();
        }
        for collector in &mut self.collectors {
            if let Some(thread) = collector.thread.take()
                && thread.join().is_err()
            {
                tracing::error!("an IPFIX exporter panicked");
            }
        }
    }
}

fn spawn(url: &CollectorUrl, run: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ipfix-export".into())
        .spawn(run)
        .with_context(|| format!("cannot start the exporter thread of {url}"))
}
