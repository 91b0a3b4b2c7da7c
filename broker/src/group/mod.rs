//! Consumer groups: committed offsets kept in the internal topic `__consumer_offsets`.
//!
//! A group's offsets live in partition `hash(group) % OFFSETS_PARTITIONS` of that topic;
//! the leader of that partition is the group's coordinator. A commit is one batch (one
//! record per offset), appended with acks=all, so it is acknowledged only once committed
//! (by Raft in a cluster) and all offsets of a commit land together. The coordinator
//! keeps the latest offset per (group, topic, partition) in memory: an [`OffsetsCache`]
//! per offsets partition that reads every committed record it has not yet seen before
//! answering, so a broker that becomes leader rebuilds it by replaying the partition.

pub mod assign;
pub mod coordinator;
pub mod membership;

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use rafka_proto::batch::{BatchBuilder, Record, RecordBatch};
use rafka_proto::v1;
use serde::{Deserialize, Serialize};

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Partitions of [`OFFSETS_TOPIC`].
pub const OFFSETS_PARTITIONS: u32 = 8;
/// Longest group name accepted.
pub const MAX_GROUP_LEN: usize = 249;
/// Longest offset metadata accepted.
pub const MAX_METADATA_LEN: usize = 4096;

/// The partition of [`OFFSETS_TOPIC`] holding `group`'s offsets.
pub fn offsets_partition(group: &str) -> u32 {
    crc32fast::hash(group.as_bytes()) % OFFSETS_PARTITIONS
}

/// Checks a group name; the error says what is wrong.
pub fn validate_group(group: &str) -> Result<(), String> {
    if group.is_empty() || group.len() > MAX_GROUP_LEN || group.chars().any(char::is_control) {
        return Err(format!(
            "invalid group id `{}`: use 1 to {MAX_GROUP_LEN} characters, no control characters",
            crate::error::shown(group)
        ));
    }
    Ok(())
}

/// One committed offset as stored (the record's value, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    group: String,
    topic: String,
    partition: u32,
    offset: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    metadata: String,
    /// A tombstone: the group's offsets are forgotten.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
}

/// A commit as one batch: a record per offset, keyed by the group.
pub fn commit_batch(group: &str, offsets: &[v1::CommittedOffset], timestamp: i64) -> Bytes {
    let records: Vec<Stored> = offsets
        .iter()
        .map(|o| Stored {
            group: group.to_string(),
            topic: o.topic.clone(),
            partition: o.partition,
            offset: o.offset,
            metadata: o.metadata.clone(),
            deleted: false,
        })
        .collect();
    stored_batch(group, &records, timestamp)
}

/// A tombstone batch forgetting `group`'s offsets.
pub fn delete_batch(group: &str, timestamp: i64) -> Bytes {
    let tombstone = Stored {
        group: group.to_string(),
        topic: String::new(),
        partition: 0,
        offset: 0,
        metadata: String::new(),
        deleted: true,
    };
    stored_batch(group, &[tombstone], timestamp)
}

/// Stored records as one batch, each keyed by the group.
fn stored_batch(group: &str, records: &[Stored], timestamp: i64) -> Bytes {
    let mut b = BatchBuilder::new();
    for r in records {
        let value = serde_json::to_vec(r).expect("plain data serializes");
        b.append(&Record {
            timestamp,
            key: Some(group.as_bytes()),
            value: Some(&value),
            headers: &[],
        });
    }
    b.seal()
}

/// The latest committed offsets of the groups of one offsets partition.
#[derive(Debug, Default)]
pub struct OffsetsCache {
    /// The next offset of the offsets partition to read.
    pub next: u64,
    groups: HashMap<String, GroupOffsets>,
}

/// One group's committed offset and metadata per (topic, partition).
type GroupOffsets = BTreeMap<(String, u32), (u64, String)>;

impl OffsetsCache {
    /// An empty cache that reads from `offset` on.
    pub fn starting_at(offset: u64) -> Self {
        Self {
            next: offset,
            groups: HashMap::new(),
        }
    }

    /// Folds in committed batches (whole batches, as a fetch returns them); records
    /// before `next` are skipped, records that do not decode are ignored.
    pub fn apply(&mut self, batches: &[u8]) {
        let mut rest = batches;
        while !rest.is_empty() {
            let Ok(h) = rafka_proto::batch::BatchHeader::parse(rest) else {
                return;
            };
            let Some(batch) = rest.get(..h.total_len()) else {
                return;
            };
            rest = &rest[h.total_len()..];
            let next = h.next_offset() as u64;
            if next <= self.next {
                continue;
            }
            if let Ok(b) = RecordBatch::parse(batch) {
                for r in b.records().flatten() {
                    let offset = h.base_offset as u64 + r.offset_delta as u64;
                    let Some(value) = r.value.filter(|_| offset >= self.next) else {
                        continue;
                    };
                    if let Ok(s) = serde_json::from_slice::<Stored>(value) {
                        if s.deleted {
                            self.groups.remove(&s.group);
                            continue;
                        }
                        self.groups
                            .entry(s.group)
                            .or_default()
                            .insert((s.topic, s.partition), (s.offset, s.metadata));
                    }
                }
            }
            self.next = next;
        }
    }

    /// `group`'s committed offsets: those in `only` (every one when empty).
    pub fn offsets(&self, group: &str, only: &[v1::TopicPartitionRef]) -> Vec<v1::CommittedOffset> {
        let Some(g) = self.groups.get(group) else {
            return Vec::new();
        };
        let wanted = |t: &str, p: u32| {
            only.is_empty() || only.iter().any(|r| r.topic == t && r.partition == p)
        };
        g.iter()
            .filter(|((t, p), _)| wanted(t, *p))
            .map(|((t, p), (o, m))| v1::CommittedOffset {
                topic: t.clone(),
                partition: *p,
                offset: *o,
                metadata: m.clone(),
            })
            .collect()
    }

    /// Groups with committed offsets here.
    pub fn groups(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(topic: &str, partition: u32, offset: u64) -> v1::CommittedOffset {
        v1::CommittedOffset {
            topic: topic.into(),
            partition,
            offset,
            metadata: String::new(),
        }
    }

    /// `batch` stamped at base offset `base`, as the log stores it.
    fn at(mut batch: Vec<u8>, base: u64) -> Vec<u8> {
        batch[..8].copy_from_slice(&(base as i64).to_be_bytes());
        batch
    }

    #[test]
    fn the_latest_commit_wins_and_replays_skip_what_was_read() {
        let mut cache = OffsetsCache::default();
        let first = at(
            commit_batch("g", &[offset("t", 0, 5), offset("t", 1, 7)], 1).to_vec(),
            0,
        );
        let second = at(commit_batch("g", &[offset("t", 0, 9)], 2).to_vec(), 2);
        let other = at(commit_batch("h", &[offset("u", 0, 1)], 3).to_vec(), 3);
        let mut all = first.clone();
        all.extend_from_slice(&second);
        all.extend_from_slice(&other);
        cache.apply(&all);
        assert_eq!(cache.next, 4);
        assert_eq!(
            cache.offsets("g", &[]),
            vec![offset("t", 0, 9), offset("t", 1, 7)]
        );
        let only = [v1::TopicPartitionRef {
            topic: "t".into(),
            partition: 1,
        }];
        assert_eq!(cache.offsets("g", &only), vec![offset("t", 1, 7)]);
        assert_eq!(cache.offsets("h", &[]), vec![offset("u", 0, 1)]);
        assert!(cache.offsets("nobody", &[]).is_empty());
        // Reading the same batches again (a fetch from an older offset) changes nothing.
        cache.apply(&first);
        assert_eq!(cache.offsets("g", &[])[0], offset("t", 0, 9));
        let mut groups = cache.groups();
        groups.sort();
        assert_eq!(groups, ["g", "h"]);
        cache.apply(&at(delete_batch("g", 4).to_vec(), 4));
        assert!(cache.offsets("g", &[]).is_empty(), "deleted");
        assert_eq!(cache.groups(), ["h"]);
    }

    #[test]
    fn group_names_are_checked_and_spread() {
        assert!(validate_group("").is_err());
        assert!(validate_group(&"x".repeat(250)).is_err());
        assert!(validate_group("a\nb").is_err());
        assert!(validate_group("orders-service").is_ok());
        let used: std::collections::HashSet<u32> = (0..100)
            .map(|i| offsets_partition(&format!("g{i}")))
            .collect();
        assert_eq!(used.len() as u32, OFFSETS_PARTITIONS);
    }
}
