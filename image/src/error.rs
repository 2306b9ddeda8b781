//! The image crate's one error type: a small matchable [`ImageErrorKind`], the image and byte
//! offset the problem was found at, a sentence for the user, and the underlying error as
//! `source`.
//!
//! The sentence is whole (it names the image itself, in the words the CLI has always used), so
//! that callers print it as it is and decide by the kind, never by the text.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, for callers that react differently to each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageErrorKind {
    /// The image (or a file of its backing chain) does not exist.
    NotFound,
    /// The image is shorter than its own header or footer says it is.
    Truncated,
    /// The image ends with a VHD footer whose checksum does not hold.
    BadFooter,
    /// The image is damaged (`qemu-img check` found corruption).
    Corrupt,
    /// The image is in a format this crate cannot read without a tool, or qemu-img said
    /// something this crate does not understand.
    Unsupported,
    /// qemu-img is needed and does not run.
    ToolMissing,
    /// qemu-img ran and failed.
    ToolFailed,
    /// The operating system failed an operation.
    Io,
}

/// An error reading or writing a disk image.
#[derive(Debug, thiserror::Error)]
pub struct ImageError {
    kind: ImageErrorKind,
    path: Option<PathBuf>,
    offset: Option<u64>,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl ImageError {
    /// An error of `kind` saying `message`, about no file in particular yet.
    pub fn new(kind: ImageErrorKind, message: impl Into<String>) -> ImageError {
        ImageError {
            kind,
            path: None,
            offset: None,
            message: message.into(),
            source: None,
        }
    }

    /// An operating-system error on `path`; `message` is the whole sentence.
    pub fn io(path: &Path, error: io::Error, message: impl Into<String>) -> ImageError {
        let kind = match error.kind() {
            io::ErrorKind::NotFound => ImageErrorKind::NotFound,
            io::ErrorKind::UnexpectedEof => ImageErrorKind::Truncated,
            _ => ImageErrorKind::Io,
        };
        ImageError {
            source: Some(Box::new(error)),
            ..ImageError::new(kind, message).in_file(path)
        }
    }

    /// The same error about `path`, its sentence rewritten by `say` from the current one: for
    /// a caller that knows what it was doing with the image.
    pub fn reworded(self, path: &Path, say: impl FnOnce(&str) -> String) -> ImageError {
        let message = say(&self.message);
        ImageError {
            message,
            ..self.in_file(path)
        }
    }

    /// The same error with `source` as its cause: the error that made the operation fail, which
    /// the sentence already quotes.
    pub fn caused_by(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ImageError {
        self.source = Some(Box::new(source));
        self
    }

    /// The same error naming `path`.
    pub fn in_file(mut self, path: &Path) -> ImageError {
        self.path = Some(path.to_path_buf());
        self
    }

    /// The same error at byte `offset` of its file.
    pub fn at(mut self, offset: u64) -> ImageError {
        self.offset = Some(offset);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ImageErrorKind {
        self.kind
    }

    /// The image the error is about, when there is one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The byte of the image the error is about, when there is one.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }
}
