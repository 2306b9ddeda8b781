//! The writer lock: one writer per vault, enforced with an advisory lock on `LOCK`.
//!
//! The simulated backend has no processes to exclude, so it takes no lock.

use std::fs::{File, TryLockError};
use std::path::Path;

use replog_format::layout::LOCK_FILE;
use replog_io::{BackendKind, Storage};

use crate::error::{Result, WriteError, WriteErrorKind};

/// Held for the writer's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct VaultLock {
    _file: Option<File>,
}

impl VaultLock {
    /// Takes the lock of the vault at `dir`, failing at once if another process holds it.
    pub(crate) fn acquire(storage: &dyn Storage, dir: &Path) -> Result<VaultLock> {
        if storage.kind() == BackendKind::Sim {
            return Ok(VaultLock { _file: None });
        }
        let path = dir.join(LOCK_FILE);
        let file = replog_io::sync::open_lock_file(&path)
            .map_err(|e| WriteError::io(&path, None, "opening the lock file", e))?;
        match file.try_lock() {
            Ok(()) => Ok(VaultLock { _file: Some(file) }),
            Err(TryLockError::WouldBlock) => Err(WriteError::new(
                WriteErrorKind::Locked,
                format!(
                    "{}: another replog process is writing to this vault; wait for it to finish",
                    path.display()
                ),
            )),
            Err(TryLockError::Error(e)) => Err(WriteError::io(&path, None, "locking", e)),
        }
    }
}
