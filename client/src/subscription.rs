//! Group subscription: heartbeats to the coordinator, incremental assignment, rebalance
//! callbacks and auto-commit, all driven from `Consumer::poll`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rafka_proto::v1;
use tokio::time::Instant;

use crate::{ClientError, Consumer, TopicPartition};

/// Told when the group moves partitions to or from this consumer.
pub trait RebalanceListener: Send + Sync {
    /// These partitions are no longer this consumer's (positions were committed first
    /// when auto-commit is on; commit here otherwise).
    fn on_revoked(&mut self, _partitions: &[TopicPartition]) {}
    /// These partitions are now this consumer's.
    fn on_assigned(&mut self, _partitions: &[TopicPartition]) {}
}

/// A consumer's subscription state.
pub(crate) struct Subscription {
    topics: Vec<String>,
    next_heartbeat: Instant,
    next_commit: Option<Instant>,
    listener: Option<Box<dyn RebalanceListener>>,
}

impl Consumer {
    /// Joins the consumer's group (`group_id`) subscribed to `topics`: from the next
    /// `poll` on, the group's coordinator decides which partitions this consumer reads,
    /// and positions start from the group's committed offsets.
    pub fn subscribe(&mut self, topics: &[&str]) -> Result<(), ClientError> {
        if self.group.is_none() {
            return Err(ClientError::InvalidArgument(
                "subscribe needs a group_id in the consumer config".into(),
            ));
        }
        self.positions.clear();
        self.buffered.clear();
        self.subscription = Some(Subscription {
            topics: topics.iter().map(|t| t.to_string()).collect(),
            next_heartbeat: Instant::now(),
            next_commit: self.config.auto_commit_interval.map(|i| Instant::now() + i),
            listener: None,
        });
        Ok(())
    }

    /// Callbacks for partitions assigned and revoked (after `subscribe`).
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener + 'static) {
        if let Some(s) = &mut self.subscription {
            s.listener = Some(Box::new(listener));
        }
    }

    /// The member id the coordinator gave this consumer, once it joined.
    pub fn member_id(&self) -> Option<&str> {
        self.group
            .as_ref()
            .and_then(|g| g.member.as_ref())
            .map(|m| m.0.as_str())
    }

    /// Leaves the group (committing first with auto-commit): its partitions move to the
    /// other members at once. A static member's leave keeps them for its restart.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        if self.subscription.is_none() {
            return Ok(());
        }
        if self.config.auto_commit_interval.is_some() {
            self.commit().await?;
        }
        let epoch = if self.config.instance_id.is_some() {
            -2
        } else {
            -1
        };
        let request = self.heartbeat_request(epoch);
        self.group_mut().heartbeat(request).await?;
        self.subscription = None;
        self.positions.clear();
        self.buffered.clear();
        Ok(())
    }

    fn group_mut(&mut self) -> &mut crate::group::GroupOffsets {
        self.group
            .as_mut()
            .expect("subscribed consumers have a group")
    }

    fn heartbeat_request(&self, epoch: i32) -> v1::GroupHeartbeatRequest {
        let topics = self
            .subscription
            .as_ref()
            .map(|s| s.topics.clone())
            .unwrap_or_default();
        v1::GroupHeartbeatRequest {
            member_epoch: epoch,
            instance_id: self.config.instance_id.clone().unwrap_or_default(),
            topics,
            assignor: self.config.assignor.clone(),
            owned: self
                .positions
                .keys()
                .map(|tp| v1::TopicPartitionRef {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                })
                .collect(),
            session_timeout_ms: self.config.session_timeout.as_millis() as u32,
            ..Default::default()
        }
    }

    /// Heartbeats and auto-commits when due; returns how long the fetch may wait.
    pub(crate) async fn maintain_group(
        &mut self,
        timeout: Duration,
    ) -> Result<Duration, ClientError> {
        let Some(sub) = &self.subscription else {
            return Ok(timeout);
        };
        let now = Instant::now();
        if sub.next_commit.is_some_and(|at| at <= now) {
            let interval = self.config.auto_commit_interval.unwrap_or_default();
            if let Some(s) = &mut self.subscription {
                s.next_commit = Some(now + interval);
            }
            // A failed auto-commit is logged and left to the next one, as Kafka's: were
            // it the poll's error, a member the coordinator no longer knows (a new
            // coordinator after a failover) would never heartbeat again to rejoin. The
            // heartbeat goes at once, to find out.
            if let Err(e) = self.commit().await {
                tracing::warn!("auto-commit failed: {e}");
                if let Some(s) = &mut self.subscription {
                    s.next_heartbeat = Instant::now();
                }
            }
        }
        let due = self.subscription.as_ref().map(|s| s.next_heartbeat);
        if due.is_some_and(|d| d <= now) {
            self.heartbeat_now().await?;
        }
        let next = self
            .subscription
            .as_ref()
            .map_or(now + timeout, |s| s.next_heartbeat);
        Ok(timeout
            .min(next.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1)))
    }

    async fn heartbeat_now(&mut self) -> Result<(), ClientError> {
        let request = self.heartbeat_request(0);
        let answer = match self.group_mut().heartbeat(request).await {
            Ok(a) => a,
            Err(e) if e.code() == Some(tonic::Code::FailedPrecondition) => {
                // Removed from the group: these partitions are lost, not revoked (no
                // commit: another member may own them already). Rejoin at once.
                let lost: Vec<TopicPartition> = self.positions.keys().cloned().collect();
                self.drop_partitions(&lost);
                if let Some(s) = &mut self.subscription {
                    if let Some(l) = &mut s.listener {
                        l.on_revoked(&lost);
                    }
                    s.next_heartbeat = Instant::now();
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let now_assigned: BTreeSet<TopicPartition> = answer
            .assignment
            .iter()
            .map(|r| TopicPartition::new(r.topic.clone(), r.partition))
            .collect();
        let owned: BTreeSet<TopicPartition> = self.positions.keys().cloned().collect();
        let revoked: Vec<TopicPartition> = owned.difference(&now_assigned).cloned().collect();
        let added: Vec<TopicPartition> = now_assigned.difference(&owned).cloned().collect();
        if !revoked.is_empty() {
            if self.config.auto_commit_interval.is_some() {
                let offsets: BTreeMap<TopicPartition, u64> = revoked
                    .iter()
                    .filter_map(|tp| {
                        self.positions
                            .get(tp)
                            .copied()
                            .flatten()
                            .map(|o| (tp.clone(), o))
                    })
                    .collect();
                self.commit_offsets(&offsets).await?;
            }
            if let Some(l) = self.subscription.as_mut().and_then(|s| s.listener.as_mut()) {
                l.on_revoked(&revoked);
            }
            self.drop_partitions(&revoked);
        }
        for tp in &added {
            self.positions.insert(tp.clone(), None);
        }
        if !added.is_empty() {
            if let Some(l) = self.subscription.as_mut().and_then(|s| s.listener.as_mut()) {
                l.on_assigned(&added);
            }
        }
        let interval = Duration::from_millis(answer.heartbeat_interval_ms.max(10) as u64);
        if let Some(s) = &mut self.subscription {
            // Report released partitions at once, so their new owners get them.
            s.next_heartbeat = if revoked.is_empty() {
                Instant::now() + interval
            } else {
                Instant::now()
            };
        }
        Ok(())
    }

    fn drop_partitions(&mut self, partitions: &[TopicPartition]) {
        for tp in partitions {
            self.positions.remove(tp);
        }
        self.forget_unassigned();
        self.buffered.retain(|r| {
            !partitions
                .iter()
                .any(|tp| *tp.topic == *r.topic && tp.partition == r.partition)
        });
    }
}
