//! The crate's one error shape, for the client, the server and the devices it serves: a kind
//! callers match, what was being done, and the cause. A server answers a failed request with
//! the NBD error value of its kind ([`NbdError::reply_errno`]), so a device says what went wrong
//! by its kind and never picks a number itself.

use std::fmt;
use std::io;

use super::proto;

/// What went wrong, for callers to match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NbdErrorKind {
    /// The connection, a socket or a file failed or closed under us, or what holds a device's
    /// bytes failed or found them damaged.
    Io,
    /// The other side broke the protocol: a wrong magic, handle, offset or option reply.
    Protocol,
    /// The server announced a length over the client's limit; nothing of it was read.
    TooBig,
    /// The other side refused: no such export, a policy, a request it could not carry out.
    Refused,
    /// The server lacks what the client needs: fixed newstyle, structured replies, a context.
    Unsupported,
    /// The server failed a command with an NBD error value (`errno` is set).
    Command,
    /// The request itself is invalid: past the end, over the size limit, an unknown context,
    /// a flag the command does not take.
    InvalidRequest,
    /// The export does not accept writes.
    ReadOnly,
    /// No room: the store is full, or a write reaches past the end of the export.
    NoSpace,
    /// The device is closing and takes no more requests.
    ShuttingDown,
    /// The address to listen on is taken: a live server answers there, or a file that is not a
    /// socket is in the way.
    AddressInUse,
}

impl NbdErrorKind {
    /// The NBD error value a server replies with for an error of this kind.
    pub fn errno(self) -> u32 {
        match self {
            NbdErrorKind::InvalidRequest | NbdErrorKind::TooBig => proto::EINVAL,
            NbdErrorKind::ReadOnly => proto::EPERM,
            NbdErrorKind::NoSpace => proto::ENOSPC,
            NbdErrorKind::ShuttingDown => proto::ESHUTDOWN,
            NbdErrorKind::Io
            | NbdErrorKind::Protocol
            | NbdErrorKind::Refused
            | NbdErrorKind::Unsupported
            | NbdErrorKind::Command
            | NbdErrorKind::AddressInUse => proto::EIO,
        }
    }
}

/// A failed NBD operation: a client's, a server's, or a device's.
#[derive(Debug)]
pub struct NbdError {
    /// What went wrong.
    pub kind: NbdErrorKind,
    /// What was being done, and against which export, offset or option.
    pub context: String,
    /// The other side's error value, for [`NbdErrorKind::Command`] and
    /// [`NbdErrorKind::Refused`].
    pub errno: Option<u32>,
    /// The error underneath: an I/O error, or the error of whatever holds a device's bytes.
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
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

    /// An I/O failure while doing `context`. A full disk is [`NbdErrorKind::NoSpace`].
    pub fn io(context: impl Into<String>, source: io::Error) -> NbdError {
        let kind = if source.kind() == io::ErrorKind::StorageFull {
            NbdErrorKind::NoSpace
        } else {
            NbdErrorKind::Io
        };
        NbdError::new(kind, context).with_source(source)
    }

    /// `context`: the export does not accept writes.
    pub fn read_only(context: impl Into<String>) -> NbdError {
        NbdError::new(NbdErrorKind::ReadOnly, context)
    }

    /// The same error caused by `source`.
    pub fn with_source(
        self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> NbdError {
        NbdError {
            source: Some(source.into()),
            ..self
        }
    }

    /// The same error carrying the server's error value.
    pub fn with_errno(self, errno: u32) -> NbdError {
        NbdError {
            errno: Some(errno),
            ..self
        }
    }

    /// The NBD error value a server replies with: the one received, if this error came from
    /// the other side, else the kind's.
    pub fn reply_errno(&self) -> u32 {
        self.errno.unwrap_or(self.kind.errno())
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
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_replies_with_its_error_value_and_a_received_one_wins() {
        use NbdErrorKind::*;
        let table = [
            (Io, proto::EIO),
            (Protocol, proto::EIO),
            (TooBig, proto::EINVAL),
            (Refused, proto::EIO),
            (Unsupported, proto::EIO),
            (Command, proto::EIO),
            (InvalidRequest, proto::EINVAL),
            (ReadOnly, proto::EPERM),
            (NoSpace, proto::ENOSPC),
            (ShuttingDown, proto::ESHUTDOWN),
            (AddressInUse, proto::EIO),
        ];
        for (kind, errno) in table {
            assert_eq!(NbdError::new(kind, "x").reply_errno(), errno, "{kind:?}");
        }
        let received = NbdError::new(Command, "x").with_errno(proto::EPERM);
        assert_eq!(received.reply_errno(), proto::EPERM);
    }

    #[test]
    fn a_full_disk_is_no_space_and_the_source_is_kept() {
        let e = NbdError::io("writing the overlay", io::ErrorKind::StorageFull.into());
        assert_eq!(e.kind, NbdErrorKind::NoSpace);
        assert_eq!(e.reply_errno(), proto::ENOSPC);
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().starts_with("writing the overlay: "), "{e}");
    }
}
