//! The record batch: the unit that producers build, the log stores and consumers read.
//!
//! The layout is field-compatible with Kafka's RecordBatch v2 (all integers big-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  base_offset             assigned by the broker on append
//!      8     4  batch_length            bytes after this field
//!     12     4  partition_leader_epoch  set by the broker (the Raft term)
//!     16     1  magic                   always 2
//!     17     4  crc                     CRC-32 (IEEE, crc32fast) of bytes 21..end
//!     21     2  attributes              bits 0-2 compression, 3 timestamp type, 5 control
//!     23     4  last_offset_delta       record_count - 1
//!     27     8  base_timestamp          ms since the epoch
//!     35     8  max_timestamp
//!     43     8  producer_id             -1 when not idempotent
//!     51     2  producer_epoch
//!     53     4  base_sequence
//!     57     4  record_count
//!     61     -  records                 varint-framed, possibly compressed
//! ```
//!
//! Only Kafka's checksum differs (Kafka uses CRC-32C): a Kafka-protocol gateway would
//! recompute it. Base offset and leader epoch lie outside the checksum, so the broker can
//! stamp them without touching the rest. See `docs/format.md` for the record layout.

mod builder;
pub mod compression;
pub mod varint;
mod view;

pub use builder::{restamp_producer, BatchBuilder, Header, Record};
pub use view::{
    batch_len_at, verify_stored, BatchHeader, RecordBatch, RecordHeaders, RecordView, Records,
    ValidatedBatch,
};

/// Size of the fixed batch header; records start here.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batch_length`'s coverage starts (base offset + the length field itself).
pub const LOG_OVERHEAD: usize = 12;
/// The only batch format version rafka reads and writes.
pub const MAGIC: u8 = 2;
/// Most bytes a compressed records section may expand to. The broker refuses a batch
/// that expands further, and readers stop there instead of allocating without bound.
pub const MAX_DECOMPRESSED_LEN: usize = 64 << 20;

/// Byte positions of the header fields.
pub mod field {
    /// `base_offset: i64`.
    pub const BASE_OFFSET: usize = 0;
    /// `batch_length: i32`.
    pub const BATCH_LENGTH: usize = 8;
    /// `partition_leader_epoch: i32`.
    pub const LEADER_EPOCH: usize = 12;
    /// `magic: i8`.
    pub const MAGIC: usize = 16;
    /// `crc: u32`.
    pub const CRC: usize = 17;
    /// `attributes: i16`; the checksum covers everything from here on.
    pub const ATTRIBUTES: usize = 21;
    /// `last_offset_delta: i32`.
    pub const LAST_OFFSET_DELTA: usize = 23;
    /// `base_timestamp: i64`.
    pub const BASE_TIMESTAMP: usize = 27;
    /// `max_timestamp: i64`.
    pub const MAX_TIMESTAMP: usize = 35;
    /// `producer_id: i64`.
    pub const PRODUCER_ID: usize = 43;
    /// `producer_epoch: i16`.
    pub const PRODUCER_EPOCH: usize = 51;
    /// `base_sequence: i32`.
    pub const BASE_SEQUENCE: usize = 53;
    /// `record_count: i32`.
    pub const RECORD_COUNT: usize = 57;
}

/// Attribute bits.
pub mod attr {
    /// Mask of the compression codec bits.
    pub const COMPRESSION_MASK: i16 = 0x07;
    /// Timestamps were set by the broker on append (LogAppendTime).
    pub const LOG_APPEND_TIME: i16 = 0x08;
    /// Part of a transaction.
    pub const TRANSACTIONAL: i16 = 0x10;
    /// A control batch (no user records; e.g. Raft blank and membership entries).
    pub const CONTROL: i16 = 0x20;
}

/// Compression codec of a batch's records section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Records stored as they are.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing, as Kafka's Java client; raw snappy is read too).
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Compression {
    /// The codec named by attribute bits 0-2, if it is one.
    pub fn from_attributes(attributes: i16) -> Option<Self> {
        Some(match attributes & attr::COMPRESSION_MASK {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            _ => return None,
        })
    }

    /// The codec's name as configs and flags spell it (Kafka's `compression.type`).
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }

    /// The attribute bits for this codec.
    pub fn bits(self) -> i16 {
        match self {
            Self::None => 0,
            Self::Gzip => 1,
            Self::Snappy => 2,
            Self::Lz4 => 3,
            Self::Zstd => 4,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    /// Parses a codec name: `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::None, Self::Gzip, Self::Snappy, Self::Lz4, Self::Zstd]
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| {
                format!("compression must be none, gzip, snappy, lz4 or zstd, not `{s}`")
            })
    }
}

/// Why a batch was rejected. Each variant names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than a batch header.
    #[error("batch too short: {len} bytes, a header alone is {HEADER_LEN}")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// `batch_length` does not match the bytes given.
    #[error("bad batch length: header says {declared} bytes follow the length field, {actual} do")]
    BadLength {
        /// Value of the `batch_length` field.
        declared: i64,
        /// Bytes actually present after the field.
        actual: usize,
    },
    /// Not a v2 batch.
    #[error("bad magic byte {0}: only record batch v2 is supported")]
    BadMagic(u8),
    /// Checksum mismatch: the batch was damaged.
    #[error("crc mismatch: header says {expected:#010x}, contents give {actual:#010x}")]
    CrcMismatch {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over the contents.
        actual: u32,
    },
    /// Unknown compression bits.
    #[error("unknown compression codec {0} in attributes")]
    UnknownCompression(i16),
    /// A header field is out of range or inconsistent.
    #[error("bad batch header: {0}")]
    BadHeader(&'static str),
    /// A varint inside the records could not be decoded.
    #[error("bad varint in record {record}: {what} is {kind}")]
    BadVarint {
        /// Index of the record within the batch.
        record: usize,
        /// Which field.
        what: &'static str,
        /// "truncated" or "too long".
        kind: &'static str,
    },
    /// A compressed records section does not decompress, or expands too far.
    #[error("{0}")]
    Compression(#[from] compression::CompressionError),
    /// A record's fields do not fit its declared length, or the records do not fill the batch.
    #[error("bad record framing in record {record}: {what}")]
    BadRecord {
        /// Index of the record within the batch.
        record: usize,
        /// What is wrong.
        what: String,
    },
}

#[cfg(test)]
mod framing_tests;
#[cfg(test)]
mod tests;
