//! One partition replicated by a Raft group of three in-process brokers talking real gRPC:
//! every replica's log holds the same bytes, and losing the leader loses nothing that was
//! acknowledged.

use std::time::Duration;

use bytes::Bytes;
use rafka_broker::raft::state_machine::Offsets;
use rafka_broker::raft::types::BatchData;
use rafka_proto::batch::{BatchBuilder, Record};
use rafka_tests::raft_group::{leader_of, start_group, Node, WAIT};

const GROUP: u64 = 7;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hold_identical_logs_and_survive_losing_the_leader() {
    rafka_tests::init_tracing();
    let mut nodes: Vec<Node<Offsets>> = start_group(3, GROUP).await;

    // Every acknowledged batch, by offset.
    let mut acked: Vec<(u64, u64, Bytes)> = Vec::new();
    let mut next = 0u64;
    let write = |nodes: &[Node<Offsets>], leader: usize, i: u64| {
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
    let survivors: Vec<&Node<Offsets>> = nodes.iter().filter(|n| n.is_alive()).collect();
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
        if n.is_alive() {
            n.kill().await;
        }
    }
}
