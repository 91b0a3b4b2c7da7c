//! Sealed segments are mapped when read, not when opened, and at most
//! [`MAX_MAPPED_SEALED`] of them (process-wide) stay mapped: beyond that the least
//! recently read are unmapped (readers holding their bytes keep them until done).
//!
//! Each mapping is one entry of the process's memory map, and Linux allows 65,530 by
//! default (`vm.max_map_count`): thousands of partitions with a few sealed segments each
//! (three files apiece) would run out, the way Kafka does ("Map failed") unless the limit
//! is raised. Opening a broker also maps nothing it does not read.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::file::map_read;
use super::index::{IndexView, OffsetEntry, TimeEntry};
use super::LogError;

/// How many sealed segments stay mapped at most, by default (three mappings each).
pub const MAX_MAPPED_SEALED: usize = 4096;

/// A segment's mapped files: its data and its two indexes.
pub(crate) struct SegmentFiles {
    pub data: bytes::Bytes,
    pub offsets: IndexView<OffsetEntry>,
    pub times: IndexView<TimeEntry>,
}

/// A sealed segment's files, mapped on demand.
pub(crate) struct LazyFiles {
    paths: [PathBuf; 3],
    /// Bytes of data, offset index entries and time index entries.
    sizes: [usize; 3],
    mapped: Mutex<Option<Arc<SegmentFiles>>>,
    /// When it was last read, on the cache's clock.
    used: AtomicU64,
}

impl LazyFiles {
    /// The files at `paths` (log, offset index, time index) holding `len` bytes of data
    /// and `offsets` and `times` index entries; `mapped` when the caller has them mapped
    /// already (a segment just sealed).
    pub fn new(
        paths: [PathBuf; 3],
        len: usize,
        offsets: usize,
        times: usize,
        mapped: Option<Arc<SegmentFiles>>,
    ) -> Arc<Self> {
        let lazy = Arc::new(Self {
            paths,
            sizes: [len, offsets, times],
            used: AtomicU64::new(CACHE.clock.fetch_add(1, Ordering::Relaxed)),
            mapped: Mutex::new(None),
        });
        if let Some(files) = mapped {
            *lazy.lock() = Some(files);
            CACHE.note_mapped(&lazy);
        }
        lazy
    }

    /// The files, mapped now if they are not.
    pub fn get(self: &Arc<Self>) -> Result<Arc<SegmentFiles>, LogError> {
        self.used.store(
            CACHE.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let files = {
            let mut mapped = self.lock();
            if let Some(files) = mapped.as_ref() {
                return Ok(files.clone());
            }
            let files = Arc::new(self.map()?);
            *mapped = Some(files.clone());
            files
        };
        CACHE.note_mapped(self);
        Ok(files)
    }

    /// True while the files are mapped.
    #[cfg(test)]
    pub fn is_mapped(&self) -> bool {
        self.lock().is_some()
    }

    fn map(&self) -> Result<SegmentFiles, LogError> {
        let [len, offsets, times] = self.sizes;
        let map = |path: &PathBuf, len: usize| {
            let file = std::fs::File::open(path).map_err(LogError::io(path))?;
            map_read(&file, len).map_err(LogError::io(path))
        };
        Ok(SegmentFiles {
            data: map(&self.paths[0], len)?,
            offsets: IndexView::new(map(&self.paths[1], offsets * 8)?, offsets),
            times: IndexView::new(map(&self.paths[2], times * 12)?, times),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<SegmentFiles>>> {
        self.mapped.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The process's mapped sealed segments.
struct Cache {
    clock: AtomicU64,
    max: AtomicUsize,
    mapped: Mutex<Vec<Weak<LazyFiles>>>,
}

static CACHE: Cache = Cache {
    clock: AtomicU64::new(0),
    max: AtomicUsize::new(MAX_MAPPED_SEALED),
    mapped: Mutex::new(Vec::new()),
};

impl Cache {
    /// Records a new mapping; past the limit, unmaps the least recently read eighth.
    fn note_mapped(&self, lazy: &Arc<LazyFiles>) {
        let max = self.max.load(Ordering::Relaxed).max(1);
        let evict: Vec<Arc<LazyFiles>> = {
            let mut mapped = self.mapped.lock().unwrap_or_else(|e| e.into_inner());
            mapped.push(Arc::downgrade(lazy));
            if mapped.len() <= max {
                return;
            }
            let mut live: Vec<Arc<LazyFiles>> = mapped.iter().filter_map(Weak::upgrade).collect();
            // Least recently read first.
            live.sort_by_key(|l| l.used.load(Ordering::Relaxed));
            let evicted = live.len().saturating_sub(max - max / 8);
            let kept = live.split_off(evicted);
            *mapped = kept.iter().map(Arc::downgrade).collect();
            live
        };
        // Unmapped outside the cache's lock; a reader holding the files keeps them.
        for lazy in evict {
            *lazy.lock() = None;
        }
    }
}

/// Sets how many sealed segments stay mapped at most (tests).
#[cfg(test)]
pub(crate) fn set_max_mapped(max: usize) {
    CACHE.max.store(max, Ordering::Relaxed);
}
