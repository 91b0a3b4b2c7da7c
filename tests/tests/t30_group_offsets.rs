//! Consumer groups' committed offsets: stored in `__consumer_offsets`, served by the
//! group's coordinator, kept across broker restarts and coordinator failover.

use std::collections::BTreeMap;
use std::time::Duration;

use rafka_client::{Admin, Consumer, ConsumerConfig, Producer, ProducerRecord, TopicPartition};
use rafka_proto::v1::{self, group_client::GroupClient};
use rafka_tests::cluster::{TestCluster, WAIT};
use rafka_tests::TestBroker;

async fn fill(bootstrap: &str, topic: &str, partitions: u32, rf: u32, count: u32) {
    Admin::connect(bootstrap)
        .await
        .unwrap()
        .create_topic(topic, partitions, rf, BTreeMap::new())
        .await
        .unwrap();
    let producer = Producer::connect(bootstrap, Default::default())
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 0..count {
        let r = ProducerRecord::new(topic, format!("v{i}").into_bytes()).partition(i % partitions);
        acks.push(producer.send(r).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
}

async fn group_consumer(bootstrap: &str, group: &str) -> Consumer {
    Consumer::connect(
        bootstrap,
        ConsumerConfig {
            group_id: Some(group.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Reads `n` records (or fewer, if the deadline passes) and returns their offsets.
async fn read(consumer: &mut Consumer, n: usize) -> Vec<(u32, u64)> {
    let mut got = Vec::new();
    let start = std::time::Instant::now();
    while got.len() < n {
        assert!(
            start.elapsed() < WAIT,
            "timed out after {} records",
            got.len()
        );
        for r in consumer.poll(Duration::from_millis(200)).await.unwrap() {
            got.push((r.partition, r.offset));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_resumes_from_its_commits_across_a_broker_restart() {
    let broker = TestBroker::start().await;
    fill(&broker.addr, "g", 2, 1, 300).await;
    let parts = [TopicPartition::new("g", 0), TopicPartition::new("g", 1)];

    let mut first = group_consumer(&broker.addr, "readers").await;
    first.assign(parts.clone());
    assert!(first.committed(&parts).await.unwrap().is_empty());
    // Commit exactly: partition 0 read to 40, partition 1 to 70.
    let offsets = BTreeMap::from([(parts[0].clone(), 40), (parts[1].clone(), 70)]);
    first.commit_offsets(&offsets).await.unwrap();
    assert_eq!(first.committed(&parts).await.unwrap(), offsets);

    let dir = broker.dir();
    broker.stop().await;
    let broker = TestBroker::start_with(dir, |_| {}).await;

    let mut second = group_consumer(&broker.addr, "readers").await;
    second.assign(parts.clone());
    let got = read(&mut second, 190).await;
    let min = |p: u32| got.iter().filter(|g| g.0 == p).map(|g| g.1).min().unwrap();
    assert_eq!(
        (min(0), min(1)),
        (40, 70),
        "resumed at the committed offsets"
    );
    assert_eq!(got.len(), 190, "nothing before the commits was read again");
    // An asynchronous commit runs on its own (here in another task).
    let pending = second.commit_async();
    tokio::spawn(pending).await.unwrap().unwrap();
    assert_eq!(
        second.committed(&parts).await.unwrap(),
        BTreeMap::from([(parts[0].clone(), 150), (parts[1].clone(), 150)])
    );
    // Another group starts from its own (absent) offsets.
    let mut other = group_consumer(&broker.addr, "others").await;
    other.assign(parts.clone());
    assert!(other.committed(&parts).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offset_requests_are_refused_with_a_reason() {
    let broker = TestBroker::start().await;
    let mut c = GroupClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let offset = |topic: &str, partition| v1::CommittedOffset {
        topic: topic.into(),
        partition,
        offset: 1,
        metadata: String::new(),
    };
    for (group, offsets, says) in [
        ("", vec![offset("t", 0)], "invalid group id"),
        ("g", vec![], "no offsets"),
        ("g", vec![offset("t", 0), offset("t", 0)], "appears twice"),
        ("g", vec![offset("../x", 0)], "invalid topic name"),
    ] {
        let err = c
            .commit_offsets(v1::CommitOffsetsRequest {
                group: group.into(),
                offsets,
                ..Default::default()
            })
            .await
            .expect_err(says);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains(says), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_offsets_survive_the_loss_of_the_coordinator() {
    let mut cluster = TestCluster::start(3).await;
    fill(&cluster.bootstrap(), "orders", 3, 3, 600).await;
    let parts: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("orders", p)).collect();
    let mut consumer = group_consumer(&cluster.bootstrap(), "billing").await;
    consumer.assign(parts.clone());
    let first = read(&mut consumer, 300).await.len() as u64;
    consumer.commit().await.unwrap();
    let committed = consumer.committed(&parts).await.unwrap();
    assert_eq!(committed.values().sum::<u64>(), first, "{committed:?}");

    // Stop the coordinator's broker.
    let mut g = GroupClient::connect(format!("http://{}", cluster.brokers[0].addr))
        .await
        .unwrap();
    let coordinator = g
        .find_coordinator(v1::FindCoordinatorRequest {
            group: "billing".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .node_id;
    cluster.stop(coordinator).await;

    // A new coordinator serves the group: a new consumer resumes where the commit was.
    let live: Vec<String> = cluster
        .running()
        .iter()
        .map(|&b| cluster.brokers[b as usize - 1].addr.clone())
        .collect();
    let mut resumed = group_consumer(&live.join(","), "billing").await;
    resumed.assign(parts.clone());
    assert_eq!(resumed.committed(&parts).await.unwrap(), committed);
    let got = read(&mut resumed, (600 - first) as usize).await;
    assert_eq!(
        got.len() as u64,
        600 - first,
        "exactly the rest, nothing twice"
    );
    for (p, o) in &got {
        assert!(*o >= committed[&parts[*p as usize]], "re-read {p}@{o}");
    }
    resumed.commit().await.unwrap();
    assert_eq!(
        resumed
            .committed(&parts)
            .await
            .unwrap()
            .values()
            .sum::<u64>(),
        600
    );
}

/// A subscribed member whose coordinator dies: the new coordinator does not know it (a
/// group's membership lives in its coordinator's memory), so its next auto-commit is
/// refused. The member must rejoin and go on reading and committing; before, the
/// refused auto-commit failed every poll ahead of the heartbeat that would have rejoined,
/// and the member stalled for good (found by the fault suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_rejoins_a_new_coordinator_and_its_commits_go_on() {
    let mut cluster = TestCluster::start(3).await;
    fill(&cluster.bootstrap(), "events", 3, 3, 600).await;
    let parts: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("events", p)).collect();
    let mut member = Consumer::connect(
        &cluster.bootstrap(),
        ConsumerConfig {
            group_id: Some("audit".into()),
            auto_commit_interval: Some(Duration::from_millis(100)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    member.subscribe(&["events"]).unwrap();
    let mut seen = std::collections::HashSet::new();
    let start = std::time::Instant::now();
    while seen.len() < 300 {
        assert!(
            start.elapsed() < WAIT,
            "read {} before the failover",
            seen.len()
        );
        for r in member.poll(Duration::from_millis(200)).await.unwrap() {
            seen.insert((r.partition, r.offset));
        }
    }

    let mut g = GroupClient::connect(format!("http://{}", cluster.brokers[0].addr))
        .await
        .unwrap();
    let coordinator = g
        .find_coordinator(v1::FindCoordinatorRequest {
            group: "audit".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .node_id;
    cluster.stop(coordinator).await;

    let live: Vec<String> = cluster
        .running()
        .iter()
        .map(|&b| cluster.brokers[b as usize - 1].addr.clone())
        .collect();
    let mut reader = group_consumer(&live.join(","), "audit").await;
    let start = std::time::Instant::now();
    loop {
        // Errors while the coordinator moves are retried by polling again.
        if let Ok(records) = member.poll(Duration::from_millis(200)).await {
            seen.extend(records.iter().map(|r| (r.partition, r.offset)));
        }
        let committed: u64 = reader
            .committed(&parts)
            .await
            .map_or(0, |c| c.values().sum());
        if seen.len() == 600 && committed == 600 {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "after the coordinator's loss the member read {} of 600 and committed {committed}",
            seen.len()
        );
    }
}
