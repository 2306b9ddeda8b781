//! Removing and measuring vault files, and the readers' lease registry as the writer sees it.
//! Shared by recovery, compaction and migration, which all delete what a manifest no longer
//! names; knows nothing of the journal or the bases.

use std::path::{Path, PathBuf};

use replog_io::{OpenMode, Storage};
use replog_reader::{LiveLease, Registrations};

use crate::error::{Result, WriteError, WriteErrorKind};

/// Removes files (missing ones are fine) and syncs each directory touched.
pub(crate) fn remove_files(
    storage: &dyn Storage,
    paths: impl Iterator<Item = PathBuf>,
) -> Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        match storage.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(WriteError::io(&path, None, "removing", e)),
        }
        let dir = path.parent().expect("vault files live in directories");
        if !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }
    for dir in dirs {
        storage
            .sync_dir(&dir)
            .map_err(|e| WriteError::io(&dir, None, "syncing the directory", e))?;
    }
    Ok(())
}

/// The length of `path`; 0 when it does not exist.
pub(crate) fn file_len(storage: &dyn Storage, path: &Path) -> Result<u64> {
    match storage.open(path, OpenMode::Read) {
        Ok(f) => f
            .len()
            .map_err(|e| WriteError::io(path, None, "measuring", e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(WriteError::io(path, None, "opening", e)),
    }
}

/// The registration lock of the vault at `dir`, held exclusive, and the live leases.
pub(crate) fn live_leases(
    storage: &dyn Storage,
    dir: &Path,
    seed: u32,
) -> Result<(Registrations, Vec<LiveLease>)> {
    let registrations = Registrations::lock(storage, dir, seed)
        .map_err(|e| WriteError::read(WriteErrorKind::Io, None, e))?;
    let live = registrations
        .live()
        .map_err(|e| WriteError::read(WriteErrorKind::Io, None, e))?;
    Ok((registrations, live))
}
