//! Data directories written by releases before the one engine: a single broker kept its
//! topics in `topics/<name>.toml` and its partition logs (`<topic>-<n>/`) without Raft
//! state. Such a directory is migrated in place on the first start of this release:
//!
//! 1. before the broker's node starts, every partition log listed in `topics/` is adopted
//!    as the log of a one-voter group (`raft::adopt`: batches become committed entries,
//!    record offsets unchanged);
//! 2. once the one-voter metadata group runs, each topic is created in it with its
//!    partition count and config overrides, and its replicas open the adopted logs;
//! 3. `topics/` is renamed `topics.migrated/`, which marks the directory done.
//!
//! Every step can run again: a crash part way through is finished on the next start.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::config::apply_topic_configs;
use crate::error::BrokerError;
use crate::log::LogConfig;
use crate::raft::adopt::{adopt_log, has_raft_state};

/// Where the single-broker engine kept its topic list.
pub const LEGACY_TOPICS_DIR: &str = "topics";
/// What that directory is renamed to once migrated.
pub const MIGRATED_TOPICS_DIR: &str = "topics.migrated";

/// A topic as the single-broker engine recorded it (`topics/<name>.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTopic {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Config overrides by Kafka name.
    pub configs: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct TopicFile {
    partitions: u32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Internal(format!("migrating {}: {what}: {e}", path.display()))
}

/// The topics of a data directory written by the single-broker engine and not yet
/// migrated; `None` for any other directory.
pub fn legacy_topics(data_dir: &Path) -> Result<Option<Vec<LegacyTopic>>, BrokerError> {
    let dir = data_dir.join(LEGACY_TOPICS_DIR);
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut topics = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| io_error("cannot list", &dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| io_error("cannot list", &dir, e))?.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"))
        else {
            continue; // a temporary file of an interrupted write
        };
        let text = std::fs::read_to_string(&path).map_err(|e| io_error("cannot read", &path, e))?;
        let file: TopicFile =
            toml::from_str(&text).map_err(|e| io_error("bad topic file", &path, e))?;
        topics.push(LegacyTopic {
            name: name.to_string(),
            partitions: file.partitions,
            configs: file.configs,
        });
    }
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Some(topics))
}

/// Step 1: adopts every partition log of `topics` as a one-voter group's log (those
/// already adopted are left as they are).
pub fn adopt_partitions(
    data_dir: &Path,
    topics: &[LegacyTopic],
    defaults: &LogConfig,
    node: u32,
    address: &str,
) -> Result<(), BrokerError> {
    for topic in topics {
        let config = apply_topic_configs(defaults, &topic.configs)
            .map_err(|e| BrokerError::InvalidRequest(format!("topic `{}`: {e}", topic.name)))?;
        for p in 0..topic.partitions {
            let dir = data_dir.join(format!("{}-{p}", topic.name));
            if !dir.is_dir() || has_raft_state(&dir) {
                continue;
            }
            let adopted = adopt_log(&dir, config.clone(), node as u64, address)
                .map_err(|e| BrokerError::Internal(format!("migrating {}-{p}: {e}", topic.name)))?;
            tracing::info!(
                topic = %topic.name,
                partition = p,
                batches = adopted.batches,
                log_start_offset = adopted.log_start_offset,
                log_end_offset = adopted.log_end_offset,
                "adopted the partition log of an earlier release"
            );
        }
    }
    Ok(())
}

/// Step 3: marks the directory migrated.
pub fn finish(data_dir: &Path) -> Result<(), BrokerError> {
    let from = data_dir.join(LEGACY_TOPICS_DIR);
    let to = data_dir.join(MIGRATED_TOPICS_DIR);
    std::fs::rename(&from, &to).map_err(|e| io_error("cannot rename", &from, e))
}
