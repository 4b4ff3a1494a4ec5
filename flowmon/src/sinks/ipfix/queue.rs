//! A collector's queue of encoded records: the sink pushes without ever waiting, the
//! collector's exporter takes them in order. Bounded in bytes; what does not fit is refused and
//! the caller counts it.

use std::{
    collections::VecDeque,
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use super::message::Chunk;

pub struct ChunkQueue {
    state: Mutex<State>,
    ready: Condvar,
    limit: usize,
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Arc<Chunk>>,
    bytes: usize,
    closed: bool,
}

/// What a wait on the queue gave.
pub enum Next {
    Chunk(Arc<Chunk>),
    /// Nothing came in the time given.
    Idle,
    /// Closed and empty: nothing will come.
    Closed,
}

impl ChunkQueue {
    pub fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            limit,
        }
    }

    /// Queues `chunk` unless that would take the queue over its bound; `false`: refused.
    pub fn push(&self, chunk: Arc<Chunk>) -> bool {
        let mut state = self.lock();
        if state.bytes + chunk.records.len() > self.limit {
            return false;
        }
        state.bytes += chunk.records.len();
        state.chunks.push_back(chunk);
        self.ready.notify_one();
        true
    }

    /// The next chunk, waiting up to `timeout` for one.
    pub fn next(&self, timeout: Duration) -> Next {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.chunks.is_empty() && !s.closed)
            .expect("IPFIX queue lock");
        match state.chunks.pop_front() {
            Some(chunk) => {
                state.bytes -= chunk.records.len();
                Next::Chunk(chunk)
            }
            None if state.closed => Next::Closed,
            None => Next::Idle,
        }
    }

    /// No more chunks will come; what is queued is still taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Takes every chunk still queued (to count them as dropped).
    pub fn drain(&self) -> Vec<Arc<Chunk>> {
        let mut state = self.lock();
        state.bytes = 0;
        state.chunks.drain(..).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("IPFIX queue lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(bytes: usize) -> Arc<Chunk> {
        Arc::new(Chunk {
            template_id: 256,
            record_len: 1,
            records: vec![0; bytes],
            pool: None,
        })
    }

    #[test]
    fn the_bound_refuses_what_does_not_fit_and_frees_what_is_taken() {
        let queue = ChunkQueue::new(100);
        assert!(queue.push(chunk(60)));
        assert!(!queue.push(chunk(41)));
        assert!(queue.push(chunk(40)));
        assert!(matches!(queue.next(Duration::ZERO), Next::Chunk(c) if c.records.len() == 60));
        assert!(queue.push(chunk(60)));
        queue.close();
        assert!(matches!(queue.next(Duration::ZERO), Next::Chunk(c) if c.records.len() == 40));
        assert_eq!(queue.drain().len(), 1);
        assert!(matches!(queue.next(Duration::from_secs(5)), Next::Closed));
    }

    #[test]
    fn a_waiting_exporter_wakes_when_a_chunk_comes() {
        let queue = Arc::new(ChunkQueue::new(100));
        let producer = {
            let queue = queue.clone();
            std::thread::spawn(move || assert!(queue.push(chunk(1))))
        };
        let started = std::time::Instant::now();
        assert!(matches!(
            queue.next(Duration::from_secs(10)),
            Next::Chunk(_)
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
        producer.join().unwrap();
        assert!(matches!(queue.next(Duration::from_millis(1)), Next::Idle));
    }
}
