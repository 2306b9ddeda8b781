//! The transmission phase: requests in, replies out, one at a time per connection (a client
//! may pipeline; replies go back in request order).
//!
//! Every request is checked before it touches the device: flags must be ones the protocol
//! allows for the command (else `EINVAL`), ranges must lie inside the device's size (`EINVAL`
//! for reads and block status, `ENOSPC` for writes), writes to a read-only device get `EPERM`,
//! and
//! reads and writes carry at most [`PAYLOAD_BYTES_MAX`] (else `EINVAL`; an oversized write
//! payload is read and dropped in small pieces, never held). A write is replied to only after
//! the device has it, so a client that vanishes mid-request loses only that request, which it
//! was never told was done.
//!
//! With structured replies, reads answer ranges the allocation map shows as zero with hole
//! chunks (no data sent) and errors carry their message; block status answers
//! `base:allocation`.

use std::io::{self, Read, Write};

use super::error::{NbdError, NbdErrorKind};
use super::export::{BlockDevice, Extents};
use super::handshake::Negotiated;
use super::proto::{self, PAYLOAD_BYTES_MAX};
use super::request::{self, REQUEST_BYTES, Request};

/// Most descriptors in one block status reply.
const STATUS_EXTENTS_MAX: usize = 16 << 10;
/// Most base checksum-table lookups for one block status or read.
const LOOKUPS_MAX: u64 = 1 << 18;
/// Zero ranges shorter than this are sent as data rather than as hole chunks.
const HOLE_CHUNK_BYTES_MIN: u64 = 64 << 10;

/// How a connection's transmission ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    /// The client sent `NBD_CMD_DISC`.
    Disconnected,
    /// The client closed the connection (between requests, or in the middle of one).
    Gone,
    /// The client broke the protocol; the reason, for the log.
    Violation(String),
}

/// The connection's terms and what its device says of itself.
#[derive(Debug)]
struct Session<'a> {
    /// What the handshake agreed.
    terms: Negotiated,
    /// The export's name, for the log.
    name: &'a str,
    /// The device's size, asked once: an export does not change size while served.
    size: u64,
    /// Whether the device accepts writes.
    writable: bool,
}

/// Serves requests from `r` to the device `disk` of export `name` until the client leaves.
pub fn serve(
    r: &mut impl Read,
    w: &mut impl Write,
    disk: &mut dyn BlockDevice,
    terms: Negotiated,
    name: &str,
) -> io::Result<Closed> {
    let s = &Session {
        terms,
        name,
        size: disk.size(),
        writable: !disk.read_only(),
    };
    let mut buf = Vec::new();
    loop {
        let mut header = [0u8; REQUEST_BYTES];
        match r.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Closed::Gone),
            Err(e) => return Err(e),
        }
        let Some(req) = request::decode_request(&header) else {
            return Ok(Closed::Violation(
                "a request without the request magic".into(),
            ));
        };
        if req.kind == proto::CMD_DISC {
            return Ok(Closed::Disconnected);
        }
        if req.kind == proto::CMD_WRITE && !receive(r, &req, &mut buf)? {
            return Ok(Closed::Gone);
        }
        handle(w, disk, s, &req, &mut buf)?;
        w.flush()?;
    }
}

/// Reads a write's payload into `buf`, or drops it when it is over the limit. False when the
/// client closed the connection before sending all of it (nothing of it is applied).
fn receive(r: &mut impl Read, req: &Request, buf: &mut Vec<u8>) -> io::Result<bool> {
    let len = u64::from(req.length);
    if req.length > PAYLOAD_BYTES_MAX {
        buf.clear();
        let copied = io::copy(&mut r.by_ref().take(len), &mut io::sink())?;
        return Ok(copied == len);
    }
    buf.resize(req.length as usize, 0);
    match r.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

fn invalid(message: impl Into<String>) -> NbdError {
    NbdError::new(NbdErrorKind::InvalidRequest, message)
}

/// Checks a request's flags, length and range. `past_end` is the kind of error for a range past
/// the end of the export.
fn check(
    s: &Session<'_>,
    req: &Request,
    allowed: u16,
    past_end: NbdErrorKind,
) -> Result<(), NbdError> {
    if req.flags & !allowed != 0 {
        return Err(invalid(format!(
            "flags {:#x} are not valid for command {}",
            req.flags & !allowed,
            req.kind
        )));
    }
    if req.length == 0 {
        return Err(invalid("the request has length 0"));
    }
    if req.end().is_none_or(|end| end > s.size) {
        return Err(NbdError::new(
            past_end,
            format!(
                "bytes {}..{} are past the end of export {} ({} bytes)",
                req.offset,
                req.offset.saturating_add(u64::from(req.length)),
                s.name,
                s.size
            ),
        ));
    }
    Ok(())
}

fn check_payload(req: &Request) -> Result<(), NbdError> {
    if req.length > PAYLOAD_BYTES_MAX {
        return Err(invalid(format!(
            "{} bytes is over the maximum block size of {PAYLOAD_BYTES_MAX}",
            req.length
        )));
    }
    Ok(())
}

fn check_writable(s: &Session<'_>) -> Result<(), NbdError> {
    if s.writable {
        Ok(())
    } else {
        Err(NbdError::read_only(format!(
            "export {} is read-only",
            s.name
        )))
    }
}

fn handle(
    w: &mut impl Write,
    disk: &mut dyn BlockDevice,
    s: &Session<'_>,
    req: &Request,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let fua = req.flags & proto::CMD_FLAG_FUA != 0;
    let result = match req.kind {
        proto::CMD_READ => return read(w, disk, s, req, buf),
        proto::CMD_BLOCK_STATUS => return status(w, disk, s, req),
        proto::CMD_WRITE => check_writable(s)
            .and_then(|()| check_payload(req))
            .and_then(|()| check(s, req, proto::CMD_FLAG_FUA, NbdErrorKind::NoSpace))
            .and_then(|()| disk.write(req.offset, buf, fua)),
        proto::CMD_TRIM => check_writable(s)
            .and_then(|()| check(s, req, proto::CMD_FLAG_FUA, NbdErrorKind::NoSpace))
            .and_then(|()| disk.trim(req.offset, u64::from(req.length), fua)),
        proto::CMD_WRITE_ZEROES => {
            // Zeroing only appends a record or marks a range: always fast, so FAST_ZERO holds.
            let allowed = proto::CMD_FLAG_FUA | proto::CMD_FLAG_NO_HOLE | proto::CMD_FLAG_FAST_ZERO;
            check_writable(s)
                .and_then(|()| check(s, req, allowed, NbdErrorKind::NoSpace))
                .and_then(|()| disk.write_zeroes(req.offset, u64::from(req.length), fua))
        }
        proto::CMD_FLUSH if !s.writable => {
            Err(invalid("flush is not offered on a read-only export"))
        }
        proto::CMD_FLUSH
            if req.offset != 0 || req.length != 0 || req.flags & !proto::CMD_FLAG_FUA != 0 =>
        {
            Err(invalid(
                "a flush must have offset 0, length 0 and no flags but FUA",
            ))
        }
        proto::CMD_FLUSH => disk.flush(),
        kind => Err(invalid(format!("unknown command {kind}"))),
    };
    reply(w, s, req, result)
}

/// Sends a reply without data: success, or the error (with its message when structured).
fn reply(
    w: &mut impl Write,
    s: &Session<'_>,
    req: &Request,
    result: Result<(), NbdError>,
) -> io::Result<()> {
    match result {
        Ok(()) => w.write_all(&request::simple_reply(0, req.handle)),
        Err(e) => {
            let errno = e.reply_errno();
            let message = e.to_string();
            if errno == proto::EIO {
                eprintln!(
                    "replog: nbd: export {}: command {} at byte {} ({} bytes) failed: {message}",
                    s.name, req.kind, req.offset, req.length
                );
            }
            if s.terms.structured {
                w.write_all(&request::error_chunk(req.handle, errno, &message))
            } else {
                w.write_all(&request::simple_reply(errno, req.handle))
            }
        }
    }
}

/// `NBD_CMD_READ`.
fn read(
    w: &mut impl Write,
    disk: &mut dyn BlockDevice,
    s: &Session<'_>,
    req: &Request,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    let mut allowed = proto::CMD_FLAG_FUA;
    if s.terms.structured {
        allowed |= proto::CMD_FLAG_DF;
    }
    if let Err(e) =
        check(s, req, allowed, NbdErrorKind::InvalidRequest).and_then(|()| check_payload(req))
    {
        return reply(w, s, req, Err(e));
    }
    let len = req.length as usize;
    buf.resize(len, 0);
    let one_chunk = req.flags & proto::CMD_FLAG_DF != 0;
    if !s.terms.structured || one_chunk {
        if let Err(e) = disk.read(req.offset, buf) {
            return reply(w, s, req, Err(e));
        }
        if s.terms.structured {
            w.write_all(&request::data_chunk_header(
                req.handle, req.offset, req.length, true,
            ))?;
        } else {
            w.write_all(&request::simple_reply(0, req.handle))?;
        }
        return w.write_all(buf);
    }
    let plan = match plan_read(disk, req) {
        Ok(plan) => plan,
        Err(e) => return reply(w, s, req, Err(e)),
    };
    for &(start, end, hole) in &plan {
        if !hole {
            let out = &mut buf[(start - req.offset) as usize..(end - req.offset) as usize];
            if let Err(e) = disk.read(start, out) {
                return reply(w, s, req, Err(e));
            }
        }
    }
    let last = plan.len() - 1;
    for (i, &(start, end, hole)) in plan.iter().enumerate() {
        let n = (end - start) as u32;
        if hole {
            w.write_all(&request::hole_chunk(req.handle, start, n, i == last))?;
        } else {
            w.write_all(&request::data_chunk_header(req.handle, start, n, i == last))?;
            w.write_all(&buf[(start - req.offset) as usize..(end - req.offset) as usize])?;
        }
    }
    Ok(())
}

/// Splits a read into `(start, end, hole)` pieces: zero ranges of at least
/// [`HOLE_CHUNK_BYTES_MIN`] become hole chunks, everything else data (read and sent).
fn plan_read(disk: &mut dyn BlockDevice, req: &Request) -> Result<Vec<(u64, u64, bool)>, NbdError> {
    let end = req.offset + u64::from(req.length);
    let mut extents = Extents::new(usize::MAX, LOOKUPS_MAX);
    disk.block_status(req.offset, end, &mut extents)?;
    let mut plan: Vec<(u64, u64, bool)> = Vec::new();
    let mut at = req.offset;
    let described = extents
        .list()
        .iter()
        .map(|&(len, flags)| (len, flags & proto::STATE_ZERO != 0));
    let rest = (end > req.offset + extents.covered())
        .then(|| (end - req.offset - extents.covered(), false));
    for (len, zero) in described.chain(rest) {
        let len = len.min(end - at);
        let hole = zero && len >= HOLE_CHUNK_BYTES_MIN;
        match plan.last_mut() {
            Some(last) if !hole && !last.2 => last.1 += len,
            _ => plan.push((at, at + len, hole)),
        }
        at += len;
        if at == end {
            break;
        }
    }
    Ok(plan)
}

/// `NBD_CMD_BLOCK_STATUS`: the `base:allocation` descriptors from the start of the range.
fn status(
    w: &mut impl Write,
    disk: &mut dyn BlockDevice,
    s: &Session<'_>,
    req: &Request,
) -> io::Result<()> {
    if !s.terms.base_allocation {
        let e = invalid("no metadata context was negotiated");
        return reply(w, s, req, Err(e));
    }
    let allowed = proto::CMD_FLAG_FUA | proto::CMD_FLAG_REQ_ONE;
    if let Err(e) = check(s, req, allowed, NbdErrorKind::InvalidRequest) {
        return reply(w, s, req, Err(e));
    }
    let max = if req.flags & proto::CMD_FLAG_REQ_ONE != 0 {
        1
    } else {
        STATUS_EXTENTS_MAX
    };
    let mut extents = Extents::new(max, LOOKUPS_MAX);
    let end = req.offset + u64::from(req.length);
    if let Err(e) = disk.block_status(req.offset, end, &mut extents) {
        return reply(w, s, req, Err(e));
    }
    let mut list: Vec<(u32, u32)> = Vec::with_capacity(extents.list().len());
    let mut left = u64::from(req.length);
    for &(len, flags) in extents.list() {
        let len = len.min(left);
        if len == 0 {
            break;
        }
        list.push((len as u32, flags));
        left -= len;
    }
    if list.is_empty() {
        // Nothing could be looked up: "allocated, contents unknown" is always true.
        list.push((req.length, 0));
    }
    w.write_all(&request::block_status_chunk(
        req.handle,
        proto::BASE_ALLOCATION_ID,
        &list,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::{DATA, HOLE};
    use proptest::prelude::*;

    /// A disk in memory whose 64 KiB blocks of zeros are holes; read-only when the flag is set.
    struct MemDisk(Vec<u8>, bool);

    const BLOCK: u64 = 64 << 10;

    impl BlockDevice for MemDisk {
        fn size(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_only(&self) -> bool {
            self.1
        }
        fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
            buf.copy_from_slice(&self.0[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn block_status(
            &mut self,
            offset: u64,
            end: u64,
            out: &mut Extents,
        ) -> Result<(), NbdError> {
            let mut at = offset;
            while at < end {
                let upto = ((at / BLOCK + 1) * BLOCK).min(end);
                let zero = self.0[(at / BLOCK * BLOCK) as usize
                    ..((at / BLOCK + 1) * BLOCK).min(self.0.len() as u64) as usize]
                    .iter()
                    .all(|&b| b == 0);
                if !out.push(upto - at, if zero { HOLE } else { DATA }) {
                    return Ok(());
                }
                at = upto;
            }
            Ok(())
        }
        fn write(&mut self, offset: u64, data: &[u8], _fua: bool) -> Result<(), NbdError> {
            self.0[offset as usize..offset as usize + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn write_zeroes(&mut self, offset: u64, len: u64, _fua: bool) -> Result<(), NbdError> {
            self.0[offset as usize..(offset + len) as usize].fill(0);
            Ok(())
        }
    }

    const SIZE: u64 = 1 << 20;

    /// What the handshake agreed, and whether the disk is to be writable.
    fn session(structured: bool, writable: bool) -> (Negotiated, bool) {
        let terms = Negotiated {
            export: 0,
            structured,
            base_allocation: structured,
            flags: 0,
        };
        (terms, writable)
    }

    fn disk() -> MemDisk {
        MemDisk(vec![0; SIZE as usize], false)
    }

    fn req(kind: u16, flags: u16, handle: u64, offset: u64, length: u32) -> Vec<u8> {
        let mut b = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&handle.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&length.to_be_bytes());
        b
    }

    fn run(input: &[u8], disk: &mut MemDisk, s: &(Negotiated, bool)) -> (Closed, Vec<u8>) {
        let mut out = Vec::new();
        disk.1 = !s.1;
        let closed = serve(&mut &input[..], &mut out, disk, s.0, "test").unwrap();
        (closed, out)
    }

    /// One parsed reply message: simple `(error, handle, data)` or a chunk.
    #[derive(Debug, PartialEq)]
    enum Msg {
        Simple(u32, u64),
        Chunk {
            flags: u16,
            kind: u16,
            handle: u64,
            payload: Vec<u8>,
        },
    }

    /// Parses replies; `read_len` gives the data length following a successful simple reply.
    fn parse(mut out: &[u8], read_len: impl Fn(u64) -> usize) -> Vec<(Msg, Vec<u8>)> {
        let mut list = Vec::new();
        while !out.is_empty() {
            let magic = u32::from_be_bytes(out[..4].try_into().unwrap());
            if magic == proto::SIMPLE_REPLY_MAGIC {
                let error = u32::from_be_bytes(out[4..8].try_into().unwrap());
                let handle = u64::from_be_bytes(out[8..16].try_into().unwrap());
                let n = if error == 0 { read_len(handle) } else { 0 };
                list.push((Msg::Simple(error, handle), out[16..16 + n].to_vec()));
                out = &out[16 + n..];
            } else {
                assert_eq!(magic, proto::STRUCTURED_REPLY_MAGIC);
                let len = u32::from_be_bytes(out[16..20].try_into().unwrap()) as usize;
                list.push((
                    Msg::Chunk {
                        flags: u16::from_be_bytes(out[4..6].try_into().unwrap()),
                        kind: u16::from_be_bytes(out[6..8].try_into().unwrap()),
                        handle: u64::from_be_bytes(out[8..16].try_into().unwrap()),
                        payload: out[20..20 + len].to_vec(),
                    },
                    Vec::new(),
                ));
                out = &out[20 + len..];
            }
        }
        list
    }

    fn error_of(m: &Msg) -> u32 {
        match m {
            Msg::Simple(e, _) => *e,
            Msg::Chunk { kind, payload, .. } if *kind == proto::REPLY_TYPE_ERROR => {
                u32::from_be_bytes(payload[..4].try_into().unwrap())
            }
            _ => 0,
        }
    }

    #[test]
    fn a_write_reads_back_with_simple_replies() {
        let mut disk = disk();
        let mut input = req(proto::CMD_WRITE, proto::CMD_FLAG_FUA, 1, 4000, 5);
        input.extend_from_slice(b"hello");
        input.extend(req(proto::CMD_READ, 0, 2, 3999, 7));
        input.extend(req(proto::CMD_DISC, 0, 3, 0, 0));
        let (closed, out) = run(&input, &mut disk, &session(false, true));
        assert_eq!(closed, Closed::Disconnected);
        let r = parse(&out, |h| if h == 2 { 7 } else { 0 });
        assert_eq!(r[0].0, Msg::Simple(0, 1));
        assert_eq!(r[1], (Msg::Simple(0, 2), b"\0hello\0".to_vec()));
    }

    #[test]
    fn structured_reads_send_holes_as_hole_chunks_and_data_as_data() {
        let mut disk = disk();
        disk.0[(3 * BLOCK) as usize] = 9;
        let input = req(proto::CMD_READ, 0, 5, 0, (4 * BLOCK) as u32);
        let (_, out) = run(&input, &mut disk, &session(true, false));
        let r = parse(&out, |_| 0);
        let kinds: Vec<(u16, u16)> = r
            .iter()
            .map(|(m, _)| match m {
                Msg::Chunk { flags, kind, .. } => (*kind, *flags),
                Msg::Simple(..) => panic!("a structured read got a simple reply"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (proto::REPLY_TYPE_OFFSET_HOLE, 0),
                (proto::REPLY_TYPE_OFFSET_DATA, proto::REPLY_FLAG_DONE)
            ]
        );
        let Msg::Chunk { payload, .. } = &r[1].0 else {
            unreachable!()
        };
        assert_eq!(
            u64::from_be_bytes(payload[..8].try_into().unwrap()),
            3 * BLOCK
        );
        assert_eq!(payload[8], 9);
    }

    #[test]
    fn bad_requests_get_the_protocol_errors_and_the_connection_goes_on() {
        let mut disk = disk();
        let mut input = Vec::new();
        input.extend(req(proto::CMD_READ, 0, 1, SIZE - 1, 2));
        input.extend(req(proto::CMD_READ, proto::CMD_FLAG_REQ_ONE, 2, 0, 1));
        input.extend(req(proto::CMD_READ, 0, 3, 0, proto::PAYLOAD_BYTES_MAX + 1));
        let big = PAYLOAD_BYTES_MAX + 5;
        input.extend(req(proto::CMD_WRITE, 0, 4, 0, big));
        input.extend(vec![1u8; big as usize]);
        input.extend(req(proto::CMD_WRITE, 0, 5, SIZE - 1, 2));
        input.extend([1, 2]);
        input.extend(req(42, 0, 6, 0, 0));
        input.extend(req(proto::CMD_FLUSH, 0, 7, 1, 0));
        input.extend(req(
            proto::CMD_WRITE_ZEROES,
            proto::CMD_FLAG_FAST_ZERO,
            8,
            0,
            4096,
        ));
        input.extend(req(proto::CMD_BLOCK_STATUS, proto::CMD_FLAG_DF, 9, 0, 4096));
        input.extend(req(proto::CMD_READ, 0, 10, 0, 4));
        let (closed, out) = run(&input, &mut disk, &session(true, true));
        assert_eq!(closed, Closed::Gone);
        let errors: Vec<u32> = parse(&out, |_| 0)
            .iter()
            .map(|(m, _)| error_of(m))
            .collect();
        use proto::*;
        assert_eq!(
            errors,
            [
                EINVAL, EINVAL, EINVAL, EINVAL, ENOSPC, EINVAL, EINVAL, 0, EINVAL, 0
            ]
        );
        assert!(
            disk.0.iter().all(|&b| b == 0),
            "no refused write was applied"
        );
    }

    #[test]
    fn a_read_only_export_refuses_writes_with_eperm() {
        let mut disk = disk();
        let mut input = req(proto::CMD_WRITE, 0, 1, 0, 3);
        input.extend([1, 2, 3]);
        input.extend(req(proto::CMD_TRIM, 0, 2, 0, 4096));
        input.extend(req(proto::CMD_WRITE_ZEROES, 0, 3, 0, 4096));
        let (_, out) = run(&input, &mut disk, &session(false, false));
        let errors: Vec<u32> = parse(&out, |_| 0)
            .iter()
            .map(|(m, _)| error_of(m))
            .collect();
        assert_eq!(errors, [proto::EPERM; 3]);
    }

    #[test]
    fn block_status_describes_the_range_and_req_one_gives_one_extent() {
        let mut disk = disk();
        disk.0[BLOCK as usize] = 1;
        let mut input = req(proto::CMD_BLOCK_STATUS, 0, 1, 0, (3 * BLOCK) as u32);
        input.extend(req(
            proto::CMD_BLOCK_STATUS,
            proto::CMD_FLAG_REQ_ONE,
            2,
            0,
            (3 * BLOCK) as u32,
        ));
        let (_, out) = run(&input, &mut disk, &session(true, false));
        let r = parse(&out, |_| 0);
        let descriptors = |m: &Msg| -> Vec<(u32, u32)> {
            let Msg::Chunk { payload, kind, .. } = m else {
                panic!("not a chunk")
            };
            assert_eq!(*kind, proto::REPLY_TYPE_BLOCK_STATUS);
            payload[4..]
                .chunks(8)
                .map(|c| {
                    (
                        u32::from_be_bytes(c[..4].try_into().unwrap()),
                        u32::from_be_bytes(c[4..].try_into().unwrap()),
                    )
                })
                .collect()
        };
        let b = BLOCK as u32;
        assert_eq!(descriptors(&r[0].0), [(b, HOLE), (b, DATA), (b, HOLE)]);
        assert_eq!(descriptors(&r[1].0), [(b, HOLE)]);
    }

    #[test]
    fn a_write_cut_short_by_a_disconnect_is_not_applied() {
        let mut disk = disk();
        let mut input = req(proto::CMD_WRITE, 0, 1, 0, 2);
        input.extend([7, 7]);
        input.extend(req(proto::CMD_WRITE, 0, 2, 100, 1000));
        input.extend([9u8; 500]);
        let (closed, out) = run(&input, &mut disk, &session(false, true));
        assert_eq!(closed, Closed::Gone);
        assert_eq!(
            parse(&out, |_| 0).len(),
            1,
            "only the whole write was replied to"
        );
        assert_eq!(&disk.0[..2], [7, 7]);
        assert!(disk.0[100..1100].iter().all(|&b| b == 0));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_request_streams_never_panic(
            reqs in prop::collection::vec((0u16..10, any::<u16>(), 0u64..(SIZE + 10), 0u32..70_000), 0..20),
            structured in any::<bool>(),
            writable in any::<bool>(),
            tail in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut disk = disk();
            disk.1 = !writable;
            let mut input = Vec::new();
            for (kind, flags, offset, length) in reqs {
                input.extend(req(kind, flags, 1, offset, length));
                if kind == proto::CMD_WRITE {
                    input.extend(std::iter::repeat_n(5u8, length as usize));
                }
            }
            input.extend(tail);
            let mut out = Vec::new();
            let _ = serve(&mut &input[..], &mut out, &mut disk, session(structured, writable).0, "test");
        }
    }
}
