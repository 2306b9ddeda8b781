//! The client's one error shape: a kind callers match, what was being done, and the cause.

use std::fmt;
use std::io;

/// What went wrong, for callers to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NbdErrorKind {
    /// The connection failed or closed under us.
    Io,
    /// The server broke the protocol: a wrong magic, handle, offset or option reply.
    Protocol,
    /// The server announced a length over the client's limit; nothing of it was read.
    TooBig,
    /// The server refused an option: no such export, or a policy.
    Refused,
    /// The server lacks what the client needs: fixed newstyle, structured replies, a context.
    Unsupported,
    /// The server failed a command with an NBD error value (`errno` is set).
    Command,
    /// The request itself is invalid: past the end, over the size limit, an unknown context.
    InvalidRequest,
}

/// A failed client operation.
#[derive(Debug)]
pub struct NbdError {
    /// What went wrong.
    pub kind: NbdErrorKind,
    /// What was being done, and against which export, offset or option.
    pub context: String,
    /// The server's error value, for [`NbdErrorKind::Command`] and [`NbdErrorKind::Refused`].
    pub errno: Option<u32>,
    /// The I/O error underneath, for [`NbdErrorKind::Io`].
    pub source: Option<io::Error>,
}

impl NbdError {
    /// An error of `kind` with `context`.
    pub fn new(kind: NbdErrorKind, context: impl Into<String>) -> NbdError {
        NbdError {
            kind,
            context: context.into(),
            errno: None,
            source: None,
        }
    }

    /// An I/O failure while doing `context`.
    pub fn io(context: impl Into<String>, source: io::Error) -> NbdError {
        NbdError {
            source: Some(source),
            ..NbdError::new(NbdErrorKind::Io, context)
        }
    }

    /// The same error carrying the server's error value.
    pub fn with_errno(self, errno: u32) -> NbdError {
        NbdError {
            errno: Some(errno),
            ..self
        }
    }
}

impl fmt::Display for NbdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)?;
        if let Some(errno) = self.errno {
            write!(f, " (NBD error {errno})")?;
        }
        if let Some(e) = &self.source {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NbdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
