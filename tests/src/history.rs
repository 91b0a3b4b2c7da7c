//! What a fault run did and saw, and the checkers that find anomalies in it (the
//! Jepsen way: record every operation, then judge the history as a whole).
//!
//! Values are unique strings; producers record each send, acknowledgement (with the
//! partition and offset) and failure; consumers record every record polled, in order;
//! at the end every replica's log is read whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// An acknowledged write.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The value written.
    pub value: String,
    /// Where it was acknowledged.
    pub partition: u32,
    /// See `partition`.
    pub offset: u64,
    /// When, from the run's start.
    pub at: Duration,
}

/// A record one consumer polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Poll {
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Value.
    pub value: String,
}

/// Everything recorded in a run.
#[derive(Debug, Default)]
pub struct History {
    /// Every value handed to a producer.
    pub sent: HashSet<String>,
    /// Acknowledged writes.
    pub acked: Vec<Ack>,
    /// Writes that failed (may or may not be stored: neither is an anomaly).
    pub failed: usize,
    /// The failures' errors (their first 120 characters), counted.
    pub failures: BTreeMap<String, usize>,
    /// Per consumer, its polls in order (a group member's, per assignment: after a
    /// rebalance a member resumes from the committed offsets, so records may come again,
    /// but never out of order within one).
    pub polls: Vec<Vec<Poll>>,
    /// How many of `polls` (the last ones) are a consumer group's: together they must
    /// have delivered every record of the final log.
    pub group_streams: usize,
    /// The group's committed offsets, per partition, in the order they were read.
    pub committed: BTreeMap<u32, Vec<u64>>,
    /// Per replica, per partition, its log's values in offset order (offsets dense from
    /// the log start, which is 0 in a fault run: no retention).
    pub logs: Vec<BTreeMap<u32, Vec<String>>>,
}

/// Anomalies found, by kind (every count must be 0).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Anomalies {
    /// Acknowledged values missing from the final log.
    pub lost: usize,
    /// Values stored more than once.
    pub duplicates: usize,
    /// Acknowledged values stored at another partition or offset than acknowledged.
    pub wrong_offset: usize,
    /// A consumer saw a value at an offset where the final log holds another.
    pub inconsistent_offsets: usize,
    /// A consumer's polls of a partition skipped offsets.
    pub poll_skips: usize,
    /// A consumer's polls of a partition went backwards (or repeated).
    pub nonmonotonic_polls: usize,
    /// Stored values nobody sent.
    pub never_sent: usize,
    /// Partitions whose replicas differ (compared up to the shortest one: all were
    /// given time to catch up first).
    pub divergent_partitions: usize,
    /// Partitions where some replica is shorter than the acknowledged writes.
    pub short_replicas: usize,
    /// Records of the final log the consumer group never delivered.
    pub unconsumed_by_group: usize,
    /// Times a partition's committed group offset was read lower than before.
    pub committed_backwards: usize,
}

impl Anomalies {
    /// The total count.
    pub fn total(&self) -> usize {
        self.lost
            + self.duplicates
            + self.wrong_offset
            + self.inconsistent_offsets
            + self.poll_skips
            + self.nonmonotonic_polls
            + self.never_sent
            + self.divergent_partitions
            + self.short_replicas
            + self.unconsumed_by_group
            + self.committed_backwards
    }

    /// As a JSON object.
    pub fn json(&self) -> String {
        format!(
            "{{\"lost\":{},\"duplicates\":{},\"wrong_offset\":{},\"inconsistent_offsets\":{},\"poll_skips\":{},\"nonmonotonic_polls\":{},\"never_sent\":{},\"divergent_partitions\":{},\"short_replicas\":{},\"unconsumed_by_group\":{},\"committed_backwards\":{}}}",
            self.lost,
            self.duplicates,
            self.wrong_offset,
            self.inconsistent_offsets,
            self.poll_skips,
            self.nonmonotonic_polls,
            self.never_sent,
            self.divergent_partitions,
            self.short_replicas,
            self.unconsumed_by_group,
            self.committed_backwards
        )
    }
}

/// Judges a history; the first replica's log is the reference (the others must match it).
pub fn check(h: &History) -> (Anomalies, Vec<String>) {
    let mut a = Anomalies::default();
    let mut notes = Vec::new();
    let mut note = |s: String| {
        if notes.len() < 20 {
            notes.push(s);
        }
    };
    let Some(reference) = h.logs.first() else {
        return (a, vec!["no replica logs".into()]);
    };
    // Where each value is stored.
    let mut stored: HashMap<&str, Vec<(u32, u64)>> = HashMap::new();
    for (&p, values) in reference {
        for (o, v) in values.iter().enumerate() {
            stored.entry(v).or_default().push((p, o as u64));
        }
    }
    for (v, places) in &stored {
        if places.len() > 1 {
            a.duplicates += 1;
            note(format!("{v} stored {} times: {places:?}", places.len()));
        }
        if !h.sent.contains(*v) {
            a.never_sent += 1;
            note(format!("{v} stored at {places:?} but never sent"));
        }
    }
    for ack in &h.acked {
        match stored.get(ack.value.as_str()) {
            // Acknowledged as written before, its offset no longer known (a retry of an
            // idempotent batch older than the producer's window): present is enough.
            Some(_) if ack.offset == u64::MAX => {}
            None => {
                a.lost += 1;
                note(format!(
                    "{} acknowledged at {}-{} and lost",
                    ack.value, ack.partition, ack.offset
                ));
            }
            Some(places) if !places.contains(&(ack.partition, ack.offset)) => {
                a.wrong_offset += 1;
                note(format!(
                    "{} acknowledged at {}-{}, stored at {places:?}",
                    ack.value, ack.partition, ack.offset
                ));
            }
            Some(_) => {}
        }
    }
    for (c, polls) in h.polls.iter().enumerate() {
        let mut last: HashMap<u32, u64> = HashMap::new();
        for p in polls {
            if let Some(&l) = last.get(&p.partition) {
                if p.offset <= l {
                    a.nonmonotonic_polls += 1;
                    note(format!(
                        "consumer {c}: {}-{} after {l}",
                        p.partition, p.offset
                    ));
                } else if p.offset > l + 1 {
                    a.poll_skips += 1;
                    note(format!(
                        "consumer {c}: {}-{} after {l}: skipped",
                        p.partition, p.offset
                    ));
                }
            }
            last.insert(p.partition, p.offset);
            let stored_here = reference
                .get(&p.partition)
                .and_then(|vs| vs.get(p.offset as usize));
            if stored_here.is_some_and(|v| *v != p.value) {
                a.inconsistent_offsets += 1;
                note(format!(
                    "consumer {c} saw {} at {}-{}, the log holds {:?}",
                    p.value, p.partition, p.offset, stored_here
                ));
            }
        }
    }
    if h.group_streams > 0 {
        let mut delivered: HashSet<(u32, u64)> = HashSet::new();
        for polls in &h.polls[h.polls.len().saturating_sub(h.group_streams)..] {
            delivered.extend(polls.iter().map(|p| (p.partition, p.offset)));
        }
        for (&p, values) in reference {
            let missing = (0..values.len() as u64)
                .filter(|o| !delivered.contains(&(p, *o)))
                .count();
            if missing > 0 {
                a.unconsumed_by_group += missing;
                note(format!(
                    "partition {p}: the group never delivered {missing} of {} records",
                    values.len()
                ));
            }
        }
    }
    for (p, seen) in &h.committed {
        for w in seen.windows(2) {
            if w[1] < w[0] {
                a.committed_backwards += 1;
                note(format!(
                    "partition {p}: committed offset went from {} back to {}",
                    w[0], w[1]
                ));
            }
        }
    }
    let mut acked_end: HashMap<u32, u64> = HashMap::new();
    for ack in h.acked.iter().filter(|a| a.offset != u64::MAX) {
        let e = acked_end.entry(ack.partition).or_default();
        *e = (*e).max(ack.offset + 1);
    }
    let partitions: HashSet<u32> = h.logs.iter().flat_map(|l| l.keys().copied()).collect();
    for p in partitions {
        let replicas: Vec<&[String]> = h
            .logs
            .iter()
            .map(|l| l.get(&p).map_or(&[][..], |v| &v[..]))
            .collect();
        let shortest = replicas.iter().map(|r| r.len()).min().unwrap_or(0);
        if replicas
            .iter()
            .any(|r| r[..shortest] != replicas[0][..shortest])
        {
            a.divergent_partitions += 1;
            note(format!(
                "partition {p}: replicas differ below offset {shortest}"
            ));
        }
        if (shortest as u64) < acked_end.get(&p).copied().unwrap_or(0) {
            a.short_replicas += 1;
            note(format!(
                "partition {p}: a replica ends at {shortest}, below acknowledged writes"
            ));
        }
    }
    (a, notes)
}

/// The longest time without an acknowledgement within `[from, to]` (of the run's
/// clock), counting the window's edges.
pub fn longest_gap(acked: &[Ack], from: Duration, to: Duration) -> Duration {
    let mut times: Vec<Duration> = acked
        .iter()
        .map(|a| a.at)
        .filter(|t| *t >= from && *t <= to)
        .collect();
    times.sort();
    let mut last = from;
    let mut gap = Duration::ZERO;
    for t in times.into_iter().chain(std::iter::once(to)) {
        gap = gap.max(t.saturating_sub(last));
        last = t;
    }
    gap
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(value: &str, partition: u32, offset: u64) -> Ack {
        Ack {
            value: value.into(),
            partition,
            offset,
            at: Duration::ZERO,
        }
    }

    fn log(values: &[&str]) -> BTreeMap<u32, Vec<String>> {
        BTreeMap::from([(0, values.iter().map(|v| v.to_string()).collect())])
    }

    fn history() -> History {
        History {
            sent: ["a", "b", "c"].iter().map(|v| v.to_string()).collect(),
            acked: vec![ack("a", 0, 0), ack("b", 0, 1)],
            polls: vec![vec![
                Poll {
                    partition: 0,
                    offset: 0,
                    value: "a".into(),
                },
                Poll {
                    partition: 0,
                    offset: 1,
                    value: "b".into(),
                },
            ]],
            logs: vec![log(&["a", "b"]), log(&["a", "b"]), log(&["a", "b", "c"])],
            ..Default::default()
        }
    }

    #[test]
    fn a_clean_history_has_no_anomalies() {
        let (a, notes) = check(&history());
        assert_eq!(a, Anomalies::default(), "{notes:?}");
    }

    #[test]
    fn each_checker_finds_its_anomaly() {
        let mut h = history();
        h.logs[0] = log(&["b", "b", "x"]);
        let (a, _) = check(&h);
        assert_eq!(a.lost, 1, "a is gone");
        assert_eq!(a.duplicates, 1, "b twice");
        assert_eq!(a.wrong_offset, 0, "b is (also) where it was acknowledged");
        assert_eq!(a.never_sent, 1, "x");
        assert_eq!(a.inconsistent_offsets, 1, "a polled at 0");
        assert_eq!(a.divergent_partitions, 1);

        let mut h = history();
        h.logs = vec![log(&["b", "a"])];
        let (a, _) = check(&h);
        assert_eq!(a.wrong_offset, 2, "a and b swapped");

        let mut h = history();
        h.polls[0].push(Poll {
            partition: 0,
            offset: 1,
            value: "b".into(),
        });
        h.polls[0].push(Poll {
            partition: 0,
            offset: 3,
            value: "d".into(),
        });
        let (a, _) = check(&h);
        assert_eq!((a.nonmonotonic_polls, a.poll_skips), (1, 1));

        let mut h = history();
        h.logs[1] = log(&["a"]);
        let (a, _) = check(&h);
        assert_eq!((a.short_replicas, a.divergent_partitions), (1, 0));
    }

    #[test]
    fn the_group_delivers_every_record_and_never_commits_backwards() {
        let poll = |offset: u64, value: &str| Poll {
            partition: 0,
            offset,
            value: value.into(),
        };
        let mut h = history();
        // Two assignments of one member: the second resumes at a committed offset.
        h.polls.push(vec![poll(0, "a")]);
        h.polls.push(vec![poll(0, "a"), poll(1, "b")]);
        h.group_streams = 2;
        h.committed.insert(0, vec![0, 1, 1, 2]);
        let (a, notes) = check(&h);
        assert_eq!(a, Anomalies::default(), "{notes:?}");

        h.polls.pop();
        h.group_streams = 1;
        h.committed.insert(0, vec![0, 2, 1]);
        let (a, _) = check(&h);
        assert_eq!((a.unconsumed_by_group, a.committed_backwards), (1, 1));
    }

    #[test]
    fn an_acknowledgement_without_an_offset_needs_the_value_stored_only() {
        let mut h = history();
        h.acked.push(ack("c", 0, u64::MAX));
        h.logs = vec![log(&["a", "b", "c"])];
        let (a, notes) = check(&h);
        assert_eq!(a, Anomalies::default(), "{notes:?}");
        h.logs = vec![log(&["a", "b"])];
        assert_eq!(check(&h).0.lost, 1);
    }

    #[test]
    fn gaps_count_the_window_edges() {
        let at = |ms| Ack {
            at: Duration::from_millis(ms),
            ..ack("a", 0, 0)
        };
        let acks = [at(100), at(150), at(900)];
        let gap = longest_gap(
            &acks,
            Duration::from_millis(50),
            Duration::from_millis(1000),
        );
        assert_eq!(gap, Duration::from_millis(750));
        assert_eq!(
            longest_gap(&[], Duration::ZERO, Duration::from_secs(2)),
            Duration::from_secs(2)
        );
    }
}
