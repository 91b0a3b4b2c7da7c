//! Per-partition log settings, named as Kafka's topic configs are.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::LogError;

/// When appended data is forced to disk (`flush`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Before an append returns; a group of appends ([`append_all`]) shares one sync.
    ///
    /// [`append_all`]: super::PartitionLog::append_all
    #[default]
    Always,
    /// At most this long after an append (checked on append and by
    /// [`flush_if_due`](super::PartitionLog::flush_if_due)).
    Interval(Duration),
    /// Left to the operating system's writeback; only sealing a segment syncs it.
    Os,
}

impl FromStr for FlushPolicy {
    type Err = LogError;

    /// Parses `always`, `os` or `interval:<ms>`.
    fn from_str(s: &str) -> Result<Self, LogError> {
        match s {
            "always" => Ok(Self::Always),
            "os" => Ok(Self::Os),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| Self::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| {
                    LogError::Config(format!(
                        "flush must be `always`, `os` or `interval:<ms>` with ms > 0, not `{}`",
                        s.chars().take(200).collect::<String>()
                    ))
                }),
        }
    }
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Os => f.write_str("os"),
            Self::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

/// Settings of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Size a segment is preallocated to; the active segment rolls when a batch does not fit.
    pub segment_bytes: u64,
    /// Roll the active segment once it is this old (and not empty).
    pub segment_ms: Option<Duration>,
    /// Bytes of batches between two index entries.
    pub index_interval_bytes: u64,
    /// Durability policy.
    pub flush: FlushPolicy,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_ms: Option<Duration>,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            index_interval_bytes: 4096,
            flush: FlushPolicy::Always,
            retention_ms: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
        }
    }
}

/// Smallest `segment.bytes` accepted.
pub const MIN_SEGMENT_BYTES: u64 = 512;
/// Largest `segment.bytes` accepted (positions in the index are 32-bit).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;

impl LogConfig {
    /// Checks the ranges of the settings.
    pub fn validate(&self) -> Result<(), LogError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(LogError::Config(format!(
                "segment.bytes must be in [{MIN_SEGMENT_BYTES}, {MAX_SEGMENT_BYTES}], not {}",
                self.segment_bytes
            )));
        }
        if self.index_interval_bytes > self.segment_bytes {
            return Err(LogError::Config(format!(
                "index.interval.bytes {} exceeds segment.bytes {}",
                self.index_interval_bytes, self.segment_bytes
            )));
        }
        Ok(())
    }

    /// Entries the index of a segment of `segment_bytes` can need: at most one per interval, and never more
    /// than one per batch header.
    pub(crate) fn index_capacity(&self, segment_bytes: u64) -> usize {
        let step = self
            .index_interval_bytes
            .max(rafka_proto::batch::HEADER_LEN as u64);
        (segment_bytes / step) as usize + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policy_parses_and_prints() {
        for s in ["always", "os", "interval:250"] {
            assert_eq!(s.parse::<FlushPolicy>().unwrap().to_string(), s);
        }
        for bad in ["", "sometimes", "interval:", "interval:0", "interval:-5"] {
            let err = bad.parse::<FlushPolicy>().unwrap_err().to_string();
            assert!(err.contains("flush must be"), "{err}");
        }
    }

    #[test]
    fn validation_names_the_setting() {
        let c = LogConfig {
            segment_bytes: 10,
            ..LogConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("segment.bytes"));
        assert!(LogConfig::default().validate().is_ok());
    }
}
