//! One replica of a partition on this broker: the partition log, its Raft group and the
//! high watermark, and how produce requests land in it per `acks`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rafka_proto::batch::ValidatedBatch;
use rafka_proto::v1::Acks;
use tokio::sync::watch;

use super::producers::Producers;
use super::sequencer::Sequencer;
use crate::error::BrokerError;
use crate::log::{FlushPolicy, LogConfig, LogError, LogReader, PartitionLog};
use crate::raft::liveness::Liveness;
use crate::raft::log_store::{EntryReader, LocalAcks};
use crate::raft::state_machine::PartitionStateMachine;
use crate::raft::types::{typ, AppendResult, BatchData};

/// Longest a produce waits for a majority to commit its batches.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a produce reaching a replica mid-election waits to learn the new leader.
const ELECTION_WAIT: Duration = Duration::from_secs(2);
/// One round of a preferred-leader election: over a heartbeat (150 ms), well under the
/// shortest election timeout (1 s).
const LEASE_ROUND: Duration = Duration::from_millis(250);

fn internal(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(e.to_string())
}

/// One replica of a partition on this broker.
pub struct ReplicatedPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The partition's Raft group id.
    pub group: u64,
    pub(super) node: u64,
    pub(super) raft: typ::Raft,
    pub(super) log: Arc<Mutex<PartitionLog>>,
    pub(super) reader: LogReader,
    pub(super) sm: PartitionStateMachine<Producers>,
    pub(super) dir: PathBuf,
    /// The topic's config overrides this replica's log runs with.
    pub(super) configs: Mutex<BTreeMap<String, String>>,
    pub(super) segment_bytes: std::sync::atomic::AtomicU64,
    /// The log syncs on a timer (`flush.ms`), not on every append: the broker's flush
    /// round visits only such replicas.
    pub(super) flushes_on_interval: std::sync::atomic::AtomicBool,
    pub(super) local_acks: LocalAcks,
    pub(super) entries: EntryReader,
    /// The partition's replica list in the metadata (the preferred leader first).
    pub(super) preferred: Mutex<Vec<u32>>,
    /// Node-level liveness: names the leader of a quiet group to a replica that has not
    /// heard from it since it started.
    pub(super) liveness: Arc<Liveness>,
    /// Idempotent producers' batches accepted here and not yet committed.
    pub(super) sequencer: Sequencer,
    /// Records and bytes appended here as leader and served by fetches (`/metrics`).
    pub traffic: super::metrics::Traffic,
}

/// Where a produce's batches landed.
pub struct Landed {
    /// Base offset of each batch (empty for acks=none).
    pub base_offsets: Vec<u64>,
    /// Log end offset after them.
    pub log_end_offset: u64,
}

impl ReplicatedPartition {
    /// Appends a batch through Raft; returns once a majority committed it. Without a
    /// quorum for [`COMMIT_TIMEOUT`] it answers `Unavailable` (the batch may still
    /// commit later, as with Kafka's request timeout).
    pub async fn append(&self, batch: ValidatedBatch) -> Result<AppendResult, BrokerError> {
        let started = std::time::Instant::now();
        let write = self.raft.client_write(BatchData(batch.bytes().clone()));
        let written = tokio::select! {
            written = tokio::time::timeout(COMMIT_TIMEOUT, write) => written,
            () = self.until_fenced() => return Err(self.fenced_error()),
        };
        crate::metrics::STAGES.raft_commit.since(started);
        let Ok(written) = written else {
            return Err(BrokerError::Unavailable(format!(
                "{}-{}: not committed within {COMMIT_TIMEOUT:?} (no quorum reachable?)",
                self.topic, self.partition
            )));
        };
        match written {
            Ok(r) => Ok(r.data),
            Err(typ::RaftError::APIError(typ::ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(f.leader_id.or_else(|| self.leader())))
            }
            Err(e) => Err(BrokerError::Unavailable(format!(
                "{}-{}: {e}",
                self.topic, self.partition
            ))),
        }
    }

    /// Appends batches in order and answers per `acks`: `All` once a majority committed
    /// each, `Leader` once each is in this leader's log (durable per its `flush`), `None`
    /// once Raft has taken them (no offsets). Off the leader nothing is appended and the
    /// answer names the leader.
    pub async fn append_all(
        &self,
        batches: Vec<ValidatedBatch>,
        acks: Acks,
    ) -> Result<Option<Vec<AppendResult>>, BrokerError> {
        if !self.is_leader() {
            return Err(self.not_leader(self.leader()));
        }
        if self.fenced() {
            return Err(self.fenced_error());
        }
        let (records, bytes) = batches.iter().fold((0, 0), |(r, b), v| {
            (
                r + v.header().record_count.max(0) as u64,
                b + v.bytes().len() as u64,
            )
        });
        let idempotent = |b: &ValidatedBatch| {
            rafka_proto::batch::BatchHeader::parse(b.bytes()).is_ok_and(|h| h.producer_id >= 0)
        };
        if acks != Acks::All && batches.iter().any(idempotent) {
            return Err(BrokerError::InvalidRequest(format!(
                "{}-{}: batches of an idempotent producer (producer_id set) need acks=all",
                self.topic, self.partition
            )));
        }
        // Futures are first polled in order, so the batches enter the log in order.
        let results: Vec<Result<AppendResult, BrokerError>> = match acks {
            Acks::None => {
                for b in batches {
                    self.raft
                        .client_write_ff(BatchData(b.bytes().clone()))
                        .await
                        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
                }
                self.traffic.appended(records, bytes);
                return Ok(None);
            }
            Acks::All => {
                futures::future::join_all(batches.into_iter().map(|b| async {
                    if idempotent(&b) {
                        self.append_idempotent(b).await
                    } else {
                        self.append(b).await
                    }
                }))
                .await
            }
            Acks::Leader => {
                futures::future::join_all(batches.into_iter().map(|b| self.append_local(b))).await
            }
        };
        let results = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        self.traffic.appended(records, bytes);
        Ok(Some(results))
    }

    /// Proposes a batch and returns once it is in this leader's log (or committed, or
    /// refused, whichever comes first).
    async fn append_local(&self, batch: ValidatedBatch) -> Result<AppendResult, BrokerError> {
        let started = std::time::Instant::now();
        let bytes = batch.bytes().clone();
        let local = self.local_acks.register(&bytes);
        let committed = match self.raft.client_write_ff(BatchData(bytes.clone())).await {
            Ok(rx) => rx,
            Err(e) => {
                self.local_acks.forget(&bytes);
                return Err(BrokerError::Unavailable(e.to_string()));
            }
        };
        let mut committed = Box::pin(committed);
        let outcome = tokio::time::timeout(COMMIT_TIMEOUT, async {
            tokio::select! {
                () = self.until_fenced() => (false, Err(self.fenced_error())),
                Ok((base_offset, next_offset)) = local => (true, Ok(AppendResult {
                    base_offset,
                    next_offset,
                    error: None,
                })),
                answer = &mut committed => (false, match answer {
                    Ok(Ok(r)) => Ok(r.data),
                    Ok(Err(typ::ClientWriteError::ForwardToLeader(f))) => Err(self.not_leader(f.leader_id.or_else(|| self.leader()))),
                    Ok(Err(e)) => Err(BrokerError::Unavailable(e.to_string())),
                    Err(_) => Err(BrokerError::Unavailable("the Raft group stopped".into())),
                }),
            }
        })
        .await;
        crate::metrics::STAGES.leader_append.since(started);
        self.local_acks.forget(&bytes);
        // The commit's answer, if not awaited, goes nowhere: Raft's send to a dropped
        // receiver is a no-op.
        drop(committed);
        outcome.map(|(_, r)| r).unwrap_or_else(|_| {
            Err(BrokerError::Unavailable(format!(
                "{}-{}: not appended within {COMMIT_TIMEOUT:?}",
                self.topic, self.partition
            )))
        })
    }

    /// True while this replica leads its group but does not reach a majority of its
    /// voters (see [`Liveness::reaches_majority`]): an isolated leader. It accepts no
    /// writes and fails those waiting for a commit with not-leader, so that clients
    /// find the majority's new leader instead of waiting for the partition to heal.
    pub fn fenced(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.node)
            && m.state == typ::ServerState::Leader
            && !self.liveness.reaches_majority(
                m.membership_config.membership().get_joint_config(),
                std::time::Instant::now(),
            )
    }

    /// Resolves once this replica is [`fenced`](Self::fenced) (never, while it reaches
    /// a majority): raced against a commit that may never come.
    pub async fn until_fenced(&self) {
        let mut changes = self.liveness.subscribe();
        while !self.fenced() {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The answer of a fenced leader: not the leader, the leader unknown here.
    fn fenced_error(&self) -> BrokerError {
        self.not_leader(None)
    }

    /// True while this replica leads its group.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.node) && m.state == typ::ServerState::Leader
    }

    /// Preferred-leader election: this replica, a voter of its group, stands for election
    /// until it leads or `within` passes. openraft 0.9 has no leadership transfer, and
    /// voters refuse a candidate while their leader's lease holds: the first vote raises
    /// the term, the old leader steps down when its next append meets it (its vote is
    /// then no longer a committed leader's, so it grants the next request at once), and
    /// the vote asked for again a moment later wins before the old leader's own election
    /// timer (1-2 s) fires. The partition is without a leader for about one heartbeat.
    pub async fn take_leadership(&self, within: Duration) -> Result<(), BrokerError> {
        let failed = |why: String| {
            BrokerError::Unavailable(format!("{}-{}: {why}", self.topic, self.partition))
        };
        let voter = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config.voter_ids().any(|v| v == self.node)
        };
        if !voter {
            return Err(failed(
                "this replica does not vote in its group (yet)".into(),
            ));
        }
        let deadline = tokio::time::Instant::now() + within;
        let mut metrics = self.raft.metrics();
        while !self.is_leader() {
            if tokio::time::Instant::now() >= deadline {
                return Err(failed(format!("not elected within {within:?}")));
            }
            self.raft
                .trigger()
                .elect()
                .await
                .map_err(|e| failed(e.to_string()))?;
            let round = (tokio::time::Instant::now() + LEASE_ROUND).min(deadline);
            let _ = tokio::time::timeout_at(
                round,
                metrics.wait_for(|m| {
                    m.state == typ::ServerState::Leader && m.current_leader == Some(self.node)
                }),
            )
            .await;
        }
        Ok(())
    }

    /// The redirect to answer off the leader (never to this broker itself: one that
    /// names itself but does not lead is between terms, so the leader is unknown).
    pub fn not_leader(&self, leader: Option<u64>) -> BrokerError {
        BrokerError::NotLeader {
            what: format!("{}-{}", self.topic, self.partition),
            leader: leader.filter(|&l| l != self.node),
        }
    }

    /// The leader, if another broker leads (not this one, and not unknown).
    pub fn leader_elsewhere(&self) -> Option<u64> {
        self.leader().filter(|&l| l != self.node)
    }

    /// Records below this are committed.
    pub fn high_watermark(&self) -> u64 {
        self.sm.high_watermark()
    }

    /// Notified whenever the high watermark moves.
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.sm.watch_high_watermark()
    }

    /// Largest batch the log takes (the topic's `segment.bytes`).
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// On the leader: how many entries each follower is behind its log.
    pub fn replica_lags(&self) -> Vec<(u32, u64)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let Some(replication) = &m.replication else {
            return Vec::new();
        };
        let end = m.last_log_index.map_or(0, |i| i + 1);
        replication
            .iter()
            .filter(|(id, _)| **id != self.node)
            .map(|(id, matched)| {
                let have = matched.map_or(0, |l| l.index + 1);
                (*id as u32, end.saturating_sub(have))
            })
            .collect()
    }

    /// True where a consumer may be ahead of this replica's high watermark (a follower,
    /// or a new leader that has not yet committed its predecessor's last entries): such
    /// a fetch waits instead of being out of range.
    pub fn may_lag(&self, offset: u64) -> bool {
        !self.is_leader() || offset <= self.reader.log_end_offset()
    }

    /// `e` as the error of this partition.
    pub fn log_error(&self, e: LogError) -> BrokerError {
        BrokerError::Log {
            topic: self.topic.clone(),
            partition: self.partition,
            source: Arc::new(e),
        }
    }

    /// Fails unless appends are taken here (this replica leads its group). During an
    /// election it waits (briefly) for the outcome, so the redirect can name the leader.
    pub async fn check_writable(&self) -> Result<(), BrokerError> {
        if self.is_leader() {
            return Ok(());
        }
        if self.leader_elsewhere().is_none() {
            let mut metrics = self.raft.metrics();
            let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
            metrics.borrow_and_update();
            while !self.is_leader() && self.leader_elsewhere().is_none() {
                // Deadline passed, or the group stopped.
                if !matches!(
                    tokio::time::timeout_at(deadline, metrics.changed()).await,
                    Ok(Ok(()))
                ) {
                    break;
                }
            }
            if self.is_leader() {
                return Ok(());
            }
        }
        Err(self.not_leader(self.leader()))
    }

    /// Appends validated batches in order and waits per `acks` (see
    /// [`append_all`](Self::append_all)); says where they landed.
    pub async fn produce(
        &self,
        batches: Vec<ValidatedBatch>,
        acks: Acks,
    ) -> Result<Landed, BrokerError> {
        let results = self.append_all(batches, acks).await?;
        Ok(Landed {
            base_offsets: results.iter().flatten().map(|r| r.base_offset).collect(),
            log_end_offset: results
                .as_ref()
                .and_then(|r| r.last())
                .filter(|r| r.next_offset != super::sequencer::UNKNOWN_OFFSET)
                .map_or_else(|| self.high_watermark(), |r| r.next_offset),
        })
    }

    /// Applies changed topic configs to the running log.
    pub(super) fn update_config(&self, configs: &BTreeMap<String, String>, config: LogConfig) {
        let mut current = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if *current == *configs {
            return;
        }
        self.segment_bytes
            .store(config.segment_bytes, std::sync::atomic::Ordering::Relaxed);
        self.flushes_on_interval.store(
            matches!(config.flush, FlushPolicy::Interval(_)),
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Err(e) = self.with_log(|log| log.set_config(config)) {
            tracing::warn!(topic = %self.topic, partition = self.partition, "config change: {e}");
        }
        *current = configs.clone();
    }

    /// Retention on a replica: when `retention.ms` / `retention.bytes` would delete
    /// segments, snapshot the state (offsets only) past their last entry and purge the
    /// Raft log up to it; the purge deletes the segments. Each replica does this on its
    /// own, as Kafka replicas do; a follower that later needs purged entries gets the
    /// snapshot and restarts its log at the leader's log start. Returns whether a purge
    /// was requested.
    pub async fn apply_retention(&self) -> Result<bool, BrokerError> {
        let cut = self.with_log(|log| log.retention_cut(std::time::SystemTime::now()));
        let Some(index) = cut.and_then(|c| self.entries.last_index_below(c)) else {
            return Ok(false);
        };
        let (applied, snapshot) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
        };
        if applied.is_none_or(|a| a < index) {
            return Ok(false); // not applied here yet: a later round purges it
        }
        if snapshot.is_none_or(|s| s < index) {
            self.sm.snapshot_at(index);
            self.raft.trigger().snapshot().await.map_err(internal)?;
            self.raft
                .wait(Some(COMMIT_TIMEOUT))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= index),
                    "snapshot past the retention cut",
                )
                .await
                .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
        }
        self.raft
            .trigger()
            .purge_log(index)
            .await
            .map_err(internal)?;
        Ok(true)
    }

    /// Runs `f` on the replica's log (flushes, config changes).
    pub fn with_log<T>(&self, f: impl FnOnce(&mut PartitionLog) -> T) -> T {
        f(&mut self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Concurrent reads of the replica's log.
    pub fn reader(&self) -> &LogReader {
        &self.reader
    }

    /// The current leader, as this replica knows it.
    pub fn leader(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let known = self.raft.metrics().borrow().current_leader;
        // A leader whose broker is down is no leader to send clients to (until a new
        // one is elected, the group's own metrics still name it).
        known
            .filter(|&l| l == self.node || !self.liveness.is_down(l, now))
            .or_else(|| self.liveness.leader_of(self.group, now))
    }

    /// Whether the log syncs on a timer (`flush.ms`) rather than on every append.
    pub fn flushes_on_interval(&self) -> bool {
        self.flushes_on_interval
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The partition's replica list in the metadata, the preferred leader first.
    pub fn preferred_replicas(&self) -> Vec<u32> {
        self.preferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn set_preferred_replicas(&self, replicas: &[u32]) {
        let mut preferred = self.preferred.lock().unwrap_or_else(|e| e.into_inner());
        if *preferred != replicas {
            *preferred = replicas.to_vec();
        }
    }

    /// The Raft handle (tests and metrics).
    pub fn raft(&self) -> &typ::Raft {
        &self.raft
    }
}
