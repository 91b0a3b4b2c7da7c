//! Brokers joining a running cluster, and the metadata group's voters.
//!
//! ```text
//!  new broker ──Join(id, address)──► any broker ──► metadata leader:
//!                                                    RegisterBroker, add_learner
//!  new broker: follows the metadata group as a learner; topics, placement and the other
//!              brokers' addresses come with the log (and survive its restarts)
//!  metadata leader: keeps 3 voters from 3 brokers on, 5 from 5 (learners promoted
//!                   once caught up); the other brokers stay learners
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::drain::MEMBERSHIP as VOTERS;
use super::node::ClusterNode;
use super::Command;
use crate::error::BrokerError;
use crate::raft::types::typ;

/// How long a joining broker keeps asking its seeds, and then waits for the metadata.
const JOIN_WAIT: Duration = Duration::from_secs(60);
/// Pause between rounds of asking the seeds.
const JOIN_RETRY: Duration = Duration::from_millis(200);

/// The metadata voters a cluster of `brokers` brokers keeps.
pub fn metadata_voters_for(brokers: usize) -> usize {
    match brokers {
        0..=2 => 1,
        3 | 4 => 3,
        _ => 5,
    }
}

fn status_error(s: tonic::Status) -> BrokerError {
    match s.code() {
        tonic::Code::InvalidArgument => BrokerError::InvalidRequest(s.message().to_string()),
        _ => BrokerError::Unavailable(s.message().to_string()),
    }
}

impl ClusterNode {
    /// Takes a join request: on the metadata leader, registers the broker (refusing an
    /// id in use at another address) and adds it to the metadata group as a learner;
    /// elsewhere, passes it to the leader.
    pub(super) async fn handle_join(&self, id: u32, address: String) -> Result<(), BrokerError> {
        if id == 0 || address.trim().is_empty() {
            return Err(BrokerError::InvalidRequest(
                "a joining broker needs an id above 0 and an address".into(),
            ));
        }
        match self.metadata_leader() {
            Some(leader) if leader == self.id() => {}
            Some(leader) => {
                let to = self.broker_address(leader).ok_or_else(|| {
                    BrokerError::Unavailable(format!("metadata leader {leader} has no address"))
                })?;
                return self
                    .channels()
                    .join(&to, id, &address)
                    .await
                    .map_err(status_error);
            }
            None => {
                return Err(BrokerError::Unavailable(
                    "the cluster metadata has no leader (election in progress)".into(),
                ))
            }
        }
        let state = self.state();
        if state.removed.contains(&id) {
            return Err(BrokerError::InvalidRequest(format!(
                "broker id {id} belonged to a decommissioned broker: a new broker needs a new id"
            )));
        }
        match state.brokers.get(&id) {
            Some(b) if b.address != address => {
                return Err(BrokerError::InvalidRequest(format!(
                    "broker id {id} is in use by the broker at {}",
                    b.address
                )))
            }
            Some(_) => {}
            None => {
                self.propose(&Command::RegisterBroker {
                    id,
                    address: address.clone(),
                })
                .await?
            }
        }
        self.metadata_raft()
            .add_learner(id as u64, typ::Node::new(address.clone()), false)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("adding broker {id}: {e}")))?;
        tracing::info!(broker = id, %address, "broker joined the cluster");
        Ok(())
    }

    /// Asks the brokers at `seeds` (any of them) to let this broker join; retries while
    /// none can answer (for up to a minute), and fails at once on a refusal.
    pub async fn request_join(&self, seeds: &[String]) -> Result<(), BrokerError> {
        let own = self
            .peer_address(self.id())
            .ok_or_else(|| BrokerError::Internal("this broker has no address".into()))?
            .to_string();
        let deadline = tokio::time::Instant::now() + JOIN_WAIT;
        let mut last = String::from("no seed answered");
        'ask: loop {
            for seed in seeds {
                match self.channels().join(seed, self.id(), &own).await {
                    Ok(()) => break 'ask,
                    Err(s) if s.code() == tonic::Code::InvalidArgument => {
                        return Err(BrokerError::InvalidRequest(format!(
                            "joining through {seed}: {}",
                            s.message()
                        )))
                    }
                    Err(s) => last = format!("{seed}: {}", s.message()),
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrokerError::Unavailable(format!(
                    "could not join through {}: {last}",
                    seeds.join(",")
                )));
            }
            tokio::time::sleep(JOIN_RETRY).await;
        }
        Ok(())
    }

    /// Waits until this broker's metadata (replicated to it as a learner, so it must be
    /// serving) shows it registered.
    pub async fn await_joined(&self) -> Result<(), BrokerError> {
        let deadline = tokio::time::Instant::now() + JOIN_WAIT;
        let mut watch = self.watch_state();
        while !self.state().brokers.contains_key(&self.id()) {
            if tokio::time::timeout_at(deadline, watch.changed())
                .await
                .is_err()
            {
                return Err(BrokerError::Unavailable(
                    "joined, but the metadata has not reached this broker".into(),
                ));
            }
        }
        Ok(())
    }

    /// On the metadata leader: promotes caught-up learners until the group has the
    /// voters the cluster's size calls for (it never demotes one). Returns whether a
    /// promotion is still to be made (the caller looks again soon: a learner that was
    /// not caught up yet may be now).
    pub(super) fn balance_metadata_voters(self: &Arc<Self>) -> bool {
        let (voters, learners) = self.metadata_members();
        let state = self.state();
        // Brokers being decommissioned (or gone) are not promoted.
        let learners: BTreeSet<u64> = learners
            .into_iter()
            .filter(|l| state.brokers.get(&(*l as u32)).is_some_and(|b| !b.draining))
            .collect();
        let want = metadata_voters_for(state.active_brokers().len());
        if voters.len() >= want || learners.is_empty() {
            return false;
        }
        if !self.begin_move(VOTERS, 0) {
            return true;
        }
        let promote: Vec<u64> = learners.into_iter().take(want - voters.len()).collect();
        let node = self.clone();
        self.tasks().spawn_until_stopped(async move {
            let raft = node.metadata_raft();
            raft.runtime_config().tick(true);
            let mut next = voters.clone();
            for &id in &promote {
                // Blocks until the learner has caught up with the metadata log.
                let Some(address) = node.broker_address(id as u32) else {
                    continue;
                };
                if let Err(e) = raft.add_learner(id, typ::Node::new(address), true).await {
                    tracing::info!(broker = id, "metadata learner not caught up: {e}");
                    continue;
                }
                next.insert(id);
            }
            if next != voters {
                match raft.change_membership(next.clone(), true).await {
                    Ok(_) => tracing::info!("metadata voters are now {next:?}"),
                    Err(e) => tracing::info!("promoting metadata voters {next:?}: {e}"),
                }
            }
            node.end_move(VOTERS, 0);
        });
        true
    }

    /// The metadata group of a broker alone (no other voter or learner) has nobody to
    /// heartbeat: its ticks are off until another broker joins.
    pub(super) fn quiet_metadata_if_alone(&self) {
        let alone = {
            let m = self.metadata_raft().metrics();
            let m = m.borrow();
            let nodes: Vec<u64> = m
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect();
            nodes == [self.id() as u64]
        };
        self.metadata_raft().runtime_config().tick(!alone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_keeps_three_voters_from_three_brokers_and_five_from_five() {
        let want: Vec<usize> = (1..=7).map(metadata_voters_for).collect();
        assert_eq!(want, [1, 1, 3, 3, 5, 5, 5]);
    }
}
