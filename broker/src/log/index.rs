//! Sparse offset and time indexes: fixed-width big-endian entries in mapped files.
//!
//! ```text
//! .index      8 bytes/entry: relative offset u32 | position u32
//! .timeindex 12 bytes/entry: timestamp i64       | relative offset u32
//! ```
//!
//! Entry `i` of both files is written for the same batch: the time entry's timestamp is the
//! largest timestamp of all batches *before* that batch, so every record before the entry's
//! offset is at or below it. A sealed segment's time index ends with one more entry: the
//! segment's largest timestamp and its end offset.

use std::fs::{File, OpenOptions};
use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::MmapRaw;

use super::file::{grow_sparse, map_raw, map_read, next_data, preallocate, punch_hole};

/// A fixed-width index entry.
pub(crate) trait Entry: Copy {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// Decodes an entry from exactly `SIZE` bytes.
    fn decode(b: &[u8]) -> Self;
    /// Encodes the entry into exactly `SIZE` bytes.
    fn encode(&self, out: &mut [u8]);
    /// The key the index is searched by.
    fn key(&self) -> i64;
}

/// Offset index entry: a batch starting at `position` has base offset `base + rel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel: u32,
    pub pos: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn decode(b: &[u8]) -> Self {
        Self {
            rel: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            pos: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
    fn encode(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&self.rel.to_be_bytes());
        out[4..8].copy_from_slice(&self.pos.to_be_bytes());
    }
    fn key(&self) -> i64 {
        self.rel as i64
    }
}

/// Time index entry: every record before relative offset `rel` has a timestamp `<= ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub ts: i64,
    pub rel: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        Self {
            ts: i64::from_be_bytes(ts),
            rel: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.ts.to_be_bytes());
        out[8..12].copy_from_slice(&self.rel.to_be_bytes());
    }
    fn key(&self) -> i64 {
        self.ts
    }
}

/// Decodes every whole entry in `bytes`.
pub(crate) fn decode_all<E: Entry>(bytes: &[u8]) -> Vec<E> {
    bytes.chunks_exact(E::SIZE).map(E::decode).collect()
}

/// The read side of an index: a mapping and the number of entries published in it.
pub(crate) struct IndexView<E> {
    source: Source,
    count: AtomicUsize,
    _entry: PhantomData<E>,
}

/// Where a view reads its entries.
enum Source {
    /// A sealed index, mapped read-only.
    Sealed(Bytes),
    /// An active index: the writer's own mapping (one mapping per index file, not two:
    /// a broker with ten thousand partitions stays far from `vm.max_map_count`).
    Active(Arc<MmapRaw>),
}

impl<E: Entry> IndexView<E> {
    /// A view of a sealed index's `count` entries in `data`.
    pub(crate) fn new(data: Bytes, count: usize) -> Self {
        debug_assert!(count * E::SIZE <= data.len());
        Self {
            source: Source::Sealed(data),
            count: AtomicUsize::new(count),
            _entry: PhantomData,
        }
    }

    /// Number of entries readers may use.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub(crate) fn entry(&self, i: usize) -> E {
        match &self.source {
            Source::Sealed(data) => E::decode(&data[i * E::SIZE..(i + 1) * E::SIZE]),
            Source::Active(map) => read_raw(map, i),
        }
    }

    /// The last entry whose key is `<= key`, by binary search.
    pub(crate) fn last_at_or_below(&self, key: i64) -> Option<E> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid).key() <= key {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    /// The last entry whose key is `< key`.
    pub(crate) fn last_below(&self, key: i64) -> Option<E> {
        self.last_at_or_below(key.saturating_sub(1))
    }
}

/// The page size assumed where stale entries past the last one are looked for.
const PAGE: usize = 4096;

/// Entries an index file gets blocks for at first; it doubles from there as it fills.
const FIRST_ENTRIES: usize = 512;

/// The write side of an index file mapped for `capacity` entries. The file is as long
/// as the mapping but has blocks only for the first `allocated` entries (they double as
/// it fills), so an idle partition does not hold megabytes of disk per index, and a full
/// disk is an error when the index grows rather than SIGBUS on a write to the mapping.
pub(crate) struct IndexWriter<E> {
    /// The file is opened again when it needs blocks or is sealed (rarely): an active
    /// segment holds one file handle (its log), not three, so a broker with ten
    /// thousand partitions stays within the open-file limit.
    path: PathBuf,
    map: Arc<MmapRaw>,
    count: usize,
    capacity: usize,
    allocated: usize,
    _entry: PhantomData<E>,
}

impl<E: Entry> IndexWriter<E> {
    /// Maps `file` for `capacity` entries and writes `entries` at its start; returns the
    /// writer and the matching read view. Stale entries after them are zeroed. The file
    /// is never shrunk, so older read mappings of it stay valid.
    pub(crate) fn open(
        file: File,
        path: &Path,
        capacity: usize,
        entries: &[E],
    ) -> io::Result<(Self, IndexView<E>)> {
        let old_len = file.metadata()?.len() as usize;
        let capacity = capacity.max(entries.len() + 1).max(old_len / E::SIZE);
        let bytes = capacity * E::SIZE;
        let written = entries.len() * E::SIZE;
        let mut stale = written..old_len.min(bytes).max(written);
        // Stale entries (from before a crash or a truncation) are dropped with their
        // blocks where the file system can; otherwise zeroed in place below. Past the
        // page of the last entry, only data the file system holds can be stale: when
        // none follows (the usual restart), only that page's tail is zeroed, and the
        // extent changes (and discards) of a punch are saved.
        let page_end = written.next_multiple_of(PAGE).max(PAGE).min(stale.end);
        if next_data(&file, page_end as u64)?.is_none_or(|d| d as usize >= stale.end) {
            stale.end = page_end;
        }
        let punched =
            stale.len() >= PAGE && punch_hole(&file, stale.start as u64, stale.len() as u64)?;
        let blocks = if punched { written } else { stale.end };
        let allocated = (blocks / E::SIZE + 1).min(capacity);
        preallocate(&file, (allocated * E::SIZE) as u64)?;
        grow_sparse(&file, bytes as u64)?;
        let map = Arc::new(map_raw(&file, bytes)?);
        for (i, e) in entries.iter().enumerate() {
            write_raw(&map, i, e);
        }
        if !punched {
            zero_raw(&map, stale);
        }
        let view = IndexView {
            source: Source::Active(map.clone()),
            count: AtomicUsize::new(entries.len()),
            _entry: PhantomData,
        };
        let writer = Self {
            path: path.to_path_buf(),
            map,
            count: entries.len(),
            capacity,
            allocated,
            _entry: PhantomData,
        };
        Ok((writer, view))
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Gives the file blocks for the next entry (doubling what it has), unless it has
    /// them or the capacity is reached; fails where the disk is full.
    pub(crate) fn make_room(&mut self) -> io::Result<()> {
        if self.count < self.allocated || self.count >= self.capacity {
            return Ok(());
        }
        let to = (self.allocated * 2).max(FIRST_ENTRIES).min(self.capacity);
        let file = OpenOptions::new().write(true).open(&self.path)?;
        preallocate(&file, (to * E::SIZE) as u64)?;
        self.allocated = to;
        Ok(())
    }

    /// Appends an entry and publishes it to `view`. The capacity is sized so this cannot
    /// overflow; if it would, or the file has no room for it (see `make_room`), the entry
    /// is skipped: the index is sparse anyway, and reads scan from an earlier entry.
    pub(crate) fn push(&mut self, e: E, view: &IndexView<E>) {
        if self.count >= self.capacity || self.make_room().is_err() {
            return;
        }
        write_raw(&self.map, self.count, &e);
        self.count += 1;
        view.count.store(self.count, Ordering::Release);
    }

    /// Drops entries from `count` on, zeroing them.
    pub(crate) fn truncate(&mut self, count: usize, view: &IndexView<E>) {
        if count < self.count {
            view.count.store(count, Ordering::Release);
            zero_raw(&self.map, count * E::SIZE..self.count * E::SIZE);
            self.count = count;
        }
    }

    pub(crate) fn entry(&self, i: usize) -> E {
        read_raw(&self.map, i)
    }

    /// Trims the file to its entries, makes it durable and maps it read-only.
    pub(crate) fn seal(self) -> io::Result<(File, IndexView<E>)> {
        let len = self.count * E::SIZE;
        self.map.flush()?;
        drop(self.map);
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        file.set_len(len as u64)?;
        file.sync_all()?;
        let view = IndexView::new(map_read(&file, len)?, self.count);
        Ok((file, view))
    }
}

// The active index's mapping is written by its writer and read by views on other
// threads at once, so no Rust reference into it is ever made: entries are copied in and
// out through raw pointers. A view reads only entries below the count it loaded
// (Acquire), which the writer stored (Release) after writing them.

/// Entry `i` of a raw index mapping.
fn read_raw<E: Entry>(map: &MmapRaw, i: usize) -> E {
    let at = i * E::SIZE;
    assert!(
        at + E::SIZE <= map.len(),
        "index entry {i} past the mapping"
    );
    let mut buf = [0u8; 16];
    // SAFETY: in bounds (checked above) of a mapping that lives while `map` does; the
    // bytes are copied out, no reference into the mapping is made.
    unsafe { std::ptr::copy_nonoverlapping(map.as_ptr().add(at), buf.as_mut_ptr(), E::SIZE) };
    E::decode(&buf[..E::SIZE])
}

/// Writes `e` as entry `i` of a raw index mapping.
fn write_raw<E: Entry>(map: &MmapRaw, i: usize, e: &E) {
    let at = i * E::SIZE;
    assert!(
        at + E::SIZE <= map.len(),
        "index entry {i} past the mapping"
    );
    let mut buf = [0u8; 16];
    e.encode(&mut buf[..E::SIZE]);
    // SAFETY: in bounds (checked above); only the index's writer writes its mapping, and
    // views read an entry only after its count is published.
    unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), map.as_mut_ptr().add(at), E::SIZE) };
}

/// Zeroes `range` of a raw index mapping.
fn zero_raw(map: &MmapRaw, range: std::ops::Range<usize>) {
    assert!(range.start <= range.end && range.end <= map.len());
    // SAFETY: in bounds (checked above); as for `write_raw`.
    unsafe { std::ptr::write_bytes(map.as_mut_ptr().add(range.start), 0, range.len()) };
}
