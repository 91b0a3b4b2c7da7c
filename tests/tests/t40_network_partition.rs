//! A real network partition: three broker processes, each in a network namespace of its
//! own, and nftables dropping every packet between the leader of a partition and one of
//! its followers (no reset, no error: their connections go silent). Writes go on through
//! the other follower; after the heal the cut follower catches up, and every
//! acknowledged record is readable where it was acknowledged.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rafka_client::{Admin, Producer, ProducerConfig};
use rafka_proto::v1::{self, broker_client::BrokerClient};
use rafka_tests::cluster::{assert_acked_readable, produce_acked, WAIT};
use rafka_tests::netns::NetBrokers;
use rafka_tests::{child_arg, eventually};

/// A broker process: `id|address|data dir|peers`.
#[test]
fn broker_child() {
    rafka_tests::procs::peers_broker_child()
}

/// How long the link stays cut: longer than a link takes to give up a silent stream.
const CUT_FOR: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_cut_off_by_the_network_catches_up_after_the_heal() {
    if child_arg().is_some() {
        return;
    }
    let brokers = NetBrokers::start(3);
    let (net, addrs) = (&brokers.net, &brokers.addrs);
    let bootstrap = brokers.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    admin
        .create_topic("cut", 1, 3, BTreeMap::new())
        .await
        .expect("create");
    let producer = Producer::connect(
        &bootstrap,
        ProducerConfig {
            retries: 30,
            ..Default::default()
        },
    )
    .await
    .expect("producer");
    let (mut acked, failed) = produce_acked(&producer, "cut", "a", 1_000, 100).await;
    assert_eq!(failed, 0);

    let leader = admin.metadata(&["cut"]).await.expect("metadata").topics[0].partitions[0].leader;
    let follower = if leader == 1 { 2 } else { 1 };
    net.cut(leader, follower);
    // Writes go on through the other follower while the cut lasts.
    let cut_at = Instant::now();
    let mut round = 0;
    while cut_at.elapsed() < CUT_FOR {
        let (more, failed) = produce_acked(&producer, "cut", &format!("b{round}"), 100, 100).await;
        assert_eq!(failed, 0, "writes failed while one follower was cut off");
        acked.extend(more);
        round += 1;
    }
    let end = acked.iter().map(|a| a.offset).max().unwrap() + 1;
    net.heal(leader, follower);
    let healed = Instant::now();

    // The cut follower's high watermark reaches the last acknowledged write.
    let addr = &addrs[follower as usize - 1];
    eventually("the cut follower caught up", WAIT, || async {
        let Ok(client) = BrokerClient::connect(format!("http://{addr}")).await else {
            return false;
        };
        let mut client = client.max_decoding_message_size(usize::MAX);
        let fetch = v1::FetchRequest {
            partitions: vec![v1::FetchPartition {
                topic: "cut".into(),
                partition: 0,
                offset: end - 1,
                max_bytes: 1 << 20,
                min_offset: end,
            }],
            min_bytes: 0,
            max_wait_ms: 200,
            max_bytes: 0,
        };
        client.fetch(fetch).await.is_ok()
    })
    .await;
    eprintln!(
        "leader {leader} and follower {follower} cut for {:?}; follower caught up {:?} after the heal",
        CUT_FOR,
        healed.elapsed()
    );
    assert_acked_readable(&bootstrap, "cut", &acked).await;
}
