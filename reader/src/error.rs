//! The reader's one error type: a small matchable [`ReadErrorKind`], the file and byte offset the
//! problem was found at, a sentence saying what was expected and what was found, and the
//! underlying error as `source`.
//!
//! Paths of vault files are kept relative to the vault directory (`journal/….seg`), the way an
//! operator names them next to the vault; output files keep the path they were given.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use replog_format::{DecodeError, DecodeErrorKind};

/// What went wrong, for callers that react differently to each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadErrorKind {
    /// A file or directory the vault needs is missing.
    NotFound,
    /// The directory is not a replog vault (no `VAULT`, or a file that is not a vault header).
    NotAVault,
    /// The vault was written by a format version this reader does not know.
    Unsupported,
    /// Bytes on disk are wrong: a checksum, a length, a record in the wrong place.
    Damaged,
    /// The operating system failed an operation.
    Io,
    /// The request cannot be served: an unknown point, a read past the end of a disk.
    InvalidRequest,
    /// An output file exists and overwriting it was not asked for.
    AlreadyExists,
}

/// An error of the reader, naming the file and the byte offset where it was found.
#[derive(Debug, thiserror::Error)]
pub struct ReadError {
    kind: ReadErrorKind,
    path: Option<PathBuf>,
    offset: Option<u64>,
    detail: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

impl ReadError {
    /// An error of `kind` with a sentence saying what was expected and what was found.
    pub fn new(kind: ReadErrorKind, detail: impl Into<String>) -> ReadError {
        ReadError {
            kind,
            path: None,
            offset: None,
            detail: detail.into(),
            source: None,
        }
    }

    /// Damage found in `path` at byte `offset` of it.
    pub fn damaged(path: impl Into<PathBuf>, offset: u64, detail: impl Into<String>) -> ReadError {
        ReadError::new(ReadErrorKind::Damaged, detail)
            .in_file(path)
            .at(offset)
    }

    /// A decoder's error about the structure that starts at byte `base` of `path`.
    pub fn decode(path: impl Into<PathBuf>, base: u64, error: DecodeError) -> ReadError {
        let offset = base + error.offset;
        let (kind, what_happened) = match error.kind {
            DecodeErrorKind::Checksum => (ReadErrorKind::Damaged, "fails its checksum"),
            DecodeErrorKind::Truncated => (ReadErrorKind::Damaged, "is cut short"),
            DecodeErrorKind::BadMagic => (
                ReadErrorKind::Damaged,
                "does not start with the expected magic",
            ),
            DecodeErrorKind::UnsupportedVersion => (
                ReadErrorKind::Unsupported,
                "uses a format version this replog does not read",
            ),
            DecodeErrorKind::BadField => (ReadErrorKind::Damaged, "holds an invalid field"),
            DecodeErrorKind::Misplaced => (ReadErrorKind::Damaged, "belongs somewhere else"),
        };
        let detail = format!(
            "{} at byte {offset} {what_happened} ({})",
            error.what, error.detail
        );
        ReadError {
            source: Some(Box::new(error)),
            ..ReadError::damaged(path, offset, detail)
        }
        .with_kind(kind)
    }

    /// An operating-system error while doing `op` ("read", "open", ...) on `path`.
    pub fn io(path: impl Into<PathBuf>, op: &str, error: io::Error) -> ReadError {
        let kind = match error.kind() {
            io::ErrorKind::NotFound => ReadErrorKind::NotFound,
            io::ErrorKind::AlreadyExists => ReadErrorKind::AlreadyExists,
            _ => ReadErrorKind::Io,
        };
        let detail = format!("cannot {op}: {error}");
        ReadError {
            kind,
            path: Some(path.into()),
            offset: None,
            detail,
            source: Some(Box::new(error)),
        }
    }

    /// An operating-system error while reading `len` bytes at `offset` of `path`. A file that
    /// ends too early is damage: the vault's own structures said the bytes were there.
    pub fn read(path: impl Into<PathBuf>, offset: u64, len: u64, error: io::Error) -> ReadError {
        let path = path.into();
        if error.kind() == io::ErrorKind::UnexpectedEof {
            let detail = format!(
                "the file ends before byte {}, but {len} bytes at byte {offset} are needed",
                offset + len
            );
            return ReadError {
                source: Some(Box::new(error)),
                ..ReadError::damaged(path, offset, detail)
            };
        }
        let detail = format!("cannot read {len} bytes at byte {offset}: {error}");
        ReadError::io(path, "read", error)
            .with_detail(detail)
            .at(offset)
    }

    /// The same error naming `path`.
    pub fn in_file(mut self, path: impl Into<PathBuf>) -> ReadError {
        self.path = Some(path.into());
        self
    }

    /// The same error at byte `offset` of its file.
    pub fn at(mut self, offset: u64) -> ReadError {
        self.offset = Some(offset);
        self
    }

    fn with_kind(mut self, kind: ReadErrorKind) -> ReadError {
        self.kind = kind;
        self
    }

    fn with_detail(mut self, detail: String) -> ReadError {
        self.detail = detail;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ReadErrorKind {
        self.kind
    }

    /// The file the problem was found in: relative to the vault directory for vault files.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte offset in [`ReadError::path`] where the problem was found.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The sentence describing the problem, without the file name.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The decoder's error, when the problem was found while decoding a structure.
    pub fn decode_error(&self) -> Option<&DecodeError> {
        self.source
            .as_deref()
            .and_then(|e| e.downcast_ref::<DecodeError>())
    }
}

/// The reader's result type.
pub type Result<T, E = ReadError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_name_the_file_and_the_absolute_offset() {
        let inner = DecodeError::new(
            DecodeErrorKind::Checksum,
            "record",
            64,
            "stored checksum 0x1, bytes hash to 0x2",
        );
        let e = ReadError::decode("journal/0000000000000003.seg", 81856, inner);
        assert_eq!(e.kind(), ReadErrorKind::Damaged);
        assert_eq!(e.offset(), Some(81920));
        assert_eq!(
            e.to_string(),
            "journal/0000000000000003.seg: record at byte 81920 fails its checksum \
             (stored checksum 0x1, bytes hash to 0x2)"
        );
        assert_eq!(e.decode_error().unwrap().kind, DecodeErrorKind::Checksum);
    }

    #[test]
    fn a_short_read_is_damage_and_a_missing_file_is_not_found() {
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        let e = ReadError::read("bases/1.1.base", 4096, 512, eof);
        assert_eq!(e.kind(), ReadErrorKind::Damaged);
        assert_eq!(e.offset(), Some(4096));
        let missing = io::Error::new(io::ErrorKind::NotFound, "gone");
        assert_eq!(
            ReadError::io("MANIFEST", "open", missing).kind(),
            ReadErrorKind::NotFound
        );
    }
}
