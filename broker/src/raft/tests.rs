//! openraft's storage conformance suite against the partition-log-backed store.

use std::sync::{Arc, Mutex};

use openraft::testing::{StoreBuilder, Suite};

use super::log_store::RaftLogStore;
use super::state_machine::PartitionStateMachine;
use super::types::{typ, TypeConfig};
use crate::log::{FlushPolicy, LogConfig, PartitionLog};

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
        let store = RaftLogStore::open(dir.path(), Arc::new(Mutex::new(log)))?;
        Ok((dir, store, PartitionStateMachine::new()))
    }
}

#[test]
fn openraft_storage_suite() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    Suite::test_all(Builder).unwrap();
}
