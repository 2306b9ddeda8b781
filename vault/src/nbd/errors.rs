//! How the vault's errors reach an NBD client: as an errno and a message.

use replog_nbd::{ExportError, proto};
use replog_reader::{ReadError, ReadErrorKind};
use replog_writer::{WriteError, WriteErrorKind};

/// A reader error: damage and I/O errors are `EIO`, never wrong bytes.
pub fn read_error(e: ReadError) -> ExportError {
    let errno = match e.kind() {
        ReadErrorKind::InvalidRequest => proto::EINVAL,
        _ => proto::EIO,
    };
    ExportError::new(errno, e.to_string())
}

/// A writer error: a full vault is `ENOSPC`, anything else `EIO`.
pub fn write_error(e: WriteError) -> ExportError {
    let errno = match e.kind {
        WriteErrorKind::NoSpace => proto::ENOSPC,
        _ => proto::EIO,
    };
    ExportError::new(errno, e.to_string())
}
