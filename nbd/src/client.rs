//! An NBD client: connects over TCP or a Unix socket, negotiates fixed newstyle with structured
//! replies and the metadata contexts asked for (`base:allocation`, `qemu:dirty-bitmap:NAME`),
//! enters transmission with `NBD_OPT_GO`, then reads and asks for block status, one request at
//! a time here and several in flight in `client_pipe`. Memory is bounded: a reply chunk over
//! [`ClientOptions::reply_bytes_max`] is refused with [`NbdErrorKind::TooBig`] before anything
//! is allocated for it.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;

use super::client_wire::{
    self as cw, Chunk, ReplyHeader, protocol, read_option_reply, read_u16, read_u32, read_u64,
    read_vec, write_all,
};
use super::error::{NbdError, NbdErrorKind};
use super::proto;
use super::stream::Stream;

/// What to negotiate.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The export's name.
    pub export: String,
    /// Metadata contexts to select, e.g. `base:allocation`, `qemu:dirty-bitmap:NAME`.
    pub meta_contexts: Vec<String>,
    /// The largest reply chunk payload accepted, and the largest read asked for.
    pub reply_bytes_max: u32,
    /// Ask for extended headers (64-bit requests and block status); a server that refuses gets
    /// structured replies instead.
    pub extended_headers: bool,
}

impl ClientOptions {
    /// Export `export`, no metadata contexts, chunks of at most 32 MiB.
    pub fn new(export: impl Into<String>) -> ClientOptions {
        ClientOptions {
            export: export.into(),
            meta_contexts: Vec::new(),
            reply_bytes_max: proto::PAYLOAD_BYTES_MAX,
            extended_headers: true,
        }
    }
}

/// One extent of a block status reply: `length` bytes with a context's `flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Bytes (up to 32 bits, or 64 with extended headers).
    pub length: u64,
    /// The context's flags (`base:allocation`: hole and zero; a dirty bitmap: 1 is dirty).
    pub flags: u32,
}

/// A connection in the transmission phase.
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    size: u64,
    flags: u16,
    contexts: Vec<(u32, String)>,
    reply_bytes_max: u32,
    next_handle: u64,
    data_bytes: u64,
    extended: bool,
}

impl Client {
    /// Connects to `addr` (`host:port`) over TCP and negotiates.
    pub fn connect_tcp(addr: &str, opts: &ClientOptions) -> Result<Client, NbdError> {
        let s = TcpStream::connect(addr)
            .map_err(|e| NbdError::io(format!("connecting to {addr}"), e))?;
        // Requests are small and answered one by one: do not wait to fill a segment.
        s.set_nodelay(true)
            .map_err(|e| NbdError::io(format!("configuring the connection to {addr}"), e))?;
        Client::negotiate(Stream::Tcp(s), opts)
    }

    /// Connects to the Unix socket at `path` and negotiates.
    pub fn connect_unix(path: &Path, opts: &ClientOptions) -> Result<Client, NbdError> {
        let s = UnixStream::connect(path)
            .map_err(|e| NbdError::io(format!("connecting to {}", path.display()), e))?;
        Client::negotiate(Stream::Unix(s), opts)
    }

    fn negotiate(mut stream: Stream, opts: &ClientOptions) -> Result<Client, NbdError> {
        greet(&mut stream)?;
        // Extended headers imply structured replies, which must then not be asked for.
        let extended = opts.extended_headers
            && optional(simple_option(&mut stream, proto::OPT_EXTENDED_HEADERS, &[]))?;
        if !extended {
            simple_option(&mut stream, proto::OPT_STRUCTURED_REPLY, &[])?;
        }
        let contexts = if opts.meta_contexts.is_empty() {
            Vec::new()
        } else {
            set_meta_contexts(&mut stream, opts)?
        };
        let (size, flags) = go(&mut stream, &opts.export)?;
        Ok(Client {
            stream,
            size,
            flags,
            contexts,
            reply_bytes_max: opts.reply_bytes_max,
            next_handle: 1,
            data_bytes: 0,
            extended,
        })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The export's transmission flags (`NBD_FLAG_*`).
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The metadata contexts the server selected: `(id, name)`.
    pub fn contexts(&self) -> &[(u32, String)] {
        &self.contexts
    }

    /// Bytes of data the server has sent in read replies so far (hole chunks carry none).
    pub fn data_bytes_read(&self) -> u64 {
        self.data_bytes
    }

    /// Whether extended headers were negotiated (64-bit requests, replies and block status).
    pub fn extended_headers(&self) -> bool {
        self.extended
    }

    /// The largest read this client asks for in one request.
    pub fn read_bytes_max(&self) -> u32 {
        self.reply_bytes_max
    }

    /// The id the server gave context `name`, if it selected it.
    pub fn context_id(&self, name: &str) -> Option<u32> {
        self.contexts.iter().find(|c| c.1 == name).map(|c| c.0)
    }

    /// Fills `buf` with the bytes at `offset` (`NBD_CMD_READ`).
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let len = self.check_range(offset, buf.len() as u64)?;
        let handle = self.send(proto::CMD_READ, offset, u64::from(len))?;
        let what = format!("the read of {len} bytes at {offset}");
        let mut done = false;
        while !done {
            let chunk = self.next_chunk(handle, &what)?;
            done = chunk.flags & proto::REPLY_FLAG_DONE != 0;
            self.read_chunk(&chunk, offset, buf, &what)?;
        }
        Ok(())
    }

    /// The extents of context `context_id` from `offset` on, for at most `len` bytes
    /// (`NBD_CMD_BLOCK_STATUS`). The server may describe less than was asked, never nothing.
    pub fn block_status(
        &mut self,
        offset: u64,
        len: u32,
        context_id: u32,
    ) -> Result<Vec<Extent>, NbdError> {
        if !self.contexts.iter().any(|c| c.0 == context_id) {
            return Err(NbdError::new(
                NbdErrorKind::InvalidRequest,
                format!("context {context_id} was not selected"),
            ));
        }
        let all = self.block_status_all(offset, u64::from(len))?;
        match all.into_iter().find(|(id, _)| *id == context_id) {
            Some((_, extents)) => Ok(extents),
            None => Err(protocol(format!(
                "the block status of {len} bytes at {offset}: no extent of context {context_id}"
            ))),
        }
    }

    /// The extents of every selected context from `offset` on, for at most `len` bytes, as
    /// `(context id, extents)` in the order the server sent them. Each context described has at
    /// least one extent; the server may describe less than was asked. Without extended
    /// headers, at most 4 GiB - 1 is asked for.
    pub fn block_status_all(
        &mut self,
        offset: u64,
        len: u64,
    ) -> Result<Vec<(u32, Vec<Extent>)>, NbdError> {
        let len = if self.extended {
            len
        } else {
            len.min(u64::from(u32::MAX))
        };
        let end = offset.saturating_add(len);
        self.check_end(offset, end)?;
        let handle = self.send(proto::CMD_BLOCK_STATUS, offset, len)?;
        let what = format!("the block status of {len} bytes at {offset}");
        let mut all: Vec<(u32, Vec<Extent>)> = Vec::new();
        let mut done = false;
        while !done {
            let chunk = self.next_chunk(handle, &what)?;
            done = chunk.flags & proto::REPLY_FLAG_DONE != 0;
            let wide = match chunk.kind {
                proto::REPLY_TYPE_BLOCK_STATUS => false,
                proto::REPLY_TYPE_BLOCK_STATUS_EXT if self.extended => true,
                _ => {
                    self.other_chunk(&chunk, &what)?;
                    continue;
                }
            };
            let payload = read_vec(&mut self.stream, chunk.length, self.reply_bytes_max, &what)?;
            let (id, extents) = if wide {
                decode_status_ext(&payload, &what)?
            } else {
                decode_status(&payload, &what)?
            };
            if !self.contexts.iter().any(|c| c.0 == id) || extents.is_empty() {
                return Err(protocol(format!(
                    "{what}: {} extents of context {id}, which was not selected",
                    extents.len()
                )));
            }
            all.retain(|(seen, _)| *seen != id);
            all.push((id, extents));
        }
        Ok(all)
    }

    /// Ends the connection (`NBD_CMD_DISC`, which has no reply).
    pub fn disconnect(mut self) -> Result<(), NbdError> {
        self.send(proto::CMD_DISC, 0, 0).map(drop)
    }

    pub(super) fn check_range(&self, offset: u64, len: u64) -> Result<u32, NbdError> {
        if len > u64::from(self.reply_bytes_max) {
            return Err(NbdError::new(
                NbdErrorKind::InvalidRequest,
                format!(
                    "a read of {len} bytes is over the limit of {}",
                    self.reply_bytes_max
                ),
            ));
        }
        self.check_end(offset, offset.saturating_add(len))?;
        Ok(len as u32)
    }

    pub(super) fn check_end(&self, offset: u64, end: u64) -> Result<(), NbdError> {
        if end > self.size || offset >= end {
            return Err(NbdError::new(
                NbdErrorKind::InvalidRequest,
                format!(
                    "[{offset}, {end}) is empty or past the end of the export ({} bytes)",
                    self.size
                ),
            ));
        }
        Ok(())
    }

    /// Sends a request; `len` fits 32 bits unless extended headers were negotiated.
    pub(super) fn send(&mut self, kind: u16, offset: u64, len: u64) -> Result<u64, NbdError> {
        self.send_with(kind, 0, offset, len, &[])
    }

    /// Sends a request with command flags `flags`, followed by `payload` (a write's data, whose
    /// length is `len`; empty for every other command).
    pub(super) fn send_with(
        &mut self,
        kind: u16,
        flags: u16,
        offset: u64,
        len: u64,
        payload: &[u8],
    ) -> Result<u64, NbdError> {
        let handle = self.next_handle;
        self.next_handle += 1;
        let what = format!("command {kind}");
        if self.extended {
            let b = cw::request_ext(flags, kind, handle, offset, len);
            write_all(&mut self.stream, &b, &what)?;
        } else {
            let len = u32::try_from(len).expect("a request's length was checked");
            write_all(
                &mut self.stream,
                &cw::request(flags, kind, handle, offset, len),
                &what,
            )?;
        }
        if !payload.is_empty() {
            write_all(&mut self.stream, payload, &what)?;
        }
        Ok(handle)
    }

    /// The next chunk of the reply to `handle`; a simple reply must be an error.
    fn next_chunk(&mut self, handle: u64, what: &str) -> Result<Chunk, NbdError> {
        let header = cw::read_reply_header(&mut self.stream, self.extended)?;
        let got = match &header {
            ReplyHeader::Chunk(c) => c.handle,
            ReplyHeader::Simple { handle, .. } => *handle,
        };
        if got != handle {
            return Err(protocol(format!(
                "{what}: a reply for handle {got}, not {handle}"
            )));
        }
        chunk_of(header, what)
    }

    /// The next reply header, whichever request it answers.
    pub(super) fn any_reply(&mut self) -> Result<ReplyHeader, NbdError> {
        cw::read_reply_header(&mut self.stream, self.extended)
    }

    /// The payload of a read's chunk, placed in `buf` (the request's buffer, at `offset`).
    pub(super) fn read_chunk(
        &mut self,
        chunk: &Chunk,
        offset: u64,
        buf: &mut [u8],
        what: &str,
    ) -> Result<(), NbdError> {
        match chunk.kind {
            proto::REPLY_TYPE_OFFSET_DATA => self.data_chunk(chunk, offset, buf, what),
            proto::REPLY_TYPE_OFFSET_HOLE => self.hole_chunk(chunk, offset, buf, what),
            _ => self.other_chunk(chunk, what),
        }
    }
}

/// The chunk a reply header starts; a simple reply must be an error, which this returns.
pub(super) fn chunk_of(header: ReplyHeader, what: &str) -> Result<Chunk, NbdError> {
    match header {
        ReplyHeader::Chunk(c) => Ok(c),
        ReplyHeader::Simple { error: 0, .. } => Err(protocol(format!(
            "{what}: a simple reply although structured replies were negotiated"
        ))),
        ReplyHeader::Simple { error, .. } => Err(NbdError::new(
            NbdErrorKind::Command,
            format!("{what}: the server failed it"),
        )
        .with_errno(error)),
    }
}

impl Client {
    fn data_chunk(
        &mut self,
        chunk: &Chunk,
        offset: u64,
        buf: &mut [u8],
        what: &str,
    ) -> Result<(), NbdError> {
        let at = read_u64(&mut self.stream, what)?;
        let len =
            u64::from(chunk.length.checked_sub(8).ok_or_else(|| {
                protocol(format!("{what}: a data chunk shorter than its offset"))
            })?);
        let start = slice_start(at, len, offset, buf.len(), what)?;
        let out = &mut buf[start..start + len as usize];
        cw::read_exact(&mut self.stream, out, what)?;
        self.data_bytes += len;
        Ok(())
    }

    fn hole_chunk(
        &mut self,
        chunk: &Chunk,
        offset: u64,
        buf: &mut [u8],
        what: &str,
    ) -> Result<(), NbdError> {
        if chunk.length != 12 {
            return Err(protocol(format!(
                "{what}: a hole chunk of {} bytes",
                chunk.length
            )));
        }
        let at = read_u64(&mut self.stream, what)?;
        let len = u64::from(read_u32(&mut self.stream, what)?);
        let start = slice_start(at, len, offset, buf.len(), what)?;
        buf[start..start + len as usize].fill(0);
        Ok(())
    }

    /// An error chunk becomes [`NbdErrorKind::Command`]; a `NONE` chunk ends the reply; any
    /// other type is a protocol error (its payload is skipped only when it is an error type).
    pub(super) fn other_chunk(&mut self, chunk: &Chunk, what: &str) -> Result<(), NbdError> {
        let payload = read_vec(&mut self.stream, chunk.length, self.reply_bytes_max, what)?;
        if chunk.kind == 0 && payload.is_empty() {
            return Ok(());
        }
        if chunk.kind & (1 << 15) == 0 || payload.len() < 6 {
            return Err(protocol(format!(
                "{what}: an unexpected chunk of type {}",
                chunk.kind
            )));
        }
        let errno = u32::from_be_bytes(payload[..4].try_into().expect("four bytes"));
        let message_len = usize::from(u16::from_be_bytes([payload[4], payload[5]]));
        let message = payload.get(6..6 + message_len).unwrap_or_default();
        Err(NbdError::new(
            NbdErrorKind::Command,
            format!("{what}: {}", String::from_utf8_lossy(message)),
        )
        .with_errno(errno))
    }
}

/// Where a chunk of `len` bytes at `at` goes in a buffer of `buf_len` bytes at `offset`.
fn slice_start(
    at: u64,
    len: u64,
    offset: u64,
    buf_len: usize,
    what: &str,
) -> Result<usize, NbdError> {
    let inside = at >= offset && at.saturating_add(len) <= offset + buf_len as u64;
    if !inside {
        return Err(protocol(format!(
            "{what}: a chunk of {len} bytes at {at} lies outside the request"
        )));
    }
    Ok((at - offset) as usize)
}

/// The context id and extents of one block status payload.
fn decode_status(payload: &[u8], what: &str) -> Result<(u32, Vec<Extent>), NbdError> {
    if payload.len() < 4 || !(payload.len() - 4).is_multiple_of(8) {
        return Err(protocol(format!(
            "{what}: a block status chunk of {} bytes",
            payload.len()
        )));
    }
    let be32 = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().expect("four bytes"));
    let extents = (4..payload.len())
        .step_by(8)
        .map(|at| Extent {
            length: u64::from(be32(at)),
            flags: be32(at + 4),
        })
        .collect();
    Ok((be32(0), extents))
}

/// The context id and extents of one 64-bit block status payload (`BLOCK_STATUS_EXT`): the id,
/// a count, then `(length, flags)` pairs of 64 bits. Flags of the contexts replog selects fit
/// 32 bits; higher bits set are a protocol error.
fn decode_status_ext(payload: &[u8], what: &str) -> Result<(u32, Vec<Extent>), NbdError> {
    let bad = || {
        protocol(format!(
            "{what}: a 64-bit block status chunk of {} bytes",
            payload.len()
        ))
    };
    if payload.len() < 8 || !(payload.len() - 8).is_multiple_of(16) {
        return Err(bad());
    }
    let be32 = |at: usize| u32::from_be_bytes(payload[at..at + 4].try_into().expect("four bytes"));
    let be64 = |at: usize| u64::from_be_bytes(payload[at..at + 8].try_into().expect("eight bytes"));
    if be32(4) as usize != (payload.len() - 8) / 16 {
        return Err(bad());
    }
    let mut extents = Vec::with_capacity((payload.len() - 8) / 16);
    for at in (8..payload.len()).step_by(16) {
        let flags = u32::try_from(be64(at + 8))
            .map_err(|_| protocol(format!("{what}: status flags over 32 bits")))?;
        extents.push(Extent {
            length: be64(at),
            flags,
        });
    }
    Ok((be32(0), extents))
}

/// `Ok(false)` when the server refused an option it need not support.
fn optional(r: Result<(), NbdError>) -> Result<bool, NbdError> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.kind, NbdErrorKind::Unsupported | NbdErrorKind::Refused) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads the greeting and answers it: fixed newstyle, without the zeroes when offered.
fn greet(s: &mut Stream) -> Result<(), NbdError> {
    let what = "the server's greeting";
    if read_u64(s, what)? != proto::INIT_MAGIC || read_u64(s, what)? != proto::OPTS_MAGIC {
        return Err(NbdError::new(
            NbdErrorKind::Unsupported,
            "the server does not speak newstyle NBD",
        ));
    }
    let flags = read_u16(s, what)?;
    if flags & proto::FLAG_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::new(
            NbdErrorKind::Unsupported,
            "the server does not speak fixed newstyle NBD",
        ));
    }
    let mut client = proto::FLAG_C_FIXED_NEWSTYLE;
    if flags & proto::FLAG_NO_ZEROES != 0 {
        client |= proto::FLAG_C_NO_ZEROES;
    }
    write_all(s, &client.to_be_bytes(), "the client flags")
}

/// Sends an option without data whose only good answer is `NBD_REP_ACK`.
fn simple_option(s: &mut Stream, option: u32, data: &[u8]) -> Result<(), NbdError> {
    write_all(
        s,
        &cw::option_request(option, data),
        &format!("option {option}"),
    )?;
    let r = read_option_reply(s, option, NbdErrorKind::Unsupported)?;
    if r.reply != proto::REP_ACK {
        return Err(protocol(format!(
            "option {option}: reply {} instead of an ack",
            r.reply
        )));
    }
    Ok(())
}

/// Selects the metadata contexts; every one asked for must be granted.
fn set_meta_contexts(s: &mut Stream, opts: &ClientOptions) -> Result<Vec<(u32, String)>, NbdError> {
    let option = proto::OPT_SET_META_CONTEXT;
    let data = cw::meta_context_request(&opts.export, &opts.meta_contexts);
    write_all(
        s,
        &cw::option_request(option, &data),
        "the metadata contexts",
    )?;
    let mut granted = Vec::new();
    loop {
        let r = read_option_reply(s, option, NbdErrorKind::Refused)?;
        match r.reply {
            proto::REP_ACK => break,
            proto::REP_META_CONTEXT if r.data.len() >= 4 => {
                let id = u32::from_be_bytes(r.data[..4].try_into().expect("four bytes"));
                granted.push((id, String::from_utf8_lossy(&r.data[4..]).into_owned()));
            }
            other => return Err(protocol(format!("metadata contexts: reply {other}"))),
        }
        if granted.len() > opts.meta_contexts.len() {
            return Err(protocol(
                "the server granted more contexts than were asked for",
            ));
        }
    }
    match opts
        .meta_contexts
        .iter()
        .find(|q| !granted.iter().any(|g| &g.1 == *q))
    {
        Some(missing) => Err(NbdError::new(
            NbdErrorKind::Unsupported,
            format!("the server does not offer metadata context {missing:?}"),
        )),
        None => Ok(granted),
    }
}

/// `NBD_OPT_GO`: the export's size and transmission flags.
fn go(s: &mut Stream, export: &str) -> Result<(u64, u16), NbdError> {
    let option = proto::OPT_GO;
    write_all(
        s,
        &cw::option_request(option, &cw::go_request(export)),
        "NBD_OPT_GO",
    )?;
    let mut export_info = None;
    loop {
        let r = read_option_reply(s, option, NbdErrorKind::Refused).map_err(|e| NbdError {
            context: format!("export {export:?}: {}", e.context),
            ..e
        })?;
        match r.reply {
            proto::REP_ACK => break,
            proto::REP_INFO => {
                let mut d = r.data.as_slice();
                let what = "an info reply";
                if read_u16(&mut d, what)? == proto::INFO_EXPORT {
                    export_info = Some((read_u64(&mut d, what)?, read_u16(&mut d, what)?));
                }
            }
            other => return Err(protocol(format!("NBD_OPT_GO: reply {other}"))),
        }
    }
    export_info.ok_or_else(|| protocol("NBD_OPT_GO: no size and flags before the ack"))
}
