//! `RaftLogStorage` over the partition log: each Raft entry is one stored batch.
//!
//! Raft indexes are dense while record offsets are not (a control entry takes none), so
//! the store keeps a map from raft index to [`Locator`], rebuilt at open from the batch
//! headers and `raft.json`'s `first_index`. Purging only moves the start of that map: the
//! data stays in the partition log until retention deletes it.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogReader, StorageIOError};
use tokio::sync::oneshot;

use super::entry::{decode, encode, epoch_of, term_of};
use super::flusher::{Flush, Flusher};
use super::state_file::RaftState;
use super::types::{typ, TypeConfig};
use super::votes::VoteJournal;
use crate::log::{Locator, LogReader, PartitionLog};
use crate::metrics::STAGES;
use crate::tasks::Tasks;

/// Where each un-purged entry is stored.
#[derive(Debug, Default)]
struct EntryMap {
    /// Raft index of `locators[0]`.
    first: u64,
    locators: VecDeque<Locator>,
}

impl EntryMap {
    fn end(&self) -> u64 {
        self.first + self.locators.len() as u64
    }

    fn get(&self, index: u64) -> Option<Locator> {
        let i = index.checked_sub(self.first)?;
        self.locators.get(i as usize).copied()
    }
}

fn io_err(e: impl std::fmt::Display) -> typ::StorageError {
    StorageIOError::write_logs(AnyError::error(e.to_string())).into()
}

fn read_err(e: impl std::fmt::Display) -> typ::StorageError {
    StorageIOError::read_logs(AnyError::error(e.to_string())).into()
}

/// Reads entries concurrently with the store (replication streams use these).
#[derive(Clone)]
pub struct EntryReader {
    map: Arc<RwLock<EntryMap>>,
    reader: LogReader,
}

impl EntryReader {
    /// The last raft index whose batch lies in a segment below `segment` (a segment base
    /// offset): purging up to it lets those segments go.
    pub fn last_index_below(&self, segment: u64) -> Option<u64> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let n = map.locators.partition_point(|l| l.segment < segment);
        (n > 0).then(|| map.first + n as u64 - 1)
    }

    /// How many batches precede `at` in its segment.
    fn batches_before(&self, at: Locator) -> Result<u64, crate::log::LogError> {
        let mut pos = 0u32;
        let mut n = 0;
        while pos < at.position {
            let batch = self.reader.batch_at(Locator {
                segment: at.segment,
                position: pos,
            })?;
            pos += batch.len() as u32;
            n += 1;
        }
        Ok(n)
    }

    /// The stored batch of raft entry `index`, if it is not purged.
    pub fn batch(&self, index: u64) -> Option<bytes::Bytes> {
        let loc = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(index)?;
        self.reader.batch_at(loc).ok()
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<typ::Entry>, typ::StorageError> {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => map.first,
        }
        .max(map.first);
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => map.end(),
        }
        .min(map.end());
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        for index in start..end {
            let loc = map.get(index).expect("index within the map");
            let batch = self.reader.batch_at_unverified(loc).map_err(read_err)?;
            out.push(decode(batch, index).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for EntryReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<typ::Entry>, typ::StorageError> {
        self.entries(range)
    }
}

/// Where a batch landed in the local log: base offset and next offset.
pub type LocalAck = (u64, u64);

/// Senders waiting for a batch's local append, by the batch's address and length.
type Waiters = HashMap<(usize, usize), oneshot::Sender<LocalAck>>;

/// Waiters for the local append of particular batches (`acks=leader`), keyed by the
/// address and length of the batch bytes the leader proposed: openraft hands the store
/// the very same buffer, so no id has to travel inside the entry.
#[derive(Clone, Default)]
pub struct LocalAcks {
    waiters: Arc<Mutex<Waiters>>,
}

impl LocalAcks {
    fn key(batch: &[u8]) -> (usize, usize) {
        (batch.as_ptr() as usize, batch.len())
    }

    /// Registers interest in `batch`'s local append (before proposing it).
    pub fn register(&self, batch: &[u8]) -> oneshot::Receiver<LocalAck> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(Self::key(batch), tx);
        rx
    }

    /// Drops interest (the batch was refused or the wait ended).
    pub fn forget(&self, batch: &[u8]) {
        self.lock().remove(&Self::key(batch));
    }

    pub(super) fn complete(&self, batch: &[u8], ack: LocalAck) {
        if let Some(tx) = self.lock().remove(&Self::key(batch)) {
            let _ = tx.send(ack);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A shared handle on a store's `raft.json`.
#[derive(Clone)]
pub struct RaftStateHandle {
    dir: PathBuf,
    state: Arc<Mutex<RaftState>>,
}

impl RaftStateHandle {
    /// Records that the (reset, empty) partition log's next batch is raft entry `index`.
    pub fn restart_at(&self, index: u64) -> std::io::Result<()> {
        save_changed(&self.state, &self.dir, |s| {
            s.first_index = index;
            s.first_segment = None;
        })
    }
}

/// Changes the state with `f` and makes the result durable in `dir` before it becomes
/// the current state (the lock is held throughout, so saves never reorder).
fn save_changed(
    state: &Mutex<RaftState>,
    dir: &Path,
    f: impl FnOnce(&mut RaftState),
) -> std::io::Result<()> {
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    let mut next = state.clone();
    f(&mut next);
    next.save(dir)?;
    *state = next;
    Ok(())
}

/// The Raft log of one partition.
#[derive(Clone)]
pub struct RaftLogStore {
    dir: PathBuf,
    log: Arc<Mutex<PartitionLog>>,
    state: Arc<Mutex<RaftState>>,
    entries: EntryReader,
    local_acks: LocalAcks,
    flusher: Flusher,
    reset_pending: Arc<AtomicBool>,
    persist_committed: bool,
    /// The broker's shared vote journal and this group's id in it, when votes go there
    /// instead of `raft.json`.
    votes: Option<(VoteJournal, u64)>,
}

impl RaftLogStore {
    /// Builds the store over an open partition log whose files live in `dir`; its flusher
    /// runs as one of `tasks`.
    pub fn open(
        dir: &Path,
        log: Arc<Mutex<PartitionLog>>,
        tasks: &Tasks,
    ) -> Result<Self, typ::StorageError> {
        let state = RaftState::load(dir).map_err(read_err)?;
        let (batches, reader) = {
            let log = log.lock().unwrap_or_else(|e| e.into_inner());
            (log.batches().map_err(read_err)?, log.reader())
        };
        // Batches before the anchor segment are left over from a purge interrupted by a
        // crash: they number backwards from it (and are purged).
        let skip = state.first_segment.map_or(0, |seg| {
            batches
                .iter()
                .position(|(l, _)| l.segment >= seg)
                .unwrap_or(batches.len())
        });
        let first = state.first_index.checked_sub(skip as u64).ok_or_else(|| {
            read_err(format!(
                "raft.json numbers segment {:?} from {} but {skip} batches precede it",
                state.first_segment, state.first_index
            ))
        })?;
        let local_acks = LocalAcks::default();
        let mut map = EntryMap {
            first,
            locators: batches.into_iter().map(|(loc, _)| loc).collect(),
        };
        if let Some(purged) = state.purged {
            while map.first <= purged.index && !map.locators.is_empty() {
                map.locators.pop_front();
                map.first += 1;
            }
            map.first = map.first.max(purged.index + 1);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            log,
            state: Arc::new(Mutex::new(state)),
            entries: EntryReader {
                map: Arc::new(RwLock::new(map)),
                reader,
            },
            local_acks: local_acks.clone(),
            flusher: Flusher::new(local_acks, tasks.clone()),
            reset_pending: Arc::default(),
            persist_committed: false,
            votes: None,
        })
    }

    /// Saves this group's votes (group `group`) in the broker's shared journal, synced
    /// with other groups' votes (see [`VoteJournal`]); a vote found there is newer than
    /// the one in `raft.json`.
    pub fn with_vote_journal(mut self, journal: VoteJournal, group: u64) -> Self {
        if let Some(journaled) = journal.vote_of(group) {
            let mut state = self.state();
            let newer = match state.vote {
                None => true,
                Some(stored) => !matches!(
                    stored.partial_cmp(&journaled),
                    Some(std::cmp::Ordering::Greater)
                ),
            };
            if newer {
                state.vote = Some(journaled);
            }
        }
        self.votes = Some((journal, group));
        self
    }

    /// Syncs the commit point to disk at every commit (for a group with few commits
    /// whose state must be complete right after a restart).
    pub fn persist_committed(mut self, persist: bool) -> Self {
        self.persist_committed = persist;
        self
    }

    /// Reads entries concurrently with the store.
    pub fn entry_reader(&self) -> EntryReader {
        self.entries.clone()
    }

    /// The store's `raft.json`, for the state machine to renumber after a log reset.
    pub fn state_handle(&self) -> RaftStateHandle {
        RaftStateHandle {
            dir: self.dir.clone(),
            state: self.state.clone(),
        }
    }

    /// Held by a test: the flusher's reports wait (appends stay written, not reported).
    #[cfg(test)]
    pub(crate) fn flush_gate(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.flusher.gate.clone()
    }

    /// Raised when a snapshot purges past the last local entry: the state machine then
    /// restarts the partition log at the snapshot's end.
    pub fn reset_flag(&self) -> Arc<AtomicBool> {
        self.reset_pending.clone()
    }

    /// Waiters for local appends (`acks=leader`), shared with the partition.
    pub fn local_acks(&self) -> LocalAcks {
        self.local_acks.clone()
    }

    fn state(&self) -> MutexGuard<'_, RaftState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self) -> MutexGuard<'_, PartitionLog> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_state(&self, f: impl FnOnce(&mut RaftState)) -> Result<(), typ::StorageError> {
        save_changed(&self.state, &self.dir, f).map_err(io_err)
    }

    /// [`update_state`](Self::update_state) on the blocking pool: the file write and its
    /// two syncs (milliseconds) stay off the runtime's few worker threads. Elections of
    /// many groups at once (a restart) save a vote each, and on a worker thread those
    /// syncs stalled every other task, node heartbeats included.
    async fn update_state_off_thread(
        &self,
        f: impl FnOnce(&mut RaftState) + Send + 'static,
    ) -> Result<(), typ::StorageError> {
        let (state, dir) = (self.state.clone(), self.dir.clone());
        tokio::task::spawn_blocking(move || save_changed(&state, &dir, f))
            .await
            .map_err(std::io::Error::other)
            .and_then(|r| r)
            .map_err(io_err)
    }

    fn last_log_id(&self) -> Result<Option<typ::LogId>, typ::StorageError> {
        let map = self.entries.map.read().unwrap_or_else(|e| e.into_inner());
        let Some(index) = map.end().checked_sub(1).filter(|&i| i >= map.first) else {
            return Ok(self.state().purged);
        };
        let loc = map.get(index).expect("last index is mapped");
        let batch = self.entries.reader.batch_at(loc).map_err(read_err)?;
        let term = term_of(&batch).ok_or_else(|| read_err(format!("entry {index} has no term")))?;
        Ok(Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(term, 0),
            index,
        )))
    }
}

impl RaftLogReader<TypeConfig> for RaftLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<typ::Entry>, typ::StorageError> {
        self.entries.entries(range)
    }
}

impl RaftLogStorage<TypeConfig> for RaftLogStore {
    type LogReader = EntryReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, typ::StorageError> {
        let last_purged_log_id = self.state().purged;
        let last_log_id = self.last_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.entries.clone()
    }

    async fn save_vote(&mut self, vote: &typ::Vote) -> Result<(), typ::StorageError> {
        let vote = *vote;
        if let Some((journal, group)) = &self.votes {
            journal.save(*group, &vote).await.map_err(io_err)?;
            self.state().vote = Some(vote);
            return Ok(());
        }
        self.update_state_off_thread(move |s| s.vote = Some(vote))
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<typ::Vote>, typ::StorageError> {
        Ok(self.state().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<typ::LogId>,
    ) -> Result<(), typ::StorageError> {
        // Optional for openraft: a replica re-learns the commit point from its leader, so
        // a partition keeps it in memory and writes it with the next durable state change
        // instead of paying a synced file write inside every Raft round (that was 4 ms of
        // a 5 ms acks=all produce on the reference machine). A stale value on disk only
        // means a restarted replica's high watermark starts lower until it hears from the
        // leader. The metadata group (few commits) persists it, so a restarted broker
        // knows every committed topic before it answers anyone.
        if self.persist_committed {
            return self
                .update_state_off_thread(move |s| s.committed = committed)
                .await;
        }
        self.state().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<typ::LogId>, typ::StorageError> {
        Ok(self.state().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), typ::StorageError>
    where
        I: IntoIterator<Item = typ::Entry> + Send,
        I::IntoIter: Send,
    {
        let started = Instant::now();
        let mut encoded = Vec::new();
        let mut first_index = None;
        let mut proposed = Vec::new();
        for e in entries {
            first_index.get_or_insert(e.log_id.index);
            if let openraft::EntryPayload::Normal(data) = &e.payload {
                proposed.push((encoded.len(), data.0.clone()));
            }
            encoded.push((
                encode(&e).map_err(io_err)?,
                epoch_of(&e.log_id).map_err(io_err)?,
            ));
        }
        let Some(first_index) = first_index else {
            self.flusher.submit(Flush {
                sync: None,
                callback,
                acks: Vec::new(),
                queued: started,
            });
            return Ok(());
        };
        {
            let mut map = self.entries.map.write().unwrap_or_else(|e| e.into_inner());
            let stored = map.end() - self.state().first_index;
            if map.locators.is_empty() && first_index != map.end() && first_index >= stored {
                // An empty Raft log (fresh, or purged to its end) starts wherever openraft
                // says: renumber the stored batches so the next one gets `first_index`.
                self.update_state(|s| s.first_index = first_index - stored)?;
                map.first = first_index;
            }
            if first_index != map.end() {
                return Err(io_err(format!(
                    "append at raft index {first_index}, but the log ends at {}",
                    map.end()
                )));
            }
        }
        let refs: Vec<(&[u8], i32)> = encoded.iter().map(|(b, e)| (&b[..], *e)).collect();
        // Written and readable now; durable per the topic's flush policy once the
        // flusher reports it (under `always`, after its sync).
        match self.log().append_with_epochs_deferred(&refs) {
            Ok((appended, sync)) => {
                let mut map = self.entries.map.write().unwrap_or_else(|e| e.into_inner());
                map.locators.extend(appended.iter().map(|a| a.locator));
                drop(map);
                let acks = proposed
                    .into_iter()
                    .map(|(i, batch)| (batch, (appended[i].base_offset, appended[i].next_offset)))
                    .collect();
                STAGES.log_write.since(started);
                self.flusher.submit(Flush {
                    sync,
                    callback,
                    acks,
                    queued: Instant::now(),
                });
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(msg.clone())));
                Err(io_err(msg))
            }
        }
    }

    async fn truncate(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        self.flusher.drain().await;
        let mut map = self.entries.map.write().unwrap_or_else(|e| e.into_inner());
        let Some(loc) = map.get(log_id.index) else {
            return Ok(()); // nothing at or after that index
        };
        self.log().truncate_at(loc).map_err(io_err)?;
        let keep = (log_id.index - map.first) as usize;
        map.locators.truncate(keep);
        Ok(())
    }

    async fn purge(&mut self, log_id: typ::LogId) -> Result<(), typ::StorageError> {
        let mut map = self.entries.map.write().unwrap_or_else(|e| e.into_inner());
        let first_index = self.state().first_index;
        let old_end = map.end();
        let stored = old_end - first_index;
        // Purging past the last entry (a snapshot from a leader that is far ahead) leaves a
        // gap in raft indexes: renumber the stored batches so the next one gets `index + 1`.
        let first_index = if log_id.index >= map.end() {
            log_id.index + 1 - stored
        } else {
            first_index
        };
        self.update_state(|s| {
            s.purged = Some(log_id);
            s.first_index = first_index;
        })?;
        while map.first <= log_id.index && !map.locators.is_empty() {
            map.locators.pop_front();
            map.first += 1;
        }
        map.first = map.first.max(log_id.index + 1);
        match map.locators.front().copied() {
            // The data below the first kept entry goes with it (whole segments). Number
            // from the kept segment first, so a crash in between keeps the numbering.
            Some(first) if first.segment > self.log().log_start_offset() => {
                let before = self.entries.batches_before(first).map_err(io_err)?;
                let anchor = map.first - before;
                self.update_state(|s| {
                    s.first_index = anchor;
                    s.first_segment = Some(first.segment);
                })?;
                let deleted = self
                    .log()
                    .delete_segments_before(first.segment)
                    .map_err(io_err)?;
                tracing::info!(dir = %self.dir.display(), segments = deleted.len(), "purged Raft entries and their segments");
            }
            Some(_) => {}
            // A snapshot from a leader far ahead: the local records are not its prefix.
            None if log_id.index >= old_end => {
                self.reset_pending.store(true, Ordering::SeqCst);
            }
            // Exactly every entry purged: the data goes with a later purge.
            None => {}
        }
        Ok(())
    }
}
