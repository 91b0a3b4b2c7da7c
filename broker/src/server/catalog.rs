//! Topics and partitions as the services see them: this broker's replicas, the cluster
//! metadata, and admin changes proposed through the metadata group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rafka_proto::v1;

use crate::cluster::node::{ClusterNode, ReplicatedPartition};
use crate::cluster::{Command, TopicEntry};
use crate::config::BrokerConfig;
use crate::error::{shown, BrokerError};

/// How long an admin request waits for a new topic's partitions to elect leaders.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// This broker's replica of `topic`/`partition`, or the error a client should see: an
/// unknown topic or partition, a replica still starting, or (not a replica here) a
/// redirect to the preferred leader.
pub(crate) async fn partition(
    node: &ClusterNode,
    topic: &str,
    partition: u32,
) -> Result<Arc<ReplicatedPartition>, BrokerError> {
    if let Some(p) = node.partition(topic, partition).await {
        return Ok(p);
    }
    let state = node.state();
    let entry = cluster_partition(&state.topics, topic, partition)?;
    match node.partition(topic, partition).await {
        Some(p) => Ok(p),
        None if entry.replicas.contains(&node.id()) => {
            match started(node, topic, partition).await {
                Some(p) => Ok(p),
                None => Err(BrokerError::Unavailable(format!(
                    "{topic}-{partition} is starting on this broker"
                ))),
            }
        }
        // Not a replica here: send the client to the preferred leader.
        None => Err(BrokerError::NotLeader {
            what: format!("{topic}-{partition}"),
            leader: entry.replicas.first().map(|&b| b as u64),
        }),
    }
}

/// How long a request for a replica that is starting here (a restart opens thousands)
/// waits for it, rather than sending the client into its backoff.
const STARTING_WAIT: Duration = Duration::from_secs(2);

/// This broker's replica of `topic`/`partition` once it started, if within
/// [`STARTING_WAIT`].
async fn started(
    node: &ClusterNode,
    topic: &str,
    partition: u32,
) -> Option<Arc<ReplicatedPartition>> {
    // Watching before looking: a start between the look and the wait is not missed.
    let mut reconciled = node.watch_reconciled();
    let deadline = tokio::time::Instant::now() + STARTING_WAIT;
    loop {
        if let Some(p) = node.partition(topic, partition).await {
            return Some(p);
        }
        if !matches!(
            tokio::time::timeout_at(deadline, reconciled.changed()).await,
            Ok(Ok(()))
        ) {
            return node.partition(topic, partition).await;
        }
    }
}

/// Number of partitions of `topic`, if it exists.
pub(crate) fn partition_count(node: &ClusterNode, topic: &str) -> Option<u32> {
    node.state()
        .topics
        .get(topic)
        .map(|t| t.partitions.len() as u32)
}

/// Metadata of the named topics (every topic when empty).
pub(crate) async fn metadata(
    node: &ClusterNode,
    names: &[String],
) -> Result<v1::MetadataResponse, BrokerError> {
    let state = node.state();
    if let Some(missing) = names.iter().find(|n| !state.topics.contains_key(*n)) {
        return Err(BrokerError::UnknownTopic(missing.clone()));
    }
    let mut topics = Vec::new();
    for (name, entry) in &state.topics {
        if names.is_empty() || names.contains(name) {
            topics.push(topic_info(node, name, entry).await);
        }
    }
    Ok(v1::MetadataResponse {
        brokers: state
            .brokers
            .iter()
            .map(|(id, b)| v1::BrokerInfo {
                node_id: *id,
                address: b.address.clone(),
            })
            .collect(),
        topics,
        controller_id: node.metadata_leader().unwrap_or(0),
        metadata_voters: node.metadata_voters(),
        answered_by: node.id(),
    })
}

/// Creates a topic through the metadata group and waits until its partitions have
/// leaders.
pub(crate) async fn create_topic(
    node: &ClusterNode,
    req: v1::CreateTopicRequest,
    config: &BrokerConfig,
) -> Result<v1::TopicInfo, BrokerError> {
    let existing: u64 = node
        .state()
        .topics
        .values()
        .map(|t| t.partitions.len() as u64)
        .sum();
    let partitions = config
        .partitions_for(req.partitions, existing)
        .map_err(BrokerError::InvalidRequest)?;
    // A new cluster registers its brokers right after electing a metadata leader: place
    // replicas once they all are (or after a bounded wait).
    let peers = node.peers().len();
    wait_state(node, |s| s.brokers.len() >= peers).await;
    let brokers = node.state().brokers.len() as u32;
    let replication_factor = match req.replication_factor {
        0 => brokers.clamp(1, 3),
        n => n,
    };
    let cmd = Command::CreateTopic {
        name: req.name.clone(),
        partitions,
        replication_factor,
        configs: req.configs.into_iter().collect(),
    };
    node.propose(&cmd).await?;
    let name = req.name;
    wait_state(node, |s| s.topics.contains_key(&name)).await;
    wait_for_leaders(node, &name).await;
    let entry = node.state().topics.get(&name).cloned();
    let entry = entry.ok_or_else(|| BrokerError::UnknownTopic(name.clone()))?;
    Ok(topic_info(node, &name, &entry).await)
}

/// Deletes a topic.
pub(crate) async fn delete_topic(node: &ClusterNode, name: String) -> Result<(), BrokerError> {
    node.propose(&Command::DeleteTopic { name: name.clone() })
        .await?;
    wait_state(node, |s| !s.topics.contains_key(&name)).await;
    Ok(())
}

/// Raises a topic's partition count to `partitions` and waits until the new ones have
/// leaders.
pub(crate) async fn add_partitions(
    node: &ClusterNode,
    name: String,
    partitions: u32,
    config: &BrokerConfig,
) -> Result<v1::TopicInfo, BrokerError> {
    let state = node.state();
    let current = state
        .topics
        .get(&name)
        .ok_or_else(|| BrokerError::UnknownTopic(name.clone()))?
        .partitions
        .len() as u32;
    if partitions <= current {
        return Err(BrokerError::InvalidRequest(format!(
            "topic `{}` has {current} partitions: the new count must be larger, not {partitions}",
            shown(&name)
        )));
    }
    let existing: u64 = state
        .topics
        .values()
        .map(|t| t.partitions.len() as u64)
        .sum();
    config
        .partitions_for(partitions, existing - current as u64)
        .map_err(BrokerError::InvalidRequest)?;
    node.propose(&Command::AddPartitions {
        name: name.clone(),
        partitions,
    })
    .await?;
    wait_state(node, |s| {
        s.topics
            .get(&name)
            .is_some_and(|t| t.partitions.len() as u32 >= partitions)
    })
    .await;
    wait_for_leaders(node, &name).await;
    let entry = node.state().topics.get(&name).cloned();
    let entry = entry.ok_or_else(|| BrokerError::UnknownTopic(name.clone()))?;
    Ok(topic_info(node, &name, &entry).await)
}

/// Starts moving `topic`/`partition` to `replicas` (the partition's leader drives the
/// move); answers once the metadata records it.
pub(crate) async fn reassign_partition(
    node: &ClusterNode,
    topic: String,
    partition: u32,
    replicas: Vec<u32>,
) -> Result<v1::TopicInfo, BrokerError> {
    node.propose(&Command::ReassignPartition {
        topic: topic.clone(),
        partition,
        replicas: replicas.clone(),
    })
    .await?;
    wait_state(node, |s| {
        s.topics
            .get(&topic)
            .and_then(|t| t.partitions.get(partition as usize))
            .is_some_and(|p| p.target.is_some() || p.replicas == replicas)
    })
    .await;
    let entry = node.state().topics.get(&topic).cloned();
    let entry = entry.ok_or_else(|| BrokerError::UnknownTopic(topic.clone()))?;
    Ok(topic_info(node, &topic, &entry).await)
}

/// Starts moving every partition of `name` to `replication_factor` replicas; answers
/// once the metadata records the moves.
pub(crate) async fn alter_replication_factor(
    node: &ClusterNode,
    name: String,
    replication_factor: u32,
) -> Result<v1::TopicInfo, BrokerError> {
    let before = node.state().topics.get(&name).cloned();
    node.propose(&Command::AlterReplicationFactor {
        name: name.clone(),
        replication_factor,
    })
    .await?;
    wait_state(node, |s| s.topics.get(&name) != before.as_ref()).await;
    let entry = node.state().topics.get(&name).cloned();
    let entry = entry.ok_or_else(|| BrokerError::UnknownTopic(name.clone()))?;
    Ok(topic_info(node, &name, &entry).await)
}

/// Starts draining broker `id`; answers once the metadata records its moves.
pub(crate) async fn decommission_broker(
    node: &ClusterNode,
    id: u32,
) -> Result<Vec<v1::PartitionMove>, BrokerError> {
    let plan = moves(node, node.state().plan_decommission(id)?);
    node.propose(&Command::DecommissionBroker { id }).await?;
    wait_state(node, |s| s.brokers.get(&id).is_none_or(|b| b.draining)).await;
    Ok(plan)
}

/// Plans a rebalance over the metadata as known here; starts it unless `dry_run` (the
/// metadata leader checks every move again as it records them).
pub(crate) async fn rebalance(
    node: &ClusterNode,
    dry_run: bool,
) -> Result<Vec<v1::PartitionMove>, BrokerError> {
    let plan = node.state().plan_rebalance();
    let shown = moves(node, plan.clone());
    if let (false, Some(last)) = (dry_run, plan.last().cloned()) {
        node.propose(&Command::Rebalance { moves: plan }).await?;
        wait_state(node, |s| {
            s.topics
                .get(&last.topic)
                .and_then(|t| t.partitions.get(last.partition as usize))
                .is_some_and(|p| p.target.is_some() || p.replicas == last.replicas)
        })
        .await;
    }
    Ok(shown)
}

/// A plan as the API shows it (each partition's current set, as known here).
fn moves(
    node: &ClusterNode,
    plan: Vec<crate::cluster::balance::PlannedMove>,
) -> Vec<v1::PartitionMove> {
    let state = node.state();
    plan.into_iter()
        .map(|m| v1::PartitionMove {
            from: state
                .topics
                .get(&m.topic)
                .and_then(|t| t.partitions.get(m.partition as usize))
                .map(|p| p.replicas.clone())
                .unwrap_or_default(),
            topic: m.topic,
            partition: m.partition,
            to: m.replicas,
        })
        .collect()
}

/// How long one preferred-leader election may take.
const ELECT_WAIT: Duration = Duration::from_secs(15);

/// Has this broker take the leadership of the partitions it is the preferred replica of
/// (those named, or all); answers which it leads and why the others failed.
pub(crate) async fn elect_preferred_leaders(
    node: &ClusterNode,
    named: Vec<v1::TopicPartitionRef>,
) -> v1::ElectPreferredLeadersResponse {
    let state = node.state();
    let preferred: Vec<(String, u32)> = state
        .replicas_on(node.id())
        .into_iter()
        .filter(|(_, _, p)| p.target.is_none() && p.replicas.first() == Some(&node.id()))
        .map(|(t, p, _)| (t.to_string(), p))
        .filter(|(t, p)| {
            named.is_empty() || named.iter().any(|n| n.topic == *t && n.partition == *p)
        })
        .collect();
    let mut out = v1::ElectPreferredLeadersResponse::default();
    for n in &named {
        if !preferred
            .iter()
            .any(|(t, p)| n.topic == *t && n.partition == *p)
        {
            out.failed.push(format!(
                "{}-{}: broker {} is not its preferred leader (or it is moving)",
                shown(&n.topic),
                n.partition,
                node.id()
            ));
        }
    }
    let elections = preferred.into_iter().map(|(topic, partition)| async move {
        let result = match node.partition(&topic, partition).await {
            Some(p) => p.take_leadership(ELECT_WAIT).await,
            None => Err(BrokerError::Unavailable(format!(
                "{}-{partition}: its replica is not running here yet",
                shown(&topic)
            ))),
        };
        (topic, partition, result)
    });
    for (topic, partition, result) in futures::future::join_all(elections).await {
        match result {
            Ok(()) => out.elected.push(v1::TopicPartitionRef { topic, partition }),
            Err(e) => out.failed.push(e.to_string()),
        }
    }
    out
}

/// Merges config overrides into a topic's.
pub(crate) async fn alter_topic(
    node: &ClusterNode,
    name: String,
    configs: BTreeMap<String, String>,
) -> Result<v1::TopicInfo, BrokerError> {
    node.propose(&Command::AlterTopicConfig {
        name: name.clone(),
        configs: configs.clone(),
    })
    .await?;
    wait_state(node, |s| {
        s.topics
            .get(&name)
            .is_some_and(|t| configs.iter().all(|(k, v)| t.configs.get(k) == Some(v)))
    })
    .await;
    let entry = node.state().topics.get(&name).cloned();
    let entry = entry.ok_or_else(|| BrokerError::UnknownTopic(name.clone()))?;
    Ok(topic_info(node, &name, &entry).await)
}

fn cluster_partition<'a>(
    topics: &'a BTreeMap<String, TopicEntry>,
    topic: &str,
    partition: u32,
) -> Result<&'a crate::cluster::PartitionEntry, BrokerError> {
    let t = topics
        .get(topic)
        .ok_or_else(|| BrokerError::UnknownTopic(topic.to_string()))?;
    t.partitions
        .get(partition as usize)
        .ok_or_else(|| BrokerError::UnknownPartition {
            topic: topic.to_string(),
            partition,
            count: t.partitions.len() as u32,
        })
}

/// A topic as this broker sees it: leaders and offsets from the replicas it
/// holds, the preferred leader for the others.
async fn topic_info(node: &ClusterNode, name: &str, entry: &TopicEntry) -> v1::TopicInfo {
    let mut partitions = Vec::with_capacity(entry.partitions.len());
    for (i, p) in entry.partitions.iter().enumerate() {
        let mut info = v1::PartitionInfo {
            partition: i as u32,
            leader: p.replicas.first().copied().unwrap_or(0),
            replicas: p.replicas.clone(),
            moving_to: p.target.clone().unwrap_or_default(),
            ..Default::default()
        };
        if let Some(r) = node.partition(name, i as u32).await {
            // An isolated leader (no majority in reach) names no leader: the majority
            // may have elected another already.
            info.leader = r.leader().filter(|_| !r.fenced()).map_or(0, |l| l as u32);
            info.log_start_offset = r.reader().log_start_offset();
            info.high_watermark = r.high_watermark();
            info.size_bytes = r.reader().size_bytes();
            if r.is_leader() {
                info.replica_progress = r
                    .replica_lags()
                    .into_iter()
                    .map(|(broker, lag)| v1::ReplicaProgress {
                        broker,
                        lag_entries: lag,
                    })
                    .collect();
            }
        }
        partitions.push(info);
    }
    v1::TopicInfo {
        name: name.to_string(),
        partitions,
        configs: entry.configs.clone().into_iter().collect(),
    }
}

/// Waits (bounded) until this broker's applied metadata satisfies `cond`.
async fn wait_state(node: &ClusterNode, cond: impl Fn(&crate::cluster::ClusterState) -> bool) {
    let mut watch = node.watch_state();
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    while !cond(&node.state()) {
        if !matches!(
            tokio::time::timeout_at(deadline, watch.changed()).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// Waits (bounded) until every replica of `topic` on this broker knows its leader.
async fn wait_for_leaders(node: &ClusterNode, topic: &str) {
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    let count = node
        .state()
        .topics
        .get(topic)
        .map_or(0, |t| t.partitions.len() as u32);
    let replicated_here = |p: u32| {
        node.state()
            .topics
            .get(topic)
            .and_then(|t| {
                t.partitions
                    .get(p as usize)
                    .map(|e| e.replicas.contains(&node.id()))
            })
            .unwrap_or(false)
    };
    let mut reconciled = node.watch_reconciled();
    for p in 0..count {
        loop {
            reconciled.borrow_and_update();
            let Some(replica) = node.partition(topic, p).await else {
                if !replicated_here(p) {
                    break;
                }
                // The group starts when this broker next reconciles with the metadata.
                if !matches!(
                    tokio::time::timeout_at(deadline, reconciled.changed()).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
                continue;
            };
            let mut metrics = replica.raft().metrics();
            if metrics.borrow_and_update().current_leader.is_some() {
                break;
            }
            if !matches!(
                tokio::time::timeout_at(deadline, metrics.changed()).await,
                Ok(Ok(()))
            ) {
                return;
            }
        }
    }
}
