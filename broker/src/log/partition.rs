//! The partition log: an ordered set of segments with one writer.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rafka_proto::batch::RecordBatch;

use super::file::{self, parse_segment_name, sync_dir};
use super::reader::{LogReader, Shared};
use super::segment::{delete_files, ActiveSegment, SealedSegment, SyncHandle};
use super::{FlushPolicy, LogConfig, LogError};

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// Offset after the batch (the log end offset right after the append).
    pub next_offset: u64,
    /// Where the batch is stored; unique even for control batches that take no offset.
    pub locator: Locator,
}

/// The place of one batch in the log: its segment and byte position. Raft addresses its
/// entries by these, since a control batch without records shares its offset with the
/// batch after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locator {
    /// Base offset of the segment.
    pub segment: u64,
    /// Byte position of the batch in the segment.
    pub position: u32,
}

impl Appended {
    /// Offset of the batch's last record; `None` for a control batch without records.
    pub fn last_offset(&self) -> Option<u64> {
        (self.next_offset > self.base_offset).then(|| self.next_offset - 1)
    }
}

/// One partition's append-only log in its own directory.
///
/// Writes take `&mut self`; any number of [`LogReader`]s (from [`reader`](Self::reader))
/// read concurrently and see only whole batches. After a failed write or sync the log
/// refuses further writes until it is reopened.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    shared: Arc<Shared>,
    reader: LogReader,
    sealed: BTreeMap<u64, SealedSegment>,
    /// `None` only after a failure left no usable active segment (the log is poisoned).
    active: Option<ActiveSegment>,
    /// Set by the first failed write or sync (also a deferred [`SyncHandle`]'s, wherever
    /// it ran): the log then refuses writes until reopened.
    poisoned: Arc<std::sync::OnceLock<String>>,
    last_sync: Instant,
}

impl PartitionLog {
    /// Opens (or creates) the log in `dir`, recovering the active segment's tail.
    pub fn open(dir: impl AsRef<Path>, config: LogConfig) -> Result<Self, LogError> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(LogError::io(&dir))?;
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).map_err(LogError::io(&dir))? {
            let entry = entry.map_err(LogError::io(&dir))?;
            if let Some(base) = entry.file_name().to_str().and_then(parse_segment_name) {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let mut sealed = BTreeMap::new();
        let mut expected: Option<u64> = None;
        let last = bases.pop();
        let nexts: Vec<Option<u64>> = (bases.iter().skip(1).copied().map(Some))
            .chain([last])
            .collect();
        for (base, next_base) in bases.into_iter().zip(nexts) {
            let seg = SealedSegment::open(&dir, base, next_base, &config)?;
            check_contiguous(&seg.view.path, expected, base)?;
            expected = Some(seg.view.next_offset());
            sealed.insert(base, seg);
        }
        let active = match last {
            Some(base) => {
                let seg = ActiveSegment::open(&dir, base, &config)?;
                check_contiguous(&seg.view.path, expected, base)?;
                seg
            }
            None => ActiveSegment::create(&dir, 0, &config)?,
        };
        let shared = Arc::new(Shared::default());
        {
            let mut map = shared.write();
            for (base, s) in &sealed {
                map.insert(*base, s.view.clone());
            }
            map.insert(active.base_offset(), active.view.clone());
        }
        Ok(Self {
            reader: LogReader {
                shared: shared.clone(),
            },
            dir,
            config,
            shared,
            sealed,
            active: Some(active),
            poisoned: Arc::default(),
            last_sync: Instant::now(),
        })
    }

    /// A handle for concurrent reads.
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The settings in force.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// First offset held by the log.
    pub fn log_start_offset(&self) -> u64 {
        self.reader.log_start_offset()
    }

    /// Offset the next appended record will get.
    pub fn log_end_offset(&self) -> u64 {
        self.reader.log_end_offset()
    }

    /// See [`LogReader::read`].
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.reader.read(offset, max_bytes)
    }

    /// See [`LogReader::offset_for_timestamp`].
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        self.reader.offset_for_timestamp(timestamp)
    }

    /// Validates a batch, appends it at the log end (assigning its base offset) and syncs
    /// per the flush policy. An invalid batch appends nothing.
    pub fn append(&mut self, batch: &[u8]) -> Result<Appended, LogError> {
        self.append_batch(&RecordBatch::parse(batch)?)
    }

    /// Appends a batch that was already validated (a [`RecordBatch`] exists only after
    /// [`RecordBatch::parse`] succeeded): the server validates requests on its own
    /// threads, so the log's single writer only copies.
    pub fn append_batch(&mut self, batch: &RecordBatch<'_>) -> Result<Appended, LogError> {
        self.write(|log| {
            let a = log.append_validated(batch, None)?;
            log.after_append()?;
            Ok(a)
        })
    }

    /// Appends a group of batches with one sync for all of them (group commit). Every batch
    /// is validated first: if any is invalid, none is appended.
    pub fn append_all<B: AsRef<[u8]>>(&mut self, batches: &[B]) -> Result<Vec<Appended>, LogError> {
        let parsed = batches
            .iter()
            .map(|b| RecordBatch::parse(b.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        self.append_batches(&parsed)
    }

    /// Appends already validated batches with one sync for all of them (group commit).
    pub fn append_batches(
        &mut self,
        batches: &[RecordBatch<'_>],
    ) -> Result<Vec<Appended>, LogError> {
        self.write(|log| {
            let out = batches
                .iter()
                .map(|b| log.append_validated(b, None))
                .collect::<Result<Vec<_>, _>>()?;
            log.after_append()?;
            Ok(out)
        })
    }

    /// Appends Raft entries' batches, each with its leader epoch (the entry's term)
    /// stamped; if any is invalid, none is appended. Under flush `always` the sync is
    /// left to the caller: the returned handle makes the batches durable and can
    /// run on another thread without holding the log (a Raft leader then replicates while
    /// its own disk syncs, and appends that arrive meanwhile share the next sync).
    pub fn append_with_epochs_deferred(
        &mut self,
        batches: &[(&[u8], i32)],
    ) -> Result<(Vec<Appended>, Option<SyncHandle>), LogError> {
        // Raft entries were validated by the leader that accepted them, and their
        // checksums verified where they reached this replica.
        let parsed = batches
            .iter()
            .map(|(b, e)| RecordBatch::framed(b).map(|b| (b, *e)))
            .collect::<Result<Vec<_>, _>>()?;
        self.write(|log| {
            let out = parsed
                .iter()
                .map(|(b, epoch)| log.append_validated(b, Some(*epoch)))
                .collect::<Result<Vec<_>, _>>()?;
            let handle = match log.config.flush {
                FlushPolicy::Always => {
                    log.last_sync = Instant::now();
                    let poison = log.poisoned.clone();
                    log.active()?.take_sync().map(|h| h.poisoning(poison))
                }
                _ => {
                    log.after_append()?;
                    None
                }
            };
            Ok((out, handle))
        })
    }

    /// Replaces the settings. Size and index settings apply to segments created from now
    /// on; flush and retention settings apply at once.
    pub fn set_config(&mut self, config: LogConfig) -> Result<(), LogError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// Forces everything appended so far to disk.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.write(Self::sync)
    }

    /// Syncs if the `interval` flush policy's time has come; a no-op for other policies.
    pub fn flush_if_due(&mut self) -> Result<(), LogError> {
        match self.config.flush {
            FlushPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.flush(),
            _ => Ok(()),
        }
    }

    /// Removes every record after `offset`, so that `offset + 1` becomes the log end. The
    /// cut must fall between batches. Durable when it returns.
    pub fn truncate_after(&mut self, offset: u64) -> Result<(), LogError> {
        self.write(|log| log.truncate_to(offset.saturating_add(1)))
    }

    /// Deletes sealed segments past `retention.ms` (by their newest record) or beyond
    /// `retention.bytes` (oldest first); the active segment always stays. Returns the
    /// base offsets of the deleted segments.
    pub fn apply_retention(&mut self, now: SystemTime) -> Result<Vec<u64>, LogError> {
        match self.retention_cut(now) {
            Some(cut) => self.delete_segments_before(cut),
            None => Ok(Vec::new()),
        }
    }

    /// Where retention would start the log now: the base offset of the first segment it
    /// would keep, if it would delete any. Retention deletes a prefix of sealed segments.
    pub fn retention_cut(&self, now: SystemTime) -> Option<u64> {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let mut doomed = 0usize;
        if let Some(ms) = self.config.retention_ms {
            let cutoff = now_ms - ms.as_millis() as i64;
            doomed = self
                .sealed
                .values()
                .take_while(|s| (0..cutoff).contains(&s.view.max_timestamp()))
                .count();
        }
        if let Some(limit) = self.config.retention_bytes {
            let mut size = self.reader.size_bytes();
            let mut n = 0;
            for s in self.sealed.values() {
                let len = s.len() as u64;
                if size.saturating_sub(len) < limit {
                    break;
                }
                size -= len;
                n += 1;
            }
            doomed = doomed.max(n);
        }
        if doomed == 0 {
            return None;
        }
        let kept = self.sealed.keys().nth(doomed).copied();
        kept.or_else(|| self.active.as_ref().map(|a| a.base_offset()))
    }

    /// Deletes the sealed segments whose base offset is below `segment` (oldest first);
    /// returns their base offsets.
    pub fn delete_segments_before(&mut self, segment: u64) -> Result<Vec<u64>, LogError> {
        self.write(|log| {
            let doomed: Vec<u64> = log.sealed.range(..segment).map(|(b, _)| *b).collect();
            for &base in &doomed {
                log.shared.write().remove(&base);
                if let Some(seg) = log.sealed.remove(&base) {
                    seg.delete(&log.dir)?;
                }
            }
            if !doomed.is_empty() {
                sync_dir(&log.dir).map_err(LogError::io(&log.dir))?;
            }
            Ok(doomed)
        })
    }

    /// Drops every record and starts over, empty, at `offset`: a replica that fell
    /// behind its leader's log start restarts there. Durable when it returns.
    pub fn reset_to(&mut self, offset: u64) -> Result<(), LogError> {
        self.write(|log| {
            log.delete_segments_from(0)?;
            let seg = ActiveSegment::create(&log.dir, offset, &log.config)?;
            log.shared.write().insert(offset, seg.view.clone());
            log.active = Some(seg);
            sync_dir(&log.dir).map_err(LogError::io(&log.dir))
        })
    }

    /// Runs a write operation unless poisoned; poisons the log if it fails with an I/O error.
    fn write<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, LogError>,
    ) -> Result<T, LogError> {
        if let Some(cause) = self.poisoned.get() {
            return Err(LogError::Poisoned {
                dir: self.dir.clone(),
                cause: cause.clone(),
            });
        }
        let result = op(self);
        if let Err(e @ (LogError::Io { .. } | LogError::Corrupt { .. })) = &result {
            tracing::error!(dir = %self.dir.display(), "partition log poisoned: {e}");
            let _ = self.poisoned.set(e.to_string());
        }
        result
    }

    fn active(&mut self) -> Result<&mut ActiveSegment, LogError> {
        let dir = &self.dir;
        self.active.as_mut().ok_or_else(|| LogError::Poisoned {
            dir: dir.clone(),
            cause: "no active segment".into(),
        })
    }

    fn append_validated(
        &mut self,
        batch: &RecordBatch<'_>,
        leader_epoch: Option<i32>,
    ) -> Result<Appended, LogError> {
        let size = batch.as_bytes().len();
        let (segment_bytes, segment_ms) = (self.config.segment_bytes, self.config.segment_ms);
        let active = self.active()?;
        if size > active.capacity().max(segment_bytes as usize) {
            return Err(LogError::BatchTooLarge {
                size,
                max: segment_bytes,
            });
        }
        let age_out = segment_ms.is_some_and(|ms| active.age() >= ms);
        let full = active.len() + size > active.capacity();
        // A segment is named by its base offset, so the next one needs a larger one: a
        // segment holding only record-less control batches cannot roll.
        let can_roll = active.next_offset() > active.base_offset();
        if full && !can_roll {
            return Err(LogError::BatchTooLarge {
                size,
                max: (active.capacity() - active.len()) as u64,
            });
        }
        if active.len() > 0 && can_roll && (full || age_out) {
            self.roll()?;
        }
        let active = self.active()?;
        let path = active.view.path.clone();
        let position = active.len() as u32;
        let segment = active.base_offset();
        let (base_offset, next_offset) = active
            .append(batch.as_bytes(), batch.header(), leader_epoch)
            .map_err(LogError::io(path))?;
        Ok(Appended {
            base_offset,
            next_offset,
            locator: Locator { segment, position },
        })
    }

    fn after_append(&mut self) -> Result<(), LogError> {
        match self.config.flush {
            FlushPolicy::Always => self.sync(),
            FlushPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.sync(),
            _ => Ok(()),
        }
    }

    fn sync(&mut self) -> Result<(), LogError> {
        let active = self.active()?;
        let path = active.view.path.clone();
        active.sync().map_err(LogError::io(path))?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end. The old segment is
    /// trimmed and synced before the new file exists, so after a crash only the last
    /// segment can have an unwritten tail.
    fn roll(&mut self) -> Result<(), LogError> {
        let old = self.active.take().expect("roll needs an active segment");
        let next = old.next_offset();
        let sealed = old.seal()?;
        self.shared
            .write()
            .insert(sealed.base_offset(), sealed.view.clone());
        self.sealed.insert(sealed.base_offset(), sealed);
        let new = ActiveSegment::create(&self.dir, next, &self.config)?;
        self.shared.write().insert(next, new.view.clone());
        self.active = Some(new);
        Ok(())
    }

    fn truncate_to(&mut self, new_end: u64) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        if new_end >= log_end {
            return Ok(());
        }
        let Some(keep) = self
            .shared
            .read()
            .range(..new_end)
            .next_back()
            .map(|(_, v)| v.clone())
        else {
            // Nothing below `new_end` is left: start over, empty, at `new_end`.
            self.delete_segments_from(0)?;
            let seg = ActiveSegment::create(&self.dir, new_end, &self.config)?;
            self.shared.write().insert(new_end, seg.view.clone());
            self.active = Some(seg);
            return Ok(());
        };
        let len = keep.len();
        let files = keep.files()?;
        let pos = keep.find_position(&files, new_end, len)?;
        if pos < len {
            let h = keep.header_at(&files.data, pos, len)?;
            if (h.base_offset as u64) < new_end {
                return Err(LogError::NotBatchBoundary {
                    offset: new_end - 1,
                    base_offset: h.base_offset as u64,
                    last_offset: h.last_offset() as u64,
                });
            }
        }
        self.cut(keep.base_offset, pos, new_end)
    }

    /// Removes the batch at `at` and everything after it. Durable when it returns.
    pub fn truncate_at(&mut self, at: Locator) -> Result<(), LogError> {
        self.write(|log| {
            let seg = log.shared.read().get(&at.segment).cloned();
            let Some(seg) = seg else {
                return Err(LogError::Config(format!(
                    "no segment {} to truncate in",
                    at.segment
                )));
            };
            let len = seg.len();
            let pos = at.position as usize;
            if pos > len {
                return Err(LogError::Config(format!(
                    "position {pos} is past the end ({len}) of segment {}",
                    at.segment
                )));
            }
            let next = if pos == len {
                seg.next_offset()
            } else {
                seg.header_at(&seg.files()?.data, pos, len)?.base_offset as u64
            };
            log.cut(at.segment, pos, next)
        })
    }

    /// Every batch header from the start of the log, with its locator, in order.
    pub fn batches(&self) -> Result<Vec<(Locator, rafka_proto::batch::BatchHeader)>, LogError> {
        let segments: Vec<_> = self.shared.read().values().cloned().collect();
        let mut out = Vec::new();
        for seg in segments {
            let len = seg.len();
            let files = seg.files()?;
            let mut pos = 0;
            while pos < len {
                let h = seg.header_at(&files.data, pos, len)?;
                out.push((
                    Locator {
                        segment: seg.base_offset,
                        position: pos as u32,
                    },
                    h,
                ));
                pos += h.total_len();
            }
        }
        Ok(out)
    }

    /// Sets the leader epoch of every batch to `epoch`, in place (the field lies outside
    /// the checksum), and syncs: a log written without Raft adopted as the entries of one
    /// Raft term. Returns how many batches were stamped.
    pub fn stamp_leader_epochs(&mut self, epoch: i32) -> Result<usize, LogError> {
        use std::os::unix::fs::FileExt;
        let batches = self.batches()?;
        let mut files: BTreeMap<u64, fs::File> = BTreeMap::new();
        for (at, _) in &batches {
            let path = file::segment_path(&self.dir, at.segment, file::LOG_EXT);
            let f = match files.entry(at.segment) {
                std::collections::btree_map::Entry::Occupied(f) => f.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => v.insert(
                    fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(LogError::io(&path))?,
                ),
            };
            let position = at.position as u64 + rafka_proto::batch::field::LEADER_EPOCH as u64;
            f.write_all_at(&epoch.to_be_bytes(), position)
                .map_err(LogError::io(&path))?;
        }
        for (base, f) in &files {
            f.sync_data().map_err(LogError::io(file::segment_path(
                &self.dir,
                *base,
                file::LOG_EXT,
            )))?;
        }
        Ok(batches.len())
    }

    /// Cuts the log at byte `pos` of segment `base` (a batch boundary), where the offset
    /// `next_offset` begins; later segments go.
    fn cut(&mut self, base: u64, pos: usize, next_offset: u64) -> Result<(), LogError> {
        let new_end = next_offset;
        self.delete_segments_from(base + 1)?;
        if self.active.is_none() {
            // The segment to cut was sealed: it becomes the active one again.
            let sealed = self.sealed.remove(&base).expect("sealed segment is listed");
            drop(sealed);
            let seg = ActiveSegment::open(&self.dir, base, &self.config)?;
            self.shared.write().insert(base, seg.view.clone());
            self.active = Some(seg);
        }
        let active = self.active()?;
        active.truncate_to(pos, new_end)?;
        let path = active.view.path.clone();
        active.sync().map_err(LogError::io(&path))?;
        sync_dir(&self.dir).map_err(LogError::io(&self.dir))?;
        Ok(())
    }

    /// Deletes every segment whose base offset is `>= from`, newest first, so a crash in
    /// between leaves a contiguous log.
    fn delete_segments_from(&mut self, from: u64) -> Result<(), LogError> {
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.base_offset() >= from)
        {
            let active = self.active.take().expect("checked above");
            let base = active.base_offset();
            self.shared.write().remove(&base);
            drop(active);
            delete_files(&self.dir, base)?;
        }
        let doomed: Vec<u64> = self.sealed.range(from..).map(|(b, _)| *b).rev().collect();
        for base in doomed {
            self.shared.write().remove(&base);
            if let Some(seg) = self.sealed.remove(&base) {
                seg.delete(&self.dir)?;
            }
        }
        sync_dir(&self.dir).map_err(LogError::io(&self.dir))
    }
}

fn check_contiguous(path: &Path, expected: Option<u64>, base: u64) -> Result<(), LogError> {
    match expected {
        Some(e) if e != base => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            position: 0,
            reason: format!("segment starts at offset {base} but the previous one ends at {e}"),
        }),
        _ => Ok(()),
    }
}
