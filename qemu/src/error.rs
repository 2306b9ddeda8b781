//! The one error of the crate: a kind callers match, the QMP socket and command it concerns,
//! QEMU's own description where QEMU refused, and the I/O error underneath where there is one.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, for callers to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QmpErrorKind {
    /// The socket could not be reached, or the connection failed or closed.
    Io,
    /// No answer came in time.
    Timeout,
    /// What came back is not QMP: not JSON, no greeting, an answer too long.
    Protocol,
    /// QEMU refused a command (its `error` answer).
    Refused,
    /// A helper program (`qemu-img`, for the fleecing overlay) failed.
    Tool,
    /// A disk's bitmap or node is not what a cut needs (a node missing, a size unknown).
    State,
}

/// A failure of a QMP session or of a capture cycle.
#[derive(Debug)]
pub struct QmpError {
    kind: QmpErrorKind,
    socket: PathBuf,
    command: Option<String>,
    detail: String,
    source: Option<io::Error>,
}

impl QmpError {
    pub(crate) fn new(kind: QmpErrorKind, socket: &Path, detail: impl Into<String>) -> QmpError {
        QmpError {
            kind,
            socket: socket.to_path_buf(),
            command: None,
            detail: detail.into(),
            source: None,
        }
    }

    pub(crate) fn io(socket: &Path, doing: &str, e: io::Error) -> QmpError {
        let kind = match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => QmpErrorKind::Timeout,
            _ => QmpErrorKind::Io,
        };
        QmpError {
            source: Some(e),
            ..QmpError::new(kind, socket, doing)
        }
    }

    pub(crate) fn in_command(mut self, command: &str) -> QmpError {
        self.command = Some(command.to_owned());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> QmpErrorKind {
        self.kind
    }

    /// The QMP socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The command that failed, if one did.
    pub fn command(&self) -> Option<&str> {
        self.command.as_deref()
    }
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QMP {}", self.socket.display())?;
        if let Some(command) = &self.command {
            write!(f, ", {command}")?;
        }
        write!(f, ": {}", self.detail)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for QmpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}
