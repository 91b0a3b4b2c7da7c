//! openraft's storage conformance suite against the partition-log-backed store.

use std::sync::{Arc, Mutex};

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::RaftLogStore;
use super::state_machine::PartitionStateMachine;
use super::types::{typ, TypeConfig};
use crate::log::{FlushPolicy, LogConfig, PartitionLog};
use crate::tasks::Tasks;

struct Builder;

impl StoreBuilder<TypeConfig, RaftLogStore, PartitionStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RaftLogStore, PartitionStateMachine), typ::StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = LogConfig {
            segment_bytes: 1 << 20,
            flush: FlushPolicy::Os,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(dir.path(), config).expect("open log");
        let store = RaftLogStore::open(dir.path(), Arc::new(Mutex::new(log)), &Tasks::default())?;
        Ok((dir, store, PartitionStateMachine::new()))
    }
}

#[test]
fn openraft_storage_suite() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    Suite::test_all(Builder).unwrap();
}

/// A single-node group over the store: 60 batches in small segments, a snapshot and a
/// purge that deletes the first segments; reopening numbers the remaining batches as
/// before, also when a crash left the deleted segments' files behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_segments_and_reopening_keeps_the_numbering() {
    use openraft::RaftLogReader;
    use rafka_proto::batch::{BatchBuilder, Record};

    use super::types::BatchData;

    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        segment_bytes: 4096,
        flush: FlushPolicy::Os,
        ..LogConfig::default()
    };
    let (store, sm, raft) = single_node_group(dir.path(), &config).await;
    for i in 0..60u32 {
        let value = vec![i as u8; 200];
        let mut b = BatchBuilder::new();
        b.append(&Record {
            timestamp: 1,
            key: None,
            value: Some(&value),
            headers: &[],
        });
        raft.client_write(BatchData(b.seal())).await.unwrap();
    }
    let mut reader = store.entry_reader();
    let before = reader.try_get_log_entries(0..).await.unwrap();
    let last = before.last().unwrap().log_id;
    let segments = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        names
    };
    let all_segments = segments();
    assert!(all_segments.len() > 3, "{all_segments:?}");
    let saved: Vec<(String, Vec<u8>)> = all_segments
        .iter()
        .map(|n| (n.clone(), std::fs::read(dir.path().join(n)).unwrap()))
        .collect();

    // Purge through a third of the entries.
    let upto = before[20].log_id.index;
    sm.snapshot_at(upto);
    raft.trigger().snapshot().await.unwrap();
    let snapshot = raft
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(|m| m.snapshot.is_some_and(|s| s.index == upto), "snapshot")
        .await;
    assert!(snapshot.is_ok(), "{snapshot:?}");
    raft.trigger().purge_log(upto).await.unwrap();
    let purged = raft
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= upto), "purged")
        .await;
    assert!(purged.is_ok(), "{purged:?}");
    raft.shutdown().await.unwrap();
    drop(raft);
    let left = segments();
    assert!(left.len() < all_segments.len(), "segments deleted");

    let reopen = |restore: bool| {
        if restore {
            for (name, bytes) in &saved {
                if !dir.path().join(name).exists() {
                    std::fs::write(dir.path().join(name), bytes).unwrap();
                }
            }
        }
        let log = PartitionLog::open(dir.path(), config.clone()).expect("reopen log");
        RaftLogStore::open(dir.path(), Arc::new(Mutex::new(log)), &Tasks::default()).unwrap()
    };
    for restore in [false, true] {
        let store = reopen(restore);
        let mut reader = store.entry_reader();
        let after = reader.try_get_log_entries(upto + 1..).await.unwrap();
        assert_eq!(after.last().unwrap().log_id, last, "restore={restore}");
        for e in &after {
            let original = &before[(e.log_id.index - before[0].log_id.index) as usize];
            assert_eq!(e.log_id, original.log_id, "restore={restore}");
            assert_eq!(
                format!("{:?}", e.payload),
                format!("{:?}", original.payload),
                "restore={restore}"
            );
        }
    }
}

/// A single-node Raft group over a store in `dir`, its leader elected.
async fn single_node_group(
    dir: &std::path::Path,
    config: &LogConfig,
) -> (
    RaftLogStore,
    PartitionStateMachine,
    openraft::Raft<TypeConfig>,
) {
    use std::collections::BTreeMap;

    use openraft::{BasicNode, Raft};

    use super::network::{GroupNetwork, PeerChannels};
    use super::state_machine::{SmStorage, NO_TARGET};

    let log = Arc::new(Mutex::new(
        PartitionLog::open(dir, config.clone()).expect("open log"),
    ));
    let store = RaftLogStore::open(dir, log.clone(), &Tasks::default()).unwrap();
    let storage = SmStorage {
        dir: dir.to_path_buf(),
        log,
        reset_pending: store.reset_flag(),
        entries: store.entry_reader(),
        snapshot_at: Arc::new(std::sync::atomic::AtomicU64::new(NO_TARGET)),
        raft_state: store.state_handle(),
    };
    let sm = PartitionStateMachine::<super::state_machine::Offsets>::open(storage).unwrap();
    let raft_config = Arc::new(openraft::Config::default().validate().unwrap());
    let network = GroupNetwork::new(1, PeerChannels::default());
    let raft = Raft::new(1, raft_config, network, store.clone(), sm.clone())
        .await
        .unwrap();
    raft.initialize(BTreeMap::from([(1, BasicNode::new("unused"))]))
        .await
        .unwrap();
    raft.wait(Some(std::time::Duration::from_secs(10)))
        .state(openraft::ServerState::Leader, "leader")
        .await
        .unwrap();
    (store, sm, raft)
}

/// One batch of one 100-byte record.
fn one_batch() -> super::types::BatchData {
    let mut b = rafka_proto::batch::BatchBuilder::new();
    b.append(&rafka_proto::batch::Record {
        timestamp: 1,
        key: None,
        value: Some(&[7u8; 100]),
        headers: &[],
    });
    super::types::BatchData(b.seal())
}

/// The leader does not wait for its own flush before going on (replication overlaps
/// it; the openraft patch in `vendor/openraft`), yet counts itself towards the commit
/// only once the flush is reported: a single node's write commits after the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_counts_its_own_append_only_once_flushed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _sm, raft) = single_node_group(dir.path(), &LogConfig::default()).await;
    let wait = || raft.wait(Some(std::time::Duration::from_secs(10)));
    let m = raft.metrics().borrow().clone();
    let last = m.last_log_index.unwrap();
    wait()
        .applied_index(Some(last), "noop applied")
        .await
        .unwrap();

    let gate = store.flush_gate();
    let held = gate.lock().await;
    let writer = raft.clone();
    let write = tokio::spawn(async move { writer.client_write(one_batch()).await });
    // Appended (RaftCore went on past the append)...
    wait().log_index(Some(last + 1), "appended").await.unwrap();
    // ...and RaftCore still answers, without having committed the unflushed entry.
    let committed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        raft.with_raft_state(|s| s.committed.map(|l| l.index)),
    )
    .await
    .expect("RaftCore does not wait for the leader's flush")
    .unwrap();
    assert_eq!(
        committed,
        Some(last),
        "committed before its flush was reported"
    );
    assert!(!write.is_finished());
    drop(held);
    let written = write.await.unwrap().expect("committed once flushed");
    assert_eq!(written.log_id.index, last + 1);
}
