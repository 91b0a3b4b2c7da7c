//! Scrubbing: verifying sealed segments whole, and repairing a damaged one in place with
//! the same bytes from another replica.
//!
//! A sealed segment is verified past its last index entry when it is opened, and every
//! batch by its checksum when it is read; a byte flipped on disk (bit rot, a bad sector,
//! a stray write) in a segment nobody reads stays unseen until then. The broker's
//! scrubber (`cluster::scrub`) reads every sealed segment in the background instead.
//!
//! A damaged replica must not truncate its log and catch up: a Raft voter that forgets
//! entries it acknowledged can elect a leader without them. It need not either: the
//! entries below the commit point are byte-identical on every replica, so the segment is
//! rewritten in place with another replica's copy of the same offsets ([`LogReader::
//! read_raw`]). Record-less control batches (Raft's blank and membership entries) take
//! no offset, so those at either end of the range may lie in this segment or a
//! neighbour: of the ways to cut the copy to the segment's length, the one that differs
//! from this replica's bytes only in batches damaged here is taken, and it must verify
//! batch by batch before a byte is written.

use std::fs::OpenOptions;
use std::sync::Arc;

use rafka_proto::batch::{field, verify_stored};

use super::file::write_all_at;
use super::segment::SegmentView;
use super::{LogError, LogReader};

/// The most [`LogReader::read_raw`] returns for one request of another broker.
pub const MAX_RAW_READ: usize = 64 << 20;

/// A sealed segment's offsets and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedRange {
    /// Its first offset.
    pub base: u64,
    /// The offset after its last record.
    pub next: u64,
    /// Its bytes.
    pub len: usize,
}

impl LogReader {
    /// The sealed segments (every segment but the last, active one), oldest first.
    pub fn sealed_segments(&self) -> Vec<SealedRange> {
        let segments = self.shared.read();
        let sealed = segments.len().saturating_sub(1);
        (segments.values().take(sealed))
            .map(|s| SealedRange {
                base: s.base_offset,
                next: s.next_offset(),
                len: s.len(),
            })
            .collect()
    }

    /// Verifies every batch of the segment at `base` (length, magic, checksum) and that
    /// they fill it exactly; the first damage as [`LogError::Corrupt`].
    pub fn verify_segment(&self, base: u64) -> Result<(), LogError> {
        let seg = self.segment(base)?;
        let files = seg.files()?;
        let len = seg.len();
        verify_all(&files.data[..len]).map_err(|(pos, why)| seg.corrupt(pos, why))?;
        Ok(())
    }

    /// The stored batches whose base offset is in `from..to`, and the record-less ones
    /// at `to`, byte for byte across segments; at most `max_bytes`.
    pub fn read_raw(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<u8>, LogError> {
        let segments: Vec<Arc<SegmentView>> = self.shared.read().values().cloned().collect();
        let mut out = Vec::new();
        for seg in segments.iter().filter(|s| s.next_offset() >= from) {
            if seg.base_offset > to {
                break;
            }
            let files = seg.files()?;
            let len = seg.len();
            // From the batch holding `from - 1`: record-less batches at `from` come after
            // it (a lookup of `from` itself would pass them).
            let mut pos = if from <= seg.base_offset {
                0
            } else {
                seg.find_position(&files, from - 1, len)?
            };
            while pos < len {
                let h = seg.header_at(&files.data, pos, len)?;
                let (b, n) = (h.base_offset as u64, h.total_len());
                if b > to || (b == to && h.record_count > 0) {
                    return Ok(out);
                }
                if b >= from {
                    if out.len() + n > max_bytes {
                        return Err(LogError::Config(format!(
                            "offsets {from}..{to} hold more than {max_bytes} bytes"
                        )));
                    }
                    out.extend_from_slice(&files.data[pos..pos + n]);
                }
                pos += n;
            }
        }
        Ok(out)
    }

    /// Rewrites the segment at `base` with another replica's bytes of its offsets
    /// (`copy`, from [`read_raw`](Self::read_raw) of `base..next`): only the bytes that
    /// differ, then synced. Returns how many bytes changed. Refused unless some cut of
    /// the copy (dropping control batches at its ends) is as long as the segment,
    /// differs from it only in batches damaged here, verifies batch by batch, and holds
    /// exactly the segment's offsets.
    pub fn repair_segment(&self, base: u64, copy: &[u8]) -> Result<usize, LogError> {
        let seg = self.segment(base)?;
        let len = seg.len();
        let refuse = |why: String| seg.corrupt(0, format!("repair refused: {why}"));
        let files = seg.files()?;
        let data = &files.data[..len];
        let with = best_cut(data, copy).ok_or_else(|| {
            refuse(format!(
                "no cut of the {}-byte copy matches the {len}-byte segment outside its damaged batches",
                copy.len()
            ))
        })?;
        let (first, next) = verify_all(with)
            .map_err(|(pos, why)| refuse(format!("the copy at byte {pos}: {why}")))?;
        if first != Some(seg.base_offset) || next != seg.next_offset() {
            return Err(refuse(format!(
                "the copy holds offsets {first:?}..{next}, the segment {}..{}",
                seg.base_offset,
                seg.next_offset()
            )));
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&seg.path)
            .map_err(LogError::io(&seg.path))?;
        let mut changed = 0;
        let mut i = 0;
        while i < len {
            if data[i] == with[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < len && data[i] != with[i] {
                i += 1;
            }
            write_all_at(&file, &[&with[start..i]], start as u64)
                .map_err(LogError::io(&seg.path))?;
            changed += i - start;
        }
        file.sync_data().map_err(LogError::io(&seg.path))?;
        Ok(changed)
    }

    fn segment(&self, base: u64) -> Result<Arc<SegmentView>, LogError> {
        self.shared
            .read()
            .get(&base)
            .cloned()
            .ok_or_else(|| LogError::Config(format!("no segment at offset {base}")))
    }
}

/// The cut of `copy` (some record-less batches dropped from each end) that is as long
/// as `data` and differs from it only in batches that are damaged in `data`: ones that
/// fail their checks there, or differ only in the header fields the checksum does not
/// cover (offset, length, leader epoch, magic, checksum itself).
fn best_cut<'a>(data: &[u8], copy: &'a [u8]) -> Option<&'a [u8]> {
    // Batch boundaries of the copy, and whether each batch is record-less.
    let mut bounds = vec![0];
    let mut empty = Vec::new();
    let mut pos = 0;
    while pos < copy.len() {
        let (h, n) = verify_stored(&copy[pos..]).ok()?;
        empty.push(h.record_count == 0);
        pos += n;
        bounds.push(pos);
    }
    let batches = empty.len();
    let lead = empty.iter().take_while(|&&e| e).count();
    let trail = empty.iter().rev().take_while(|&&e| e).count();
    for i in 0..=lead.min(batches) {
        for j in 0..=trail.min(batches - i) {
            let (from, to) = (bounds[i], bounds[batches - j]);
            if to - from != data.len() {
                continue;
            }
            let damaged_only = (i..batches - j).all(|k| {
                let (s, e) = (bounds[k] - from, bounds[k + 1] - from);
                let (mine, theirs) = (&data[s..e], &copy[bounds[k]..bounds[k + 1]]);
                mine == theirs
                    || verify_stored(mine).is_err()
                    || mine[field::ATTRIBUTES..] == theirs[field::ATTRIBUTES..]
            });
            if damaged_only {
                return Some(&copy[from..to]);
            }
        }
    }
    None
}

/// Verifies that `data` is whole batches; returns the first one's base offset and the
/// offset after the last, or where and why it is damaged.
fn verify_all(data: &[u8]) -> Result<(Option<u64>, u64), (usize, String)> {
    let (mut pos, mut first, mut next, mut epoch) = (0, None, 0, i32::MIN);
    while pos < data.len() {
        let (h, n) = verify_stored(&data[pos..]).map_err(|e| (pos, e.to_string()))?;
        // The checksum covers neither the base offset nor the leader epoch (the Raft
        // term, which never falls along a log).
        if h.partition_leader_epoch < epoch {
            let why = format!("leader epoch {} after {epoch}", h.partition_leader_epoch);
            return Err((pos, why));
        }
        epoch = h.partition_leader_epoch;
        if first.is_some() && h.base_offset as u64 != next {
            return Err((
                pos,
                format!("batch at offset {} after {next}", h.base_offset),
            ));
        }
        first.get_or_insert(h.base_offset as u64);
        next = h.next_offset() as u64;
        pos += n;
    }
    Ok((first, next))
}
