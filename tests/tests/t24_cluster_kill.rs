//! kill -9 a partition leader's process mid-stream: a new leader is elected, the producer
//! follows the redirect and goes on, every acknowledged record is readable at the offset
//! it was acknowledged at, and the killed broker restarts, catches up and holds the same
//! bytes as the others, each record once and in the order the (idempotent) producer sent
//! it. kill -9 a consumer group's coordinator: its committed offsets
//! survive, a new coordinator serves the group and consumption goes on.
//!
//! Each broker is a real child process (this test binary re-run as `broker_child`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rafka_client::{Admin, Producer, ProducerConfig, ProducerRecord};
use rafka_proto::batch::BatchHeader;
use rafka_proto::v1::{self, broker_client::BrokerClient};
use rafka_tests::cluster::{
    assert_acked_readable, free_addresses, peer_list, produce_acked, Acked, WAIT,
};
use rafka_tests::{child_arg, eventually, ChildTest};

use rafka_tests::procs::READY;

/// A broker process: `id|address|data dir|peers`.
#[test]
fn broker_child() {
    rafka_tests::procs::peers_broker_child()
}

struct Brokers {
    addrs: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
    peers: String,
    children: Vec<Option<ChildTest>>,
}

impl Brokers {
    fn start(n: usize) -> Self {
        let addrs = free_addresses(n);
        let peers = peer_list(&addrs);
        let mut b = Self {
            addrs,
            dirs: (0..n).map(|_| tempfile::tempdir().unwrap()).collect(),
            peers,
            children: (0..n).map(|_| None).collect(),
        };
        for id in 1..=n as u32 {
            b.launch(id);
        }
        b
    }

    fn launch(&mut self, id: u32) {
        let i = id as usize - 1;
        let arg = format!(
            "{id}|{}|{}|{}",
            self.addrs[i],
            self.dirs[i].path().display(),
            self.peers
        );
        let mut child = ChildTest::spawn("broker_child", &arg);
        loop {
            match child.next_line() {
                Some(l) if l.contains(READY) => break,
                Some(_) => continue,
                None => panic!("broker {id} exited before it was ready"),
            }
        }
        self.children[i] = Some(child);
    }

    fn kill(&mut self, id: u32) {
        self.children[id as usize - 1]
            .take()
            .expect("running")
            .kill();
    }

    fn bootstrap(&self) -> String {
        self.addrs.join(",")
    }
}

impl Drop for Brokers {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            if let Some(c) = c.take() {
                c.kill();
            }
        }
    }
}

/// The partition's leader as its own broker reports it.
async fn leader_of(admin: &Admin, brokers: &Brokers, topic: &str, partition: u32) -> u32 {
    let found = std::sync::Mutex::new(0);
    eventually("a leader that says so", WAIT, || async {
        for id in 1..=brokers.addrs.len() as u32 {
            if brokers.children[id as usize - 1].is_none() {
                continue;
            }
            if let Ok(m) = admin.metadata_from(id, &[topic]).await {
                if m.topics[0].partitions[partition as usize].leader == id {
                    *found.lock().unwrap() = id;
                    return true;
                }
            }
        }
        false
    })
    .await;
    found.into_inner().unwrap()
}

/// A replica's log bytes below `below`, fetched from broker `addr` (followers serve
/// reads below their own high watermark).
async fn fetch_all(addr: &str, topic: &str, partition: u32, below: u64) -> Vec<u8> {
    let mut client = BrokerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(usize::MAX);
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < below {
        let data = client
            .fetch(v1::FetchRequest {
                partitions: vec![v1::FetchPartition {
                    topic: topic.into(),
                    partition,
                    offset,
                    max_bytes: 1 << 20,
                    min_offset: below,
                }],
                min_bytes: 0,
                max_wait_ms: 10_000,
                max_bytes: 0,
            })
            .await
            .expect("fetch")
            .into_inner();
        let records = &data.partitions[0].records;
        let mut rest = &records[..];
        while !rest.is_empty() {
            let h = BatchHeader::parse(rest).expect("batch");
            if h.base_offset as u64 >= below {
                break;
            }
            offset = offset.max(h.next_offset() as u64);
            out.extend_from_slice(&rest[..h.total_len()]);
            rest = &rest[h.total_len()..];
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_the_leader_mid_stream_and_lose_nothing_acknowledged() {
    if child_arg().is_some() {
        return;
    }
    rafka_tests::init_tracing();
    let mut brokers = Brokers::start(3);
    let admin = Admin::connect(&brokers.bootstrap()).await.expect("admin");
    admin
        .create_topic("kill", 3, 3, BTreeMap::new())
        .await
        .expect("create");
    let producer = Producer::connect(
        &brokers.bootstrap(),
        ProducerConfig {
            batch_size: 16 << 10,
            retries: 30,
            ..Default::default()
        },
    )
    .await
    .expect("producer");
    let (mut acked, failed) = produce_acked(&producer, "kill", "a", 10_000, 1_000).await;
    assert_eq!(failed, 0);

    // Records in flight when the leader of partition 0 dies.
    let victim = leader_of(&admin, &brokers, "kill", 0).await;
    let mut in_flight = Vec::new();
    for i in 0..2_000 {
        let value = format!("b-{i}");
        let r = ProducerRecord::new("kill", value.clone().into_bytes()).partition(i % 3);
        in_flight.push((value, producer.send(r).await.expect("send")));
    }
    let killed_at = Instant::now();
    brokers.kill(victim);

    // The first record written to the dead leader's partition after the kill.
    let first = producer
        .send(ProducerRecord::new("kill", b"c-first".to_vec()).partition(0))
        .await
        .expect("send")
        .await
        .expect("a new leader takes the write");
    let failover = killed_at.elapsed();
    eprintln!(
        "kill -9 of the leader to the first acknowledged produce on its partition: {failover:?}"
    );
    acked.push(Acked {
        partition: first.partition,
        offset: first.offset,
        value: "c-first".into(),
    });
    for (value, delivery) in in_flight {
        // A record in flight at the kill may fail; one acknowledged must be readable.
        if let Ok(m) = delivery.await {
            acked.push(Acked {
                partition: m.partition,
                offset: m.offset,
                value,
            });
        }
    }
    let (after, failed) = produce_acked(&producer, "kill", "d", 10_000, 1_000).await;
    assert_eq!(failed, 0, "the surviving majority takes every write");
    acked.extend(after);
    assert_acked_readable(&brokers.bootstrap(), "kill", &acked).await;

    // The killed broker restarts, catches up and holds the same bytes.
    brokers.launch(victim);
    let agreed = std::sync::Mutex::new(Vec::new());
    eventually("the restarted broker to catch up", WAIT, || async {
        let mut marks = Vec::new();
        for id in 1..=3 {
            let m = admin.metadata_from(id, &["kill"]).await;
            marks.push(m.map_or_else(
                |_| vec![u64::MAX; 3],
                |m| {
                    m.topics[0]
                        .partitions
                        .iter()
                        .map(|p| p.high_watermark)
                        .collect::<Vec<u64>>()
                },
            ));
        }
        let same = marks.windows(2).all(|w| w[0] == w[1]);
        *agreed.lock().unwrap() = marks;
        same
    })
    .await;
    let marks = agreed.into_inner().unwrap();
    let mut seen = std::collections::HashSet::new();
    for partition in 0..3u32 {
        let hw = marks[0][partition as usize];
        let reference = fetch_all(&brokers.addrs[0], "kill", partition, hw).await;
        for addr in &brokers.addrs[1..] {
            assert!(
                fetch_all(addr, "kill", partition, hw).await == reference,
                "kill-{partition}: replica at {addr} differs below {hw}"
            );
        }
        // The idempotent producer (the default) retried through the kill: every record
        // is stored once, and each partition holds its records in the order sent.
        let values = values_of(&reference);
        let mut last = None;
        for v in values {
            assert!(seen.insert(v.clone()), "kill-{partition}: {v} stored twice");
            let (prefix, i) = v.split_once('-').expect("prefix-index");
            let rank = ["a", "b", "c", "d"].iter().position(|p| *p == prefix);
            let key = (rank.expect("a known prefix"), i.parse::<u64>().unwrap_or(0));
            assert!(
                last < Some(key),
                "kill-{partition}: {v} after {last:?}: out of the order sent"
            );
            last = Some(key);
        }
    }
    for a in &acked {
        assert!(
            seen.contains(&a.value),
            "{} acknowledged and stored",
            a.value
        );
    }
}

/// The record values of back-to-back uncompressed batches.
fn values_of(batches: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = batches;
    while !rest.is_empty() {
        let (batch, len) = rafka_proto::batch::RecordBatch::parse_prefix(rest).expect("batch");
        for r in batch.records() {
            let value = r.expect("record").value.expect("a value");
            out.push(String::from_utf8(value.to_vec()).expect("utf-8"));
        }
        rest = &rest[len..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_the_group_coordinator_and_resume_from_the_committed_offsets() {
    use rafka_client::{Consumer, ConsumerConfig, TopicPartition};
    use rafka_proto::v1::group_client::GroupClient;

    if child_arg().is_some() {
        return;
    }
    let mut brokers = Brokers::start(3);
    let admin = Admin::connect(&brokers.bootstrap()).await.expect("admin");
    admin
        .create_topic("work", 6, 3, BTreeMap::new())
        .await
        .expect("create");
    let producer = Producer::connect(&brokers.bootstrap(), ProducerConfig::default())
        .await
        .expect("producer");
    let (acked, failed) = produce_acked(&producer, "work", "w", 3_000, 1_000).await;
    assert_eq!(failed, 0);
    let config = ConsumerConfig {
        group_id: Some("crew".into()),
        auto_commit_interval: None,
        ..Default::default()
    };
    let mut consumer = Consumer::connect(&brokers.bootstrap(), config.clone())
        .await
        .expect("consumer");
    consumer.subscribe(&["work"]).expect("subscribe");
    let mut first = 0;
    let start = Instant::now();
    while first < 1_000 {
        assert!(start.elapsed() < WAIT, "timed out consuming");
        first += consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll")
            .len();
    }
    consumer.commit().await.expect("commit");
    let parts: Vec<TopicPartition> = (0..6).map(|p| TopicPartition::new("work", p)).collect();
    let committed = consumer.committed(&parts).await.expect("committed");
    assert_eq!(committed.values().sum::<u64>() as usize, first);

    let mut g = GroupClient::connect(format!("http://{}", brokers.addrs[0]))
        .await
        .expect("connect");
    let coordinator = g
        .find_coordinator(v1::FindCoordinatorRequest {
            group: "crew".into(),
        })
        .await
        .expect("find coordinator")
        .into_inner()
        .node_id;
    drop(consumer);
    brokers.kill(coordinator);

    // A new consumer of the group resumes at the commits and reads exactly the rest.
    let mut resumed = Consumer::connect(&brokers.bootstrap(), config)
        .await
        .expect("consumer");
    resumed.subscribe(&["work"]).expect("subscribe");
    let mut rest = Vec::new();
    let start = Instant::now();
    while rest.len() < acked.len() - first {
        assert!(
            start.elapsed() < WAIT,
            "timed out after {} records",
            rest.len()
        );
        rest.extend(
            resumed
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    assert_eq!(rest.len(), acked.len() - first, "nothing read twice");
    for r in &rest {
        let tp = TopicPartition::new("work", r.partition);
        assert!(r.offset >= committed.get(&tp).copied().unwrap_or(0));
    }
    resumed
        .commit()
        .await
        .expect("commit to the new coordinator");
    let after = resumed.committed(&parts).await.expect("committed");
    assert_eq!(after.values().sum::<u64>() as usize, acked.len());
}
