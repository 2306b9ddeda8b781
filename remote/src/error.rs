//! What can go wrong with a remote, said with the object key or local file it concerns.

use std::path::PathBuf;

/// A remote operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The object store refused or could not be reached.
    #[error("{url}/{key}: {op}: {source}")]
    Store {
        /// The remote's URL.
        url: String,
        /// The object's key under the remote's prefix.
        key: String,
        /// What was being done.
        op: &'static str,
        /// The store's error.
        #[source]
        source: Box<object_store::Error>,
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
    /// The operation is not allowed as things are (another vault's prefix, a sync already
    /// running, no remote configured).
    #[error("{0}")]
    Refused(String),
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
        std::io::Error::new(kind, self.to_string())
    }
}

/// Results of this crate.
pub type Result<T, E = RemoteError> = std::result::Result<T, E>;
