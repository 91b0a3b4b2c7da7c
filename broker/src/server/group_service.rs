//! FindCoordinator, CommitOffsets and FetchOffsets over `__consumer_offsets`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rafka_proto::batch::ValidatedBatch;
use rafka_proto::v1::{self, group_server};
use tonic::{Request, Response, Status};

use super::{catalog, Shared};
use crate::auth::acl::{Operation, ResourceType};
use crate::cluster::node::ReplicatedPartition;
use crate::error::{shown, BrokerError};
use crate::group::assign::Tp;
use crate::group::coordinator::catch_up;
use crate::group::membership::{Heartbeat, MembershipError};
use crate::group::{
    commit_batch, delete_batch, offsets_partition, validate_group, MAX_GROUP_LEN, MAX_METADATA_LEN,
    OFFSETS_PARTITIONS, OFFSETS_TOPIC,
};

pub(crate) struct GroupService {
    shared: Arc<Shared>,
}

impl GroupService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The offsets partition of `group`, creating the offsets topic on first use.
    async fn offsets_partition(
        &self,
        group: &str,
    ) -> Result<(u32, Arc<ReplicatedPartition>), BrokerError> {
        validate_group(group).map_err(BrokerError::InvalidRequest)?;
        let p = offsets_partition(group);
        let node = &self.shared.node;
        match catalog::partition(node, OFFSETS_TOPIC, p).await {
            Err(BrokerError::UnknownTopic(_)) => {
                let request = v1::CreateTopicRequest {
                    name: OFFSETS_TOPIC.into(),
                    partitions: OFFSETS_PARTITIONS,
                    replication_factor: 0,
                    configs: HashMap::from([
                        // Kafka's offsets.retention.minutes: a week.
                        ("retention.ms".to_string(), "604800000".to_string()),
                        ("segment.bytes".to_string(), (16u64 << 20).to_string()),
                    ]),
                };
                match catalog::create_topic(node, request, &self.shared.config).await {
                    Ok(_) | Err(BrokerError::TopicExists(_)) => {}
                    Err(e) => return Err(e),
                }
                Ok((p, catalog::partition(node, OFFSETS_TOPIC, p).await?))
            }
            other => Ok((p, other?)),
        }
    }

    /// The coordinator's view of `group`: this broker must lead the group's offsets
    /// partition; the cache is brought up to its high watermark first.
    async fn committed(
        &self,
        group: &str,
        only: &[v1::TopicPartitionRef],
    ) -> Result<Vec<v1::CommittedOffset>, BrokerError> {
        let (p, served) = self.offsets_partition(group).await?;
        served.check_writable().await?;
        let mut caches = self.shared.groups.caches.lock().await;
        let cache = caches.entry(p).or_default();
        catch_up(cache, &served)?;
        Ok(cache.offsets(group, only))
    }

    /// Appends `batch` to `group`'s offsets partition once committed, refusing while
    /// the group has members unless `member` (id) may write for them.
    async fn append_for(&self, group: &str, batch: bytes::Bytes) -> Result<(), BrokerError> {
        let (_, served) = self.offsets_partition(group).await?;
        served.check_writable().await?;
        let batches = ValidatedBatch::parse_all(&batch)
            .map_err(|(_, e)| BrokerError::Internal(format!("offsets batch: {e}")))?;
        served.produce(batches, v1::Acks::All).await?;
        Ok(())
    }

    /// Succeeds if this broker coordinates `group` (leads its offsets partition).
    pub(crate) async fn coordinates(&self, group: &str) -> Result<(), BrokerError> {
        let (_, served) = self.offsets_partition(group).await?;
        served.check_writable().await
    }

    /// Refuses a change made without membership while the group has live members.
    fn check_no_members(&self, group: &str, what: &str) -> Result<(), BrokerError> {
        let mut groups = self
            .shared
            .groups
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(g) = groups.get_mut(group) {
            g.expire(Instant::now());
            if !g.members.is_empty() {
                return Err(BrokerError::Fenced {
                    code: "NON_EMPTY_GROUP",
                    message: format!(
                        "group `{}` has {} active member(s): {what} only while it has none",
                        shown(group),
                        g.members.len()
                    ),
                });
            }
        }
        Ok(())
    }
}

fn membership_error(e: MembershipError) -> BrokerError {
    match e.code() {
        Some(code) => BrokerError::Fenced {
            code,
            message: e.to_string(),
        },
        None => BrokerError::InvalidRequest(e.to_string()),
    }
}

fn tp_set(refs: &[v1::TopicPartitionRef]) -> BTreeSet<Tp> {
    refs.iter()
        .map(|r| (r.topic.clone(), r.partition))
        .collect()
}

/// Most topics one member may subscribe to, and most partitions it may report owning.
const MAX_SUBSCRIBED: usize = 10_000;
const MAX_OWNED: usize = 100_000;

/// Bounds what a heartbeat carries: ids no longer than a group id, valid topic names.
fn check_heartbeat(req: &v1::GroupHeartbeatRequest) -> Result<(), BrokerError> {
    for (what, id) in [
        ("member id", &req.member_id),
        ("instance id", &req.instance_id),
    ] {
        if id.len() > MAX_GROUP_LEN || id.chars().any(char::is_control) {
            return Err(BrokerError::InvalidRequest(format!(
                "{what} `{}` must be at most {MAX_GROUP_LEN} bytes without control characters",
                shown(id)
            )));
        }
    }
    if req.topics.len() > MAX_SUBSCRIBED || req.owned.len() > MAX_OWNED {
        return Err(BrokerError::InvalidRequest(format!(
            "a heartbeat subscribes to at most {MAX_SUBSCRIBED} topics and owns at most \
             {MAX_OWNED} partitions, not {} and {}",
            req.topics.len(),
            req.owned.len()
        )));
    }
    for t in req.topics.iter().chain(req.owned.iter().map(|o| &o.topic)) {
        crate::topics::validate_topic_name(t)?;
    }
    Ok(())
}

fn check_offsets(offsets: &[v1::CommittedOffset]) -> Result<(), BrokerError> {
    if offsets.is_empty() {
        return Err(BrokerError::InvalidRequest("no offsets to commit".into()));
    }
    let mut seen = BTreeMap::new();
    for o in offsets {
        crate::topics::validate_topic_name(&o.topic)?;
        if o.metadata.len() > MAX_METADATA_LEN {
            return Err(BrokerError::InvalidRequest(format!(
                "{}-{}: offset metadata of {} bytes exceeds {MAX_METADATA_LEN}",
                o.topic,
                o.partition,
                o.metadata.len()
            )));
        }
        if seen.insert((&o.topic, o.partition), ()).is_some() {
            return Err(BrokerError::InvalidRequest(format!(
                "{}-{} appears twice in one commit",
                o.topic, o.partition
            )));
        }
    }
    Ok(())
}

impl GroupService {
    /// Refuses `op` on `group` as the ACLs say for the request's principal.
    fn may_group(
        &self,
        who: Option<&Arc<crate::auth::Principal>>,
        op: Operation,
        group: &str,
    ) -> Result<(), BrokerError> {
        self.shared.authorize(who, op, ResourceType::Group, group)
    }
}

impl GroupService {
    /// The broker coordinating the group: the leader of its offsets partition (the
    /// offsets topic is created on first use). Shared by the gRPC and Kafka APIs.
    pub(crate) async fn find_coordinator(
        &self,
        who: Option<&Arc<crate::auth::Principal>>,
        req: v1::FindCoordinatorRequest,
    ) -> Result<v1::FindCoordinatorResponse, BrokerError> {
        self.may_group(who, Operation::Describe, &req.group)?;
        let group = req.group;
        let leader = match self.offsets_partition(&group).await {
            Ok((_, r)) => match r.leader() {
                Some(l) => l as u32,
                None => {
                    return Err(BrokerError::Unavailable(format!(
                        "group `{}`: its coordinator is being elected",
                        shown(&group)
                    )))
                }
            },
            // Not a replica of that partition here: its preferred leader.
            Err(BrokerError::NotLeader {
                leader: Some(l), ..
            }) => l as u32,
            Err(e) => return Err(e),
        };
        let address = if leader == self.shared.config.node_id {
            self.shared.address.clone()
        } else {
            self.shared.node.broker_address(leader).ok_or_else(|| {
                BrokerError::Unavailable(format!("coordinator {leader} has no known address"))
            })?
        };
        Ok(v1::FindCoordinatorResponse {
            node_id: leader,
            address,
        })
    }

    /// Commits a group's offsets: by a member for what it owns, or without a member id
    /// while the group has none. Shared by the gRPC and Kafka APIs.
    pub(crate) async fn commit_offsets(
        &self,
        who: Option<&Arc<crate::auth::Principal>>,
        req: v1::CommitOffsetsRequest,
    ) -> Result<v1::CommitOffsetsResponse, BrokerError> {
        self.may_group(who, Operation::Read, &req.group)?;
        validate_group(&req.group).map_err(BrokerError::InvalidRequest)?;
        check_offsets(&req.offsets)?;
        for o in &req.offsets {
            self.shared.may_topic(who, Operation::Read, &o.topic)?;
        }
        // Kafka answers UNKNOWN_TOPIC_OR_PARTITION for these; an offset past the log end
        // is stored as given (Kafka does the same; the consumer's reset policy applies
        // when it reads from there).
        for o in &req.offsets {
            match catalog::partition_count(&self.shared.node, &o.topic) {
                None => return Err(BrokerError::UnknownTopic(o.topic.clone())),
                Some(count) if o.partition >= count => {
                    return Err(BrokerError::UnknownPartition {
                        topic: o.topic.clone(),
                        partition: o.partition,
                        count,
                    })
                }
                Some(_) => {}
            }
        }
        if req.member_id.is_empty() {
            self.check_no_members(&req.group, "offsets are committed without a member id")?;
        } else {
            let groups = self
                .shared
                .groups
                .groups
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let tps: Vec<Tp> = req
                .offsets
                .iter()
                .map(|o| (o.topic.clone(), o.partition))
                .collect();
            match groups.get(&req.group) {
                Some(g) => g
                    .may_commit(&req.member_id, &tps)
                    .map_err(membership_error)?,
                None => {
                    return Err(BrokerError::Fenced {
                        code: "UNKNOWN_MEMBER_ID",
                        message: format!(
                            "`{}` is not a member of group `{}`",
                            shown(&req.member_id),
                            shown(&req.group)
                        ),
                    })
                }
            }
        }
        let batch = commit_batch(&req.group, &req.offsets, now_ms());
        self.append_for(&req.group, batch).await?;
        Ok(v1::CommitOffsetsResponse {})
    }

    /// The group's committed offsets (all, or those of the partitions asked for). Shared by the gRPC and Kafka APIs.
    pub(crate) async fn fetch_offsets(
        &self,
        who: Option<&Arc<crate::auth::Principal>>,
        req: v1::FetchOffsetsRequest,
    ) -> Result<v1::FetchOffsetsResponse, BrokerError> {
        self.may_group(who, Operation::Describe, &req.group)?;
        let offsets = self.committed(&req.group, &req.partitions).await?;
        Ok(v1::FetchOffsetsResponse { offsets })
    }

    /// A member's heartbeat: it joins, keeps its session, and learns its assignment
    /// (server-side assignment, as KIP-848). Shared by the gRPC and Kafka APIs.
    pub(crate) async fn heartbeat(
        &self,
        who: Option<&Arc<crate::auth::Principal>>,
        req: v1::GroupHeartbeatRequest,
    ) -> Result<v1::GroupHeartbeatResponse, BrokerError> {
        self.may_group(who, Operation::Read, &req.group)?;
        check_heartbeat(&req)?;
        let (_, served) = self.offsets_partition(&req.group).await?;
        served.check_writable().await?;
        let mut partitions = BTreeMap::new();
        for t in &req.topics {
            if let Some(n) = catalog::partition_count(&self.shared.node, t) {
                partitions.insert(t.clone(), n);
            }
        }
        let hb = Heartbeat {
            member_id: req.member_id,
            epoch: req.member_epoch,
            instance_id: Some(req.instance_id).filter(|i| !i.is_empty()),
            topics: req.topics.into_iter().collect(),
            assignor: req.assignor,
            owned: tp_set(&req.owned),
            session: Duration::from_millis(req.session_timeout_ms as u64),
        };
        let answer = {
            let mut groups = self
                .shared
                .groups
                .groups
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let group = groups.entry(req.group.clone()).or_default();
            // Partitions of topics other members subscribe to count too.
            for m in group.members.values() {
                for t in &m.topics {
                    if let Some(&n) = group.partitions.get(t) {
                        partitions.entry(t.clone()).or_insert(n);
                    }
                }
            }
            group
                .heartbeat(&req.group, hb, &partitions, Instant::now())
                .map_err(membership_error)?
        };
        Ok(v1::GroupHeartbeatResponse {
            member_id: answer.member_id,
            member_epoch: answer.epoch,
            assignment: answer
                .assignment
                .into_iter()
                .map(|(topic, partition)| v1::TopicPartitionRef { topic, partition })
                .collect(),
            heartbeat_interval_ms: answer.interval.as_millis() as u32,
        })
    }

    /// The groups this broker coordinates (committed offsets or live members) that the
    /// caller may describe. Shared by the gRPC and Kafka APIs.
    pub(crate) async fn list_groups(
        &self,
        who: Option<&Arc<crate::auth::Principal>>,
        _req: v1::ListGroupsRequest,
    ) -> Result<v1::ListGroupsResponse, BrokerError> {
        let mut names = BTreeSet::new();
        for p in 0..OFFSETS_PARTITIONS {
            let served = match catalog::partition(&self.shared.node, OFFSETS_TOPIC, p).await {
                Ok(s) => s,
                Err(BrokerError::UnknownTopic(_)) => break,
                Err(_) => continue,
            };
            if !served.is_leader() {
                continue;
            }
            let mut caches = self.shared.groups.caches.lock().await;
            let cache = caches.entry(p).or_default();
            catch_up(cache, &served)?;
            names.extend(cache.groups());
        }
        let groups = self
            .shared
            .groups
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        names.extend(
            groups
                .iter()
                .filter(|(_, g)| !g.members.is_empty())
                .map(|(n, _)| n.clone()),
        );
        // The groups the caller may describe.
        names.retain(|g| self.may_group(who, Operation::Describe, g).is_ok());
        Ok(v1::ListGroupsResponse {
            groups: names.into_iter().collect(),
        })
    }

    /// A group's state, committed offsets, members and their assignments. Shared by the gRPC and Kafka APIs.
    pub(crate) async fn describe_group(
        &self,
        who: Option<&Arc<crate::auth::Principal>>,
        req: v1::DescribeGroupRequest,
    ) -> Result<v1::DescribeGroupResponse, BrokerError> {
        self.may_group(who, Operation::Describe, &req.group)?;
        let group = req.group;
        let offsets = self.committed(&group, &[]).await?;
        let mut resp = v1::DescribeGroupResponse {
            group: group.clone(),
            offsets,
            ..Default::default()
        };
        {
            let mut groups = self
                .shared
                .groups
                .groups
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(g) = groups.get_mut(&group) {
                g.expire(Instant::now());
                resp.epoch = g.epoch;
                resp.assignor = format!("{:?}", g.assignor);
                resp.members = g
                    .members
                    .iter()
                    .map(|(id, m)| v1::GroupMember {
                        member_id: id.clone(),
                        instance_id: m.instance_id.clone().unwrap_or_default(),
                        topics: m.topics.iter().cloned().collect(),
                        assignment: m
                            .assigned
                            .iter()
                            .map(|(topic, partition)| v1::TopicPartitionRef {
                                topic: topic.clone(),
                                partition: *partition,
                            })
                            .collect(),
                    })
                    .collect();
            }
        }
        resp.state = match (resp.members.is_empty(), resp.offsets.is_empty()) {
            (false, _) => "stable",
            (true, false) => "empty",
            (true, true) => "dead",
        }
        .into();
        Ok(resp)
    }

    /// Forgets the offsets of a group without members. Shared by the gRPC and Kafka APIs.
    pub(crate) async fn delete_group(
        &self,
        who: Option<&Arc<crate::auth::Principal>>,
        req: v1::DeleteGroupRequest,
    ) -> Result<v1::DeleteGroupResponse, BrokerError> {
        self.may_group(who, Operation::Delete, &req.group)?;
        let group = req.group;
        validate_group(&group).map_err(BrokerError::InvalidRequest)?;
        self.check_no_members(&group, "a group is deleted")?;
        if self.committed(&group, &[]).await?.is_empty() {
            return Err(BrokerError::UnknownGroup(group));
        }
        self.append_for(&group, delete_batch(&group, now_ms()))
            .await?;
        self.shared
            .groups
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&group);
        Ok(v1::DeleteGroupResponse {})
    }
}

#[tonic::async_trait]
impl group_server::Group for GroupService {
    async fn find_coordinator(
        &self,
        request: Request<v1::FindCoordinatorRequest>,
    ) -> Result<Response<v1::FindCoordinatorResponse>, Status> {
        let who = super::principal(&request);
        let answer =
            GroupService::find_coordinator(self, who.as_ref(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn commit_offsets(
        &self,
        request: Request<v1::CommitOffsetsRequest>,
    ) -> Result<Response<v1::CommitOffsetsResponse>, Status> {
        let who = super::principal(&request);
        let answer = GroupService::commit_offsets(self, who.as_ref(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn fetch_offsets(
        &self,
        request: Request<v1::FetchOffsetsRequest>,
    ) -> Result<Response<v1::FetchOffsetsResponse>, Status> {
        let who = super::principal(&request);
        let answer = GroupService::fetch_offsets(self, who.as_ref(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::GroupHeartbeatRequest>,
    ) -> Result<Response<v1::GroupHeartbeatResponse>, Status> {
        let who = super::principal(&request);
        let answer = GroupService::heartbeat(self, who.as_ref(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_groups(
        &self,
        request: Request<v1::ListGroupsRequest>,
    ) -> Result<Response<v1::ListGroupsResponse>, Status> {
        let who = super::principal(&request);
        let answer = GroupService::list_groups(self, who.as_ref(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn describe_group(
        &self,
        request: Request<v1::DescribeGroupRequest>,
    ) -> Result<Response<v1::DescribeGroupResponse>, Status> {
        let who = super::principal(&request);
        let answer = GroupService::describe_group(self, who.as_ref(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn delete_group(
        &self,
        request: Request<v1::DeleteGroupRequest>,
    ) -> Result<Response<v1::DeleteGroupResponse>, Status> {
        let who = super::principal(&request);
        let answer = GroupService::delete_group(self, who.as_ref(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
