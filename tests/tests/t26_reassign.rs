//! Moving a partition to a disjoint set of brokers while a producer (acks=all) and a
//! consumer group run: nothing acknowledged is lost, the group reads nothing twice and
//! its positions never go back, the new replicas hold identical bytes, and the brokers
//! left out delete their copy. Bad reassignments are refused and change nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rafka_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerConfig};
use rafka_tests::cluster::{
    assert_acked_readable, produce_acked, replica_bytes_from, TestCluster, WAIT,
};
use rafka_tests::eventually;
use tonic::Code;

const RECORDS: usize = 6_000;

/// The partition's replicas and the set it moves to, as the cluster reports them.
async fn replicas(admin: &Admin, topic: &str) -> (Vec<u32>, Vec<u32>) {
    let t = admin.describe_topics(&[topic]).await.unwrap();
    let p = &t[0].partitions[0];
    (p.replicas.clone(), p.moving_to.clone())
}

/// A group member reading `topic` until it has read offset `until` (set once known);
/// returns the offsets it read, in order.
async fn read_as_group(bootstrap: String, topic: &'static str, until: Arc<AtomicU64>) -> Vec<u64> {
    let mut consumer = Consumer::connect(
        &bootstrap,
        ConsumerConfig {
            group_id: Some("movers".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut offsets: Vec<u64> = Vec::new();
    let start = std::time::Instant::now();
    while offsets
        .last()
        .is_none_or(|&o| o < until.load(Ordering::SeqCst))
    {
        assert!(
            start.elapsed() < WAIT,
            "the group read {} records",
            offsets.len()
        );
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            offsets.push(r.offset);
        }
    }
    consumer.close().await.unwrap();
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_other_brokers_under_load() {
    let cluster = TestCluster::start(4).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.unwrap();
    admin
        .create_topic("moving", 1, 2, BTreeMap::new())
        .await
        .unwrap();
    let (from, _) = replicas(&admin, "moving").await;
    let to: Vec<u32> = (1..=4).filter(|b| !from.contains(b)).collect();
    assert_eq!(to.len(), 2);

    let until = Arc::new(AtomicU64::new(u64::MAX));
    let reader = tokio::spawn(read_as_group(bootstrap.clone(), "moving", until.clone()));
    let producer = Producer::connect(&bootstrap, ProducerConfig::default())
        .await
        .unwrap();
    let writing = {
        let producer = Arc::new(producer);
        tokio::spawn(async move { produce_acked(&producer, "moving", "r", RECORDS, 20).await })
    };
    // Let some records land first, so the new replicas have a log to catch up on.
    eventually("records before the move", WAIT, || async {
        let p = admin.describe_topics(&["moving"]).await.unwrap();
        p[0].partitions[0].high_watermark > 500
    })
    .await;

    let started = admin.reassign_partition("moving", 0, &to).await.unwrap();
    let recorded = &started.partitions[0];
    assert!(
        recorded.moving_to == to || recorded.replicas == to,
        "the move is recorded"
    );
    eventually("the move to complete", WAIT, || async {
        replicas(&admin, "moving").await == (to.clone(), vec![])
    })
    .await;

    let (acked, failed) = writing.await.unwrap();
    assert_eq!(failed, 0, "every record acknowledged");
    assert_eq!(acked.len(), RECORDS);
    assert_acked_readable(&bootstrap, "moving", &acked).await;

    // The group read each record once, in order, across the move.
    let last = acked.iter().map(|a| a.offset).max().unwrap();
    until.store(last, Ordering::SeqCst);
    let read = reader.await.unwrap();
    assert!(
        read.windows(2).all(|w| w[0] < w[1]),
        "positions only go forward"
    );
    let distinct: BTreeSet<u64> = read.iter().copied().collect();
    assert_eq!(distinct.len(), read.len(), "nothing read twice");
    assert!(
        read.len() as u64 > last,
        "the group read everything it owned"
    );

    // The new replicas hold the same bytes; the old ones are gone, data and all.
    let mut views = Vec::new();
    for &b in &to {
        let r = cluster.replica(b, "moving", 0).await;
        eventually("the replica to commit everything", WAIT, || async {
            r.high_watermark() > last
        })
        .await;
        views.push(replica_bytes_from(&r, 0, last + 1).expect("no retention here"));
    }
    assert_eq!(views[0], views[1], "the new replicas agree byte for byte");
    for &b in &from {
        eventually("the old replica to leave", WAIT, || async {
            cluster.node(b).partition("moving", 0).await.is_none()
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reassignments_are_refused_and_change_nothing() {
    let mut cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.unwrap();
    admin
        .create_topic("t", 1, 2, BTreeMap::new())
        .await
        .unwrap();
    let before = replicas(&admin, "t").await;
    let cases: [(&str, u32, Vec<u32>, Code, &str); 6] = [
        (
            "t",
            0,
            vec![1, 9],
            Code::InvalidArgument,
            "broker 9 is not in the cluster",
        ),
        (
            "t",
            0,
            vec![],
            Code::InvalidArgument,
            "at least one replica",
        ),
        ("t", 0, vec![2, 2], Code::InvalidArgument, "appears twice"),
        ("t", 3, vec![1, 2], Code::InvalidArgument, "no partition 3"),
        ("nope", 0, vec![1, 2], Code::NotFound, "unknown topic"),
        (
            "t",
            0,
            before.0.clone(),
            Code::InvalidArgument,
            "already runs on",
        ),
    ];
    for (topic, partition, set, code, says) in cases {
        let err = admin
            .reassign_partition(topic, partition, &set)
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(code),
            "{topic}-{partition} -> {set:?}: {err}"
        );
        assert!(
            err.to_string().contains(says),
            "{topic}-{partition} -> {set:?}: {err}"
        );
        assert_eq!(
            replicas(&admin, "t").await,
            before,
            "{set:?} changed the partition"
        );
    }

    // A move to a broker that is down waits for it; meanwhile a second move of the
    // partition is refused. Once the broker is back, the move completes.
    let outside = (1..=3).find(|b| !before.0.contains(b)).unwrap();
    cluster.stop(outside).await;
    let target = vec![before.0[0], outside];
    admin.reassign_partition("t", 0, &target).await.unwrap();
    assert_eq!(
        replicas(&admin, "t").await,
        (before.0.clone(), target.clone())
    );
    let err = admin
        .reassign_partition("t", 0, &before.0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(err.to_string().contains("already moving"), "{err}");
    cluster.restart(outside).await;
    eventually("the move to complete", WAIT, || async {
        replicas(&admin, "t").await == (target.clone(), vec![])
    })
    .await;
}

/// A partition of one replica moved to another broker: its only voter, and so its leader,
/// goes away, and the replica left alone (whose Raft ticks are off, as for any group of
/// one) must elect itself, or the partition stays without a leader for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_replica_moves_and_its_new_broker_leads() {
    let cluster = TestCluster::start(2).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.unwrap();
    admin
        .create_topic("alone", 1, 1, BTreeMap::new())
        .await
        .unwrap();
    let (from, _) = replicas(&admin, "alone").await;
    let to: Vec<u32> = (1..=2).filter(|b| !from.contains(b)).collect();
    let producer = Arc::new(
        Producer::connect(&bootstrap, ProducerConfig::default())
            .await
            .unwrap(),
    );
    let writing = {
        let producer = producer.clone();
        tokio::spawn(async move { produce_acked(&producer, "alone", "r", 3_000, 20).await })
    };
    eventually("records before the move", WAIT, || async {
        let p = admin.describe_topics(&["alone"]).await.unwrap();
        p[0].partitions[0].high_watermark > 300
    })
    .await;
    admin.reassign_partition("alone", 0, &to).await.unwrap();
    eventually("the move to complete", WAIT, || async {
        replicas(&admin, "alone").await == (to.clone(), vec![])
    })
    .await;
    let r = cluster.replica(to[0], "alone", 0).await;
    eventually("the new broker to lead", WAIT, || async { r.is_leader() }).await;
    let (mut acked, failed) = writing.await.unwrap();
    assert_eq!(failed, 0, "every record acknowledged");
    let (after, failed) = produce_acked(&producer, "alone", "after", 100, 20).await;
    assert_eq!(failed, 0, "records after the move acknowledged");
    acked.extend(after);
    assert_acked_readable(&bootstrap, "alone", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_factor_changes_under_load() {
    let cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.unwrap();
    admin
        .create_topic("rf", 4, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Arc::new(
        Producer::connect(&bootstrap, ProducerConfig::default())
            .await
            .unwrap(),
    );
    let writing = {
        let producer = producer.clone();
        tokio::spawn(async move { produce_acked(&producer, "rf", "r", 4_000, 20).await })
    };
    eventually("records before the change", WAIT, || async {
        let mut written = 0;
        for id in cluster.running() {
            for p in 0..4 {
                if let Some(r) = cluster.node(id).partition("rf", p).await {
                    written += r.high_watermark();
                }
            }
        }
        written > 400
    })
    .await;

    admin.alter_replication_factor("rf", 3).await.unwrap();
    let t = admin.wait_for_moves("rf").await.unwrap();
    for p in &t.partitions {
        let mut r = p.replicas.clone();
        r.sort();
        assert_eq!(r, [1, 2, 3], "partition {}", p.partition);
    }
    let (acked, failed) = writing.await.unwrap();
    assert_eq!(failed, 0, "every record acknowledged");
    assert_acked_readable(&bootstrap, "rf", &acked).await;
    for p in 0..4 {
        let written = acked.iter().filter(|a| a.partition == p).count() as u64;
        // Every broker holds the partition now, byte for byte the same.
        cluster.converged("rf", p, written).await;
    }

    // Back down to two: each partition keeps its first two replicas.
    let before = admin.describe_topics(&["rf"]).await.unwrap();
    admin.alter_replication_factor("rf", 2).await.unwrap();
    let after = admin.wait_for_moves("rf").await.unwrap();
    for (b, a) in before[0].partitions.iter().zip(&after.partitions) {
        assert_eq!(a.replicas, b.replicas[..2], "partition {}", a.partition);
    }
    for (topic, rf, says) in [
        ("rf", 0, "not between 1 and the 3"),
        ("rf", 4, "not between 1 and the 3"),
        ("rf", 2, "already has replication factor 2"),
        ("nope", 2, "unknown topic"),
    ] {
        let err = admin.alter_replication_factor(topic, rf).await.unwrap_err();
        assert!(err.to_string().contains(says), "{topic} rf {rf}: {err}");
    }
}
