//! Segments: the active one, appended with `pwritev` and read through a mapping, and
//! sealed, read-only ones.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use rafka_proto::batch::{BatchHeader, HEADER_LEN};

use super::file::{
    map_read, preallocate, segment_path, sync_dir, write_all_at, zero_range, INDEX_EXT, LOG_EXT,
    TIME_INDEX_EXT,
};
use super::index::{decode_all, Entry, IndexWriter, OffsetEntry, TimeEntry};
use super::maps::LazyFiles;
pub(crate) use super::maps::SegmentFiles;
use super::recovery::{recover, Indexer, Scan, Stop};
use super::{LogConfig, LogError};

/// What readers see of a segment, active or sealed. Shared with [`LogReader`]s.
///
/// [`LogReader`]: super::LogReader
pub(crate) struct SegmentView {
    pub base_offset: u64,
    pub path: PathBuf,
    files: Files,
    len: AtomicUsize,
    next_offset: AtomicU64,
    max_timestamp: AtomicI64,
}

/// Where a segment's files are mapped.
enum Files {
    /// The active segment's, mapped while it is active.
    Mapped(Arc<SegmentFiles>),
    /// A sealed segment's, mapped when read (see [`super::maps`]).
    Lazy(Arc<LazyFiles>),
}

impl SegmentView {
    /// Bytes of complete batches. Load [`next_offset`](Self::next_offset) first when both
    /// are needed: a batch is published by its length before its offsets.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// True while the segment's files are mapped (an active segment's always are).
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        match &self.files {
            Files::Mapped(_) => true,
            Files::Lazy(lazy) => lazy.is_mapped(),
        }
    }

    /// The segment's mapped files (mapping a sealed segment's now if they are not).
    pub fn files(&self) -> Result<Arc<SegmentFiles>, LogError> {
        match &self.files {
            Files::Mapped(files) => Ok(files.clone()),
            Files::Lazy(lazy) => lazy.get(),
        }
    }

    pub fn corrupt(&self, position: usize, reason: impl Into<String>) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            position,
            reason: reason.into(),
        }
    }

    /// Position of the first batch, within the first `len` bytes, whose last offset is at
    /// or after `offset` (`len` if none). Starts from the offset index, then walks headers.
    pub fn find_position(
        &self,
        files: &SegmentFiles,
        offset: u64,
        len: usize,
    ) -> Result<usize, LogError> {
        let rel = offset.saturating_sub(self.base_offset) as i64;
        let mut pos = files
            .offsets
            .last_at_or_below(rel)
            .map_or(0, |e| e.pos as usize);
        while pos < len {
            let h = self.header_at(&files.data, pos, len)?;
            if h.last_offset() >= offset as i64 {
                break;
            }
            pos += h.total_len();
        }
        Ok(pos)
    }

    /// The header of the batch at `pos` of `data` (this segment's), checked to lie
    /// within `len`.
    pub fn header_at(&self, data: &[u8], pos: usize, len: usize) -> Result<BatchHeader, LogError> {
        let h =
            BatchHeader::parse(&data[pos..len]).map_err(|e| self.corrupt(pos, e.to_string()))?;
        if h.total_len() < HEADER_LEN || pos + h.total_len() > len {
            return Err(self.corrupt(pos, format!("batch length {} overruns", h.batch_length)));
        }
        Ok(h)
    }
}

/// Blocks a new segment's file starts with: an idle partition costs this much disk, not
/// a whole chunk (a topic of a thousand partitions must not need 64 GiB up front).
const FIRST_ALLOC: usize = 64 << 10;
/// The most the active segment's file grows by at a time; until then each growth doubles
/// what it has, so a busy segment reaches whole chunks after a few calls.
const ALLOC_CHUNK: usize = 64 << 20;

/// Where a file of `allocated` bytes grows to so that `end` fits, within `capacity`.
fn next_allocation(allocated: usize, end: usize, capacity: usize) -> usize {
    let step = allocated.clamp(FIRST_ALLOC, ALLOC_CHUNK);
    (allocated + step).max(end).min(capacity)
}

fn paths(dir: &Path, base: u64) -> [PathBuf; 3] {
    [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT].map(|ext| segment_path(dir, base, ext))
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Reads up to `most` bytes from the start of a file; a missing file reads as empty.
fn read_or_empty(path: &Path, most: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let file = match File::open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    let mut bytes = Vec::new();
    file.take(most as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The segment being appended to: preallocated files appended with `pwritev` (indexes
/// through writable mappings),
/// published to readers through read-only mappings of the same files.
pub(crate) struct ActiveSegment {
    pub view: Arc<SegmentView>,
    /// The files readers see through `view` (the index views grow with the writers).
    files: Arc<SegmentFiles>,
    /// Written with `pwritev` (readers see the bytes through their read-only mapping);
    /// shared with the [`SyncHandle`]s that sync it.
    log_file: Arc<File>,
    /// Bytes the segment may hold (its readers' mapping spans them).
    capacity: usize,
    offset_index: IndexWriter<OffsetEntry>,
    time_index: IndexWriter<TimeEntry>,
    position: usize,
    next_offset: u64,
    indexer: Indexer,
    interval: u64,
    /// Written but not yet synced.
    dirty: Option<Range<usize>>,
    /// Bytes of the file with blocks behind them; the mapping past this must not be touched.
    allocated: usize,
    created: Instant,
}

impl ActiveSegment {
    /// Creates a new, empty segment starting at `base`, replacing any files of that name.
    pub fn create(dir: &Path, base: u64, config: &LogConfig) -> Result<Self, LogError> {
        let [log, ..] = paths(dir, base);
        let io = LogError::io(&log);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&log)
            .map_err(LogError::io(&log))?;
        for p in &paths(dir, base)[1..] {
            fs::remove_file(p)
                .or_else(ignore_missing)
                .map_err(LogError::io(p))?;
        }
        let scan = recover(&[], base, &[], &[], config.index_interval_bytes);
        let seg = Self::build(dir, base, config, file, scan)?;
        seg.log_file.sync_all().map_err(io)?;
        sync_dir(dir).map_err(LogError::io(dir))?;
        Ok(seg)
    }

    /// Opens the last segment of a log after a restart or crash: keeps the batches that
    /// verify, truncates at the first torn or corrupt one, and rebuilds its index.
    pub fn open(dir: &Path, base: u64, config: &LogConfig) -> Result<Self, LogError> {
        let [log, index, time_index] = paths(dir, base);
        let file = open_rw(&log).map_err(LogError::io(&log))?;
        let file_len = file.metadata().map_err(LogError::io(&log))?.len() as usize;
        let scan = {
            let data = map_read(&file, file_len).map_err(LogError::io(&log))?;
            // An index entry points at a batch start past the previous entry's, so the
            // data bounds how many entries can be valid: the rest of the (preallocated,
            // mostly empty) index files is never read.
            let most = file_len / rafka_proto::batch::HEADER_LEN + 1;
            let offsets = read_or_empty(&index, most * <OffsetEntry as Entry>::SIZE)
                .map_err(LogError::io(&index))?;
            let times = read_or_empty(&time_index, most * <TimeEntry as Entry>::SIZE)
                .map_err(LogError::io(&time_index))?;
            recover(&data, base, &offsets, &times, config.index_interval_bytes)
        };
        if let Some((pos, Stop::Damaged(why))) = &scan.stop {
            tracing::warn!(segment = %log.display(), position = pos, "truncating the log tail: {why}");
        }
        if file_len > scan.len {
            // Nothing maps this file yet: the tail is zeroed without writing it, keeping
            // its blocks where the file system can (cutting them off only to allocate
            // them again costs two extent changes and a discard per partition, which a
            // restart of thousands of partitions feels); else it is cut off.
            let tail = (file_len - scan.len) as u64;
            if !zero_range(&file, scan.len as u64, tail).map_err(LogError::io(&log))? {
                file.set_len(scan.len as u64).map_err(LogError::io(&log))?;
            }
        }
        Self::build(dir, base, config, file, scan)
    }

    fn build(
        dir: &Path,
        base: u64,
        config: &LogConfig,
        log_file: File,
        scan: Scan,
    ) -> Result<Self, LogError> {
        let [log, index, time_index] = paths(dir, base);
        let io = LogError::io(&log);
        let old_len = log_file.metadata().map_err(LogError::io(&log))?.len();
        let capacity = config.segment_bytes.max(old_len) as usize;
        // The mapping spans the whole segment; the file gets blocks a chunk at a time.
        let allocated = (old_len as usize).max(FIRST_ALLOC.min(capacity));
        if allocated > old_len as usize {
            preallocate(&log_file, allocated as u64).map_err(LogError::io(&log))?;
        }
        let data = map_read(&log_file, capacity).map_err(io)?;
        let entries = config.index_capacity(capacity as u64);
        let file = open_rw(&index).map_err(LogError::io(&index))?;
        let (offset_index, offsets) = IndexWriter::open(file, &index, entries, &scan.offsets)
            .map_err(LogError::io(&index))?;
        let file = open_rw(&time_index).map_err(LogError::io(&time_index))?;
        let (time_index, times) = IndexWriter::open(file, &time_index, entries + 1, &scan.times)
            .map_err(LogError::io(&time_index))?;
        let files = Arc::new(SegmentFiles {
            data,
            offsets,
            times,
        });
        let view = Arc::new(SegmentView {
            base_offset: base,
            path: log,
            files: Files::Mapped(files.clone()),
            len: AtomicUsize::new(scan.len),
            next_offset: AtomicU64::new(scan.next_offset),
            max_timestamp: AtomicI64::new(scan.indexer.max_ts),
        });
        Ok(Self {
            view,
            files,
            log_file: Arc::new(log_file),
            capacity,
            offset_index,
            time_index,
            position: scan.len,
            next_offset: scan.next_offset,
            indexer: scan.indexer,
            interval: config.index_interval_bytes,
            dirty: None,
            allocated,
            created: Instant::now(),
        })
    }

    pub fn base_offset(&self) -> u64 {
        self.view.base_offset
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    pub fn len(&self) -> usize {
        self.position
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn age(&self) -> std::time::Duration {
        self.created.elapsed()
    }

    /// Copies a validated batch into the mapping at the end of the segment, stamps its base
    /// offset, indexes it and publishes it to readers. The caller checked that it fits in
    /// the capacity; growing the file can still fail (a full disk), and then nothing changes.
    pub fn append(
        &mut self,
        batch: &[u8],
        header: &BatchHeader,
        leader_epoch: Option<i32>,
    ) -> io::Result<(u64, u64)> {
        let start = self.position;
        let end = start + batch.len();
        let base_offset = self.next_offset;
        self.allocate_to(end)?;
        // One copy, by `pwritev` into the page cache the mappings share: the stamped
        // first 16 bytes, then the rest of the batch as it came. Readers see it through
        // the read-only mapping once it is published below.
        let mut head = [0u8; 16];
        head.copy_from_slice(&batch[..16]);
        head[..8].copy_from_slice(&(base_offset as i64).to_be_bytes());
        if let Some(epoch) = leader_epoch {
            // Outside the checksum, like the base offset.
            head[12..16].copy_from_slice(&epoch.to_be_bytes());
        }
        write_all_at(&self.log_file, &[&head, &batch[16..]], start as u64)?;
        let rel = (base_offset - self.view.base_offset) as u32;
        if let Some((o, t)) = self
            .indexer
            .on_batch(start, rel, batch.len(), header.max_timestamp)
        {
            // Entry i of both indexes is for the same batch: both get room, or neither
            // gets the entry (a full disk; the next batch past the interval tries again).
            match self
                .offset_index
                .make_room()
                .and_then(|()| self.time_index.make_room())
            {
                Ok(()) => {
                    self.offset_index.push(o, &self.files.offsets);
                    self.time_index.push(t, &self.files.times);
                }
                Err(e) => tracing::warn!("index entry skipped, the index cannot grow: {e}"),
            }
        }
        self.position = end;
        self.next_offset = base_offset + (header.last_offset_delta as i64 + 1) as u64;
        self.dirty = Some(match self.dirty.take() {
            Some(r) => r.start..end,
            None => start..end,
        });
        self.publish();
        Ok((base_offset, self.next_offset))
    }

    /// Gives the file real blocks up to at least `end` (see `next_allocation`), so that a full
    /// disk is an error here rather than SIGBUS on a write through the mapping.
    fn allocate_to(&mut self, end: usize) -> io::Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        let target = next_allocation(self.allocated, end, self.capacity);
        preallocate(&self.log_file, target as u64)?;
        self.allocated = target;
        Ok(())
    }

    /// Writes zeros over `range` of the file.
    fn zero(&self, range: Range<usize>) -> io::Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        let mut at = range.start;
        while at < range.end {
            let n = (range.end - at).min(ZEROS.len());
            write_all_at(&self.log_file, &[&ZEROS[..n]], at as u64)?;
            at += n;
        }
        Ok(())
    }

    fn publish(&self) {
        let v = &self.view;
        v.max_timestamp
            .store(self.indexer.max_ts, Ordering::Release);
        v.len.store(self.position, Ordering::Release);
        v.next_offset.store(self.next_offset, Ordering::Release);
    }

    /// Forces written data to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some(r) = self.dirty.take() {
            if let Err(e) = self.log_file.sync_data() {
                self.dirty = Some(r);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Hands the written-but-unsynced range over to a [`SyncHandle`], to be synced by
    /// the caller (possibly on another thread, without holding the log).
    pub fn take_sync(&mut self) -> Option<SyncHandle> {
        self.dirty.take().map(|range| SyncHandle {
            file: self.log_file.clone(),
            range,
            path: self.view.path.clone(),
            poison: None,
        })
    }

    /// Cuts the segment back to `pos` (a batch boundary) with `next_offset` after it.
    ///
    /// Readers are told first; a `Bytes` a reader already holds past `pos` may then see
    /// zeros or later appends (callers only truncate what no reader was allowed to see).
    pub fn truncate_to(&mut self, pos: usize, next_offset: u64) -> Result<(), LogError> {
        let old = self.position;
        self.position = pos;
        self.next_offset = next_offset;
        self.view.next_offset.store(next_offset, Ordering::Release);
        self.view.len.store(pos, Ordering::Release);
        self.zero(pos..old).map_err(LogError::io(&self.view.path))?;
        self.dirty = Some(match self.dirty.take() {
            Some(r) => r.start.min(pos)..r.end.max(old),
            None => pos..old,
        });
        let keep = (0..self.offset_index.len())
            .take_while(|&i| (self.offset_index.entry(i).pos as usize) < pos)
            .count();
        self.offset_index.truncate(keep, &self.files.offsets);
        self.time_index.truncate(keep, &self.files.times);
        let (mut at, mut indexer) = match keep.checked_sub(1) {
            Some(i) => (
                self.offset_index.entry(i).pos as usize,
                Indexer::resume(self.interval, self.time_index.entry(i)),
            ),
            None => (0, Indexer::new(self.interval)),
        };
        while at < pos {
            let h = self.view.header_at(&self.files.data, at, pos)?;
            let rel = (h.base_offset as u64 - self.view.base_offset) as u32;
            let entry = indexer.on_batch(at, rel, h.total_len(), h.max_timestamp);
            debug_assert!(entry.is_none(), "entries before `pos` were kept");
            at += h.total_len();
        }
        self.indexer = indexer;
        self.publish();
        Ok(())
    }

    /// Syncs and trims the files to their contents and maps them read-only.
    pub fn seal(mut self) -> Result<SealedSegment, LogError> {
        let log = self.view.path.clone();
        let io = |e| LogError::Io {
            path: log.clone(),
            source: e,
        };
        self.sync().map_err(io)?;
        if self.position > 0 {
            let end = TimeEntry {
                ts: self.indexer.max_ts,
                rel: (self.next_offset - self.view.base_offset) as u32,
            };
            self.time_index.push(end, &self.files.times);
        }
        self.log_file.set_len(self.position as u64).map_err(io)?;
        self.log_file.sync_all().map_err(io)?;
        let (_, offsets) = self.offset_index.seal().map_err(io)?;
        let (_, times) = self.time_index.seal().map_err(io)?;
        let data = map_read(&self.log_file, self.position).map_err(io)?;
        let old = &self.view;
        // Just written, likely read soon: it starts mapped.
        let counts = (offsets.len(), times.len());
        let files = Arc::new(SegmentFiles {
            data,
            offsets,
            times,
        });
        let dir = old.path.parent().unwrap_or(Path::new("."));
        let lazy = LazyFiles::new(
            paths(dir, old.base_offset),
            self.position,
            counts.0,
            counts.1,
            Some(files),
        );
        let view = SegmentView {
            base_offset: old.base_offset,
            path: old.path.clone(),
            files: Files::Lazy(lazy),
            len: AtomicUsize::new(self.position),
            next_offset: AtomicU64::new(self.next_offset),
            max_timestamp: AtomicI64::new(self.indexer.max_ts),
        };
        Ok(SealedSegment {
            view: Arc::new(view),
        })
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

/// A full segment: read-only files trimmed to their contents.
pub(crate) struct SealedSegment {
    pub view: Arc<SegmentView>,
}

impl SealedSegment {
    /// Opens a sealed segment. The batches after its last index entry are verified and must
    /// end exactly at the end of the file; a missing or inconsistent index is rebuilt.
    /// A sealed segment is never truncated: damage is an error, unless `next_base` (the
    /// next segment's base offset) says where its offsets end. Then it opens whole, as
    /// long as the file, indexed up to the damage: reads of the damaged batch fail by
    /// its checksum until the scrubber (`cluster::scrub`) repairs it from a replica.
    pub fn open(
        dir: &Path,
        base: u64,
        next_base: Option<u64>,
        config: &LogConfig,
    ) -> Result<Self, LogError> {
        let [log, index, time_index] = paths(dir, base);
        let file = File::open(&log).map_err(LogError::io(&log))?;
        let len = file.metadata().map_err(LogError::io(&log))?.len() as usize;
        let data = map_read(&file, len).map_err(LogError::io(&log))?;
        // A sealed segment's index files were trimmed to their entries.
        let stored_offsets = read_or_empty(&index, usize::MAX).map_err(LogError::io(&index))?;
        let stored_times =
            read_or_empty(&time_index, usize::MAX).map_err(LogError::io(&time_index))?;
        let scan = recover(
            &data,
            base,
            &stored_offsets,
            &stored_times,
            config.index_interval_bytes,
        );
        let mut next_offset = scan.next_offset;
        if let Some((position, stop)) = scan.stop {
            let reason = match stop {
                Stop::Zeros => "zeros before the end of a sealed segment".to_string(),
                Stop::Damaged(why) => why,
            };
            match next_base.filter(|&n| n > scan.next_offset) {
                Some(n) => {
                    tracing::warn!(segment = %log.display(), position, "damaged sealed segment ({reason}): opened with its offsets up to {n} (the next segment's base) until it is repaired from a replica");
                    next_offset = n;
                }
                None => {
                    return Err(LogError::Corrupt {
                        path: log,
                        position,
                        reason,
                    })
                }
            }
        }
        let mut times = scan.times;
        if len > 0 {
            times.push(TimeEntry {
                ts: scan.indexer.max_ts,
                rel: (next_offset - base) as u32,
            });
        }
        let offsets = scan.offsets;
        if offsets != decode_all::<OffsetEntry>(&stored_offsets)
            || times != decode_all::<TimeEntry>(&stored_times)
        {
            tracing::warn!(segment = %log.display(), "rebuilding the index of a sealed segment");
            write_index(&index, &offsets)?;
            write_index(&time_index, &times)?;
        }
        // Mapped when first read: opening maps nothing it keeps.
        drop(data);
        let lazy = LazyFiles::new(
            [log.clone(), index, time_index],
            len,
            offsets.len(),
            times.len(),
            None,
        );
        let view = SegmentView {
            base_offset: base,
            path: log,
            files: Files::Lazy(lazy),
            len: AtomicUsize::new(len),
            next_offset: AtomicU64::new(next_offset),
            max_timestamp: AtomicI64::new(scan.indexer.max_ts),
        };
        Ok(Self {
            view: Arc::new(view),
        })
    }

    pub fn base_offset(&self) -> u64 {
        self.view.base_offset
    }

    pub fn len(&self) -> usize {
        self.view.len()
    }

    /// Removes the segment's files. Readers holding its mapping keep reading it.
    pub fn delete(self, dir: &Path) -> Result<(), LogError> {
        delete_files(dir, self.base_offset())
    }
}

/// Removes the three files of the segment at `base`, if present.
pub(crate) fn delete_files(dir: &Path, base: u64) -> Result<(), LogError> {
    for p in paths(dir, base) {
        fs::remove_file(&p)
            .or_else(ignore_missing)
            .map_err(LogError::io(&p))?;
    }
    Ok(())
}

fn write_index<E: super::index::Entry>(path: &Path, entries: &[E]) -> Result<(), LogError> {
    let mut buf = vec![0u8; entries.len() * E::SIZE];
    for (i, e) in entries.iter().enumerate() {
        e.encode(&mut buf[i * E::SIZE..(i + 1) * E::SIZE]);
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let write = || -> io::Result<()> {
        fs::write(&tmp, &buf)?;
        File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(LogError::io(path))
}

/// Written bytes of a segment still to be forced to disk. Holding it keeps the file
/// open, so it can be synced after the segment is sealed or the log has moved on.
pub struct SyncHandle {
    file: Arc<File>,
    /// What was written: the file's dirty pages all lie here (it is only appended to,
    /// or zeroed behind a truncation, which is counted in).
    range: Range<usize>,
    path: PathBuf,
    /// The log a failed sync poisons.
    poison: Option<Arc<std::sync::OnceLock<String>>>,
}

impl SyncHandle {
    /// Makes a failed sync poison the log that `poison` belongs to.
    pub(crate) fn poisoning(mut self, poison: Arc<std::sync::OnceLock<String>>) -> Self {
        self.poison = Some(poison);
        self
    }

    /// Forces the bytes to disk. A failure poisons the log the bytes belong to: after an
    /// fsync error the page cache may have dropped the dirty pages, so what the log would
    /// read back is unknown until it is reopened and recovered.
    pub fn sync(&self) -> Result<(), LogError> {
        let result = self.file.sync_data().map_err(LogError::io(&self.path));
        if let (Err(e), Some(poison)) = (&result, &self.poison) {
            tracing::error!(path = %self.path.display(), "deferred sync failed; the log is poisoned: {e}");
            let _ = poison.set(e.to_string());
        }
        result
    }

    /// Points the handle at a file that cannot be synced, so that its sync fails.
    #[cfg(test)]
    pub(crate) fn break_for_tests(&mut self) {
        self.file = Arc::new(File::open("/dev/null").expect("/dev/null opens"));
    }

    /// Folds `later` into this handle when both cover the same segment; otherwise gives
    /// it back.
    pub fn merge(&mut self, later: SyncHandle) -> Option<SyncHandle> {
        if !Arc::ptr_eq(&self.file, &later.file) {
            return Some(later);
        }
        self.range = self.range.start.min(later.range.start)..self.range.end.max(later.range.end);
        None
    }
}
