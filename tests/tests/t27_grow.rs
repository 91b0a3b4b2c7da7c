//! From one broker to three, online: a single broker with 100,000 acknowledged records
//! in 4 partitions; two brokers join it; the topic's replication factor goes to 3 while
//! a producer writes at a fixed rate; every replica holds the same bytes; a joined broker
//! restarts without `--join` and takes its place again; then the first broker is killed
//! (kill -9) and every acknowledged record is still readable at its offset. A broker
//! joining with an id in use is refused.
//!
//! Each broker is a real child process (this test binary re-run as `broker_child`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rafka_client::{Admin, Producer, ProducerConfig};
use rafka_proto::v1::{self, broker_client::BrokerClient};
use rafka_tests::cluster::{assert_acked_readable, produce_acked, produce_at_rate, WAIT};
use rafka_tests::eventually;
use rafka_tests::procs::{Brokers, READY};

const PARTITIONS: u32 = 4;

/// A broker process (see `rafka_tests::procs`).
#[test]
fn broker_child() {
    rafka_tests::procs::broker_child()
}

/// The bytes of `partition` in `[0, below)` as broker `addr` serves them (a follower
/// serves what it has committed).
async fn bytes_on(addr: &str, partition: u32, below: u64) -> Vec<u8> {
    let mut client = BrokerClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < below {
        let resp = client
            .fetch(v1::FetchRequest {
                partitions: vec![v1::FetchPartition {
                    topic: "grow".into(),
                    partition,
                    offset,
                    max_bytes: 4 << 20,
                    min_offset: below,
                }],
                max_wait_ms: 5_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut rest = &resp.partitions[0].records[..];
        while let Ok((h, n)) = rafka_proto::batch::verify_stored(rest) {
            if h.base_offset as u64 >= below {
                break;
            }
            out.extend_from_slice(&rest[..n]);
            offset = h.next_offset() as u64;
            rest = &rest[n..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_grows_to_three_and_survives_the_first_one_dying() {
    let mut brokers = Brokers::new(3);
    assert!(brokers.launch(1, "").contains(READY));
    let first = brokers.addr(1).to_string();
    let admin = Admin::connect(&first).await.unwrap();
    admin
        .create_topic("grow", PARTITIONS, 1, BTreeMap::new())
        .await
        .unwrap();
    let producer = Arc::new(
        Producer::connect(&first, ProducerConfig::default())
            .await
            .unwrap(),
    );
    let (mut acked, failed) = produce_acked(&producer, "grow", "early", 100_000, 5_000).await;
    assert_eq!(failed, 0);

    // Two brokers join through the first.
    for id in [2, 3] {
        let line = brokers.launch(id, &first);
        assert!(line.contains(READY), "broker {id} joining: {line}");
    }
    eventually("three brokers and three metadata voters", WAIT, || async {
        admin
            .metadata(&[])
            .await
            .is_ok_and(|m| m.brokers.len() == 3 && m.metadata_voters.len() == 3)
    })
    .await;
    // An id in use is refused, and the cluster stays as it is.
    let mut impostor = Brokers::new(3);
    let refused = impostor.launch(2, &first);
    assert!(refused.contains("broker id 2 is in use"), "{refused}");
    assert_eq!(admin.metadata(&[]).await.unwrap().brokers.len(), 3);

    // Replication factor 3 while a producer writes 500 records/s.
    let stop = Arc::new(AtomicBool::new(false));
    let writing = produce_at_rate(
        producer.clone(),
        "grow",
        "during",
        Duration::from_millis(2),
        stop.clone(),
    );
    admin.alter_replication_factor("grow", 3).await.unwrap();
    let t = admin.wait_for_moves("grow").await.unwrap();
    stop.store(true, Ordering::SeqCst);
    acked.extend(writing.await.unwrap());
    for p in &t.partitions {
        assert_eq!(p.replicas.len(), 3, "partition {}", p.partition);
    }

    // Every replica holds the same bytes up to what was acknowledged.
    for p in 0..PARTITIONS {
        let below = acked
            .iter()
            .filter(|a| a.partition == p)
            .map(|a| a.offset + 1)
            .max()
            .unwrap_or(0);
        let on_first = bytes_on(brokers.addr(1), p, below).await;
        for id in [2, 3] {
            let here = bytes_on(brokers.addr(id), p, below).await;
            assert!(
                here == on_first,
                "partition {p}: broker {id} differs from broker 1"
            );
        }
    }

    // A joined broker restarts from what it learnt, without --join.
    brokers.kill(3);
    assert!(brokers.launch(3, "").contains(READY));
    let others = format!("{},{}", brokers.addr(2), brokers.addr(3));
    eventually("broker 3 to serve again", WAIT, || async {
        Admin::connect(brokers.addr(3)).await.is_ok()
    })
    .await;

    // The first broker dies: everything acknowledged is still there.
    brokers.kill(1);
    let survivor = Admin::connect(&others).await.unwrap();
    eventually("every partition led by a survivor", WAIT, || async {
        survivor.metadata_from(2, &["grow"]).await.is_ok_and(|m| {
            m.topics[0]
                .partitions
                .iter()
                .all(|p| p.leader == 2 || p.leader == 3)
        })
    })
    .await;
    assert_acked_readable(&others, "grow", &acked).await;
}
