//! What a broker holds as the coordinator of groups: per offsets partition it leads, the
//! committed offsets read from it so far; per group it coordinates, the members. Shared
//! by the Group service and `/metrics`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::membership::GroupState;
use super::{OffsetsCache, OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::cluster::node::ClusterNode;
use crate::cluster::replica::ReplicatedPartition;
use crate::error::BrokerError;

/// Most bytes read from an offsets partition per step while catching up.
const READ_STEP: usize = 4 << 20;

/// A broker's groups as their coordinator.
#[derive(Default)]
pub struct Coordinator {
    /// Per offsets partition, what this broker has read of it.
    pub caches: tokio::sync::Mutex<HashMap<u32, OffsetsCache>>,
    /// Groups this broker coordinates: members and assignments (in memory; members
    /// rejoin a new coordinator with their ids).
    pub groups: std::sync::Mutex<HashMap<String, GroupState>>,
}

/// One group as its coordinator sees it, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// Group id.
    pub group: String,
    /// Live members.
    pub members: usize,
    /// Rebalances since this broker became its coordinator (the assignment's epoch).
    pub rebalances: u64,
    /// Committed offset per (topic, partition).
    pub offsets: Vec<(String, u32, u64)>,
}

impl Coordinator {
    /// Every group this broker coordinates: those with committed offsets in an offsets
    /// partition it leads (read up to its high watermark first) and those with members.
    pub async fn view(&self, node: &ClusterNode) -> Vec<GroupView> {
        let mut out: std::collections::BTreeMap<String, GroupView> = Default::default();
        for p in 0..OFFSETS_PARTITIONS {
            let Some(served) = node.partition(OFFSETS_TOPIC, p).await else {
                continue;
            };
            if !served.is_leader() {
                continue;
            }
            let mut caches = self.caches.lock().await;
            let cache = caches.entry(p).or_default();
            if catch_up(cache, &served).is_err() {
                continue;
            }
            for group in cache.groups() {
                let offsets = cache
                    .offsets(&group, &[])
                    .into_iter()
                    .map(|o| (o.topic, o.partition, o.offset))
                    .collect();
                out.insert(
                    group.clone(),
                    GroupView {
                        group,
                        members: 0,
                        rebalances: 0,
                        offsets,
                    },
                );
            }
        }
        let now = Instant::now();
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        for (name, g) in groups.iter_mut() {
            g.expire(now);
            let v = out.entry(name.clone()).or_insert_with(|| GroupView {
                group: name.clone(),
                members: 0,
                rebalances: 0,
                offsets: Vec::new(),
            });
            v.members = g.members.len();
            v.rebalances = g.epoch.max(0) as u64;
        }
        out.into_values().collect()
    }
}

/// Reads the offsets partition from where `cache` stopped up to its high watermark.
pub fn catch_up(
    cache: &mut OffsetsCache,
    served: &Arc<ReplicatedPartition>,
) -> Result<(), BrokerError> {
    loop {
        let hw = served.high_watermark();
        let start = served.reader().log_start_offset();
        if cache.next < start || cache.next > hw {
            // Retention dropped what was not read yet, or the log is not the one the
            // cache was read from (it is shorter): start over from what is there.
            *cache = OffsetsCache::starting_at(start);
        }
        if cache.next >= hw {
            return Ok(());
        }
        let batches = served
            .reader()
            .read_below(cache.next, READ_STEP, hw)
            .map_err(|e| served.log_error(e))?;
        let before = cache.next;
        cache.apply(&batches);
        if cache.next == before {
            return Ok(()); // nothing decodable moved it (a batch of control records only)
        }
    }
}
