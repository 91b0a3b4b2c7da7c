//! Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) with
//! client-side assignors, as Kafka's GroupCoordinator runs it: members join a
//! rebalance, the coordinator picks a leader and a protocol all support, the leader
//! computes the assignment and hands it over in SyncGroup, every member gets its part.
//! Membership is in memory on the coordinator (members rejoin a new one after a
//! failover, as with Kafka's); offsets go through the group service, replicated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;

use super::groups::group_code;
use super::Call;
use crate::auth::acl::{Operation, ResourceType};
use crate::group::membership::{MAX_SESSION, MIN_SESSION};
use crate::server::group_service::GroupService;
use crate::server::Shared;

/// Longest rebalance timeout honoured (Kafka's default max.poll.interval.ms is 5 min).
const MAX_REBALANCE: Duration = Duration::from_secs(600);
/// How often sessions are checked when no request comes.
pub(super) const EXPIRE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    /// Protocols in the member's order of preference, with its metadata for each.
    protocols: Vec<(String, Bytes)>,
    session: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    /// Rejoined in the rebalance under way.
    joined: bool,
}

struct Group {
    state: State,
    generation: i32,
    /// The generation before, whose members' commits still count (see `check_commit`).
    previous_generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Ids handed out by MEMBER_ID_REQUIRED, not yet joined, with when they expire.
    pending: BTreeMap<String, Instant>,
    assignments: BTreeMap<String, Bytes>,
    rebalance_deadline: Instant,
    /// Bumped on every change, for the requests waiting on one.
    changed: watch::Sender<u64>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: State::Empty,
            generation: 0,
            previous_generation: 0,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            assignments: BTreeMap::new(),
            rebalance_deadline: Instant::now(),
            changed: watch::channel(0).0,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// Starts a rebalance: every member must join again within the longest rebalance
    /// timeout among them.
    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            for m in self.members.values_mut() {
                m.joined = false;
            }
        }
        self.state = State::PreparingRebalance;
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.rebalance_deadline = now + longest;
        self.assignments.clear();
        self.bump();
    }

    /// Ends the rebalance under way once every member joined, or at its deadline
    /// without those that did not: a new generation, its protocol and leader.
    fn maybe_complete(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        if !all_joined && now < self.rebalance_deadline {
            return;
        }
        self.members.retain(|_, m| m.joined);
        self.previous_generation = self.generation;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            self.bump();
            return;
        }
        self.protocol = self.vote();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        for m in self.members.values_mut() {
            m.last_seen = now;
        }
        self.state = State::CompletingRebalance;
        self.bump();
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn vote(&self) -> Option<String> {
        let mut common: Option<BTreeSet<&str>> = None;
        for m in self.members.values() {
            let mine: BTreeSet<&str> = m.protocols.iter().map(|(p, _)| p.as_str()).collect();
            common = Some(match common {
                None => mine,
                Some(c) => c.intersection(&mine).copied().collect(),
            });
        }
        let common = common?;
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((p, _)) = m
                .protocols
                .iter()
                .find(|(p, _)| common.contains(p.as_str()))
            {
                *votes.entry(p).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(p, _)| p.to_string())
    }

    /// Removes members whose session passed (not while a rebalance waits for them to
    /// join: that has its own deadline).
    fn expire(&mut self, now: Instant) {
        self.pending.retain(|_, until| *until > now);
        let before = self.members.len();
        let preparing = self.state == State::PreparingRebalance;
        self.members
            .retain(|_, m| (preparing && m.joined) || m.last_seen + m.session > now);
        if self.members.len() != before {
            self.prepare_rebalance(now);
        }
        self.maybe_complete(now);
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type != protocol_type {
            return false;
        }
        // Some protocol every current member and this one support.
        let theirs: BTreeSet<&str> = protocols.iter().map(|(p, _)| p.as_str()).collect();
        self.members
            .values()
            .all(|m| m.protocols.iter().any(|(p, _)| theirs.contains(p.as_str())))
    }
}

/// The classic groups this broker coordinates.
#[derive(Default)]
pub(crate) struct ClassicGroups {
    groups: Mutex<HashMap<String, Group>>,
}

impl ClassicGroups {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Group>) -> R) -> R {
        f(&mut self.groups.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Checks sessions and overdue rebalances of every group.
    pub(super) fn expire_all(&self) {
        let now = Instant::now();
        self.with(|groups| {
            for g in groups.values_mut() {
                g.expire(now);
            }
            groups.retain(|_, g| !(g.state == State::Empty && g.pending.is_empty()));
        });
    }

    /// The ids of the classic groups with members.
    pub(super) fn names(&self) -> Vec<String> {
        self.with(|groups| groups.keys().cloned().collect())
    }

    /// A group's state, if it is a classic group here.
    pub(super) fn state(&self, group: &str) -> Option<&'static str> {
        self.with(|groups| groups.get(group).map(|g| g.state.name()))
    }

    /// Whether a classic group of that id has members.
    pub(super) fn has_members(&self, group: &str) -> bool {
        self.with(|groups| groups.get(group).is_some_and(|g| !g.members.is_empty()))
    }

    /// Forgets a group (deleted).
    pub(super) fn forget(&self, group: &str) {
        self.with(|groups| groups.remove(group));
    }

    /// Whether a commit by `member` at `generation` may go ahead; `None` when no classic
    /// group of that id is known here. A current member's commit of the generation just
    /// ended is taken too (as rafka's own groups take the previous member epoch): it was
    /// sent while the member's JoinGroup was answered, it can only be for partitions the
    /// member still owns (cooperative assignors move a partition only after its owner
    /// revoked it and committed, on this same connection), and Kafka's ILLEGAL_GENERATION
    /// would make librdkafka drop the member's whole assignment as lost and re-consume
    /// from the last commit.
    pub(super) fn check_commit(
        &self,
        group: &str,
        member: &str,
        generation: i32,
    ) -> Option<Result<(), E>> {
        self.with(|groups| {
            let g = groups.get_mut(group)?;
            g.expire(Instant::now());
            if member.is_empty() && generation < 0 {
                return Some(if g.members.is_empty() {
                    Ok(())
                } else {
                    Err(E::UnknownMemberId)
                });
            }
            let Some(m) = g.members.get_mut(member) else {
                return Some(Err(E::UnknownMemberId));
            };
            m.last_seen = Instant::now();
            Some(
                if generation == g.generation || generation == g.previous_generation {
                    Ok(())
                } else {
                    Err(E::IllegalGeneration)
                },
            )
        })
    }

    /// A group as DescribeGroups shows it, if it is a classic group here.
    pub(super) fn describe(&self, group: &str) -> Option<DescribedGroup> {
        self.with(|groups| {
            let g = groups.get(group)?;
            let mut out = DescribedGroup::default();
            out.group_state = str_bytes(g.state.name());
            out.protocol_type = str_bytes(&g.protocol_type);
            out.protocol_data = str_bytes(g.protocol.as_deref().unwrap_or(""));
            out.members = g
                .members
                .iter()
                .map(|(id, m)| {
                    let metadata = g
                        .protocol
                        .as_ref()
                        .and_then(|p| m.protocols.iter().find(|(q, _)| q == p))
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default();
                    DescribedGroupMember::default()
                        .with_member_id(str_bytes(id))
                        .with_client_id(str_bytes(&m.client_id))
                        .with_client_host(str_bytes(&m.client_host))
                        .with_member_metadata(metadata)
                        .with_member_assignment(g.assignments.get(id).cloned().unwrap_or_default())
                })
                .collect();
            Some(out)
        })
    }
}

/// A random UUID (version 4) for a new member's id.
fn random_id() -> uuid::Uuid {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        // No randomness from the system: time and a counter are unique enough here.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes[..8].copy_from_slice(&t.to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
    }
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Refuses a group request the caller may not make, or one for a group this broker
/// does not coordinate.
async fn admit(shared: &Arc<Shared>, call: &Call, group: &str) -> Result<(), E> {
    shared
        .authorize(
            call.principal.as_ref(),
            Operation::Read,
            ResourceType::Group,
            group,
        )
        .map_err(|_| E::GroupAuthorizationFailed)?;
    crate::group::validate_group(group).map_err(|_| E::InvalidGroupId)?;
    GroupService::new(shared.clone())
        .coordinates(group)
        .await
        .map_err(|e| group_code(&e))?;
    let consumer_members = {
        let groups = shared
            .groups
            .groups
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        groups.get(group).is_some_and(|g| !g.members.is_empty())
    };
    if consumer_members {
        return Err(E::InconsistentGroupProtocol);
    }
    Ok(())
}

/// Waits until `done` holds for the group (checked under its lock), the group goes, or
/// `deadline` passes; returns what `done` made of it.
async fn wait_for<R>(
    groups: &ClassicGroups,
    group: &str,
    deadline: Instant,
    mut done: impl FnMut(Option<&mut Group>, Instant) -> Option<R>,
) -> Option<R> {
    loop {
        let now = Instant::now();
        let (answer, mut changed) = groups.with(|gs| {
            let mut g = gs.get_mut(group);
            let changed = g.as_ref().map(|g| g.changed.subscribe());
            if let Some(g) = g.as_deref_mut() {
                g.expire(now);
            }
            (done(g, now), changed)
        });
        if answer.is_some() || now >= deadline {
            return answer;
        }
        // The group is gone: nothing to wait for.
        let changed = changed.as_mut()?;
        let wake = tokio::time::Instant::from_std(deadline.min(now + EXPIRE_EVERY));
        let _ = tokio::time::timeout_at(wake, changed.changed()).await;
    }
}

pub(super) async fn join_group(
    shared: &Arc<Shared>,
    call: &Call,
    r: JoinGroupRequest,
) -> JoinGroupResponse {
    let group = r.group_id.0.to_string();
    let mut out = JoinGroupResponse::default();
    out.generation_id = -1;
    if let Err(e) = admit(shared, call, &group).await {
        out.error_code = e.code();
        out.member_id = r.member_id.clone();
        return out;
    }
    let session = Duration::from_millis(u64::try_from(r.session_timeout_ms).unwrap_or(0));
    if !(MIN_SESSION..=MAX_SESSION).contains(&session) {
        out.error_code = E::InvalidSessionTimeout.code();
        out.member_id = r.member_id.clone();
        return out;
    }
    let rebalance_timeout = match r.rebalance_timeout_ms {
        n if n > 0 && call.version() >= 1 => Duration::from_millis(n as u64),
        _ => session,
    }
    .min(MAX_REBALANCE);
    let protocols: Vec<(String, Bytes)> = r
        .protocols
        .iter()
        .map(|p| (p.name.to_string(), p.metadata.clone()))
        .collect();
    let protocol_type = r.protocol_type.to_string();
    let client_id = call.header.client_id.as_deref().unwrap_or("").to_string();
    let classic = &shared.kafka.classic;
    let now = Instant::now();
    // Admit the member (or tell it its id first), and start a rebalance if needed.
    let admitted = classic.with(|groups| -> Result<(String, i32), (E, String)> {
        let g = groups.entry(group.clone()).or_insert_with(Group::new);
        g.expire(now);
        if protocols.is_empty() || !g.supports(&protocol_type, &protocols) {
            return Err((E::InconsistentGroupProtocol, r.member_id.to_string()));
        }
        let mut id = r.member_id.to_string();
        if id.is_empty() {
            id = format!("{client_id}-{}", random_id());
            if call.version() >= 4 {
                // KIP-394: the member learns its id, then joins with it.
                g.pending.insert(id.clone(), now + session);
                return Err((E::MemberIdRequired, id));
            }
        } else if !g.members.contains_key(&id) && g.pending.remove(&id).is_none() {
            return Err((E::UnknownMemberId, id));
        }
        let known = g.members.get(&id).cloned();
        let same = known.as_ref().is_some_and(|m| m.protocols == protocols);
        let member = Member {
            instance_id: r.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: client_id.clone(),
            client_host: String::new(),
            protocols: protocols.clone(),
            session,
            rebalance_timeout,
            last_seen: now,
            joined: true,
        };
        let is_leader = g.leader.as_deref() == Some(id.as_str());
        match g.state {
            // A follower rejoining unchanged gets the current generation right away.
            State::Stable | State::CompletingRebalance if same && !is_leader => {}
            State::PreparingRebalance => g.bump(),
            _ => g.prepare_rebalance(now),
        }
        // After the rebalance started (which asks every member to join again): this
        // one has.
        g.members.insert(id.clone(), member);
        g.protocol_type = protocol_type.clone();
        g.maybe_complete(now);
        Ok((id, g.generation))
    });
    let (id, generation_at_join) = match admitted {
        Ok(a) => a,
        Err((e, id)) => {
            out.error_code = e.code();
            out.member_id = str_bytes(&id);
            return out;
        }
    };
    let deadline = now + rebalance_timeout + Duration::from_secs(1);
    let answer = wait_for(classic, &group, deadline, |g, _| {
        let g = g?;
        if !g.members.contains_key(&id) {
            return Some(Err(E::UnknownMemberId));
        }
        if g.state == State::PreparingRebalance {
            return None;
        }
        if g.generation < generation_at_join {
            return None;
        }
        let leader = g.leader.clone().unwrap_or_default();
        let protocol = g.protocol.clone().unwrap_or_default();
        let members = if leader == id {
            g.members
                .iter()
                .map(|(mid, m)| {
                    let metadata = m
                        .protocols
                        .iter()
                        .find(|(p, _)| *p == protocol)
                        .map(|(_, md)| md.clone())
                        .unwrap_or_default();
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(mid))
                        .with_group_instance_id(m.instance_id.as_deref().map(str_bytes))
                        .with_metadata(metadata)
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(Ok((g.generation, protocol, leader, members)))
    })
    .await;
    out.member_id = str_bytes(&id);
    match answer {
        Some(Ok((generation, protocol, leader, members))) => {
            out.generation_id = generation;
            out.protocol_type = Some(str_bytes(&protocol_type));
            out.protocol_name = Some(str_bytes(&protocol));
            out.leader = str_bytes(&leader);
            out.members = members;
        }
        Some(Err(e)) => out.error_code = e.code(),
        None => out.error_code = E::RebalanceInProgress.code(),
    }
    out
}

pub(super) async fn sync_group(
    shared: &Arc<Shared>,
    call: &Call,
    r: SyncGroupRequest,
) -> SyncGroupResponse {
    let group = r.group_id.0.to_string();
    let member = r.member_id.to_string();
    let mut out = SyncGroupResponse::default();
    if let Err(e) = admit(shared, call, &group).await {
        out.error_code = e.code();
        return out;
    }
    let classic = &shared.kafka.classic;
    let now = Instant::now();
    let checked = classic.with(|groups| -> Result<Duration, E> {
        let g = groups.get_mut(&group).ok_or(E::UnknownMemberId)?;
        g.expire(now);
        let m = g.members.get_mut(&member).ok_or(E::UnknownMemberId)?;
        m.last_seen = now;
        let timeout = m.rebalance_timeout;
        if g.generation != r.generation_id {
            return Err(E::IllegalGeneration);
        }
        if g.state == State::PreparingRebalance {
            return Err(E::RebalanceInProgress);
        }
        if g.state == State::CompletingRebalance && g.leader.as_deref() == Some(member.as_str()) {
            g.assignments = r
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect();
            g.state = State::Stable;
            g.bump();
        }
        Ok(timeout)
    });
    let timeout = match checked {
        Ok(t) => t,
        Err(e) => {
            out.error_code = e.code();
            return out;
        }
    };
    let generation = r.generation_id;
    let answer = wait_for(classic, &group, now + timeout, |g, _| {
        let g = g?;
        if !g.members.contains_key(&member) {
            return Some(Err(E::UnknownMemberId));
        }
        if g.generation != generation || g.state == State::PreparingRebalance {
            return Some(Err(E::RebalanceInProgress));
        }
        (g.state == State::Stable).then(|| {
            Ok((
                g.protocol.clone().unwrap_or_default(),
                g.assignments.get(&member).cloned().unwrap_or_default(),
            ))
        })
    })
    .await;
    match answer {
        Some(Ok((protocol, assignment))) => {
            if call.version() >= 5 {
                out.protocol_type = Some(str_bytes("consumer"));
                out.protocol_name = Some(str_bytes(&protocol));
            }
            out.assignment = assignment;
        }
        Some(Err(e)) => out.error_code = e.code(),
        None => out.error_code = E::RebalanceInProgress.code(),
    }
    out
}

pub(super) async fn heartbeat(
    shared: &Arc<Shared>,
    call: &Call,
    r: HeartbeatRequest,
) -> HeartbeatResponse {
    let group = r.group_id.0.to_string();
    let member = r.member_id.to_string();
    let mut out = HeartbeatResponse::default();
    if let Err(e) = admit(shared, call, &group).await {
        out.error_code = e.code();
        return out;
    }
    let now = Instant::now();
    let result = shared.kafka.classic.with(|groups| -> Result<(), E> {
        let g = groups.get_mut(&group).ok_or(E::UnknownMemberId)?;
        g.expire(now);
        let m = g.members.get_mut(&member).ok_or(E::UnknownMemberId)?;
        m.last_seen = now;
        match g.state {
            State::PreparingRebalance => Err(E::RebalanceInProgress),
            _ if g.generation != r.generation_id => Err(E::IllegalGeneration),
            _ => Ok(()),
        }
    });
    if let Err(e) = result {
        out.error_code = e.code();
    }
    out
}

pub(super) async fn leave_group(
    shared: &Arc<Shared>,
    call: &Call,
    r: LeaveGroupRequest,
) -> LeaveGroupResponse {
    use kafka_protocol::messages::leave_group_response::MemberResponse;
    let group = r.group_id.0.to_string();
    let mut out = LeaveGroupResponse::default();
    if let Err(e) = admit(shared, call, &group).await {
        out.error_code = e.code();
        return out;
    }
    let leaving: Vec<(String, Option<String>)> = if call.version() >= 3 {
        r.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(r.member_id.to_string(), None)]
    };
    let now = Instant::now();
    let results: Vec<(String, Option<String>, i16)> = shared.kafka.classic.with(|groups| {
        let Some(g) = groups.get_mut(&group) else {
            return leaving
                .into_iter()
                .map(|(id, inst)| (id, inst, E::UnknownMemberId.code()))
                .collect();
        };
        let mut removed = false;
        let mut results = Vec::new();
        for (id, instance) in leaving {
            let found = if id.is_empty() {
                g.members
                    .iter()
                    .find(|(_, m)| m.instance_id.is_some() && m.instance_id == instance)
                    .map(|(k, _)| k.clone())
            } else {
                g.members.contains_key(&id).then(|| id.clone())
            };
            match found {
                Some(k) => {
                    g.members.remove(&k);
                    removed = true;
                    results.push((k, instance, 0));
                }
                None => results.push((id, instance, E::UnknownMemberId.code())),
            }
        }
        if removed {
            if g.members.is_empty() {
                g.state = State::Empty;
                g.previous_generation = g.generation;
                g.generation += 1;
                g.protocol = None;
                g.leader = None;
                g.assignments.clear();
                g.bump();
            } else {
                g.prepare_rebalance(now);
            }
        }
        results
    });
    if call.version() >= 3 {
        out.members = results
            .into_iter()
            .map(|(id, instance, error)| {
                MemberResponse::default()
                    .with_member_id(str_bytes(&id))
                    .with_group_instance_id(instance.as_deref().map(str_bytes))
                    .with_error_code(error)
            })
            .collect();
    } else if let Some((_, _, error)) = results.first() {
        out.error_code = *error;
    }
    out
}
