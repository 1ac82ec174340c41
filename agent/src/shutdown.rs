//! One shutdown for the whole agent, in a fixed order.
//!
//! SIGTERM or SIGINT (or [`Shutdown::begin`]) starts it:
//!
//! 1. **stop**: `/healthz` answers 503 at once (load balancers drain the
//!    node), the sources stop, and the sync loop lets the sync in progress
//!    finish (a sync is never cut in half) and starts no other;
//! 2. **close**: once the loop has returned, the HTTP servers (metrics,
//!    healthz, health-check node ports, the control socket) stop accepting
//!    and finish the requests they hold; the event poster sends what is
//!    queued and ends;
//! 3. the agent returns `Ok` and the process exits 0.
//!
//! The whole sequence is bounded by the grace period
//! (`--shutdown-grace-period`, default [`DEFAULT_GRACE`]); past it the agent
//! exits anyway, with whatever was still running abandoned. Nothing is
//! removed from the kernel: the rules stay in place for the next agent
//! (fail static).
//!
//! Every task of the agent is spawned on the one [`TaskTracker`] held here,
//! so the end of the sequence knows when the last one is done.

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default `--shutdown-grace-period`: well inside the 30 s a DaemonSet
/// pod gets by default (`terminationGracePeriodSeconds`) before SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

/// The agent's shutdown: the two phases' tokens, the task tracker and the
/// grace period. Cheap to clone; every clone is the same shutdown.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stop: CancellationToken,
    close: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

impl Shutdown {
    /// A shutdown not yet begun, bounded by `grace` once it is.
    pub fn new(grace: Duration) -> Self {
        Self {
            stop: CancellationToken::new(),
            close: CancellationToken::new(),
            tasks: TaskTracker::new(),
            grace,
        }
    }

    /// The grace period.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Begins the shutdown (phase 1: stop). Idempotent.
    pub fn begin(&self) {
        self.stop.cancel();
    }

    /// Whether the shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Completes when the shutdown has begun.
    pub async fn stopping(&self) {
        self.stop.cancelled().await;
    }

    /// The phase-1 token: cancelled when the shutdown begins. For the
    /// sources, the sync loop and the health answer.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The phase-2 token: cancelled once the sync loop has returned. For
    /// the servers.
    pub fn close_token(&self) -> CancellationToken {
        self.close.clone()
    }

    /// Runs `task` on the agent's tracker.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Runs `task` on the tracker until the shutdown begins (it is dropped
    /// then): for the sources, which hold nothing that needs finishing.
    pub fn spawn_until_stopped<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let _ = stop.run_until_cancelled_owned(task).await;
        })
    }

    /// Begins the shutdown on SIGTERM or SIGINT (the handlers are installed
    /// now, so a signal arriving from here on is never the default
    /// action's abrupt exit).
    pub fn on_signals(&self) -> std::io::Result<()> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        self.spawn(async move {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                () = this.stopping() => return,
            };
            tracing::info!(
                signal = which,
                grace = ?this.grace,
                "shutting down; the rules stay in place"
            );
            this.begin();
        });
        Ok(())
    }

    /// Phase 2: tells the servers to close, then waits for every tracked
    /// task to end (not bounded here: [`Shutdown::bounded`] is).
    pub async fn close_and_wait(&self) {
        self.close.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Runs `work` (the agent) to its end, or until the grace period has
    /// passed since the shutdown began; `None` then.
    pub async fn bounded<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let deadline = async {
            self.stopping().await;
            tokio::time::sleep(self.grace).await;
        };
        tokio::select! {
            biased;
            out = work => Some(out),
            () = deadline => None,
        }
    }

    /// Tasks still running on the tracker.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bounded_waits_for_the_work_or_the_grace_after_the_start() {
        let s = Shutdown::new(Duration::from_secs(5));
        // Not begun: no deadline runs, however long the work takes.
        let out = s.bounded(tokio::time::sleep(Duration::from_secs(60))).await;
        assert_eq!(out, Some(()));
        s.begin();
        let t0 = tokio::time::Instant::now();
        let out = s.bounded(std::future::pending::<()>()).await;
        assert_eq!(out, None);
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn phases_in_order() {
        let s = Shutdown::new(Duration::from_secs(5));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let source_tx = tx.clone();
        s.spawn_until_stopped(async move {
            std::future::pending::<()>().await;
            drop(source_tx);
        });
        let close = s.close_token();
        let server_tx = tx.clone();
        s.spawn(async move {
            close.cancelled().await;
            let _ = server_tx.send("server closed");
        });
        drop(tx);
        s.begin();
        s.stop_token().cancelled().await;
        assert!(rx.try_recv().is_err(), "servers close only in phase 2");
        s.close_and_wait().await;
        assert_eq!(rx.recv().await, Some("server closed"));
        assert_eq!(rx.recv().await, None, "every task ended");
        assert_eq!(s.running(), 0);
    }
}
