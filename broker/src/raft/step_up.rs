//! A voter that refuses a candidate for being behind stands itself.
//!
//! When a group's leader is lost, its followers campaign one at a time in the order of
//! the partition's replica list (`cluster::quiesce`), the next one only a stagger (3 s)
//! after the first. The first in line may be behind the other follower (the leader had
//! replicated more to it): then the other refuses its vote, and the partition would wait
//! out the stagger with the better candidate idle. A refusal for that reason, while no
//! live leader leads the group here, makes the refusing replica campaign at once.

use std::time::{Duration, Instant};

use openraft::raft::VoteResponse;
use openraft::{LogId, Raft};

use super::liveness::Liveness;
use super::types::{typ, TypeConfig};

/// Looks at the answer `r` this replica gave a candidate that asked with its last log
/// id and term (`asked`); campaigns (in the background) if it refused a candidate behind
/// its own log while the group has no live leader here.
pub fn after_vote(
    raft: &Raft<TypeConfig>,
    liveness: &Liveness,
    group: u64,
    asked: (Option<LogId<u64>>, u64),
    r: &VoteResponse<u64>,
) {
    let (theirs, their_term) = asked;
    if r.vote_granted || r.last_log_id <= theirs {
        return;
    }
    let (follower, leader) = {
        let m = raft.metrics();
        let m = m.borrow();
        let voter = m.membership_config.voter_ids().any(|v| v == m.id);
        (
            voter && m.state == openraft::ServerState::Follower,
            m.current_leader,
        )
    };
    let leader_down = leader.is_none_or(|l| liveness.is_down(l, Instant::now()));
    if follower && leader_down {
        tracing::debug!(group, ?theirs, mine = ?r.last_log_id, "refused a candidate behind this log: campaigning");
        tokio::spawn(campaign_above(raft.clone(), their_term));
    }
}

/// Campaigns with a term above `their_term`, the refused candidate's: it has voted for
/// itself in its term and refuses any other candidate of that term (openraft does not
/// raise a voter's term when it refuses a vote, so one campaign may not be enough).
async fn campaign_above(raft: Raft<TypeConfig>, their_term: u64) {
    for _ in 0..3 {
        if raft.trigger().elect().await.is_err() {
            return;
        }
        let above = |m: &typ::RaftMetrics| m.vote.leader_id().term > their_term;
        let waited = raft.wait(Some(Duration::from_millis(100)));
        if waited
            .metrics(above, "a term above the candidate's")
            .await
            .is_ok()
        {
            return;
        }
    }
}
