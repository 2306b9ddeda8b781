//! The writer lock: one writer per vault, enforced with an advisory lock on `LOCK`.
//!
//! The lock file is opened and locked through the storage ([`Storage::open_lock_file`],
//! [`File::lock`]): on a real filesystem an `flock`, which the kernel drops when the writer's
//! process dies; in the simulator a lock that a simulated crash drops.

use std::path::Path;
use std::sync::Arc;

use replog_format::layout::LOCK_FILE;
use replog_io::{File, LockMode, Storage};

use crate::error::{Result, WriteError, WriteErrorKind};

/// Held for the writer's lifetime; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct VaultLock {
    _file: Arc<dyn File>,
}

impl VaultLock {
    /// Takes the lock of the vault at `dir`, failing at once if another process holds it.
    pub(crate) fn acquire(storage: &dyn Storage, dir: &Path) -> Result<VaultLock> {
        let path = dir.join(LOCK_FILE);
        let file = storage
            .open_lock_file(&path)
            .map_err(|e| WriteError::io(&path, None, "opening the lock file", e))?;
        match file.lock(LockMode::Exclusive, false) {
            Ok(true) => Ok(VaultLock { _file: file }),
            Ok(false) => Err(WriteError::new(
                WriteErrorKind::Locked,
                format!(
                    "{}: another replog process is writing to this vault; wait for it to finish",
                    path.display()
                ),
            )),
            Err(e) => Err(WriteError::io(&path, None, "locking", e)),
        }
    }
}
