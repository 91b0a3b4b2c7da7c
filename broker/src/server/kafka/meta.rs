//! ApiVersions, Metadata, the topic admin APIs, configs and DescribeCluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};
use rafka_proto::v1;

use super::errors::{code_and_message, denied};
use super::Call;
use crate::auth::acl::{Operation, ResourceType};
use crate::error::BrokerError;
use crate::server::{catalog, Shared};
use crate::topics::{check_not_internal, is_internal};

/// The APIs served and their versions: Kafka 4.1's ranges (the codecs'), which start at
/// Kafka 2.1's baseline.
const SERVED: &[(ApiKey, VersionRange)] = &[
    (ApiKey::Produce, ProduceRequest::VERSIONS),
    (ApiKey::Fetch, FetchRequest::VERSIONS),
    (ApiKey::ListOffsets, ListOffsetsRequest::VERSIONS),
    (ApiKey::Metadata, MetadataRequest::VERSIONS),
    (ApiKey::ApiVersions, ApiVersionsRequest::VERSIONS),
    (ApiKey::CreateTopics, CreateTopicsRequest::VERSIONS),
    (ApiKey::DeleteTopics, DeleteTopicsRequest::VERSIONS),
    (ApiKey::InitProducerId, InitProducerIdRequest::VERSIONS),
    (ApiKey::DescribeConfigs, DescribeConfigsRequest::VERSIONS),
    (ApiKey::CreatePartitions, CreatePartitionsRequest::VERSIONS),
    (
        ApiKey::IncrementalAlterConfigs,
        IncrementalAlterConfigsRequest::VERSIONS,
    ),
    (ApiKey::DescribeCluster, DescribeClusterRequest::VERSIONS),
    (ApiKey::FindCoordinator, FindCoordinatorRequest::VERSIONS),
    (ApiKey::OffsetCommit, OffsetCommitRequest::VERSIONS),
    (ApiKey::OffsetFetch, OffsetFetchRequest::VERSIONS),
    (ApiKey::JoinGroup, JoinGroupRequest::VERSIONS),
    (ApiKey::SyncGroup, SyncGroupRequest::VERSIONS),
    (ApiKey::Heartbeat, HeartbeatRequest::VERSIONS),
    (ApiKey::LeaveGroup, LeaveGroupRequest::VERSIONS),
    (ApiKey::ListGroups, ListGroupsRequest::VERSIONS),
    (ApiKey::DescribeGroups, DescribeGroupsRequest::VERSIONS),
    (ApiKey::DeleteGroups, DeleteGroupsRequest::VERSIONS),
    (
        ApiKey::ConsumerGroupHeartbeat,
        ConsumerGroupHeartbeatRequest::VERSIONS,
    ),
    (
        ApiKey::ConsumerGroupDescribe,
        ConsumerGroupDescribeRequest::VERSIONS,
    ),
    // v0 sends the SASL exchange outside Kafka frames; clients since Kafka 1.0 use v1.
    (ApiKey::SaslHandshake, VersionRange { min: 1, max: 1 }),
    (ApiKey::SaslAuthenticate, SaslAuthenticateRequest::VERSIONS),
];

/// The versions of `api` served, if it is.
pub(super) fn served(api: ApiKey) -> Option<VersionRange> {
    SERVED.iter().find(|(k, _)| *k == api).map(|(_, r)| *r)
}

/// The served APIs, as ApiVersions lists them.
pub(super) fn supported() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|(api, range)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect()
}

pub(super) fn api_versions(_call: &Call, _r: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(supported())
}

/// A broker's advertised Kafka listener, as the cluster metadata has it.
pub(crate) fn kafka_address(shared: &Shared, id: u32) -> Option<String> {
    if id == shared.node.id() {
        if let Some(own) = &shared.kafka_address {
            return Some(own.clone());
        }
    }
    shared
        .node
        .with_state(|s| s.brokers.get(&id).and_then(|b| b.kafka.clone()))
}

/// `host:port` split, the port a number.
pub(super) fn host_port(address: &str) -> Option<(StrBytes, i32)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((StrBytes::from_string(host.to_string()), i32::from(port)))
}

/// Every broker with a Kafka listener: `(id, host, port)`.
fn brokers(shared: &Shared) -> Vec<(i32, StrBytes, i32)> {
    let ids: Vec<u32> = shared
        .node
        .with_state(|s| s.brokers.keys().copied().collect());
    let mut out: Vec<_> = ids
        .into_iter()
        .chain(std::iter::once(shared.node.id()))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter_map(|id| {
            let (host, port) = host_port(&kafka_address(shared, id)?)?;
            Some((id as i32, host, port))
        })
        .collect();
    out.sort_by_key(|(id, ..)| *id);
    out
}

/// A topic's id for the Kafka APIs that name topics by id: a UUID from its name and the
/// Raft group of its first partition, which is never reused, so a topic created again
/// under the same name gets another id, and every broker computes the same one.
pub(super) fn topic_id(name: &str, first_group: u64) -> uuid::Uuid {
    let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&digest.as_ref()[..8]);
    bytes[8..].copy_from_slice(&first_group.to_be_bytes());
    // Version 8 (custom), RFC 9562 variant: never the nil or any reserved id.
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    uuid::Uuid::from_bytes(bytes)
}

/// The id of topic `name`, if it exists.
pub(super) fn id_of(shared: &Shared, name: &str) -> Option<uuid::Uuid> {
    shared.node.with_state(|s| {
        let t = s.topics.get(name)?;
        Some(topic_id(name, t.partitions.first()?.group))
    })
}

/// The name of the topic with id `id`, if one has it.
pub(super) fn name_of(shared: &Shared, id: uuid::Uuid) -> Option<String> {
    shared.node.with_state(|s| {
        s.topics.iter().find_map(|(name, t)| {
            let first = t.partitions.first()?;
            (topic_id(name, first.group) == id).then(|| name.clone())
        })
    })
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn topic_name(s: &str) -> TopicName {
    TopicName(str_bytes(s))
}

pub(super) async fn metadata(
    shared: &Arc<Shared>,
    call: &Call,
    r: MetadataRequest,
) -> MetadataResponse {
    let who = call.principal.as_ref();
    // v0 asks for every topic with an empty list; later versions with none.
    let asked: Option<Vec<metadata_request::MetadataRequestTopic>> = match r.topics {
        Some(t) if t.is_empty() && call.version() == 0 => None,
        other => other,
    };
    let all = asked.is_none();
    let mut names: Vec<(String, Option<i16>)> = Vec::new();
    match asked {
        None => {
            for name in shared
                .node
                .with_state(|s| s.topics.keys().cloned().collect::<Vec<_>>())
            {
                if shared.may_topic(who, Operation::Describe, &name).is_ok() {
                    names.push((name, None));
                }
            }
        }
        Some(topics) => {
            for t in topics {
                let name = match (&t.name, t.topic_id.is_nil()) {
                    (Some(n), _) => n.0.to_string(),
                    (None, false) => match name_of(shared, t.topic_id) {
                        Some(n) => n,
                        None => continue,
                    },
                    (None, true) => continue,
                };
                let refused = shared
                    .may_topic(who, Operation::Describe, &name)
                    .err()
                    .map(|_| E::TopicAuthorizationFailed.code());
                names.push((name, refused));
            }
        }
    }
    let mut topics = Vec::with_capacity(names.len());
    let wanted: Vec<String> = names
        .iter()
        .filter(|(_, e)| e.is_none())
        .map(|(n, _)| n.clone())
        .collect();
    let mut infos: BTreeMap<String, v1::TopicInfo> = BTreeMap::new();
    let listed = if all {
        catalog::metadata(&shared.node, &[]).await.map(|m| m.topics)
    } else {
        let mut listed = Vec::new();
        for name in &wanted {
            if let Ok(m) = catalog::metadata(&shared.node, std::slice::from_ref(name)).await {
                listed.extend(m.topics);
            }
        }
        Ok(listed)
    };
    for t in listed.unwrap_or_default() {
        infos.insert(t.name.clone(), t);
    }
    for (name, refused) in names {
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(topic_name(&name));
        topic.is_internal = is_internal(&name);
        if let Some(code) = refused {
            topic.error_code = code;
            topics.push(topic);
            continue;
        }
        let Some(info) = infos.get(&name) else {
            topic.error_code = E::UnknownTopicOrPartition.code();
            topics.push(topic);
            continue;
        };
        if let Some(id) = id_of(shared, &name) {
            topic.topic_id = id;
        }
        for p in &info.partitions {
            topic
                .partitions
                .push(partition_metadata(shared, &name, p).await);
        }
        topics.push(topic);
    }
    let mut out = MetadataResponse::default();
    out.brokers = brokers(shared)
        .into_iter()
        .map(|(id, host, port)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(host)
                .with_port(port)
        })
        .collect();
    out.cluster_id = Some(str_bytes(CLUSTER_ID));
    out.controller_id = BrokerId(shared.node.metadata_leader().map_or(-1, |l| l as i32));
    out.topics = topics;
    out
}

/// The cluster id Kafka clients are told (rafka keeps none of its own yet).
const CLUSTER_ID: &str = "rafka";

async fn partition_metadata(
    shared: &Shared,
    topic: &str,
    p: &v1::PartitionInfo,
) -> MetadataResponsePartition {
    let mut out = MetadataResponsePartition::default();
    out.partition_index = p.partition as i32;
    let replicas: Vec<BrokerId> = p.replicas.iter().map(|&r| BrokerId(r as i32)).collect();
    out.replica_nodes = replicas.clone();
    // Raft commits on a majority: every replica counts as in sync for Kafka's clients.
    out.isr_nodes = replicas;
    if p.leader == 0 {
        out.leader_id = BrokerId(-1);
        out.error_code = E::LeaderNotAvailable.code();
    } else {
        out.leader_id = BrokerId(p.leader as i32);
        out.leader_epoch = leader_epoch(shared, topic, p.partition).await;
    }
    out
}

/// The partition's Raft term as Kafka's leader epoch (0 when not a replica here).
async fn leader_epoch(shared: &Shared, topic: &str, partition: u32) -> i32 {
    shared
        .node
        .partition(topic, partition)
        .await
        .map_or(0, |p| p.raft().metrics().borrow().current_term as i32)
}

/// Create on the cluster (any topic) or on the topic, as Kafka has it.
fn may_create(shared: &Shared, call: &Call, name: &str) -> Result<(), BrokerError> {
    let who = call.principal.as_ref();
    if shared
        .authorize(who, Operation::Create, ResourceType::Cluster, "")
        .is_ok()
    {
        return Ok(());
    }
    shared.may_topic(who, Operation::Create, name)
}

pub(super) async fn create_topics(
    shared: &Arc<Shared>,
    call: &Call,
    r: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut out = CreateTopicsResponse::default();
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        let outcome = async {
            check_not_internal(&name, "create")?;
            crate::topics::validate_topic_name(&name)?;
            may_create(shared, call, &name)?;
            if !t.assignments.is_empty() {
                return Err(BrokerError::InvalidRequest(
                    "manual replica assignments are not supported: rafka places replicas itself"
                        .into(),
                ));
            }
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                let value = c.value.as_ref().ok_or_else(|| {
                    BrokerError::InvalidRequest(format!("config {} has no value", c.name.as_str()))
                })?;
                configs.insert(c.name.to_string(), value.to_string());
            }
            let partitions = u32::try_from(t.num_partitions).unwrap_or(0);
            let replication_factor = u32::try_from(t.replication_factor).unwrap_or(0);
            if t.num_partitions == 0 || t.num_partitions < -1 {
                return Err(BrokerError::InvalidRequest(format!(
                    "a topic needs at least one partition, not {}",
                    t.num_partitions
                )));
            }
            if r.validate_only {
                if shared.node.with_state(|s| s.topics.contains_key(&name)) {
                    return Err(BrokerError::TopicExists(name.clone()));
                }
                crate::config::apply_topic_configs(
                    &shared.config.topic_defaults().unwrap_or_default(),
                    &configs,
                )
                .map_err(BrokerError::InvalidRequest)?;
                return Ok(None);
            }
            let request = v1::CreateTopicRequest {
                name: name.clone(),
                partitions,
                replication_factor,
                configs: configs.into_iter().collect(),
            };
            catalog::create_topic(&shared.node, request, &shared.config)
                .await
                .map(Some)
        }
        .await;
        match outcome {
            Ok(info) => {
                if let Some(info) = info {
                    tracing::info!(topic = %name, partitions = info.partitions.len(), "created topic (kafka)");
                    result.num_partitions = info.partitions.len() as i32;
                    result.replication_factor = info
                        .partitions
                        .first()
                        .map_or(0, |p| p.replicas.len() as i16);
                    if let Some(id) = id_of(shared, &name) {
                        result.topic_id = id;
                    }
                }
            }
            Err(e) => {
                result.error_code = match &e {
                    BrokerError::InvalidRequest(m) if m.contains("config") => {
                        E::InvalidConfig.code()
                    }
                    BrokerError::InvalidRequest(m) if m.contains("partition") => {
                        E::InvalidPartitions.code()
                    }
                    BrokerError::InvalidRequest(m) if m.contains("replica") => {
                        E::InvalidReplicationFactor.code()
                    }
                    BrokerError::InvalidRequest(_) if !name_ok(&name) => {
                        E::InvalidTopicException.code()
                    }
                    _ => denied(&e, ResourceType::Topic),
                };
                result.error_message = code_and_message(&e).1;
            }
        }
        out.topics.push(result);
    }
    out
}

fn name_ok(name: &str) -> bool {
    crate::topics::validate_topic_name(name).is_ok()
}

pub(super) async fn delete_topics(
    shared: &Arc<Shared>,
    call: &Call,
    r: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let who = call.principal.as_ref();
    // v0-5 name topics in `topic_names`, v6 on in `topics` (by name or id).
    let mut asked: Vec<(Option<String>, uuid::Uuid)> = r
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
        .collect();
    asked.extend(
        r.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut out = DeleteTopicsResponse::default();
    for (name, id) in asked {
        let mut result = DeletableTopicResult::default();
        let name = name.or_else(|| name_of(shared, id));
        result.name = name.as_deref().map(topic_name);
        result.topic_id = id;
        let Some(name) = name else {
            result.error_code = E::UnknownTopicId.code();
            out.responses.push(result);
            continue;
        };
        let outcome = async {
            check_not_internal(&name, "delete")?;
            shared.may_topic(who, Operation::Delete, &name)?;
            if !shared.node.with_state(|s| s.topics.contains_key(&name)) {
                return Err(BrokerError::UnknownTopic(name.clone()));
            }
            catalog::delete_topic(&shared.node, name.clone()).await
        }
        .await;
        match outcome {
            Ok(()) => tracing::info!(topic = %name, "deleted topic (kafka)"),
            Err(e) => {
                result.error_code = denied(&e, ResourceType::Topic);
                result.error_message = code_and_message(&e).1;
            }
        }
        out.responses.push(result);
    }
    out
}

pub(super) async fn create_partitions(
    shared: &Arc<Shared>,
    call: &Call,
    r: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let who = call.principal.as_ref();
    let mut out = CreatePartitionsResponse::default();
    for t in r.topics {
        let name = t.name.0.to_string();
        let mut result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let outcome = async {
            check_not_internal(&name, "add partitions to")?;
            shared.may_topic(who, Operation::Alter, &name)?;
            if t.assignments.is_some() {
                return Err(BrokerError::InvalidRequest(
                    "manual replica assignments are not supported: rafka places replicas itself"
                        .into(),
                ));
            }
            let count = u32::try_from(t.count).map_err(|_| {
                BrokerError::InvalidRequest(format!("partition count {} is negative", t.count))
            })?;
            let now = catalog::partition_count(&shared.node, &name)
                .ok_or_else(|| BrokerError::UnknownTopic(name.clone()))?;
            if count <= now {
                return Err(BrokerError::InvalidRequest(format!(
                    "topic {name} has {now} partitions; a new count must be larger, not {count}"
                )));
            }
            if r.validate_only {
                return Ok(());
            }
            catalog::add_partitions(&shared.node, name.clone(), count, &shared.config)
                .await
                .map(|_| ())
        }
        .await;
        if let Err(e) = outcome {
            result.error_code = match &e {
                BrokerError::InvalidRequest(m) if m.contains("partition") => {
                    E::InvalidPartitions.code()
                }
                _ => denied(&e, ResourceType::Topic),
            };
            result.error_message = code_and_message(&e).1;
        }
        out.results.push(result);
    }
    out
}

/// Kafka's config resource types.
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;
/// Kafka's config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub(super) fn describe_configs(
    shared: &Arc<Shared>,
    call: &Call,
    r: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let who = call.principal.as_ref();
    let defaults =
        crate::config::topic_config_map(&shared.config.topic_defaults().unwrap_or_default());
    let mut out = DescribeConfigsResponse::default();
    for res in r.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let name = res.resource_name.to_string();
        let keys: Option<Vec<String>> = res
            .configuration_keys
            .map(|k| k.iter().map(|s| s.to_string()).collect());
        let wanted = |k: &str| keys.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
        let entry = |k: &str, v: &str, source: i8, read_only: bool| {
            DescribeConfigsResourceResult::default()
                .with_name(str_bytes(k))
                .with_value(Some(str_bytes(v)))
                .with_config_source(source)
                .with_read_only(read_only)
        };
        match res.resource_type {
            TOPIC_RESOURCE => {
                let overrides = shared
                    .node
                    .with_state(|s| s.topics.get(&name).map(|t| t.configs.clone()));
                match (shared.may_topic(who, Operation::Describe, &name), overrides) {
                    (Err(e), _) => {
                        result.error_code = denied(&e, ResourceType::Topic);
                        result.error_message = code_and_message(&e).1;
                    }
                    (Ok(()), None) => {
                        result.error_code = E::UnknownTopicOrPartition.code();
                        result.error_message = Some(str_bytes(&format!("unknown topic `{name}`")));
                    }
                    (Ok(()), Some(overrides)) => {
                        for (k, v) in &defaults {
                            if !wanted(k) {
                                continue;
                            }
                            result.configs.push(match overrides.get(k) {
                                Some(o) => entry(k, o, SOURCE_TOPIC, false),
                                None => entry(k, v, SOURCE_DEFAULT, false),
                            });
                        }
                    }
                }
            }
            BROKER_RESOURCE => {
                for (k, v) in &defaults {
                    if wanted(k) {
                        result.configs.push(entry(k, v, SOURCE_STATIC_BROKER, true));
                    }
                }
            }
            other => {
                result.error_code = E::InvalidRequest.code();
                result.error_message = Some(str_bytes(&format!(
                    "config resource type {other} is not served (topics: 2, brokers: 4)"
                )));
            }
        }
        out.results.push(result);
    }
    out
}

/// IncrementalAlterConfigs' operations.
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

pub(super) async fn incremental_alter_configs(
    shared: &Arc<Shared>,
    call: &Call,
    r: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let who = call.principal.as_ref();
    let defaults =
        crate::config::topic_config_map(&shared.config.topic_defaults().unwrap_or_default());
    let mut out = IncrementalAlterConfigsResponse::default();
    for res in r.resources {
        let mut result = AlterConfigsResourceResponse::default()
            .with_resource_type(res.resource_type)
            .with_resource_name(res.resource_name.clone());
        let name = res.resource_name.to_string();
        let outcome = async {
            if res.resource_type != TOPIC_RESOURCE {
                return Err(BrokerError::InvalidRequest(format!(
                    "only topic configs (resource type 2) can be altered, not type {}",
                    res.resource_type
                )));
            }
            check_not_internal(&name, "alter the config of")?;
            shared.may_topic(who, Operation::Alter, &name)?;
            let mut changes = BTreeMap::new();
            for c in &res.configs {
                let key = c.name.to_string();
                let value = match c.config_operation {
                    OP_SET => c.value.as_ref().map(|v| v.to_string()).ok_or_else(|| {
                        BrokerError::InvalidRequest(format!("config {key}: SET needs a value"))
                    })?,
                    // Back to the broker's default (rafka keeps overrides, not absences).
                    OP_DELETE => defaults.get(&key).cloned().ok_or_else(|| {
                        BrokerError::InvalidRequest(format!("unknown topic config `{key}`"))
                    })?,
                    op => {
                        return Err(BrokerError::InvalidRequest(format!(
                            "config {key}: operation {op} (APPEND/SUBTRACT) applies to list configs; rafka has none"
                        )))
                    }
                };
                changes.insert(key, value);
            }
            if r.validate_only {
                crate::config::apply_topic_configs(&shared.config.topic_defaults().unwrap_or_default(), &changes)
                    .map_err(BrokerError::InvalidRequest)?;
                return Ok(());
            }
            catalog::alter_topic(&shared.node, name.clone(), changes).await.map(|_| ())
        }
        .await;
        if let Err(e) = outcome {
            result.error_code = match &e {
                BrokerError::InvalidRequest(_) => E::InvalidConfig.code(),
                _ => denied(&e, ResourceType::Topic),
            };
            result.error_message = code_and_message(&e).1;
        }
        out.responses.push(result);
    }
    out
}

pub(super) fn describe_cluster(
    shared: &Arc<Shared>,
    call: &Call,
    _r: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let mut out = DescribeClusterResponse::default();
    if let Err(e) = shared.authorize(
        call.principal.as_ref(),
        Operation::Describe,
        ResourceType::Cluster,
        "",
    ) {
        out.error_code = E::ClusterAuthorizationFailed.code();
        out.error_message = code_and_message(&e).1;
        return out;
    }
    out.cluster_id = str_bytes(CLUSTER_ID);
    out.controller_id = BrokerId(shared.node.metadata_leader().map_or(-1, |l| l as i32));
    out.brokers = brokers(shared)
        .into_iter()
        .map(|(id, host, port)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(id))
                .with_host(host)
                .with_port(port)
        })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_ids_are_stable_distinct_and_never_reserved() {
        let a = topic_id("orders", 7);
        assert_eq!(a, topic_id("orders", 7));
        assert_ne!(a, topic_id("orders", 8), "a topic made again gets a new id");
        assert_ne!(a, topic_id("payments", 7));
        assert!(!a.is_nil());
        assert_ne!(
            a.as_u64_pair().0,
            0,
            "Kafka reserves ids with a zero high half"
        );
    }

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(host_port("127.0.0.1:9093").unwrap().1, 9093);
        assert_eq!(host_port("[::1]:9093").unwrap().0.as_str(), "::1");
        assert!(host_port("nohost").is_none());
        assert!(host_port("h:99999").is_none());
    }
}
