//! The one place the vault's errors become [`NbdError`]s, and so reach an NBD client as an
//! error value and a message: a kind chosen from the reader's or the writer's kind (never from
//! a message), what the device was doing, and the vault's error as the source.

use replog_nbd::{NbdError, NbdErrorKind};
use replog_reader::{ReadError, ReadErrorKind};
use replog_writer::{WriteError, WriteErrorKind};

/// A reader error while doing `context`: an invalid request is `EINVAL`; damage and I/O errors
/// are `EIO`, never wrong bytes.
pub fn read_error(context: &str) -> impl FnOnce(ReadError) -> NbdError + '_ {
    move |e| {
        let kind = match e.kind() {
            ReadErrorKind::InvalidRequest => NbdErrorKind::InvalidRequest,
            _ => NbdErrorKind::Io,
        };
        NbdError::new(kind, context).with_source(e)
    }
}

/// A writer error while doing `context`: a full vault is `ENOSPC`, anything else `EIO`.
pub fn write_error(context: &str) -> impl FnOnce(WriteError) -> NbdError + '_ {
    move |e| {
        let kind = match e.kind {
            WriteErrorKind::NoSpace => NbdErrorKind::NoSpace,
            _ => NbdErrorKind::Io,
        };
        NbdError::new(kind, context).with_source(e)
    }
}
