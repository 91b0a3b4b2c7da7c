//! Concurrent readers of a partition log.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use rafka_proto::batch::{verify_stored, Compression, RecordBatch};

use super::segment::SegmentView;
use super::LogError;

/// The segments as readers see them, by base offset. The writer swaps entries in and out.
#[derive(Default)]
pub(crate) struct Shared {
    segments: RwLock<BTreeMap<u64, Arc<SegmentView>>>,
}

impl Shared {
    pub fn read(&self) -> RwLockReadGuard<'_, BTreeMap<u64, Arc<SegmentView>>> {
        // A panic while holding the lock cannot leave the map half-updated: every writer
        // does one insert or remove at a time.
        self.segments.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<u64, Arc<SegmentView>>> {
        self.segments.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cheap, cloneable handle for reading a partition log from any thread while one writer
/// appends. Reads see only whole batches that were appended before the read started.
#[derive(Clone)]
pub struct LogReader {
    pub(crate) shared: Arc<Shared>,
}

impl LogReader {
    /// First offset held by the log.
    pub fn log_start_offset(&self) -> u64 {
        self.shared
            .read()
            .values()
            .next()
            .map_or(0, |s| s.base_offset)
    }

    /// Offset the next appended record will get.
    pub fn log_end_offset(&self) -> u64 {
        self.shared
            .read()
            .values()
            .next_back()
            .map_or(0, |s| s.next_offset())
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared.read().values().map(|s| s.len() as u64).sum()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.shared.read().len()
    }

    /// Whole batches starting with the one that holds `offset`, as one slice of the mapped
    /// segment (no copy): as many as fit in `max_bytes`, but always at least one, so a
    /// large batch never blocks a reader. Empty at the log end. Each batch's checksum is
    /// verified, so damage on disk is an error, never data.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes, LogError> {
        self.read_below(offset, max_bytes, u64::MAX)
    }

    /// Like [`read`](Self::read), but only batches that end at or before `end_offset` (a
    /// high watermark): nothing past it is returned.
    pub fn read_below(
        &self,
        offset: u64,
        max_bytes: usize,
        end_offset: u64,
    ) -> Result<Bytes, LogError> {
        let segments = self.shared.read();
        let (Some(first), Some(last)) = (segments.values().next(), segments.values().next_back())
        else {
            return Ok(Bytes::new());
        };
        let (log_start, log_end) = (first.base_offset, last.next_offset());
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let from = segments
            .range(..=offset)
            .next_back()
            .map_or(log_start, |(&b, _)| b);
        for seg in segments.range(from..).map(|(_, s)| s) {
            let next = seg.next_offset();
            let len = seg.len();
            if offset >= next {
                continue;
            }
            let files = seg.files()?;
            let start = seg.find_position(&files, offset, len)?;
            if start >= len {
                continue;
            }
            let data = &files.data;
            let mut end = start;
            while end < len {
                let (h, n) =
                    verify_stored(&data[end..len]).map_err(|e| seg.corrupt(end, e.to_string()))?;
                let too_big = end > start && end + n - start > max_bytes;
                if too_big || h.next_offset() as u64 > end_offset {
                    break;
                }
                end += n;
            }
            return Ok(data.slice(start..end));
        }
        Ok(Bytes::new())
    }

    /// The batch stored at `at`, checksum verified, as a slice of the mapping.
    pub fn batch_at(&self, at: super::Locator) -> Result<Bytes, LogError> {
        let seg = self.shared.read().get(&at.segment).cloned();
        let seg = seg.ok_or_else(|| LogError::Config(format!("no segment {}", at.segment)))?;
        let len = seg.len();
        let pos = at.position as usize;
        if pos >= len {
            return Err(seg.corrupt(pos, format!("no batch at byte {pos} (segment holds {len})")));
        }
        let data = &seg.files()?.data;
        let (_, n) = verify_stored(&data[pos..len]).map_err(|e| seg.corrupt(pos, e.to_string()))?;
        Ok(data.slice(pos..pos + n))
    }

    /// The batch stored at `at` as a slice of the mapping, its checksum not verified: for
    /// Raft entries this replica wrote (and verified) itself, read back for replication
    /// (the follower verifies what it receives) and for the state machine.
    pub fn batch_at_unverified(&self, at: super::Locator) -> Result<Bytes, LogError> {
        let seg = self.shared.read().get(&at.segment).cloned();
        let seg = seg.ok_or_else(|| LogError::Config(format!("no segment {}", at.segment)))?;
        let len = seg.len();
        let pos = at.position as usize;
        let data = &seg.files()?.data;
        let n = rafka_proto::batch::batch_len_at(&data[pos.min(len)..len])
            .filter(|&n| pos + n <= len)
            .ok_or_else(|| {
                seg.corrupt(
                    pos,
                    format!("no whole batch at byte {pos} (segment holds {len})"),
                )
            })?;
        Ok(data.slice(pos..pos + n))
    }

    /// The largest record timestamp in the log (`None` for a log without records: an
    /// empty segment's is -1).
    pub fn max_timestamp(&self) -> Option<i64> {
        let segments = self.shared.read();
        segments
            .values()
            .map(|s| s.max_timestamp())
            .max()
            .filter(|&t| t >= 0)
    }

    /// Offset of the first record whose timestamp is at or after `timestamp`, or `None` if
    /// every record is older. For a compressed batch, its base offset.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        let segments = self.shared.read();
        for seg in segments.values() {
            if seg.max_timestamp() < timestamp {
                continue;
            }
            let next = seg.next_offset();
            let len = seg.len();
            // Every record before the entry's offset is older than `timestamp`.
            let files = seg.files()?;
            let from = files
                .times
                .last_below(timestamp)
                .map_or(seg.base_offset, |e| seg.base_offset + e.rel as u64);
            let mut pos = seg.find_position(&files, from.min(next), len)?;
            while pos < len {
                let (h, n) = verify_stored(&files.data[pos..len])
                    .map_err(|e| seg.corrupt(pos, e.to_string()))?;
                if h.max_timestamp >= timestamp && !h.is_control() {
                    if h.compression() != Some(Compression::None) {
                        return Ok(Some(h.base_offset as u64));
                    }
                    let batch = RecordBatch::parse(&files.data[pos..pos + n])
                        .map_err(|e| seg.corrupt(pos, e.to_string()))?;
                    for r in batch.records() {
                        let r = r.map_err(|e| seg.corrupt(pos, e.to_string()))?;
                        if h.base_timestamp + r.timestamp_delta >= timestamp {
                            return Ok(Some(h.base_offset as u64 + r.offset_delta as u64));
                        }
                    }
                }
                pos += n;
            }
        }
        Ok(None)
    }
}
