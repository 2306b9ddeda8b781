//! Bytes of the transmission phase: the request header, simple replies and structured reply
//! chunks. Pure functions; the server loop does the I/O.

use super::proto;

/// Bytes of a request header.
pub const REQUEST_BYTES: usize = 28;
/// Bytes of a structured reply chunk header.
pub const CHUNK_HEADER_BYTES: usize = 20;

/// A client request, as sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// `NBD_CMD_FLAG_*`.
    pub flags: u16,
    /// `NBD_CMD_*`.
    pub kind: u16,
    /// Echoed in the reply.
    pub handle: u64,
    /// First byte.
    pub offset: u64,
    /// Bytes; for a write, the payload that follows.
    pub length: u32,
}

impl Request {
    /// One past the last byte, or `None` when it does not fit in 64 bits.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(u64::from(self.length))
    }
}

/// The request in `b`, or `None` when its magic is wrong (the stream cannot be followed).
pub fn decode_request(b: &[u8; REQUEST_BYTES]) -> Option<Request> {
    let be16 = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let be32 = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("four bytes"));
    let be64 = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("eight bytes"));
    (be32(0) == proto::REQUEST_MAGIC).then(|| Request {
        flags: be16(4),
        kind: be16(6),
        handle: be64(8),
        offset: be64(16),
        length: be32(24),
    })
}

/// A simple reply: magic, error, handle (a read's data follows it).
pub fn simple_reply(error: u32, handle: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&proto::SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..].copy_from_slice(&handle.to_be_bytes());
    b
}

/// A structured reply chunk header; `payload_bytes` of payload follow it.
pub fn chunk_header(flags: u16, kind: u16, handle: u64, payload_bytes: u32) -> [u8; 20] {
    let mut b = [0u8; CHUNK_HEADER_BYTES];
    b[..4].copy_from_slice(&proto::STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..].copy_from_slice(&payload_bytes.to_be_bytes());
    b
}

/// The header of an `NBD_REPLY_TYPE_OFFSET_DATA` chunk carrying `data_bytes` at `offset`, up
/// to the data itself.
pub fn data_chunk_header(handle: u64, offset: u64, data_bytes: u32, done: bool) -> [u8; 28] {
    let mut b = [0u8; 28];
    let flags = if done { proto::REPLY_FLAG_DONE } else { 0 };
    b[..20].copy_from_slice(&chunk_header(
        flags,
        proto::REPLY_TYPE_OFFSET_DATA,
        handle,
        data_bytes + 8,
    ));
    b[20..].copy_from_slice(&offset.to_be_bytes());
    b
}

/// An `NBD_REPLY_TYPE_OFFSET_HOLE` chunk: `len` bytes at `offset` read as zeros.
pub fn hole_chunk(handle: u64, offset: u64, len: u32, done: bool) -> [u8; 32] {
    let mut b = [0u8; 32];
    let flags = if done { proto::REPLY_FLAG_DONE } else { 0 };
    b[..20].copy_from_slice(&chunk_header(
        flags,
        proto::REPLY_TYPE_OFFSET_HOLE,
        handle,
        12,
    ));
    b[20..28].copy_from_slice(&offset.to_be_bytes());
    b[28..].copy_from_slice(&len.to_be_bytes());
    b
}

/// A final `NBD_REPLY_TYPE_ERROR` chunk with a message for humans.
pub fn error_chunk(handle: u64, error: u32, message: &str) -> Vec<u8> {
    let mut end = message.len().min(1024);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message.as_bytes()[..end];
    let mut b = Vec::with_capacity(CHUNK_HEADER_BYTES + 6 + message.len());
    b.extend_from_slice(&chunk_header(
        proto::REPLY_FLAG_DONE,
        proto::REPLY_TYPE_ERROR,
        handle,
        6 + message.len() as u32,
    ));
    b.extend_from_slice(&error.to_be_bytes());
    b.extend_from_slice(&(message.len() as u16).to_be_bytes());
    b.extend_from_slice(message);
    b
}

/// A final `NBD_REPLY_TYPE_BLOCK_STATUS` chunk: `(length, flags)` descriptors of one context.
pub fn block_status_chunk(handle: u64, context_id: u32, extents: &[(u32, u32)]) -> Vec<u8> {
    let payload = 4 + 8 * extents.len();
    let mut b = Vec::with_capacity(CHUNK_HEADER_BYTES + payload);
    b.extend_from_slice(&chunk_header(
        proto::REPLY_FLAG_DONE,
        proto::REPLY_TYPE_BLOCK_STATUS,
        handle,
        payload as u32,
    ));
    b.extend_from_slice(&context_id.to_be_bytes());
    for &(len, flags) in extents {
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&flags.to_be_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_decodes_field_by_field() {
        let mut b = [0u8; REQUEST_BYTES];
        b[..4].copy_from_slice(&proto::REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&proto::CMD_FLAG_FUA.to_be_bytes());
        b[6..8].copy_from_slice(&proto::CMD_WRITE.to_be_bytes());
        b[8..16].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        b[16..24].copy_from_slice(&4096u64.to_be_bytes());
        b[24..].copy_from_slice(&512u32.to_be_bytes());
        let r = decode_request(&b).unwrap();
        assert_eq!(
            r,
            Request {
                flags: proto::CMD_FLAG_FUA,
                kind: proto::CMD_WRITE,
                handle: 0x0102_0304_0506_0708,
                offset: 4096,
                length: 512
            }
        );
        assert_eq!(r.end(), Some(4608));
        b[0] = 0;
        assert_eq!(decode_request(&b), None);
    }

    #[test]
    fn chunks_carry_their_payload_length() {
        let e = error_chunk(9, proto::EIO, "bad");
        assert_eq!(u32::from_be_bytes(e[16..20].try_into().unwrap()), 9);
        assert_eq!(e.len(), CHUNK_HEADER_BYTES + 9);
        let s = block_status_chunk(1, 1, &[(4096, 3), (512, 0)]);
        assert_eq!(u32::from_be_bytes(s[16..20].try_into().unwrap()), 20);
        let d = data_chunk_header(1, 0, 100, true);
        assert_eq!(u32::from_be_bytes(d[16..20].try_into().unwrap()), 108);
        let long = "é".repeat(1000);
        let e = error_chunk(1, proto::EIO, &long);
        assert!(std::str::from_utf8(&e[26..]).is_ok());
    }
}
