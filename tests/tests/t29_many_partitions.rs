//! A thousand partitions with three replicas each on three brokers (3,000 Raft groups in
//! one process): every partition takes a write, all three brokers restart, and every
//! partition takes a write again, after its first. Idle groups are quiescent and
//! elections after the restart are staggered; without that this test did not finish its
//! first round in minutes.

use std::collections::BTreeMap;
use std::time::Duration;

use rafka_client::{Acks, Admin, Producer, ProducerConfig, ProducerRecord};
use rafka_tests::cluster::TestCluster;

const PARTITIONS: u32 = 1000;
/// How long one round of writes may take (a deadline, not an expectation).
const ROUND: Duration = Duration::from_secs(180);

/// Writes one record to every partition; returns each partition's offset.
async fn write_everywhere(bootstrap: &str, topic: &str, round: u32) -> Vec<u64> {
    let producer = Producer::connect(
        bootstrap,
        ProducerConfig {
            acks: Acks::All,
            linger: Duration::ZERO,
            delivery_timeout: ROUND,
            ..Default::default()
        },
    )
    .await
    .expect("producer");
    let mut acks = Vec::new();
    for p in 0..PARTITIONS {
        let mut record = ProducerRecord::new(topic, format!("round {round}").into_bytes());
        record.partition = Some(p);
        acks.push(producer.send(record).await.expect("queued"));
    }
    let mut offsets = Vec::new();
    for (p, ack) in acks.into_iter().enumerate() {
        let meta = ack
            .await
            .unwrap_or_else(|e| panic!("round {round}: partition {p} took no write: {e}"));
        assert_eq!(meta.partition, p as u32);
        offsets.push(meta.offset);
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_replicated_partitions_take_writes_after_a_restart_of_every_broker() {
    let mut cluster = TestCluster::start(3).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    admin
        .create_topic("many", PARTITIONS, 3, BTreeMap::new())
        .await
        .expect("create topic");
    // Not necessarily at offset 0: under this load a write can time out after its
    // append and be retried (at-least-once until the producer is idempotent), and a
    // partition then holds it twice.
    let first = write_everywhere(&cluster.bootstrap(), "many", 1).await;

    for id in 1..=3 {
        cluster.stop(id).await;
    }
    for id in 1..=3 {
        cluster.restart(id).await;
    }
    let second = write_everywhere(&cluster.bootstrap(), "many", 2).await;
    for (p, (a, b)) in first.iter().zip(&second).enumerate() {
        assert!(
            b > a,
            "partition {p}: the write after the restart landed at {b}, not after the first at {a}"
        );
    }
}
