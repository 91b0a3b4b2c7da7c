//! A consumer group's committed offsets, through the group's coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::security::Conn;
use rafka_proto::v1::{self, group_client::GroupClient};

use crate::cluster::Cluster;
use crate::{ClientError, TopicPartition};

/// How long a coordinator request retries retriable errors (the coordinator's broker
/// gone, an election for its offsets partition) before it fails; Kafka's
/// `default.api.timeout.ms` is 60 s.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// Pause before retrying one.
const BACKOFF: Duration = Duration::from_millis(100);
/// How long one coordinator request may go unanswered before the coordinator is looked
/// up again (a broker stopped or cut off answers nothing, and a member's poll waits).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Commits and fetches one group's offsets, finding (and re-finding) its coordinator.
#[derive(Clone)]
pub(crate) struct GroupOffsets {
    cluster: Arc<Cluster>,
    group: String,
    coordinator: Option<String>,
    /// This consumer's membership (id, epoch) once it subscribed: commits carry it.
    pub member: Option<(String, i32)>,
}

impl GroupOffsets {
    pub fn new(cluster: Arc<Cluster>, group: String) -> Self {
        Self {
            cluster,
            group,
            coordinator: None,
            member: None,
        }
    }

    async fn coordinator(&mut self) -> Result<GroupClient<Conn>, ClientError> {
        if self.coordinator.is_none() {
            let found = self
                .cluster
                .group()
                .find_coordinator(v1::FindCoordinatorRequest {
                    group: self.group.clone(),
                })
                .await?
                .into_inner();
            self.coordinator = Some(found.address);
        }
        let addr = self.coordinator.as_deref().expect("set above");
        self.cluster.group_at(addr)
    }

    /// Runs `call` on the coordinator, re-finding it after retriable errors.
    pub(crate) async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(GroupClient<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            let attempt = async {
                let client = self.coordinator().await?;
                call(client).await.map_err(ClientError::from)
            };
            let answer = match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
                Ok(answer) => answer,
                Err(_) => Err(ClientError::Broker {
                    code: tonic::Code::DeadlineExceeded,
                    message: format!(
                        "group `{}`: no answer from its coordinator within {REQUEST_TIMEOUT:?}",
                        self.group
                    ),
                }),
            };
            match answer {
                Ok(r) => return Ok(r.into_inner()),
                Err(e) if e.is_retriable() && tokio::time::Instant::now() < deadline => {
                    self.coordinator = None;
                    tokio::time::sleep(BACKOFF).await;
                    // The default broker may be the one that went away.
                    let _ = self.cluster.metadata(Vec::new()).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Commits `offsets` (the next offset to read per partition) together.
    pub async fn commit(
        &mut self,
        offsets: &BTreeMap<TopicPartition, u64>,
    ) -> Result<(), ClientError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let request = v1::CommitOffsetsRequest {
            group: self.group.clone(),
            offsets: offsets
                .iter()
                .map(|(tp, o)| v1::CommittedOffset {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    offset: *o,
                    metadata: String::new(),
                })
                .collect(),
            member_id: self
                .member
                .as_ref()
                .map_or_else(String::new, |m| m.0.clone()),
            member_epoch: self.member.as_ref().map_or(0, |m| m.1),
        };
        self.call(|mut c| {
            let r = request.clone();
            async move { c.commit_offsets(r).await }
        })
        .await?;
        Ok(())
    }

    /// The committed offsets of `partitions` (those without one are absent).
    pub async fn fetch(
        &mut self,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, u64>, ClientError> {
        let request = v1::FetchOffsetsRequest {
            group: self.group.clone(),
            partitions: partitions
                .iter()
                .map(|tp| v1::TopicPartitionRef {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                })
                .collect(),
        };
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.fetch_offsets(r).await }
            })
            .await?;
        Ok(resp
            .offsets
            .into_iter()
            .map(|o| (TopicPartition::new(o.topic, o.partition), o.offset))
            .collect())
    }

    /// Sends a heartbeat for this member (joining when it has no id yet) and records the
    /// id and epoch the coordinator answers with.
    pub async fn heartbeat(
        &mut self,
        request: v1::GroupHeartbeatRequest,
    ) -> Result<v1::GroupHeartbeatResponse, ClientError> {
        let mut request = request;
        request.group = self.group.clone();
        if let Some((id, epoch)) = &self.member {
            request.member_id = id.clone();
            if request.member_epoch == 0 {
                request.member_epoch = *epoch;
            }
        }
        let resp = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.heartbeat(r).await }
            })
            .await;
        match &resp {
            Ok(r) if request.member_epoch >= 0 => {
                self.member = Some((r.member_id.clone(), r.member_epoch));
            }
            Ok(_) => self.member = None,
            // Removed from the group: the next heartbeat joins anew.
            Err(e) if e.code() == Some(tonic::Code::FailedPrecondition) => self.member = None,
            Err(_) => {}
        }
        resp
    }
}
