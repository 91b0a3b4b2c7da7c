//! Consumer groups for Kafka clients: FindCoordinator, OffsetCommit, OffsetFetch,
//! ListGroups, DescribeGroups, DeleteGroups and KIP-848's ConsumerGroupHeartbeat and
//! ConsumerGroupDescribe, over
//! the group service the gRPC API uses (the same offsets, members and assignments).
//! The classic protocol's JoinGroup/SyncGroup/Heartbeat/LeaveGroup are in `classic`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment, TopicPartitions as AssignedPartitions,
};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use rafka_proto::v1;

use super::errors::code;
use super::{meta, Call};
use crate::auth::acl::{Operation, ResourceType};
use crate::error::BrokerError;
use crate::server::group_service::GroupService;
use crate::server::Shared;

/// What the listener remembers of a KIP-848 member between heartbeats: such a member
/// sends its subscription and owned partitions only when they change.
#[derive(Debug, Clone, Default)]
struct ConsumerMember {
    topics: BTreeSet<String>,
    owned: Vec<v1::TopicPartitionRef>,
    assignor: String,
    /// The assignment last sent, so an unchanged one is not sent again.
    sent: Option<BTreeSet<(String, u32)>>,
}

/// The Kafka listener's state beside the engine's: its group state and the issuer
/// SASL/PLAIN exchanges client secrets at.
#[derive(Default)]
pub(crate) struct KafkaState {
    consumers: Mutex<HashMap<(String, String), ConsumerMember>>,
    /// Groups of the classic protocol (JoinGroup/SyncGroup), by id.
    pub classic: super::classic::ClassicGroups,
    /// Made on first use (it keeps the rate limit of wrong secrets).
    pub issuer: std::sync::OnceLock<Arc<crate::auth::issuer::Issuer>>,
}

/// A group request's failure in Kafka's code: a broker that does not coordinate the
/// group says NOT_COORDINATOR; a refusal names the group.
pub(super) fn group_code(e: &BrokerError) -> E {
    match e {
        BrokerError::NotLeader { .. } | BrokerError::ShuttingDown => E::NotCoordinator,
        BrokerError::Unavailable(_) => E::CoordinatorNotAvailable,
        BrokerError::NotAuthorized(_) => E::GroupAuthorizationFailed,
        BrokerError::InvalidRequest(m) if m.starts_with("invalid group id") => E::InvalidGroupId,
        other => code(other),
    }
}

fn service(shared: &Arc<Shared>) -> GroupService {
    GroupService::new(shared.clone())
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// FindCoordinator key type of a transaction (not served: no transactions).
const TRANSACTION_KEY: i8 = 1;

pub(super) async fn find_coordinator(
    shared: &Arc<Shared>,
    call: &Call,
    r: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys: Vec<StrBytes> = if call.version() >= 4 {
        r.coordinator_keys.clone()
    } else {
        vec![r.key.clone()]
    };
    let mut coordinators = Vec::new();
    for key in keys {
        let mut c = Coordinator::default().with_key(key.clone());
        c.node_id = BrokerId(-1);
        let found = if r.key_type == TRANSACTION_KEY {
            Err((
                E::CoordinatorNotAvailable,
                "transactions are not supported".to_string(),
            ))
        } else {
            let req = v1::FindCoordinatorRequest {
                group: key.to_string(),
            };
            match service(shared)
                .find_coordinator(call.principal.as_ref(), req)
                .await
            {
                Ok(answer) => match meta::kafka_address(shared, answer.node_id)
                    .as_deref()
                    .and_then(meta::host_port)
                {
                    Some((host, port)) => Ok((answer.node_id, host, port)),
                    None => Err((
                        E::CoordinatorNotAvailable,
                        format!("coordinator {} has no Kafka listener known", answer.node_id),
                    )),
                },
                Err(e) => Err((group_code(&e), e.to_string())),
            }
        };
        match found {
            Ok((node, host, port)) => {
                c.node_id = BrokerId(node as i32);
                c.host = host;
                c.port = port;
            }
            Err((e, message)) => {
                c.error_code = e.code();
                c.error_message = Some(str_bytes(&message));
            }
        }
        coordinators.push(c);
    }
    let mut out = FindCoordinatorResponse::default();
    if call.version() >= 4 {
        out.coordinators = coordinators;
    } else if let Some(c) = coordinators.pop() {
        out.error_code = c.error_code;
        if call.version() >= 1 {
            out.error_message = c.error_message;
        }
        out.node_id = c.node_id;
        out.host = c.host;
        out.port = c.port;
    }
    out
}

pub(super) async fn offset_commit(
    shared: &Arc<Shared>,
    call: &Call,
    r: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = r.group_id.0.to_string();
    let who = call.principal.as_ref();
    let mut offsets = Vec::new();
    let mut refused: BTreeMap<(usize, usize), E> = BTreeMap::new();
    for (ti, t) in r.topics.iter().enumerate() {
        let name = t.name.0.to_string();
        let topic_denied = shared.may_topic(who, Operation::Read, &name).is_err();
        for (pi, p) in t.partitions.iter().enumerate() {
            let (Ok(partition), Ok(offset)) = (
                u32::try_from(p.partition_index),
                u64::try_from(p.committed_offset),
            ) else {
                refused.insert((ti, pi), E::InvalidCommitOffsetSize);
                continue;
            };
            if topic_denied {
                refused.insert((ti, pi), E::TopicAuthorizationFailed);
                continue;
            }
            offsets.push(v1::CommittedOffset {
                topic: name.clone(),
                partition,
                offset,
                metadata: p.committed_metadata.as_deref().unwrap_or("").to_string(),
            });
        }
    }
    let outcome = commit(shared, call, &group, &r, offsets).await;
    let mut out = OffsetCommitResponse::default();
    for (ti, t) in r.topics.iter().enumerate() {
        let mut topic = OffsetCommitResponseTopic::default().with_name(t.name.clone());
        for (pi, p) in t.partitions.iter().enumerate() {
            let error = match (refused.get(&(ti, pi)), &outcome) {
                (Some(e), _) => e.code(),
                (None, Err(e)) => e.code(),
                (None, Ok(())) => 0,
            };
            topic.partitions.push(
                OffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error),
            );
        }
        out.topics.push(topic);
    }
    out
}

/// One commit: by a classic member (generation checked here), by a KIP-848 member (the
/// group service checks its ownership), or by a client outside any group.
async fn commit(
    shared: &Arc<Shared>,
    call: &Call,
    group: &str,
    r: &OffsetCommitRequest,
    offsets: Vec<v1::CommittedOffset>,
) -> Result<(), E> {
    let who = call.principal.as_ref();
    shared
        .authorize(who, Operation::Read, ResourceType::Group, group)
        .map_err(|_| E::GroupAuthorizationFailed)?;
    if offsets.is_empty() {
        return Ok(());
    }
    let member = r.member_id.to_string();
    let mut member_id = String::new();
    let mut member_epoch = 0;
    if !member.is_empty() || r.generation_id_or_member_epoch >= 0 {
        let classic =
            shared
                .kafka
                .classic
                .check_commit(group, &member, r.generation_id_or_member_epoch);
        match classic {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            // Not a classic group: a KIP-848 member, checked by the group service.
            None => {
                member_id = member;
                member_epoch = r.generation_id_or_member_epoch;
            }
        }
    }
    let req = v1::CommitOffsetsRequest {
        group: group.to_string(),
        member_id,
        member_epoch,
        offsets,
    };
    service(shared)
        .commit_offsets(who, req)
        .await
        .map(|_| ())
        .map_err(|e| group_code(&e))
}

pub(super) async fn offset_fetch(
    shared: &Arc<Shared>,
    call: &Call,
    r: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let mut out = OffsetFetchResponse::default();
    if call.version() >= 8 {
        for g in r.groups {
            let asked = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes))
                    .collect::<Vec<_>>()
            });
            let group = g.group_id.0.to_string();
            let mut answer = OffsetFetchResponseGroup::default().with_group_id(g.group_id);
            match fetched(shared, call, &group, asked).await {
                Ok(topics) => {
                    for (name, parts) in topics {
                        let mut topic = OffsetFetchResponseTopics::default()
                            .with_name(TopicName(str_bytes(&name)));
                        for (partition, offset, metadata) in parts {
                            topic.partitions.push(
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(partition)
                                    .with_committed_offset(offset)
                                    .with_metadata(Some(str_bytes(&metadata))),
                            );
                        }
                        answer.topics.push(topic);
                    }
                }
                Err(e) => answer.error_code = e.code(),
            }
            out.groups.push(answer);
        }
        return out;
    }
    let asked = r.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect::<Vec<_>>()
    });
    match fetched(shared, call, &r.group_id.0, asked).await {
        Ok(topics) => {
            for (name, parts) in topics {
                let mut topic =
                    OffsetFetchResponseTopic::default().with_name(TopicName(str_bytes(&name)));
                for (partition, offset, metadata) in parts {
                    topic.partitions.push(
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                            .with_metadata(Some(str_bytes(&metadata))),
                    );
                }
                out.topics.push(topic);
            }
        }
        Err(e) => {
            if call.version() >= 2 {
                out.error_code = e.code();
            }
        }
    }
    out
}

/// Partitions with their committed offset (-1: none) and metadata, by topic.
type Fetched = Vec<(String, Vec<(i32, i64, String)>)>;

/// A group's committed offsets, of the partitions asked for (all when `None`).
async fn fetched(
    shared: &Arc<Shared>,
    call: &Call,
    group: &str,
    asked: Option<Vec<(String, Vec<i32>)>>,
) -> Result<Fetched, E> {
    let who = call.principal.as_ref();
    let only: Vec<v1::TopicPartitionRef> = asked
        .iter()
        .flatten()
        .flat_map(|(t, ps)| {
            ps.iter().filter_map(|&p| {
                Some(v1::TopicPartitionRef {
                    topic: t.clone(),
                    partition: u32::try_from(p).ok()?,
                })
            })
        })
        .collect();
    if asked
        .as_ref()
        .is_some_and(|a| a.iter().all(|(_, ps)| ps.is_empty()))
    {
        return Ok(asked
            .unwrap_or_default()
            .into_iter()
            .map(|(t, _)| (t, Vec::new()))
            .collect());
    }
    let answer = service(shared)
        .fetch_offsets(
            who,
            v1::FetchOffsetsRequest {
                group: group.to_string(),
                partitions: only,
            },
        )
        .await
        .map_err(|e| group_code(&e))?;
    let mut by_topic: BTreeMap<String, Vec<(i32, i64, String)>> = BTreeMap::new();
    for o in answer.offsets {
        if shared
            .may_topic(who, Operation::Describe, &o.topic)
            .is_err()
        {
            continue;
        }
        by_topic.entry(o.topic.clone()).or_default().push((
            o.partition as i32,
            o.offset as i64,
            o.metadata,
        ));
    }
    // Partitions asked for without a committed offset answer -1.
    if let Some(asked) = asked {
        for (t, ps) in asked {
            let have = by_topic.entry(t).or_default();
            for p in ps {
                if !have.iter().any(|(q, ..)| *q == p) {
                    have.push((p, -1, String::new()));
                }
            }
        }
    }
    Ok(by_topic.into_iter().collect())
}

pub(super) async fn list_groups(
    shared: &Arc<Shared>,
    call: &Call,
    r: ListGroupsRequest,
) -> ListGroupsResponse {
    let mut out = ListGroupsResponse::default();
    let names = match service(shared)
        .list_groups(call.principal.as_ref(), v1::ListGroupsRequest {})
        .await
    {
        Ok(a) => a.groups,
        Err(e) => {
            out.error_code = group_code(&e).code();
            return out;
        }
    };
    let mut names: BTreeSet<String> = names.into_iter().collect();
    names.extend(shared.kafka.classic.names());
    for name in names {
        let (state, group_type) = match shared.kafka.classic.state(&name) {
            Some(state) => (state, "classic"),
            None => (consumer_state(shared, &name), "consumer"),
        };
        let wanted = r.states_filter.is_empty()
            || r.states_filter
                .iter()
                .any(|s| s.eq_ignore_ascii_case(state));
        let typed = r.types_filter.is_empty()
            || r.types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case(group_type));
        if !(wanted && typed) {
            continue;
        }
        let mut g = ListedGroup::default()
            .with_group_id(GroupId(str_bytes(&name)))
            .with_protocol_type(str_bytes("consumer"));
        if call.version() >= 4 {
            g.group_state = str_bytes(state);
        }
        if call.version() >= 5 {
            g.group_type = str_bytes(group_type);
        }
        out.groups.push(g);
    }
    out
}

/// A KIP-848 (or offsets-only) group's state as Kafka names it.
fn consumer_state(shared: &Shared, group: &str) -> &'static str {
    let groups = shared
        .groups
        .groups
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    match groups.get(group) {
        Some(g) if !g.members.is_empty() => "Stable",
        _ => "Empty",
    }
}

/// Partitions grouped by topic, as Kafka's messages list them.
fn by_topic<'a>(tps: impl IntoIterator<Item = (&'a str, u32)>) -> BTreeMap<&'a str, Vec<i32>> {
    let mut out: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in tps {
        out.entry(topic).or_default().push(partition as i32);
    }
    out
}

/// The group service's state of a group in Kafka's words.
fn kafka_state(state: &str) -> &'static str {
    match state {
        "stable" => "Stable",
        "empty" => "Empty",
        _ => "Dead",
    }
}

/// A member's assignment in Kafka's ConsumerProtocolAssignment encoding (v0).
fn encoded_assignment(assigned: &[v1::TopicPartitionRef]) -> Bytes {
    let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(
        by_topic(assigned.iter().map(|tp| (tp.topic.as_str(), tp.partition)))
            .into_iter()
            .map(|(t, ps)| {
                AssignedTopic::default()
                    .with_topic(TopicName(str_bytes(t)))
                    .with_partitions(ps)
            })
            .collect(),
    );
    let mut out = BytesMut::new();
    out.extend_from_slice(&0i16.to_be_bytes());
    if assignment.encode(&mut out, 0).is_err() {
        return Bytes::new();
    }
    out.freeze()
}

pub(super) async fn describe_groups(
    shared: &Arc<Shared>,
    call: &Call,
    r: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let mut out = DescribeGroupsResponse::default();
    for id in r.groups {
        let name = id.0.to_string();
        let mut g = DescribedGroup::default().with_group_id(id);
        if let Some(described) = shared.kafka.classic.describe(&name) {
            if shared
                .authorize(
                    call.principal.as_ref(),
                    Operation::Describe,
                    ResourceType::Group,
                    &name,
                )
                .is_err()
            {
                g.error_code = E::GroupAuthorizationFailed.code();
            } else {
                g = described.with_group_id(g.group_id);
            }
            out.groups.push(g);
            continue;
        }
        let req = v1::DescribeGroupRequest {
            group: name.clone(),
        };
        match service(shared)
            .describe_group(call.principal.as_ref(), req)
            .await
        {
            Ok(d) => {
                g.group_state = str_bytes(kafka_state(&d.state));
                g.protocol_type = str_bytes("consumer");
                g.protocol_data = str_bytes(&d.assignor.to_lowercase());
                g.members = d
                    .members
                    .iter()
                    .map(|m| {
                        DescribedGroupMember::default()
                            .with_member_id(str_bytes(&m.member_id))
                            .with_group_instance_id(
                                Some(m.instance_id.as_str())
                                    .filter(|i| !i.is_empty() && call.version() >= 4)
                                    .map(str_bytes),
                            )
                            .with_member_assignment(encoded_assignment(&m.assignment))
                    })
                    .collect();
            }
            Err(BrokerError::UnknownGroup(_)) => g.group_state = str_bytes("Dead"),
            Err(e) => g.error_code = group_code(&e).code(),
        }
        out.groups.push(g);
    }
    out
}

pub(super) async fn delete_groups(
    shared: &Arc<Shared>,
    call: &Call,
    r: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut out = DeleteGroupsResponse::default();
    for id in r.groups_names {
        let name = id.0.to_string();
        let mut result = DeletableGroupResult::default().with_group_id(id);
        if shared.kafka.classic.has_members(&name) {
            result.error_code = E::NonEmptyGroup.code();
        } else {
            let req = v1::DeleteGroupRequest {
                group: name.clone(),
            };
            match service(shared)
                .delete_group(call.principal.as_ref(), req)
                .await
            {
                Ok(_) => shared.kafka.classic.forget(&name),
                Err(e) => result.error_code = group_code(&e).code(),
            }
        }
        out.results.push(result);
    }
    out
}

/// KIP-848's default session timeout (`group.consumer.session.timeout.ms`).
const CONSUMER_SESSION_MS: u32 = 45_000;

pub(super) async fn consumer_group_heartbeat(
    shared: &Arc<Shared>,
    call: &Call,
    r: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let mut out = ConsumerGroupHeartbeatResponse::default();
    let group = r.group_id.0.to_string();
    let member = r.member_id.to_string();
    if shared.kafka.classic.has_members(&group) {
        out.error_code = E::InconsistentGroupProtocol.code();
        out.error_message = Some(str_bytes(&format!(
            "group {group} uses the classic protocol; a consumer-protocol member cannot join it"
        )));
        return out;
    }
    let key = (group.clone(), member.clone());
    // Fill in what the member left out because it did not change.
    let known = {
        let consumers = shared
            .kafka
            .consumers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        consumers.get(&key).cloned().unwrap_or_default()
    };
    let topics: BTreeSet<String> = match &r.subscribed_topic_names {
        Some(names) => names.iter().map(|n| n.0.to_string()).collect(),
        None => known.topics.clone(),
    };
    let owned: Vec<v1::TopicPartitionRef> = match &r.topic_partitions {
        Some(tps) => tps
            .iter()
            .filter_map(|t| Some((meta::name_of(shared, t.topic_id)?, &t.partitions)))
            .flat_map(|(name, ps)| {
                ps.iter().filter_map(move |&p| {
                    Some(v1::TopicPartitionRef {
                        topic: name.clone(),
                        partition: u32::try_from(p).ok()?,
                    })
                })
            })
            .collect(),
        None => known.owned.clone(),
    };
    let assignor = match r.server_assignor.as_deref() {
        Some("uniform") | None => known.assignor.clone(),
        Some(other) => other.to_string(),
    };
    for t in &topics {
        if shared
            .may_topic(call.principal.as_ref(), Operation::Read, t)
            .is_err()
        {
            out.error_code = E::TopicAuthorizationFailed.code();
            return out;
        }
    }
    let req = v1::GroupHeartbeatRequest {
        group: group.clone(),
        member_id: member.clone(),
        member_epoch: r.member_epoch,
        instance_id: r.instance_id.as_deref().unwrap_or("").to_string(),
        topics: topics.iter().cloned().collect(),
        assignor: assignor.clone(),
        owned: owned.clone(),
        session_timeout_ms: CONSUMER_SESSION_MS,
    };
    match service(shared)
        .heartbeat(call.principal.as_ref(), req)
        .await
    {
        Ok(answer) => {
            out.member_id = Some(str_bytes(&answer.member_id));
            out.member_epoch = answer.member_epoch;
            out.heartbeat_interval_ms = answer.heartbeat_interval_ms as i32;
            let assigned: BTreeSet<(String, u32)> = answer
                .assignment
                .iter()
                .map(|tp| (tp.topic.clone(), tp.partition))
                .collect();
            let mut consumers = shared
                .kafka
                .consumers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if r.member_epoch < 0 {
                consumers.remove(&key);
                consumers.remove(&(group, answer.member_id.clone()));
                return out;
            }
            let entry = consumers
                .entry((group, answer.member_id.clone()))
                .or_default();
            if entry.sent.as_ref() != Some(&assigned) || r.member_epoch == 0 {
                out.assignment = Some(
                    Assignment::default().with_topic_partitions(
                        by_topic(assigned.iter().map(|(t, p)| (t.as_str(), *p)))
                            .into_iter()
                            .filter_map(|(t, ps)| {
                                Some(
                                    AssignedPartitions::default()
                                        .with_topic_id(meta::id_of(shared, t)?)
                                        .with_partitions(ps),
                                )
                            })
                            .collect(),
                    ),
                );
                entry.sent = Some(assigned);
            }
            entry.topics = topics;
            entry.owned = owned;
            entry.assignor = assignor;
        }
        Err(e) => {
            out.error_code = group_code(&e).code();
            out.error_message = Some(str_bytes(&e.to_string()));
        }
    }
    out
}

pub(super) async fn consumer_group_describe(
    shared: &Arc<Shared>,
    call: &Call,
    r: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment as Described, DescribedGroup as Group, Member, TopicPartitions,
    };
    let mut out = ConsumerGroupDescribeResponse::default();
    for id in r.group_ids {
        let name = id.0.to_string();
        let mut g = Group::default().with_group_id(id);
        if shared.kafka.classic.has_members(&name) {
            g.error_code = E::GroupIdNotFound.code();
            g.error_message = Some(str_bytes(&format!(
                "group {name} uses the classic protocol (DescribeGroups describes it)"
            )));
            out.groups.push(g);
            continue;
        }
        let req = v1::DescribeGroupRequest {
            group: name.clone(),
        };
        match service(shared)
            .describe_group(call.principal.as_ref(), req)
            .await
        {
            Ok(d) => {
                g.group_state = str_bytes(kafka_state(&d.state));
                g.group_epoch = d.epoch;
                g.assignment_epoch = d.epoch;
                g.assignor_name = str_bytes(&d.assignor.to_lowercase());
                let assigned = |tps: &[v1::TopicPartitionRef]| {
                    Described::default().with_topic_partitions(
                        by_topic(tps.iter().map(|tp| (tp.topic.as_str(), tp.partition)))
                            .into_iter()
                            .map(|(t, ps)| {
                                TopicPartitions::default()
                                    .with_topic_id(meta::id_of(shared, t).unwrap_or_default())
                                    .with_topic_name(TopicName(str_bytes(t)))
                                    .with_partitions(ps)
                            })
                            .collect(),
                    )
                };
                g.members = d
                    .members
                    .iter()
                    .map(|m| {
                        Member::default()
                            .with_member_id(str_bytes(&m.member_id))
                            .with_instance_id(
                                Some(m.instance_id.as_str())
                                    .filter(|i| !i.is_empty())
                                    .map(str_bytes),
                            )
                            .with_member_epoch(d.epoch)
                            .with_subscribed_topic_names(
                                m.topics.iter().map(|t| TopicName(str_bytes(t))).collect(),
                            )
                            .with_assignment(assigned(&m.assignment))
                            .with_target_assignment(assigned(&m.assignment))
                    })
                    .collect();
            }
            Err(BrokerError::UnknownGroup(_)) => {
                g.error_code = E::GroupIdNotFound.code();
            }
            Err(e) => {
                g.error_code = group_code(&e).code();
                g.error_message = Some(str_bytes(&e.to_string()));
            }
        }
        out.groups.push(g);
    }
    out
}
