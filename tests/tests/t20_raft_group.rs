//! One partition replicated by a Raft group of three in-process brokers talking real gRPC:
//! every replica's log holds the same bytes, and losing the leader loses nothing that was
//! acknowledged.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::{BasicNode, Raft};
use rafka_broker::log::{FlushPolicy, LogConfig, PartitionLog};
use rafka_broker::raft::log_store::RaftLogStore;
use rafka_broker::raft::network::{GroupNetwork, PeerChannels, PeerService, RaftGroups};
use rafka_broker::raft::state_machine::PartitionStateMachine;
use rafka_broker::raft::types::{BatchData, TypeConfig};
use rafka_proto::batch::{BatchBuilder, Record};
use rafka_proto::peer::raft_peer_server::RaftPeerServer;

const GROUP: u64 = 7;
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

struct Node {
    id: u64,
    addr: String,
    raft: Raft<TypeConfig>,
    log: Arc<Mutex<PartitionLog>>,
    sm: PartitionStateMachine,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

async fn start_node(id: u64) -> Node {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 256 << 10,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    let log = Arc::new(Mutex::new(PartitionLog::open(dir.path(), config).unwrap()));
    let store = RaftLogStore::open(dir.path(), log.clone()).unwrap();
    let sm = PartitionStateMachine::new();
    let raft_config = openraft::Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: openraft::SnapshotPolicy::Never,
        ..Default::default()
    };
    let raft = Raft::new(
        id,
        Arc::new(raft_config.validate().unwrap()),
        GroupNetwork::new(GROUP, PeerChannels::default()),
        store,
        sm.clone(),
    )
    .await
    .unwrap();
    let groups = RaftGroups::default();
    groups.insert(GROUP, raft.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftPeerServer::new(PeerService::new(groups)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    Node {
        id,
        addr,
        raft,
        log,
        sm,
        stop: Some(stop),
        _dir: dir,
    }
}

impl Node {
    /// Stops the node as a crash would look to its peers: Raft halts, the port closes.
    async fn kill(&mut self) {
        self.raft.shutdown().await.unwrap();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// The partition's bytes below the high watermark.
    fn committed_bytes(&self) -> Vec<u8> {
        let hw = self.sm.high_watermark();
        let reader = self.log.lock().unwrap().reader();
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < hw {
            let chunk = reader.read_below(offset, 1 << 20, hw).unwrap();
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let (h, n) = rafka_proto::batch::verify_stored(rest).unwrap();
                offset = h.next_offset() as u64;
                rest = &rest[n..];
            }
            out.extend_from_slice(&chunk);
        }
        out
    }
}

fn batch(i: u64) -> Bytes {
    let mut b = BatchBuilder::new();
    for r in 0..5u64 {
        b.append(&Record {
            timestamp: i as i64,
            key: Some(&r.to_be_bytes()),
            value: Some(format!("batch {i} record {r}").as_bytes()),
            headers: &[],
        });
    }
    b.seal()
}

async fn leader_of(nodes: &[Node]) -> usize {
    let live = nodes.iter().find(|n| n.stop.is_some()).unwrap();
    let m = live
        .raft
        .wait(WAIT)
        .metrics(
            |m| {
                m.current_leader
                    .is_some_and(|l| nodes.iter().any(|n| n.id == l && n.stop.is_some()))
            },
            "a live leader",
        )
        .await
        .unwrap();
    let leader = m.current_leader.unwrap();
    nodes.iter().position(|n| n.id == leader).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hold_identical_logs_and_survive_losing_the_leader() {
    tracing_subscriber_init();
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(start_node(id).await);
    }
    let members: BTreeMap<u64, BasicNode> = nodes
        .iter()
        .map(|n| (n.id, BasicNode::new(n.addr.clone())))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();

    // Every acknowledged batch, by offset.
    let mut acked: Vec<(u64, u64, Bytes)> = Vec::new();
    let mut next = 0u64;
    let write = |nodes: &[Node], leader: usize, i: u64| {
        let raft = nodes[leader].raft.clone();
        async move { (i, raft.client_write(BatchData(batch(i))).await) }
    };
    let leader = leader_of(&nodes).await;
    for i in 0..200 {
        let Ok((i, r)) =
            tokio::time::timeout(Duration::from_secs(5), write(&nodes, leader, i)).await
        else {
            for n in &nodes {
                eprintln!(
                    "node {} metrics: {:?}",
                    n.id,
                    n.raft.metrics().borrow().clone()
                );
            }
            panic!("a write was not committed within 5 s");
        };
        let r = r.unwrap();
        assert_eq!(
            r.data.base_offset, next,
            "offsets follow from the log prefix"
        );
        next = r.data.next_offset;
        acked.push((r.data.base_offset, r.log_id.index, batch(i)));
    }
    assert_eq!(next, 1000);
    let last = acked.last().unwrap().1;
    for n in &nodes {
        n.raft
            .wait(WAIT)
            .applied_index_at_least(Some(last), "replicated")
            .await
            .unwrap();
    }
    let reference = nodes[leader].committed_bytes();
    assert!(!reference.is_empty());
    for n in &nodes {
        assert_eq!(n.committed_bytes(), reference, "node {} differs", n.id);
    }

    // Lose the leader: the other two elect a new one and take writes.
    nodes[leader].kill().await;
    let new_leader = leader_of(&nodes).await;
    assert_ne!(new_leader, leader);
    for i in 200..300 {
        let (i, r) = write(&nodes, new_leader, i).await;
        let r = r.unwrap();
        assert_eq!(r.data.base_offset, next);
        next = r.data.next_offset;
        acked.push((r.data.base_offset, r.log_id.index, batch(i)));
    }
    let last = acked.last().unwrap().1;
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.stop.is_some()).collect();
    for n in &survivors {
        n.raft
            .wait(WAIT)
            .applied_index_at_least(Some(last), "replicated")
            .await
            .unwrap();
    }
    let reference = survivors[0].committed_bytes();
    assert_eq!(survivors[1].committed_bytes(), reference);
    // Every acknowledged batch is there, at the offset it was acknowledged at.
    let reader = survivors[0].log.lock().unwrap().reader();
    for (offset, _, original) in &acked {
        let stored = reader.read(*offset, 1).unwrap();
        let (h, n) = rafka_proto::batch::verify_stored(&stored).unwrap();
        assert_eq!(h.base_offset as u64, *offset);
        // The same records (only base offset and leader epoch were stamped).
        assert_eq!(&stored[21..n], &original[21..]);
    }
    for n in &mut nodes {
        if n.stop.is_some() {
            n.kill().await;
        }
    }
}

fn tracing_subscriber_init() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ))
        .with_test_writer()
        .try_init();
}
