//! An exclusive lock on the data directory, so two brokers never share one.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::BrokerError;

/// Held for the life of the server; released when dropped (or when the process dies).
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<Self, BrokerError> {
        let path = dir.join(".lock");
        let file = File::create(&path)
            .map_err(|e| BrokerError::Internal(format!("cannot create {}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(BrokerError::Internal(format!(
                "data dir {} is in use by another broker ({})",
                dir.display(),
                std::io::Error::last_os_error()
            )));
        }
        Ok(Self { _file: file })
    }
}
