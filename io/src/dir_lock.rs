//! An exclusive lock on a directory that several processes may write into (a failover's output
//! directory), so that two runs never interleave their files there.
//!
//! The lock is an `flock` on a file in the directory, opened with `O_NOFOLLOW` (a link planted at
//! its name is refused, never followed) and taken without waiting: a second run fails at once
//! and names the holder, whose pid the file holds. The holder removes the file while it still
//! holds the lock. A process that opened the file just before that removal and locks it after
//! finds that the name no longer refers to the file it locked, and starts again, so two holders
//! never exist at once. The kernel drops the locks of a process that dies, so a file a killed run
//! left behind is simply taken over.
//!
//! The lock goes through the [`Storage`] like every other file access, so the simulator takes
//! it, and crashes around it, as it does the writer's and the leases' locks.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{File, LockMode, Storage};

/// How many times a lock file that keeps being removed under us is opened again.
const ATTEMPTS_MAX: u32 = 1000;

/// An exclusive lock on a directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    /// The locked open: the lock lasts as long as it does.
    _file: Arc<dyn File>,
}

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another process holds the lock.
    #[error("{} is held by another process{}", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Held {
        /// The lock file.
        path: PathBuf,
        /// The holder's pid, when it had written it.
        pid: Option<u32>,
    },
    /// The operating system failed an operation on the lock file.
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl DirLock {
    /// Locks `dir` (which must exist) through its lock file `dir/name`, or fails at once with
    /// [`DirLockError::Held`] when another process holds it.
    pub fn try_lock(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        name: &str,
    ) -> Result<DirLock, DirLockError> {
        let path = dir.join(name);
        let io = |op, source| DirLockError::Io {
            path: path.clone(),
            op,
            source,
        };
        for _ in 0..ATTEMPTS_MAX {
            let file = storage
                .open_lock_file(&path)
                .map_err(|e| io("open the lock file", e))?;
            if !file
                .lock(LockMode::Exclusive, false)
                .map_err(|e| io("lock the lock file", e))?
            {
                return Err(DirLockError::Held {
                    pid: holder_pid(file.as_ref()),
                    path,
                });
            }
            let locked = file.id().map_err(|e| io("look at the lock file", e))?;
            // `None`: the holder removed it between our open and our lock; another identity:
            // it was removed and created again. Either way, open the file now at the name.
            if storage
                .file_id(&path)
                .map_err(|e| io("look at the lock file", e))?
                == Some(locked)
            {
                // Best effort: the pid only makes a refusal's message more useful. Always the
                // same length, so it replaces a previous holder's pid without a truncation.
                let pid = format!("{:<11}\n", std::process::id());
                let _ = file.write_all_at(pid.as_bytes(), 0);
                return Ok(DirLock {
                    storage: Arc::clone(storage),
                    path,
                    _file: file,
                });
            }
        }
        Err(io(
            "lock the lock file",
            io::Error::other("it was replaced every time it was locked"),
        ))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Removed while still locked (`_file` is dropped after this); see the module
        // documentation. Best effort: a file left behind is taken over by the next run.
        let _ = self.storage.remove_file(&self.path);
    }
}

/// The pid the holder wrote, if it did.
fn holder_pid(file: &dyn File) -> Option<u32> {
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::sync::SyncStorage;

    #[test]
    fn a_second_lock_fails_at_once_naming_the_holder_and_the_first_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SyncStorage::new());
        let first = DirLock::try_lock(&storage, dir.path(), ".lock").unwrap();
        match DirLock::try_lock(&storage, dir.path(), ".lock") {
            Err(DirLockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("a held lock was taken again: {other:?}"),
        }
        drop(first);
        assert!(!dir.path().join(".lock").exists(), "the holder removes it");
        let again = DirLock::try_lock(&storage, dir.path(), ".lock").unwrap();
        assert!(again.path().exists());
    }

    #[test]
    fn a_link_at_the_lock_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".lock")).unwrap();
        let err = DirLock::try_lock(
            &(Arc::new(SyncStorage::new()) as Arc<dyn Storage>),
            dir.path(),
            ".lock",
        )
        .unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
    }

    #[test]
    fn the_simulator_takes_the_lock_and_a_crash_frees_it() {
        let sim = crate::sim::SimStorage::new(1);
        let storage: Arc<dyn Storage> = sim.clone();
        let dir = Path::new("/sim/out");
        storage.create_dir_all(dir).unwrap();
        let first = DirLock::try_lock(&storage, dir, ".lock").unwrap();
        match DirLock::try_lock(&storage, dir, ".lock") {
            Err(DirLockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("a held lock was taken again: {other:?}"),
        }
        // Every process died with the machine: the lock file may stay, its lock does not.
        sim.crash(0);
        std::mem::forget(first);
        storage.create_dir_all(dir).unwrap();
        let again = DirLock::try_lock(&storage, dir, ".lock").unwrap();
        drop(again);
        assert_eq!(storage.file_id(&dir.join(".lock")).unwrap(), None);
    }
}
