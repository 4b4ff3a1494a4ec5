//! How the agent's long-running parts stop: each runs as a [`Part`], told to stop through a
//! `CancellationToken` and then waited for, so that the agent stops them one after the other in
//! the order that keeps data (producers before what they hand their data to).

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running part of the agent.
pub struct Part {
    name: &'static str,
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl Part {
    /// Runs `work` on the runtime; it must end soon after the token it is given is cancelled.
    pub fn spawn<F>(name: &'static str, work: impl FnOnce(CancellationToken) -> F) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = CancellationToken::new();
        let task = tokio::spawn(work(token.clone()));
        Self { name, token, task }
    }

    /// Runs `work` on a thread of its own, for a part that blocks in system calls.
    pub fn spawn_blocking(
        name: &'static str,
        work: impl FnOnce(CancellationToken) + Send + 'static,
    ) -> Self {
        let token = CancellationToken::new();
        let task = tokio::task::spawn_blocking({
            let token = token.clone();
            move || work(token)
        });
        Self { name, token, task }
    }

    /// A part that holds `resource` until it is stopped, then lets `stop` release it.
    pub fn hold<R, F>(
        name: &'static str,
        resource: R,
        stop: impl FnOnce(R) -> F + Send + 'static,
    ) -> Self
    where
        R: Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        Self::spawn(name, move |token| async move {
            token.cancelled().await;
            stop(resource).await;
        })
    }

    /// Tells the part to stop and waits until it has.
    pub async fn stop(self) {
        self.token.cancel();
        if let Err(err) = self.task.await {
            tracing::error!(part = self.name, %err, "failed while stopping");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering::SeqCst},
    };

    use super::*;

    #[tokio::test]
    async fn a_part_ends_its_work_when_stopped() {
        let stopped = Arc::new(AtomicBool::new(false));
        let part = Part::spawn("test", {
            let stopped = stopped.clone();
            move |token| async move {
                token.cancelled().await;
                stopped.store(true, SeqCst);
            }
        });
        assert!(!stopped.load(SeqCst));
        part.stop().await;
        assert!(stopped.load(SeqCst));

        let blocking = Part::spawn_blocking("blocking", |token| {
            while !token.is_cancelled() {
                std::thread::yield_now();
            }
        });
        blocking.stop().await;
    }
}
