//! Plans over the metadata that even out a cluster or drain a broker:
//!
//! - decommissioning broker N puts each partition it holds on its way to the same set
//!   with N replaced by the broker holding the fewest replicas (refused when no broker
//!   can take one: the partition would lose a replica);
//! - a rebalance plans moves that bring every broker within one replica, and within one
//!   preferred leadership, of every other (Kafka's reassignment tool plus preferred
//!   leader election).
//!
//! Plans are computed here and applied by the metadata group as ordinary moves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ClusterState, MetadataError};
use crate::error::shown;

/// One partition's planned replica set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// The set it moves to; the first is the preferred leader.
    pub replicas: Vec<u32>,
}

/// Most steps a rebalance plan takes (each moves one replica or one preferred leader).
const MAX_PLAN_STEPS: usize = 100_000;

impl ClusterState {
    /// Brokers that take replicas: registered and not being decommissioned.
    pub fn active_brokers(&self) -> Vec<u32> {
        self.brokers
            .iter()
            .filter(|(_, b)| !b.draining)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Every partition's replica set once the moves recorded finish.
    fn eventual_sets(&self) -> BTreeMap<(String, u32), Vec<u32>> {
        self.topics
            .iter()
            .flat_map(|(name, t)| {
                t.partitions.iter().enumerate().map(move |(i, p)| {
                    let set = p.target.clone().unwrap_or_else(|| p.replicas.clone());
                    ((name.clone(), i as u32), set)
                })
            })
            .collect()
    }

    /// The moves that drain broker `id`: every partition it holds, with `id` replaced by
    /// the active broker holding the fewest replicas (ties along the ring of broker ids).
    pub fn plan_decommission(&self, id: u32) -> Result<Vec<PlannedMove>, MetadataError> {
        let brokers = || format!("{:?}", self.brokers.keys().collect::<Vec<_>>());
        let entry = self.brokers.get(&id).ok_or_else(|| {
            MetadataError::Invalid(format!(
                "broker {id} is not in the cluster (brokers: {})",
                brokers()
            ))
        })?;
        if entry.draining {
            return Err(MetadataError::Invalid(format!(
                "broker {id} is already being decommissioned"
            )));
        }
        let others: Vec<u32> = self
            .active_brokers()
            .into_iter()
            .filter(|&b| b != id)
            .collect();
        if others.is_empty() {
            return Err(MetadataError::Invalid(format!(
                "broker {id} is the last broker of the cluster: it cannot be decommissioned"
            )));
        }
        let mut load: BTreeMap<u32, usize> = others.iter().map(|&b| (b, 0)).collect();
        for set in self.eventual_sets().values() {
            for b in set {
                if let Some(n) = load.get_mut(b) {
                    *n += 1;
                }
            }
        }
        let mut plan = Vec::new();
        for (topic, partition, p) in self.replicas_on(id) {
            if p.target.is_some() {
                return Err(MetadataError::Invalid(format!(
                    "{}-{partition} is moving; wait until it completes, then decommission \
                     broker {id}",
                    shown(topic)
                )));
            }
            let n = p.replicas.len();
            let Some(to) = least_loaded(&load, &p.replicas, id) else {
                return Err(MetadataError::Invalid(format!(
                    "decommissioning broker {id} would leave {}-{partition} with {} of its \
                     {n} replicas: no other broker can take its replica (brokers: {}); add \
                     a broker or lower the topic's replication factor first",
                    shown(topic),
                    n - 1,
                    brokers()
                )));
            };
            *load.entry(to).or_default() += 1;
            let replicas = p
                .replicas
                .iter()
                .map(|&b| if b == id { to } else { b })
                .collect();
            plan.push(PlannedMove {
                topic: topic.to_string(),
                partition,
                replicas,
            });
        }
        Ok(plan)
    }

    /// The moves that even out replicas, then preferred leaders, over the active brokers:
    /// each step moves one replica (or one preferred leadership) from the broker with the
    /// most to the one with the fewest, until no two differ by more than one or no step
    /// helps. Partitions already moving are left alone.
    pub fn plan_rebalance(&self) -> Vec<PlannedMove> {
        let active = self.active_brokers();
        if active.len() < 2 {
            return Vec::new();
        }
        let moving: Vec<(String, u32)> = self
            .topics
            .iter()
            .flat_map(|(n, t)| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.target.is_some())
                    .map(move |(i, _)| (n.clone(), i as u32))
            })
            .collect();
        let before = self.eventual_sets();
        let mut sets = before.clone();
        let movable = |k: &(String, u32)| !moving.contains(k);
        for _ in 0..MAX_PLAN_STEPS {
            let load = count(&active, sets.values().flatten());
            if !step(&load, &mut sets, &movable, |set, from, to| {
                set.contains(&from) && !set.contains(&to)
            }) {
                break;
            }
        }
        for _ in 0..MAX_PLAN_STEPS {
            let leaders = count(&active, sets.values().filter_map(|s| s.first()));
            if !step(&leaders, &mut sets, &movable, |set, from, to| {
                set.first() == Some(&from) && set.contains(&to)
            }) {
                break;
            }
        }
        sets.into_iter()
            .filter(|(k, s)| before.get(k) != Some(s))
            .map(|((topic, partition), replicas)| PlannedMove {
                topic,
                partition,
                replicas,
            })
            .collect()
    }
}

/// How many of `items` name each active broker.
fn count<'a>(active: &[u32], items: impl Iterator<Item = &'a u32>) -> BTreeMap<u32, usize> {
    let mut n: BTreeMap<u32, usize> = active.iter().map(|&b| (b, 0)).collect();
    for b in items {
        if let Some(c) = n.get_mut(b) {
            *c += 1;
        }
    }
    n
}

/// One step from the broker with the most to the one with the fewest: in the first
/// movable partition that `fits`, `to` takes `from`'s place (and `from` takes `to`'s, if
/// `to` was in the set already). False when the counts are within one or no step fits.
fn step(
    counts: &BTreeMap<u32, usize>,
    sets: &mut BTreeMap<(String, u32), Vec<u32>>,
    movable: &dyn Fn(&(String, u32)) -> bool,
    fits: impl Fn(&[u32], u32, u32) -> bool,
) -> bool {
    let mut by_count: Vec<(usize, u32)> = counts.iter().map(|(&b, &n)| (n, b)).collect();
    by_count.sort();
    let (low, high) = (by_count[0], by_count[by_count.len() - 1]);
    if high.0 <= low.0 + 1 {
        return false;
    }
    // Prefer the fullest broker, then any broker below it, toward the emptiest ones.
    for &(hn, from) in by_count.iter().rev() {
        for &(ln, to) in &by_count {
            if hn <= ln + 1 {
                break;
            }
            let found = sets
                .iter_mut()
                .find(|(k, s)| movable(k) && fits(s, from, to));
            if let Some((_, set)) = found {
                let at_from = set.iter().position(|&b| b == from).expect("fits");
                match set.iter().position(|&b| b == to) {
                    Some(at_to) => set.swap(at_from, at_to),
                    None => set[at_from] = to,
                }
                return true;
            }
        }
    }
    false
}

/// The active broker (of `load`) with the fewest replicas that is not in `set`; ties go
/// to the one nearest after `leaving` on the ring of broker ids.
fn least_loaded(load: &BTreeMap<u32, usize>, set: &[u32], leaving: u32) -> Option<u32> {
    let ring = |b: u32| b.wrapping_sub(leaving).wrapping_sub(1);
    load.iter()
        .filter(|(b, _)| !set.contains(b))
        .min_by_key(|(&b, &n)| (n, ring(b)))
        .map(|(&b, _)| b)
}

#[cfg(test)]
mod tests {
    use super::super::{BrokerEntry, Command, PartitionEntry, TopicEntry};
    use super::*;

    fn state(brokers: u32, parts: &[&[u32]]) -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=brokers {
            s.brokers.insert(
                id,
                BrokerEntry {
                    address: format!("h:{id}"),
                    draining: false,
                    kafka: None,
                },
            );
        }
        let partitions = parts
            .iter()
            .enumerate()
            .map(|(i, r)| PartitionEntry {
                group: i as u64 + 1,
                replicas: r.to_vec(),
                target: None,
            })
            .collect();
        s.topics.insert(
            "t".into(),
            TopicEntry {
                partitions,
                configs: Default::default(),
            },
        );
        s.next_group = parts.len() as u64 + 1;
        s
    }

    fn spread(s: &ClusterState, leaders_only: bool) -> (usize, usize) {
        let mut n: BTreeMap<u32, usize> = s.active_brokers().iter().map(|&b| (b, 0)).collect();
        for set in s.eventual_sets().values() {
            let counted: &[u32] = if leaders_only { &set[..1] } else { set };
            for b in counted {
                *n.get_mut(b).unwrap() += 1;
            }
        }
        (*n.values().min().unwrap(), *n.values().max().unwrap())
    }

    fn apply_plan(s: &mut ClusterState, plan: &[PlannedMove]) {
        s.apply(&Command::Rebalance {
            moves: plan.to_vec(),
        })
        .unwrap();
        for m in plan {
            s.apply(&Command::CompleteReassignment {
                topic: m.topic.clone(),
                partition: m.partition,
                replicas: m.replicas.clone(),
            })
            .unwrap();
        }
    }

    #[test]
    fn a_rebalance_evens_out_replicas_and_preferred_leaders_over_new_brokers() {
        // Six partitions of RF 2 on brokers 1 and 2, all led by 1; brokers 3 and 4 empty.
        let mut s = state(4, &[&[1, 2][..]; 6]);
        let plan = s.plan_rebalance();
        assert!(!plan.is_empty());
        apply_plan(&mut s, &plan);
        assert_eq!(spread(&s, false), (3, 3), "12 replicas over 4 brokers");
        let (lo, hi) = spread(&s, true);
        assert!(hi <= lo + 1, "leaders {lo}..{hi}");
        for p in &s.topics["t"].partitions {
            assert_ne!(p.replicas[0], p.replicas[1], "{p:?}");
        }
        assert!(
            s.plan_rebalance().is_empty(),
            "a balanced cluster plans nothing"
        );
    }

    #[test]
    fn a_rebalance_moves_only_leaderships_when_replicas_are_even() {
        let mut s = state(3, &[&[1, 2, 3][..]; 3]);
        let plan = s.plan_rebalance();
        assert_eq!(plan.len(), 2, "{plan:?}");
        apply_plan(&mut s, &plan);
        assert_eq!(spread(&s, true), (1, 1));
    }

    #[test]
    fn decommission_replaces_the_broker_by_the_least_loaded_and_refuses_what_cannot_be() {
        let mut s = state(4, &[&[1, 2, 3], &[2, 3, 1], &[3, 1, 2]]);
        let before = s.clone();
        for (id, why) in [(9, "not in the cluster"), (1, "")] {
            let r = s.apply(&Command::DecommissionBroker { id });
            if why.is_empty() {
                r.unwrap();
            } else {
                assert!(r.unwrap_err().to_string().contains(why));
                assert_eq!(s, before);
            }
        }
        for p in &s.topics["t"].partitions {
            let target = p.target.as_ref().expect("every partition on 1 moves");
            assert!(!target.contains(&1) && target.contains(&4), "{target:?}");
        }
        let err = s.apply(&Command::DecommissionBroker { id: 1 }).unwrap_err();
        assert!(err.to_string().contains("already"), "{err}");
        // Broker 2 cannot go too: RF 3 needs three of the brokers 2, 3, 4.
        let moving = s.clone();
        let err = s.apply(&Command::DecommissionBroker { id: 2 }).unwrap_err();
        assert!(err.to_string().contains("is moving"), "{err}");
        assert_eq!(s, moving);
        let refused = Command::ReassignPartition {
            topic: "t".into(),
            partition: 0,
            replicas: vec![1, 2],
        };
        assert!(s.apply(&refused).is_err(), "onto a draining broker");
        let remove = Command::RemoveBroker { id: 1 };
        assert!(s.apply(&remove).is_err(), "still holds replicas");
        for (i, p) in s.topics["t"].partitions.clone().iter().enumerate() {
            s.apply(&Command::CompleteReassignment {
                topic: "t".into(),
                partition: i as u32,
                replicas: p.target.clone().unwrap(),
            })
            .unwrap();
        }
        s.apply(&remove).unwrap();
        assert!(!s.brokers.contains_key(&1) && s.removed.contains(&1));
        let err = s.apply(&Command::DecommissionBroker { id: 2 }).unwrap_err();
        assert!(
            err.to_string().contains("with 2 of its 3 replicas"),
            "{err}"
        );
        let alone = state(1, &[&[1]]);
        let err = alone.plan_decommission(1).unwrap_err();
        assert!(err.to_string().contains("last broker"), "{err}");
    }
}
