//! The crate's one error type: a small matchable [`CryptErrorKind`], the file and byte offset
//! where there is one, and a sentence saying what was expected and what was found.
//!
//! No error of this crate ever carries secret bytes: contexts name paths, offsets, lengths,
//! modes and fingerprints, never a key, a secret or a passphrase.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, for callers that react differently to each. No caller should read the
/// message text to decide anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CryptErrorKind {
    /// The operating system failed an operation (open, read, write, sync).
    Io,
    /// A key or identity file is readable by others, owned by another user, or not a regular
    /// file; or a symbolic link was given where the file itself is required.
    KeyFilePermissions,
    /// A key file's bytes are wrong: magic, reserved bytes, check field or length.
    KeyFileDamaged,
    /// A file or structure ends before its fixed or declared size.
    Truncated,
    /// A format version this code does not read.
    Unsupported,
    /// No key slot opens with the key given.
    WrongKey,
    /// A sealed object fails authentication: wrong key, nonce or associated data, or damaged
    /// bytes. No plaintext is returned.
    Authentication,
    /// No key was given: neither a path nor the environment variable.
    NoKey,
    /// A key slot file's bytes are wrong: magic, checksum, a count or length over its bound, an
    /// unknown kind.
    SlotsDamaged,
    /// The last key slot cannot be removed: the data would be lost.
    LastSlot,
    /// A file or slot exists and replog does not overwrite it.
    Exists,
    /// No key slot has the id given.
    NoSuchSlot,
    /// An argument is out of range: Argon2 parameters, a recipient string, a slot count.
    Invalid,
}

/// An error of the crypt crate, naming the file and the byte offset where it was found.
#[derive(Debug, thiserror::Error)]
pub struct CryptError {
    kind: CryptErrorKind,
    path: Option<PathBuf>,
    offset: Option<u64>,
    context: String,
    #[source]
    source: Option<io::Error>,
}

impl fmt::Display for CryptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.offset) {
            (Some(path), Some(offset)) => write!(f, "{} at byte {offset}: ", path.display())?,
            (Some(path), None) => write!(f, "{}: ", path.display())?,
            (None, Some(offset)) => write!(f, "at byte {offset}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.context)
    }
}

impl CryptError {
    /// An error of `kind` with a sentence saying what was expected and what was found.
    pub fn new(kind: CryptErrorKind, context: impl Into<String>) -> CryptError {
        CryptError {
            kind,
            path: None,
            offset: None,
            context: context.into(),
            source: None,
        }
    }

    /// An operating-system error while doing `op` ("open", "read", ...) on `path`.
    pub fn io(path: &Path, op: &str, error: io::Error) -> CryptError {
        let kind = match error.kind() {
            io::ErrorKind::AlreadyExists => CryptErrorKind::Exists,
            _ => CryptErrorKind::Io,
        };
        CryptError {
            kind,
            path: Some(path.to_path_buf()),
            offset: None,
            context: format!("cannot {op}: {error}"),
            source: Some(error),
        }
    }

    /// The same error, found in `path`.
    pub fn in_file(mut self, path: &Path) -> CryptError {
        self.path = Some(path.to_path_buf());
        self
    }

    /// The same error, found at byte `offset` of its file or structure.
    pub fn at(mut self, offset: u64) -> CryptError {
        self.offset = Some(offset);
        self
    }

    /// What kind of failure it is.
    pub fn kind(&self) -> CryptErrorKind {
        self.kind
    }

    /// The file the error was found in, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte offset the error was found at, if any.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }
}

/// The crate's result type.
pub type Result<T, E = CryptError> = std::result::Result<T, E>;
