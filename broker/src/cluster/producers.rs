//! Idempotent producers' state of a partition: per producer id, its epoch and the
//! sequence ranges and offsets of its last five batches (Kafka's window).
//!
//! The state is folded from committed batches by the partition's state machine on every
//! replica, so it is part of the replicated partition state: rebuilt from the log on a
//! restart and on a new leader, and carried in snapshots. Folding is monotonic (a batch
//! at or below a producer's last sequence changes nothing), so replaying entries that a
//! snapshot already covers leaves the state as it was, and a snapshot may be taken as
//! of an earlier entry with the state as of now.

use std::collections::{HashMap, VecDeque};

use rafka_proto::batch::BatchHeader;
use serde::{Deserialize, Serialize};

use crate::cluster::MetadataError;
use crate::raft::state_machine::Applier;

/// Batches remembered per producer (Kafka's window; also the most requests a producer
/// may have in flight per partition).
pub const WINDOW: usize = 5;

/// A producer whose last batch is this much older than the partition's newest batch
/// is forgotten (Kafka's `producer.id.expiration.ms` default, one day).
pub const EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqBatch {
    /// Sequence of its first record.
    pub first_seq: i32,
    /// Sequence of its last record.
    pub last_seq: i32,
    /// Offset of its first record.
    pub base_offset: u64,
    /// Offset after its last record.
    pub next_offset: u64,
}

/// What is known of one producer on this partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    /// Its epoch.
    pub epoch: i16,
    /// Its last batches, oldest first.
    pub batches: VecDeque<SeqBatch>,
    /// Max timestamp of its last batch (for expiry).
    pub last_timestamp: i64,
}

/// How an incoming idempotent batch relates to what is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next batch expected: append it.
    Next,
    /// Written already: answer with the original's offsets.
    Duplicate(SeqBatch),
    /// Sequences are missing before it (an earlier batch still on its way).
    Gap,
    /// Older than every remembered batch and not one of them.
    TooOld,
    /// Its epoch is older than the producer's: another instance took over.
    Fenced,
    /// An unknown producer whose first batch does not start at sequence 0.
    UnknownProducer,
}

/// The sequence after `seq` (sequences wrap to 0 after `i32::MAX`, as Kafka's).
pub fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// The last sequence of a batch of `records` starting at `first`.
pub fn last_seq(first: i32, records: i32) -> i32 {
    let last = first as i64 + records.max(1) as i64 - 1;
    (last % (i32::MAX as i64 + 1)) as i32
}

/// True when `seq` lies ahead of `expected` (within half the sequence space).
fn ahead(seq: i32, expected: i32) -> bool {
    let distance = (seq as i64 - expected as i64).rem_euclid(i32::MAX as i64 + 1);
    distance > 0 && distance < (1 << 30)
}

/// The idempotent producers of a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Option<ProducersData>", into = "Option<ProducersData>")]
pub struct Producers {
    data: ProducersData,
}

/// What a snapshot holds (snapshots of partitions from before producer state hold
/// `null`, read as no producers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct ProducersData {
    producers: HashMap<i64, ProducerEntry>,
    /// Newest max timestamp folded in.
    newest: i64,
}

impl From<Option<ProducersData>> for Producers {
    fn from(d: Option<ProducersData>) -> Self {
        Self {
            data: d.unwrap_or_default(),
        }
    }
}

impl From<Producers> for Option<ProducersData> {
    fn from(p: Producers) -> Self {
        Some(p.data)
    }
}

impl Producers {
    /// A producer's entry, if known.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.data.producers.get(&producer_id)
    }

    /// Producers known.
    pub fn len(&self) -> usize {
        self.data.producers.len()
    }

    /// True when no producer is known.
    pub fn is_empty(&self) -> bool {
        self.data.producers.is_empty()
    }

    /// Folds in a committed batch written at `[base_offset, next_offset)`.
    pub fn fold(&mut self, h: &BatchHeader, base_offset: u64, next_offset: u64) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        self.data.newest = self.data.newest.max(h.max_timestamp);
        let batch = SeqBatch {
            first_seq: h.base_sequence,
            last_seq: last_seq(h.base_sequence, h.record_count),
            base_offset,
            next_offset,
        };
        let entry = self.data.producers.entry(h.producer_id).or_default();
        if h.producer_epoch > entry.epoch {
            *entry = ProducerEntry {
                epoch: h.producer_epoch,
                ..ProducerEntry::default()
            };
        } else if h.producer_epoch < entry.epoch {
            return;
        }
        if let Some(last) = entry.batches.back() {
            if !ahead(batch.first_seq, last.last_seq) {
                return; // folded already (a replay after a snapshot)
            }
        }
        entry.batches.push_back(batch);
        while entry.batches.len() > WINDOW {
            entry.batches.pop_front();
        }
        entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
        let horizon = self.data.newest.saturating_sub(EXPIRATION_MS);
        self.data
            .producers
            .retain(|_, e| e.last_timestamp >= horizon);
    }

    /// How a batch of `producer_id`/`epoch` with sequences `first..=last` relates to the
    /// folded state, given the last sequence of batches accepted but not yet folded
    /// (`pending`, same epoch).
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first: i32,
        last: i32,
        pending: Option<(i16, i32)>,
    ) -> Verdict {
        let entry = self.get(producer_id);
        let known_epoch = entry.map(|e| e.epoch).max(pending.map(|p| p.0));
        if known_epoch.is_some_and(|k| epoch < k) {
            return Verdict::Fenced;
        }
        let same_epoch = |e: i16| e == epoch;
        if let Some(e) = entry.filter(|e| same_epoch(e.epoch)) {
            if let Some(b) = e
                .batches
                .iter()
                .find(|b| b.first_seq == first && b.last_seq == last)
            {
                return Verdict::Duplicate(*b);
            }
        }
        let last_known = pending
            .filter(|p| same_epoch(p.0))
            .map(|p| p.1)
            .or_else(|| {
                entry
                    .filter(|e| same_epoch(e.epoch))
                    .and_then(|e| e.batches.back().map(|b| b.last_seq))
            });
        match last_known {
            None if first == 0 => Verdict::Next,
            None => Verdict::UnknownProducer,
            Some(l) if first == next_seq(l) => Verdict::Next,
            Some(l) if ahead(first, next_seq(l)) => Verdict::Gap,
            Some(_) => Verdict::TooOld,
        }
    }
}

impl Applier for Producers {
    const REPLAY_SAFE: bool = true;

    fn apply_batch(&mut self, batch: &[u8]) -> Option<MetadataError> {
        if let Ok(h) = BatchHeader::parse(batch) {
            self.fold(&h, h.base_offset as u64, h.next_offset() as u64);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, records: i32, base: i64, ts: i64) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: ts,
            max_timestamp: ts,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: records,
        }
    }

    fn fold(p: &mut Producers, h: BatchHeader) {
        p.fold(&h, h.base_offset as u64, h.next_offset() as u64);
    }

    #[test]
    fn sequences_in_order_duplicates_gaps_and_fencing() {
        let mut p = Producers::default();
        assert_eq!(p.check(7, 0, 0, 9, None), Verdict::Next);
        assert_eq!(p.check(7, 0, 5, 9, None), Verdict::UnknownProducer);
        fold(&mut p, header(7, 0, 0, 10, 100, 1));
        fold(&mut p, header(7, 0, 10, 10, 110, 1));
        assert_eq!(p.check(7, 0, 20, 29, None), Verdict::Next);
        let Verdict::Duplicate(b) = p.check(7, 0, 0, 9, None) else {
            panic!("a duplicate");
        };
        assert_eq!((b.base_offset, b.next_offset), (100, 110));
        assert_eq!(p.check(7, 0, 30, 39, None), Verdict::Gap);
        assert_eq!(p.check(7, 0, 5, 14, None), Verdict::TooOld);
        // Accepted but not folded yet: the next expected follows it.
        assert_eq!(p.check(7, 0, 30, 39, Some((0, 29))), Verdict::Next);
        assert_eq!(p.check(7, 0, 20, 29, Some((0, 29))), Verdict::TooOld);
        // A newer epoch starts again at 0; an older one is fenced.
        assert_eq!(p.check(7, 1, 0, 4, None), Verdict::Next);
        fold(&mut p, header(7, 1, 0, 5, 120, 1));
        assert_eq!(p.check(7, 0, 20, 29, None), Verdict::Fenced);
    }

    #[test]
    fn the_window_keeps_five_batches_and_replays_change_nothing() {
        let mut p = Producers::default();
        for i in 0..8 {
            fold(&mut p, header(1, 0, i * 2, 2, 10 * i as i64, 1));
        }
        let e = p.get(1).unwrap();
        assert_eq!(e.batches.len(), WINDOW);
        assert_eq!(e.batches.front().unwrap().first_seq, 6);
        let before = p.clone();
        fold(&mut p, header(1, 0, 8, 2, 40, 1)); // replayed
        assert_eq!(p, before);
        assert_eq!(p.check(1, 0, 0, 1, None), Verdict::TooOld);
    }

    #[test]
    fn idle_producers_expire_by_the_partition_clock() {
        let mut p = Producers::default();
        fold(&mut p, header(1, 0, 0, 1, 0, 1_000));
        fold(&mut p, header(2, 0, 0, 1, 1, 1_000 + EXPIRATION_MS));
        assert_eq!(p.len(), 2);
        fold(&mut p, header(2, 0, 1, 1, 2, 1_001 + EXPIRATION_MS));
        assert!(p.get(1).is_none());
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(next_seq(i32::MAX), 0);
        assert_eq!(last_seq(i32::MAX - 1, 3), 0);
        let mut p = Producers::default();
        // A long-lived producer near the end of the sequence space.
        fold(&mut p, header(1, 0, i32::MAX - 1, 2, 0, 1));
        assert_eq!(p.get(1).unwrap().batches[0].last_seq, i32::MAX);
        assert_eq!(p.check(1, 0, 0, 4, None), Verdict::Next);
        assert_eq!(p.check(1, 0, 1, 4, None), Verdict::Gap);
        fold(&mut p, header(1, 0, 0, 5, 2, 1));
        assert_eq!(p.check(1, 0, 5, 5, None), Verdict::Next);
        assert!(matches!(
            p.check(1, 0, i32::MAX - 1, i32::MAX, None),
            Verdict::Duplicate(_)
        ));
    }

    #[test]
    fn snapshots_of_partitions_without_producer_state_read_as_empty() {
        let p: Producers = serde_json::from_str("null").unwrap();
        assert!(p.is_empty());
        let json = serde_json::to_string(&Producers::default()).unwrap();
        let back: Producers = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Producers::default());
    }
}
