//! A broker's part in the cluster: it runs the metadata group (group 0) and, following
//! the metadata, starts and stops a Raft group for every partition it replicates.
//!
//! ```text
//!  metadata group 0 ──applied commands──► ClusterState ──watch──► reconcile
//!                                                                  │ start groups of new
//!                                                                  │ replicas, stop (and
//!                                                                  ▼ delete) removed ones
//!                        ReplicatedPartition: partition log + Raft group + high watermark
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};
use rafka_proto::batch::ValidatedBatch;
use rafka_proto::v1::Acks;
use tokio::sync::watch;

use super::{ClusterState, Command, MetadataError, MetadataStateMachine, PartitionEntry};
use crate::config::apply_topic_configs;
use crate::error::BrokerError;
use crate::log::{LogConfig, LogReader, PartitionLog};
use crate::raft::log_store::{EntryReader, LocalAcks, RaftLogStore};
use crate::raft::network::{GroupNetwork, PeerChannels, PeerService, RaftGroups};
use crate::raft::state_machine::{PartitionStateMachine, SmStorage};
use crate::raft::types::{AppendResult, BatchData, TypeConfig};

pub use crate::raft::METADATA_GROUP;
/// Longest a produce waits for a majority to commit its batches.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before a failed reconciliation is retried; it doubles up to the maximum.
const RECONCILE_RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between retries of a failed reconciliation.
const RECONCILE_RETRY_MAX: Duration = Duration::from_secs(10);
/// Directory of the metadata log.
pub const METADATA_DIR: &str = "__cluster_metadata-0";

fn raft_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "rafka".into(),
        // Heartbeats every 150 ms (also openraft's AppendEntries timeout) and elections
        // after 1-2 s of silence: a two-core machine running three brokers with a
        // hundred-odd groups each delays heartbeats by hundreds of milliseconds under
        // full load, and tighter settings (100 ms / 0.5-1 s) set off election storms
        // there. A leader's death still moves its partitions within about 2-3 s.
        heartbeat_interval: 150,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // An AppendEntries must arrive within one heartbeat interval (openraft's RPC
        // timeout): cap its entries (batches of up to a few hundred KiB) so that a
        // follower far behind catches up in many small rounds instead of timing out on
        // one huge request again and again.
        max_payload_entries: 32,
        // Snapshots hold offsets, not data, and are cheap: take one every 10,000 entries
        // so a restart replays little. Entries are purged only when retention deletes
        // their data (see `ReplicatedPartition::apply_retention`), so a lagging replica
        // catches up from the log whenever the leader still has it.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10_000),
        max_in_snapshot_log_to_keep: u64::MAX,
        ..Default::default()
    };
    Arc::new(config.validate().expect("static Raft config is valid"))
}

fn internal(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(e.to_string())
}

/// Opens a partition log and its Raft group.
async fn open_group<A: crate::raft::state_machine::Applier>(
    node: u64,
    group: u64,
    dir: &Path,
    config: LogConfig,
    channels: &PeerChannels,
) -> Result<
    (
        Raft<TypeConfig>,
        Arc<Mutex<PartitionLog>>,
        PartitionStateMachine<A>,
        LocalAcks,
        EntryReader,
    ),
    BrokerError,
> {
    let open_dir = dir.to_path_buf();
    let log = tokio::task::spawn_blocking(move || PartitionLog::open(open_dir, config))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    let log = Arc::new(Mutex::new(log));
    let store = RaftLogStore::open(dir, log.clone())
        .map_err(internal)?
        .persist_committed(group == METADATA_GROUP);
    let local_acks = store.local_acks();
    let entries = store.entry_reader();
    let sm = PartitionStateMachine::<A>::open(SmStorage {
        dir: dir.to_path_buf(),
        log: log.clone(),
        reset_pending: store.reset_flag(),
        entries: entries.clone(),
        raft_state: store.state_handle(),
        snapshot_at: Arc::new(std::sync::atomic::AtomicU64::new(
            crate::raft::state_machine::NO_TARGET,
        )),
    })
    .map_err(internal)?;
    let network = GroupNetwork::new(group, channels.clone());
    let raft = Raft::new(node, raft_config(), network, store, sm.clone())
        .await
        .map_err(internal)?;
    Ok((raft, log, sm, local_acks, entries))
}

/// Initializes a group unless it already is.
async fn initialize(raft: &Raft<TypeConfig>, members: BTreeMap<u64, BasicNode>) {
    if raft.is_initialized().await.unwrap_or(true) {
        return;
    }
    if let Err(e) = raft.initialize(members).await {
        tracing::debug!("group already initialized: {e}");
    }
}

/// One replica of a partition on this broker.
pub struct ReplicatedPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The partition's Raft group id.
    pub group: u64,
    node: u64,
    raft: Raft<TypeConfig>,
    log: Arc<Mutex<PartitionLog>>,
    reader: LogReader,
    sm: PartitionStateMachine,
    dir: PathBuf,
    /// The topic's config overrides this replica's log runs with.
    configs: Mutex<BTreeMap<String, String>>,
    segment_bytes: std::sync::atomic::AtomicU64,
    local_acks: LocalAcks,
    entries: EntryReader,
}

impl ReplicatedPartition {
    /// Appends a batch through Raft; returns once a majority committed it. Without a
    /// quorum for [`COMMIT_TIMEOUT`] it answers `Unavailable` (the batch may still
    /// commit later, as with Kafka's request timeout).
    pub async fn append(&self, batch: ValidatedBatch) -> Result<AppendResult, BrokerError> {
        let write = self.raft.client_write(BatchData(batch.bytes().clone()));
        let Ok(written) = tokio::time::timeout(COMMIT_TIMEOUT, write).await else {
            return Err(BrokerError::Unavailable(format!(
                "{}-{}: not committed within {COMMIT_TIMEOUT:?} (no quorum reachable?)",
                self.topic, self.partition
            )));
        };
        match written {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(f.leader_id))
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
        // Futures are first polled in order, so the batches enter the log in order.
        let results: Vec<Result<AppendResult, BrokerError>> = match acks {
            Acks::None => {
                for b in batches {
                    self.raft
                        .client_write_ff(BatchData(b.bytes().clone()))
                        .await
                        .map_err(|e| BrokerError::Unavailable(e.to_string()))?;
                }
                return Ok(None);
            }
            Acks::All => {
                futures::future::join_all(batches.into_iter().map(|b| self.append(b))).await
            }
            Acks::Leader => {
                futures::future::join_all(batches.into_iter().map(|b| self.append_local(b))).await
            }
        };
        results.into_iter().collect::<Result<Vec<_>, _>>().map(Some)
    }

    /// Proposes a batch and returns once it is in this leader's log (or committed, or
    /// refused, whichever comes first).
    async fn append_local(&self, batch: ValidatedBatch) -> Result<AppendResult, BrokerError> {
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
                Ok((base_offset, next_offset)) = local => (true, Ok(AppendResult {
                    base_offset,
                    next_offset,
                    error: None,
                })),
                answer = &mut committed => (false, match answer {
                    Ok(Ok(r)) => Ok(r.data),
                    Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(self.not_leader(f.leader_id)),
                    Ok(Err(e)) => Err(BrokerError::Unavailable(e.to_string())),
                    Err(_) => Err(BrokerError::Unavailable("the Raft group stopped".into())),
                }),
            }
        })
        .await;
        self.local_acks.forget(&bytes);
        if let Ok((true, _)) = outcome {
            // Keep listening for the commit: Raft answers it whether or not we wait.
            tokio::spawn(async move {
                let _ = committed.await;
            });
        }
        outcome.map(|(_, r)| r).unwrap_or_else(|_| {
            Err(BrokerError::Unavailable(format!(
                "{}-{}: not appended within {COMMIT_TIMEOUT:?}",
                self.topic, self.partition
            )))
        })
    }

    /// True while this replica leads its group.
    pub fn is_leader(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.current_leader == Some(self.node) && m.state == openraft::ServerState::Leader
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

    /// Applies changed topic configs to the running log.
    fn update_config(&self, configs: &BTreeMap<String, String>, config: LogConfig) {
        let mut current = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if *current == *configs {
            return;
        }
        self.segment_bytes
            .store(config.segment_bytes, std::sync::atomic::Ordering::Relaxed);
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
        self.raft.metrics().borrow().current_leader
    }

    /// The Raft handle (tests and metrics).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }
}

/// This broker's membership in the cluster.
pub struct ClusterNode {
    id: u32,
    data_dir: PathBuf,
    peers: BTreeMap<u32, String>,
    defaults: LogConfig,
    groups: RaftGroups,
    channels: PeerChannels,
    metadata: Raft<TypeConfig>,
    metadata_sm: MetadataStateMachine,
    /// Running replicas; read on every request, so never held across an await.
    partitions: std::sync::RwLock<HashMap<(String, u32), Arc<ReplicatedPartition>>>,
    /// Serializes reconciling and shutting down (which do hold it across awaits).
    reconciling: tokio::sync::Mutex<()>,
    /// Bumped after every reconciliation.
    reconciled: watch::Sender<u64>,
    stop: watch::Sender<bool>,
}

impl ClusterNode {
    /// Starts the metadata group over `peers` (broker id → peer address, this broker
    /// included) and follows it. The lowest id initializes the group on first start.
    pub async fn start(
        id: u32,
        data_dir: &Path,
        peers: BTreeMap<u32, String>,
        defaults: LogConfig,
    ) -> Result<Arc<Self>, BrokerError> {
        if !peers.contains_key(&id) {
            return Err(BrokerError::InvalidRequest(format!(
                "broker {id} is not in its own peer list"
            )));
        }
        let channels = PeerChannels::default();
        let groups = RaftGroups::default();
        let (metadata, _, metadata_sm, _, _) = open_group(
            id as u64,
            METADATA_GROUP,
            &data_dir.join(METADATA_DIR),
            defaults.clone(),
            &channels,
        )
        .await?;
        groups.insert(METADATA_GROUP, metadata.clone());
        if peers.keys().next() == Some(&id) {
            initialize(&metadata, members(&peers, peers.keys().copied())).await;
        }
        let (stop, _) = watch::channel(false);
        let node = Arc::new(Self {
            id,
            data_dir: data_dir.to_path_buf(),
            peers,
            defaults,
            groups,
            channels,
            metadata,
            metadata_sm,
            partitions: std::sync::RwLock::default(),
            reconciling: tokio::sync::Mutex::new(()),
            reconciled: watch::channel(0).0,
            stop,
        });
        tokio::spawn(Self::follow(node.clone()));
        Ok(node)
    }

    /// This broker's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The peer-facing gRPC service for every group on this broker.
    pub fn peer_service(&self) -> PeerService {
        PeerService::new(self.groups.clone())
    }

    /// The metadata as applied here.
    pub fn state(&self) -> ClusterState {
        self.metadata_sm.app()
    }

    /// Notified whenever this broker applies a metadata change.
    pub fn watch_state(&self) -> watch::Receiver<u64> {
        self.metadata_sm.watch_high_watermark()
    }

    /// The broker leading the metadata group, as known here.
    pub fn metadata_leader(&self) -> Option<u32> {
        self.metadata
            .metrics()
            .borrow()
            .current_leader
            .map(|l| l as u32)
    }

    /// The configured brokers (id → address).
    pub fn peers(&self) -> &BTreeMap<u32, String> {
        &self.peers
    }

    /// A configured peer's address.
    pub fn peer_address(&self, id: u32) -> Option<&str> {
        self.peers.get(&id).map(String::as_str)
    }

    /// Every partition replica running on this broker.
    pub async fn partitions(&self) -> Vec<Arc<ReplicatedPartition>> {
        self.running().values().cloned().collect()
    }

    /// Notified after each time the running replicas were brought in line with the
    /// metadata.
    pub fn watch_reconciled(&self) -> watch::Receiver<u64> {
        self.reconciled.subscribe()
    }

    fn running(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<(String, u32), Arc<ReplicatedPartition>>> {
        self.partitions.read().unwrap_or_else(|e| e.into_inner())
    }

    fn running_mut(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, u32), Arc<ReplicatedPartition>>> {
        self.partitions.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Fault injection for tests: cuts this broker's links to the given brokers (every
    /// Raft RPC to them fails as unreachable); an empty list heals them.
    pub fn cut_links(&self, to: &[u32]) {
        let cut = to
            .iter()
            .filter_map(|id| self.peers.get(id).cloned())
            .collect();
        self.channels.set_cut(cut);
    }

    /// Proposes a metadata change and waits until it is committed and applied on the
    /// metadata leader; a broker that does not lead the metadata sends it on to the
    /// leader over the peer service.
    pub async fn propose(&self, cmd: &Command) -> Result<(), BrokerError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let batch = cmd.to_batch(now);
        let mut result = self
            .metadata
            .client_write(BatchData(batch.clone()))
            .await
            .map(|r| r.data);
        if let Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) = &result {
            if let Some(leader) = f.leader_id.filter(|&l| l != self.id as u64) {
                let address = self.peer_address(leader as u32).ok_or_else(|| {
                    BrokerError::Unavailable(format!("metadata leader {leader} has no address"))
                })?;
                result = self
                    .channels
                    .propose_metadata(address, batch)
                    .await
                    .map_err(|e| {
                        BrokerError::Unavailable(format!("metadata leader {leader}: {e}"))
                    })?;
            }
        }
        match result {
            Ok(AppendResult { error: None, .. }) => Ok(()),
            Ok(AppendResult { error: Some(e), .. }) => Err(match e {
                MetadataError::TopicExists(name) => BrokerError::TopicExists(name),
                MetadataError::UnknownTopic(name) => BrokerError::UnknownTopic(name),
                other => BrokerError::InvalidRequest(other.to_string()),
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(match f.leader_id {
                    None => BrokerError::Unavailable(
                        "the cluster metadata has no leader (election in progress)".into(),
                    ),
                    leader => BrokerError::NotLeader {
                        what: "cluster metadata".into(),
                        leader,
                    },
                })
            }
            Err(e) => Err(BrokerError::Unavailable(format!("metadata: {e}"))),
        }
    }

    /// This broker's replica of a partition, once started.
    pub async fn partition(&self, topic: &str, partition: u32) -> Option<Arc<ReplicatedPartition>> {
        self.running().get(&(topic.to_string(), partition)).cloned()
    }

    /// Stops every group this broker runs and syncs their logs.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let _reconciling = self.reconciling.lock().await;
        let stopping: Vec<_> = self.running_mut().drain().collect();
        for (_, p) in stopping {
            let _ = p.raft.shutdown().await;
            if let Err(e) = p.with_log(|log| log.flush()) {
                tracing::warn!(topic = %p.topic, partition = p.partition, "final sync: {e}");
            }
        }
        let _ = self.metadata.shutdown().await;
    }

    /// Reconciles the running partition groups with the metadata whenever it changes;
    /// on the metadata leader, also registers every configured broker.
    async fn follow(node: Arc<Self>) {
        let mut applied = node.metadata_sm.watch_high_watermark();
        let mut metrics = node.metadata.metrics();
        let mut stop = node.stop.subscribe();
        // After a failed reconciliation (a full disk, say) it is retried on a timer as
        // well, since the metadata may not change again for a long time.
        let mut retry = None;
        loop {
            retry = match node.reconcile().await {
                Ok(()) => None,
                Err(e) => {
                    let after = retry.map_or(RECONCILE_RETRY_MIN, |d: Duration| {
                        (d * 2).min(RECONCILE_RETRY_MAX)
                    });
                    tracing::warn!(
                        broker = node.id,
                        "reconciling partitions (retry in {after:?}): {e}"
                    );
                    Some(after)
                }
            };
            if node.metadata_leader() == Some(node.id) {
                node.register_brokers().await;
            }
            let timer = tokio::time::sleep(retry.unwrap_or_default());
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                changed = metrics.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
                _ = timer, if retry.is_some() => {}
            }
        }
    }

    /// Proposes a `RegisterBroker` for every peer the metadata does not know (yet) at
    /// its configured address.
    async fn register_brokers(&self) {
        let state = self.metadata_sm.app();
        for (id, address) in &self.peers {
            if state.brokers.get(id).map(|b| &b.address) == Some(address) {
                continue;
            }
            let cmd = Command::RegisterBroker {
                id: *id,
                address: address.clone(),
            };
            if let Err(e) = self.propose(&cmd).await {
                tracing::debug!(broker = self.id, "registering broker {id}: {e}");
                return;
            }
        }
    }

    async fn reconcile(&self) -> Result<(), BrokerError> {
        let _reconciling = self.reconciling.lock().await;
        if *self.stop.borrow() {
            return Ok(());
        }
        let result = self.reconcile_now().await;
        self.reconciled.send_modify(|n| *n += 1);
        result
    }

    /// Starts and stops groups; the map of running replicas is locked only to read or
    /// change it, never while a group opens or stops.
    async fn reconcile_now(&self) -> Result<(), BrokerError> {
        let state = self.metadata_sm.app();
        let wanted: HashMap<(String, u32), &PartitionEntry> = state
            .replicas_on(self.id)
            .into_iter()
            .map(|(t, p, e)| ((t.to_string(), p), e))
            .collect();
        let gone: Vec<Arc<ReplicatedPartition>> = {
            let mut running = self.running_mut();
            let keys: Vec<(String, u32)> = running
                .keys()
                .filter(|k| !wanted.contains_key(*k))
                .cloned()
                .collect();
            keys.iter().filter_map(|k| running.remove(k)).collect()
        };
        for p in gone {
            self.groups.remove(p.group);
            let _ = p.raft.shutdown().await;
            let dir = p.dir.clone();
            let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir))
                .await
                .map_err(internal)
                .and_then(|r| r.map_err(internal));
            if let Err(e) = removed {
                tracing::warn!(topic = %p.topic, partition = p.partition, "removing the data of a deleted replica: {e}");
            }
        }
        // One partition that cannot start (a full disk, a damaged log) must not keep
        // the others from starting: each is tried, and the failures reported together.
        let mut failed = Vec::new();
        for ((topic, partition), entry) in wanted {
            let configs = &state.topics[&topic].configs;
            let existing = self.running().get(&(topic.clone(), partition)).cloned();
            let started = match apply_topic_configs(&self.defaults, configs) {
                Err(e) => Err(BrokerError::InvalidRequest(e)),
                Ok(config) => match existing {
                    Some(p) => {
                        p.update_config(configs, config);
                        Ok(())
                    }
                    None => {
                        self.start_replica(&topic, partition, entry, configs, config)
                            .await
                    }
                },
            };
            if let Err(e) = started {
                failed.push(format!("{topic}-{partition}: {e}"));
            }
        }
        match failed.len() {
            0 => Ok(()),
            n => Err(BrokerError::Unavailable(format!(
                "{n} partition(s) could not start: {}",
                failed.join("; ")
            ))),
        }
    }

    /// Opens this broker's replica of `topic`-`partition` and adds it to the running ones;
    /// the first replica in the list initializes the group.
    async fn start_replica(
        &self,
        topic: &str,
        partition: u32,
        entry: &PartitionEntry,
        configs: &BTreeMap<String, String>,
        config: LogConfig,
    ) -> Result<(), BrokerError> {
        let dir = self.data_dir.join(format!("{topic}-{partition}"));
        let segment_bytes = config.segment_bytes;
        let (raft, log, sm, local_acks, entries) =
            open_group(self.id as u64, entry.group, &dir, config, &self.channels).await?;
        self.groups.insert(entry.group, raft.clone());
        if entry.replicas.first() == Some(&self.id) {
            let replicas = entry.replicas.iter().copied();
            initialize(&raft, members(&self.peers, replicas)).await;
        }
        let reader = log.lock().unwrap_or_else(|e| e.into_inner()).reader();
        let replica = Arc::new(ReplicatedPartition {
            topic: topic.to_string(),
            partition,
            group: entry.group,
            node: self.id as u64,
            raft,
            log,
            reader,
            sm,
            dir,
            configs: Mutex::new(configs.clone()),
            segment_bytes: segment_bytes.into(),
            local_acks,
            entries,
        });
        self.running_mut()
            .insert((topic.to_string(), partition), replica);
        Ok(())
    }
}

fn members(
    peers: &BTreeMap<u32, String>,
    ids: impl Iterator<Item = u32>,
) -> BTreeMap<u64, BasicNode> {
    ids.filter_map(|id| {
        peers
            .get(&id)
            .map(|a| (id as u64, BasicNode::new(a.clone())))
    })
    .collect()
}
