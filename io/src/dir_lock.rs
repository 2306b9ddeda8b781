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
//! It is not taken in the simulator, which has no links or inode numbers to check the name
//! against; the locks that the simulator does model (the writer's, the leases', the sync's)
//! go through [`Storage::open_lock_file`](crate::Storage::open_lock_file).

use std::fs::{self, OpenOptions, TryLockError};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{BackendKind, Storage};

/// How many times a lock file that keeps being removed under us is opened again.
const ATTEMPTS_MAX: u32 = 1000;

/// An exclusive lock on a directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    path: PathBuf,
    /// `None` on the simulator.
    file: Option<fs::File>,
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
        storage: &dyn Storage,
        dir: &Path,
        name: &str,
    ) -> Result<DirLock, DirLockError> {
        let path = dir.join(name);
        if storage.kind() == BackendKind::Sim {
            return Ok(DirLock { path, file: None });
        }
        let io = |op, source| DirLockError::Io {
            path: path.clone(),
            op,
            source,
        };
        for _ in 0..ATTEMPTS_MAX {
            let file = open_lock_file(&path).map_err(|e| io("open the lock file", e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    return Err(DirLockError::Held {
                        pid: holder_pid(&file),
                        path,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io("lock the lock file", e)),
            }
            let locked = file
                .metadata()
                .map_err(|e| io("look at the lock file", e))?;
            match fs::symlink_metadata(&path) {
                Ok(m) if (m.dev(), m.ino()) == (locked.dev(), locked.ino()) => {
                    // Best effort: the pid only makes a refusal's message more useful.
                    let pid = format!("{}\n", std::process::id());
                    let _ = file
                        .set_len(0)
                        .and_then(|()| file.write_all_at(pid.as_bytes(), 0));
                    return Ok(DirLock {
                        path,
                        file: Some(file),
                    });
                }
                // The holder removed it between our open and our lock: open the new one.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("look at the lock file", e)),
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
        if let Some(file) = self.file.take() {
            // Removed while still locked; see the module documentation. Best effort: a file
            // left behind is taken over by the next run.
            let _ = fs::remove_file(&self.path);
            drop(file);
        }
    }
}

/// Opens (creating it) the lock file without following a link; read-only where another user's
/// file cannot be opened for writing (a lock needs no write access).
fn open_lock_file(path: &Path) -> io::Result<fs::File> {
    let open = |write: bool| {
        OpenOptions::new()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    let opened = match open(true) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => open(false),
        other => other,
    };
    opened.map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => io::Error::new(
            io::ErrorKind::InvalidInput,
            "a symbolic link is in its place, and replog never opens a lock file through a link \
             (remove the link)",
        ),
        _ => e,
    })
}

/// The pid the holder wrote, if it did.
fn holder_pid(mut file: &fs::File) -> Option<u32> {
    let mut text = String::new();
    Read::take(&mut file, 32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::SyncStorage;

    #[test]
    fn a_second_lock_fails_at_once_naming_the_holder_and_the_first_release_frees_it() {
        let dir = tempfile::tempdir().unwrap();
        let storage = SyncStorage::new();
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
        let err = DirLock::try_lock(&SyncStorage::new(), dir.path(), ".lock").unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
    }
}
