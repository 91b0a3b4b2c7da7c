//! Shrinking and evening out a running cluster:
//!
//! - a broker holding leaders is decommissioned from four while a producer (acks=all)
//!   writes: its partitions move to the other three (RF stays 3), it leaves the metadata
//!   group, stops and deletes its data; everything acknowledged stays readable; its
//!   directory and its id are refused afterwards;
//! - refusals that change nothing: an unknown broker, the last broker, a broker whose
//!   partitions no other broker could take;
//! - a rebalance onto a broker that joined: the dry run plans without moving, the run
//!   evens out replicas, and preferred-leader election evens out leaders.
//!
//! Each broker is a real child process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rafka_client::{Admin, ClientError, Producer, ProducerConfig};
use rafka_tests::cluster::{assert_acked_readable, produce_acked, produce_at_rate, WAIT};
use rafka_tests::eventually;
use rafka_tests::procs::{Brokers, READY};

/// A broker process (see `rafka_tests::procs`).
#[test]
fn broker_child() {
    rafka_tests::procs::broker_child()
}

/// Starts broker 1 alone and brokers 2..=n joining it; waits until all are registered.
async fn grow(brokers: &mut Brokers, n: u32) -> Admin {
    assert!(brokers.launch(1, "").contains(READY));
    let first = brokers.addr(1).to_string();
    for id in 2..=n {
        let line = brokers.launch(id, &first);
        assert!(line.contains(READY), "broker {id} joining: {line}");
    }
    let admin = Admin::connect(&first).await.unwrap();
    eventually("every broker registered", WAIT, || async {
        admin
            .metadata(&[])
            .await
            .is_ok_and(|m| m.brokers.len() == n as usize)
    })
    .await;
    admin
}

fn refused(r: Result<impl std::fmt::Debug, ClientError>, naming: &str) {
    match r {
        Err(ClientError::Broker { code, message }) => {
            assert_eq!(code, tonic::Code::InvalidArgument, "{message}");
            assert!(
                message.contains(naming),
                "{message:?} should name {naming:?}"
            );
        }
        other => panic!("expected a refusal naming {naming:?}, got {other:?}"),
    }
}

/// Partitions each broker leads, as the leaders themselves say.
async fn leaders(admin: &Admin, topic: &str, brokers: &[u32]) -> BTreeMap<u32, usize> {
    let mut led = BTreeMap::new();
    for &b in brokers {
        let m = admin.metadata_from(b, &[topic]).await.unwrap();
        let mine = m.topics[0]
            .partitions
            .iter()
            .filter(|p| p.leader == b)
            .count();
        led.insert(b, mine);
    }
    led
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_holding_leaders_is_drained_and_removed() {
    let mut brokers = Brokers::new(4);
    let admin = grow(&mut brokers, 4).await;
    admin
        .create_topic("shrink", 4, 3, BTreeMap::new())
        .await
        .unwrap();
    let all = (1..=4)
        .map(|b| brokers.addr(b))
        .collect::<Vec<_>>()
        .join(",");
    let producer = Arc::new(
        Producer::connect(&all, ProducerConfig::default())
            .await
            .unwrap(),
    );
    let (mut acked, failed) = produce_acked(&producer, "shrink", "early", 20_000, 2_000).await;
    assert_eq!(failed, 0);

    refused(
        admin.decommission_broker(9).await,
        "broker 9 is not in the cluster",
    );

    // The broker leading partition 0 goes, while a producer writes 500 records/s.
    let victim = std::sync::Mutex::new(0);
    eventually("partition 0 led", WAIT, || async {
        for b in 1..=4 {
            let m = admin.metadata_from(b, &["shrink"]).await.unwrap();
            if m.topics[0].partitions[0].leader == b {
                *victim.lock().unwrap() = b;
                return true;
            }
        }
        false
    })
    .await;
    let victim = victim.into_inner().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writing = produce_at_rate(
        producer.clone(),
        "shrink",
        "during",
        Duration::from_millis(2),
        stop.clone(),
    );
    let moves = admin.decommission_broker(victim).await.unwrap();
    assert!(!moves.is_empty());
    for m in &moves {
        assert!(m.from.contains(&victim) && !m.to.contains(&victim), "{m:?}");
        assert_eq!(m.to.len(), 3, "{m:?}");
    }
    refused(
        admin.decommission_broker(victim).await,
        "already being decommissioned",
    );
    let lines = brokers.exited(victim).await;
    assert!(
        lines.iter().any(|l| l.contains("broker stopped")),
        "broker {victim} ended: {lines:?}"
    );
    let others: Vec<u32> = (1..=4).filter(|&b| b != victim).collect();
    let bootstrap = others
        .iter()
        .map(|&b| brokers.addr(b))
        .collect::<Vec<_>>()
        .join(",");
    let admin = Admin::connect(&bootstrap).await.unwrap();
    admin.wait_for_decommission(victim).await.unwrap();
    stop.store(true, Ordering::SeqCst);
    acked.extend(writing.await.unwrap());

    // Three brokers, three metadata voters, every partition on three of them.
    let meta = admin.metadata(&["shrink"]).await.unwrap();
    let ids: BTreeSet<u32> = meta.brokers.iter().map(|b| b.node_id).collect();
    assert_eq!(ids, others.iter().copied().collect());
    eventually("three metadata voters without the broker", WAIT, || async {
        admin
            .metadata(&[])
            .await
            .is_ok_and(|m| m.metadata_voters.len() == 3 && !m.metadata_voters.contains(&victim))
    })
    .await;
    for p in &meta.topics[0].partitions {
        assert_eq!(p.replicas.len(), 3, "{p:?}");
        assert!(
            !p.replicas.contains(&victim) && p.moving_to.is_empty(),
            "{p:?}"
        );
    }
    // Its data is gone; its directory and its id are refused.
    let left: BTreeSet<String> = std::fs::read_dir(brokers.dir(victim))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        BTreeSet::from([".lock".into(), "decommissioned".into()])
    );
    let again = brokers.launch(victim, "");
    assert!(again.contains("was decommissioned"), "{again}");
    let mut fresh = Brokers::new(4);
    let rejoin = fresh.launch(victim, brokers.addr(others[0]));
    drop(fresh);
    assert!(
        rejoin.contains("belonged to a decommissioned broker"),
        "{rejoin}"
    );

    // RF 3 on three brokers: none of them can go.
    let before = admin.metadata(&["shrink"]).await.unwrap().topics;
    refused(
        admin.decommission_broker(others[0]).await,
        "with 2 of its 3 replicas",
    );
    assert_eq!(admin.metadata(&["shrink"]).await.unwrap().topics, before);
    assert_acked_readable(&bootstrap, "shrink", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_broker_cannot_be_decommissioned() {
    let mut brokers = Brokers::new(1);
    let admin = grow(&mut brokers, 1).await;
    refused(admin.decommission_broker(1).await, "last broker");
    assert_eq!(admin.metadata(&[]).await.unwrap().brokers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_spreads_replicas_and_leaders_onto_a_new_broker() {
    let mut brokers = Brokers::new(4);
    let admin = grow(&mut brokers, 3).await;
    admin
        .create_topic("even", 6, 2, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::connect(brokers.addr(1), ProducerConfig::default())
        .await
        .unwrap();
    let (acked, failed) = produce_acked(&producer, "even", "r", 6_000, 1_000).await;
    assert_eq!(failed, 0);
    let first = brokers.addr(1).to_string();
    assert!(brokers.launch(4, &first).contains(READY));
    eventually("broker 4 registered", WAIT, || async {
        admin
            .metadata(&[])
            .await
            .is_ok_and(|m| m.brokers.len() == 4)
    })
    .await;

    let before = admin.describe_topics(&["even"]).await.unwrap();
    let plan = admin.rebalance(true).await.unwrap();
    assert!(plan.iter().any(|m| m.to.contains(&4)), "{plan:?}");
    assert_eq!(
        admin.describe_topics(&["even"]).await.unwrap(),
        before,
        "a dry run moves nothing"
    );

    let ran = admin.rebalance(false).await.unwrap();
    assert_eq!(ran, plan);
    admin.wait_for_all_moves().await.unwrap();
    let t = admin.wait_for_moves("even").await.unwrap();
    let mut replicas: BTreeMap<u32, usize> = BTreeMap::new();
    for p in &t.partitions {
        for &b in &p.replicas {
            *replicas.entry(b).or_default() += 1;
        }
    }
    assert_eq!(replicas, BTreeMap::from([(1, 3), (2, 3), (3, 3), (4, 3)]));
    let (elected, failed) = admin.elect_preferred_leaders().await.unwrap();
    assert!(failed.is_empty(), "{failed:?} (elected {elected:?})");
    let led = leaders(&admin, "even", &[1, 2, 3, 4]).await;
    let (lo, hi) = (led.values().min().unwrap(), led.values().max().unwrap());
    assert!(hi - lo <= 1 && *lo >= 1, "leaders per broker: {led:?}");
    for p in &t.partitions {
        let m = admin.metadata_from(p.replicas[0], &["even"]).await.unwrap();
        assert_eq!(
            m.topics[0].partitions[p.partition as usize].leader,
            p.replicas[0]
        );
    }
    assert!(
        admin.rebalance(true).await.unwrap().is_empty(),
        "balanced now"
    );
    assert_acked_readable(brokers.addr(4), "even", &acked).await;
}
