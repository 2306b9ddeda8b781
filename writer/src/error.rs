//! The writer's error: a small matchable kind plus a sentence that names the file and offset.

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, for callers that react to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteErrorKind {
    /// An I/O error from the storage.
    Io,
    /// The storage is full; nothing after the last acknowledged point was acknowledged.
    NoSpace,
    /// The directory is not a vault, or not one this code can open.
    NotAVault,
    /// A vault file failed a checksum or cross-check.
    Damaged,
    /// The request itself is invalid (unknown disk, range past the end, bad name, ...).
    InvalidRequest,
    /// The thing to create already exists.
    AlreadyExists,
    /// Another process holds the vault's writer lock.
    Locked,
    /// An earlier write or sync failed; nothing more is acknowledged until the vault is reopened.
    Poisoned,
    /// A migration of the vault started or completed: it takes no more writes or points.
    Migrated,
    /// A reader's lease stands in the way, and waiting for it was not asked for or timed out.
    Leased,
}

/// A writer operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    /// The kind of failure.
    pub kind: WriteErrorKind,
    message: String,
    /// The file the failure concerns, when one does.
    path: Option<PathBuf>,
    /// The byte offset in that file, when one applies.
    offset: Option<u64>,
    #[source]
    source: Option<io::Error>,
}

impl WriteError {
    /// An error with no underlying I/O error.
    pub fn new(kind: WriteErrorKind, message: impl Into<String>) -> WriteError {
        WriteError {
            kind,
            message: message.into(),
            path: None,
            offset: None,
            source: None,
        }
    }

    /// An I/O error while doing `what` on `path` at byte `offset` (if one applies).
    pub fn io(path: &Path, offset: Option<u64>, what: &str, source: io::Error) -> WriteError {
        let kind = match source.kind() {
            io::ErrorKind::StorageFull => WriteErrorKind::NoSpace,
            io::ErrorKind::AlreadyExists => WriteErrorKind::AlreadyExists,
            _ => WriteErrorKind::Io,
        };
        let at = offset.map(|o| format!(" at byte {o}")).unwrap_or_default();
        WriteError {
            kind,
            message: format!("{}: {what}{at} failed: {source}", path.display()),
            path: Some(path.to_path_buf()),
            offset,
            source: Some(source),
        }
    }

    /// A decode failure in `path`; the decoder's offset is relative to `base`.
    pub fn damaged(path: &Path, base: u64, e: replog_format::DecodeError) -> WriteError {
        let e = e.at(base);
        WriteError::new(WriteErrorKind::Damaged, format!("{}: {e}", path.display()))
    }

    /// The file the failure concerns, when one does.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte offset in [`WriteError::path`] where it failed, when one applies.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = WriteError> = std::result::Result<T, E>;
