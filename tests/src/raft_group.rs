//! A Raft group of in-process nodes talking real gRPC on free ports, each with its own
//! partition log in a temporary directory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{BasicNode, Raft};
use rafka_broker::log::{FlushPolicy, LogConfig, PartitionLog};
use rafka_broker::raft::log_store::RaftLogStore;
use rafka_broker::raft::network::{GroupNetwork, PeerChannels, PeerService, RaftGroups};
use rafka_broker::raft::state_machine::{Applier, PartitionStateMachine};
use rafka_broker::raft::types::TypeConfig;
use rafka_proto::peer::raft_peer_server::RaftPeerServer;

/// How long cluster waits may take before a test fails.
pub const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// One member of a test Raft group.
pub struct Node<A: Applier> {
    /// Node id.
    pub id: u64,
    /// Address of its peer service.
    pub addr: String,
    /// Its Raft handle.
    pub raft: Raft<TypeConfig>,
    /// Its partition log.
    pub log: Arc<Mutex<PartitionLog>>,
    /// Its state machine.
    pub sm: PartitionStateMachine<A>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl<A: Applier> Node<A> {
    /// Starts node `id` of group `group` with an empty log.
    pub async fn start(id: u64, group: u64) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes: 256 << 10,
            flush: FlushPolicy::Always,
            ..LogConfig::default()
        };
        let log = Arc::new(Mutex::new(PartitionLog::open(dir.path(), config).unwrap()));
        let store = RaftLogStore::open(
            dir.path(),
            log.clone(),
            &rafka_broker::tasks::Tasks::default(),
        )
        .unwrap();
        let sm = PartitionStateMachine::<A>::new();
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
            GroupNetwork::new(group, PeerChannels::default()),
            store,
            sm.clone(),
        )
        .await
        .unwrap();
        let groups = RaftGroups::default();
        groups.insert(group, raft.clone());
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
        Self {
            id,
            addr,
            raft,
            log,
            sm,
            stop: Some(stop),
            _dir: dir,
        }
    }

    /// True until [`kill`](Self::kill).
    pub fn is_alive(&self) -> bool {
        self.stop.is_some()
    }

    /// Stops the node as a crash looks to its peers: Raft halts, the port closes.
    pub async fn kill(&mut self) {
        self.raft.shutdown().await.unwrap();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// The partition's bytes below the high watermark.
    pub fn committed_bytes(&self) -> Vec<u8> {
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

/// Starts `n` nodes (ids 1..=n) of `group` and initializes them as one group.
pub async fn start_group<A: Applier>(n: u64, group: u64) -> Vec<Node<A>> {
    let mut nodes = Vec::new();
    for id in 1..=n {
        nodes.push(Node::start(id, group).await);
    }
    let members: BTreeMap<u64, BasicNode> = nodes
        .iter()
        .map(|n| (n.id, BasicNode::new(n.addr.clone())))
        .collect();
    nodes[0].raft.initialize(members).await.unwrap();
    nodes
}

/// Index of the live node that leads, once one does.
pub async fn leader_of<A: Applier>(nodes: &[Node<A>]) -> usize {
    let live = nodes.iter().find(|n| n.is_alive()).expect("a live node");
    let m = live
        .raft
        .wait(WAIT)
        .metrics(
            |m| {
                m.current_leader
                    .is_some_and(|l| nodes.iter().any(|n| n.id == l && n.is_alive()))
            },
            "a live leader",
        )
        .await
        .unwrap();
    let leader = m.current_leader.unwrap();
    nodes.iter().position(|n| n.id == leader).unwrap()
}
