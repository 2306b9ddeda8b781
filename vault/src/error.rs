//! The vault's error: a [`VaultErrorKind`] callers match, the context (a path, the point), a
//! sentence, and the error of the crate below as `source`. An error that comes from the reader,
//! the writer or the remote keeps its message and its kind (mapped once, here), so that a
//! caller never reads a message to tell one failure from another.

use std::fmt;
use std::path::{Path, PathBuf};

use replog_image::{ImageError, ImageErrorKind};
use replog_nbd::{NbdError, NbdErrorKind};
use replog_reader::{ReadError, ReadErrorKind};
use replog_remote::{Refusal, RemoteError, RemoteErrorKind};
use replog_writer::{WriteError, WriteErrorKind};

/// What went wrong, for callers that react to it (the CLI maps each kind to an exit code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VaultErrorKind {
    /// A file, directory or object the vault needs is missing.
    NotFound,
    /// The location holds no vault, or none this replog can open.
    NotAVault,
    /// Bytes of the vault are wrong: a checksum, a length, a record out of place.
    Damaged,
    /// The operating system or the object store failed an operation.
    Io,
    /// The storage is full.
    NoSpace,
    /// The request is invalid as things are: an unknown disk, a range past the end.
    InvalidRequest,
    /// Something to be created exists, and replacing it was not asked for.
    AlreadyExists,
    /// Another process holds the vault or the output (its writer lock, a sync).
    Locked,
    /// The writer failed earlier and acknowledges nothing more until the vault is reopened.
    Poisoned,
    /// The vault was migrated: it takes no more writes or points.
    Migrated,
    /// A reader's lease stands in the way.
    Leased,
    /// No recovery point has the id asked for.
    NoSuchPoint,
    /// No recovery point was taken at or before the time asked for.
    NoPointAtTime,
    /// The vault has no recovery point yet.
    NoPoints,
    /// A test failover is already active on the vault.
    TestFailoverActive,
    /// A retention change needs a policy, and the vault has none.
    NoRetentionPolicy,
    /// The remote cannot be used: a bad URL, no credentials, no bucket, an older manifest.
    Remote,
}

impl VaultErrorKind {
    /// Every kind, for tables that must cover them all.
    pub const ALL: [VaultErrorKind; 17] = [
        VaultErrorKind::NotFound,
        VaultErrorKind::NotAVault,
        VaultErrorKind::Damaged,
        VaultErrorKind::Io,
        VaultErrorKind::NoSpace,
        VaultErrorKind::InvalidRequest,
        VaultErrorKind::AlreadyExists,
        VaultErrorKind::Locked,
        VaultErrorKind::Poisoned,
        VaultErrorKind::Migrated,
        VaultErrorKind::Leased,
        VaultErrorKind::NoSuchPoint,
        VaultErrorKind::NoPointAtTime,
        VaultErrorKind::NoPoints,
        VaultErrorKind::TestFailoverActive,
        VaultErrorKind::NoRetentionPolicy,
        VaultErrorKind::Remote,
    ];
}

/// An error of a vault operation.
#[derive(Debug, thiserror::Error)]
pub struct VaultError {
    kind: VaultErrorKind,
    path: Option<PathBuf>,
    detail: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl VaultError {
    /// An error of `kind`, said in `detail` (which names what it concerns).
    pub fn new(kind: VaultErrorKind, detail: impl Into<String>) -> VaultError {
        VaultError {
            kind,
            path: None,
            detail: detail.into(),
            source: None,
        }
    }

    /// The same error, about `path`.
    pub fn in_file(mut self, path: impl Into<PathBuf>) -> VaultError {
        self.path = Some(path.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> VaultErrorKind {
        self.kind
    }

    /// The file it concerns, when one is known: relative to the vault for the vault's own files
    /// (`journal/….seg`), as given otherwise.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The reader's error this came from, if it did.
    pub fn read_error(&self) -> Option<&ReadError> {
        self.source.as_ref()?.downcast_ref()
    }

    fn wrap(
        kind: VaultErrorKind,
        path: Option<PathBuf>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> VaultError {
        VaultError {
            kind,
            path,
            detail: source.to_string(),
            source: Some(Box::new(source)),
        }
    }
}

/// The kind of a reader's error. A remote object read through the storage seam arrives as the
/// reader's I/O error with the remote error inside: its damage is damage.
fn read_kind(e: &ReadError) -> VaultErrorKind {
    if RemoteError::find_in(e).is_some_and(RemoteError::is_damage) {
        return VaultErrorKind::Damaged;
    }
    match e.kind() {
        ReadErrorKind::NotFound => VaultErrorKind::NotFound,
        ReadErrorKind::NotAVault | ReadErrorKind::Unsupported => VaultErrorKind::NotAVault,
        ReadErrorKind::Damaged => VaultErrorKind::Damaged,
        ReadErrorKind::Io => VaultErrorKind::Io,
        ReadErrorKind::InvalidRequest => VaultErrorKind::InvalidRequest,
        ReadErrorKind::AlreadyExists => VaultErrorKind::AlreadyExists,
    }
}

impl From<ReadError> for VaultError {
    fn from(e: ReadError) -> VaultError {
        let path = e.path().map(Path::to_path_buf);
        VaultError::wrap(read_kind(&e), path, e)
    }
}

impl From<WriteError> for VaultError {
    fn from(e: WriteError) -> VaultError {
        let path = e.path().map(Path::to_path_buf);
        let kind = match e.kind() {
            WriteErrorKind::Io => VaultErrorKind::Io,
            WriteErrorKind::NoSpace => VaultErrorKind::NoSpace,
            WriteErrorKind::NotAVault => VaultErrorKind::NotAVault,
            WriteErrorKind::Damaged => VaultErrorKind::Damaged,
            WriteErrorKind::InvalidRequest => VaultErrorKind::InvalidRequest,
            WriteErrorKind::AlreadyExists => VaultErrorKind::AlreadyExists,
            WriteErrorKind::Locked => VaultErrorKind::Locked,
            WriteErrorKind::Poisoned => VaultErrorKind::Poisoned,
            WriteErrorKind::Migrated => VaultErrorKind::Migrated,
            WriteErrorKind::Leased => VaultErrorKind::Leased,
        };
        VaultError::wrap(kind, path, e)
    }
}

/// An image error keeps its kind's meaning: a damaged source image is no damage to the vault, it
/// is refused as a request the image cannot serve. The image's path stays as given.
impl From<ImageError> for VaultError {
    fn from(e: ImageError) -> VaultError {
        let kind = match e.kind() {
            ImageErrorKind::NotFound => VaultErrorKind::NotFound,
            ImageErrorKind::Io => VaultErrorKind::Io,
            ImageErrorKind::Truncated
            | ImageErrorKind::BadFooter
            | ImageErrorKind::Corrupt
            | ImageErrorKind::Unsupported
            | ImageErrorKind::ToolMissing
            | ImageErrorKind::ToolFailed => VaultErrorKind::InvalidRequest,
        };
        let path = e.path().map(Path::to_path_buf);
        VaultError::wrap(kind, path, e)
    }
}

impl From<RemoteError> for VaultError {
    fn from(e: RemoteError) -> VaultError {
        // A reader's error inside keeps its kind; the remote's message names the object, so
        // the error stays the remote's (no vault-relative path).
        let kind = match e.kind() {
            RemoteErrorKind::Read(_) => {
                read_kind(e.read_error().expect("a Read kind holds a reader error"))
            }
            RemoteErrorKind::Refused(refusal) => match refusal {
                Refusal::NotAVault => VaultErrorKind::NotAVault,
                Refusal::SyncRunning => VaultErrorKind::Locked,
                Refusal::NoPoint => VaultErrorKind::NoPoints,
                Refusal::OtherVault
                | Refusal::NoRemote
                | Refusal::NotOnRemote
                | Refusal::Unusable => VaultErrorKind::Remote,
            },
            RemoteErrorKind::Damaged => VaultErrorKind::Damaged,
            RemoteErrorKind::Store | RemoteErrorKind::LocalIo => VaultErrorKind::Io,
            RemoteErrorKind::LocalNotFound => VaultErrorKind::NotFound,
            RemoteErrorKind::BadUrl
            | RemoteErrorKind::NoCredentials
            | RemoteErrorKind::NoBucket
            | RemoteErrorKind::Older => VaultErrorKind::Remote,
        };
        VaultError::wrap(kind, None, e)
    }
}

/// The kind of an NBD source's error. A server that lacks what was asked (a dirty bitmap, an
/// export), refuses it, or finds the request invalid makes the request one this source cannot
/// serve; a connection that fails or breaks the protocol is an I/O failure.
fn nbd_kind(kind: NbdErrorKind) -> VaultErrorKind {
    match kind {
        NbdErrorKind::Refused
        | NbdErrorKind::Unsupported
        | NbdErrorKind::InvalidRequest
        | NbdErrorKind::ReadOnly => VaultErrorKind::InvalidRequest,
        NbdErrorKind::NoSpace => VaultErrorKind::NoSpace,
        NbdErrorKind::Io
        | NbdErrorKind::Protocol
        | NbdErrorKind::TooBig
        | NbdErrorKind::Command
        | NbdErrorKind::ShuttingDown
        | NbdErrorKind::AddressInUse => VaultErrorKind::Io,
    }
}

impl VaultError {
    /// An NBD source's error, said about `source` (its URI and export).
    pub(crate) fn from_nbd(source: &str, e: NbdError) -> VaultError {
        VaultError {
            kind: nbd_kind(e.kind),
            path: None,
            detail: format!("{source}: {e}"),
            source: Some(Box::new(e)),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = VaultError> = std::result::Result<T, E>;
