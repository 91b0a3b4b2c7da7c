//! Raising a topic's partition count on a running cluster (Kafka's CreatePartitions):
//! the new partitions get the topic's replication factor and leaders, records already
//! written stay at their offsets, and keyed records are routed over the new count.

use std::collections::BTreeMap;

use rafka_client::partitioner::partition_for_key;
use rafka_client::{Admin, Producer, ProducerConfig, ProducerRecord};
use rafka_tests::cluster::{TestCluster, WAIT};
use rafka_tests::eventually;
use tonic::Code;

async fn send_keyed(bootstrap: &str, keys: &[String]) -> Vec<(u32, u64)> {
    let producer = Producer::connect(bootstrap, ProducerConfig::default())
        .await
        .unwrap();
    let mut acks = Vec::new();
    for k in keys {
        acks.push(
            producer
                .send(ProducerRecord::new("grow", k.clone()).key(k.clone()))
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    let mut out = Vec::new();
    for a in acks {
        let m = a.await.unwrap();
        out.push((m.partition, m.offset));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_added_to_a_running_topic() {
    let cluster = TestCluster::start(3).await;
    let bootstrap = cluster.bootstrap();
    let admin = Admin::connect(&bootstrap).await.unwrap();
    admin
        .create_topic("grow", 2, 3, BTreeMap::new())
        .await
        .unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    let before = send_keyed(&bootstrap, &keys).await;
    for (k, (p, _)) in keys.iter().zip(&before) {
        assert_eq!(*p, partition_for_key(k.as_bytes(), 2));
    }

    // A producer that exists before the change.
    let early = Producer::connect(
        &bootstrap,
        ProducerConfig {
            metadata_max_age: std::time::Duration::from_millis(100),
            ..ProducerConfig::default()
        },
    )
    .await
    .unwrap();
    early
        .send(ProducerRecord::new("grow", "x").key("key-0"))
        .await
        .unwrap()
        .await
        .unwrap();

    let grown = admin.create_partitions("grow", 5).await.unwrap();
    assert_eq!(grown.partitions.len(), 5);
    for p in &grown.partitions {
        assert_eq!(p.replicas.len(), 3, "partition {} keeps RF=3", p.partition);
    }
    // Every broker knows the five partitions, and each has a leader.
    for id in cluster.running() {
        let meta = admin.metadata_from(id, &["grow"]).await.unwrap();
        let t = &meta.topics[0];
        assert_eq!(t.partitions.len(), 5);
    }
    for p in 0..5 {
        cluster.leader_of("grow", p).await;
    }

    // A new producer routes keys over five partitions.
    let after = send_keyed(&bootstrap, &keys).await;
    for (k, (p, _)) in keys.iter().zip(&after) {
        assert_eq!(*p, partition_for_key(k.as_bytes(), 5));
    }
    assert!(
        after.iter().any(|(p, _)| *p >= 2),
        "the new partitions take records"
    );
    // Records of the old partitions continue after the old ones.
    let old_end = |p: u32| before.iter().filter(|(q, _)| *q == p).count() as u64;
    for (p, offset) in &after {
        if *p < 2 {
            assert!(
                *offset >= old_end(*p),
                "partition {p}: offset {offset} reused"
            );
        }
    }

    // The producer that existed before learns the new count from its periodic metadata
    // refresh and routes keys over five partitions too.
    let key = keys
        .iter()
        .find(|k| partition_for_key(k.as_bytes(), 5) >= 2)
        .unwrap()
        .clone();
    eventually("the early producer to use the new partitions", WAIT, || {
        let (early, key) = (&early, key.clone());
        async move {
            let ack = early
                .send(ProducerRecord::new("grow", "late").key(key.clone()))
                .await
                .unwrap();
            ack.await.unwrap().partition == partition_for_key(key.as_bytes(), 5)
        }
    })
    .await;

    // Bad requests change nothing.
    let cases = [
        ("grow", 5, Code::InvalidArgument, "must be larger"),
        ("grow", 3, Code::InvalidArgument, "must be larger"),
        ("nope", 9, Code::NotFound, "unknown topic"),
        ("__consumer_offsets", 20, Code::PermissionDenied, "internal"),
        ("grow", 30_000, Code::InvalidArgument, "max_partitions"),
    ];
    for (topic, n, code, says) in cases {
        let err = admin.create_partitions(topic, n).await.unwrap_err();
        assert_eq!(err.code(), Some(code), "{topic} -> {n}: {err}");
        assert!(err.to_string().contains(says), "{topic} -> {n}: {err}");
    }
    let t = admin.describe_topics(&["grow"]).await.unwrap();
    assert_eq!(t[0].partitions.len(), 5);
}
