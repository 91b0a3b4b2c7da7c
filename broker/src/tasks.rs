//! Every task a broker spawns has one owner: a cancellation token that says "stop", and
//! a tracker that shutdown awaits (as tokio's mini-redis does with its shutdown
//! broadcast). Long-lived loops and server streams end when the token is cancelled;
//! tasks that finish work in flight (a log flusher) end when their input closes.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The broker's token and tracker; clones share them.
#[derive(Clone, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    /// Spawns a task that runs until it ends by itself (shutdown waits for it).
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Spawns a task that also ends as soon as the token is cancelled.
    pub fn spawn_until_stopped<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// Completes once the token is cancelled.
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// True once the token is cancelled.
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Cancels the token: loops and streams end.
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// Cancels the token and waits (at most `limit`) for every task to end; returns how
    /// many were still running when the wait gave up.
    pub async fn shut_down(&self, limit: Duration) -> usize {
        self.stop();
        self.tracker.close();
        match tokio::time::timeout(limit, self.tracker.wait()).await {
            Ok(()) => 0,
            Err(_) => self.tracker.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_stops_loops_and_waits_for_finishing_work() {
        let tasks = Tasks::default();
        tasks.spawn_until_stopped(std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tasks.spawn(async move {
            let _ = rx.await;
            let _ = done_tx.send(());
        });
        assert!(!tasks.is_stopped());
        let waiting = tokio::spawn({
            let tasks = tasks.clone();
            async move { tasks.shut_down(Duration::from_secs(10)).await }
        });
        tasks.stopped().await;
        // The finishing task is still awaited: shutdown has not returned.
        assert!(!waiting.is_finished());
        tx.send(()).unwrap();
        assert_eq!(waiting.await.unwrap(), 0);
        done_rx.await.unwrap();
        // A task that never ends is reported, not waited on forever.
        let stuck = Tasks::default();
        stuck.spawn(std::future::pending());
        assert_eq!(stuck.shut_down(Duration::from_millis(10)).await, 1);
    }
}
