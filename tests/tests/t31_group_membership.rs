//! Consumer group membership on a 3-broker cluster: each partition owned by exactly one
//! member at any time, every record consumed, a joining member takes only its share
//! (members keeping their partitions see no revoke), a leaving member's partitions move,
//! and a silent member is evicted and its late commit refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rafka_client::{
    Admin, Consumer, ConsumerConfig, Producer, ProducerRecord, RebalanceListener, TopicPartition,
};
use rafka_tests::cluster::{TestCluster, WAIT};
use rafka_tests::eventually;

const PARTITIONS: u32 = 12;

/// Who owns each partition now, as the members' callbacks say; asserts exclusivity.
#[derive(Default)]
struct Ledger {
    owner: HashMap<TopicPartition, usize>,
    revoked: HashMap<usize, Vec<TopicPartition>>,
}

struct Recorder {
    me: usize,
    ledger: Arc<Mutex<Ledger>>,
}

impl RebalanceListener for Recorder {
    fn on_assigned(&mut self, partitions: &[TopicPartition]) {
        let mut l = self.ledger.lock().unwrap();
        for tp in partitions {
            let before = l.owner.insert(tp.clone(), self.me);
            assert!(
                before.is_none(),
                "{tp} given to {} while {before:?} owns it",
                self.me
            );
        }
    }

    fn on_revoked(&mut self, partitions: &[TopicPartition]) {
        let mut l = self.ledger.lock().unwrap();
        for tp in partitions {
            assert_eq!(
                l.owner.remove(tp),
                Some(self.me),
                "{tp} revoked from a non-owner"
            );
            l.revoked.entry(self.me).or_default().push(tp.clone());
        }
    }
}

type Seen = Arc<Mutex<HashSet<(u32, u64)>>>;

/// A member polling in its own task until told to stop.
struct Member {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Consumer>,
}

async fn member(bootstrap: &str, me: usize, ledger: &Arc<Mutex<Ledger>>, seen: &Seen) -> Member {
    let mut c = Consumer::connect(
        bootstrap,
        ConsumerConfig {
            group_id: Some("workers".into()),
            auto_commit_interval: Some(Duration::from_millis(200)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.subscribe(&["jobs"]).unwrap();
    c.set_rebalance_listener(Recorder {
        me,
        ledger: ledger.clone(),
    });
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let seen = seen.clone();
    let task = tokio::spawn(async move {
        while !*stopped.borrow_and_update() {
            for r in c.poll(Duration::from_millis(100)).await.expect("poll") {
                seen.lock().unwrap().insert((r.partition, r.offset));
            }
        }
        c
    });
    Member { stop, task }
}

impl Member {
    async fn stop(self) -> Consumer {
        self.stop.send(true).unwrap();
        self.task.await.expect("member task")
    }
}

/// Three brokers and the topic `jobs` (RF=3); the cluster and its bootstrap list.
async fn cluster_with_jobs() -> (TestCluster, String) {
    let cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    Admin::connect(&bootstrap)
        .await
        .unwrap()
        .create_topic("jobs", PARTITIONS, 3, BTreeMap::new())
        .await
        .unwrap();
    (cluster, bootstrap)
}

async fn produce(bootstrap: &str, count: u32) -> u32 {
    let p = Producer::connect(bootstrap, Default::default())
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 0..count {
        let r = ProducerRecord::new("jobs", format!("j{i}").into_bytes()).partition(i % PARTITIONS);
        acks.push(p.send(r).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
    count
}

async fn all_consumed(seen: &Seen, total: u64) {
    eventually(&format!("{total} records consumed"), WAIT, || async {
        seen.lock().unwrap().len() as u64 >= total
    })
    .await;
    assert_eq!(seen.lock().unwrap().len() as u64, total);
}

async fn owners(ledger: &Arc<Mutex<Ledger>>, members: usize, each_at_least: usize) {
    eventually("the assignment to settle", WAIT, || async {
        let l = ledger.lock().unwrap();
        let mut per: BTreeMap<usize, usize> = BTreeMap::new();
        for m in l.owner.values() {
            *per.entry(*m).or_default() += 1;
        }
        l.owner.len() == PARTITIONS as usize
            && per.len() == members
            && per.values().all(|&n| n >= each_at_least)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_share_partitions_and_a_joiner_moves_only_its_share() {
    // The cluster runs until it is dropped at the end of the test.
    let (_cluster, bootstrap) = cluster_with_jobs().await;
    let mut total = produce(&bootstrap, 1_200).await as u64;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let seen: Seen = Arc::default();
    let mut members = Vec::new();
    for me in 0..3 {
        members.push(member(&bootstrap, me, &ledger, &seen).await);
    }
    owners(&ledger, 3, 4).await;
    all_consumed(&seen, total).await;

    // A fourth member: each of the three gives up exactly one partition, and only that.
    let kept: HashMap<usize, Vec<TopicPartition>> = {
        let mut l = ledger.lock().unwrap();
        l.revoked.clear();
        let mut kept: HashMap<usize, Vec<TopicPartition>> = HashMap::new();
        for (tp, m) in &l.owner {
            kept.entry(*m).or_default().push(tp.clone());
        }
        kept
    };
    members.push(member(&bootstrap, 3, &ledger, &seen).await);
    total += produce(&bootstrap, 1_200).await as u64;
    owners(&ledger, 4, 3).await;
    {
        let l = ledger.lock().unwrap();
        for me in 0..3 {
            let revoked = l.revoked.get(&me).cloned().unwrap_or_default();
            assert_eq!(revoked.len(), 1, "member {me} gave up {revoked:?}");
            assert!(kept[&me].contains(&revoked[0]));
            for tp in &kept[&me] {
                if *tp != revoked[0] {
                    assert_eq!(l.owner.get(tp), Some(&me), "member {me} kept {tp}");
                }
            }
        }
    }
    all_consumed(&seen, total).await;

    // A member leaves: its partitions move to the others and nothing is skipped.
    let mut leaving = members.remove(0).stop().await;
    leaving.close().await.unwrap();
    {
        // Closing is not a rebalance callback: clear its entries by hand.
        let mut l = ledger.lock().unwrap();
        l.owner.retain(|_, m| *m != 0);
    }
    total += produce(&bootstrap, 1_200).await as u64;
    owners(&ledger, 3, 4).await;
    all_consumed(&seen, total).await;
    for m in members {
        m.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_member_is_evicted_and_its_late_commit_refused() {
    // The cluster runs until it is dropped at the end of the test.
    let (_cluster, bootstrap) = cluster_with_jobs().await;
    let total = produce(&bootstrap, 600).await as u64;
    let config = ConsumerConfig {
        group_id: Some("workers".into()),
        session_timeout: Duration::from_millis(1_500),
        auto_commit_interval: None,
        ..Default::default()
    };
    let mut silent = Consumer::connect(&bootstrap, config.clone()).await.unwrap();
    silent.subscribe(&["jobs"]).unwrap();
    // Poll until it owns partitions (and has read something of one).
    let mut mine = Vec::new();
    let start = std::time::Instant::now();
    while mine.is_empty() {
        assert!(start.elapsed() < WAIT, "the first member got no records");
        mine.extend(silent.poll(Duration::from_millis(100)).await.unwrap());
    }
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let seen: Seen = Arc::default();
    let active = member(&bootstrap, 1, &ledger, &seen).await;
    // The silent one stops polling (no heartbeats): it is evicted and the other
    // member ends up with every partition and every record.
    owners(&ledger, 1, PARTITIONS as usize).await;
    all_consumed(&seen, total).await;
    let r = &mine[0];
    let late = BTreeMap::from([(TopicPartition::new("jobs", r.partition), r.offset + 1)]);
    let err = silent
        .commit_offsets(&late)
        .await
        .expect_err("a late commit from an evicted member");
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
    assert!(err.to_string().contains("fenced"), "{err}");
    active.stop().await;
}
