//! Adopting a partition log written without Raft (a single broker of an earlier release)
//! as the log of a one-voter group, in place.
//!
//! ```text
//!  raft index  0 (purged)          1 .. n                         n + 1 ..
//!              snapshot: member    the old batches, now entries   new entries
//!              {node}, high        of term 1, all committed
//!              watermark = the
//!              log start offset
//! ```
//!
//! Every batch's leader epoch is set to 1 (outside the checksum); `raft.json` records a
//! committed vote for the node in term 1, entries from index 1, index 0 purged, and the
//! commit point at the last batch; the snapshot at index 0 carries the membership and the
//! old log start offset, so a replica added later that needs what precedes entry 1 takes
//! the snapshot and starts its log where this one starts. On open, openraft applies the
//! committed entries and the high watermark is the old log end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, StoredMembership, Vote};

use super::state_file::{RaftState, FILE};
use super::state_machine::write_snapshot_file;
use crate::log::{LogConfig, LogError, PartitionLog};

/// The term the adopted batches are entries of.
const TERM: u64 = 1;

/// What was adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    /// Batches that became entries.
    pub batches: u64,
    /// The log's start offset (the snapshot's high watermark).
    pub log_start_offset: u64,
    /// The log's end offset (the high watermark once the entries are applied).
    pub log_end_offset: u64,
}

/// True once `dir` holds Raft state (adopted, or written by a group).
pub fn has_raft_state(dir: &Path) -> bool {
    dir.join(FILE).exists()
}

/// Makes the partition log in `dir` the log of a group whose one voter is `node` at
/// `address`. The log is recovered first (a torn tail is cut, as on any open).
pub fn adopt_log(
    dir: &Path,
    config: LogConfig,
    node: u64,
    address: &str,
) -> Result<Adopted, LogError> {
    let io = |e: std::io::Error| LogError::Io {
        path: dir.to_path_buf(),
        source: e,
    };
    let mut log = PartitionLog::open(dir, config)?;
    let batches = log.stamp_leader_epochs(TERM as i32)? as u64;
    let adopted = Adopted {
        batches,
        log_start_offset: log.log_start_offset(),
        log_end_offset: log.log_end_offset(),
    };
    log.flush()?;
    drop(log);
    let log_id = |index| LogId::new(CommittedLeaderId::new(TERM, node), index);
    let membership = Membership::new(
        vec![BTreeSet::from([node])],
        BTreeMap::from([(node, BasicNode::new(address))]),
    );
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(log_id(0)),
        last_membership: StoredMembership::new(Some(log_id(0)), membership),
        snapshot_id: "adopted-0".into(),
    };
    // The snapshot first: a crash before raft.json leaves a directory adopted again.
    write_snapshot_file(dir, &meta, adopted.log_start_offset).map_err(io)?;
    RaftState {
        vote: Some(Vote::new_committed(TERM, node)),
        committed: Some(log_id(batches)),
        purged: Some(log_id(0)),
        first_index: 1,
        first_segment: None,
    }
    .save(dir)
    .map_err(io)?;
    Ok(adopted)
}
