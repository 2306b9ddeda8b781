//! Writing to an export: `NBD_CMD_WRITE`, `NBD_CMD_WRITE_ZEROES`, `NBD_CMD_TRIM` and
//! `NBD_CMD_FLUSH`, several in flight on one connection ([`Writes`]). A write's data goes out
//! with its request, so a request in flight keeps only its kind and range: memory is the
//! caller's buffer plus `in_flight` small records, whatever the amount written. When
//! `in_flight` requests are outstanding, the next waits for one reply; replies are taken in
//! whatever order the server sends them (each names its request's handle). What the export
//! takes is read from the transmission flags of the handshake: a read-only export refuses
//! every request here before anything is sent, and a command the server did not announce is
//! refused with [`NbdErrorKind::Unsupported`].

use std::collections::HashMap;

use super::client::Client;
use super::client_wire::{ReplyHeader, protocol};
use super::error::{NbdError, NbdErrorKind};
use super::proto;

/// The most bytes one `NBD_CMD_WRITE_ZEROES` or `NBD_CMD_TRIM` covers; longer ranges are sent
/// as several requests. Every server takes lengths of 32 bits; 1 GiB keeps them aligned.
pub const ZERO_REQUEST_BYTES_MAX: u64 = 1 << 30;

/// What a request in flight asked for, to name it when its reply fails.
#[derive(Clone, Copy, Debug)]
struct Pending {
    kind: u16,
    offset: u64,
    len: u64,
}

impl Pending {
    fn describe(&self) -> String {
        let (offset, len) = (self.offset, self.len);
        match self.kind {
            proto::CMD_WRITE => format!("the write of {len} bytes at byte {offset}"),
            proto::CMD_WRITE_ZEROES => format!("the write of {len} zero bytes at byte {offset}"),
            proto::CMD_TRIM => format!("the trim of {len} bytes at byte {offset}"),
            proto::CMD_FLUSH => "the flush".to_owned(),
            kind => format!("command {kind} at byte {offset}"),
        }
    }
}

impl Client {
    /// Whether the export takes writes (`NBD_FLAG_READ_ONLY` is not set).
    pub fn writable(&self) -> bool {
        self.flags() & proto::FLAG_READ_ONLY == 0
    }

    /// Whether the server announced `NBD_CMD_WRITE_ZEROES`.
    pub fn can_write_zeroes(&self) -> bool {
        self.flags() & proto::FLAG_SEND_WRITE_ZEROES != 0
    }

    /// Whether the server announced `NBD_CMD_TRIM`.
    pub fn can_trim(&self) -> bool {
        self.flags() & proto::FLAG_SEND_TRIM != 0
    }

    /// Whether the server announced `NBD_CMD_FLUSH` (without it, the server writes through and
    /// a write is durable once acknowledged).
    pub fn can_flush(&self) -> bool {
        self.flags() & proto::FLAG_SEND_FLUSH != 0
    }

    /// Starts writing with up to `in_flight` requests outstanding (at least one). Call
    /// [`Writes::finish`] (or [`Writes::flush`]) to wait for the last replies: dropping a
    /// [`Writes`] with requests in flight leaves their replies unread, and the connection must
    /// not be used again. After any error the connection must not be used again either.
    pub fn writes(&mut self, in_flight: usize) -> Result<Writes<'_>, NbdError> {
        if !self.writable() {
            return Err(NbdError::read_only(
                "the export is read-only (the server set NBD_FLAG_READ_ONLY)",
            ));
        }
        Ok(Writes {
            client: self,
            pending: HashMap::new(),
            in_flight: in_flight.max(1),
        })
    }
}

/// Writes in flight on one connection; see the module documentation.
#[derive(Debug)]
pub struct Writes<'a> {
    client: &'a mut Client,
    pending: HashMap<u64, Pending>,
    in_flight: usize,
}

impl Writes<'_> {
    /// Writes `data` at `offset` (`NBD_CMD_WRITE`). `data` is sent before this returns; its
    /// reply may come later. At most [`Client::read_bytes_max`] bytes (32 MiB by default).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), NbdError> {
        let len = data.len() as u64;
        if len > u64::from(self.client.read_bytes_max()) {
            return Err(NbdError::new(
                NbdErrorKind::InvalidRequest,
                format!(
                    "a write of {len} bytes at byte {offset} is over the limit of {}",
                    self.client.read_bytes_max()
                ),
            ));
        }
        self.client.check_end(offset, offset.saturating_add(len))?;
        self.send(proto::CMD_WRITE, offset, len, data)
    }

    /// Makes `[offset, offset + len)` read as zeros (`NBD_CMD_WRITE_ZEROES`, without
    /// `NO_HOLE`: the server may deallocate the range). Refused with
    /// [`NbdErrorKind::Unsupported`] when the server did not announce it.
    pub fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), NbdError> {
        if !self.client.can_write_zeroes() {
            return Err(NbdError::new(
                NbdErrorKind::Unsupported,
                "the server does not take NBD_CMD_WRITE_ZEROES",
            ));
        }
        self.ranged(proto::CMD_WRITE_ZEROES, offset, len)
    }

    /// Tells the server `[offset, offset + len)` is no longer needed (`NBD_CMD_TRIM`); what it
    /// reads afterwards is unspecified. Refused when the server did not announce it.
    pub fn trim(&mut self, offset: u64, len: u64) -> Result<(), NbdError> {
        if !self.client.can_trim() {
            return Err(NbdError::new(
                NbdErrorKind::Unsupported,
                "the server does not take NBD_CMD_TRIM",
            ));
        }
        self.ranged(proto::CMD_TRIM, offset, len)
    }

    /// Waits for every request in flight, then makes what they wrote durable
    /// (`NBD_CMD_FLUSH`, where the server announced it) and waits for that too.
    pub fn flush(&mut self) -> Result<(), NbdError> {
        self.wait_all()?;
        if self.client.can_flush() {
            self.send(proto::CMD_FLUSH, 0, 0, &[])?;
            self.wait_all()?;
        }
        Ok(())
    }

    /// Waits for the replies to every request in flight.
    pub fn finish(mut self) -> Result<(), NbdError> {
        self.wait_all()
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Sends a command without payload over `[offset, offset + len)`, split in requests of at
    /// most [`ZERO_REQUEST_BYTES_MAX`].
    fn ranged(&mut self, kind: u16, offset: u64, len: u64) -> Result<(), NbdError> {
        let end = offset.saturating_add(len);
        self.client.check_end(offset, end)?;
        let mut at = offset;
        while at < end {
            let n = (end - at).min(ZERO_REQUEST_BYTES_MAX);
            self.send(kind, at, n, &[])?;
            at += n;
        }
        Ok(())
    }

    fn send(&mut self, kind: u16, offset: u64, len: u64, data: &[u8]) -> Result<(), NbdError> {
        while self.pending.len() >= self.in_flight {
            self.take_reply()?;
        }
        let request = Pending { kind, offset, len };
        let handle = self
            .client
            .send_with(kind, 0, offset, len, data)
            .map_err(|e| NbdError {
                context: format!("{}: {}", request.describe(), e.context),
                ..e
            })?;
        self.pending.insert(handle, request);
        Ok(())
    }

    fn wait_all(&mut self) -> Result<(), NbdError> {
        while !self.pending.is_empty() {
            self.take_reply()?;
        }
        Ok(())
    }

    /// Takes one reply (a simple reply, or one chunk of a structured one) and forgets its
    /// request once the reply is complete; a failed request is an error naming it.
    fn take_reply(&mut self) -> Result<(), NbdError> {
        let header = self.client.any_reply().map_err(|e| {
            let first = self.pending.values().map(|r| r.offset).min().unwrap_or(0);
            NbdError {
                context: format!(
                    "waiting for the replies to {} requests in flight (the first at byte {first}): {}",
                    self.pending.len(),
                    e.context
                ),
                ..e
            }
        })?;
        let handle = match &header {
            ReplyHeader::Chunk(c) => c.handle,
            ReplyHeader::Simple { handle, .. } => *handle,
        };
        let Some(request) = self.pending.get(&handle).copied() else {
            return Err(protocol(format!(
                "a reply for handle {handle}, which no request in flight has"
            )));
        };
        let what = request.describe();
        match header {
            ReplyHeader::Simple { error: 0, .. } => {}
            ReplyHeader::Simple { error, .. } => return Err(failed(&what, error)),
            ReplyHeader::Chunk(chunk) => {
                // A `NONE` chunk carries nothing; an error chunk is returned as an error.
                self.client
                    .other_chunk(&chunk, &what)
                    .map_err(|e| match e.errno {
                        Some(errno) if e.kind == NbdErrorKind::Command => NbdError {
                            kind: kind_of_errno(errno),
                            ..e
                        },
                        _ => e,
                    })?;
                if chunk.flags & proto::REPLY_FLAG_DONE == 0 {
                    return Ok(());
                }
            }
        }
        self.pending.remove(&handle);
        Ok(())
    }
}

/// A request the server failed with `errno`.
fn failed(what: &str, errno: u32) -> NbdError {
    NbdError::new(
        kind_of_errno(errno),
        format!("{what}: the server failed it"),
    )
    .with_errno(errno)
}

/// The kind of a failed write: a full target and a read-only one are said as such.
fn kind_of_errno(errno: u32) -> NbdErrorKind {
    match errno {
        proto::ENOSPC => NbdErrorKind::NoSpace,
        proto::EPERM => NbdErrorKind::ReadOnly,
        _ => NbdErrorKind::Command,
    }
}
