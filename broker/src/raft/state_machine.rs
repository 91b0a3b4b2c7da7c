//! The partition's state machine: offsets and membership, never data.
//!
//! Applying an entry moves the high watermark to the end of that entry's records: the
//! records themselves are already in the partition log, written when the entry was
//! appended. A snapshot is the applied log id, the membership and the high watermark.
//!
//! A group whose records are commands (the metadata group) adds an [`Applier`] that folds
//! each committed batch into its state; that state is then part of the snapshot.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError, StoredMembership};
use rafka_proto::batch::BatchHeader;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::entry::term_of;
use super::log_store::{EntryReader, RaftStateHandle};
use super::state_file::write_atomic;
use super::types::{typ, AppendResult, BatchData, TypeConfig};
use crate::cluster::MetadataError;
use crate::log::PartitionLog;

/// State built from a group's committed record batches, beyond offsets.
pub trait Applier: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// True when replaying entries already folded in leaves the state unchanged (offsets
    /// only, or a monotonic fold), so a snapshot can be taken as of an earlier applied
    /// entry with the state as of now: replaying the entries after it rebuilds the same.
    const REPLAY_SAFE: bool = false;

    /// Folds in one committed data batch; returns why it was refused, if it was (it then
    /// changes nothing).
    fn apply_batch(&mut self, batch: &[u8]) -> Option<MetadataError>;
}

/// No state beyond offsets: an ordinary partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Offsets;

impl Applier for Offsets {
    const REPLAY_SAFE: bool = true;

    fn apply_batch(&mut self, _batch: &[u8]) -> Option<MetadataError> {
        None
    }
}

/// What a snapshot holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmData<A> {
    last_applied: Option<typ::LogId>,
    membership: typ::StoredMembership,
    high_watermark: u64,
    app: A,
}

#[derive(Default)]
struct SmState<A> {
    data: SmData<A>,
    snapshot: Option<(typ::SnapshotMeta, Vec<u8>)>,
    snapshots_built: u64,
}

fn sm_err(e: impl std::fmt::Display) -> typ::StorageError {
    StorageIOError::write_state_machine(AnyError::error(e.to_string())).into()
}

/// Name of the snapshot file in the partition directory.
pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// What the snapshot file holds.
#[derive(Serialize, Deserialize)]
#[serde(bound = "A: Applier")]
struct SnapshotFile<A> {
    meta: typ::SnapshotMeta,
    data: SmData<A>,
}

/// Where a state machine keeps its snapshots, and the log it resets when a snapshot
/// from a leader far ahead replaces it.
#[derive(Clone)]
pub struct SmStorage {
    /// The partition directory.
    pub dir: PathBuf,
    /// The partition log.
    pub log: Arc<Mutex<PartitionLog>>,
    /// Set by the log store when a snapshot purged past its last entry: the local records
    /// are not a prefix of the leader's any more.
    pub reset_pending: Arc<AtomicBool>,
    /// The log's entries (to take a snapshot at an earlier entry).
    pub entries: EntryReader,
    /// Raft index the next snapshot is taken at (see `snapshot_at`); `u64::MAX`: none.
    pub snapshot_at: Arc<AtomicU64>,
    /// The log store's `raft.json` (renumbered when the log is reset).
    pub raft_state: RaftStateHandle,
}

/// Writes the snapshot file of an ordinary partition whose state as of `meta` is
/// `high_watermark` (adopting a log written without Raft, see `raft::adopt`).
pub fn write_snapshot_file(
    dir: &std::path::Path,
    meta: &typ::SnapshotMeta,
    high_watermark: u64,
) -> std::io::Result<()> {
    let file = SnapshotFile::<Offsets> {
        meta: meta.clone(),
        data: SmData {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            high_watermark,
            app: Offsets,
        },
    };
    let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    write_atomic(dir, SNAPSHOT_FILE, &bytes)
}

/// `SmStorage::snapshot_at` when no index was asked for.
pub const NO_TARGET: u64 = u64::MAX;

/// The state machine of one partition; cheap to clone (shared state).
#[derive(Clone)]
pub struct PartitionStateMachine<A: Applier = Offsets> {
    state: Arc<Mutex<SmState<A>>>,
    high_watermark: watch::Sender<u64>,
    storage: Option<SmStorage>,
    counts: Arc<SmCounts>,
}

/// Events the state machine counts for `/metrics`, since it opened.
#[derive(Debug, Default)]
pub struct SmCounts {
    /// Leaders elected: the blank entry each new leader commits first (entries replayed
    /// when the replica opens are counted too).
    pub leader_elections: AtomicU64,
    /// Snapshots installed from a leader (the replica was behind its log start).
    pub snapshot_installs: AtomicU64,
}

impl<A: Applier> Default for PartitionStateMachine<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Applier> PartitionStateMachine<A> {
    /// An empty state machine that keeps its snapshots in memory only.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            high_watermark: watch::channel(0).0,
            storage: None,
            counts: Arc::default(),
        }
    }

    /// A state machine whose snapshots are files in `storage.dir`, restored from the last
    /// one: a restart replays only the entries after it.
    pub fn open(storage: SmStorage) -> Result<Self, typ::StorageError> {
        let mut state = SmState::<A>::default();
        match std::fs::read(storage.dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let file: SnapshotFile<A> = serde_json::from_slice(&bytes).map_err(sm_err)?;
                let data = serde_json::to_vec(&file.data).map_err(sm_err)?;
                state.data = file.data;
                state.snapshot = Some((file.meta, data));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(sm_err(e)),
        }
        let hw = state.data.high_watermark;
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            high_watermark: watch::channel(hw).0,
            storage: Some(storage),
            counts: Arc::default(),
        })
    }

    /// Writes the snapshot file (when the state machine has storage).
    fn persist(&self, meta: &typ::SnapshotMeta, data: &SmData<A>) -> Result<(), typ::StorageError> {
        let Some(storage) = &self.storage else {
            return Ok(());
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            data: data.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(sm_err)?;
        write_atomic(&storage.dir, SNAPSHOT_FILE, &bytes).map_err(sm_err)
    }

    /// Leader elections and snapshot installs seen here.
    pub fn counts(&self) -> &SmCounts {
        &self.counts
    }

    /// Follows the high watermark (the end of the last applied entry's records).
    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        self.high_watermark.subscribe()
    }

    /// The high watermark now.
    pub fn high_watermark(&self) -> u64 {
        self.lock().data.high_watermark
    }

    /// The applier's state now.
    pub fn app(&self) -> A {
        self.lock().data.app.clone()
    }

    /// Reads the applier's state in place (no copy); `f` must not block.
    pub fn with_app<R>(&self, f: impl FnOnce(&A) -> R) -> R {
        f(&self.lock().data.app)
    }

    fn lock(&self) -> MutexGuard<'_, SmState<A>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `data` (the state at some applied entry) the current snapshot.
    fn snapshot_from(
        state: &mut SmState<A>,
        data: SmData<A>,
    ) -> Result<typ::Snapshot, typ::StorageError> {
        let bytes = serde_json::to_vec(&data).map_err(sm_err)?;
        state.snapshots_built += 1;
        let meta = openraft::SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                data.last_applied.map_or(0, |l| l.index),
                state.snapshots_built
            ),
        };
        state.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(openraft::Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }

    /// Asks the next snapshot to be taken at raft index `index` (already applied) rather
    /// than at the last applied entry: retention purges exactly up to there, so a
    /// replica that needs the snapshot restarts at the leader's log start and gets every
    /// retained record through the log.
    pub fn snapshot_at(&self, index: u64) {
        if let Some(storage) = &self.storage {
            storage.snapshot_at.store(index, Ordering::SeqCst);
        }
    }

    /// The state as of raft index `index`, if it can be rebuilt from the log: a
    /// replay-safe applier (its state as of now), and no membership change after it.
    fn state_at(&self, data: &SmData<A>, index: u64) -> Option<SmData<A>> {
        let storage = self.storage.as_ref()?;
        let applied = data.last_applied?;
        let membership_index = data.membership.log_id().map_or(0, |l| l.index);
        if index >= applied.index || membership_index > index || !A::REPLAY_SAFE {
            return None;
        }
        let batch = storage.entries.batch(index)?;
        let term = term_of(&batch)?;
        let h = BatchHeader::parse(&batch).ok()?;
        Some(SmData {
            last_applied: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(term, 0),
                index,
            )),
            membership: data.membership.clone(),
            high_watermark: h.next_offset() as u64,
            app: data.app.clone(),
        })
    }
}

impl<A: Applier> RaftSnapshotBuilder<TypeConfig> for PartitionStateMachine<A> {
    async fn build_snapshot(&mut self) -> Result<typ::Snapshot, typ::StorageError> {
        let target = self.storage.as_ref().map_or(NO_TARGET, |s| {
            s.snapshot_at.swap(NO_TARGET, Ordering::SeqCst)
        });
        let (snapshot, data) = {
            let mut s = self.lock();
            let at = (target != NO_TARGET)
                .then(|| self.state_at(&s.data, target))
                .flatten();
            let data = at.unwrap_or_else(|| s.data.clone());
            (Self::snapshot_from(&mut s, data.clone())?, data)
        };
        self.persist(&snapshot.meta, &data)?;
        Ok(snapshot)
    }
}

impl<A: Applier> RaftStateMachine<TypeConfig> for PartitionStateMachine<A> {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<typ::LogId>, typ::StoredMembership), typ::StorageError> {
        let s = self.lock();
        Ok((s.data.last_applied, s.data.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<AppendResult>, typ::StorageError>
    where
        I: IntoIterator<Item = typ::Entry> + Send,
        I::IntoIter: Send,
    {
        let mut s = self.lock();
        let mut out = Vec::new();
        for e in entries {
            s.data.last_applied = Some(e.log_id);
            let hw = s.data.high_watermark;
            let result = match e.payload {
                EntryPayload::Normal(BatchData(batch)) => {
                    let h = BatchHeader::parse(&batch).map_err(sm_err)?;
                    AppendResult {
                        base_offset: h.base_offset as u64,
                        next_offset: h.next_offset() as u64,
                        error: s.data.app.apply_batch(&batch),
                    }
                }
                EntryPayload::Blank => {
                    self.counts.leader_elections.fetch_add(1, Ordering::Relaxed);
                    AppendResult {
                        base_offset: hw,
                        next_offset: hw,
                        error: None,
                    }
                }
                EntryPayload::Membership(m) => {
                    s.data.membership = StoredMembership::new(Some(e.log_id), m);
                    AppendResult {
                        base_offset: hw,
                        next_offset: hw,
                        error: None,
                    }
                }
            };
            s.data.high_watermark = result.next_offset.max(hw);
            out.push(result);
        }
        let hw = s.data.high_watermark;
        drop(s);
        self.high_watermark.send_replace(hw);
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, typ::StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &typ::SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), typ::StorageError> {
        let bytes = snapshot.into_inner();
        let data: SmData<A> = serde_json::from_slice(&bytes).map_err(sm_err)?;
        self.counts
            .snapshot_installs
            .fetch_add(1, Ordering::Relaxed);
        let hw = data.high_watermark;
        if let Some(storage) = &self.storage {
            // The leader has no entries for what this replica lacks: like a Kafka follower
            // below its leader's log start, drop the local records and restart at the
            // snapshot's end (records below it stay on the other replicas).
            let mut log = storage.log.lock().unwrap_or_else(|e| e.into_inner());
            let reset = storage.reset_pending.swap(false, Ordering::SeqCst);
            if reset || log.log_end_offset() < hw {
                tracing::info!(dir = %storage.dir.display(), offset = hw, "replica restarts its log at the leader's snapshot");
                log.reset_to(hw).map_err(sm_err)?;
                let next = meta.last_log_id.map_or(0, |l| l.index + 1);
                storage.raft_state.restart_at(next).map_err(sm_err)?;
            }
        }
        {
            let mut s = self.lock();
            s.data = SmData {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                ..data
            };
            s.snapshot = Some((meta.clone(), bytes));
            self.persist(meta, &s.data)?;
        }
        self.high_watermark.send_replace(hw);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<typ::Snapshot>, typ::StorageError> {
        Ok(self
            .lock()
            .snapshot
            .clone()
            .map(|(meta, bytes)| openraft::Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(bytes)),
            }))
    }
}
