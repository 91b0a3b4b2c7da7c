//! A data directory written by the previous release's single-broker engine (the fixture
//! in tests/fixtures, made by that release's binary) is migrated in place on first start:
//! every record at its offset, the retention-trimmed log start, the group's committed
//! offsets, and writes going on from the old log ends; a restart finds it migrated.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rafka_client::partitioner::partition_for_key;
use rafka_client::{
    Admin, Consumer, ConsumerConfig, ConsumerRecord, Producer, ProducerConfig, ProducerRecord,
    SeekTo, TopicPartition,
};
use rafka_tests::TestBroker;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/single-broker-0.1.tar.gz"
);

/// The fixture's `data/` unpacked into a new temporary directory.
fn unpack() -> Arc<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .arg("xzf")
        .arg(FIXTURE)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "tar failed");
    Arc::new(dir)
}

/// A broker on `root/data`.
async fn broker_on(root: &Arc<tempfile::TempDir>) -> TestBroker {
    let data = root.path().join("data");
    TestBroker::start_with(root.clone(), move |c| c.data_dir = data).await
}

/// Every record of `topic`/`partition` from its log start.
async fn read_all(addr: &str, topic: &str, partition: u32, n: usize) -> Vec<ConsumerRecord> {
    let mut consumer = Consumer::connect(addr, ConsumerConfig::default())
        .await
        .unwrap();
    let tp = TopicPartition::new(topic, partition);
    consumer.assign([tp.clone()]);
    consumer.seek(&tp, SeekTo::Earliest).await.unwrap();
    let mut out = Vec::new();
    let start = std::time::Instant::now();
    while out.len() < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{topic}-{partition}: {} of {n}",
            out.len()
        );
        out.extend(consumer.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

fn text(b: &Option<bytes::Bytes>) -> String {
    String::from_utf8(b.clone().unwrap().to_vec()).unwrap()
}

async fn check_migrated(addr: &str) {
    let admin = Admin::connect(addr).await.unwrap();
    let topics: BTreeMap<String, Vec<(u64, u64)>> = admin
        .describe_topics(&[])
        .await
        .unwrap()
        .into_iter()
        .map(|t| {
            let offsets = t
                .partitions
                .iter()
                .map(|p| (p.log_start_offset, p.high_watermark))
                .collect();
            (t.name, offsets)
        })
        .collect();
    assert_eq!(topics["orders"], [(0, 997), (0, 1002), (0, 1001)]);
    assert_eq!(topics["trimmed"], [(800, 2000)]);
    assert_eq!(topics["__consumer_offsets"].len(), 8);

    let mut values = Vec::new();
    for (p, n) in [997, 1002, 1001].into_iter().enumerate() {
        let records = read_all(addr, "orders", p as u32, n).await;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "orders-{p}: dense offsets");
            let key = r.key.clone().unwrap();
            assert_eq!(partition_for_key(&key, 3), p as u32, "{key:?} stays put");
            let value = text(&r.value);
            assert_eq!(format!("key-{}", &value["value-".len()..]), text(&r.key));
            values.push(value);
        }
    }
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 3000);
    let trimmed = read_all(addr, "trimmed", 0, 1200).await;
    for r in &trimmed {
        assert_eq!(text(&r.value), format!("record-{}", r.offset + 1));
    }
    assert_eq!(trimmed[0].offset, 800);

    let mut group = Consumer::connect(
        addr,
        ConsumerConfig {
            group_id: Some("billing".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let committed = group
        .committed(&[
            TopicPartition::new("orders", 0),
            TopicPartition::new("orders", 1),
        ])
        .await
        .unwrap();
    assert_eq!(committed[&TopicPartition::new("orders", 0)], 997);
    assert_eq!(committed[&TopicPartition::new("orders", 1)], 503);
}

fn exists(root: &Path, name: &str) -> bool {
    root.join("data").join(name).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_broker_directory_of_the_previous_release_is_migrated_in_place() {
    let root = unpack();
    assert!(exists(root.path(), "topics"));
    let broker = broker_on(&root).await;
    assert!(!exists(root.path(), "topics"), "marked migrated");
    assert!(exists(root.path(), "topics.migrated"));
    check_migrated(&broker.addr).await;

    // Writes go on where the old logs end.
    let producer = Producer::connect(&broker.addr, ProducerConfig::default())
        .await
        .unwrap();
    let at_orders = producer
        .send(ProducerRecord::new("orders", "after").partition(0))
        .await
        .unwrap();
    let at_trimmed = producer
        .send(ProducerRecord::new("trimmed", "record-2001"))
        .await
        .unwrap();
    producer.flush().await;
    assert_eq!(at_orders.await.unwrap().offset, 997);
    assert_eq!(at_trimmed.await.unwrap().offset, 2000);

    // A restart opens it as this release's own directory.
    broker.stop().await;
    let broker = broker_on(&root).await;
    check_migrated_after_writes(&broker.addr).await;
}

async fn check_migrated_after_writes(addr: &str) {
    let orders = read_all(addr, "orders", 0, 998).await;
    assert_eq!(text(&orders[997].value), "after");
    let trimmed = read_all(addr, "trimmed", 0, 1201).await;
    assert_eq!(trimmed.last().unwrap().offset, 2000);
}
