//! What can go wrong with a remote, said with the object key or local file it concerns.
//!
//! [`RemoteError`] keeps one variant per situation, each with its context as fields (the
//! remote's URL, the object's key, the local file) and the underlying error as `source`.
//! Callers decide by [`RemoteError::kind`], a small `Copy` enum that also carries a refusal's
//! [`Refusal`] and a reader error's kind, never by the message.

use std::path::{Path, PathBuf};

use replog_format::remote::UrlError;
use replog_reader::{ReadError, ReadErrorKind};

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
    #[error("unsupported URL {url:?}: {source}")]
    Url {
        /// The URL as given (cut at 100 characters).
        url: String,
        /// What is wrong; its message says what to give instead.
        #[source]
        source: UrlError,
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
    /// The local vault could not be read. The message is the reader's; the reader's error is
    /// the source.
    #[error("{0}")]
    Read(#[from] ReadError),
    /// The operation is not allowed as things are: [`Refusal`] says why, for callers to match.
    #[error("{detail}")]
    Refused {
        /// Why.
        kind: Refusal,
        /// The sentence for people, naming the vault, file or remote.
        detail: String,
    },
}

/// What went wrong with a remote, for callers that react differently to each: one kind per
/// variant of [`RemoteError`], with a refusal's reason and a reader error's kind inside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RemoteErrorKind {
    /// The object store refused or could not be reached ([`RemoteError::Store`]).
    Store,
    /// The URL is not one replog can use ([`RemoteError::Url`]).
    BadUrl,
    /// No credentials were found ([`RemoteError::NoCredentials`]).
    NoCredentials,
    /// The bucket or container does not exist ([`RemoteError::NoBucket`]).
    NoBucket,
    /// The remote no longer holds a manifest it held ([`RemoteError::Older`]).
    Older,
    /// An object's bytes are not what they must be ([`RemoteError::Damaged`]).
    Damaged,
    /// A local file does not exist ([`RemoteError::Local`] with `NotFound`).
    LocalNotFound,
    /// A local file could not be read or written otherwise ([`RemoteError::Local`]).
    LocalIo,
    /// The local vault could not be read ([`RemoteError::Read`]), for this reason.
    Read(ReadErrorKind),
    /// The operation is not allowed as things are ([`RemoteError::Refused`]), for this reason.
    Refused(Refusal),
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

    /// What went wrong, for callers to match.
    pub fn kind(&self) -> RemoteErrorKind {
        match self {
            RemoteError::Store { .. } => RemoteErrorKind::Store,
            RemoteError::Url { .. } => RemoteErrorKind::BadUrl,
            RemoteError::NoCredentials { .. } => RemoteErrorKind::NoCredentials,
            RemoteError::NoBucket { .. } => RemoteErrorKind::NoBucket,
            RemoteError::Older { .. } => RemoteErrorKind::Older,
            RemoteError::Damaged { .. } => RemoteErrorKind::Damaged,
            RemoteError::Local { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                RemoteErrorKind::LocalNotFound
            }
            RemoteError::Local { .. } => RemoteErrorKind::LocalIo,
            RemoteError::Read(e) => RemoteErrorKind::Read(e.kind()),
            RemoteError::Refused { kind, .. } => RemoteErrorKind::Refused(*kind),
        }
    }

    /// The remote's URL (for a bad URL: as given, cut at 100 characters), when the error is
    /// about a remote.
    pub fn url(&self) -> Option<&str> {
        match self {
            RemoteError::Store { url, .. }
            | RemoteError::Url { url, .. }
            | RemoteError::NoCredentials { url, .. }
            | RemoteError::NoBucket { url, .. }
            | RemoteError::Older { url, .. }
            | RemoteError::Damaged { url, .. } => Some(url),
            RemoteError::Local { .. } | RemoteError::Read(_) | RemoteError::Refused { .. } => None,
        }
    }

    /// The key of the object the error is about, under the remote's prefix.
    pub fn key(&self) -> Option<&str> {
        match self {
            RemoteError::Store { key, .. } | RemoteError::Damaged { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The local file the error is about: the file a local operation failed on, or the file
    /// (relative to the vault) the reader names.
    pub fn path(&self) -> Option<&Path> {
        match self {
            RemoteError::Local { path, .. } => Some(path),
            RemoteError::Read(e) => e.path(),
            _ => None,
        }
    }

    /// The reader's error, when the local vault could not be read.
    pub fn read_error(&self) -> Option<&ReadError> {
        match self {
            RemoteError::Read(e) => Some(e),
            _ => None,
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
        self.kind() == RemoteErrorKind::Damaged
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io;

    use super::*;

    #[test]
    fn a_bad_url_keeps_its_message_and_has_the_url_error_as_source() {
        let e = crate::check_url("http://example.com/x").unwrap_err();
        assert_eq!(e.kind(), RemoteErrorKind::BadUrl);
        assert_eq!(e.url(), Some("http://example.com/x"));
        assert_eq!(
            e.to_string(),
            "unsupported URL \"http://example.com/x\": give s3://BUCKET[/PREFIX] or \
             az://CONTAINER[/PREFIX]"
        );
        let source = e.source().and_then(|s| s.downcast_ref::<UrlError>());
        assert_eq!(source, Some(&UrlError::Unsupported));
    }

    #[test]
    fn a_local_error_is_not_found_only_when_the_file_is_missing() {
        let missing = RemoteError::local(
            "remote/LATEST",
            "read",
            io::Error::from(io::ErrorKind::NotFound),
        );
        assert_eq!(missing.kind(), RemoteErrorKind::LocalNotFound);
        assert_eq!(missing.path(), Some(Path::new("remote/LATEST")));
        let denied = RemoteError::local(
            "remote/LATEST",
            "read",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert_eq!(denied.kind(), RemoteErrorKind::LocalIo);
        assert!(denied.source().is_some_and(|s| s.is::<io::Error>()));
    }

    #[test]
    fn a_refusal_and_a_reader_error_say_their_reason_in_the_kind() {
        let refused = Refusal::SyncRunning.because("another sync of /v is running");
        assert_eq!(
            refused.kind(),
            RemoteErrorKind::Refused(Refusal::SyncRunning)
        );
        assert_eq!(refused.to_string(), "another sync of /v is running");
        assert!(!refused.is_damage());

        let read = ReadError::damaged("MANIFEST", 28, "the header fails its checksum");
        let message = read.to_string();
        let e = RemoteError::from(read);
        assert_eq!(e.kind(), RemoteErrorKind::Read(ReadErrorKind::Damaged));
        assert_eq!(e.to_string(), message, "the reader's message, unchanged");
        assert_eq!(e.path(), Some(Path::new("MANIFEST")));
        let source = e.source().and_then(|s| s.downcast_ref::<ReadError>());
        assert_eq!(source.map(ReadError::offset), Some(Some(28)));
    }

    #[test]
    fn damage_is_found_through_the_io_errors_of_the_storage_seam() {
        let damaged = RemoteError::Damaged {
            url: "s3://b/p".into(),
            key: "chunks/00".into(),
            detail: "the chunk hashes to another key".into(),
        };
        assert_eq!(damaged.kind(), RemoteErrorKind::Damaged);
        assert_eq!(damaged.key(), Some("chunks/00"));
        let io = damaged.into_io();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        let read = ReadError::io("journal/0000000000000001.seg", "read", io);
        let found = RemoteError::find_in(&read).expect("the remote error inside");
        assert!(found.is_damage());
        assert_eq!(found.url(), Some("s3://b/p"));
    }
}
