//! Topics, configs and cluster metadata.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::time::Duration;

use crate::security::Conn;
use rafka_proto::v1::{self, admin_client::AdminClient};

use crate::cluster::Cluster;
use crate::group::GroupOffsets;
use crate::ClientError;

/// A topic as the cluster describes it.
pub type TopicDescription = v1::TopicInfo;

/// Admin client settings.
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// TLS to the brokers (none: plaintext).
    pub tls: Option<crate::TlsConfig>,
    /// Credentials for brokers that check bearer tokens.
    pub credentials: Option<crate::Credentials>,
}

/// Administrative operations.
#[derive(Clone)]
pub struct Admin {
    cluster: Arc<Cluster>,
}

/// Attempts of an admin request that meets a retriable error (election, broker down).
const RETRIES: u32 = 30;

impl Admin {
    /// Connects to the cluster through a comma-separated bootstrap list.
    pub async fn connect(bootstrap: &str) -> Result<Self, ClientError> {
        Self::connect_with(bootstrap, AdminConfig::default()).await
    }

    /// Connects with `config` (TLS).
    pub async fn connect_with(bootstrap: &str, config: AdminConfig) -> Result<Self, ClientError> {
        Ok(Self {
            cluster: Cluster::connect(bootstrap, config.tls, config.credentials.as_ref()).await?,
        })
    }

    /// Runs an admin call, retrying retriable failures on whichever broker answers
    /// metadata (brokers forward admin requests to the metadata leader).
    async fn call<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut(AdminClient<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            match f(self.cluster.admin()).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    let e = ClientError::from(s);
                    if !e.is_retriable() || attempt >= RETRIES {
                        return Err(e);
                    }
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    // Moves the default broker to one that answers.
                    let _ = self.cluster.metadata(Vec::new()).await;
                }
            }
        }
    }

    /// Creates a topic with per-topic configs (Kafka names: `retention.ms`, `flush`, ...).
    /// A replication factor of 0 takes the cluster's default (up to 3 replicas).
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicDescription, ClientError> {
        let request = v1::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            configs: configs.into_iter().collect(),
        };
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.create_topic(r).await }
            })
            .await?;
        resp.topic
            .ok_or_else(|| ClientError::InvalidArgument("broker returned no topic".into()))
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let request = v1::DeleteTopicRequest {
            name: name.to_string(),
        };
        self.call(|mut c| {
            let r = request.clone();
            async move { c.delete_topic(r).await }
        })
        .await?;
        Ok(())
    }

    /// Adds access control entries (kept in the cluster; in force on every broker as
    /// soon as it applied them).
    pub async fn create_acls(&self, acls: Vec<v1::AclEntry>) -> Result<(), ClientError> {
        let request = v1::CreateAclsRequest { acls };
        self.call(|mut c| {
            let r = request.clone();
            async move { c.create_acls(r).await }
        })
        .await?;
        Ok(())
    }

    /// Removes access control entries (exact matches); how many existed.
    pub async fn delete_acls(&self, acls: Vec<v1::AclEntry>) -> Result<u32, ClientError> {
        let request = v1::DeleteAclsRequest { acls };
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.delete_acls(r).await }
            })
            .await?;
        Ok(resp.deleted)
    }

    /// The access control entries, of one principal and/or resource type if given
    /// (empty: all).
    pub async fn list_acls(
        &self,
        principal: &str,
        resource_type: &str,
    ) -> Result<Vec<v1::AclEntry>, ClientError> {
        let request = v1::ListAclsRequest {
            principal: principal.to_string(),
            resource_type: resource_type.to_string(),
        };
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.list_acls(r).await }
            })
            .await?;
        Ok(resp.acls)
    }

    /// Creates a client of the built-in authorization server; its secret (shown once).
    pub async fn create_client(&self, id: &str, roles: Vec<String>) -> Result<String, ClientError> {
        let request = v1::CreateClientRequest {
            id: id.to_string(),
            roles,
        };
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.create_client(r).await }
            })
            .await?;
        Ok(resp.secret)
    }

    /// Deletes a client of the built-in authorization server.
    pub async fn delete_client(&self, id: &str) -> Result<(), ClientError> {
        let request = v1::DeleteClientRequest { id: id.to_string() };
        self.call(|mut c| {
            let r = request.clone();
            async move { c.delete_client(r).await }
        })
        .await?;
        Ok(())
    }

    /// The built-in authorization server's clients.
    pub async fn list_clients(&self) -> Result<Vec<v1::ClientInfo>, ClientError> {
        let resp = self
            .call(|mut c| async move { c.list_clients(v1::ListClientsRequest {}).await })
            .await?;
        Ok(resp.clients)
    }

    /// Makes a new signing key for the built-in authorization server; its id.
    pub async fn rotate_signing_key(&self) -> Result<String, ClientError> {
        let resp = self
            .call(|mut c| async move { c.rotate_signing_key(v1::RotateSigningKeyRequest {}).await })
            .await?;
        Ok(resp.kid)
    }

    /// Changes topic configs.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        configs: BTreeMap<String, String>,
    ) -> Result<TopicDescription, ClientError> {
        let request = v1::AlterTopicConfigRequest {
            name: name.to_string(),
            configs: configs.into_iter().collect(),
        };
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.alter_topic_config(r).await }
            })
            .await?;
        resp.topic
            .ok_or_else(|| ClientError::InvalidArgument("broker returned no topic".into()))
    }

    /// Raises `name`'s partition count to `partitions` (Kafka's CreatePartitions): keys
    /// are routed over the new count from then on.
    pub async fn create_partitions(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<TopicDescription, ClientError> {
        let request = v1::CreatePartitionsRequest {
            name: name.to_string(),
            partitions,
        };
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.create_partitions(r).await }
            })
            .await?;
        resp.topic
            .ok_or_else(|| ClientError::InvalidArgument("broker returned no topic".into()))
    }

    /// Starts moving `topic`/`partition` to the brokers `replicas` (the first is the
    /// preferred leader); the answer shows the partition's `moving_to` until the move
    /// completes.
    pub async fn reassign_partition(
        &self,
        topic: &str,
        partition: u32,
        replicas: &[u32],
    ) -> Result<TopicDescription, ClientError> {
        let request = v1::ReassignPartitionRequest {
            topic: topic.to_string(),
            partition,
            replicas: replicas.to_vec(),
        };
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.reassign_partition(r).await }
            })
            .await?;
        resp.topic
            .ok_or_else(|| ClientError::InvalidArgument("broker returned no topic".into()))
    }

    /// Starts changing `name`'s replication factor (each partition with another count
    /// moves); partitions show `moving_to` until done.
    pub async fn alter_replication_factor(
        &self,
        name: &str,
        replication_factor: u32,
    ) -> Result<TopicDescription, ClientError> {
        let request = v1::AlterReplicationFactorRequest {
            name: name.to_string(),
            replication_factor,
        };
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.alter_replication_factor(r).await }
            })
            .await?;
        resp.topic
            .ok_or_else(|| ClientError::InvalidArgument("broker returned no topic".into()))
    }

    /// Waits until no partition of `topic` is moving; returns the topic then.
    pub async fn wait_for_moves(&self, topic: &str) -> Result<TopicDescription, ClientError> {
        loop {
            let t = self.describe_topics(&[topic]).await?;
            let t = t.into_iter().next().ok_or_else(|| ClientError::Broker {
                code: tonic::Code::NotFound,
                message: format!("unknown topic `{topic}`"),
            })?;
            if t.partitions.iter().all(|p| p.moving_to.is_empty()) {
                return Ok(t);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Starts draining broker `id` (its partitions move to the other brokers; then it
    /// leaves the cluster, stops and deletes its data); returns the moves recorded.
    pub async fn decommission_broker(
        &self,
        id: u32,
    ) -> Result<Vec<v1::PartitionMove>, ClientError> {
        let resp = self
            .call(|mut c| async move {
                c.decommission_broker(v1::DecommissionBrokerRequest { id })
                    .await
            })
            .await?;
        Ok(resp.moves)
    }

    /// Waits until broker `id` is no longer listed in the cluster's metadata.
    pub async fn wait_for_decommission(&self, id: u32) -> Result<(), ClientError> {
        while self
            .metadata(&[])
            .await?
            .brokers
            .iter()
            .any(|b| b.node_id == id)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Plans moves that even out replicas and preferred leaders per broker, and starts
    /// them unless `dry_run`; returns the plan.
    pub async fn rebalance(&self, dry_run: bool) -> Result<Vec<v1::PartitionMove>, ClientError> {
        let resp = self
            .call(|mut c| async move { c.rebalance(v1::RebalanceRequest { dry_run }).await })
            .await?;
        Ok(resp.moves)
    }

    /// Waits until no partition of any topic is moving.
    pub async fn wait_for_all_moves(&self) -> Result<(), ClientError> {
        loop {
            let meta = self.metadata(&[]).await?;
            let moving = meta
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .any(|p| !p.moving_to.is_empty());
            if !moving {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Preferred-leader election: asks every broker that is some partition's preferred
    /// replica to take those leaderships. Returns the partitions elected ("topic-p") and
    /// why others were not.
    pub async fn elect_preferred_leaders(&self) -> Result<(Vec<String>, Vec<String>), ClientError> {
        let meta = self.metadata(&[]).await?;
        let preferred: std::collections::BTreeSet<u32> = meta
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter_map(|p| p.replicas.first().copied())
            .collect();
        let (mut elected, mut failed) = (Vec::new(), Vec::new());
        for id in preferred {
            let request = v1::ElectPreferredLeadersRequest::default();
            match self
                .cluster
                .admin_at(id)
                .elect_preferred_leaders(request)
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    elected.extend(
                        r.elected
                            .iter()
                            .map(|e| format!("{}-{}", e.topic, e.partition)),
                    );
                    failed.extend(r.failed);
                }
                Err(s) => failed.push(format!("broker {id}: {}", s.message())),
            }
        }
        Ok((elected, failed))
    }

    /// Every topic (or those named), with partitions and configs.
    pub async fn describe_topics(
        &self,
        names: &[&str],
    ) -> Result<Vec<TopicDescription>, ClientError> {
        Ok(self.metadata(names).await?.topics)
    }

    /// Brokers, controller and topics, from the first broker that answers.
    pub async fn metadata(&self, topics: &[&str]) -> Result<v1::MetadataResponse, ClientError> {
        self.cluster
            .metadata(topics.iter().map(|t| t.to_string()).collect())
            .await
    }

    /// Metadata as broker `id` sees it (its replicas' leaders, offsets and, where it
    /// leads, its followers' lag).
    pub async fn metadata_from(
        &self,
        id: u32,
        topics: &[&str],
    ) -> Result<v1::MetadataResponse, ClientError> {
        if self.cluster.address_of(id).is_none() {
            self.cluster.metadata(Vec::new()).await?;
        }
        if self.cluster.address_of(id).is_none() {
            return Err(ClientError::InvalidArgument(format!(
                "no broker with id {id}"
            )));
        }
        Ok(self
            .cluster
            .broker_at(id)
            .metadata(v1::MetadataRequest {
                topics: topics.iter().map(|t| t.to_string()).collect(),
            })
            .await?
            .into_inner())
    }

    /// Every consumer group with members or committed offsets (asks every broker).
    pub async fn list_groups(&self) -> Result<Vec<String>, ClientError> {
        let meta = self.metadata(&[]).await?;
        let mut groups = std::collections::BTreeSet::new();
        for b in &meta.brokers {
            let mut client = self.cluster.group_at(&b.address)?;
            match client.list_groups(v1::ListGroupsRequest {}).await {
                Ok(r) => groups.extend(r.into_inner().groups),
                Err(s) => {
                    let e = ClientError::from(s);
                    if !e.is_retriable() {
                        return Err(e);
                    }
                    tracing::debug!(broker = b.node_id, "list groups: {e}");
                }
            }
        }
        Ok(groups.into_iter().collect())
    }

    /// A group's members, assignment and committed offsets, from its coordinator.
    pub async fn describe_group(
        &self,
        group: &str,
    ) -> Result<v1::DescribeGroupResponse, ClientError> {
        let request = v1::DescribeGroupRequest {
            group: group.to_string(),
        };
        GroupOffsets::new(self.cluster.clone(), group.to_string())
            .call(|mut c| {
                let r = request.clone();
                async move { c.describe_group(r).await }
            })
            .await
    }

    /// Forgets a group's committed offsets (refused while it has members).
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let request = v1::DeleteGroupRequest {
            group: group.to_string(),
        };
        GroupOffsets::new(self.cluster.clone(), group.to_string())
            .call(|mut c| {
                let r = request.clone();
                async move { c.delete_group(r).await }
            })
            .await?;
        Ok(())
    }

    /// Sets a group's committed offsets (refused while the group has members).
    pub async fn set_group_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<crate::TopicPartition, u64>,
    ) -> Result<(), ClientError> {
        GroupOffsets::new(self.cluster.clone(), group.to_string())
            .commit(offsets)
            .await
    }

    /// Per partition with a committed offset: the committed offset, the partition's end
    /// (its high watermark) and the lag between them, with the member that owns it.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<PartitionLag>, ClientError> {
        let described = self.describe_group(group).await?;
        let mut owner = BTreeMap::new();
        for m in &described.members {
            for a in &m.assignment {
                owner.insert((a.topic.clone(), a.partition), m.member_id.clone());
            }
        }
        let mut out = Vec::with_capacity(described.offsets.len());
        for o in &described.offsets {
            let end = self
                .list_offset(
                    &o.topic,
                    o.partition,
                    v1::list_offsets_request::Spec::Latest(true),
                )
                .await?
                .high_watermark;
            out.push(PartitionLag {
                topic: o.topic.clone(),
                partition: o.partition,
                committed: o.offset,
                end,
                lag: end.saturating_sub(o.offset),
                member: owner.remove(&(o.topic.clone(), o.partition)),
            });
        }
        Ok(out)
    }

    /// Moves a stopped group's committed offsets for every partition of `topic` to
    /// `to`; refused (`FAILED_PRECONDITION`) while the group has members. Returns the
    /// offsets set.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<BTreeMap<crate::TopicPartition, u64>, ClientError> {
        let described = self.describe_group(group).await?;
        if !described.members.is_empty() {
            return Err(ClientError::Broker {
                code: tonic::Code::FailedPrecondition,
                message: format!(
                    "group {group} has {} active member(s); stop them first",
                    described.members.len()
                ),
            });
        }
        // Fresh metadata: partitions may have been added since this client cached it.
        let count = self.cluster.refresh(topic).await?;
        let mut offsets = BTreeMap::new();
        for p in 0..count {
            use v1::list_offsets_request::Spec;
            let spec = match to {
                ResetTo::Earliest => Spec::Earliest(true),
                ResetTo::Latest => Spec::Latest(true),
                ResetTo::Timestamp(ts) => Spec::Timestamp(ts),
                ResetTo::Offset(o) => {
                    offsets.insert(crate::TopicPartition::new(topic, p), o);
                    continue;
                }
            };
            let r = self.list_offset(topic, p, spec).await?;
            offsets.insert(
                crate::TopicPartition::new(topic, p),
                r.offset.unwrap_or(r.high_watermark),
            );
        }
        self.set_group_offsets(group, &offsets).await?;
        Ok(offsets)
    }

    /// A partition's earliest, latest or by-timestamp offset (from its leader).
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: v1::list_offsets_request::Spec,
    ) -> Result<v1::ListOffsetsResponse, ClientError> {
        let leader = self.cluster.partition(topic, partition).await.leader;
        Ok(self
            .cluster
            .broker_at(leader)
            .list_offsets(v1::ListOffsetsRequest {
                topic: topic.to_string(),
                partition,
                spec: Some(spec),
            })
            .await?
            .into_inner())
    }
}

/// Where [`Admin::reset_group_offsets`] moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Each partition's oldest record.
    Earliest,
    /// Each partition's end.
    Latest,
    /// This offset in every partition.
    Offset(u64),
    /// The first record at or after this time (ms since the epoch); the end if none.
    Timestamp(i64),
}

/// A group's progress on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The group's committed offset.
    pub committed: u64,
    /// The partition's high watermark.
    pub end: u64,
    /// `end - committed` (0 if the commit is ahead).
    pub lag: u64,
    /// The member consuming it now, if any.
    pub member: Option<String>,
}
