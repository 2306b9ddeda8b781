//! What can go wrong with a remote, said with the object key or local file it concerns.

use std::path::PathBuf;

/// A remote operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The object store refused or could not be reached, after every attempt the retry budget
    /// allows.
    #[error("{url}/{key}: cannot {op} (after {attempts} attempt{}): {source}", if *attempts == 1 { "" } else { "s" })]
    Store {
        /// The remote's URL.
        url: String,
        /// The object's key under the remote's prefix.
        key: String,
        /// What was being done.
        op: &'static str,
        /// Requests made before giving up.
        attempts: u32,
        /// The store's error.
        #[source]
        source: Box<object_store::Error>,
    },
    /// The URL is not one replog can use (another scheme, a malformed one, too long).
    #[error("unsupported URL {url:?}: {detail}")]
    Url {
        /// The URL as given (cut at 100 characters).
        url: String,
        /// What is wrong and what to give instead.
        detail: String,
    },
    /// No credentials were found for the remote.
    #[error("{url}: no credentials were found: {hint}")]
    NoCredentials {
        /// The remote's URL.
        url: String,
        /// Which settings provide them.
        hint: &'static str,
    },
    /// The bucket (S3) or container (Azure) does not exist.
    #[error("{url}: {noun} {bucket} does not exist: create it, or give the right name")]
    NoBucket {
        /// The remote's URL.
        url: String,
        /// "bucket" (S3) or "container" (Azure).
        noun: &'static str,
        /// The bucket or container.
        bucket: String,
    },
    /// The remote no longer holds a remote manifest it held: the newest one is missing or
    /// damaged, or is older than the one the local vault last confirmed (`remote/LATEST`).
    /// Reading an older manifest would silently roll the vault back.
    #[error("{url}: {detail}")]
    Older {
        /// The remote's URL.
        url: String,
        /// The newest manifest number known (listed, marked or confirmed locally).
        expected_seq: u64,
        /// The newest usable manifest on the remote (0: none).
        found_seq: u64,
        /// What is missing and what to do.
        detail: String,
    },
    /// An object is there but its bytes are not what they must be.
    #[error("{url}/{key}: {detail}")]
    Damaged {
        /// The remote's URL.
        url: String,
        /// The object's key.
        key: String,
        /// What was expected and what was found.
        detail: String,
    },
    /// A local file could not be read or written.
    #[error("{}: {op}: {source}", path.display())]
    Local {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The local vault could not be read.
    #[error(transparent)]
    Read(#[from] replog_reader::ReadError),
    /// The operation is not allowed as things are: [`Refusal`] says why, for callers to match.
    #[error("{detail}")]
    Refused {
        /// Why.
        kind: Refusal,
        /// The sentence for people, naming the vault, file or remote.
        detail: String,
    },
}

/// Why a remote operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The directory or the remote prefix holds no replog vault.
    NotAVault,
    /// The remote prefix or a configuration belongs to another vault.
    OtherVault,
    /// The vault has no remote configured.
    NoRemote,
    /// Another sync of the vault is running.
    SyncRunning,
    /// The remote holds no manifest yet, or its manifest does not name a file.
    NotOnRemote,
    /// The vault has no recovery point to sync.
    NoPoint,
    /// The remote cannot be used from here (its client or runtime cannot start).
    Unusable,
}

impl Refusal {
    /// The refusal, said in `detail`.
    pub fn because(self, detail: impl Into<String>) -> RemoteError {
        RemoteError::Refused {
            kind: self,
            detail: detail.into(),
        }
    }
}

impl RemoteError {
    /// A local I/O error on `path`.
    pub fn local(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        RemoteError::Local {
            path: path.into(),
            op,
            source,
        }
    }

    /// This error as an `io::Error`, for the storage seam (which speaks `io::Error`): a missing
    /// object is `NotFound`, everything else keeps its message.
    pub fn into_io(self) -> std::io::Error {
        let kind = match &self {
            RemoteError::Store { source, .. }
                if matches!(**source, object_store::Error::NotFound { .. }) =>
            {
                std::io::ErrorKind::NotFound
            }
            RemoteError::Damaged { .. } => std::io::ErrorKind::InvalidData,
            RemoteError::Local { source, .. } => source.kind(),
            _ => std::io::ErrorKind::Other,
        };
        // The error itself is the payload, so that whoever gets the `io::Error` back (the CLI,
        // through the reader's error) can still tell damage from a failure.
        std::io::Error::new(kind, self)
    }

    /// Whether this error means that something remote is damaged (exit code 2), as opposed to
    /// a failure to reach or use the remote.
    pub fn is_damage(&self) -> bool {
        matches!(self, RemoteError::Damaged { .. })
    }

    /// The remote error inside `error` or any error it was caused by, looking through the
    /// `io::Error`s of the storage seam.
    pub fn find_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a RemoteError> {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(r) = e.downcast_ref::<RemoteError>() {
                return Some(r);
            }
            if let Some(inner) = e
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<RemoteError>())
            {
                return Some(inner);
            }
            next = e.source();
        }
        None
    }
}

/// Results of this crate.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;
