//! A leader that is cut off or stopped while clients write to it: three broker
//! processes in network namespaces, one partition with three replicas.
//!
//! - Isolated (nftables drops every packet between it and its peers; clients still reach
//!   it): it must stop accepting writes once it no longer hears from a majority (one
//!   liveness window), answering not-leader, both to a new write and to one already
//!   waiting for its commit, and name no leader in its metadata, so that producers find
//!   the majority's new leader while the cut lasts.
//! - Stopped (SIGSTOP: it answers nothing at all): the producer, whose request sits
//!   unanswered there, must learn the new leader from the other brokers and send again
//!   there while the old one is still stopped, not after its request timeout (30 s).
//!
//! Either way every acknowledged record is read back after the heal, at its offset.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rafka_client::{Admin, Producer, ProducerConfig};
use rafka_proto::v1::{self, broker_client::BrokerClient};
use rafka_tests::child_arg;
use rafka_tests::cluster::{assert_acked_readable, produce_acked, Acked};
use rafka_tests::netns::NetBrokers;

/// A broker process: `id|address|data dir|peers`.
#[test]
fn broker_child() {
    rafka_tests::procs::peers_broker_child()
}

const TOPIC: &str = "failover";

/// Writes after the fault must be acknowledged within this (the old leader holds a
/// request 10 s without a quorum, and 30 s when stopped; a failover takes ~2 s).
const FAILOVER_WITHIN: Duration = Duration::from_secs(8);

/// Three brokers, the topic, an idempotent producer (the default), 200 records written;
/// returns them and the partition's leader.
async fn setup(brokers: &NetBrokers) -> (Producer, Vec<Acked>, u32) {
    let bootstrap = brokers.bootstrap();
    let admin = Admin::connect(&bootstrap).await.expect("admin");
    admin
        .create_topic(TOPIC, 1, 3, BTreeMap::new())
        .await
        .expect("create");
    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let producer = Producer::connect(&bootstrap, config)
        .await
        .expect("producer");
    let (acked, failed) = produce_acked(&producer, TOPIC, "before", 200, 50).await;
    assert_eq!(failed, 0);
    let leader = admin.metadata(&[TOPIC]).await.expect("metadata").topics[0].partitions[0].leader;
    assert_ne!(leader, 0, "the partition has a leader");
    (producer, acked, leader)
}

/// Writes 100 records after a fault; asserts each is acknowledged within
/// [`FAILOVER_WITHIN`] of the fault.
async fn write_through(producer: &Producer, fault: Instant, acked: &mut Vec<Acked>) {
    let (more, failed) = tokio::time::timeout(
        FAILOVER_WITHIN.saturating_sub(fault.elapsed()),
        produce_acked(producer, TOPIC, "after", 100, 50),
    )
    .await
    .unwrap_or_else(|_| panic!("writes not acknowledged within {FAILOVER_WITHIN:?} of the fault"));
    assert_eq!(failed, 0);
    eprintln!("writes acknowledged {:?} after the fault", fault.elapsed());
    acked.extend(more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_refuses_writes_and_producers_move_to_the_majority() {
    if child_arg().is_some() {
        return;
    }
    let brokers = NetBrokers::start(3);
    let (producer, mut acked, leader) = setup(&brokers).await;
    let addr = format!("http://{}", brokers.addrs[leader as usize - 1]);
    let mut old = BrokerClient::connect(addr).await.expect("connect");

    brokers.isolate(leader);
    let cut = Instant::now();
    // A write sent to the old leader right after the cut waits for a commit that cannot
    // come; it must fail as not-leader (not time out), and so must the next.
    for attempt in ["waiting", "new"] {
        let answer = raw_produce(&mut old).await;
        assert!(
            answer.not_leader && answer.leader == 0,
            "{attempt} write to the isolated leader: {answer:?}"
        );
        eprintln!("{attempt} write refused {:?} after the cut", cut.elapsed());
    }
    let meta = old
        .metadata(v1::MetadataRequest {
            topics: vec![TOPIC.into()],
        })
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(
        meta.topics[0].partitions[0].leader, 0,
        "the isolated leader names no leader"
    );
    write_through(&producer, cut, &mut acked).await;

    brokers.heal(leader);
    assert_acked_readable(&brokers.bootstrap(), TOPIC, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leaders_writes_go_to_the_new_leader_while_it_is_stopped() {
    if child_arg().is_some() {
        return;
    }
    let brokers = NetBrokers::start(3);
    let (producer, mut acked, leader) = setup(&brokers).await;

    brokers.signal(leader, libc::SIGSTOP);
    let stopped = Instant::now();
    write_through(&producer, stopped, &mut acked).await;
    brokers.signal(leader, libc::SIGCONT);

    assert_acked_readable(&brokers.bootstrap(), TOPIC, &acked).await;
}

/// Elections without a wait when the first replica in line cannot win: the follower
/// first in the partition's replica order (the one that campaigns first) is cut off
/// from the leader while writes go on, so its log falls behind the other follower's;
/// then the leader is isolated. The behind follower's campaign is refused for its log,
/// and the refusing follower must campaign at once rather than wait its own turn
/// (`cluster::quiesce`'s stagger: 3 s after the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_with_the_longer_log_stands_at_once_when_the_first_in_line_is_behind() {
    if child_arg().is_some() {
        return;
    }
    let brokers = NetBrokers::start(3);
    let (producer, mut acked, leader) = setup(&brokers).await;
    let admin = Admin::connect(&brokers.bootstrap()).await.expect("admin");
    let meta = admin.metadata(&[TOPIC]).await.expect("metadata");
    let replicas = meta.topics[0].partitions[0].replicas.clone();
    let mut followers = replicas.iter().copied().filter(|&r| r != leader);
    let (behind, ahead) = (followers.next().unwrap(), followers.next().unwrap());

    brokers.net.cut(leader, behind);
    let (more, failed) = produce_acked(&producer, TOPIC, "behind", 200, 50).await;
    assert_eq!(failed, 0);
    acked.extend(more);
    brokers.net.cut(leader, ahead);
    let isolated = Instant::now();
    let addr = format!("http://{}", brokers.addrs[ahead as usize - 1]);
    let mut client = BrokerClient::connect(addr).await.expect("connect");
    // One liveness window (1.5 s) until the followers take the leader for down, an
    // election, and slack; the stagger alone would make it 4.5 s or more.
    let within = Duration::from_secs(4);
    loop {
        let meta = client
            .metadata(v1::MetadataRequest {
                topics: vec![TOPIC.into()],
            })
            .await
            .expect("metadata")
            .into_inner();
        if meta.topics[0].partitions[0].leader == ahead {
            break;
        }
        assert!(
            isolated.elapsed() < within,
            "broker {ahead} (ahead) not leading {within:?} after broker {leader} was isolated (broker {behind} was behind)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "broker {ahead} leads {:?} after the isolation",
        isolated.elapsed()
    );
    write_through(&producer, isolated, &mut acked).await;
    brokers.heal(leader);
    assert_acked_readable(&brokers.bootstrap(), TOPIC, &acked).await;
}

/// One batch of one record, acks=all, not idempotent; the partition's error (a failed
/// request as its status), or a default one when it was appended.
async fn raw_produce(client: &mut BrokerClient<tonic::transport::Channel>) -> v1::PartitionError {
    let mut batch = rafka_client::batch::BatchBuilder::new();
    batch.append(&rafka_client::batch::Record {
        timestamp: 1,
        key: None,
        value: Some(b"raw"),
        headers: &[],
    });
    let request = v1::ProduceRequest {
        topic: TOPIC.into(),
        acks: v1::Acks::All as i32,
        partitions: vec![v1::PartitionRecords {
            partition: 0,
            records: batch.seal(),
        }],
    };
    match client.produce(request).await {
        Ok(r) => r.into_inner().partitions[0]
            .error
            .clone()
            .unwrap_or_default(),
        // A request whose only partition failed fails whole; a redirect names the
        // leader in a header (`unknown` mid-election).
        Err(s) => v1::PartitionError {
            code: s.code() as i32,
            message: s.message().into(),
            not_leader: s
                .metadata()
                .get(rafka_broker::error::LEADER_HEADER)
                .is_some(),
            leader: s
                .metadata()
                .get(rafka_broker::error::LEADER_HEADER)
                .and_then(|l| l.to_str().ok()?.parse().ok())
                .unwrap_or(0),
            ..Default::default()
        },
    }
}
