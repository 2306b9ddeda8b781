//! The client's side of the bytes: option requests and replies of the handshake, and bounded
//! reads of whatever the server sends. Every length the server announces is checked against a
//! limit before anything is allocated for it.

use std::io::{Read, Write};

use super::error::{NbdError, NbdErrorKind};
use super::proto;

/// One option reply: its type and data.
#[derive(Debug)]
pub struct OptionReply {
    /// `NBD_REP_*`.
    pub reply: u32,
    /// The reply's data.
    pub data: Vec<u8>,
}

/// Reads exactly `buf.len()` bytes, naming `what` on failure.
pub fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), NbdError> {
    r.read_exact(buf)
        .map_err(|e| NbdError::io(format!("reading {what}"), e))
}

/// Writes all of `b`, naming `what` on failure.
pub fn write_all(w: &mut impl Write, b: &[u8], what: &str) -> Result<(), NbdError> {
    w.write_all(b)
        .map_err(|e| NbdError::io(format!("sending {what}"), e))
}

/// A big-endian u16 from the stream.
pub fn read_u16(r: &mut impl Read, what: &str) -> Result<u16, NbdError> {
    let mut b = [0u8; 2];
    read_exact(r, &mut b, what)?;
    Ok(u16::from_be_bytes(b))
}

/// A big-endian u32 from the stream.
pub fn read_u32(r: &mut impl Read, what: &str) -> Result<u32, NbdError> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b, what)?;
    Ok(u32::from_be_bytes(b))
}

/// A big-endian u64 from the stream.
pub fn read_u64(r: &mut impl Read, what: &str) -> Result<u64, NbdError> {
    let mut b = [0u8; 8];
    read_exact(r, &mut b, what)?;
    Ok(u64::from_be_bytes(b))
}

/// `len` bytes from the stream, refused with [`NbdErrorKind::TooBig`] over `max`.
pub fn read_vec(r: &mut impl Read, len: u32, max: u32, what: &str) -> Result<Vec<u8>, NbdError> {
    if len > max {
        return Err(NbdError::new(
            NbdErrorKind::TooBig,
            format!("{what}: the server announced {len} bytes, over the limit of {max}"),
        ));
    }
    let mut b = vec![0u8; len as usize];
    read_exact(r, &mut b, what)?;
    Ok(b)
}

/// The bytes of option `option` with `data`.
pub fn option_request(option: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&proto::OPTS_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Reads one reply to `option`; an error reply becomes `refused` or, for an unknown option,
/// [`NbdErrorKind::Unsupported`].
pub fn read_option_reply(
    r: &mut impl Read,
    option: u32,
    refused: NbdErrorKind,
) -> Result<OptionReply, NbdError> {
    let what = format!("the reply to option {option}");
    if read_u64(r, &what)? != proto::REP_MAGIC {
        return Err(protocol(format!("{what} has a wrong magic")));
    }
    if read_u32(r, &what)? != option {
        return Err(protocol(format!("{what} names another option")));
    }
    let reply = read_u32(r, &what)?;
    let len = read_u32(r, &what)?;
    let data = read_vec(r, len, proto::OPTION_DATA_BYTES_MAX, &what)?;
    if reply & (1 << 31) == 0 {
        return Ok(OptionReply { reply, data });
    }
    let kind = if reply == proto::REP_ERR_UNSUP {
        NbdErrorKind::Unsupported
    } else {
        refused
    };
    let message = String::from_utf8_lossy(&data);
    Err(NbdError::new(
        kind,
        format!("the server refused option {option}: {message}"),
    )
    .with_errno(reply))
}

/// A [`NbdErrorKind::Protocol`] error.
pub fn protocol(context: impl Into<String>) -> NbdError {
    NbdError::new(NbdErrorKind::Protocol, context)
}

/// `NBD_OPT_SET_META_CONTEXT`'s data: the export name and the queries.
pub fn meta_context_request(export: &str, queries: &[String]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(export.len() as u32).to_be_bytes());
    b.extend_from_slice(export.as_bytes());
    b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        b.extend_from_slice(&(q.len() as u32).to_be_bytes());
        b.extend_from_slice(q.as_bytes());
    }
    b
}

/// `NBD_OPT_GO`'s data: the export name and no information requests.
pub fn go_request(export: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(export.len() as u32).to_be_bytes());
    b.extend_from_slice(export.as_bytes());
    b.extend_from_slice(&0u16.to_be_bytes());
    b
}

/// An extended transmission request's 32 bytes (64-bit length).
pub fn request_ext(flags: u16, kind: u16, handle: u64, offset: u64, length: u64) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&proto::EXTENDED_REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..24].copy_from_slice(&offset.to_be_bytes());
    b[24..].copy_from_slice(&length.to_be_bytes());
    b
}

/// A transmission request's 28 bytes.
pub fn request(flags: u16, kind: u16, handle: u64, offset: u64, length: u32) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[..4].copy_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..24].copy_from_slice(&offset.to_be_bytes());
    b[24..].copy_from_slice(&length.to_be_bytes());
    b
}

/// A structured reply chunk's header, after its magic.
#[derive(Debug)]
pub struct Chunk {
    /// `NBD_REPLY_FLAG_*`.
    pub flags: u16,
    /// `NBD_REPLY_TYPE_*`.
    pub kind: u16,
    /// The request's handle.
    pub handle: u64,
    /// Bytes of payload that follow.
    pub length: u32,
}

/// What starts a reply: a structured chunk, or a simple reply's error value and handle.
#[derive(Debug)]
pub enum ReplyHeader {
    /// A structured reply chunk.
    Chunk(Chunk),
    /// A simple reply (only errors are expected once structured replies are on).
    Simple { error: u32, handle: u64 },
}

/// Reads the header of the next reply. With extended headers every reply is an extended chunk,
/// whose 64-bit payload length must fit the 32 bits a chunk is read with.
pub fn read_reply_header(r: &mut impl Read, extended: bool) -> Result<ReplyHeader, NbdError> {
    let what = "a reply header";
    match read_u32(r, what)? {
        proto::EXTENDED_REPLY_MAGIC if extended => {
            let (flags, kind, handle) =
                (read_u16(r, what)?, read_u16(r, what)?, read_u64(r, what)?);
            let _request_offset = read_u64(r, what)?;
            let length = read_u64(r, what)?;
            let length = u32::try_from(length).map_err(|_| {
                NbdError::new(
                    NbdErrorKind::TooBig,
                    format!("{what}: the server announced {length} bytes"),
                )
            })?;
            Ok(ReplyHeader::Chunk(Chunk {
                flags,
                kind,
                handle,
                length,
            }))
        }
        magic if extended => Err(protocol(format!(
            "a reply starts with magic {magic:#x}, not an extended reply's"
        ))),
        proto::STRUCTURED_REPLY_MAGIC => Ok(ReplyHeader::Chunk(Chunk {
            flags: read_u16(r, what)?,
            kind: read_u16(r, what)?,
            handle: read_u64(r, what)?,
            length: read_u32(r, what)?,
        })),
        proto::SIMPLE_REPLY_MAGIC => Ok(ReplyHeader::Simple {
            error: read_u32(r, what)?,
            handle: read_u64(r, what)?,
        }),
        magic => Err(protocol(format!("a reply starts with magic {magic:#x}"))),
    }
}
