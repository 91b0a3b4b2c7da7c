//! Scanning a segment: where index entries go, and how far its batches are intact
//! (fully validated: length, magic, CRC, header and record framing).
//!
//! The same [`Indexer`] decides index entries when appending and when rebuilding, so a
//! rebuilt index is identical to the one the appends wrote.

use rafka_proto::batch::{RecordBatch, LOG_OVERHEAD};

use super::index::{decode_all, OffsetEntry, TimeEntry};

/// Decides where index entries go: one before the first batch that starts at least
/// `interval` bytes after the previous entry (position 0 is implicit and never indexed).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Indexer {
    interval: usize,
    bytes_since: usize,
    /// Largest batch timestamp seen so far in the segment (-1 if none).
    pub max_ts: i64,
}

impl Indexer {
    pub(crate) fn new(interval: u64) -> Self {
        Self {
            interval: interval as usize,
            bytes_since: 0,
            max_ts: -1,
        }
    }

    /// State right after the entry `at` was written (scanning resumes at its batch).
    pub(crate) fn resume(interval: u64, at: TimeEntry) -> Self {
        Self {
            max_ts: at.ts,
            ..Self::new(interval)
        }
    }

    /// Accounts for the batch of `len` bytes at `pos` with relative base offset `rel`;
    /// returns the index entries to write for it, if any.
    pub(crate) fn on_batch(
        &mut self,
        pos: usize,
        rel: u32,
        len: usize,
        batch_max_ts: i64,
    ) -> Option<(OffsetEntry, TimeEntry)> {
        let entry = (self.bytes_since > 0 && self.bytes_since >= self.interval).then(|| {
            self.bytes_since = 0;
            (
                OffsetEntry {
                    rel,
                    pos: pos as u32,
                },
                TimeEntry {
                    ts: self.max_ts,
                    rel,
                },
            )
        });
        self.bytes_since += len;
        self.max_ts = self.max_ts.max(batch_max_ts);
        entry
    }
}

/// Why a scan ended before the end of the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// Zeros where the next batch would start: the preallocated, never written tail.
    Zeros,
    /// Something that is not an intact next batch.
    Damaged(String),
}

/// Result of scanning a segment.
#[derive(Debug)]
pub(crate) struct Scan {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    /// Bytes of intact batches.
    pub len: usize,
    pub next_offset: u64,
    pub indexer: Indexer,
    /// Where and why the scan stopped before the end of the data.
    pub stop: Option<(usize, Stop)>,
}

/// Recovers a segment with base offset `base` from its data and stored index bytes.
///
/// Trusts the stored index up to its last entry that is consistent and points at an
/// intact batch with the expected offset; from there verifies every batch (length, magic,
/// checksum, offset continuity) until the data ends or a batch is not intact. Entries for
/// the scanned batches are recomputed.
pub(crate) fn recover(
    data: &[u8],
    base: u64,
    stored_offsets: &[u8],
    stored_times: &[u8],
    interval: u64,
) -> Scan {
    let offs: Vec<OffsetEntry> = decode_all(stored_offsets);
    let times: Vec<TimeEntry> = decode_all(stored_times);
    let mut consistent = 0;
    while consistent < offs.len().min(times.len()) {
        let (o, t) = (offs[consistent], times[consistent]);
        let mut ok = o.pos > 0 && (o.pos as usize) < data.len() && t.rel == o.rel;
        if let Some(i) = consistent.checked_sub(1) {
            ok &= o.pos > offs[i].pos && o.rel >= offs[i].rel && t.ts >= times[i].ts;
        }
        if !ok {
            break;
        }
        consistent += 1;
    }
    let resume = (0..consistent).rev().find(|&i| {
        let o = offs[i];
        matches!(RecordBatch::parse_prefix(&data[o.pos as usize..]),
            Ok((b, _)) if b.header().base_offset == (base + o.rel as u64) as i64)
    });
    let (mut pos, mut next, indexer, kept) = match resume {
        Some(i) => (
            offs[i].pos as usize,
            base + offs[i].rel as u64,
            Indexer::resume(interval, times[i]),
            i + 1,
        ),
        None => (0, base, Indexer::new(interval), 0),
    };
    let mut scan = Scan {
        offsets: offs[..kept].to_vec(),
        times: times[..kept].to_vec(),
        len: 0,
        next_offset: 0,
        indexer,
        stop: None,
    };
    while pos < data.len() {
        let rest = &data[pos..];
        // Full validation (framing too): bytes staged for a batch that then failed
        // validation must never come back as data after a crash.
        let header = match RecordBatch::parse_prefix(rest).map(|(b, n)| (*b.header(), n)) {
            Ok((h, n)) if h.base_offset == next as i64 => (h, n),
            Ok((h, _)) => {
                let why = format!(
                    "batch at byte {pos} has base offset {} where {next} was expected",
                    h.base_offset
                );
                scan.stop = Some((pos, Stop::Damaged(why)));
                break;
            }
            Err(e) => {
                let head = &rest[..rest.len().min(LOG_OVERHEAD)];
                let stop = if head.iter().all(|&b| b == 0) {
                    Stop::Zeros
                } else {
                    Stop::Damaged(format!("batch at byte {pos}: {e}"))
                };
                scan.stop = Some((pos, stop));
                break;
            }
        };
        let (h, n) = header;
        if let Some((o, t)) = scan
            .indexer
            .on_batch(pos, (next - base) as u32, n, h.max_timestamp)
        {
            scan.offsets.push(o);
            scan.times.push(t);
        }
        pos += n;
        next = h.next_offset() as u64;
    }
    scan.len = pos;
    scan.next_offset = next;
    scan
}
