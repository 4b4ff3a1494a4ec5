//! Delivery of [`Write`]s to Redis (a single node or a cluster) without losing any: a write is
//! submitted from any thread without blocking, and a writer thread applies it to Redis, or
//! keeps it in an on-disk spool while Redis is away and replays it, in order, once it is back.
//! The Redis layout and the spool's behaviour are documented in `docs/redis-schema.md`.

pub mod connection;
pub mod local_redis;
pub mod ops;
pub mod spool;
mod writer;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use anyhow::{Context as _, Result};
use tokio::sync::{mpsc, oneshot};

pub use connection::{
    Connection, DEFAULT_REDIS_ADDR, DEFAULT_REDIS_URL, Patience, RedisTarget, unreachable,
};
pub use ops::{Op, Write};
use spool::Spool;
use writer::{Msg, Writer};

/// The largest spool: past it, writes are dropped (and counted) while Redis is away.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub redis: RedisTarget,
    /// Where writes wait while Redis is away (`<state dir>/spool`).
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
}

/// The store's counters since it started (the spool's from the start of the first run that
/// left it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Writes Redis acknowledged; one applied again after an unknown outcome counts again.
    pub written: u64,
    /// Writes waiting in the spool.
    pub spool_items: u64,
    pub spool_bytes: u64,
    /// Batches that failed or timed out, each of which sent its writes to the spool.
    pub redis_errors: u64,
    /// Writes lost: refused by a full or failing spool, unreadable in it, or submitted after a
    /// close. Each loss is also logged.
    pub dropped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    spool_items: AtomicU64,
    spool_bytes: AtomicU64,
    redis_errors: AtomicU64,
    dropped: AtomicU64,
}

impl Counters {
    fn set_spool(&self, spool: &Spool) {
        self.spool_items.store(spool.len(), Relaxed);
        self.spool_bytes.store(spool.bytes(), Relaxed);
    }
}

/// The writer and a runtime of its own, for a thread of its own: the spool's file I/O blocks,
/// and the store must not depend on the caller's runtime (the flow monitor has none), nor drop
/// one inside it.
fn set_up_writer(
    config: &StoreConfig,
    spool: Spool,
    rx: mpsc::UnboundedReceiver<Msg>,
    counters: Arc<Counters>,
) -> Result<(tokio::runtime::Runtime, Writer)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot build the Redis writer's runtime")?;
    let writer = {
        let _entered = runtime.enter();
        Writer::new(&config.redis, spool, rx, counters)
            // Not the URL itself: it may hold a password.
            .context("invalid Redis URL")?
    };
    Ok((runtime, writer))
}

/// A handle on the store; clones share it.
#[derive(Clone, Debug)]
pub struct Store {
    tx: mpsc::UnboundedSender<Msg>,
    counters: Arc<Counters>,
}

impl Store {
    /// Opens the spool (replaying what a previous run left in it comes first) and starts the
    /// writer thread. Redis need not be up: the first connection is made at the first write.
    /// Blocks while it counts what a previous run spooled (a sequential read of the spool).
    pub fn start(config: StoreConfig) -> Result<Self> {
        // rediss:// needs rustls' process-wide crypto provider, which rustls only picks itself
        // while a single one is compiled in. An error means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes).with_context(|| {
            format!(
                "cannot open the Redis spool in {}",
                config.spool_dir.display()
            )
        })?;
        if !spool.is_empty() {
            tracing::info!(
                writes = spool.len(),
                bytes = spool.bytes(),
                "replaying the Redis writes a previous run spooled"
            );
        }
        let counters = Arc::new(Counters::default());
        counters.set_spool(&spool);
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready, set_up) = std::sync::mpsc::sync_channel(1);
        let writer_counters = Arc::clone(&counters);
        std::thread::Builder::new()
            .name("redis-writer".into())
            .spawn(move || {
                let set_up = set_up_writer(&config, spool, rx, writer_counters);
                let (runtime, writer) = match set_up {
                    Ok(set_up) => {
                        let _ = ready.send(Ok(()));
                        set_up
                    }
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                let closers = runtime.block_on(writer.run());
                // Answer the closes once the connections are gone too.
                drop(runtime);
                for closed in closers {
                    let _ = closed.send(());
                }
            })
            .context("cannot start the Redis writer thread")?;
        set_up
            .recv()
            .context("the Redis writer thread ended at its start")??;
        Ok(Self { tx, counters })
    }

    /// Queues `write` for Redis; never blocks.
    pub fn submit(&self, write: Write) {
        if let Err(mpsc::error::SendError(msg)) = self.tx.send(Msg::Write(write)) {
            self.counters.dropped.fetch_add(1, Relaxed);
            if let Msg::Write(write) = msg {
                tracing::error!(id = %write.id, "write submitted to a closed Redis store: dropped");
            }
        }
    }

    pub fn stats(&self) -> StoreStats {
        let counters = &self.counters;
        StoreStats {
            written: counters.written.load(Relaxed),
            spool_items: counters.spool_items.load(Relaxed),
            spool_bytes: counters.spool_bytes.load(Relaxed),
            redis_errors: counters.redis_errors.load(Relaxed),
            dropped: counters.dropped.load(Relaxed),
        }
    }

    /// Stops the store once everything submitted before (by any clone) is in Redis or, past a
    /// few seconds or at the first failure, in the spool, flushed to the disk. Later submits
    /// are dropped.
    pub async fn close(self) {
        let (closed, done) = oneshot::channel();
        if self.tx.send(Msg::Close(closed)).is_ok() && done.await.is_err() {
            tracing::error!("the Redis writer stopped before the store was closed");
        }
    }
}
