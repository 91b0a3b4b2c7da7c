//! A group's members and their incremental assignment (in the spirit of Kafka's
//! KIP-848 protocol): members heartbeat with what they own; the coordinator answers with
//! what they may own now. A partition moving from A to B is first withheld from A's
//! answer; only once A reports it released (after committing) is it given to B.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::assign::{Assignment, Assignor, Tp};
use crate::error::shown;

/// `member_epoch` of a member leaving the group.
pub const LEAVE: i32 = -1;
/// `member_epoch` of a static member leaving for a restart.
pub const LEAVE_STATIC: i32 = -2;
/// Heartbeat interval of a member waiting for partitions others still release.
pub const PENDING_INTERVAL: Duration = Duration::from_millis(50);
/// Shortest session timeout a member may ask for.
pub const MIN_SESSION: Duration = Duration::from_millis(100);
/// Longest session timeout a member may ask for (Kafka's group.max.session.timeout.ms).
pub const MAX_SESSION: Duration = Duration::from_secs(30 * 60);
/// Session timeout when the member does not ask for one.
pub const DEFAULT_SESSION: Duration = Duration::from_secs(10);

/// One member.
#[derive(Debug, Clone)]
pub struct Member {
    /// `group.instance.id` of a static member.
    pub instance_id: Option<String>,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// What it reported consuming in its last heartbeat.
    pub owned: BTreeSet<Tp>,
    /// What its last answer allowed it.
    pub assigned: BTreeSet<Tp>,
    /// Its last heartbeat.
    pub last_seen: Instant,
    /// Removed when silent this long.
    pub session: Duration,
    /// The epoch its last answer carried, and the one before: a heartbeat carries one of
    /// them (the previous one when the last answer was lost).
    pub epochs: [i32; 2],
}

/// A heartbeat as the coordinator takes it.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// Empty to join.
    pub member_id: String,
    /// 0 to join, [`LEAVE`], [`LEAVE_STATIC`], else the member's epoch.
    pub epoch: i32,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// Assignor name.
    pub assignor: String,
    /// What the member consumes now.
    pub owned: BTreeSet<Tp>,
    /// Session timeout (zero: the default).
    pub session: Duration,
}

/// The coordinator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The member's id.
    pub member_id: String,
    /// The group's epoch.
    pub epoch: i32,
    /// What the member may consume now.
    pub assignment: BTreeSet<Tp>,
    /// When to heartbeat next.
    pub interval: Duration,
}

/// Why a heartbeat or commit is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// The member was removed (session timeout): it must rejoin with a new id.
    #[error("member `{}` was removed from the group (session timed out); rejoin", shown(.0))]
    Fenced(String),
    /// A heartbeat with an epoch for a member id the coordinator does not know (invented,
    /// or from before a coordinator change): rejoin with epoch 0 (Kafka's
    /// UNKNOWN_MEMBER_ID).
    #[error("unknown member id `{}` in group `{}`: join with member epoch 0", shown(.member), shown(.group))]
    UnknownMember {
        /// The member id.
        member: String,
        /// The group.
        group: String,
    },
    /// A known member's heartbeat carries an epoch it was never given (Kafka's
    /// FENCED_MEMBER_EPOCH): it must rejoin with epoch 0.
    #[error("member `{}` sent epoch {sent}, but its epoch is {current}; rejoin with member epoch 0", shown(.member))]
    FencedEpoch {
        /// The member id.
        member: String,
        /// The epoch the heartbeat carried.
        sent: i32,
        /// The epoch the member was last given.
        current: i32,
    },
    /// The member does not own what it commits.
    #[error("{0}")]
    NotOwner(String),
    /// A malformed request.
    #[error("{0}")]
    Invalid(String),
}

impl MembershipError {
    /// Kafka's name for the refusal (`None` for a malformed request).
    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            Self::Fenced(_) | Self::UnknownMember { .. } => "UNKNOWN_MEMBER_ID",
            Self::FencedEpoch { .. } => "FENCED_MEMBER_EPOCH",
            Self::NotOwner(_) => "NOT_PARTITION_OWNER",
            Self::Invalid(_) => return None,
        })
    }
}

/// One group on its coordinator.
#[derive(Debug, Default)]
pub struct GroupState {
    /// Bumped on every change of the target assignment.
    pub epoch: i32,
    /// The assignor in use.
    pub assignor: Assignor,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// Where each partition should end up.
    pub target: Assignment,
    /// Removed members (their late requests are refused).
    pub fenced: BTreeSet<String>,
    /// Partition counts of the subscribed topics at the last rebalance.
    pub partitions: BTreeMap<String, u32>,
    joined: u64,
}

impl GroupState {
    /// Applies a heartbeat; `partitions` are the current partition counts of the
    /// subscribed topics.
    pub fn heartbeat(
        &mut self,
        group: &str,
        hb: Heartbeat,
        partitions: &BTreeMap<String, u32>,
        now: Instant,
    ) -> Result<Answer, MembershipError> {
        if hb.epoch < LEAVE_STATIC {
            return Err(MembershipError::Invalid(format!(
                "member epoch {} is not 0 (join), -1 (leave), -2 (static leave) or an epoch",
                hb.epoch
            )));
        }
        if !hb.session.is_zero() && !(MIN_SESSION..=MAX_SESSION).contains(&hb.session) {
            return Err(MembershipError::Invalid(format!(
                "session timeout {:?} is outside {MIN_SESSION:?} to {MAX_SESSION:?}",
                hb.session
            )));
        }
        if hb.epoch > 0 {
            // Only a member this coordinator admitted heartbeats with an epoch, and only
            // with one it was given.
            if self.fenced.contains(&hb.member_id) {
                return Err(MembershipError::Fenced(hb.member_id));
            }
            let Some(m) = self.members.get(&hb.member_id) else {
                return Err(MembershipError::UnknownMember {
                    member: hb.member_id,
                    group: group.to_string(),
                });
            };
            if !m.epochs.contains(&hb.epoch) {
                return Err(MembershipError::FencedEpoch {
                    member: hb.member_id,
                    sent: hb.epoch,
                    current: m.epochs[0],
                });
            }
        }
        // The member heartbeating is alive, whatever the gap since its last heartbeat.
        if let Some(m) = self.members.get_mut(&hb.member_id) {
            m.last_seen = now;
        }
        let mut changed = self.expire(now);
        let assignor = Assignor::parse(&hb.assignor).map_err(MembershipError::Invalid)?;
        if self.members.is_empty() {
            self.assignor = assignor;
        }
        let session = if hb.session.is_zero() {
            DEFAULT_SESSION
        } else {
            hb.session
        };
        if hb.epoch == LEAVE {
            if self.members.remove(&hb.member_id).is_some() {
                self.rebalance(partitions);
            }
            return Ok(self.answer(&hb.member_id, BTreeSet::new(), session));
        }
        if hb.epoch == LEAVE_STATIC {
            // Keep its partitions for it until its session times out.
            return Ok(self.answer(&hb.member_id, BTreeSet::new(), session));
        }
        if self.fenced.contains(&hb.member_id) {
            return Err(MembershipError::Fenced(hb.member_id));
        }
        let id = match (&hb.member_id[..], &hb.instance_id) {
            ("", Some(instance)) => {
                let existing = self
                    .members
                    .iter()
                    .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                    .map(|(id, _)| id.clone());
                existing.unwrap_or_else(|| self.new_id())
            }
            ("", None) => self.new_id(),
            (id, _) => id.to_string(),
        };
        let member = self.members.entry(id.clone()).or_insert_with(|| {
            changed = true; // a new member
            Member {
                instance_id: hb.instance_id.clone(),
                topics: BTreeSet::new(),
                owned: BTreeSet::new(),
                assigned: BTreeSet::new(),
                last_seen: now,
                session,
                epochs: [0, 0],
            }
        });
        if member.topics != hb.topics {
            member.topics = hb.topics;
            changed = true;
        }
        member.owned = hb.owned;
        member.last_seen = now;
        member.session = session;
        if changed || self.partitions != *partitions {
            self.rebalance(partitions);
        }
        let now_allowed = self.allowed(&id);
        let pending = self.target.get(&id).is_some_and(|t| *t != now_allowed);
        let epoch = self.epoch;
        let member = self.members.get_mut(&id).expect("inserted above");
        member.assigned = now_allowed.clone();
        if member.epochs[0] != epoch {
            member.epochs = [epoch, member.epochs[0]];
        }
        let mut answer = self.answer(&id, now_allowed, session);
        if pending {
            // Partitions are on their way to this member: ask again soon.
            answer.interval = answer.interval.min(PENDING_INTERVAL);
        }
        Ok(answer)
    }

    /// Removes members whose session timed out; true if any was.
    pub fn expire(&mut self, now: Instant) -> bool {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > m.session)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.members.remove(id);
            self.fenced.insert(id.clone());
        }
        if !gone.is_empty() {
            let partitions = self.partitions.clone();
            self.rebalance(&partitions);
        }
        !gone.is_empty()
    }

    /// Whether `member` may commit offsets of `partitions`.
    pub fn may_commit<'a>(
        &self,
        member: &str,
        partitions: impl IntoIterator<Item = &'a Tp>,
    ) -> Result<(), MembershipError> {
        if self.fenced.contains(member) {
            return Err(MembershipError::Fenced(member.to_string()));
        }
        let m = self.members.get(member).ok_or_else(|| {
            MembershipError::NotOwner(format!("`{}` is not a member of the group", shown(member)))
        })?;
        for tp in partitions {
            if !m.owned.contains(tp) && !m.assigned.contains(tp) {
                return Err(MembershipError::NotOwner(format!(
                    "member `{}` does not own {}-{}",
                    shown(member),
                    shown(&tp.0),
                    tp.1
                )));
            }
        }
        Ok(())
    }

    fn new_id(&mut self) -> String {
        self.joined += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        format!("member-{}-{nanos:08x}", self.joined)
    }

    fn rebalance(&mut self, partitions: &BTreeMap<String, u32>) {
        self.partitions = partitions.clone();
        let subscriptions = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.topics.clone()))
            .collect();
        self.target = self
            .assignor
            .assign(&subscriptions, partitions, &self.target);
        self.epoch += 1;
    }

    /// The member's target minus what other members still hold (own, or were given
    /// and have not released yet).
    fn allowed(&self, id: &str) -> BTreeSet<Tp> {
        let busy: BTreeSet<&Tp> = self
            .members
            .iter()
            .filter(|(other, _)| *other != id)
            .flat_map(|(_, m)| m.owned.iter().chain(&m.assigned))
            .collect();
        self.target
            .get(id)
            .map(|t| t.iter().filter(|tp| !busy.contains(tp)).cloned().collect())
            .unwrap_or_default()
    }

    fn answer(&self, id: &str, assignment: BTreeSet<Tp>, session: Duration) -> Answer {
        Answer {
            member_id: id.to_string(),
            epoch: self.epoch,
            assignment,
            interval: (session / 3).min(Duration::from_millis(500)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heartbeat of member `id` with the epoch its last answer carried.
    fn hb_at(id: &str, epoch: i32, owned: &BTreeSet<Tp>) -> Heartbeat {
        Heartbeat {
            member_id: id.into(),
            epoch,
            topics: BTreeSet::from(["t".to_string()]),
            owned: owned.clone(),
            ..Default::default()
        }
    }

    /// A heartbeat of member `id` with the epoch the coordinator last gave it.
    fn hb(g: &GroupState, id: &str, owned: &BTreeSet<Tp>) -> Heartbeat {
        let epoch = g.members.get(id).map_or(0, |m| m.epochs[0]);
        hb_at(id, epoch, owned)
    }

    fn join() -> Heartbeat {
        hb_at("", 0, &BTreeSet::new())
    }

    /// Heartbeats every member until the assignment settles; returns what each owns.
    fn settle(g: &mut GroupState, owned: &mut BTreeMap<String, BTreeSet<Tp>>, now: Instant) {
        let parts = BTreeMap::from([("t".to_string(), 12)]);
        for _ in 0..4 {
            let ids: Vec<String> = owned.keys().cloned().collect();
            for id in ids {
                let a = g
                    .heartbeat("g", hb(g, &id, &owned[&id]), &parts, now)
                    .unwrap();
                owned.insert(id, a.assignment);
            }
        }
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_released_it() {
        let parts = BTreeMap::from([("t".to_string(), 12)]);
        let now = Instant::now();
        let mut g = GroupState::default();
        let mut owned = BTreeMap::new();
        for _ in 0..3 {
            let a = g.heartbeat("g", join(), &parts, now).unwrap();
            owned.insert(a.member_id, a.assignment);
        }
        settle(&mut g, &mut owned, now);
        assert!(owned.values().all(|o| o.len() == 4), "{owned:?}");
        let before = owned.clone();

        // A fourth member joins: at first it gets nothing anyone still holds.
        let d = g.heartbeat("g", join(), &parts, now).unwrap();
        assert!(d.assignment.is_empty(), "nothing released yet");
        owned.insert(d.member_id.clone(), d.assignment);
        settle(&mut g, &mut owned, now);
        assert_eq!(owned[&d.member_id].len(), 3);
        for (id, had) in &before {
            assert!(owned[id].is_subset(had), "{id} only gave partitions up");
        }
        let all: BTreeSet<&Tp> = owned.values().flatten().collect();
        assert_eq!(all.len(), 12);
    }

    #[test]
    fn a_silent_member_is_removed_and_its_late_commit_refused() {
        let parts = BTreeMap::from([("t".to_string(), 4)]);
        let t0 = Instant::now();
        let mut g = GroupState::default();
        let mut join = join();
        join.session = Duration::from_millis(100);
        let a = g.heartbeat("g", join.clone(), &parts, t0).unwrap();
        let b = g.heartbeat("g", join, &parts, t0).unwrap();
        assert!(g.may_commit(&a.member_id, &a.assignment).is_ok());
        // b keeps heartbeating, a falls silent.
        let later = t0 + Duration::from_millis(300);
        let mut again = hb(&g, &b.member_id, &b.assignment);
        again.session = Duration::from_millis(100);
        g.heartbeat("g", again, &parts, later).unwrap();
        assert!(!g.members.contains_key(&a.member_id));
        assert_eq!(
            g.may_commit(&a.member_id, &a.assignment),
            Err(MembershipError::Fenced(a.member_id.clone()))
        );
        assert!(matches!(
            g.heartbeat(
                "g",
                hb_at(&a.member_id, a.epoch, &a.assignment),
                &parts,
                later
            ),
            Err(MembershipError::Fenced(_))
        ));
        assert!(matches!(
            g.may_commit(&b.member_id, &BTreeSet::from([("u".to_string(), 0)])),
            Err(MembershipError::NotOwner(_))
        ));
        for (epoch, session) in [(-3, 0), (0, 10), (0, 3_600_000)] {
            let mut bad = hb_at("", epoch, &BTreeSet::new());
            bad.session = Duration::from_millis(session);
            assert!(
                matches!(
                    g.heartbeat("g", bad, &parts, later),
                    Err(MembershipError::Invalid(_))
                ),
                "epoch {epoch}, session {session} ms"
            );
        }
    }

    #[test]
    fn a_static_member_restarts_into_its_own_partitions() {
        let parts = BTreeMap::from([("t".to_string(), 4)]);
        let now = Instant::now();
        let mut g = GroupState::default();
        let mut join = join();
        join.instance_id = Some("host-1".into());
        let a = g.heartbeat("g", join.clone(), &parts, now).unwrap();
        let epoch = g.epoch;
        let leave = hb_at(&a.member_id, LEAVE_STATIC, &a.assignment);
        g.heartbeat("g", leave, &parts, now).unwrap();
        let back = g.heartbeat("g", join, &parts, now).unwrap();
        assert_eq!(back.member_id, a.member_id);
        assert_eq!(back.assignment, a.assignment);
        assert_eq!(g.epoch, epoch, "no rebalance");
    }

    #[test]
    fn invented_members_and_epochs_are_refused() {
        let parts = BTreeMap::from([("t".to_string(), 4)]);
        let now = Instant::now();
        let mut g = GroupState::default();
        let a = g.heartbeat("g", join(), &parts, now).unwrap();
        assert_eq!(a.assignment.len(), 4);
        // An id the coordinator never gave, with an epoch: refused, and nothing moves.
        let invented = hb_at("intruder", 99, &BTreeSet::new());
        let err = g.heartbeat("g", invented, &parts, now).unwrap_err();
        assert_eq!(
            err,
            MembershipError::UnknownMember {
                member: "intruder".into(),
                group: "g".into()
            }
        );
        assert_eq!(err.code(), Some("UNKNOWN_MEMBER_ID"));
        assert!(!g.members.contains_key("intruder"));
        // A real member with an epoch it was never given.
        let err = g
            .heartbeat("g", hb_at(&a.member_id, 99, &a.assignment), &parts, now)
            .unwrap_err();
        assert_eq!(
            err,
            MembershipError::FencedEpoch {
                member: a.member_id.clone(),
                sent: 99,
                current: a.epoch
            }
        );
        assert_eq!(err.code(), Some("FENCED_MEMBER_EPOCH"));
        let still = g
            .heartbeat(
                "g",
                hb_at(&a.member_id, a.epoch, &a.assignment),
                &parts,
                now,
            )
            .unwrap();
        assert_eq!(still.assignment, a.assignment, "the real member keeps all");
        // A second member joins: the first is answered a new epoch, and may still use
        // the one before (its last answer may have been lost).
        let b = g.heartbeat("g", join(), &parts, now).unwrap();
        let first = g
            .heartbeat(
                "g",
                hb_at(&a.member_id, a.epoch, &a.assignment),
                &parts,
                now,
            )
            .unwrap();
        assert!(first.epoch > a.epoch);
        g.heartbeat(
            "g",
            hb_at(&a.member_id, a.epoch, &first.assignment),
            &parts,
            now,
        )
        .unwrap();
        g.heartbeat(
            "g",
            hb_at(&b.member_id, b.epoch, &b.assignment),
            &parts,
            now,
        )
        .unwrap();
        // Joining with epoch 0 and an id of the client's choosing is a join.
        let c = g
            .heartbeat("g", hb_at("chosen-id", 0, &BTreeSet::new()), &parts, now)
            .unwrap();
        assert_eq!(c.member_id, "chosen-id");
    }
}
