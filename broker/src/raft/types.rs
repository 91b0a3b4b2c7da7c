//! The type configuration shared by every partition's Raft group.

use std::io::Cursor;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A record batch as a Raft entry's payload (validated, as it will be stored).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchData(pub Bytes);

impl std::fmt::Debug for BatchData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchData({} bytes)", self.0.len())
    }
}

/// What applying an entry reports: where its records landed, and for the metadata group,
/// whether its commands took effect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendResult {
    /// Offset of the first record (the high watermark before it, for a control entry).
    pub base_offset: u64,
    /// Offset after the entry: the high watermark once it is applied.
    pub next_offset: u64,
    /// Why a metadata command was refused (it then changed nothing).
    pub error: Option<crate::cluster::MetadataError>,
}

openraft::declare_raft_types!(
    /// Raft types of a rafka partition.
    pub TypeConfig:
        D = BatchData,
        R = AppendResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// Aliases of openraft's generic types for this config.
pub mod typ {
    use super::TypeConfig;

    /// A node id.
    pub type NodeId = u64;
    /// A log id.
    pub type LogId = openraft::LogId<NodeId>;
    /// A vote.
    pub type Vote = openraft::Vote<NodeId>;
    /// A log entry.
    pub type Entry = openraft::Entry<TypeConfig>;
    /// A storage error.
    pub type StorageError = openraft::StorageError<NodeId>;
    /// A membership with its log id.
    pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
    /// Snapshot metadata.
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
    /// A snapshot.
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    /// A Raft group handle.
    pub type Raft = openraft::Raft<TypeConfig>;
    /// A node's address in a membership.
    pub type Node = openraft::BasicNode;
    /// Why a client write was refused (not the leader, membership change in progress).
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Node>;
    /// A Raft API error.
    pub type RaftError<E> = openraft::error::RaftError<NodeId, E>;
    /// Leader, follower, candidate or learner.
    pub type ServerState = openraft::ServerState;
    /// A group's state as its Raft core reports it (leader, log, replication progress).
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
}
