//! Brokers follow the cluster metadata: creating a topic through the metadata group makes
//! every replica start the partition's Raft group; writes on each partition's leader reach
//! every replica; deleting the topic stops the groups and removes their data; a replica
//! that cannot start blocks no other and is retried until it starts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rafka_broker::cluster::node::{ClusterNode, ReplicatedPartition};
use rafka_broker::cluster::Command;
use rafka_broker::error::BrokerError;
use rafka_broker::log::LogConfig;
use rafka_proto::batch::{BatchBuilder, Record, ValidatedBatch};
use rafka_proto::peer::raft_peer_server::RaftPeerServer;
use rafka_tests::eventually;

const DEADLINE: Duration = Duration::from_secs(30);

struct Broker {
    node: Arc<ClusterNode>,
    dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
}

async fn start_cluster(n: u32) -> Vec<Broker> {
    let mut listeners = Vec::new();
    let mut peers = BTreeMap::new();
    for id in 1..=n {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(id, l.local_addr().unwrap().to_string());
        listeners.push(l);
    }
    let mut brokers = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let id = i as u32 + 1;
        let node = ClusterNode::start(
            id,
            dir.path(),
            peers.clone(),
            LogConfig::default(),
            rafka_broker::tasks::Tasks::default(),
            rafka_broker::cluster::node::Founding::Peer,
            None,
        )
        .await
        .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftPeerServer::new(node.peer_service()))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        brokers.push(Broker { node, dir, stop });
    }
    brokers
}

/// Proposes `cmd` through the first broker (each sends it on to the metadata leader),
/// once the metadata has a leader.
async fn propose(brokers: &[Broker], cmd: Command) -> Result<(), BrokerError> {
    let outcome = std::sync::Mutex::new(None);
    eventually(
        "a metadata leader to take the command",
        DEADLINE,
        || async {
            for b in brokers {
                match b.node.propose(&cmd).await {
                    Err(BrokerError::NotLeader { .. } | BrokerError::Unavailable(_)) => continue,
                    other => {
                        *outcome.lock().unwrap() = Some(other);
                        return true;
                    }
                }
            }
            false
        },
    )
    .await;
    outcome
        .into_inner()
        .unwrap()
        .expect("set when the wait ended")
}

/// Registers every broker in the metadata at its peer address, so topics can be placed
/// on them (partition groups reach their members at the registered address).
async fn register(brokers: &[Broker]) {
    for b in brokers {
        let id = b.node.id();
        let address = b
            .node
            .peer_address(id)
            .expect("a configured peer")
            .to_string();
        propose(brokers, Command::RegisterBroker { id, address })
            .await
            .unwrap();
    }
}

fn batch(i: u64) -> ValidatedBatch {
    let mut b = BatchBuilder::new();
    for r in 0..5u64 {
        b.append(&Record {
            timestamp: 1,
            key: Some(&r.to_be_bytes()),
            value: Some(format!("{i}-{r}").as_bytes()),
            headers: &[],
        });
    }
    ValidatedBatch::parse(b.seal()).unwrap()
}

/// The leader `asking` knows of for `topic`-`p`, and the leader's replica of it.
async fn leader_replica(
    asking: &Broker,
    brokers: &[Broker],
    topic: &str,
    p: u32,
) -> (u64, Arc<ReplicatedPartition>) {
    let leader = asking
        .node
        .partition(topic, p)
        .await
        .unwrap()
        .leader()
        .unwrap();
    let replica = brokers[leader as usize - 1]
        .node
        .partition(topic, p)
        .await
        .unwrap();
    (leader, replica)
}

async fn committed(b: &Broker, topic: &str, p: u32) -> Bytes {
    let part = b.node.partition(topic, p).await.unwrap();
    part.reader()
        .read_below(0, 64 << 20, part.high_watermark())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_follow_the_metadata() {
    let brokers = start_cluster(3).await;
    register(&brokers).await;
    let create = Command::CreateTopic {
        name: "t".into(),
        partitions: 3,
        replication_factor: 3,
        configs: BTreeMap::new(),
    };
    propose(&brokers, create.clone()).await.unwrap();
    assert!(matches!(
        propose(&brokers, create).await,
        Err(BrokerError::TopicExists(t)) if t == "t"
    ));

    // Every broker runs all three partitions, and each partition elects a leader.
    eventually("partition groups on every broker", DEADLINE, || async {
        for b in &brokers {
            for p in 0..3 {
                match b.node.partition("t", p).await {
                    Some(part) if part.leader().is_some() => {}
                    _ => return false,
                }
            }
        }
        true
    })
    .await;

    for p in 0..3 {
        let (leader, on_leader) = leader_replica(&brokers[0], &brokers, "t", p).await;
        let mut next = 0;
        for i in 0..20 {
            let r = on_leader.append(batch(i)).await.unwrap();
            assert_eq!(r.base_offset, next);
            next = r.next_offset;
        }
        // A follower refuses writes and names the leader.
        let follower = brokers
            .iter()
            .position(|b| b.node.id() != leader as u32)
            .unwrap();
        let on_follower = brokers[follower].node.partition("t", p).await.unwrap();
        match on_follower.append(batch(99)).await {
            Err(BrokerError::NotLeader {
                leader: Some(l), ..
            }) => assert_eq!(l, leader),
            other => panic!("a follower accepted a write: {other:?}"),
        }
    }
    eventually("every replica committed every write", DEADLINE, || async {
        for b in &brokers {
            for p in 0..3 {
                if b.node.partition("t", p).await.unwrap().high_watermark() != 100 {
                    return false;
                }
            }
        }
        true
    })
    .await;
    for p in 0..3 {
        let reference = committed(&brokers[0], "t", p).await;
        assert!(!reference.is_empty());
        for b in &brokers[1..] {
            assert_eq!(committed(b, "t", p).await, reference, "partition {p}");
        }
    }

    propose(&brokers, Command::DeleteTopic { name: "t".into() })
        .await
        .unwrap();
    eventually("partition groups stopped and removed", DEADLINE, || async {
        for b in &brokers {
            for p in 0..3 {
                if b.node.partition("t", p).await.is_some()
                    || b.dir.path().join(format!("t-{p}")).exists()
                {
                    return false;
                }
            }
        }
        true
    })
    .await;
    for b in brokers {
        b.node.shutdown().await;
        let _ = b.stop.send(());
    }
}

/// A replica that cannot start (here its data directory's path is taken by a file, as a
/// full disk or a damaged log would stop it) keeps no other partition from starting, and
/// starts by itself once the obstacle is gone, with no change to the metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_start_blocks_no_other_and_is_retried() {
    let brokers = start_cluster(3).await;
    register(&brokers).await;
    let blocker = brokers[1].dir.path().join("u-1");
    std::fs::write(&blocker, b"not a directory").unwrap();
    propose(
        &brokers,
        Command::CreateTopic {
            name: "u".into(),
            partitions: 3,
            replication_factor: 3,
            configs: BTreeMap::new(),
        },
    )
    .await
    .unwrap();

    eventually("every other replica started", DEADLINE, || async {
        for (i, b) in brokers.iter().enumerate() {
            for p in 0..3 {
                let running = b.node.partition("u", p).await.is_some();
                if running != (i != 1 || p != 1) {
                    return false;
                }
            }
        }
        true
    })
    .await;

    std::fs::remove_file(&blocker).unwrap();
    eventually(
        "the blocked replica started on a retry",
        DEADLINE,
        || async {
            match brokers[1].node.partition("u", 1).await {
                Some(part) => part.leader().is_some(),
                None => false,
            }
        },
    )
    .await;
    let (_, on_leader) = leader_replica(&brokers[1], &brokers, "u", 1).await;
    let written = on_leader.append(batch(1)).await.unwrap().next_offset;
    eventually("the late replica has the write", DEADLINE, || async {
        brokers[1]
            .node
            .partition("u", 1)
            .await
            .unwrap()
            .high_watermark()
            == written
    })
    .await;
    for b in brokers {
        b.node.shutdown().await;
        let _ = b.stop.send(());
    }
}
