//! Moving a partition to a new replica set while it takes writes, driven by the
//! partition's leader:
//!
//! ```text
//!  metadata: target = new set ──► brokers of both sets run the group (new ones empty)
//!  leader:   add_learner(new)    ──► learners catch up from the log (or a snapshot)
//!            change_membership(new set)  joint config, then the new one; removed
//!                                        voters (the leader too, if it goes) step out
//!            CompleteReassignment ──► metadata: replicas = new set; brokers that left
//!                                     stop the group and delete its data
//! ```
//!
//! Every step can be taken again: a leader that changes mid-move is replaced by one that
//! finds the target still set and finishes the move.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::node::{ClusterNode, ReplicatedPartition};
use super::Command;
use crate::error::BrokerError;
use crate::raft::types::typ;

/// How long a mover waits for its learners to come within one AppendEntries of the
/// leader before it promotes them anyway.
const CATCH_UP_WAIT: Duration = Duration::from_secs(30);

impl ClusterNode {
    /// Starts a mover for every partition this broker leads whose metadata names a
    /// target; returns whether any partition this broker runs is moving (the follower
    /// loop then looks again soon, in case leadership moves here).
    pub(super) fn drive_moves(self: &Arc<Self>) -> bool {
        let state = self.state();
        let mut pending = false;
        for (topic, t) in &state.topics {
            for (i, entry) in t.partitions.iter().enumerate() {
                let Some(target) = &entry.target else {
                    continue;
                };
                if !entry.running_on().any(|b| b == self.id()) {
                    continue;
                }
                pending = true;
                let Some(p) = self.running_replica(topic, i as u32) else {
                    continue;
                };
                if !p.is_leader() || !self.begin_move(topic, i as u32) {
                    continue;
                }
                let node = self.clone();
                let target = target.clone();
                self.tasks().spawn_until_stopped(async move {
                    let (topic, partition) = (p.topic.clone(), p.partition);
                    if let Err(e) = node.move_partition(&p, &target).await {
                        tracing::info!(%topic, partition, "moving to {target:?} (tried again later): {e}");
                    }
                    node.end_move(&topic, partition);
                });
            }
        }
        pending
    }

    /// Adds the target's new brokers as learners, waits until they caught up, makes the
    /// target the voters, and records the move as done.
    async fn move_partition(
        &self,
        p: &ReplicatedPartition,
        target: &[u32],
    ) -> Result<(), BrokerError> {
        // A group of one had its ticks off: it now has followers to heartbeat.
        p.raft.runtime_config().tick(true);
        let voters: BTreeSet<u64> = {
            let m = p.raft.metrics();
            let m = m.borrow();
            m.membership_config.voter_ids().collect()
        };
        for &b in target {
            if voters.contains(&(b as u64)) {
                continue;
            }
            let address = self.broker_address(b).ok_or_else(|| {
                BrokerError::Unavailable(format!("broker {b} has no known address"))
            })?;
            p.raft
                .add_learner(b as u64, typ::Node::new(address), true)
                .await
                .map_err(|e| self.move_error(p, e))?;
        }
        let new: BTreeSet<u64> = target.iter().map(|&b| b as u64).collect();
        let learners: Vec<u64> = new.difference(&voters).copied().collect();
        self.wait_for_learners(p, &learners).await;
        if voters != new {
            p.raft
                .change_membership(new, false)
                .await
                .map_err(|e| self.move_error(p, e))?;
        }
        self.propose(&Command::CompleteReassignment {
            topic: p.topic.clone(),
            partition: p.partition,
            replicas: target.to_vec(),
        })
        .await?;
        tracing::info!(topic = %p.topic, partition = p.partition, "moved to {target:?}");
        Ok(())
    }

    /// Waits (up to `CATCH_UP_WAIT`) until every learner is within one AppendEntries of
    /// the leader's log. `add_learner` waits only for the log as it was when the learner
    /// was added: after a long catch-up the writes since then are still missing, and
    /// a learner promoted then would hold up commits (a quorum of both the old and the new
    /// set is needed while the change runs) until it has them. Past the wait the move goes
    /// on regardless: commits only slow down.
    async fn wait_for_learners(&self, p: &ReplicatedPartition, learners: &[u64]) {
        if learners.is_empty() {
            return;
        }
        let slack = p.raft.config().max_payload_entries;
        let caught_up = |m: &typ::RaftMetrics| {
            let last = m.last_log_index.unwrap_or(0);
            let matched = |id: &u64| {
                let r = m.replication.as_ref()?.get(id)?.as_ref()?;
                Some(r.index)
            };
            learners
                .iter()
                .all(|id| matched(id).is_some_and(|i| i + slack >= last))
        };
        if let Err(e) = p
            .raft
            .wait(Some(CATCH_UP_WAIT))
            .metrics(caught_up, "learners caught up")
            .await
        {
            tracing::info!(topic = %p.topic, partition = p.partition, "promoting learners not quite caught up: {e}");
        }
    }

    fn move_error(
        &self,
        p: &ReplicatedPartition,
        e: typ::RaftError<typ::ClientWriteError>,
    ) -> BrokerError {
        match e {
            typ::RaftError::APIError(typ::ClientWriteError::ForwardToLeader(f)) => {
                p.not_leader(f.leader_id)
            }
            other => BrokerError::Unavailable(format!(
                "{}-{}: membership change: {other}",
                p.topic, p.partition
            )),
        }
    }
}
