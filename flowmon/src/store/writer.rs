//! The writer, on a thread and runtime of its own: it owns the Redis connection and the spool,
//! and applies every write to Redis in submission order.
//!
//! While Redis keeps up, writes wait in memory and go out in pipelined batches. A batch that
//! fails or times out, or a backlog beyond [`MAX_PENDING`] behind a batch in flight (Redis too
//! slow), switches to the spool: that batch, the writes behind it and every later write go to
//! the spool, which is replayed from its head, with a growing pause after each failure, until it
//! is empty; then writes go directly again. A write goes to memory only while the spool is
//! empty, so nothing overtakes anything. A batch whose outcome is unknown is applied again,
//! which is safe because writes are idempotent.

use std::{
    collections::{HashMap, VecDeque},
    fmt::Display,
    io,
    sync::{Arc, atomic::Ordering::Relaxed},
};

use anyhow::anyhow;
use redis::{ErrorKind, Pipeline, RedisResult, ServerErrorKind, aio::ConnectionLike};
use tokio::{
    sync::{mpsc::UnboundedReceiver, oneshot},
    task::JoinSet,
    time::{Duration, Instant},
};

use super::{
    Counters,
    connection::{Connection, Link, Patience, RedisTarget},
    ops::{ScriptCall, Write},
    spool::{self, Pushed, Spool},
};

/// Writes per pipelined batch.
const BATCH: usize = 500;
/// Writes that may wait in memory behind a batch in flight before Redis counts as too slow.
const MAX_PENDING: usize = 10_000;
/// Longest a batch may take before it counts as failed.
const BATCH_TIMEOUT: Duration = Duration::from_secs(10);
const PATIENCE: Patience = Patience {
    connect: Duration::from_secs(2),
    response: BATCH_TIMEOUT,
    // The writer applies a failed batch again itself, from the spool.
    resend: false,
};
/// Pause after a first failure, doubled after each further one up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// How long a close keeps writing to Redis before it leaves the rest in the spool.
const CLOSE_BUDGET: Duration = Duration::from_secs(5);

pub(super) enum Msg {
    Write(Write),
    Close(oneshot::Sender<()>),
}

/// The writer's side of the connection: how it applies a batch.
struct Backend(Connection);

impl Backend {
    async fn apply(&mut self, writes: &[Write]) -> RedisResult<()> {
        match self.apply_with(writes, ScriptCall::Sha).await {
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                tracing::debug!("Redis lacks the XADD-once script: sending its source");
                self.apply_with(writes, ScriptCall::Source).await
            }
            result => result,
        }
    }

    async fn apply_with(&mut self, writes: &[Write], script: ScriptCall) -> RedisResult<()> {
        let ops = writes.iter().flat_map(|write| &write.ops);
        match &mut self.0.link {
            Link::Node(connection) => {
                let mut pipe = redis::pipe();
                for op in ops {
                    pipe.add_command(op.command(script));
                }
                run(&pipe, connection).await
            }
            Link::Cluster(connection) => {
                // A cluster pipeline stays within one slot: one per slot, each in write order
                // (which is what order means: per key), all sent at once.
                let mut pipes: HashMap<_, Pipeline> = HashMap::new();
                for op in ops {
                    pipes
                        .entry(op.slot())
                        .or_insert_with(redis::pipe)
                        .add_command(op.command(script));
                }
                let mut sent = JoinSet::new();
                for pipe in pipes.into_values() {
                    let mut connection = connection.clone();
                    sent.spawn(async move { run(&pipe, &mut connection).await });
                }
                let mut outcome = Ok(());
                while let Some(joined) = sent.join_next().await {
                    outcome =
                        outcome.and(joined.unwrap_or_else(|err| Err(io::Error::other(err).into())));
                }
                outcome
            }
        }
    }
}

async fn run(pipe: &Pipeline, connection: &mut impl ConnectionLike) -> RedisResult<()> {
    if pipe.is_empty() {
        return Ok(());
    }
    pipe.query_async(connection).await
}

/// Where a batch comes from, which decides what a failure does with it.
enum Batch {
    Memory(Vec<Write>),
    Spool(spool::Batch),
}

impl Batch {
    fn writes(&self) -> &[Write] {
        match self {
            Self::Memory(writes) => writes,
            Self::Spool(batch) => &batch.writes,
        }
    }
}

pub(super) struct Writer {
    backend: Backend,
    queue: Queue,
}

/// Everything but the connection, so that it can take writes while a batch is in flight.
struct Queue {
    rx: UnboundedReceiver<Msg>,
    /// Writes taken from the channel and not sent yet; only while the spool is empty.
    pending: VecDeque<Write>,
    spool: Spool,
    counters: Arc<Counters>,
    /// Set when a close comes or every handle is gone: write out what there is until then,
    /// then stop.
    close_deadline: Option<Instant>,
    /// The channel is closed and empty.
    received_all: bool,
    closers: Vec<oneshot::Sender<()>>,
    /// Writes dropped since the spool last took one, for the logs.
    dropping: u64,
}

impl Writer {
    /// Must run inside the writer's runtime.
    pub(super) fn new(
        target: &RedisTarget,
        spool: Spool,
        rx: UnboundedReceiver<Msg>,
        counters: Arc<Counters>,
    ) -> RedisResult<Self> {
        Ok(Self {
            backend: Backend(Connection::open(target, PATIENCE)?),
            queue: Queue {
                rx,
                pending: VecDeque::new(),
                spool,
                counters,
                close_deadline: None,
                received_all: false,
                closers: Vec::new(),
                dropping: 0,
            },
        })
    }

    /// Runs until closed; returns the closes to answer.
    pub(super) async fn run(mut self) -> Vec<oneshot::Sender<()>> {
        let mut failures = 0;
        loop {
            if self
                .queue
                .close_deadline
                .is_some_and(|at| Instant::now() >= at)
            {
                tracing::warn!("Redis writes still due at close are left in the spool");
                break;
            }
            let batch = match self.queue.next_batch() {
                Ok(Some(batch)) => batch,
                Ok(None) if self.queue.received_all => break,
                Ok(None) => {
                    let msg = self.queue.rx.recv().await;
                    self.queue.accept(msg);
                    continue;
                }
                Err(err) => {
                    tracing::error!(%err, "cannot read the Redis spool");
                    if self.queue.closing() {
                        break;
                    }
                    failures += 1;
                    self.queue.receive_for(retry_delay(failures)).await;
                    continue;
                }
            };
            match self.send(&batch).await {
                Ok(()) => {
                    failures = 0;
                    self.queue.applied(batch);
                }
                Err(err) => {
                    self.queue.counters.redis_errors.fetch_add(1, Relaxed);
                    self.queue.failed(batch);
                    failures += 1;
                    tracing::warn!(
                        error = %err,
                        attempt = failures,
                        spooled = self.queue.spool.len(),
                        "Redis write failed: writes go to the spool until it is back"
                    );
                    if self.queue.closing() {
                        break;
                    }
                    self.queue.receive_for(retry_delay(failures)).await;
                }
            }
        }
        self.queue.finish()
    }

    /// Applies `batch`, taking writes from the channel meanwhile.
    async fn send(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let from_memory = matches!(batch, Batch::Memory(_));
        let apply = tokio::time::timeout(BATCH_TIMEOUT, self.backend.apply(batch.writes()));
        tokio::pin!(apply);
        loop {
            let close_deadline = self.queue.close_deadline;
            tokio::select! {
                applied = &mut apply => {
                    return match applied {
                        Ok(result) => Ok(result?),
                        Err(_) => Err(anyhow!("no reply within {BATCH_TIMEOUT:?}")),
                    };
                }
                () = until(close_deadline) => {
                    return Err(anyhow!("no reply before the close deadline"));
                }
                msg = self.queue.rx.recv(), if !self.queue.received_all => {
                    self.queue.accept(msg);
                    if from_memory && self.queue.pending.len() >= MAX_PENDING {
                        // Abandoning the batch leaves its outcome unknown: it is replayed.
                        return Err(anyhow!("Redis too slow: {MAX_PENDING} writes waiting"));
                    }
                }
            }
        }
    }
}

/// Never, without a deadline.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl Queue {
    fn closing(&self) -> bool {
        self.close_deadline.is_some()
    }

    /// Starts the close, once.
    fn close(&mut self) {
        self.close_deadline
            .get_or_insert_with(|| Instant::now() + CLOSE_BUDGET);
    }

    fn accept(&mut self, msg: Option<Msg>) {
        match msg {
            Some(Msg::Write(write)) if self.spool.is_empty() => self.pending.push_back(write),
            Some(Msg::Write(write)) => self.spool_write(write),
            Some(Msg::Close(closed)) => {
                self.closers.push(closed);
                self.close();
                // Later submits fail (and are counted) instead of waiting unseen.
                self.rx.close();
            }
            None => {
                self.received_all = true;
                self.close();
            }
        }
    }

    /// Takes writes from the channel for `duration`, or until a close.
    async fn receive_for(&mut self, duration: Duration) {
        let pause = tokio::time::sleep(duration);
        tokio::pin!(pause);
        while !self.closing() {
            tokio::select! {
                () = &mut pause => return,
                msg = self.rx.recv() => self.accept(msg),
            }
        }
    }

    /// The spool's head while it has one (it holds the oldest writes), else what waits in memory.
    fn next_batch(&mut self) -> io::Result<Option<Batch>> {
        if self.spool.is_empty() {
            if self.pending.is_empty() {
                return Ok(None);
            }
            let take = self.pending.len().min(BATCH);
            return Ok(Some(Batch::Memory(self.pending.drain(..take).collect())));
        }
        Ok(Some(Batch::Spool(self.spool.peek(BATCH)?)))
    }

    fn applied(&mut self, batch: Batch) {
        let written = batch.writes().len() as u64;
        self.counters.written.fetch_add(written, Relaxed);
        if let Batch::Spool(batch) = batch {
            self.counters.dropped.fetch_add(batch.unreadable, Relaxed);
            if let Err(err) = self.spool.commit(&batch) {
                tracing::error!(%err, "cannot advance the Redis spool: the next start applies these writes again");
            }
            self.counters.set_spool(&self.spool);
            if self.spool.is_empty() {
                tracing::info!("Redis spool replayed: writing directly again");
            }
        }
    }

    /// Spools a failed batch from memory, then what waited behind it, keeping their order.
    fn failed(&mut self, batch: Batch) {
        if let Batch::Memory(writes) = batch {
            writes.into_iter().for_each(|write| self.spool_write(write));
        }
        self.spool_pending();
    }

    fn spool_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        pending
            .into_iter()
            .for_each(|write| self.spool_write(write));
    }

    fn spool_write(&mut self, write: Write) {
        match self.spool.push(&write) {
            Ok(Pushed::Stored) => {
                if self.dropping > 0 {
                    tracing::warn!(
                        dropped = self.dropping,
                        "the Redis spool takes writes again"
                    );
                    self.dropping = 0;
                }
            }
            Ok(Pushed::Full) => self.drop_write(&write, "the spool is full"),
            Err(err) => self.drop_write(&write, err),
        }
        self.counters.set_spool(&self.spool);
    }

    fn drop_write(&mut self, write: &Write, reason: impl Display) {
        self.counters.dropped.fetch_add(1, Relaxed);
        if self.dropping == 0 {
            tracing::error!(
                id = %write.id,
                %reason,
                "Redis is unavailable and its spool cannot take writes: DROPPING writes until it can"
            );
        }
        self.dropping += 1;
    }

    /// Puts whatever is left in memory into the spool and flushes it to the disk.
    fn finish(mut self) -> Vec<oneshot::Sender<()>> {
        while let Ok(msg) = self.rx.try_recv() {
            self.accept(Some(msg));
        }
        self.spool_pending();
        if let Err(err) = self.spool.sync() {
            tracing::error!(%err, "cannot flush the Redis spool to the disk");
        }
        if !self.spool.is_empty() {
            tracing::info!(
                writes = self.spool.len(),
                bytes = self.spool.bytes(),
                "Redis writes left in the spool for the next start"
            );
        }
        self.closers
    }
}

fn retry_delay(failures: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}
