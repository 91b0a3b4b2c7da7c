//! Brokers started with `peers` form a cluster whose partitions replicate through Raft;
//! the client library produces to leaders and reads from leaders or followers.
//!
//! - 100,000 records with acks=all: every replica's log is byte-identical below the
//!   high watermark, and every acknowledged record is at its offset;
//! - a leader cut off from the others cannot commit; the majority elects a leader and
//!   takes writes; after healing the logs converge and nothing acknowledged is lost;
//! - a follower down while writes go on catches up after its restart;
//! - a follower read with `min_offset` never answers from an older state.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use rafka_client::{Admin, Producer, ProducerConfig};
use rafka_proto::batch::{BatchBuilder, BatchHeader, Record};
use rafka_proto::v1::{self, broker_client::BrokerClient};
use rafka_tests::cluster::{assert_acked_readable, produce_acked, Acked, TestCluster, WAIT};
use rafka_tests::eventually;

async fn create(cluster: &TestCluster, topic: &str, partitions: u32) {
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    let t = admin
        .create_topic(topic, partitions, 3, BTreeMap::new())
        .await
        .expect("create topic");
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 3));
}

async fn producer(bootstrap: &str) -> Producer {
    Producer::connect(
        bootstrap,
        ProducerConfig {
            batch_size: 16 << 10,
            ..Default::default()
        },
    )
    .await
    .expect("producer")
}

async fn client(addr: &str) -> BrokerClient<tonic::transport::Channel> {
    BrokerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

fn one_record_batch(value: &[u8]) -> Bytes {
    let mut b = BatchBuilder::new();
    b.append(&Record {
        timestamp: 1,
        key: None,
        value: Some(value),
        headers: &[],
    });
    b.seal()
}

fn produce_request(topic: &str, value: &[u8]) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: topic.into(),
        partitions: vec![v1::PartitionRecords {
            partition: 0,
            records: one_record_batch(value),
        }],
        acks: v1::Acks::All as i32,
    }
}

fn max_offset(acked: &[Acked], partition: u32) -> u64 {
    acked
        .iter()
        .filter(|a| a.partition == partition)
        .map(|a| a.offset + 1)
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_thousand_records_land_identically_on_every_replica() {
    let cluster = TestCluster::start(3).await;
    create(&cluster, "events", 3).await;
    let p = producer(&cluster.bootstrap()).await;
    let (acked, failed) = produce_acked(&p, "events", "r", 100_000, 20_000).await;
    assert_eq!(failed, 0, "no failures without faults");
    assert_eq!(acked.len(), 100_000);
    let mut total = 0;
    for partition in 0..3 {
        let hw = cluster
            .converged("events", partition, max_offset(&acked, partition))
            .await;
        total += hw;
    }
    assert_eq!(total, 100_000, "committed records over all partitions");
    assert_acked_readable(&cluster.bootstrap(), "events", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_leader_cannot_commit_and_the_majority_goes_on() {
    let cluster = TestCluster::start(3).await;
    create(&cluster, "cut", 1).await;
    let p = producer(&cluster.bootstrap()).await;
    let (mut acked, failed) = produce_acked(&p, "cut", "before", 1_000, 500).await;
    assert_eq!(failed, 0);
    let old = cluster.leader_of("cut", 0).await;
    let others: Vec<u32> = cluster
        .running()
        .into_iter()
        .filter(|&b| b != old)
        .collect();
    cluster.node(old).cut_links(&others);
    for &o in &others {
        cluster.node(o).cut_links(&[old]);
    }
    let old_replica = cluster.replica(old, "cut", 0).await;
    let old_hw = old_replica.high_watermark();

    // The old leader takes the write into its log but cannot commit it.
    let mut to_old = client(&cluster.brokers[old as usize - 1].addr).await;
    let mut request = tonic::Request::new(produce_request("cut", b"lost"));
    request.set_timeout(Duration::from_secs(3));
    let stranded = to_old.produce(request).await;
    assert!(
        stranded.is_err(),
        "a leader without a quorum acknowledged a write: {stranded:?}"
    );
    assert_eq!(
        old_replica.high_watermark(),
        old_hw,
        "the old leader committed"
    );

    // The majority elects a leader of its own and takes writes.
    eventually("the majority to elect a leader", WAIT, || async {
        for &o in &others {
            if cluster.replica(o, "cut", 0).await.is_leader() {
                return true;
            }
        }
        false
    })
    .await;
    let majority: Vec<String> = others
        .iter()
        .map(|&o| cluster.brokers[o as usize - 1].addr.clone())
        .collect();
    let p2 = producer(&majority.join(",")).await;
    let (during, failed) = produce_acked(&p2, "cut", "during", 1_000, 500).await;
    assert_eq!(failed, 0, "the majority side takes every write");
    acked.extend(during);

    // Heal: the old leader steps down, drops its uncommitted tail and catches up.
    for b in cluster.running() {
        cluster.node(b).cut_links(&[]);
    }
    let hw = cluster.converged("cut", 0, max_offset(&acked, 0)).await;
    assert_eq!(hw, 2_000, "exactly the acknowledged records are committed");
    assert_acked_readable(&cluster.bootstrap(), "cut", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_down_for_long_catches_up_while_writes_go_on() {
    let mut cluster = TestCluster::start(3).await;
    create(&cluster, "lag", 2).await;
    let p = producer(&cluster.bootstrap()).await;
    let (mut acked, _) = produce_acked(&p, "lag", "a", 2_000, 1_000).await;
    let leader = cluster.leader_of("lag", 0).await;
    let follower = cluster
        .running()
        .into_iter()
        .find(|&b| b != leader)
        .expect("a follower");
    cluster.stop(follower).await;
    let (while_down, failed) = produce_acked(&p, "lag", "b", 30_000, 10_000).await;
    assert_eq!(failed, 0, "two of three replicas commit");
    acked.extend(while_down);

    cluster.restart(follower).await;
    // Writes continue while it catches up.
    let (after, failed) = produce_acked(&p, "lag", "c", 5_000, 1_000).await;
    assert_eq!(failed, 0);
    acked.extend(after);
    for partition in 0..2 {
        cluster
            .converged("lag", partition, max_offset(&acked, partition))
            .await;
    }
    assert_acked_readable(&cluster.bootstrap(), "lag", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follower_reads_with_min_offset_never_answer_from_an_older_state() {
    let cluster = TestCluster::start(3).await;
    create(&cluster, "ryw", 1).await;
    let leader = cluster.leader_of("ryw", 0).await;
    let follower = cluster
        .running()
        .into_iter()
        .find(|&b| b != leader)
        .expect("a follower");
    let mut to_leader = client(&cluster.brokers[leader as usize - 1].addr).await;
    let mut to_follower = client(&cluster.brokers[follower as usize - 1].addr).await;
    for i in 0..200u32 {
        let value = format!("v{i}");
        let resp = to_leader
            .produce(produce_request("ryw", value.as_bytes()))
            .await
            .expect("produce")
            .into_inner();
        let offset = resp.partitions[0].base_offsets[0];
        let data = to_follower
            .fetch(v1::FetchRequest {
                partitions: vec![v1::FetchPartition {
                    topic: "ryw".into(),
                    partition: 0,
                    offset,
                    max_bytes: 0,
                    min_offset: offset + 1,
                }],
                min_bytes: 0,
                max_wait_ms: 10_000,
                max_bytes: 0,
            })
            .await
            .expect("follower fetch")
            .into_inner();
        let p = &data.partitions[0];
        assert!(p.high_watermark > offset, "answered below min_offset");
        let h = BatchHeader::parse(&p.records).expect("a batch at the offset");
        assert_eq!(h.base_offset as u64, offset, "the record just written");
    }
    // Far ahead of anything written: a retriable refusal after max_wait, not stale data.
    let err = to_follower
        .fetch(v1::FetchRequest {
            partitions: vec![v1::FetchPartition {
                topic: "ryw".into(),
                partition: 0,
                offset: 0,
                max_bytes: 0,
                min_offset: 1_000_000,
            }],
            min_bytes: 0,
            max_wait_ms: 200,
            max_bytes: 0,
        })
        .await
        .expect_err("the follower has not reached min_offset");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");

    // The consumer reads from followers when asked to.
    let mut consumer = rafka_client::Consumer::connect(
        &cluster.bootstrap(),
        rafka_client::ConsumerConfig {
            prefer_followers: true,
            ..Default::default()
        },
    )
    .await
    .expect("consumer");
    let tp = rafka_client::TopicPartition::new("ryw", 0);
    consumer.assign([tp.clone()]);
    consumer.set_min_offset(&tp, 200);
    let mut seen = HashSet::new();
    let start = std::time::Instant::now();
    while seen.len() < 200 {
        assert!(
            start.elapsed() < WAIT,
            "timed out reading through a follower"
        );
        for r in consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll")
        {
            seen.insert(r.offset);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acks_leader_answers_from_the_leaders_log_and_acks_none_loses_nothing_here() {
    let cluster = TestCluster::start(3).await;
    create(&cluster, "acks", 1).await;
    let bootstrap = cluster.bootstrap();
    let connect = |acks| {
        Producer::connect(
            &bootstrap,
            ProducerConfig {
                acks,
                batch_size: 16 << 10,
                ..Default::default()
            },
        )
    };
    let leader_acks = connect(rafka_client::Acks::Leader).await.expect("producer");
    let (acked, failed) = produce_acked(&leader_acks, "acks", "l", 5_000, 1_000).await;
    assert_eq!(failed, 0);
    let mut offsets: Vec<u64> = acked.iter().map(|a| a.offset).collect();
    offsets.sort();
    assert_eq!(offsets, (0..5_000).collect::<Vec<_>>(), "dense offsets");
    let no_acks = connect(rafka_client::Acks::None).await.expect("producer");
    let (unacked, failed) = produce_acked(&no_acks, "acks", "n", 1_000, 1_000).await;
    assert_eq!(failed, 0);
    assert!(unacked
        .iter()
        .all(|a| a.offset == rafka_client::RecordMetadata::UNKNOWN_OFFSET));
    // Without faults every record commits everywhere.
    assert_eq!(cluster.converged("acks", 0, 6_000).await, 6_000);
    assert_acked_readable(&cluster.bootstrap(), "acks", &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_leaders_log_start_restarts_there_through_a_snapshot() {
    let mut cluster = TestCluster::start_with(3, |c| c.retention_check_interval_ms = 50).await;
    let admin = Admin::connect(&cluster.bootstrap()).await.expect("admin");
    let configs = BTreeMap::from([
        ("segment.bytes".to_string(), "65536".to_string()),
        ("retention.bytes".to_string(), "262144".to_string()),
    ]);
    admin
        .create_topic("old", 1, 3, configs)
        .await
        .expect("create");
    let p = producer(&cluster.bootstrap()).await;
    produce_acked(&p, "old", "a", 2_000, 1_000).await;
    let leader = cluster.leader_of("old", 0).await;
    let follower = cluster
        .running()
        .into_iter()
        .find(|&b| b != leader)
        .expect("a follower");
    let behind = cluster
        .replica(follower, "old", 0)
        .await
        .reader()
        .log_end_offset();
    cluster.stop(follower).await;

    // Retention on the others deletes what the stopped follower would need next.
    let (_, failed) = produce_acked(&p, "old", "b", 30_000, 5_000).await;
    assert_eq!(failed, 0);
    let on_leader = cluster.replica(leader, "old", 0).await;
    eventually(
        "the leader's retention to pass the follower's end",
        WAIT,
        || async { on_leader.reader().log_start_offset() > behind },
    )
    .await;

    cluster.restart(follower).await;
    let (after, failed) = produce_acked(&p, "old", "c", 2_000, 1_000).await;
    assert_eq!(failed, 0);
    let hw = cluster.converged("old", 0, max_offset(&after, 0)).await;
    assert!(hw >= 34_000, "every record committed ({hw})");
    let restarted = cluster.replica(follower, "old", 0).await;
    let start = restarted.reader().log_start_offset();
    let leader_start = on_leader.reader().log_start_offset();
    assert!(
        start > behind && start <= leader_start,
        "the follower restarted at a log start of the leader's, keeping every retained \
         record ({behind} < {start} <= {leader_start})"
    );
    assert_acked_readable(&cluster.bootstrap(), "old", &after).await;

    // A broker whose Raft log was purged restarts from its snapshot file.
    drop(on_leader);
    drop(restarted);
    cluster.stop(leader).await;
    cluster.restart(leader).await;
    let (last, failed) = produce_acked(&p, "old", "d", 1_000, 1_000).await;
    assert_eq!(failed, 0);
    let again = cluster.converged("old", 0, max_offset(&last, 0)).await;
    assert!(again >= hw + 1_000);
    assert_acked_readable(&cluster.bootstrap(), "old", &last).await;
}
