//! The rafka broker.
//!
//! ```text
//! log/     storage engine: segments on memory-mapped files, indexes, recovery, retention
//! ```
//!
//! The gRPC server, Raft replication, cluster metadata and consumer groups build on the
//! log and arrive as their own modules.

pub mod log;
