//! The partition's state machine: offsets and membership, never data.
//!
//! Applying an entry moves the high watermark to the end of that entry's records: the
//! records themselves are already in the partition log, written when the entry was
//! appended. A snapshot is the applied log id, the membership and the high watermark.
//!
//! A group whose records are commands (the metadata group) adds an [`Applier`] that folds
//! each committed batch into its state; that state is then part of the snapshot.

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError, StoredMembership};
use rafka_proto::batch::BatchHeader;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::types::{typ, AppendResult, BatchData, TypeConfig};

/// State built from a group's committed record batches, beyond offsets.
pub trait Applier: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Folds in one committed data batch; returns why it was refused, if it was (it then
    /// changes nothing).
    fn apply_batch(&mut self, batch: &[u8]) -> Option<String>;
}

/// No state beyond offsets: an ordinary partition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Offsets;

impl Applier for Offsets {
    fn apply_batch(&mut self, _batch: &[u8]) -> Option<String> {
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

/// The state machine of one partition; cheap to clone (shared state).
#[derive(Clone)]
pub struct PartitionStateMachine<A: Applier = Offsets> {
    state: Arc<Mutex<SmState<A>>>,
    high_watermark: watch::Sender<u64>,
}

impl<A: Applier> Default for PartitionStateMachine<A> {
    fn default() -> Self {
        Self::new()
    }
}

impl<A: Applier> PartitionStateMachine<A> {
    /// An empty state machine.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            high_watermark: watch::channel(0).0,
        }
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

    fn lock(&self) -> MutexGuard<'_, SmState<A>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot_of(state: &mut SmState<A>) -> Result<typ::Snapshot, typ::StorageError> {
        let bytes = serde_json::to_vec(&state.data).map_err(sm_err)?;
        state.snapshots_built += 1;
        let meta = openraft::SnapshotMeta {
            last_log_id: state.data.last_applied,
            last_membership: state.data.membership.clone(),
            snapshot_id: format!(
                "{}-{}",
                state.data.last_applied.map_or(0, |l| l.index),
                state.snapshots_built
            ),
        };
        state.snapshot = Some((meta.clone(), bytes.clone()));
        Ok(openraft::Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl<A: Applier> RaftSnapshotBuilder<TypeConfig> for PartitionStateMachine<A> {
    async fn build_snapshot(&mut self) -> Result<typ::Snapshot, typ::StorageError> {
        Self::snapshot_of(&mut self.lock())
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
                EntryPayload::Blank => AppendResult {
                    base_offset: hw,
                    next_offset: hw,
                    error: None,
                },
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
        let hw = data.high_watermark;
        {
            let mut s = self.lock();
            s.data = SmData {
                last_applied: meta.last_log_id,
                membership: meta.last_membership.clone(),
                ..data
            };
            s.snapshot = Some((meta.clone(), bytes));
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
