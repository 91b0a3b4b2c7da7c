//! What the services serve from: a single broker's topic registry, or this broker's part
//! of a cluster (partitions replicated through Raft, topics in the metadata group).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rafka_proto::batch::ValidatedBatch;
use rafka_proto::v1;
use tokio::sync::watch;

use crate::cluster::node::{ClusterNode, ReplicatedPartition};
use crate::cluster::{Command, TopicEntry};
use crate::config::BrokerConfig;
use crate::error::BrokerError;
use crate::log::{LogError, LogReader};
use crate::partition::Partition;
use crate::topics::TopicRegistry;

/// How long an admin request waits for a new topic's partitions to elect leaders.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// How long a produce reaching a replica mid-election waits to learn the new leader.
const ELECTION_WAIT: Duration = Duration::from_secs(2);

/// The broker's data.
pub(crate) enum Backend {
    /// One broker (its id), no replication.
    Single(Arc<TopicRegistry>, u32),
    /// A cluster member.
    Cluster(Arc<ClusterNode>),
}

/// A partition served here.
#[derive(Clone)]
pub(crate) enum Served {
    /// A single broker's partition and its largest batch (`segment.bytes`).
    Local(Arc<Partition>, u64),
    /// A replica of a partition's Raft group.
    Replica(Arc<ReplicatedPartition>),
}

/// Where a produce's batches landed.
pub(crate) struct Landed {
    /// Base offset of each batch (empty for acks=none).
    pub base_offsets: Vec<u64>,
    /// Log end offset after them.
    pub log_end_offset: u64,
}

impl Served {
    pub fn topic(&self) -> &str {
        match self {
            Self::Local(p, _) => p.topic(),
            Self::Replica(p) => &p.topic,
        }
    }

    pub fn id(&self) -> u32 {
        match self {
            Self::Local(p, _) => p.id(),
            Self::Replica(p) => p.partition,
        }
    }

    pub fn reader(&self) -> &LogReader {
        match self {
            Self::Local(p, _) => p.reader(),
            Self::Replica(p) => p.reader(),
        }
    }

    pub fn high_watermark(&self) -> u64 {
        match self {
            Self::Local(p, _) => p.high_watermark(),
            Self::Replica(p) => p.high_watermark(),
        }
    }

    pub fn watch_high_watermark(&self) -> watch::Receiver<u64> {
        match self {
            Self::Local(p, _) => p.watch_high_watermark(),
            Self::Replica(p) => p.watch_high_watermark(),
        }
    }

    /// True where a consumer may be ahead of this replica's high watermark (a follower,
    /// or a new leader that has not yet committed its predecessor's last entries): such
    /// a fetch waits instead of being out of range.
    pub fn may_lag(&self, offset: u64) -> bool {
        match self {
            Self::Local(..) => false,
            Self::Replica(p) => !p.is_leader() || offset <= p.reader().log_end_offset(),
        }
    }

    pub fn log_error(&self, e: LogError) -> BrokerError {
        match self {
            Self::Local(p, _) => p.log_error(e),
            Self::Replica(p) => BrokerError::Log {
                topic: p.topic.clone(),
                partition: p.partition,
                source: Arc::new(e),
            },
        }
    }

    /// Largest batch the partition takes.
    pub fn max_batch_bytes(&self) -> u64 {
        match self {
            Self::Local(_, max) => *max,
            Self::Replica(p) => p.segment_bytes(),
        }
    }

    /// Fails unless appends are taken here (a replica must lead its group). During an
    /// election it waits (briefly) for the outcome, so the redirect can name the leader.
    pub async fn check_writable(&self) -> Result<(), BrokerError> {
        let Self::Replica(p) = self else {
            return Ok(());
        };
        if p.is_leader() {
            return Ok(());
        }
        if p.leader_elsewhere().is_none() {
            let mut metrics = p.raft().metrics();
            let deadline = tokio::time::Instant::now() + ELECTION_WAIT;
            metrics.borrow_and_update();
            while !p.is_leader() && p.leader_elsewhere().is_none() {
                // Deadline passed, or the group stopped.
                if !matches!(
                    tokio::time::timeout_at(deadline, metrics.changed()).await,
                    Ok(Ok(()))
                ) {
                    break;
                }
            }
            if p.is_leader() {
                return Ok(());
            }
        }
        Err(p.not_leader(p.leader()))
    }

    /// Appends validated batches; waits for durability (single broker) or a majority's
    /// commit (cluster) unless `acks` is none.
    pub async fn append(
        &self,
        batches: Vec<ValidatedBatch>,
        acks: v1::Acks,
    ) -> Result<Landed, BrokerError> {
        let wait = acks != v1::Acks::None;
        match self {
            Self::Local(p, _) => {
                let appended = p.append(batches, wait).await?;
                Ok(Landed {
                    base_offsets: appended.iter().flatten().map(|a| a.base_offset).collect(),
                    log_end_offset: appended
                        .as_ref()
                        .and_then(|a| a.last())
                        .map_or_else(|| p.high_watermark(), |a| a.next_offset),
                })
            }
            Self::Replica(p) => {
                let results = p.append_all(batches, acks).await?;
                Ok(Landed {
                    base_offsets: results.iter().flatten().map(|r| r.base_offset).collect(),
                    log_end_offset: results
                        .as_ref()
                        .and_then(|r| r.last())
                        .map_or_else(|| p.high_watermark(), |r| r.next_offset),
                })
            }
        }
    }
}

impl Backend {
    /// The partition `topic`/`partition` as served here.
    pub async fn partition(&self, topic: &str, partition: u32) -> Result<Served, BrokerError> {
        match self {
            Self::Single(registry, _) => {
                let t = registry.get(topic)?;
                Ok(Served::Local(
                    t.partition(partition)?.clone(),
                    t.config().segment_bytes,
                ))
            }
            Self::Cluster(node) => {
                if let Some(p) = node.partition(topic, partition).await {
                    return Ok(Served::Replica(p));
                }
                let state = node.state();
                let entry = cluster_partition(&state.topics, topic, partition)?;
                match node.partition(topic, partition).await {
                    Some(p) => Ok(Served::Replica(p)),
                    None if entry.replicas.contains(&node.id()) => Err(BrokerError::Unavailable(
                        format!("{topic}-{partition} is starting on this broker"),
                    )),
                    // Not a replica here: send the client to the preferred leader.
                    None => Err(BrokerError::NotLeader {
                        what: format!("{topic}-{partition}"),
                        leader: entry.replicas.first().map(|&b| b as u64),
                    }),
                }
            }
        }
    }

    /// Number of partitions of `topic`, if it exists.
    pub async fn partition_count(&self, topic: &str) -> Option<u32> {
        match self {
            Self::Single(registry, _) => registry
                .get(topic)
                .ok()
                .map(|t| t.partitions().len() as u32),
            Self::Cluster(node) => node
                .state()
                .topics
                .get(topic)
                .map(|t| t.partitions.len() as u32),
        }
    }

    /// Broker `id`'s client address, when known.
    pub fn broker_address(&self, id: u32) -> Option<String> {
        match self {
            Self::Single(..) => None,
            Self::Cluster(node) => node.peer_address(id).map(str::to_string),
        }
    }

    /// Metadata of the named topics (every topic when empty).
    pub async fn metadata(
        &self,
        names: &[String],
        own: &v1::BrokerInfo,
    ) -> Result<v1::MetadataResponse, BrokerError> {
        match self {
            Self::Single(registry, _) => {
                let topics = if names.is_empty() {
                    registry.list()
                } else {
                    names
                        .iter()
                        .map(|t| registry.get(t))
                        .collect::<Result<_, _>>()?
                };
                Ok(v1::MetadataResponse {
                    brokers: vec![own.clone()],
                    topics: topics
                        .iter()
                        .map(|t| super::broker_service::topic_info(t, own.node_id))
                        .collect(),
                    controller_id: own.node_id,
                })
            }
            Self::Cluster(node) => {
                let state = node.state();
                let mut topics = Vec::new();
                for (name, entry) in &state.topics {
                    if names.is_empty() || names.contains(name) {
                        topics.push(cluster_topic_info(node, name, entry).await);
                    }
                }
                if let Some(missing) = names.iter().find(|n| !state.topics.contains_key(*n)) {
                    return Err(BrokerError::UnknownTopic(missing.clone()));
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
                })
            }
        }
    }

    /// Creates a topic (in a cluster: through the metadata leader) and, in a cluster,
    /// waits until its partitions have leaders.
    pub async fn create_topic(
        &self,
        req: v1::CreateTopicRequest,
        config: &BrokerConfig,
    ) -> Result<v1::TopicInfo, BrokerError> {
        let existing: u64 = match self {
            Self::Single(registry, _) => registry
                .list()
                .iter()
                .map(|t| t.partitions().len() as u64)
                .sum(),
            Self::Cluster(node) => node
                .state()
                .topics
                .values()
                .map(|t| t.partitions.len() as u64)
                .sum(),
        };
        let partitions = config
            .partitions_for(req.partitions, existing)
            .map_err(BrokerError::InvalidRequest)?;
        match self {
            Self::Single(registry, node_id) => {
                if req.replication_factor > 1 {
                    return Err(BrokerError::InvalidRequest(format!(
                        "replication factor {} exceeds the 1 available broker",
                        req.replication_factor
                    )));
                }
                let topic = registry
                    .create(&req.name, partitions, req.configs.into_iter().collect())
                    .await?;
                Ok(super::broker_service::topic_info(&topic, *node_id))
            }
            Self::Cluster(node) => {
                // A new cluster registers its brokers right after electing a metadata
                // leader: place replicas once they all are (or after a bounded wait).
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
                Ok(cluster_topic_info(node, &name, &entry).await)
            }
        }
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: String) -> Result<(), BrokerError> {
        match self {
            Self::Single(registry, _) => registry.delete(&name).await,
            Self::Cluster(node) => {
                node.propose(&Command::DeleteTopic { name: name.clone() })
                    .await?;
                wait_state(node, |s| !s.topics.contains_key(&name)).await;
                Ok(())
            }
        }
    }

    /// Merges config overrides into a topic's.
    pub async fn alter_topic(
        &self,
        name: String,
        configs: BTreeMap<String, String>,
    ) -> Result<v1::TopicInfo, BrokerError> {
        match self {
            Self::Single(registry, node_id) => {
                let topic = registry.alter(&name, configs).await?;
                Ok(super::broker_service::topic_info(&topic, *node_id))
            }
            Self::Cluster(node) => {
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
                Ok(cluster_topic_info(node, &name, &entry).await)
            }
        }
    }
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

/// A cluster topic as this broker sees it: leaders and offsets from the replicas it
/// holds, the preferred leader for the others.
async fn cluster_topic_info(node: &ClusterNode, name: &str, entry: &TopicEntry) -> v1::TopicInfo {
    let mut partitions = Vec::with_capacity(entry.partitions.len());
    for (i, p) in entry.partitions.iter().enumerate() {
        let mut info = v1::PartitionInfo {
            partition: i as u32,
            leader: p.replicas.first().copied().unwrap_or(0),
            replicas: p.replicas.clone(),
            ..Default::default()
        };
        if let Some(r) = node.partition(name, i as u32).await {
            info.leader = r.leader().map_or(0, |l| l as u32);
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
