//! Quiescent partition groups: an idle group sends no heartbeats and runs no timers, and
//! one loop per broker decides when a group must wake.
//!
//! ```text
//!  every ROUND:  node heartbeat to each peer ──► "I lead groups [..] with you in them"
//!                leaders: caught up (every member at the last entry, committed)?
//!                           yes → ticks and heartbeats off; no → on until they are
//!                followers: does a live peer say it leads the group?
//!                           yes → nothing; no (down, refusing, silent) → campaign,
//!                           staggered by rank so that one replica stands at a time
//! ```
//!
//! openraft's own elections are off for partition groups (`enable_elect: false`): a
//! follower of a quiet group hears nothing from its leader for hours, and must not take
//! that for a dead leader. The metadata group keeps openraft's timers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rafka_proto::peer as pb;

use super::node::ClusterNode;
use super::replica::ReplicatedPartition;
use crate::raft::liveness::LiveView;
use crate::raft::types::typ;

/// How often heartbeats go out and every group is looked at.
pub const ROUND: Duration = Duration::from_millis(250);
/// How long a node heartbeat may take before it counts as unanswered.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a follower waits, once no live peer leads its group, before the first
/// replica in line campaigns (none when the leader's broker is known to be down): peers
/// starting up need a round or two to say what they lead.
const GRACE: Duration = Duration::from_millis(1000);
/// The wait added per place in line: the second replica campaigns only if the first
/// (alive, as far as this broker knows) did not win by then. Long enough for the first
/// to retry once or twice: two replicas campaigning at once split the vote.
const STAGGER: Duration = Duration::from_secs(3);
/// The first wait before a replica campaigns again (after its own or a campaign
/// openraft started, as at a group's creation); it doubles with each failed campaign up
/// to [`RETRY_MAX`], stretched by up to half at random so that many groups electing at
/// once (a restart, a creation) spread out instead of overrunning the voters together.
const RETRY: Duration = Duration::from_millis(800);
const RETRY_MAX: Duration = Duration::from_secs(6);
/// After a peer comes back (restarted, or heard again after being down), the groups led
/// here with it as a member send heartbeats on these rounds after, so it learns its
/// leaders and commit points even though the groups are quiet.
const ANNOUNCE_ROUNDS: [u32; 3] = [0, 4, 8];

/// What the loop remembers between rounds.
#[derive(Default)]
pub(super) struct Steering {
    /// Groups with no live leader, since when.
    leaderless: HashMap<u64, Instant>,
    /// The last campaign of each group here, and how many in a row.
    campaigned: HashMap<u64, (Instant, u32)>,
    /// Rounds since each peer last came back, and how many times it had.
    returns: HashMap<u64, (u64, u32)>,
    /// Peers with a heartbeat in flight.
    in_flight: Arc<std::sync::Mutex<std::collections::HashSet<u64>>>,
    /// Rounds so far.
    round: u64,
    /// The fingerprint of the last round's liveness view.
    last_view: Option<u64>,
}

/// One running replica as the loop sees it: kept in a vector rebuilt only when the
/// running replicas change, so that a pass over thousands of groups that need nothing
/// touches little more than this vector.
struct Slot {
    partition: Arc<ReplicatedPartition>,
    /// The group's metrics, to see whether they changed since the last look.
    metrics: tokio::sync::watch::Receiver<typ::RaftMetrics>,
    /// What the last look found.
    settled: Settled,
}

/// What the last look at a group found, when it found nothing to do: while the group's
/// metrics and the liveness view stay the same, the next look would find the same.
#[derive(Default, PartialEq)]
enum Settled {
    /// Something to do or to watch (a campaign pending, replication under way).
    #[default]
    No,
    /// Leading alone (no other member) and caught up: looked at only every
    /// [`LOOK_EVERY`] rounds, whatever the view (no peer matters to it).
    Alone,
    /// Leading and caught up, with these other members (the heartbeats list it for them).
    Leading(Vec<u64>),
    /// Following a leader that a live peer says it is.
    Following,
}

/// Every how many rounds every group is looked at, settled or not: a group can leave a
/// settled state only by a change of its own (a write wakes replication by itself, a
/// move's driver wakes the group's timers) or of the view, so this is a safety net.
const LOOK_EVERY: u64 = 20;

impl ClusterNode {
    /// Runs the liveness heartbeats and steers every partition group, until the broker
    /// stops.
    pub(super) async fn steer(node: Arc<Self>) {
        let mut steering = Steering::default();
        let mut every = tokio::time::interval(ROUND);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut slots: Vec<Slot> = Vec::new();
        let mut version = None;
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = node.tasks().stopped() => return,
            }
            steering.round += 1;
            // The version is read before the copy: a change during it is seen next round.
            let now_version = node.running_version();
            if version != Some(now_version) {
                slots = node
                    .running_replicas()
                    .into_iter()
                    .map(|partition| Slot {
                        metrics: partition.raft.metrics(),
                        partition,
                        settled: Settled::No,
                    })
                    .collect();
                version = Some(now_version);
                steering.forget_missing(&slots);
            }
            // Heartbeats carry what the last pass found this broker leading.
            node.send_heartbeats(&steering);
            let now = Instant::now();
            let view = node.liveness().view(now);
            let announce = steering.peers_to_announce_to(&view);
            let mut leading: HashMap<u64, Vec<u64>> = HashMap::new();
            let look_at_all = steering.round % LOOK_EVERY == 0;
            let same_view = steering.last_view == Some(view.fingerprint) && announce.is_empty();
            steering.last_view = Some(view.fingerprint);
            for slot in &mut slots {
                if !look_at_all && slot.settled != Settled::No {
                    let unchanged = same_view && !slot.metrics.has_changed().unwrap_or(true);
                    match &slot.settled {
                        Settled::Alone => continue,
                        Settled::Following if unchanged => continue,
                        Settled::Leading(peers) if unchanged => {
                            for &peer in peers {
                                leading.entry(peer).or_default().push(slot.partition.group);
                            }
                            continue;
                        }
                        _ => {}
                    }
                }
                slot.metrics.mark_unchanged();
                slot.settled = steering
                    .steer(&slot.partition, &view, &announce, now, &mut leading)
                    .await;
            }
            node.liveness().set_leading(leading);
        }
    }

    /// Sends a node heartbeat to every other broker that has none in flight.
    fn send_heartbeats(&self, steering: &Steering) {
        let me = self.id();
        let brokers = self.heartbeat_targets();
        for (id, address) in brokers {
            if id == me {
                continue;
            }
            let peer = id as u64;
            {
                let mut in_flight = steering.in_flight.lock().unwrap_or_else(|e| e.into_inner());
                if !in_flight.insert(peer) {
                    continue;
                }
            }
            let liveness = self.liveness().clone();
            let channels = self.channels().clone();
            let in_flight = steering.in_flight.clone();
            let message = pb::NodeStatus {
                from: me as u64,
                incarnation: liveness.incarnation(),
                leading: liveness.leading_for(peer),
                opening: liveness.is_opening(),
                alive: liveness.alive_peers(Instant::now()),
            };
            self.tasks().spawn_until_stopped(async move {
                match channels
                    .node_heartbeat(&address, message, HEARTBEAT_TIMEOUT)
                    .await
                {
                    Ok(reply) if reply.from == peer => {
                        liveness.heard(
                            peer,
                            reply.incarnation,
                            reply.leading,
                            reply.opening,
                            Instant::now(),
                        );
                        liveness.heard_sees(peer, reply.alive);
                    }
                    Ok(reply) => tracing::warn!(
                        "broker {peer} at {address} answered as broker {}",
                        reply.from
                    ),
                    Err(true) => liveness.refused(peer),
                    Err(false) => {}
                }
                in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&peer);
            });
        }
    }
}

impl Steering {
    /// Peers that came back in the last rounds, with the round since their return.
    fn peers_to_announce_to(&mut self, view: &LiveView) -> HashMap<u64, u32> {
        let mut announce = HashMap::new();
        for (&peer, &count) in &view.returns {
            let entry = self.returns.entry(peer).or_insert((count, u32::MAX));
            if entry.0 != count {
                *entry = (count, 0);
            } else {
                entry.1 = entry.1.saturating_add(1);
            }
            if ANNOUNCE_ROUNDS.contains(&entry.1) {
                announce.insert(peer, entry.1);
            }
        }
        announce
    }

    /// One group, one look: quiet or wake a leader (and note whom it leads with),
    /// campaign for a leaderless follower. Runs for every group every round, so the
    /// common cases (a quiet leader, a follower whose leader is alive) allocate nothing.
    /// Returns what it found.
    async fn steer(
        &mut self,
        p: &ReplicatedPartition,
        view: &LiveView,
        announce: &HashMap<u64, u32>,
        now: Instant,
        leading: &mut HashMap<u64, Vec<u64>>,
    ) -> Settled {
        let me = p.node;
        let group = p.group;
        let look = {
            let m = p.raft.metrics();
            let m = m.borrow();
            if m.state == typ::ServerState::Leader {
                let (caught_up, announce_to) = lead(&m, me, group, view, announce, leading);
                let peers: Vec<u64> = m
                    .membership_config
                    .membership()
                    .nodes()
                    .map(|(id, _)| *id)
                    .filter(|&id| id != me)
                    .collect();
                Some((caught_up, announce_to, peers))
            } else {
                None
            }
        };
        if let Some((caught_up, announce_to, peers)) = look {
            // Timers run only on a leader with something left to send.
            p.raft.runtime_config().heartbeat(!caught_up);
            p.raft.runtime_config().tick(!caught_up);
            self.settled(group);
            if announce_to {
                let _ = p.raft.trigger().heartbeat().await;
            }
            return match (caught_up, peers.is_empty()) {
                (false, _) => Settled::No,
                (true, true) => Settled::Alone,
                (true, false) => Settled::Leading(peers),
            };
        }
        p.raft.runtime_config().heartbeat(false);
        p.raft.runtime_config().tick(false);
        if view.leaders.contains_key(&group) {
            self.settled(group);
            return Settled::Following;
        }
        let follower = Follower::of(p, me);
        if !follower.voter {
            self.settled(group);
            return Settled::No;
        }
        if view.opening.contains(&me) || follower.voters.iter().any(|v| view.opening.contains(v)) {
            // A voter is still opening its replicas (a restart): it may lead this group
            // as soon as its replica is open, and cannot vote before. Wait for it.
            self.leaderless.insert(group, now);
            return Settled::No;
        }
        if follower.candidate && !self.campaigned.contains_key(&group) {
            // openraft campaigns by itself once, when a group is created.
            self.campaigned.insert(group, (now, 1));
        }
        let since = *self.leaderless.entry(group).or_insert(now);
        // The leader's broker refused us or fell silent: no need to wait for it.
        let known_down = follower.leader.is_some_and(|l| !view.is_alive(l, me));
        if let Some(l) = follower.leader.filter(|_| known_down) {
            if view.heard_by_another(l, me, &follower.voters) {
                // Only our link to it is cut (a node-level pre-vote): a campaign could
                // not win, and its higher term would depose the leader at the heal.
                tracing::debug!(topic = %p.topic, partition = p.partition, leader = l, "the leader's broker is silent here but heard by another voter: no campaign");
                return Settled::No;
            }
        }
        // Nor when no other broker votes in the group: none can lead it.
        let alone = follower.voters.iter().all(|&v| v == me);
        let grace = if known_down || alone {
            Duration::ZERO
        } else {
            GRACE
        };
        let preferred = p.preferred_replicas();
        let Some(rank) = rank(me, &follower.voters, &preferred, view) else {
            // A majority is down: a campaign could not win.
            tracing::debug!(topic = %p.topic, partition = p.partition, alive = ?view.alive, "no live leader, no live majority");
            return Settled::No;
        };
        let wait = grace + STAGGER * rank as u32;
        let attempts = self.campaigned.get(&group).map_or(0, |c| c.1);
        let recent = self
            .campaigned
            .get(&group)
            .is_some_and(|&(t, n)| now.duration_since(t) < retry_after(group, n));
        if now.duration_since(since) < wait || recent {
            return Settled::No;
        }
        self.campaigned.insert(group, (now, attempts + 1));
        tracing::debug!(
            topic = %p.topic,
            partition = p.partition,
            rank,
            me,
            "no live leader: campaigning"
        );
        if let Err(e) = p.raft.trigger().elect().await {
            tracing::debug!(topic = %p.topic, partition = p.partition, "campaign: {e}");
        }
        Settled::No
    }

    /// The group has a leader (here or alive elsewhere): nothing to campaign for.
    fn settled(&mut self, group: u64) {
        if !self.leaderless.is_empty() {
            self.leaderless.remove(&group);
        }
        if !self.campaigned.is_empty() {
            self.campaigned.remove(&group);
        }
    }

    /// Drops what is remembered of groups no longer running here.
    fn forget_missing(&mut self, slots: &[Slot]) {
        if self.leaderless.is_empty() && self.campaigned.is_empty() {
            return;
        }
        let running: std::collections::HashSet<u64> =
            slots.iter().map(|s| s.partition.group).collect();
        self.leaderless.retain(|g, _| running.contains(g));
        self.campaigned.retain(|g, _| running.contains(g));
    }
}

/// A leader's look at its group: records the peers it leads with in `leading`, and
/// returns whether it is caught up (every live member has the last entry, it is
/// committed, the membership is settled and this broker votes: nothing left to send;
/// a member that is down does not keep the group awake, and when it is back the group
/// is announced to it and stays awake until it caught up) and whether a member came
/// back this round.
fn lead(
    m: &typ::RaftMetrics,
    me: u64,
    group: u64,
    view: &LiveView,
    announce: &HashMap<u64, u32>,
    leading: &mut HashMap<u64, Vec<u64>>,
) -> (bool, bool) {
    let membership = m.membership_config.membership();
    let mut announce_to = false;
    for (id, _) in membership.nodes() {
        if *id != me {
            leading.entry(*id).or_default().push(group);
            announce_to |= announce.contains_key(id);
        }
    }
    let caught_up = m.last_applied.map(|l| l.index) == m.last_log_index
        && membership.get_joint_config().len() == 1
        && membership.voter_ids().any(|v| v == me)
        && m.replication.as_ref().is_some_and(|r| {
            r.iter().all(|(id, matched)| {
                matched.map(|l| l.index) == m.last_log_index || !view.is_alive(*id, me)
            })
        });
    (caught_up, announce_to)
}

/// A replica left alone by a move that took its leader away elects itself here at once
/// (steering would, a little later). Timers of every partition group are steered by
/// `quiesce`: an idle group, and any group of one, runs none.
pub(super) async fn elect_if_orphaned(raft: &typ::Raft, entry: &super::PartitionEntry, me: u32) {
    let alone = entry.replicas == [me] && entry.target.is_none();
    if !alone {
        return;
    }
    let orphaned = {
        let m = raft.metrics();
        let m = m.borrow();
        let only_voter = m.membership_config.voter_ids().eq([me as u64]);
        only_voter && m.current_leader != Some(me as u64)
    };
    if orphaned {
        if let Err(e) = raft.trigger().elect().await {
            tracing::debug!("electing a replica left alone by a move: {e}");
        }
    }
}

/// What steering needs of a follower's metrics when no live peer leads its group.
struct Follower {
    voter: bool,
    /// Campaigning (openraft's state).
    candidate: bool,
    voters: Vec<u64>,
    leader: Option<u64>,
}

impl Follower {
    fn of(p: &ReplicatedPartition, me: u64) -> Self {
        let m = p.raft.metrics();
        let m = m.borrow();
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        Self {
            voter: voters.contains(&me),
            candidate: m.state == typ::ServerState::Candidate,
            voters,
            leader: m.current_leader.filter(|&l| l != me),
        }
    }
}

/// How long after its `attempts`-th campaign in a row a group may campaign again:
/// doubling from [`RETRY`] up to [`RETRY_MAX`], times 1 to 1.5 (a hash of the group and
/// attempt, so groups differ and each retry differs).
fn retry_after(group: u64, attempts: u32) -> Duration {
    let base = RETRY
        .saturating_mul(1 << attempts.saturating_sub(1).min(4))
        .min(RETRY_MAX);
    let mixed = (group ^ u64::from(attempts) << 40).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let stretch = (mixed >> 54) as u32; // 0..1024
    base + base * stretch / 2048
}

/// This broker's place in line among the group's live voters (0 stands first), in the
/// order of the partition's replica list (the preferred leader first); `None` when the
/// live voters are no majority.
fn rank(me: u64, voters: &[u64], preferred: &[u32], view: &LiveView) -> Option<usize> {
    let live: Vec<u64> = voters
        .iter()
        .copied()
        .filter(|&v| view.is_alive(v, me))
        .collect();
    if live.len() * 2 <= voters.len() {
        return None;
    }
    let mut order: Vec<u64> = preferred
        .iter()
        .map(|&b| b as u64)
        .filter(|b| live.contains(b))
        .collect();
    let mut rest: Vec<u64> = live.into_iter().filter(|v| !order.contains(v)).collect();
    rest.sort_unstable();
    order.extend(rest);
    order.iter().position(|&v| v == me)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(alive: &[u64]) -> LiveView {
        LiveView {
            alive: alive.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn retries_back_off_and_spread() {
        assert!(retry_after(1, 1) >= RETRY && retry_after(1, 1) <= RETRY * 3 / 2);
        assert!(retry_after(1, 3) >= RETRY * 4);
        assert!(retry_after(1, 30) <= RETRY_MAX * 3 / 2);
        let spread: std::collections::HashSet<Duration> =
            (0..100).map(|g| retry_after(g, 1)).collect();
        assert!(spread.len() > 50, "groups retry at different times");
    }

    #[test]
    fn replicas_stand_in_preferred_order_among_the_live_and_never_without_a_majority() {
        let voters = [1, 2, 3];
        // Broker 1 (preferred leader) is down: 2 stands first, then 3.
        assert_eq!(rank(2, &voters, &[1, 2, 3], &view(&[3])), Some(0));
        assert_eq!(rank(3, &voters, &[1, 2, 3], &view(&[2])), Some(1));
        // The order is the replica list's, not the ids'.
        assert_eq!(rank(3, &voters, &[3, 1, 2], &view(&[1, 2])), Some(0));
        // Voters missing from the list (mid-move) come after it, by id.
        assert_eq!(rank(3, &voters, &[2], &view(&[2, 1])), Some(2));
        // Alone among three: no campaign.
        assert_eq!(rank(2, &voters, &[1, 2, 3], &view(&[])), None);
        // A group of one always may.
        assert_eq!(rank(1, &[1], &[1], &view(&[])), Some(0));
    }
}
