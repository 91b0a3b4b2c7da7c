//! Syncs a Raft log and reports the appends durable, in append order, to openraft (its
//! `LogFlushed` callback) and to `acks=leader` waiters.
//!
//! The store writes entries into the mapping at once (readable by replication streams
//! as soon as `append` returns) and queues the sync here. openraft 0.9 waits for each
//! append's report before it runs its next command (`RaftCore::append_to_log`), so a
//! group's appends are synced one `append` call at a time: a produce request's batches
//! cost one sync each, and group commit happens only where openraft hands the store
//! several entries at once (a follower's AppendEntries). The sync runs on the flusher's
//! worker thread where the runtime allows it (measured: ~10% more single-node produce
//! throughput than a hop to the blocking pool and back per sync).

use std::time::Instant;

use bytes::Bytes;
use openraft::storage::LogFlushed;
use tokio::sync::{mpsc, oneshot};

use super::log_store::{LocalAck, LocalAcks};
use super::types::TypeConfig;
use crate::log::SyncHandle;
use crate::metrics::STAGES;
use crate::tasks::Tasks;

/// One append to report once durable.
pub struct Flush {
    /// What to sync first (`None`: durable per the log's flush policy already).
    pub sync: Option<SyncHandle>,
    /// openraft's durability callback.
    pub callback: LogFlushed<TypeConfig>,
    /// `acks=leader` waiters: the proposed batch and where it landed.
    pub acks: Vec<(Bytes, LocalAck)>,
    /// When the append was queued (for the `log_durable` stage).
    pub queued: Instant,
}

enum Job {
    Flush(Flush),
    /// Answered once every earlier job is done.
    Barrier(oneshot::Sender<()>),
}

/// The queue of a store's pending syncs; its task starts with the first job.
#[derive(Clone)]
pub struct Flusher {
    tx: std::sync::Arc<std::sync::OnceLock<mpsc::UnboundedSender<Job>>>,
    local_acks: LocalAcks,
    tasks: Tasks,
    /// Tests hold this to hold back the reports of every round after it.
    #[cfg(test)]
    pub(crate) gate: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Flusher {
    /// A flusher completing `local_acks` waiters; its task is one of `tasks` (it ends
    /// when the store that feeds it is dropped, after reporting every queued append).
    pub fn new(local_acks: LocalAcks, tasks: Tasks) -> Self {
        Self {
            tx: Default::default(),
            local_acks,
            tasks,
            #[cfg(test)]
            gate: Default::default(),
        }
    }

    fn sender(&self) -> &mpsc::UnboundedSender<Job> {
        self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            #[cfg(not(test))]
            self.tasks.spawn(run(rx, self.local_acks.clone()));
            #[cfg(test)]
            self.tasks
                .spawn(run(rx, self.local_acks.clone(), self.gate.clone()));
            tx
        })
    }

    /// Queues an append's sync and report.
    pub fn submit(&self, flush: Flush) {
        if let Err(mpsc::error::SendError(Job::Flush(f))) = self.sender().send(Job::Flush(flush)) {
            f.callback
                .log_io_completed(Err(std::io::Error::other("log flusher stopped")));
        }
    }

    /// Waits until every append queued so far has been synced and reported (before a
    /// truncation, so no report of a removed entry arrives after it).
    pub async fn drain(&self) {
        let (tx, rx) = oneshot::channel();
        if self.sender().send(Job::Barrier(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<Job>,
    local_acks: LocalAcks,
    #[cfg(test)] gate: std::sync::Arc<tokio::sync::Mutex<()>>,
) {
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, 1024).await > 0 {
        #[cfg(test)]
        let _held = gate.lock().await;
        let mut syncs: Vec<SyncHandle> = Vec::new();
        for job in &mut jobs {
            if let Job::Flush(Flush { sync, .. }) = job {
                if let Some(mut h) = sync.take() {
                    // Appends to the same segment share one sync of their joint range.
                    if let Some(last) = syncs.last_mut() {
                        match last.merge(h) {
                            None => continue,
                            Some(other) => h = other,
                        }
                    }
                    syncs.push(h);
                }
            }
        }
        let result: Result<(), String> = if syncs.is_empty() {
            Ok(())
        } else {
            sync_all(syncs).await
        };
        for job in jobs.drain(..) {
            match job {
                Job::Flush(f) => match &result {
                    Ok(()) => {
                        STAGES.log_durable.since(f.queued);
                        f.callback.log_io_completed(Ok(()));
                        for (batch, ack) in f.acks {
                            local_acks.complete(&batch, ack);
                        }
                    }
                    Err(e) => f
                        .callback
                        .log_io_completed(Err(std::io::Error::other(e.clone()))),
                },
                Job::Barrier(tx) => {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// Runs the syncs without holding up other tasks: on this worker thread (handing its
/// other tasks to the rest of the runtime) where the runtime allows it, which spares a
/// hop to the blocking pool and back per sync; else on the blocking pool.
async fn sync_all(syncs: Vec<SyncHandle>) -> Result<(), String> {
    let run = move || {
        syncs
            .iter()
            .try_for_each(|s| {
                let started = Instant::now();
                let r = s.sync();
                STAGES.log_sync.since(started);
                r
            })
            .map_err(|e| e.to_string())
    };
    let multi_thread = matches!(
        tokio::runtime::Handle::current().runtime_flavor(),
        tokio::runtime::RuntimeFlavor::MultiThread
    );
    if multi_thread {
        tokio::task::block_in_place(run)
    } else {
        match tokio::task::spawn_blocking(run).await {
            Ok(r) => r,
            Err(e) => Err(format!("log sync task failed: {e}")),
        }
    }
}
