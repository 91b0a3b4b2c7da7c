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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use super::{ClusterState, Command, MetadataStateMachine, PartitionEntry};
use crate::config::apply_topic_configs;
use crate::error::BrokerError;
use crate::log::{discard, LogConfig};
use crate::raft::group::{initialize, open_group, OpenedGroup};
use crate::raft::liveness::Liveness;
use crate::raft::network::{PeerChannels, PeerService, RaftGroups};
use crate::raft::types::{typ, AppendResult, BatchData};
use crate::raft::votes::VoteJournal;
use crate::tasks::Tasks;

pub use super::replica::{Landed, ReplicatedPartition, COMMIT_TIMEOUT};
pub use crate::raft::METADATA_GROUP;
/// First wait before a failed reconciliation is retried; it doubles up to the maximum.
const RECONCILE_RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between retries of a failed reconciliation.
const RECONCILE_RETRY_MAX: Duration = Duration::from_secs(10);
/// How often a broker running a moving partition checks whether it should drive it.
const MOVE_RECHECK: Duration = Duration::from_millis(500);
/// Replicas opened at once while reconciling: opening is mostly waiting (on the
/// blocking pool, on each group's Raft task), so more than the cores. 64 rather than 16
/// took the opening of 5,000 replicas per broker (3 brokers, 2 cores) from 6.5-9.5 s to
/// 4.7-7.1 s, but left more memory behind and slowed a creation's first writes; 32 is
/// between.
const PARALLEL_STARTS: usize = 32;
/// How long a removed replica's files stay before they are freed (reads in flight end).
const DISCARD_DELAY: Duration = Duration::from_secs(5);
/// Bytes of a removed replica freed in one step, and the pause between steps: 1 GiB is
/// gone in about 1.5 s without stalling the disk for the partitions that stay.
const DISCARD_STEP: u64 = 32 << 20;
const DISCARD_PAUSE: Duration = Duration::from_millis(40);
/// The metadata group's directory.
pub const METADATA_DIR: &str = "__cluster_metadata-0";

fn internal(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(e.to_string())
}

/// This broker's membership in the cluster.
pub struct ClusterNode {
    id: u32,
    data_dir: PathBuf,
    peers: BTreeMap<u32, String>,
    defaults: LogConfig,
    groups: RaftGroups,
    channels: PeerChannels,
    metadata: typ::Raft,
    metadata_sm: MetadataStateMachine,
    /// Running replicas; read on every request, so never held across an await.
    partitions: std::sync::RwLock<HashMap<(String, u32), Arc<ReplicatedPartition>>>,
    /// Bumped whenever `partitions` may have changed (steering copies it only then).
    partitions_version: std::sync::atomic::AtomicU64,
    /// Serializes reconciling and shutting down (which do hold it across awaits).
    reconciling: tokio::sync::Mutex<()>,
    /// Bumped after every reconciliation.
    reconciled: watch::Sender<u64>,
    /// The broker's token and tracker: the follower loop, flushers.
    tasks: Tasks,
    /// Partitions this broker is moving (as their leader) now.
    moving: Mutex<HashSet<(String, u32)>>,
    /// Set once the metadata shows this broker decommissioned.
    decommissioned: watch::Sender<bool>,
    /// Which peers are up and what they lead (node heartbeats).
    liveness: Arc<Liveness>,
    /// The partition groups' votes, synced together.
    votes: VoteJournal,
}

/// How a broker comes to its cluster's metadata group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Founding {
    /// One of the configured peers that form the metadata group (the lowest id
    /// initializes it on first start); without other peers, a cluster of one.
    Peer,
    /// A broker that joined (or is joining) a running cluster: it follows the metadata
    /// group as a learner and never initializes one of its own.
    Joiner,
}

impl ClusterNode {
    /// Starts the metadata group over `peers` (broker id → peer address, this broker
    /// included) and follows it. What the node spawns belongs to `tasks`.
    pub async fn start(
        id: u32,
        data_dir: &Path,
        peers: BTreeMap<u32, String>,
        defaults: LogConfig,
        tasks: Tasks,
        founding: Founding,
        tls: Option<Arc<crate::tls::Tls>>,
    ) -> Result<Arc<Self>, BrokerError> {
        if !peers.contains_key(&id) {
            return Err(BrokerError::InvalidRequest(format!(
                "broker {id} is not in its own peer list"
            )));
        }
        let channels = PeerChannels::default();
        if let Some(tls) = tls {
            channels.set_tls(tls);
        }
        let liveness = Liveness::new(id as u64);
        channels.set_liveness(liveness.clone());
        let groups = RaftGroups::default();
        groups.set_liveness(liveness.clone());
        let opened = open_group::<ClusterState>(
            id as u64,
            METADATA_GROUP,
            &data_dir.join(METADATA_DIR),
            defaults.clone(),
            &channels,
            &tasks,
            None,
        )
        .await
        .map_err(internal)?;
        let (metadata, metadata_sm) = (opened.raft, opened.sm);
        let votes = VoteJournal::open(data_dir).map_err(|e| {
            internal(format!(
                "opening the vote journal in {}: {e}",
                data_dir.display()
            ))
        })?;
        groups.insert(METADATA_GROUP, metadata.clone());
        if founding == Founding::Peer && peers.keys().next() == Some(&id) {
            initialize(&metadata, members(&peers, peers.keys().copied())).await;
        }

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
            partitions_version: std::sync::atomic::AtomicU64::new(0),
            reconciling: tokio::sync::Mutex::new(()),
            reconciled: watch::channel(0).0,
            tasks,
            moving: Mutex::default(),
            decommissioned: watch::channel(false).0,
            liveness,
            votes,
        });
        match discard::leftovers(data_dir) {
            Ok(dirs) => dirs
                .into_iter()
                .for_each(|d| node.discard_later(d, Duration::ZERO)),
            Err(e) => tracing::warn!("looking for replicas left to discard: {e}"),
        }
        node.tasks.spawn(Self::follow(node.clone()));
        node.tasks.spawn(Self::steer(node.clone()));
        node.tasks.spawn(Self::scrub(node.clone()));
        Ok(node)
    }

    /// Completes once the metadata shows this broker decommissioned (its partitions
    /// moved away and the cluster removed it): it should then stop and delete its data.
    pub async fn decommissioned(&self) {
        let mut w = self.decommissioned.subscribe();
        let _ = w.wait_for(|d| *d).await;
    }

    /// Whether [`decommissioned`](Self::decommissioned) has completed.
    pub fn is_decommissioned(&self) -> bool {
        *self.decommissioned.borrow()
    }

    /// This broker's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The peer-facing gRPC service for every group on this broker; it also takes join
    /// requests of new brokers.
    pub fn peer_service(self: &Arc<Self>) -> PeerService {
        let node = Arc::downgrade(self);
        PeerService::new(self.groups.clone())
            .with_tasks(self.tasks.clone())
            .with_liveness(self.liveness.clone())
            .with_joins(Arc::new(move |id, address| {
                let node = node.clone();
                Box::pin(async move {
                    match node.upgrade() {
                        Some(n) => n.handle_join(id, address).await.map_err(Into::into),
                        None => Err(tonic::Status::unavailable("the broker is stopping")),
                    }
                })
            }))
    }

    /// Which peers are up and which groups they lead, as heard here.
    /// The broker's data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub(super) fn liveness(&self) -> &Arc<Liveness> {
        &self.liveness
    }

    /// The brokers to send node heartbeats to: every registered broker not removed,
    /// and the configured peers (id → address; this broker included).
    pub(super) fn heartbeat_targets(&self) -> Vec<(u32, String)> {
        let mut targets: BTreeMap<u32, String> = self.peers.clone();
        self.metadata_sm.with_app(|state| {
            for (id, b) in &state.brokers {
                targets.insert(*id, b.address.clone());
            }
            for id in &state.removed {
                targets.remove(id);
            }
        });
        targets.into_iter().collect()
    }

    /// Every running replica, copied out of the map.
    pub(super) fn running_replicas(&self) -> Vec<Arc<ReplicatedPartition>> {
        self.running().values().cloned().collect()
    }

    /// The metadata group's handle.
    pub(super) fn metadata_raft(&self) -> &typ::Raft {
        &self.metadata
    }

    /// The channels to other brokers.
    pub(super) fn channels(&self) -> &PeerChannels {
        &self.channels
    }

    /// The metadata as applied here.
    pub fn state(&self) -> ClusterState {
        self.metadata_sm.app()
    }

    /// Reads the metadata in place (no copy); `f` must not block.
    pub fn with_state<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        self.metadata_sm.with_app(f)
    }

    /// Notified whenever this broker applies a metadata change.
    pub fn watch_state(&self) -> watch::Receiver<u64> {
        self.metadata_sm.watch_high_watermark()
    }

    /// The brokers voting in the metadata group, as known here.
    pub fn metadata_voters(&self) -> Vec<u32> {
        let m = self.metadata.metrics();
        let m = m.borrow();
        m.membership_config.voter_ids().map(|v| v as u32).collect()
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

    /// Broker `id`'s address as registered in the metadata (else as configured).
    pub fn broker_address(&self, id: u32) -> Option<String> {
        // Read in place: this runs for every replica started, and a copy of the
        // metadata of thousands of partitions each time made starts quadratic.
        self.metadata_sm
            .with_app(|state| state.brokers.get(&id).map(|b| b.address.clone()))
            .or_else(|| self.peer_address(id).map(str::to_string))
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
        let guard = self.partitions.write().unwrap_or_else(|e| e.into_inner());
        self.partitions_version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        guard
    }

    /// A number that changes whenever the running replicas may have changed.
    pub(crate) fn running_version(&self) -> u64 {
        self.partitions_version
            .load(std::sync::atomic::Ordering::Acquire)
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
        self.propose_at(cmd).await.map(|_| ())
    }

    /// Allocates a producer id (see [`Command::InitProducerId`]).
    pub async fn init_producer_id(&self) -> Result<i64, BrokerError> {
        let at = self.propose_at(&Command::InitProducerId).await?;
        i64::try_from(at).map_err(|_| BrokerError::Internal("producer ids ran out".into()))
    }

    /// Proposes a metadata command (on the metadata leader, wherever it is); returns the
    /// offset the command landed at in the metadata log.
    async fn propose_at(&self, cmd: &Command) -> Result<u64, BrokerError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let batch = cmd.to_batch(now);
        let mut result = self
            .metadata
            .client_write(BatchData(batch.clone()))
            .await
            .map(|r| r.data);
        if let Err(typ::RaftError::APIError(typ::ClientWriteError::ForwardToLeader(f))) = &result {
            if let Some(leader) = f.leader_id.filter(|&l| l != self.id as u64) {
                let address = f
                    .leader_node
                    .as_ref()
                    .map(|n| n.addr.clone())
                    .or_else(|| self.broker_address(leader as u32))
                    .ok_or_else(|| {
                        BrokerError::Unavailable(format!("metadata leader {leader} has no address"))
                    })?;
                result = self
                    .channels
                    .propose_metadata(&address, batch)
                    .await
                    .map_err(|e| {
                        BrokerError::Unavailable(format!("metadata leader {leader}: {e}"))
                    })?;
            }
        }
        match result {
            Ok(AppendResult {
                error: None,
                base_offset,
                ..
            }) => Ok(base_offset),
            Ok(AppendResult { error: Some(e), .. }) => Err(e.into()),
            Err(typ::RaftError::APIError(typ::ClientWriteError::ForwardToLeader(f))) => {
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

    /// This broker's replica of a partition, if it runs.
    pub(super) fn running_replica(
        &self,
        topic: &str,
        partition: u32,
    ) -> Option<Arc<ReplicatedPartition>> {
        self.running().get(&(topic.to_string(), partition)).cloned()
    }

    /// Marks a partition as being moved by this broker; false if it already is.
    pub(super) fn begin_move(&self, topic: &str, partition: u32) -> bool {
        let mut moving = self.moving.lock().unwrap_or_else(|e| e.into_inner());
        moving.insert((topic.to_string(), partition))
    }

    /// Clears [`begin_move`](Self::begin_move)'s mark.
    pub(super) fn end_move(&self, topic: &str, partition: u32) {
        let mut moving = self.moving.lock().unwrap_or_else(|e| e.into_inner());
        moving.remove(&(topic.to_string(), partition));
    }

    /// The broker's token and tracker.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Stops every group this broker runs and syncs their logs.
    pub async fn shutdown(&self) {
        self.tasks.stop();
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
            let mut pending = false;
            if node.metadata_leader() == Some(node.id) {
                node.register_brokers().await;
                pending = node.balance_metadata_voters();
                pending |= node.drive_decommissions();
            }
            if node.metadata_sm.app().removed.contains(&node.id) {
                node.decommissioned.send_replace(true);
            }
            node.quiet_metadata_if_alone();
            // A move in progress is looked at again soon: its partition's leadership may
            // come here, or a mover may have stopped before finishing.
            if node.drive_moves() || pending {
                retry = Some(retry.map_or(MOVE_RECHECK, |r| r.min(MOVE_RECHECK)));
            }
            let timer = tokio::time::sleep(retry.unwrap_or_default());
            // The metadata group's metrics change with every heartbeat; only a change of
            // its leader, term or membership is worth a pass over every partition.
            let seen = metadata_shape(&metrics.borrow_and_update());
            let shape_changed = async {
                loop {
                    if metrics.changed().await.is_err() {
                        return false;
                    }
                    if metadata_shape(&metrics.borrow_and_update()) != seen {
                        return true;
                    }
                }
            };
            tokio::select! {
                changed = applied.changed() => if changed.is_err() { return },
                changed = shape_changed => if !changed { return },
                // Checked here, not mid-reconciliation: a group being opened is either
                // left running and listed (shutdown stops it) or not opened at all.
                _ = node.tasks.stopped() => return,
                _ = timer, if retry.is_some() => {}
            }
        }
    }

    /// Proposes a `RegisterBroker` for every peer the metadata does not know (yet) at
    /// its configured address.
    async fn register_brokers(&self) {
        let state = self.metadata_sm.app();
        for (id, address) in &self.peers {
            let known = state.brokers.get(id).map(|b| &b.address) == Some(address);
            if known || state.removed.contains(id) {
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
        if self.tasks.is_stopped() {
            return Ok(());
        }
        let result = self.reconcile_now().await;
        if result.is_ok() {
            // Every replica the metadata (applied up to its commit point when the
            // metadata group opened) puts here runs: peers need not wait for us.
            self.liveness.set_opening(false);
        }
        self.reconciled.send_modify(|n| *n += 1);
        result
    }

    /// Frees a set-aside replica directory in steps after `delay` (reads in flight end
    /// first, as with Kafka's `file.delete.delay.ms`); a broker stopped before the end
    /// takes it up again when it starts.
    fn discard_later(&self, dir: PathBuf, delay: Duration) {
        self.tasks.spawn_until_stopped(async move {
            tokio::time::sleep(delay).await;
            let shown = dir.display().to_string();
            let opened = tokio::task::spawn_blocking(move || discard::Discard::open(dir)).await;
            let mut discard = match opened {
                Ok(Ok(d)) => d,
                Ok(Err(e)) => return tracing::warn!("discarding {shown}: {e}"),
                Err(e) => return tracing::warn!("discarding {shown}: {e}"),
            };
            loop {
                let stepped = tokio::task::spawn_blocking(move || {
                    let more = discard.step(DISCARD_STEP);
                    (discard, more)
                })
                .await;
                match stepped {
                    Ok((d, Ok(true))) => discard = d,
                    Ok((_, Ok(false))) => return,
                    Ok((_, Err(e))) => return tracing::warn!("discarding {shown}: {e}"),
                    Err(e) => return tracing::warn!("discarding {shown}: {e}"),
                }
                tokio::time::sleep(DISCARD_PAUSE).await;
            }
        });
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
            let aside = tokio::task::spawn_blocking(move || discard::set_aside(&dir))
                .await
                .map_err(internal)
                .and_then(|r| r.map_err(internal));
            match aside {
                Ok(aside) => self.discard_later(aside, DISCARD_DELAY),
                Err(e) => {
                    tracing::warn!(topic = %p.topic, partition = p.partition, "removing the data of a deleted replica: {e}")
                }
            }
        }
        // One partition that cannot start (a full disk, a damaged log) must not keep
        // the others from starting: each is tried, and the failures reported together.
        // Replicas open a few at a time (each opens a log and starts a Raft group: I/O
        // and a little CPU), so thousands of partitions start in seconds.
        let starts: Vec<(String, u32, PartitionEntry)> = wanted
            .into_iter()
            .map(|((t, p), e)| (t, p, e.clone()))
            .collect();
        let new = starts
            .iter()
            .filter(|(t, p, _)| !self.running().contains_key(&(t.clone(), *p)))
            .count();
        let began = std::time::Instant::now();
        let starts = starts
            .into_iter()
            .map(|(topic, partition, entry)| self.start_or_update(&state, topic, partition, entry));
        let failed: Vec<String> = futures::stream::iter(starts)
            .buffer_unordered(PARALLEL_STARTS)
            .filter_map(|f| async move { f })
            .collect()
            .await;
        if new > 0 {
            tracing::info!(
                broker = self.id,
                "started {new} replica(s) in {:.2} s",
                began.elapsed().as_secs_f64()
            );
        }
        match failed.len() {
            0 => Ok(()),
            n => Err(BrokerError::Unavailable(format!(
                "{n} partition(s) could not start: {}",
                failed.join("; ")
            ))),
        }
    }

    /// Applies the topic's configs to a running replica, or starts it; returns why it
    /// could not, if it could not.
    async fn start_or_update(
        &self,
        state: &ClusterState,
        topic: String,
        partition: u32,
        entry: PartitionEntry,
    ) -> Option<String> {
        let configs = &state.topics[&topic].configs;
        let existing = self.running().get(&(topic.clone(), partition)).cloned();
        let started = match apply_topic_configs(&self.defaults, configs) {
            Err(e) => Err(BrokerError::InvalidRequest(e)),
            Ok(config) => match existing {
                Some(p) => {
                    p.update_config(configs, config);
                    p.set_preferred_replicas(&entry.replicas);
                    super::quiesce::elect_if_orphaned(&p.raft, &entry, self.id).await;
                    Ok(())
                }
                None => {
                    self.start_replica(&topic, partition, &entry, configs, config)
                        .await
                }
            },
        };
        started.err().map(|e| format!("{topic}-{partition}: {e}"))
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
        let flushes_on_interval = matches!(config.flush, crate::log::FlushPolicy::Interval(_));
        let OpenedGroup {
            raft,
            log,
            sm,
            local_acks,
            entries,
        } = open_group(
            self.id as u64,
            entry.group,
            &dir,
            config,
            &self.channels,
            &self.tasks,
            Some(&self.votes),
        )
        .await
        .map_err(internal)?;
        self.groups.insert(entry.group, raft.clone());
        if entry.replicas.first() == Some(&self.id) {
            let replicas = entry.replicas.iter().copied();
            let members = replicas
                .filter_map(|b| Some((b as u64, typ::Node::new(self.broker_address(b)?))))
                .collect();
            initialize(&raft, members).await;
        }
        super::quiesce::elect_if_orphaned(&raft, entry, self.id).await;
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
            flushes_on_interval: flushes_on_interval.into(),
            local_acks,
            entries,
            preferred: Mutex::new(entry.replicas.clone()),
            liveness: self.liveness.clone(),
            sequencer: Default::default(),
            traffic: Default::default(),
        });
        self.running_mut()
            .insert((topic.to_string(), partition), replica);
        Ok(())
    }
}

/// What the follow loop reacts to in the metadata group's metrics: its leader, term,
/// state and membership, and while it has learners, how far each has come (a caught-up
/// learner is promoted to voter).
fn metadata_shape(m: &typ::RaftMetrics) -> MetadataShape {
    let membership = m.membership_config.membership();
    let members: Vec<u64> = membership.nodes().map(|(id, _)| *id).collect();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let learners = members
        .iter()
        .filter(|id| !voters.contains(id))
        .map(|id| {
            let matched = m.replication.as_ref().and_then(|r| r.get(id).copied());
            (*id, matched.flatten().map(|l| l.index))
        })
        .collect();
    (
        m.current_leader,
        m.current_term,
        m.state,
        members,
        voters,
        learners,
    )
}

type MetadataShape = (
    Option<u64>,
    u64,
    typ::ServerState,
    Vec<u64>,
    Vec<u64>,
    Vec<(u64, Option<u64>)>,
);

fn members(
    peers: &BTreeMap<u32, String>,
    ids: impl Iterator<Item = u32>,
) -> BTreeMap<u64, typ::Node> {
    ids.filter_map(|id| {
        peers
            .get(&id)
            .map(|a| (id as u64, typ::Node::new(a.clone())))
    })
    .collect()
}
