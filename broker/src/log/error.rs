//! Errors of the storage layer.

use std::io;
use std::path::PathBuf;

use rafka_proto::batch::BatchError;

/// What went wrong in a partition log. Messages name the file, offset or position.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The batch failed validation; nothing was appended.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The batch cannot fit in a segment.
    #[error("record batch of {size} bytes is larger than segment.bytes ({max})")]
    BatchTooLarge {
        /// Size of the batch.
        size: usize,
        /// Configured segment size.
        max: u64,
    },
    /// The offset is outside `[log_start, log_end]`.
    #[error("offset {offset} is out of range: the log holds [{log_start}, {log_end})")]
    OffsetOutOfRange {
        /// Offset asked for.
        offset: u64,
        /// First offset in the log.
        log_start: u64,
        /// Offset the next record will get.
        log_end: u64,
    },
    /// Truncation must fall on a batch boundary.
    #[error("cannot truncate after offset {offset}: it is inside the batch {base_offset}..={last_offset}")]
    NotBatchBoundary {
        /// Offset asked for.
        offset: u64,
        /// First offset of the batch holding it.
        base_offset: u64,
        /// Last offset of that batch.
        last_offset: u64,
    },
    /// A file on disk is damaged in a way recovery must not paper over.
    #[error("corrupt segment {path}: {reason} (byte {position})")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage.
        position: usize,
        /// What is wrong.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An earlier write or sync failed; the log's on-disk state is unknown until reopened.
    #[error("log {dir} refuses writes after an earlier failure ({cause}); reopen it to recover")]
    Poisoned {
        /// The partition directory.
        dir: PathBuf,
        /// The failure that poisoned it.
        cause: String,
    },
    /// A setting is out of range.
    #[error("invalid log config: {0}")]
    Config(String),
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
