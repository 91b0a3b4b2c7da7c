//! Decommissioning a broker, after its partitions moved away:
//!
//! ```text
//!  DecommissionBroker(N) ──► every partition on N moves (see `moves`)
//!  metadata leader, once N holds nothing:
//!     N out of the metadata voters (a caught-up learner takes its seat if needed)
//!     RemoveBroker(N)          ──► N sees it applied: stops serving, deletes its data
//!     N out of the metadata group's learners
//! ```
//!
//! Each step is taken again by whichever broker leads the metadata next, so a leader
//! change (N itself may lead) does not strand a decommission halfway.

use std::collections::BTreeSet;
use std::sync::Arc;

use openraft::ChangeMembers;

use super::join::metadata_voters_for;
use super::node::ClusterNode;
use super::Command;
use crate::error::BrokerError;
use crate::raft::types::typ;

/// `moving` key of metadata membership changes (shared with the voters' balance).
pub(super) const MEMBERSHIP: &str = "";

impl ClusterNode {
    /// On the metadata leader: finishes the decommission of a drained broker; returns
    /// whether one waits (the follower loop then looks again soon).
    pub(super) fn drive_decommissions(self: &Arc<Self>) -> bool {
        let state = self.state();
        let nodes: BTreeSet<u64> = {
            let m = self.metadata_raft().metrics();
            let m = m.borrow();
            m.membership_config.nodes().map(|(id, _)| *id).collect()
        };
        let drained: Vec<u32> = state
            .brokers
            .iter()
            .filter(|(id, b)| b.draining && state.replicas_on(**id).is_empty())
            .map(|(id, _)| *id)
            .chain(
                state
                    .removed
                    .iter()
                    .copied()
                    .filter(|id| nodes.contains(&(*id as u64))),
            )
            .collect();
        let Some(&id) = drained.first() else {
            return false;
        };
        if !self.begin_move(MEMBERSHIP, 0) {
            return true;
        }
        let node = self.clone();
        self.tasks().spawn_until_stopped(async move {
            if let Err(e) = node.remove_broker(id).await {
                tracing::info!(broker = id, "decommissioning (tried again later): {e}");
            }
            node.end_move(MEMBERSHIP, 0);
        });
        true
    }

    async fn remove_broker(&self, id: u32) -> Result<(), BrokerError> {
        let raft = self.metadata_raft();
        let failed =
            |what: &str, e: String| BrokerError::Unavailable(format!("broker {id}: {what}: {e}"));
        let (voters, learners) = self.metadata_members();
        if voters.contains(&(id as u64)) {
            let state = self.state();
            let want = metadata_voters_for(state.active_brokers().len()).max(1);
            let mut next: BTreeSet<u64> = voters.clone();
            next.remove(&(id as u64));
            for l in learners {
                if next.len() >= want {
                    break;
                }
                let active = state.brokers.get(&(l as u32)).is_some_and(|b| !b.draining);
                let Some(address) = self.broker_address(l as u32).filter(|_| active) else {
                    continue;
                };
                // Blocks until the learner has caught up with the metadata log.
                raft.add_learner(l, typ::Node::new(address), true)
                    .await
                    .map_err(|e| failed("catching up a learner", e.to_string()))?;
                next.insert(l);
            }
            if next.is_empty() {
                return Err(failed(
                    "leaving the metadata voters",
                    "no broker left".into(),
                ));
            }
            raft.change_membership(next.clone(), true)
                .await
                .map_err(|e| failed("leaving the metadata voters", e.to_string()))?;
            tracing::info!(
                broker = id,
                "left the metadata voters; they are now {next:?}"
            );
        }
        if self.state().brokers.contains_key(&id) {
            self.propose(&Command::RemoveBroker { id }).await?;
        }
        let (_, learners) = self.metadata_members();
        if learners.contains(&(id as u64)) {
            raft.change_membership(ChangeMembers::RemoveNodes([id as u64].into()), false)
                .await
                .map_err(|e| failed("leaving the metadata group", e.to_string()))?;
        }
        tracing::info!(broker = id, "broker decommissioned");
        Ok(())
    }

    /// The metadata group's voters and its learners (nodes that do not vote).
    pub(super) fn metadata_members(&self) -> (BTreeSet<u64>, BTreeSet<u64>) {
        let m = self.metadata_raft().metrics();
        let m = m.borrow();
        let voters: BTreeSet<u64> = m.membership_config.voter_ids().collect();
        let learners = m
            .membership_config
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| !voters.contains(id))
            .collect();
        (voters, learners)
    }
}
