//! Data directories written by releases before the one engine: a single broker kept its
//! topics in `topics/<name>.toml` and its partition logs without Raft state.

use std::path::Path;

use crate::cluster::node::METADATA_DIR;
use crate::error::BrokerError;

/// Where the single-broker engine kept its topic list.
pub const LEGACY_TOPICS_DIR: &str = "topics";

/// True for a data directory of the old single-broker engine not yet migrated.
pub fn is_legacy(data_dir: &Path) -> bool {
    data_dir.join(LEGACY_TOPICS_DIR).is_dir() && !data_dir.join(METADATA_DIR).exists()
}

/// Refuses a data directory this release cannot open as it is.
pub fn check_data_dir(data_dir: &Path) -> Result<(), BrokerError> {
    if is_legacy(data_dir) {
        return Err(BrokerError::InvalidRequest(format!(
            "{} was written by the single-broker engine of an earlier release (topics in \
             `{LEGACY_TOPICS_DIR}/`); it is not migrated yet",
            data_dir.display()
        )));
    }
    Ok(())
}
