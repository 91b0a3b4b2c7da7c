//! A partition served by this broker: its log, a group-commit writer and the high watermark.
//!
//! ```text
//!  produce handlers ──validated batches──► queue ──► writer task
//!                                                     │ drains every queued request,
//!                                                     │ appends them all, one sync
//!                                                     ▼ (on a blocking thread)
//!                                       high watermark (watch) ──► fetch long polls,
//!                                                                  subscribe streams
//! ```
//!
//! Consumers read only below the high watermark, which moves after the group's sync: a
//! record is never served before it is durable per the topic's `flush` policy.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rafka_proto::batch::{RecordBatch, ValidatedBatch};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::BrokerError;
use crate::log::{Appended, LogConfig, LogError, LogReader, PartitionLog};

/// Most batches one group commit takes from the queue.
const MAX_GROUP_BATCHES: usize = 4096;
/// Requests that may wait in a partition's queue.
const QUEUE_DEPTH: usize = 1024;

type Reply = Result<Vec<Appended>, Arc<LogError>>;

struct AppendJob {
    batches: Vec<ValidatedBatch>,
    reply: Option<oneshot::Sender<Reply>>,
}

/// One partition of a topic on this broker.
pub struct Partition {
    topic: Arc<str>,
    id: u32,
    dir: PathBuf,
    reader: LogReader,
    log: Arc<Mutex<PartitionLog>>,
    high_watermark: watch::Sender<u64>,
    queue: mpsc::Sender<AppendJob>,
}

impl Partition {
    /// Opens (recovering) the partition's log in `dir` and starts its writer task.
    pub async fn open(
        topic: Arc<str>,
        id: u32,
        dir: PathBuf,
        config: LogConfig,
    ) -> Result<Arc<Self>, BrokerError> {
        let open_dir = dir.clone();
        let log = tokio::task::spawn_blocking(move || PartitionLog::open(open_dir, config))
            .await
            .map_err(|e| BrokerError::Internal(format!("opening {}-{id}: {e}", topic)))?
            .map_err(|e| BrokerError::Log {
                topic: topic.to_string(),
                partition: id,
                source: Arc::new(e),
            })?;
        let reader = log.reader();
        let (high_watermark, _) = watch::channel(log.log_end_offset());
        let log = Arc::new(Mutex::new(log));
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run_writer(log.clone(), rx, high_watermark.clone()));
        Ok(Arc::new(Self {
            topic,
            id,
            dir,
            reader,
            log,
            high_watermark,
            queue,
        }))
    }

    /// Topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partition number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Concurrent reads of the log.
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    /// Offset below which records are durable and may be served.
    pub fn high_watermark(&self) -> u64 {
        *self.high_watermark.borrow()
    }

    /// Notified whenever the high watermark moves.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// Appends validated batches through the group-commit writer. With `wait`, returns
    /// where they landed once durable per the flush policy; without, once queued.
    pub async fn append(
        &self,
        batches: Vec<ValidatedBatch>,
        wait: bool,
    ) -> Result<Option<Vec<Appended>>, BrokerError> {
        let (tx, rx) = oneshot::channel();
        let job = AppendJob {
            batches,
            reply: wait.then_some(tx),
        };
        self.queue
            .send(job)
            .await
            .map_err(|_| BrokerError::ShuttingDown)?;
        if !wait {
            return Ok(None);
        }
        let reply = rx.await.map_err(|_| BrokerError::ShuttingDown)?;
        reply.map(Some).map_err(|source| BrokerError::Log {
            topic: self.topic.to_string(),
            partition: self.id,
            source,
        })
    }

    /// Runs `f` on the log on a blocking thread.
    pub async fn with_log<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut PartitionLog) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, BrokerError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&log)))
            .await
            .map_err(|e| BrokerError::Internal(format!("log task failed: {e}")))?
            .map_err(|e| self.log_error(e))
    }

    /// Wraps a storage error with this partition's name.
    pub fn log_error(&self, e: LogError) -> BrokerError {
        BrokerError::Log {
            topic: self.topic.to_string(),
            partition: self.id,
            source: Arc::new(e),
        }
    }

    /// Applies retention now; returns the number of segments deleted.
    pub async fn apply_retention(&self) -> Result<usize, BrokerError> {
        self.with_log(|log| log.apply_retention(SystemTime::now()).map(|d| d.len()))
            .await
    }
}

fn lock(log: &Mutex<PartitionLog>) -> MutexGuard<'_, PartitionLog> {
    // A panic inside a log call leaves the log itself consistent (it poisons on I/O errors).
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// The group-commit loop: one blocking append-and-sync per group of queued requests.
async fn run_writer(
    log: Arc<Mutex<PartitionLog>>,
    mut rx: mpsc::Receiver<AppendJob>,
    high_watermark: watch::Sender<u64>,
) {
    while let Some(first) = rx.recv().await {
        let mut count = first.batches.len();
        let mut jobs = vec![first];
        while count < MAX_GROUP_BATCHES {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.batches.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let log = log.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut log = lock(&log);
            let views: Vec<RecordBatch<'_>> = jobs
                .iter()
                .flat_map(|j| j.batches.iter().map(ValidatedBatch::view))
                .collect();
            let result = log.append_batches(&views);
            drop(views);
            (jobs, result, log.log_end_offset())
        })
        .await;
        let Ok((jobs, result, end)) = done else {
            tracing::error!("partition writer task panicked");
            continue;
        };
        match result {
            Ok(appended) => {
                high_watermark.send_replace(end);
                let mut rest = &appended[..];
                for job in jobs {
                    let (mine, tail) = rest.split_at(job.batches.len());
                    rest = tail;
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Ok(mine.to_vec()));
                    }
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for job in jobs {
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}
