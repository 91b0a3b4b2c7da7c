//! Cluster metadata: brokers, topics and where each partition's replicas live.
//!
//! The metadata is a state machine over [`Command`]s. It is meant to be replicated as
//! the Raft group 0 (the internal topic `__cluster_metadata`, whose records are the
//! commands), so every broker applies the same commands in the same order and sees the
//! same [`ClusterState`]. A command is encoded as one record of a batch, so the metadata
//! log is an ordinary partition log.
//!
//! - `placement`  spreading replicas and preferred leaders evenly over brokers
//! - `node`       a broker's part: runs group 0, starts/stops partition groups per metadata
//! - `replica`    one partition replica: log + Raft group, produce per acks, retention
//! - `moves`      moving a partition to a new replica set (learners, then voters)
//! - `join`       brokers joining a running cluster; the metadata group's voters
//! - `balance`    plans: decommissioning a broker, rebalancing replicas and leaders
//! - `drain`      a drained broker leaving the metadata group
//! - `quiesce`    idle groups without timers; node heartbeats decide when they wake

pub mod balance;
mod drain;
mod join;
pub mod metrics;
mod moves;
pub mod node;
pub mod placement;
pub mod producers;
mod quiesce;
pub mod replica;
pub mod scrub;
mod sequencer;

use std::collections::{BTreeMap, BTreeSet};

use balance::PlannedMove;
use bytes::Bytes;
use rafka_proto::batch::{BatchBuilder, Record, RecordBatch};
use serde::{Deserialize, Serialize};

/// A change to the cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A broker joins, or changes its address.
    RegisterBroker {
        /// Broker id.
        id: u32,
        /// Address clients and peers use.
        address: String,
    },
    /// Creates a topic, placing its replicas over the registered brokers.
    CreateTopic {
        /// Topic name.
        name: String,
        /// Number of partitions.
        partitions: u32,
        /// Replicas per partition.
        replication_factor: u32,
        /// Topic config overrides by Kafka name.
        configs: BTreeMap<String, String>,
    },
    /// Deletes a topic.
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Merges config overrides into a topic's.
    AlterTopicConfig {
        /// Topic name.
        name: String,
        /// Overrides to set.
        configs: BTreeMap<String, String>,
    },
    /// Starts moving a partition to a new replica set: its group gains the new brokers as
    /// learners, then the new set becomes its voters (openraft membership changes, driven
    /// by the partition's leader), then [`Command::CompleteReassignment`] records it.
    ReassignPartition {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The new replica set; the first is the preferred leader.
        replicas: Vec<u32>,
    },
    /// Changes a topic's replication factor: every partition with another count moves
    /// (as by [`Command::ReassignPartition`]) to its replicas cut down to the first
    /// `replication_factor`, or grown by the brokers holding the fewest replicas.
    AlterReplicationFactor {
        /// Topic name.
        name: String,
        /// Replicas per partition.
        replication_factor: u32,
    },
    /// A move's last step: the partition's group runs on `replicas` as its voters.
    CompleteReassignment {
        /// Topic name.
        topic: String,
        /// Partition number.
        partition: u32,
        /// The set the move was to (it must match the partition's target).
        replicas: Vec<u32>,
    },
    /// Raises a topic's partition count (Kafka's CreatePartitions); the new partitions
    /// get as many replicas as the topic's first partition has.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new total (larger than the current count).
        partitions: u32,
    },
    /// Starts draining a broker: every partition it holds moves (as by
    /// [`Command::ReassignPartition`]) to its set with the broker replaced, and no new
    /// replica is placed on it. Refused for the last broker, or when a partition could
    /// not keep its replication factor.
    DecommissionBroker {
        /// Broker id.
        id: u32,
    },
    /// A drained broker leaves the metadata (it must hold no replica). Its id may join
    /// again later, as a new broker.
    RemoveBroker {
        /// Broker id.
        id: u32,
    },
    /// Starts a set of moves at once (a rebalance plan); all or none are recorded.
    Rebalance {
        /// The partitions' new replica sets.
        moves: Vec<PlannedMove>,
    },
    /// Allocates a producer id for an idempotent producer: the id is the command's
    /// offset in the metadata log, unique in the cluster for good (offsets are never
    /// reused, across restarts and leader changes). Changes nothing else.
    InitProducerId,
    /// Records where a broker serves Kafka clients (its advertised Kafka listener), or
    /// that it serves none.
    SetKafkaAddress {
        /// Broker id.
        id: u32,
        /// `host:port` Kafka clients use; none: no Kafka listener.
        address: Option<String>,
    },
    /// Adds access control entries (those present already are kept once).
    CreateAcls {
        /// The entries.
        acls: Vec<crate::auth::acl::AclEntry>,
    },
    /// Removes access control entries (exact matches; absent ones are ignored).
    DeleteAcls {
        /// The entries.
        acls: Vec<crate::auth::acl::AclEntry>,
    },
    /// Adds a client of the built-in authorization server (refused if the id is taken).
    CreateOAuthClient {
        /// Client id.
        id: String,
        /// Its secret's hash and roles.
        client: crate::auth::issuer::OAuthClient,
    },
    /// Removes a client of the built-in authorization server.
    DeleteOAuthClient {
        /// Client id.
        id: String,
    },
    /// A new signing key for the built-in authorization server, which signs from now
    /// on; keys replaced more than `keep_ms` before it are dropped (their tokens have
    /// expired).
    AddSigningKey {
        /// The key.
        key: crate::auth::issuer::SigningKey,
        /// How long a replaced key keeps verifying (the tokens' lifetime).
        keep_ms: i64,
    },
}

/// Most ACL entries one command adds.
const MAX_ACLS_PER_COMMAND: usize = 1_000;
/// Most ACL entries the cluster keeps.
const MAX_ACLS: usize = 100_000;

/// Why a command cannot be applied. Applying it then changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MetadataError {
    /// No such topic.
    #[error("unknown topic `{}`", crate::error::shown(.0))]
    UnknownTopic(String),
    /// The topic exists already.
    #[error("topic `{}` already exists", crate::error::shown(.0))]
    TopicExists(String),
    /// Not enough brokers, or other impossible placements.
    #[error("{0}")]
    Placement(String),
    /// A bad topic name, partition count or config.
    #[error("{0}")]
    Invalid(String),
    /// A command that could not be decoded.
    #[error("bad metadata record: {0}")]
    BadRecord(String),
}

impl From<MetadataError> for crate::error::BrokerError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::TopicExists(name) => Self::TopicExists(name),
            MetadataError::UnknownTopic(name) => Self::UnknownTopic(name),
            other => Self::InvalidRequest(other.to_string()),
        }
    }
}

/// Longest Kafka address a broker may record.
const MAX_ADDRESS_LEN: usize = 255;

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerEntry {
    /// Address clients and peers use.
    pub address: String,
    /// Being decommissioned: its partitions move away and no new replica lands on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
    /// Where it serves Kafka clients (`host:port`), once it said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<String>,
}

/// One partition's replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionEntry {
    /// The partition's Raft group id (never reused).
    pub group: u64,
    /// Replica broker ids; the first is the preferred leader.
    pub replicas: Vec<u32>,
    /// While the partition moves: the replica set it moves to. Brokers of either set run
    /// the partition's group until the move completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Vec<u32>>,
}

impl PartitionEntry {
    /// Every broker that runs the partition's group now: its replicas and, during a
    /// move, the brokers it moves to.
    pub fn running_on(&self) -> impl Iterator<Item = u32> + '_ {
        let extra = self
            .target
            .iter()
            .flatten()
            .filter(|b| !self.replicas.contains(b));
        self.replicas.iter().chain(extra).copied()
    }
}

/// A topic's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicEntry {
    /// Partitions, by number.
    pub partitions: Vec<PartitionEntry>,
    /// Config overrides by Kafka name.
    pub configs: BTreeMap<String, String>,
}

/// Everything the metadata group agrees on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Brokers by id.
    pub brokers: BTreeMap<u32, BrokerEntry>,
    /// Topics by name.
    pub topics: BTreeMap<String, TopicEntry>,
    /// The next Raft group id to hand out (group 0 is the metadata itself).
    pub next_group: u64,
    /// Brokers decommissioned and removed; their ids are not registered again.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub removed: BTreeSet<u32>,
    /// Access control entries, sorted, each once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acls: Vec<crate::auth::acl::AclEntry>,
    /// Clients of the built-in authorization server, by id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub oauth_clients: BTreeMap<String, crate::auth::issuer::OAuthClient>,
    /// The built-in authorization server's signing keys, oldest first (the last signs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signing_keys: Vec<crate::auth::issuer::SigningKey>,
}

impl ClusterState {
    /// Applies `cmd`; on error nothing changes.
    pub fn apply(&mut self, cmd: &Command) -> Result<(), MetadataError> {
        match cmd {
            Command::RegisterBroker { id, address } => {
                if self.removed.contains(id) {
                    return Err(MetadataError::Invalid(format!(
                        "broker id {id} belonged to a decommissioned broker: a new broker \
                         needs a new id"
                    )));
                }
                let old = self.brokers.get(id);
                let draining = old.is_some_and(|b| b.draining);
                let kafka = old.and_then(|b| b.kafka.clone());
                self.brokers.insert(
                    *id,
                    BrokerEntry {
                        address: address.clone(),
                        draining,
                        kafka,
                    },
                );
            }
            Command::DecommissionBroker { id } => {
                let plan = self.plan_decommission(*id)?;
                for m in plan {
                    self.partition_mut(&m.topic, m.partition)?.target = Some(m.replicas);
                }
                self.brokers
                    .get_mut(id)
                    .expect("checked by the plan")
                    .draining = true;
            }
            Command::RemoveBroker { id } => {
                if !self.brokers.get(id).is_some_and(|b| b.draining) {
                    return Err(MetadataError::Invalid(format!(
                        "broker {id} is not being decommissioned"
                    )));
                }
                if let Some((t, p, _)) = self.replicas_on(*id).first() {
                    return Err(MetadataError::Invalid(format!(
                        "broker {id} still holds {}-{p}",
                        crate::error::shown(t)
                    )));
                }
                self.brokers.remove(id);
                self.removed.insert(*id);
            }
            Command::InitProducerId => {}
            Command::SetKafkaAddress { id, address } => {
                let broker = self
                    .brokers
                    .get_mut(id)
                    .ok_or_else(|| MetadataError::Invalid(format!("no broker {id}")))?;
                if address.as_ref().is_some_and(|a| a.len() > MAX_ADDRESS_LEN) {
                    return Err(MetadataError::Invalid(format!(
                        "a Kafka address is at most {MAX_ADDRESS_LEN} bytes"
                    )));
                }
                broker.kafka = address.clone();
            }
            Command::CreateAcls { acls } => {
                if acls.len() > MAX_ACLS_PER_COMMAND {
                    return Err(MetadataError::Invalid(format!(
                        "at most {MAX_ACLS_PER_COMMAND} ACL entries at once"
                    )));
                }
                for a in acls {
                    a.validate().map_err(MetadataError::Invalid)?;
                }
                let new = acls
                    .iter()
                    .filter(|a| self.acls.binary_search(a).is_err())
                    .count();
                if self.acls.len() + new > MAX_ACLS {
                    return Err(MetadataError::Invalid(format!(
                        "the cluster keeps at most {MAX_ACLS} ACL entries"
                    )));
                }
                for a in acls {
                    if let Err(at) = self.acls.binary_search(a) {
                        self.acls.insert(at, a.clone());
                    }
                }
            }
            Command::DeleteAcls { acls } => self.acls.retain(|a| !acls.contains(a)),
            Command::CreateOAuthClient { id, client } => {
                if id.is_empty() || id.len() > crate::auth::issuer::MAX_CLIENT_ID {
                    return Err(MetadataError::Invalid(format!(
                        "a client id has 1 to {} bytes",
                        crate::auth::issuer::MAX_CLIENT_ID
                    )));
                }
                if self.oauth_clients.contains_key(id) {
                    return Err(MetadataError::Invalid(format!(
                        "client `{}` exists already",
                        crate::error::shown(id)
                    )));
                }
                self.oauth_clients.insert(id.clone(), client.clone());
            }
            Command::DeleteOAuthClient { id } => {
                if self.oauth_clients.remove(id).is_none() {
                    return Err(MetadataError::Invalid(format!(
                        "no client `{}`",
                        crate::error::shown(id)
                    )));
                }
            }
            Command::AddSigningKey { key, keep_ms } => {
                // Key i was replaced when key i + 1 was made.
                let cutoff = key.created_ms - keep_ms;
                let replaced: Vec<i64> = self
                    .signing_keys
                    .iter()
                    .skip(1)
                    .map(|k| k.created_ms)
                    .chain([key.created_ms])
                    .collect();
                let mut keep = replaced.iter().map(|&at| at >= cutoff);
                self.signing_keys.retain(|_| keep.next().unwrap_or(true));
                self.signing_keys.push(key.clone());
            }
            Command::Rebalance { moves } => {
                if moves.is_empty() {
                    return Err(MetadataError::Invalid("a rebalance with no moves".into()));
                }
                let mut next = self.clone();
                for m in moves {
                    next.apply(&Command::ReassignPartition {
                        topic: m.topic.clone(),
                        partition: m.partition,
                        replicas: m.replicas.clone(),
                    })?;
                }
                *self = next;
            }
            Command::CreateTopic {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                // The same checks as on a single broker: a name becomes a directory name.
                crate::topics::validate_topic_name(name)
                    .map_err(|e| MetadataError::Invalid(e.to_string()))?;
                if *partitions > crate::topics::MAX_PARTITIONS {
                    return Err(MetadataError::Invalid(format!(
                        "partitions must be at most {}, not {partitions}",
                        crate::topics::MAX_PARTITIONS
                    )));
                }
                check_configs(configs)?;
                if self.topics.contains_key(name) {
                    return Err(MetadataError::TopicExists(name.clone()));
                }
                let partitions = self.place(*partitions, *replication_factor)?;
                self.topics.insert(
                    name.clone(),
                    TopicEntry {
                        partitions,
                        configs: configs.clone(),
                    },
                );
            }
            Command::DeleteTopic { name } => {
                self.topics
                    .remove(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
            }
            Command::AddPartitions { name, partitions } => {
                let topic = self
                    .topics
                    .get(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                let current = topic.partitions.len() as u32;
                if *partitions <= current || *partitions > crate::topics::MAX_PARTITIONS {
                    return Err(MetadataError::Invalid(format!(
                        "topic `{}` has {current} partitions: the new count must be larger, \
                         and at most {}, not {partitions}",
                        crate::error::shown(name),
                        crate::topics::MAX_PARTITIONS
                    )));
                }
                let rf = topic
                    .partitions
                    .first()
                    .map_or(1, |p| p.replicas.len() as u32);
                let added = self.place(partitions - current, rf)?;
                let topic = self.topics.get_mut(name).expect("looked up above");
                topic.partitions.extend(added);
            }
            Command::ReassignPartition {
                topic,
                partition,
                replicas,
            } => {
                self.check_replica_set(replicas)?;
                let entry = self.partition_mut(topic, *partition)?;
                if let Some(moving) = &entry.target {
                    return Err(MetadataError::Invalid(format!(
                        "{}-{partition} is already moving to {moving:?}; wait until it completes",
                        crate::error::shown(topic)
                    )));
                }
                if entry.replicas == *replicas {
                    return Err(MetadataError::Invalid(format!(
                        "{}-{partition} already runs on {replicas:?}",
                        crate::error::shown(topic)
                    )));
                }
                entry.target = Some(replicas.clone());
            }
            Command::AlterReplicationFactor {
                name,
                replication_factor,
            } => {
                let rf = *replication_factor as usize;
                let active = self.active_brokers().len();
                if rf == 0 || rf > active {
                    return Err(MetadataError::Invalid(format!(
                        "replication factor {rf} is not between 1 and the {active} broker(s) \
                         that take replicas"
                    )));
                }
                let targets = self.grown_or_cut(name, rf)?;
                if targets.is_empty() {
                    return Err(MetadataError::Invalid(format!(
                        "topic `{}` already has replication factor {rf}",
                        crate::error::shown(name)
                    )));
                }
                let topic = self.topics.get_mut(name).expect("checked by grown_or_cut");
                for (i, target) in targets {
                    topic.partitions[i].target = Some(target);
                }
            }
            Command::CompleteReassignment {
                topic,
                partition,
                replicas,
            } => {
                let entry = self.partition_mut(topic, *partition)?;
                if entry.target.as_ref() != Some(replicas) {
                    return Err(MetadataError::Invalid(format!(
                        "{}-{partition} is not moving to {replicas:?}",
                        crate::error::shown(topic)
                    )));
                }
                entry.replicas = replicas.clone();
                entry.target = None;
            }
            Command::AlterTopicConfig { name, configs } => {
                let topic = self
                    .topics
                    .get_mut(name)
                    .ok_or_else(|| MetadataError::UnknownTopic(name.clone()))?;
                let mut merged = topic.configs.clone();
                merged.extend(configs.clone());
                check_configs(&merged)?;
                topic.configs = merged;
            }
        }
        Ok(())
    }

    /// Places `count` new partitions with `replication_factor` replicas over the
    /// registered brokers and hands them fresh group ids. Placement starts where the
    /// partitions placed so far leave off, so leaders spread over brokers across topics.
    fn place(
        &mut self,
        count: u32,
        replication_factor: u32,
    ) -> Result<Vec<PartitionEntry>, MetadataError> {
        let brokers = self.active_brokers();
        let start = self
            .topics
            .values()
            .map(|t| t.partitions.len())
            .sum::<usize>();
        let placed = placement::place(&brokers, count, replication_factor, start)?;
        let first_group = self.next_group.max(1);
        let partitions: Vec<PartitionEntry> = placed
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| PartitionEntry {
                group: first_group + i as u64,
                replicas,
                target: None,
            })
            .collect();
        self.next_group = first_group + partitions.len() as u64;
        Ok(partitions)
    }

    /// The new replica set of each partition of `name` whose count is not `rf`: the
    /// first `rf` of its replicas, or its replicas and then the brokers holding the fewest
    /// replicas (of every topic) so far. Refused while a partition of the topic moves.
    fn grown_or_cut(&self, name: &str, rf: usize) -> Result<Vec<(usize, Vec<u32>)>, MetadataError> {
        let topic = self
            .topics
            .get(name)
            .ok_or_else(|| MetadataError::UnknownTopic(name.to_string()))?;
        if let Some(i) = topic.partitions.iter().position(|p| p.target.is_some()) {
            return Err(MetadataError::Invalid(format!(
                "{}-{i} is moving; wait until it completes",
                crate::error::shown(name)
            )));
        }
        let mut load: BTreeMap<u32, usize> =
            self.active_brokers().into_iter().map(|b| (b, 0)).collect();
        for t in self.topics.values() {
            for p in &t.partitions {
                for b in p.running_on() {
                    if let Some(n) = load.get_mut(&b) {
                        *n += 1;
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (i, p) in topic.partitions.iter().enumerate() {
            let mut target = p.replicas.clone();
            if target.len() == rf {
                continue;
            }
            if target.len() > rf {
                for b in target.drain(rf..) {
                    if let Some(n) = load.get_mut(&b) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            // Ties go to the broker nearest after the last replica on the ring of broker
            // ids, as placement does, so followers spread instead of piling on the lowest.
            let ids: Vec<u32> = load.keys().copied().collect();
            while target.len() < rf {
                let last = target
                    .last()
                    .map_or(0, |l| ids.iter().position(|b| b == l).unwrap_or(0));
                let after = |b: u32| {
                    let at = ids.iter().position(|&x| x == b).unwrap_or(0);
                    (at + ids.len() - last) % ids.len()
                };
                let b = load
                    .iter()
                    .filter(|(b, _)| !target.contains(b))
                    .min_by_key(|(b, n)| (**n, after(**b)))
                    .map(|(b, _)| *b)
                    .expect("rf <= brokers");
                *load.entry(b).or_default() += 1;
                target.push(b);
            }
            out.push((i, target));
        }
        Ok(out)
    }

    /// A replica set must be registered brokers, at least one, none twice.
    fn check_replica_set(&self, replicas: &[u32]) -> Result<(), MetadataError> {
        if replicas.is_empty() {
            return Err(MetadataError::Invalid(
                "a partition needs at least one replica".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for b in replicas {
            match self.brokers.get(b) {
                None => {
                    return Err(MetadataError::Invalid(format!(
                        "broker {b} is not in the cluster (brokers: {:?})",
                        self.brokers.keys().collect::<Vec<_>>()
                    )))
                }
                Some(e) if e.draining => {
                    return Err(MetadataError::Invalid(format!(
                        "broker {b} is being decommissioned: it takes no new replicas"
                    )))
                }
                Some(_) => {}
            }
            if !seen.insert(b) {
                return Err(MetadataError::Invalid(format!(
                    "broker {b} appears twice in {replicas:?}"
                )));
            }
        }
        Ok(())
    }

    fn partition_mut(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<&mut PartitionEntry, MetadataError> {
        let t = self
            .topics
            .get_mut(topic)
            .ok_or_else(|| MetadataError::UnknownTopic(topic.to_string()))?;
        let count = t.partitions.len();
        t.partitions.get_mut(partition as usize).ok_or_else(|| {
            MetadataError::Invalid(format!(
                "topic `{}` has {count} partitions; there is no partition {partition}",
                crate::error::shown(topic)
            ))
        })
    }

    /// The partitions (topic, number, entry) that `broker` replicates.
    pub fn replicas_on(&self, broker: u32) -> Vec<(&str, u32, &PartitionEntry)> {
        self.topics
            .iter()
            .flat_map(|(name, t)| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(move |(_, p)| p.running_on().any(|b| b == broker))
                    .map(move |(i, p)| (name.as_str(), i as u32, p))
            })
            .collect()
    }
}

/// Topic configs must be known names with valid values.
fn check_configs(configs: &BTreeMap<String, String>) -> Result<(), MetadataError> {
    crate::config::apply_topic_configs(&crate::log::LogConfig::default(), configs)
        .map(|_| ())
        .map_err(MetadataError::Invalid)
}

impl crate::raft::state_machine::Applier for ClusterState {
    fn apply_batch(&mut self, batch: &[u8]) -> Option<MetadataError> {
        let commands = match Command::from_batch(batch) {
            Ok(c) => c,
            Err(e) => return Some(e),
        };
        // Commands apply one by one; a refused one changes nothing and is reported.
        commands.iter().map(|c| self.apply(c)).find_map(Result::err)
    }
}

/// The metadata group's state machine: offsets plus the cluster state.
pub type MetadataStateMachine = crate::raft::state_machine::PartitionStateMachine<ClusterState>;

impl Command {
    /// The command as a one-record batch (the value is its JSON).
    pub fn to_batch(&self, timestamp: i64) -> Bytes {
        let json = serde_json::to_vec(self).expect("commands serialize");
        let mut b = BatchBuilder::new();
        b.append(&Record {
            timestamp,
            key: None,
            value: Some(&json),
            headers: &[],
        });
        b.seal()
    }

    /// The commands carried by a metadata batch.
    pub fn from_batch(batch: &[u8]) -> Result<Vec<Self>, MetadataError> {
        let bad = |e: String| MetadataError::BadRecord(e);
        let b = RecordBatch::parse(batch).map_err(|e| bad(e.to_string()))?;
        b.records()
            .map(|r| {
                let r = r.map_err(|e| bad(e.to_string()))?;
                let value = r
                    .value
                    .ok_or_else(|| bad("record without a value".into()))?;
                serde_json::from_slice(value).map_err(|e| bad(e.to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
