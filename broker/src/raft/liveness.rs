//! Node-level liveness: which brokers are up, and which partition groups each says it
//! leads.
//!
//! Brokers exchange one `NodeHeartbeat` per pair a few times a second instead of one
//! heartbeat per group: the message lists the groups the sender leads with the receiver
//! as a member. An idle group then sends nothing of its own (it is *quiescent*, as
//! CockroachDB and TiKV call it), and its followers campaign only when no live broker
//! reports leading it (see `cluster::quiesce`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A peer not heard from for this long is taken for down (a refused connection counts
/// at once, so a dead process is seen within one heartbeat round; a stopped, cut-off or
/// proxied one only by its silence). Six heartbeat rounds: long enough that a busy
/// broker's late heartbeats (a restart of 5,000 partitions on two cores) did not make
/// its groups campaign; it was 3 s, and a silent broker's partitions then stayed
/// unwritable for 3 s before anyone campaigned (docs/reliability.md).
pub const ALIVE_WINDOW: Duration = Duration::from_millis(1500);
/// How long after a broker's start its word that it is still opening replicas holds:
/// one that never finishes (a replica that cannot open) must not hold elections up.
pub const OPENING_MAX: Duration = Duration::from_secs(30);

/// One broker's view of its peers.
pub struct Liveness {
    me: u64,
    incarnation: u64,
    started: Instant,
    /// This broker is still opening its replicas.
    opening: std::sync::atomic::AtomicBool,
    inner: Mutex<Inner>,
    /// Bumped whenever the set of live peers changes (seen by [`Liveness::view`], which
    /// the steering loop calls every round): leaders waiting on a commit look again
    /// whether they still reach a majority.
    changed: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    peers: HashMap<u64, PeerView>,
    /// Groups this broker leads, by the peer that is a member of them.
    leading: HashMap<u64, Arc<Vec<u64>>>,
    /// The live peers the last view saw.
    last_alive: Vec<u64>,
}

struct PeerView {
    /// When a message of the peer last arrived (its request, or its reply to ours).
    heard: Instant,
    /// The last request to the peer failed to connect, and nothing came since.
    refused: bool,
    incarnation: u64,
    /// When this incarnation was first heard.
    since: Instant,
    /// It said it is still opening its replicas.
    opening: bool,
    /// Groups the peer leads with this broker as a member, as it last said.
    led: HashSet<u64>,
    /// Bumped whenever the peer comes back: it restarted, or was down and is heard again.
    returns: u64,
    /// Bumped whenever `led` changes.
    led_version: u64,
    /// The brokers the peer said it hears from.
    sees: HashSet<u64>,
}

/// What [`Liveness::view`] saw at one moment.
#[derive(Debug, Default, Clone)]
pub struct LiveView {
    /// Peers heard from recently and not refusing connections.
    pub alive: HashSet<u64>,
    /// The live peer leading each group, as the peers say.
    pub leaders: HashMap<u64, u64>,
    /// How many times each peer came back (see [`Liveness::heard`]).
    pub returns: HashMap<u64, u64>,
    /// Live peers still opening their replicas (for at most [`OPENING_MAX`]), this
    /// broker included.
    pub opening: HashSet<u64>,
    /// The brokers each live peer says it hears from.
    pub sees: HashMap<u64, HashSet<u64>>,
    /// Equal in two views when everything above is (a hash of the live peers, what
    /// they lead, their returns and openings): a group whose own state did not change
    /// either needs no new look.
    pub fingerprint: u64,
}

impl LiveView {
    /// Whether `node` is alive (this broker always is).
    pub fn is_alive(&self, node: u64, me: u64) -> bool {
        node == me || self.alive.contains(&node)
    }

    /// Whether one of `voters` other than `me` and `node`, alive to this broker, says it
    /// hears from `node`: then `node` is up and only this broker's link to it is down.
    pub fn heard_by_another(&self, node: u64, me: u64, voters: &[u64]) -> bool {
        voters.iter().any(|&v| {
            v != me
                && v != node
                && self.alive.contains(&v)
                && self.sees.get(&v).is_some_and(|s| s.contains(&node))
        })
    }
}

impl Liveness {
    /// Liveness of broker `me`; the incarnation tells peers when it restarted.
    pub fn new(me: u64) -> Arc<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Arc::new(Self {
            me,
            incarnation: nanos ^ (u64::from(std::process::id()) << 32),
            started: Instant::now(),
            opening: std::sync::atomic::AtomicBool::new(true),
            inner: Mutex::default(),
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    /// This broker's id.
    pub fn me(&self) -> u64 {
        self.me
    }

    /// This broker's incarnation (changes with every start).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether this broker still opens its replicas (as it tells its peers).
    pub fn is_opening(&self) -> bool {
        self.opening.load(std::sync::atomic::Ordering::Relaxed)
            && self.started.elapsed() < OPENING_MAX
    }

    /// Marks this broker's replicas as opened (or, again, as being opened).
    pub fn set_opening(&self, opening: bool) {
        self.opening
            .store(opening, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver that sees a change whenever the set of live peers changes.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Whether this broker, with the peers it hears from now, is a majority of
    /// `voters` (for a joint membership: of each of its configs). A leader that is not
    /// must stop accepting writes: the others may have elected a new leader already
    /// (they campaign after the same [`ALIVE_WINDOW`] of silence). A peer never heard
    /// from counts as alive during this broker's first [`ALIVE_WINDOW`] (its first
    /// heartbeats are still on their way).
    pub fn reaches_majority<'a>(
        &self,
        configs: impl IntoIterator<Item = &'a std::collections::BTreeSet<u64>>,
        now: Instant,
    ) -> bool {
        let inner = self.lock();
        let young = now.saturating_duration_since(self.started) < ALIVE_WINDOW;
        configs.into_iter().all(|voters| {
            let reached = voters
                .iter()
                .filter(|&&v| {
                    v == self.me || inner.peers.get(&v).map_or(young, |p| p.is_alive(now))
                })
                .count();
            reached * 2 > voters.len()
        })
    }

    /// Sets what this broker leads, by member peer: the content of its next heartbeats.
    pub fn set_leading(&self, leading: HashMap<u64, Vec<u64>>) {
        self.lock().leading = leading.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
    }

    /// The groups this broker leads with `peer` as a member.
    pub fn leading_for(&self, peer: u64) -> Vec<u64> {
        self.lock()
            .leading
            .get(&peer)
            .map(|v| v.as_ref().clone())
            .unwrap_or_default()
    }

    /// Records a heartbeat (request or reply) of `from`.
    pub fn heard(
        &self,
        from: u64,
        incarnation: u64,
        leading: Vec<u64>,
        opening: bool,
        now: Instant,
    ) {
        if from == self.me {
            return;
        }
        let mut inner = self.lock();
        let led: HashSet<u64> = leading.into_iter().collect();
        match inner.peers.get_mut(&from) {
            Some(p) => {
                let back = p.incarnation != incarnation
                    || p.refused
                    || now.saturating_duration_since(p.heard) > ALIVE_WINDOW;
                if back {
                    p.returns += 1;
                    tracing::info!(broker = self.me, peer = from, "peer is up");
                }
                if p.incarnation != incarnation {
                    p.since = now;
                }
                p.opening = opening;
                p.heard = now;
                p.refused = false;
                p.incarnation = incarnation;
                if p.led != led {
                    p.led = led;
                    p.led_version += 1;
                }
            }
            None => {
                inner.peers.insert(
                    from,
                    PeerView {
                        heard: now,
                        refused: false,
                        incarnation,
                        since: now,
                        opening,
                        led,
                        returns: 1,
                        led_version: 0,
                        sees: HashSet::new(),
                    },
                );
            }
        }
    }

    /// Records which brokers `from` said it hears from (with its heartbeat).
    pub fn heard_sees(&self, from: u64, sees: Vec<u64>) {
        if let Some(p) = self.lock().peers.get_mut(&from) {
            p.sees = sees.into_iter().collect();
        }
    }

    /// The peers this broker hears from now (what its heartbeats say it sees).
    pub fn alive_peers(&self, now: Instant) -> Vec<u64> {
        let mut alive: Vec<u64> = (self.lock().peers.iter())
            .filter(|(_, p)| p.is_alive(now))
            .map(|(&id, _)| id)
            .collect();
        alive.sort_unstable();
        alive
    }

    /// Records that a request to `peer` could not connect: it is down until heard again.
    pub fn refused(&self, peer: u64) {
        if let Some(p) = self.lock().peers.get_mut(&peer) {
            if !p.refused {
                tracing::info!(broker = self.me, peer, "peer is down (refuses connections)");
            }
            p.refused = true;
            if !p.led.is_empty() {
                p.led.clear();
                p.led_version += 1;
            }
        }
    }

    /// Whether `peer` was heard from before and is down now (refusing connections, or
    /// silent for [`ALIVE_WINDOW`]); a peer never heard from is not taken for down.
    pub fn is_down(&self, peer: u64, now: Instant) -> bool {
        let inner = self.lock();
        inner.peers.get(&peer).is_some_and(|p| !p.is_alive(now))
    }

    /// Whether `peer` is alive and says it is still opening its replicas (for at most
    /// [`OPENING_MAX`] after its start).
    pub fn is_peer_opening(&self, peer: u64, now: Instant) -> bool {
        self.lock().peers.get(&peer).is_some_and(|p| {
            p.is_alive(now) && p.opening && now.saturating_duration_since(p.since) < OPENING_MAX
        })
    }

    /// The live peer that says it leads `group`, if one does.
    pub fn leader_of(&self, group: u64, now: Instant) -> Option<u64> {
        let inner = self.lock();
        inner
            .peers
            .iter()
            .find(|(_, p)| p.is_alive(now) && p.led.contains(&group))
            .map(|(&id, _)| id)
    }

    /// Everything at once, for a pass over all groups.
    pub fn view(&self, now: Instant) -> LiveView {
        use std::hash::{Hash, Hasher};
        let mut inner = self.lock();
        let mut view = LiveView::default();
        let mut summary = Vec::with_capacity(inner.peers.len());
        if self.is_opening() {
            view.opening.insert(self.me);
        }
        for (&id, p) in &inner.peers {
            view.returns.insert(id, p.returns);
            if !p.is_alive(now) {
                summary.push((id, p.returns, None));
                continue;
            }
            view.alive.insert(id);
            let opening = p.opening && now.saturating_duration_since(p.since) < OPENING_MAX;
            if opening {
                view.opening.insert(id);
            }
            for &g in &p.led {
                view.leaders.insert(g, id);
            }
            let mut sees: Vec<u64> = p.sees.iter().copied().collect();
            sees.sort_unstable();
            view.sees.insert(id, p.sees.clone());
            summary.push((id, p.returns, Some((p.led_version, opening, sees))));
        }
        summary.sort_unstable();
        let mut alive: Vec<u64> = view.alive.iter().copied().collect();
        alive.sort_unstable();
        if alive != inner.last_alive {
            inner.last_alive = alive;
            self.changed.send_modify(|v| *v += 1);
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (self.is_opening(), summary).hash(&mut hasher);
        view.fingerprint = hasher.finish();
        view
    }
}

impl PeerView {
    fn is_alive(&self, now: Instant) -> bool {
        !self.refused && now.saturating_duration_since(self.heard) <= ALIVE_WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_alive_while_heard_and_lead_what_they_say() {
        let l = Liveness::new(1);
        let t0 = Instant::now();
        assert_ne!(l.leader_of(7, t0), Some(2));
        l.heard(2, 10, vec![7, 8], false, t0);
        assert_eq!(l.leader_of(7, t0), Some(2));
        assert_ne!(l.leader_of(9, t0), Some(2));
        assert_eq!(l.leader_of(8, t0), Some(2));
        let view = l.view(t0);
        assert!(view.is_alive(2, 1) && view.is_alive(1, 1) && !view.is_alive(3, 1));
        assert_eq!(view.leaders.get(&7), Some(&2));
        // Silence past the window: down, and its word no longer counts.
        let late = t0 + ALIVE_WINDOW + Duration::from_millis(1);
        assert_ne!(l.leader_of(7, late), Some(2));
        assert!(l.view(late).alive.is_empty());
        // Heard again: back, counted as a return.
        l.heard(2, 10, vec![7], false, late);
        assert_eq!(l.leader_of(7, late), Some(2));
        assert_eq!(l.view(late).returns[&2], 2);
    }

    #[test]
    fn a_refused_connection_is_down_at_once_and_a_restart_is_a_return() {
        let l = Liveness::new(1);
        let t0 = Instant::now();
        l.heard(2, 10, vec![7], false, t0);
        l.refused(2);
        assert_ne!(l.leader_of(7, t0), Some(2));
        assert!(!l.view(t0).is_alive(2, 1));
        l.heard(2, 11, vec![], false, t0);
        assert!(l.view(t0).is_alive(2, 1));
        assert_ne!(l.leader_of(7, t0), Some(2));
        assert_eq!(l.view(t0).returns[&2], 2);
        l.heard(2, 12, vec![], false, t0);
        assert_eq!(l.view(t0).returns[&2], 3, "a new incarnation is a restart");
    }

    #[test]
    fn a_broker_opening_its_replicas_is_waited_for_a_bounded_time() {
        let l = Liveness::new(1);
        let t0 = Instant::now();
        assert!(
            l.view(t0).opening.contains(&1),
            "this broker opens at first"
        );
        l.set_opening(false);
        assert!(!l.view(t0).opening.contains(&1));
        l.heard(2, 10, vec![], true, t0);
        assert!(l.view(t0).opening.contains(&2));
        // Still saying so long after its start: no longer believed.
        let late = t0 + OPENING_MAX;
        l.heard(2, 10, vec![], true, late);
        assert!(!l.view(late).opening.contains(&2));
        // A restart (new incarnation) starts the clock again.
        l.heard(2, 11, vec![], true, late);
        assert!(l.view(late).opening.contains(&2));
        l.heard(2, 11, vec![], false, late);
        assert!(!l.view(late).opening.contains(&2));
        assert!(!l.is_down(2, late) && !l.is_down(3, late));
        l.refused(2);
        assert!(l.is_down(2, late));
    }

    #[test]
    fn a_broker_cut_off_from_this_one_but_heard_by_another_voter_is_up() {
        let l = Liveness::new(1);
        let t0 = Instant::now();
        l.heard(2, 10, vec![7], false, t0);
        l.heard(3, 20, vec![], false, t0);
        l.heard_sees(3, vec![1, 2]);
        assert_eq!(l.alive_peers(t0), vec![2, 3]);
        // The link to 2 is cut (silent past the window); 3 still hears it.
        let late = t0 + ALIVE_WINDOW + Duration::from_millis(1);
        l.heard(3, 20, vec![], false, late);
        let view = l.view(late);
        assert!(!view.is_alive(2, 1));
        assert!(view.heard_by_another(2, 1, &[1, 2, 3]));
        assert!(
            !view.heard_by_another(2, 1, &[1, 2]),
            "3 is no voter of this group"
        );
        // 3 no longer hears 2 either: 2 is down.
        l.heard_sees(3, vec![1]);
        assert!(!l.view(late).heard_by_another(2, 1, &[1, 2, 3]));
        // What a silent voter said counts no more.
        l.heard_sees(3, vec![1, 2]);
        let later = late + ALIVE_WINDOW + Duration::from_millis(1);
        assert!(!l.view(later).heard_by_another(2, 1, &[1, 2, 3]));
    }

    #[test]
    fn what_a_broker_leads_is_kept_per_peer() {
        let l = Liveness::new(1);
        l.set_leading(HashMap::from([(2, vec![5, 6]), (3, vec![6])]));
        assert_eq!(l.leading_for(2), vec![5, 6]);
        assert_eq!(l.leading_for(3), vec![6]);
        assert!(l.leading_for(4).is_empty());
    }

    #[test]
    fn the_view_fingerprint_changes_with_what_steering_reads_and_only_then() {
        let l = Liveness::new(1);
        l.set_opening(false);
        let t0 = Instant::now();
        l.heard(2, 10, vec![7, 8], false, t0);
        l.heard(3, 20, vec![9], false, t0);
        let base = l.view(t0).fingerprint;
        // The same word again, later but within the window: the same view.
        let t1 = t0 + Duration::from_millis(250);
        l.heard(2, 10, vec![8, 7], false, t1);
        assert_eq!(l.view(t1).fingerprint, base);
        // A peer leads another set of groups.
        l.heard(3, 20, vec![9, 10], false, t1);
        let led = l.view(t1).fingerprint;
        assert_ne!(led, base);
        // A peer falls silent past the window, or refuses a connection.
        let late = t1 + ALIVE_WINDOW + Duration::from_millis(1);
        l.heard(2, 10, vec![7, 8], false, late);
        assert_ne!(l.view(late).fingerprint, led, "broker 3 went silent");
        let silent = l.view(late).fingerprint;
        l.refused(2);
        assert_ne!(l.view(late).fingerprint, silent);
        // A peer opening its replicas.
        l.heard(3, 21, vec![], true, late);
        assert!(l.is_peer_opening(3, late));
        let opening = l.view(late).fingerprint;
        l.heard(3, 21, vec![], false, late);
        assert!(!l.is_peer_opening(3, late));
        assert_ne!(l.view(late).fingerprint, opening);
    }

    #[test]
    fn a_majority_is_this_broker_and_the_peers_it_hears_and_losing_one_is_announced() {
        use std::collections::BTreeSet;
        let l = Liveness::new(1);
        let t0 = Instant::now();
        let three: BTreeSet<u64> = [1, 2, 3].into();
        let alone: BTreeSet<u64> = [1].into();
        let mut changes = l.subscribe();
        // Peers not heard from yet count during the broker's first window only.
        assert!(l.reaches_majority([&three], t0));
        let later = t0 + ALIVE_WINDOW * 2;
        assert!(!l.reaches_majority([&three], later));
        assert!(l.reaches_majority([&alone], later), "a group of one");
        l.heard(2, 10, vec![], false, later);
        assert!(l.reaches_majority([&three], later));
        // Joint membership: a majority of each config.
        let other: BTreeSet<u64> = [1, 4, 5].into();
        assert!(!l.reaches_majority([&three, &other], later));
        // Broker 2 falls silent: the next view announces the change, and a leader of the
        // three is alone.
        l.view(later);
        changes.mark_unchanged();
        let silent = later + ALIVE_WINDOW + Duration::from_millis(1);
        assert!(!l.reaches_majority([&three], silent));
        l.view(silent);
        assert!(changes.has_changed().unwrap());
    }
}
