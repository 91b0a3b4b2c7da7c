//! Partition assignors: `range`, `round-robin` and `cooperative-sticky`. Each maps the
//! members' subscriptions and the topics' partition counts to a target assignment; the
//! coordinator then moves partitions incrementally towards it.

use std::collections::{BTreeMap, BTreeSet};

/// A topic partition.
pub type Tp = (String, u32);
/// Member id → its partitions.
pub type Assignment = BTreeMap<String, BTreeSet<Tp>>;

/// The assignors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignor {
    /// Per topic, contiguous ranges of partitions over the subscribed members.
    Range,
    /// Every partition dealt in turn over the subscribed members.
    RoundRobin,
    /// Balanced, and keeping each partition where it is whenever balance allows.
    #[default]
    CooperativeSticky,
}

impl Assignor {
    /// Parses an assignor name (empty: the default).
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "" | "cooperative-sticky" => Ok(Self::CooperativeSticky),
            "range" => Ok(Self::Range),
            "round-robin" | "roundrobin" => Ok(Self::RoundRobin),
            other => Err(format!(
                "unknown assignor `{}`: use range, round-robin or cooperative-sticky",
                crate::error::shown(other)
            )),
        }
    }

    /// The target assignment of every member (members without partitions included).
    pub fn assign(
        self,
        subscriptions: &BTreeMap<String, BTreeSet<String>>,
        partitions: &BTreeMap<String, u32>,
        previous: &Assignment,
    ) -> Assignment {
        let mut out: Assignment = subscriptions
            .keys()
            .map(|m| (m.clone(), BTreeSet::new()))
            .collect();
        let subscribers = |topic: &str| -> Vec<&String> {
            subscriptions
                .iter()
                .filter(|(_, topics)| topics.contains(topic))
                .map(|(m, _)| m)
                .collect()
        };
        match self {
            Self::Range => {
                for (topic, &count) in partitions {
                    let members = subscribers(topic);
                    if members.is_empty() {
                        continue;
                    }
                    let n = members.len() as u32;
                    let (per, extra) = (count / n, count % n);
                    let mut next = 0;
                    for (i, m) in members.iter().enumerate() {
                        let take = per + u32::from((i as u32) < extra);
                        let set = out.get_mut(*m).expect("member listed");
                        set.extend((next..next + take).map(|p| (topic.clone(), p)));
                        next += take;
                    }
                }
            }
            Self::RoundRobin => {
                let mut turn = 0usize;
                let members: Vec<&String> = subscriptions.keys().collect();
                for (topic, &count) in partitions {
                    for p in 0..count {
                        // The next member (in turn) subscribed to this topic.
                        for _ in 0..members.len() {
                            let m = members[turn % members.len()];
                            turn += 1;
                            if subscriptions[m].contains(topic) {
                                out.get_mut(m)
                                    .expect("member listed")
                                    .insert((topic.clone(), p));
                                break;
                            }
                        }
                    }
                }
            }
            Self::CooperativeSticky => sticky(subscriptions, partitions, previous, &mut out),
        }
        out
    }
}

/// Keeps what each member had (if still valid and within its quota), then gives every
/// other partition to the subscribed member with the fewest.
fn sticky(
    subscriptions: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
    previous: &Assignment,
    out: &mut Assignment,
) {
    let all: Vec<Tp> = partitions
        .iter()
        .filter(|(t, _)| subscriptions.values().any(|s| s.contains(*t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    let members = subscriptions.len().max(1);
    let quota = all.len().div_ceil(members);
    // How many members may hold `quota` partitions (the rest hold `quota - 1`).
    let mut at_quota = all.len() - (quota.saturating_sub(1)) * members;
    let mut taken = BTreeSet::new();
    for (m, had) in previous {
        let Some(topics) = subscriptions.get(m) else {
            continue;
        };
        let mut keep: Vec<&Tp> = had
            .iter()
            .filter(|tp| topics.contains(&tp.0) && partitions.get(&tp.0).is_some_and(|&n| tp.1 < n))
            .collect();
        let limit = if at_quota > 0 && keep.len() >= quota {
            at_quota -= 1;
            quota
        } else {
            quota
                .saturating_sub(1)
                .max(usize::from(quota == 1 && at_quota > 0))
        };
        keep.truncate(limit.min(keep.len()));
        for tp in keep {
            taken.insert(tp.clone());
            out.get_mut(m).expect("member listed").insert(tp.clone());
        }
    }
    for tp in all {
        if taken.contains(&tp) {
            continue;
        }
        let target = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(&tp.0))
            .map(|(m, _)| m)
            .min_by_key(|m| (out[*m].len(), (*m).clone()));
        if let Some(m) = target {
            out.get_mut(m).expect("member listed").insert(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(members: &[&str], topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        members
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn counts(a: &Assignment) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    fn covers(a: &Assignment, total: usize) {
        let all: Vec<&Tp> = a.values().flatten().collect();
        let unique: BTreeSet<&Tp> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "a partition given twice: {a:?}");
        assert_eq!(unique.len(), total, "every partition given once: {a:?}");
    }

    #[test]
    fn every_assignor_gives_each_partition_to_exactly_one_member_evenly() {
        let s = subs(&["a", "b", "c"], &["t", "u"]);
        let parts = BTreeMap::from([("t".to_string(), 12), ("u".to_string(), 5)]);
        for assignor in [
            Assignor::Range,
            Assignor::RoundRobin,
            Assignor::CooperativeSticky,
        ] {
            let a = assignor.assign(&s, &parts, &Assignment::new());
            covers(&a, 17);
            let c = counts(&a);
            assert!(
                c.iter().max().unwrap() - c.iter().min().unwrap() <= 2,
                "{assignor:?}: {c:?}"
            );
        }
        let rr = Assignor::RoundRobin.assign(&s, &parts, &Assignment::new());
        let c = counts(&rr);
        assert!(
            c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
            "{c:?}"
        );
        let range = Assignor::Range.assign(&s, &parts, &Assignment::new());
        assert!(range["a"].contains(&("t".to_string(), 0)));
        assert!(range["a"].contains(&("t".to_string(), 3)));
    }

    #[test]
    fn sticky_moves_only_what_a_new_member_needs() {
        let parts = BTreeMap::from([("t".to_string(), 48)]);
        let three = Assignor::CooperativeSticky.assign(
            &subs(&["a", "b", "c"], &["t"]),
            &parts,
            &Assignment::new(),
        );
        assert_eq!(counts(&three), [16, 16, 16]);
        let four = Assignor::CooperativeSticky.assign(
            &subs(&["a", "b", "c", "d"], &["t"]),
            &parts,
            &three,
        );
        covers(&four, 48);
        assert_eq!(counts(&four), [12, 12, 12, 12]);
        for m in ["a", "b", "c"] {
            assert!(four[m].is_subset(&three[m]), "{m} only gives partitions up");
        }
        // A member leaves: only its partitions move.
        let back =
            Assignor::CooperativeSticky.assign(&subs(&["a", "b", "c"], &["t"]), &parts, &four);
        covers(&back, 48);
        for m in ["a", "b", "c"] {
            assert!(four[m].is_subset(&back[m]), "{m} keeps what it had");
        }
        // Uneven: 10 partitions over 3 members, then 4.
        let parts = BTreeMap::from([("t".to_string(), 10)]);
        let a3 = Assignor::CooperativeSticky.assign(
            &subs(&["a", "b", "c"], &["t"]),
            &parts,
            &Assignment::new(),
        );
        covers(&a3, 10);
        let a4 =
            Assignor::CooperativeSticky.assign(&subs(&["a", "b", "c", "d"], &["t"]), &parts, &a3);
        covers(&a4, 10);
        let c = counts(&a4);
        assert!(
            c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
            "{c:?}"
        );
        assert!(Assignor::parse("fair").is_err());
    }
}
