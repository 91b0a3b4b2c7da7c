//! The storage engine: each partition is an append-only log of record batches kept in
//! segment files written and read through memory mappings.
//!
//! ```text
//!  PartitionLog (one writer)                       LogReader (any number, any thread)
//!   append ─ validate ─► ActiveSegment ──publish len──► SegmentView ◄─ read(offset, max)
//!                        │ .log        MmapMut ────► same pages ────► Bytes slices (no copy)
//!                        │ .index      MmapMut       offset index, binary searched
//!                        │ .timeindex  MmapMut       time index, binary searched
//!                        └─ roll ─► SealedSegment: trimmed, read-only mappings
//! ```
//!
//! - `config`    segment size, index interval, flush policy, retention
//! - `segment`   active and sealed segments and the view readers share
//! - `index`     fixed-width big-endian index entries over mappings
//! - `recovery`  verifying a segment from its last index entry; index placement rules
//! - `partition` the writer: append, roll, sync, truncate, retention, poisoning
//! - `reader`    concurrent reads and timestamp lookups
//! - `scrub`     verifying sealed segments whole; repairing one from another copy
//! - `discard`   a removed replica's files freed step by step
//!
//! This module is synchronous and knows nothing of the network or of Raft. The on-disk
//! format is described in `docs/format.md`.

mod config;
pub mod discard;
mod error;
mod file;
mod index;
mod maps;
mod partition;
mod reader;
mod recovery;
mod scrub;
mod segment;

pub use config::{FlushPolicy, LogConfig, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
pub use error::LogError;
pub use partition::{Appended, Locator, PartitionLog};
pub use reader::LogReader;
pub use scrub::{SealedRange, MAX_RAW_READ};
pub use segment::SyncHandle;

#[cfg(test)]
mod tests;
