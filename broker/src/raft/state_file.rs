//! The per-partition Raft state that is not in the log: vote, committed and purged log
//! ids, and the raft index of the log's first batch. Written atomically (temp file,
//! fsync, rename, fsync of the directory).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::types::typ;

/// Name of the file in the partition directory.
pub const FILE: &str = "raft.json";

/// What `raft.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftState {
    /// The last vote cast or seen.
    pub vote: Option<typ::Vote>,
    /// The last log id known committed.
    pub committed: Option<typ::LogId>,
    /// Entries up to here are no longer served as Raft entries.
    pub purged: Option<typ::LogId>,
    /// Raft index of the first batch of segment `first_segment` (of the partition log's
    /// first batch when that is `None`).
    pub first_index: u64,
    /// The segment `first_index` counts from: after a purge deleted older segments, the
    /// numbering stays right even if a crash left some of them behind.
    #[serde(default)]
    pub first_segment: Option<u64>,
}

impl RaftState {
    /// Reads the state of the partition in `dir` (default if there is none yet).
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        match std::fs::read(dir.join(FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Makes this the durable state of the partition in `dir`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        write_atomic(dir, FILE, &bytes)
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the new file:
/// temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp: PathBuf = dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}
