//! The writer's one error type, shaped like the reader's: a small matchable [`WriteErrorKind`],
//! the context (the file and byte offset, the disk and point where they apply), a sentence or
//! the operation that failed, and the underlying error as `source`.
//!
//! The underlying error is kept, never flattened into the message: an I/O error, a decoder's
//! [`replog_format::DecodeError`] or a reader's [`replog_reader::ReadError`] is reachable through
//! [`std::error::Error::source`]. The message shows it too, because it is what the user acts on.
//! No caller should read the message to decide anything; they match [`WriteError::kind`].

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// What the message says after the path.
#[derive(Clone, Debug)]
enum Detail {
    /// A sentence saying what was expected and what was found, or what to do.
    Sentence(String),
    /// An operation ("writing", "syncing the directory", ...) that the source made fail.
    Failed(String),
    /// The source's own message, after an optional phrase saying what was being done.
    Source(Option<&'static str>),
    /// The writer stopped after the source, an earlier failure (which names the path itself).
    Stopped,
}

/// A writer operation failed.
#[derive(Debug)]
pub struct WriteError {
    /// The kind of failure.
    pub kind: WriteErrorKind,
    /// The rest, boxed: errors are rare, and a small error keeps every `Result` of the hot
    /// path small.
    context: Box<Context>,
}

/// What a [`WriteError`] concerns, what it says, and what caused it. The source is shared, so
/// that a poisoned writer can keep its first failure and report it again.
#[derive(Clone, Debug)]
struct Context {
    path: Option<PathBuf>,
    offset: Option<u64>,
    disk_id: Option<u32>,
    point_id: Option<u64>,
    detail: Detail,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.context;
        if let Some(path) = c
            .path
            .as_ref()
            .filter(|_| !matches!(c.detail, Detail::Stopped))
        {
            write!(f, "{}: ", path.display())?;
        }
        let source = || c.source.as_deref().map(ToString::to_string);
        match &c.detail {
            Detail::Sentence(s) => f.write_str(s),
            Detail::Failed(what) => {
                let at = c
                    .offset
                    .map(|o| format!(" at byte {o}"))
                    .unwrap_or_default();
                write!(f, "{what}{at} failed: {}", source().unwrap_or_default())
            }
            Detail::Source(context) => {
                if let Some(context) = context {
                    write!(f, "{context}: ")?;
                }
                f.write_str(&source().unwrap_or_default())
            }
            Detail::Stopped => write!(
                f,
                "the writer stopped after an earlier failure ({}); nothing after the last acknowledged point was acknowledged; reopen the vault to recover",
                source().unwrap_or_default()
            ),
        }
    }
}

impl StdError for WriteError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.context
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl WriteError {
    /// An error of `kind` with a sentence saying what is wrong (and, where it helps, what to do).
    pub fn new(kind: WriteErrorKind, sentence: impl Into<String>) -> WriteError {
        WriteError::with(kind, Detail::Sentence(sentence.into()), None)
    }

    fn with(
        kind: WriteErrorKind,
        detail: Detail,
        source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> WriteError {
        WriteError {
            kind,
            context: Box::new(Context {
                path: None,
                offset: None,
                disk_id: None,
                point_id: None,
                detail,
                source: source.map(Arc::from),
            }),
        }
    }

    /// The same error again, sharing the source: what a poisoned journal keeps of its first
    /// failure.
    pub(crate) fn duplicate(&self) -> WriteError {
        WriteError {
            kind: self.kind,
            context: self.context.clone(),
        }
    }

    /// What every call returns once the writer stopped after `first`: kind
    /// [`WriteErrorKind::Poisoned`], `first`'s file, offset, disk and point, and `first` itself
    /// (with its own kind) as the source.
    pub(crate) fn poisoned_by(first: &WriteError) -> WriteError {
        let mut context = first.context.clone();
        context.detail = Detail::Stopped;
        context.source = Some(Arc::new(first.duplicate()));
        WriteError {
            kind: WriteErrorKind::Poisoned,
            context,
        }
    }

    /// An I/O error while doing `what` on `path` at byte `offset` (if one applies).
    pub fn io(path: &Path, offset: Option<u64>, what: &str, source: io::Error) -> WriteError {
        let kind = match source.kind() {
            io::ErrorKind::StorageFull => WriteErrorKind::NoSpace,
            io::ErrorKind::AlreadyExists => WriteErrorKind::AlreadyExists,
            _ => WriteErrorKind::Io,
        };
        let mut e = WriteError::with(
            kind,
            Detail::Failed(what.to_owned()),
            Some(Box::new(source)),
        )
        .in_file(path);
        e.context.offset = offset;
        e
    }

    /// A decode failure in `path`; the decoder's offset is relative to `base`.
    pub fn damaged(path: &Path, base: u64, e: replog_format::DecodeError) -> WriteError {
        let e = e.at(base);
        let offset = e.offset;
        let mut e = WriteError::with(
            WriteErrorKind::Damaged,
            Detail::Source(None),
            Some(Box::new(e)),
        )
        .in_file(path);
        e.context.offset = Some(offset);
        e
    }

    /// A reader's error, of `kind` for the writer, met while doing `context` (when given).
    pub(crate) fn read(
        kind: WriteErrorKind,
        context: Option<&'static str>,
        e: replog_reader::ReadError,
    ) -> WriteError {
        WriteError::with(kind, Detail::Source(context), Some(Box::new(e)))
    }

    /// The same error naming `path` (a vault file, or the vault directory).
    pub(crate) fn in_file(mut self, path: &Path) -> WriteError {
        self.context.path = Some(path.to_path_buf());
        self
    }

    /// The same error at byte `offset` of its file.
    pub(crate) fn at_offset(mut self, offset: u64) -> WriteError {
        self.context.offset = Some(offset);
        self
    }

    /// The same error about disk `disk_id`.
    pub(crate) fn for_disk(mut self, disk_id: u32) -> WriteError {
        self.context.disk_id = Some(disk_id);
        self
    }

    /// The same error about recovery point `point_id`.
    pub(crate) fn for_point(mut self, point_id: u64) -> WriteError {
        self.context.point_id = Some(point_id);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> WriteErrorKind {
        self.kind
    }

    /// The file the failure concerns, when one does (the vault directory for errors about the
    /// vault as a whole).
    pub fn path(&self) -> Option<&Path> {
        self.context.path.as_deref()
    }

    /// The byte offset in [`WriteError::path`] where it failed, when one applies.
    pub fn offset(&self) -> Option<u64> {
        self.context.offset
    }

    /// The disk the failure concerns, when one does.
    pub fn disk_id(&self) -> Option<u32> {
        self.context.disk_id
    }

    /// The recovery point the failure concerns, when one does.
    pub fn point_id(&self) -> Option<u64> {
        self.context.point_id
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = WriteError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use replog_format::{DecodeError, DecodeErrorKind};

    #[test]
    fn the_error_is_two_words_so_results_stay_small() {
        assert_eq!(std::mem::size_of::<WriteError>(), 16);
    }

    #[test]
    fn an_io_error_names_the_file_the_operation_and_the_offset_and_keeps_its_source() {
        let e = WriteError::io(
            Path::new("v/journal/1.seg"),
            Some(4096),
            "writing",
            io::Error::new(io::ErrorKind::StorageFull, "no space left"),
        );
        assert_eq!(e.kind(), WriteErrorKind::NoSpace);
        assert_eq!(
            e.to_string(),
            "v/journal/1.seg: writing at byte 4096 failed: no space left"
        );
        assert_eq!(e.path(), Some(Path::new("v/journal/1.seg")));
        assert_eq!(e.offset(), Some(4096));
        let source = e.source().expect("the I/O error is the source");
        assert!(source.downcast_ref::<io::Error>().is_some());
    }

    #[test]
    fn a_decode_error_is_the_source_at_its_absolute_offset() {
        let inner = DecodeError::new(DecodeErrorKind::Checksum, "record", 8, "bad crc");
        let e = WriteError::damaged(Path::new("v/MANIFEST"), 100, inner);
        assert_eq!(e.kind(), WriteErrorKind::Damaged);
        assert_eq!(e.to_string(), "v/MANIFEST: record at byte 108: bad crc");
        assert_eq!(e.offset(), Some(108));
        let source = e.source().expect("the decode error is the source");
        let decode = source.downcast_ref::<DecodeError>().expect("a DecodeError");
        assert_eq!(decode.offset, 108);
    }

    #[test]
    fn a_reader_error_is_the_source_after_the_vault_and_what_was_being_done() {
        let inner = replog_reader::ReadError::new(
            replog_reader::ReadErrorKind::InvalidRequest,
            "no point 9",
        );
        let e = WriteError::read(WriteErrorKind::Io, Some("rolling the base forward"), inner)
            .in_file(Path::new("v"))
            .for_point(9);
        assert_eq!(e.to_string(), "v: rolling the base forward: no point 9");
        assert_eq!(e.point_id(), Some(9));
        let source = e.source().expect("the reader's error is the source");
        assert!(source.downcast_ref::<replog_reader::ReadError>().is_some());
    }

    /// A poisoned writer used to keep its first failure only as text: the error of a later
    /// call named neither the file nor the offset, and the first failure's kind was lost.
    #[test]
    fn a_poisoned_error_keeps_the_first_failure_its_kind_file_and_offset() {
        let first = WriteError::io(
            Path::new("v/journal/1.seg"),
            Some(8192),
            "writing the journal",
            io::Error::new(io::ErrorKind::StorageFull, "no space left"),
        );
        let e = WriteError::poisoned_by(&first);
        assert_eq!(e.kind(), WriteErrorKind::Poisoned);
        assert_eq!(e.path(), Some(Path::new("v/journal/1.seg")));
        assert_eq!(e.offset(), Some(8192));
        let source = e.source().expect("the first failure is the source");
        let cause = source.downcast_ref::<WriteError>().expect("a WriteError");
        assert_eq!(cause.kind(), WriteErrorKind::NoSpace);
        assert_eq!(cause.offset(), Some(8192));
        let io = cause.source().expect("its I/O error is kept");
        assert!(io.downcast_ref::<io::Error>().is_some());
        assert_eq!(
            e.to_string(),
            "the writer stopped after an earlier failure (v/journal/1.seg: writing the journal at \
             byte 8192 failed: no space left); nothing after the last acknowledged point was \
             acknowledged; reopen the vault to recover"
        );
    }
}
