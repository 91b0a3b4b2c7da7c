//! The metadata group: topic commands replicated through Raft, applied in the same order
//! on every broker, refused commands reported and changing nothing.

use std::collections::BTreeMap;

use rafka_broker::cluster::{ClusterState, Command, MetadataError};
use rafka_broker::raft::types::BatchData;
use rafka_tests::raft_group::{leader_of, start_group, Node, WAIT};

const METADATA_GROUP: u64 = 0;

fn register(id: u32) -> Command {
    Command::RegisterBroker {
        id,
        address: format!("127.0.0.1:{}", 9000 + id),
    }
}

fn create(name: &str, partitions: u32, rf: u32) -> Command {
    Command::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
    }
}

async fn propose(nodes: &[Node<ClusterState>], cmd: &Command) -> (u64, Option<MetadataError>) {
    let leader = leader_of(nodes).await;
    let r = nodes[leader]
        .raft
        .client_write(BatchData(cmd.to_batch(0)))
        .await
        .unwrap();
    (r.log_id.index, r.data.error)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_commands_converge_on_every_node() {
    let mut nodes: Vec<Node<ClusterState>> = start_group(3, METADATA_GROUP).await;
    for id in 1..=3 {
        assert_eq!(propose(&nodes, &register(id)).await.1, None);
    }
    assert_eq!(propose(&nodes, &create("orders", 6, 3)).await.1, None);
    assert_eq!(propose(&nodes, &create("audit", 3, 2)).await.1, None);
    let (_, refused) = propose(&nodes, &create("orders", 1, 1)).await;
    assert_eq!(refused, Some(MetadataError::TopicExists("orders".into())));
    let (_, refused) = propose(&nodes, &create("wide", 1, 5)).await;
    assert!(refused
        .unwrap()
        .to_string()
        .contains("replication factor 5"));
    let (last, _) = propose(
        &nodes,
        &Command::DeleteTopic {
            name: "audit".into(),
        },
    )
    .await;

    for n in &nodes {
        n.raft
            .wait(WAIT)
            .applied_index_at_least(Some(last), "metadata applied")
            .await
            .unwrap();
    }
    let state = nodes[0].sm.app();
    for n in &nodes[1..] {
        assert_eq!(n.sm.app(), state, "node {} sees other metadata", n.id);
    }
    assert_eq!(state.brokers.len(), 3);
    assert_eq!(state.topics.keys().collect::<Vec<_>>(), ["orders"]);
    let orders = &state.topics["orders"];
    assert_eq!(orders.partitions.len(), 6);
    assert!(orders.partitions.iter().all(|p| p.replicas.len() == 3));
    // Preferred leaders are spread: each broker leads two of the six partitions.
    for b in 1..=3 {
        let led = orders
            .partitions
            .iter()
            .filter(|p| p.replicas[0] == b)
            .count();
        assert_eq!(led, 2, "broker {b}");
    }
    for n in &mut nodes {
        n.kill().await;
    }
}
