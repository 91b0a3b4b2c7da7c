//! openraft glue: one Raft group per partition, whose Raft log *is* the partition log.
//!
//! ```text
//!  openraft ──append(entries)──► RaftLogStore ──► PartitionLog (one batch per entry)
//!     │                              │ Normal: the record batch, leader epoch = term
//!     │                              │ Blank / Membership: control batch, no offset
//!     │                              └ raft index ⇄ locator map, vote, committed, purged
//!     └──apply(entries)──► PartitionStateMachine: high watermark, membership, snapshots
//! ```
//!
//! - `types`          the type config and aliases
//! - `adopt`          a log written without Raft taken over as a one-voter group's log
//! - `entry`          Raft entries ⇄ stored batches
//! - `state_file`     vote, committed and purged log ids, persisted per partition
//! - `log_store`      `RaftLogStorage` over the partition log
//! - `flusher`        syncs the log off openraft's core task, many appends per sync
//! - `group`          opening a group: log, store, state machine, network, Raft settings
//! - `network`        the peer gRPC service carrying every group, and its clients
//! - `liveness`       node-level heartbeats: which brokers are up, what each leads
//! - `step_up`        a voter that refuses a candidate behind its log stands itself
//! - `votes`          one vote journal per broker, synced by group commit
//! - `state_machine`  `RaftStateMachine`: offsets only; the data stays in the log
//!
//! A snapshot holds the partition's offsets, never its data: the log is the data.

// openraft's `StorageError` is large, and its traits make it the error of this module.
#![allow(clippy::result_large_err)]

/// Raft group of the cluster metadata; partition groups are numbered from 1.
pub const METADATA_GROUP: u64 = 0;

pub mod adopt;
pub mod entry;
pub mod flusher;
pub mod group;
mod link;
pub mod liveness;
pub mod log_store;
pub mod network;
pub mod state_file;
pub mod state_machine;
mod step_up;
pub mod types;
pub mod votes;

#[cfg(test)]
mod tests;
