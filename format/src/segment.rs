//! Journal segments: header, footer index, trailer, and the scan that finds where the valid
//! records of a segment end.
//!
//! A segment file is a 4096-byte header, then records packed back to back. A sealed segment ends
//! with a footer record (kind 4) whose payload indexes every record, then a 64-byte trailer;
//! only zeros may follow it (a torn tail cut before the seal is zeroed, not truncated). The
//! manifest keeps the footer's offset and CRC and the trailer's end, so readers open sealed
//! segments without scanning.
//!
//! Segment header:
//! ```text
//! offset size field
//!      0    8 magic "RPLG-SEG"
//!      8    4 format_version u32
//!     12    4 header_bytes u32 (4096)
//!     16   16 vault_id
//!     32    8 segment_id u64
//!     40    8 first_lsn u64: the LSN of its first record
//!     48    8 created_unix_ns i64
//!     56    4 flags u32: bit 0 (`SEGMENT_HEADER_FLAG_CHAIN`) a chain value follows; others zero
//!     60   32 chain_start (flag bit 0; else zero): the value the segment's first chain link
//!             starts from (see `chain`)
//!     92 4000 reserved, zero
//!   4092    4 crc32 (vault seed) of bytes 0..4092
//! ```

use crate::chain::ChainHash;
use crate::codec::{Cursor, Put, check_magic_version, check_page_crc, seal_page};
use crate::garbage::DeadRange;
use crate::limits::*;
use crate::magic::{self, FormatVersion};
use crate::record::*;
use crate::{DecodeError, DecodeErrorKind, VaultId};

/// Size of a segment header.
pub const SEGMENT_HEADER_BYTES: usize = PAGE_BYTES;
/// Size of the trailer that ends a sealed segment.
pub const TRAILER_BYTES: usize = 64;
/// Size of one extent entry in a footer.
pub const FOOTER_EXTENT_BYTES: usize = 48;
/// Fixed bytes of one point entry in a footer, before its label.
pub const FOOTER_POINT_FIXED_BYTES: usize = 36;
const _: () = assert!(FOOTER_EXTENT_BYTES == 8 * 4 + 4 * 3 + 1 + 1 + 2);
const _: () = assert!(FOOTER_POINT_FIXED_BYTES == 8 * 4 + 1 + 1 + 2);
/// Segment header flag: the header holds the value the segment's first chain link starts from.
pub const SEGMENT_HEADER_FLAG_CHAIN: u32 = 1;

/// The header of a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The vault the segment belongs to.
    pub vault_id: VaultId,
    /// Its id, from 1 upward, in LSN order.
    pub segment_id: u64,
    /// The LSN of its first record.
    pub first_lsn: u64,
    /// When it was created.
    pub created_unix_ns: i64,
    /// The value the segment's first chain link starts from; `None` in segments written before
    /// the chain existed.
    pub chain_start: Option<ChainHash>,
}

impl SegmentHeader {
    /// Encodes the header page.
    pub fn encode(&self, seed: u32) -> Vec<u8> {
        let mut buf = Vec::with_capacity(SEGMENT_HEADER_BYTES);
        Put::new(&mut buf)
            .bytes(&magic::SEGMENT)
            .u32(FormatVersion::CURRENT.as_u32())
            .u32(SEGMENT_HEADER_BYTES as u32)
            .bytes(&self.vault_id)
            .u64(self.segment_id)
            .u64(self.first_lsn)
            .i64(self.created_unix_ns);
        if let Some(chain) = &self.chain_start {
            Put::new(&mut buf)
                .u32(SEGMENT_HEADER_FLAG_CHAIN)
                .bytes(chain);
        }
        seal_page(&mut buf, SEGMENT_HEADER_BYTES, seed);
        buf
    }

    /// Decodes and validates the header page.
    pub fn decode(bytes: &[u8], seed: u32) -> Result<SegmentHeader, DecodeError> {
        const WHAT: &str = "segment header";
        let mut c = Cursor::new(bytes, WHAT);
        check_magic_version(&mut c, magic::SEGMENT, "segment")?;
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(c.error_at(
                DecodeErrorKind::Truncated,
                bytes.len(),
                "segment header is cut short",
            ));
        }
        check_page_crc(&bytes[..SEGMENT_HEADER_BYTES], WHAT, seed)?;
        if c.u32()? as usize != SEGMENT_HEADER_BYTES {
            return Err(c.error_at(DecodeErrorKind::BadField, 12, "header size is not 4096"));
        }
        let mut h = SegmentHeader {
            vault_id: c.array()?,
            segment_id: c.u64()?,
            first_lsn: c.u64()?,
            created_unix_ns: c.i64()?,
            chain_start: None,
        };
        let flags = c.u32()?;
        if flags & !SEGMENT_HEADER_FLAG_CHAIN != 0 {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                56,
                format!("segment header flags {flags:#x}"),
            ));
        }
        if flags & SEGMENT_HEADER_FLAG_CHAIN != 0 {
            h.chain_start = Some(c.array()?);
        }
        c.zeros(SEGMENT_HEADER_BYTES - 4 - c.position())?;
        if h.segment_id == 0 || h.first_lsn == 0 {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                32,
                "segment id and first LSN start at 1",
            ));
        }
        Ok(h)
    }
}

/// One write, zero or resize record, as indexed by a footer (a resize's `disk_offset` and
/// `length` are the disk's size before and after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtentEntry {
    /// The record's LSN.
    pub lsn: u64,
    /// Where its header starts in the segment.
    pub record_offset: u64,
    /// Target byte offset on the disk.
    pub disk_offset: u64,
    /// Bytes written or zeroed.
    pub length: u64,
    /// Target disk.
    pub disk_id: u32,
    /// Payload bytes stored after the header.
    pub stored_len: u32,
    /// The record's CRC, so a reader can check it read the record the footer meant.
    pub record_crc: u32,
    /// Write, zero or resize.
    pub kind: RecordKind,
    /// Record flags.
    pub flags: u8,
}

impl ExtentEntry {
    /// The index entry for a write, zero or resize record.
    pub fn from_header(h: &RecordHeader) -> ExtentEntry {
        ExtentEntry {
            lsn: h.lsn,
            record_offset: h.segment_offset,
            disk_offset: h.disk_offset,
            length: h.length,
            disk_id: h.disk_id,
            stored_len: h.stored_len,
            record_crc: h.crc,
            kind: h.kind,
            flags: h.flags,
        }
    }
}

/// One recovery point, as indexed by a footer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointEntry {
    /// The point's marker record LSN.
    pub lsn: u64,
    /// Where the marker record starts in the segment.
    pub record_offset: u64,
    /// The marker's payload.
    pub point: PointPayload,
}

/// The payload of a footer record: every extent and point of the segment, in LSN order.
///
/// ```text
/// offset size field
///      0    4 extent_count u32
///      4    4 point_count u32
///      8  48n extents (write, zero, resize): lsn u64, record_offset u64, disk_offset u64, length u64,
///             disk_id u32, stored_len u32, record_crc u32, kind u8, flags u8, reserved u16
///      .    . points: lsn u64, record_offset u64, point_id u64, time_unix_ns i64,
///             kind u8, flags u8, label_len u16, label, chain hash (flag bit 0)
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FooterIndex {
    /// Writes, zeroes and resizes.
    pub extents: Vec<ExtentEntry>,
    /// Recovery points.
    pub points: Vec<PointEntry>,
}

impl FooterIndex {
    /// Encodes the index.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(8 + self.extents.len() * FOOTER_EXTENT_BYTES);
        let mut p = Put::new(&mut buf);
        p.u32(self.extents.len() as u32)
            .u32(self.points.len() as u32);
        for e in &self.extents {
            p.u64(e.lsn)
                .u64(e.record_offset)
                .u64(e.disk_offset)
                .u64(e.length)
                .u32(e.disk_id)
                .u32(e.stored_len)
                .u32(e.record_crc)
                .u8(e.kind as u8)
                .u8(e.flags)
                .u16(0);
        }
        for pt in &self.points {
            p.u64(pt.lsn).u64(pt.record_offset);
            pt.point.put(&mut p);
        }
        buf
    }

    /// Decodes the index. Counts are checked against the bytes present before anything is
    /// allocated.
    pub fn decode(bytes: &[u8]) -> Result<FooterIndex, DecodeError> {
        let mut c = Cursor::new(bytes, "footer index");
        let extent_count = c.u32()? as usize;
        let point_count = c.u32()? as usize;
        let need = extent_count as u64 * FOOTER_EXTENT_BYTES as u64
            + point_count as u64 * FOOTER_POINT_FIXED_BYTES as u64;
        if need > c.remaining() as u64 || extent_count + point_count > SEGMENT_RECORDS_MAX as usize
        {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                0,
                format!(
                    "{extent_count} extents and {point_count} points do not fit in {} bytes",
                    bytes.len()
                ),
            ));
        }
        let extents = (0..extent_count)
            .map(|_| decode_extent_entry(&mut c))
            .collect::<Result<Vec<_>, _>>()?;
        let points = (0..point_count)
            .map(|_| decode_point_entry(&mut c))
            .collect::<Result<Vec<_>, _>>()?;
        c.finish()?;
        footer_sorted(FooterIndex { extents, points })
    }
}

/// Decodes one footer extent; only write, zero and resize records are extents. A resize entry
/// follows its record's field rules (disk, sizes, no payload, no flags), so the encoding of each
/// stays canonical.
fn decode_extent_entry(c: &mut Cursor<'_>) -> Result<ExtentEntry, DecodeError> {
    let at = c.position();
    let (lsn, record_offset, disk_offset, length) = (c.u64()?, c.u64()?, c.u64()?, c.u64()?);
    let (disk_id, stored_len, record_crc) = (c.u32()?, c.u32()?, c.u32()?);
    let kind = match RecordKind::from_u8(c.u8()?) {
        Some(k @ (RecordKind::Write | RecordKind::Zero | RecordKind::Resize)) => k,
        _ => {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                at + 44,
                "extent kind is not write, zero or resize",
            ));
        }
    };
    let flags = c.u8()?;
    c.zeros(2)?;
    if kind == RecordKind::Resize {
        let rule = check_resize_fields(disk_id, disk_offset, length).and_then(|()| {
            match (stored_len, flags) {
                (0, 0) => Ok(()),
                _ => Err((44, "a resize has no payload and no flags".to_owned())),
            }
        });
        if let Err((field, detail)) = rule {
            // Record header offsets 40 (disk), 44 (payload), 48 and 56 (sizes) map onto the
            // entry's 32, 36, 16 and 24.
            let entry_field = match field {
                40 => 32,
                44 => 36,
                48 => 16,
                _ => 24,
            };
            return Err(c.error_at(DecodeErrorKind::BadField, at + entry_field, detail));
        }
    }
    Ok(ExtentEntry {
        lsn,
        record_offset,
        disk_offset,
        length,
        disk_id,
        stored_len,
        record_crc,
        kind,
        flags,
    })
}

/// Decodes one footer point: its fixed fields, then its UTF-8 label of at most 1024 bytes.
fn decode_point_entry(c: &mut Cursor<'_>) -> Result<PointEntry, DecodeError> {
    let (lsn, record_offset) = (c.u64()?, c.u64()?);
    Ok(PointEntry {
        lsn,
        record_offset,
        point: PointPayload::decode_in_entry(c)?,
    })
}

fn footer_sorted(f: FooterIndex) -> Result<FooterIndex, DecodeError> {
    let in_order = f
        .extents
        .windows(2)
        .all(|w| w[0].lsn < w[1].lsn && w[0].record_offset < w[1].record_offset)
        && f.points.windows(2).all(|w| w[0].lsn < w[1].lsn);
    if in_order {
        Ok(f)
    } else {
        Err(DecodeError::new(
            DecodeErrorKind::BadField,
            "footer index",
            8,
            "entries are not in LSN order",
        ))
    }
}

/// Builds a segment's index while it is scanned (pass [`IndexBuilder::visit`] to [`scan`]): what
/// its footer holds, plus the first point payload that failed to decode, which is damage.
#[derive(Clone, Debug, Default)]
pub struct IndexBuilder {
    /// Writes, zeroes and resizes, in LSN order.
    pub extents: Vec<ExtentEntry>,
    /// Points, in LSN order.
    pub points: Vec<PointEntry>,
    /// The first point whose payload did not decode, offset within the segment.
    pub bad_point: Option<DecodeError>,
}

impl IndexBuilder {
    /// Adds one record, as `scan` visits it.
    pub fn visit(&mut self, h: &RecordHeader, payload: &[u8]) {
        match h.kind {
            RecordKind::Write | RecordKind::Zero | RecordKind::Resize => {
                self.extents.push(ExtentEntry::from_header(h))
            }
            RecordKind::Point => match PointPayload::decode(payload) {
                Ok(point) => self.points.push(PointEntry {
                    lsn: h.lsn,
                    record_offset: h.segment_offset,
                    point,
                }),
                Err(e) => {
                    self.bad_point
                        .get_or_insert(e.at(h.segment_offset + RECORD_HEADER_BYTES as u64));
                }
            },
            RecordKind::Footer => {}
        }
    }
}

/// The 64 bytes after the footer record of a sealed segment; only zeros may follow them.
///
/// ```text
/// offset size field
///      0    8 magic "RPLG-FTR"
///      8    8 segment_id
///     16    8 footer_offset: where the footer record starts
///     24    8 first_lsn
///     32    8 last_lsn
///     40    4 record_count (writes, zeroes and points)
///     44    4 footer_crc: the footer record's CRC
///     48   12 reserved, zero
///     60    4 crc32 (vault seed) of bytes 0..60
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// The segment it ends.
    pub segment_id: u64,
    /// Offset of the footer record.
    pub footer_offset: u64,
    /// First and last LSN of the segment's records.
    pub first_lsn: u64,
    /// See `first_lsn`.
    pub last_lsn: u64,
    /// Records indexed by the footer.
    pub record_count: u32,
    /// The footer record's CRC.
    pub footer_crc: u32,
}

impl Trailer {
    /// Encodes the trailer.
    pub fn encode(&self, seed: u32) -> Vec<u8> {
        let mut buf = Vec::with_capacity(TRAILER_BYTES);
        Put::new(&mut buf)
            .bytes(&magic::FOOTER_TRAILER)
            .u64(self.segment_id)
            .u64(self.footer_offset)
            .u64(self.first_lsn)
            .u64(self.last_lsn)
            .u32(self.record_count)
            .u32(self.footer_crc);
        seal_page(&mut buf, TRAILER_BYTES, seed);
        buf
    }

    /// Decodes and validates the trailer.
    pub fn decode(bytes: &[u8], seed: u32) -> Result<Trailer, DecodeError> {
        let mut c = Cursor::new(bytes, "segment trailer");
        if bytes.len() != TRAILER_BYTES {
            return Err(c.error_at(
                DecodeErrorKind::Truncated,
                0,
                format!("expected 64 bytes, found {}", bytes.len()),
            ));
        }
        if c.array::<8>()? != magic::FOOTER_TRAILER {
            return Err(c.error_at(DecodeErrorKind::BadMagic, 0, "no segment trailer"));
        }
        check_page_crc(bytes, "segment trailer", seed)?;
        let t = Trailer {
            segment_id: c.u64()?,
            footer_offset: c.u64()?,
            first_lsn: c.u64()?,
            last_lsn: c.u64()?,
            record_count: c.u32()?,
            footer_crc: c.u32()?,
        };
        c.zeros(12)?;
        Ok(t)
    }
}

/// What a segment must be to belong where it was found.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// The vault's id.
    pub vault_id: VaultId,
    /// The vault seed ([`crate::vault_seed`]).
    pub seed: u32,
    /// The id the manifest or file name gives the segment.
    pub segment_id: u64,
}

/// Where the valid records of a segment end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// The records end at `offset`, and the file ends there or holds only zeros after it.
    Clean {
        /// The end of the last valid record.
        offset: u64,
    },
    /// The records end at `offset`, followed by bytes that are not a valid record; no later
    /// record says they were ever durable. This is what an interrupted writer leaves behind.
    Torn {
        /// The end of the last valid record: where the writer resumes.
        offset: u64,
        /// Why the bytes at `offset` are not a record.
        reason: DecodeError,
    },
    /// A footer and trailer end the segment.
    Sealed {
        /// The footer record's offset.
        footer_offset: u64,
        /// The trailer.
        trailer: Trailer,
    },
}

impl SegmentEnd {
    /// The offset where the next record would go (the footer offset for a sealed segment).
    pub fn append_offset(&self) -> u64 {
        match self {
            SegmentEnd::Clean { offset } | SegmentEnd::Torn { offset, .. } => *offset,
            SegmentEnd::Sealed { footer_offset, .. } => *footer_offset,
        }
    }
}

/// The result of a scan.
#[derive(Clone, Debug)]
pub struct Scan {
    /// The decoded header.
    pub header: SegmentHeader,
    /// Where the valid records end.
    pub end: SegmentEnd,
    /// LSN of the last valid write, zero or point record (`first_lsn - 1` when there is none).
    pub last_lsn: u64,
    /// Write, zero and point records seen.
    pub record_count: u32,
    /// The decoded footer of a sealed segment.
    pub footer: Option<FooterIndex>,
    /// The end of the last valid structure: the append offset, or the end of the trailer of a
    /// sealed segment. Only zeros (or a torn tail) may follow it.
    pub valid_end: u64,
}

/// Decodes the record at `pos` and checks that it belongs there: its own offset and segment,
/// and its CRC. Returns the header and payload. (The LSN order is the scan's to check.)
pub fn record_at<'a>(
    bytes: &'a [u8],
    pos: u64,
    expect: &Expect,
) -> Result<(RecordHeader, &'a [u8]), DecodeError> {
    let rest = bytes.get(pos as usize..).unwrap_or_default();
    record_in(rest, pos, expect)
}

/// [`record_at`] for a buffer that starts with the record, found at byte `pos` of its segment
/// (a record read on its own). Offsets in errors are offsets in the segment file.
pub fn record_in<'a>(
    bytes: &'a [u8],
    pos: u64,
    expect: &Expect,
) -> Result<(RecordHeader, &'a [u8]), DecodeError> {
    let head = bytes.get(..RECORD_HEADER_BYTES).ok_or_else(|| {
        DecodeError::new(
            DecodeErrorKind::Truncated,
            "record header",
            pos,
            "the file ends inside a record header",
        )
    })?;
    let h = RecordHeader::decode(head).map_err(|e| e.at(pos))?;
    if h.segment_id != expect.segment_id || h.segment_offset != pos {
        return Err(DecodeError::new(
            DecodeErrorKind::Misplaced,
            "record",
            pos,
            format!(
                "record says it is at segment {} offset {}, found in segment {} offset {pos}",
                h.segment_id, h.segment_offset, expect.segment_id
            ),
        ));
    }
    let end = pos + h.total_bytes();
    let payload = bytes
        .get(RECORD_HEADER_BYTES..h.total_bytes() as usize)
        .ok_or_else(|| {
            DecodeError::new(
                DecodeErrorKind::Truncated,
                "record",
                pos,
                format!("the file ends before the record's end at {end}"),
            )
        })?;
    h.verify(expect.seed, head, payload)
        .map_err(|e| e.at(pos))?;
    Ok((h, payload))
}

/// Scans a whole segment file image, calling `visit` for every valid write, zero and point
/// record in order, and reports where the valid records end.
///
/// The rule for an invalid record at offset X (see `FORMAT.md`, recovery rules):
/// - the rest of the file is zero: the log ends cleanly at X;
/// - a valid record later in the file says the segment was durable past X (`synced_upto > X`):
///   X was acknowledged and is now damaged, an error naming X;
/// - otherwise the bytes at X are the torn tail of an interrupted writer: [`SegmentEnd::Torn`].
pub fn scan(
    bytes: &[u8],
    expect: &Expect,
    visit: impl FnMut(&RecordHeader, &[u8]),
) -> Result<Scan, DecodeError> {
    scan_from(bytes, expect, None, visit)
}

/// Where the records a scan reads start, in a segment whose dead prefix was released (see
/// [`crate::manifest::Manifest::released_prefix`]): the offset and LSN of the base point's
/// marker. The bytes between the header and it are not read (they may be a hole, or the old
/// records if the release did not reach the disk); the records before it are counted, not
/// visited, as the LSNs say (one per record), so the trailer and footer still agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveStart {
    /// The marker's offset in the segment.
    pub offset: u64,
    /// Its LSN.
    pub lsn: u64,
}

/// [`scan`] from `start` instead of the first record, when given: the records before it are
/// counted but neither read nor visited.
pub fn scan_from(
    bytes: &[u8],
    expect: &Expect,
    start: Option<LiveStart>,
    visit: impl FnMut(&RecordHeader, &[u8]),
) -> Result<Scan, DecodeError> {
    scan_skipping(bytes, expect, start, &[], visit)
}

/// [`scan_from`] that also steps over the segment's `dead` ranges (in offset order, see
/// [`crate::garbage`]): their records are counted by their LSNs but neither read nor visited.
/// A range must start exactly at a record boundary with the next LSN; one the records step
/// past instead is an error at the record that crosses it.
pub fn scan_skipping(
    bytes: &[u8],
    expect: &Expect,
    start: Option<LiveStart>,
    dead: &[DeadRange],
    mut visit: impl FnMut(&RecordHeader, &[u8]),
) -> Result<Scan, DecodeError> {
    let header = SegmentHeader::decode(bytes, expect.seed)?;
    if header.vault_id != expect.vault_id || header.segment_id != expect.segment_id {
        return Err(DecodeError::new(
            DecodeErrorKind::Misplaced,
            "segment header",
            16,
            format!(
                "segment {} of another vault or place, expected segment {}",
                header.segment_id, expect.segment_id
            ),
        ));
    }
    let mut at = Progress {
        pos: SEGMENT_HEADER_BYTES as u64,
        next_lsn: header.first_lsn,
        record_count: 0,
    };
    if let Some(live) = start {
        at = live_progress(&header, live)?;
    }
    let mut dead = dead.iter().peekable();
    let failure = loop {
        if let Some(d) = dead.next_if(|d| at.pos >= d.start) {
            if at.pos != d.start || at.next_lsn != d.first_lsn || d.end > bytes.len() as u64 {
                break DecodeError::new(
                    DecodeErrorKind::Misplaced,
                    "record",
                    at.pos,
                    format!(
                        "the dead range {}..{} (LSN {}..={}) does not start at this record (LSN {}) or ends past the file",
                        d.start, d.end, d.first_lsn, d.last_lsn, at.next_lsn
                    ),
                );
            }
            at.record_count += d.records() as u32;
            at.next_lsn = d.last_lsn + 1;
            at.pos = d.end;
            continue;
        }
        if at.pos == bytes.len() as u64 {
            let end = SegmentEnd::Clean { offset: at.pos };
            return Ok(at.scan_result(header, end, None, at.pos));
        }
        let (h, payload) = match record_at(bytes, at.pos, expect) {
            Ok(found) => found,
            Err(e) => break e,
        };
        if h.kind == RecordKind::Footer {
            match sealed_end(bytes, &h, payload, expect, &header, &at) {
                Ok((end, footer)) => {
                    let valid_end = at.pos + h.total_bytes() + TRAILER_BYTES as u64;
                    return Ok(at.scan_result(header, end, Some(footer), valid_end));
                }
                Err(SealError::NoTrailer(e)) => break e,
                Err(SealError::Damage(e)) => return Err(e),
            }
        }
        if h.lsn != at.next_lsn {
            break DecodeError::new(
                DecodeErrorKind::Misplaced,
                "record",
                at.pos,
                format!("LSN {} where LSN {} was expected", h.lsn, at.next_lsn),
            );
        }
        visit(&h, payload);
        at.record_count += 1;
        at.next_lsn += 1;
        at.pos += h.total_bytes();
    };
    let end = classify_invalid_tail(bytes, at.pos, expect, failure)?;
    Ok(at.scan_result(header, end, None, at.pos))
}

/// Where a scan from a live start begins: the records before it counted by their LSNs.
fn live_progress(header: &SegmentHeader, live: LiveStart) -> Result<Progress, DecodeError> {
    let before = live.lsn.checked_sub(header.first_lsn);
    match before {
        Some(n) if live.offset >= SEGMENT_HEADER_BYTES as u64 && n <= u32::MAX as u64 => {
            Ok(Progress {
                pos: live.offset,
                next_lsn: live.lsn,
                record_count: n as u32,
            })
        }
        _ => Err(DecodeError::new(
            DecodeErrorKind::Misplaced,
            "segment header",
            40,
            format!(
                "the segment starts at LSN {}, after its live start (LSN {} at offset {})",
                header.first_lsn, live.lsn, live.offset
            ),
        )),
    }
}

/// How far a scan has read: the offset and LSN the next record must have, and the write, zero
/// and point records seen before it.
struct Progress {
    pos: u64,
    next_lsn: u64,
    record_count: u32,
}

impl Progress {
    fn scan_result(
        &self,
        header: SegmentHeader,
        end: SegmentEnd,
        footer: Option<FooterIndex>,
        valid_end: u64,
    ) -> Scan {
        Scan {
            header,
            end,
            last_lsn: self.next_lsn - 1,
            record_count: self.record_count,
            footer,
            valid_end,
        }
    }
}

/// Why a footer record did not end its segment.
enum SealError {
    /// The trailer is missing, torn, or not the one written for this footer (another segment,
    /// offset or footer CRC). The seal never completed: the footer starts a torn tail (rule E).
    NoTrailer(DecodeError),
    /// The trailer is intact and names this footer, so the seal was written, yet the footer, the
    /// records it seals or the bytes after it disagree with it: damage, never cut (rule F).
    Damage(DecodeError),
}

/// Checks that the footer `h` found at `at.pos` seals its segment: a trailer written for it,
/// agreeing with the records scanned, a footer indexing each of them, and only zeros after.
fn sealed_end(
    bytes: &[u8],
    h: &RecordHeader,
    payload: &[u8],
    expect: &Expect,
    header: &SegmentHeader,
    at: &Progress,
) -> Result<(SegmentEnd, FooterIndex), SealError> {
    let pos = at.pos;
    let trailer_at = pos + h.total_bytes();
    let trailer = footer_trailer(bytes, trailer_at, h, pos, expect)?;
    let damage = |kind, what, offset, detail: String| {
        SealError::Damage(DecodeError::new(kind, what, offset, detail))
    };
    let last_lsn = at.next_lsn - 1;
    let record_count = at.record_count;
    if trailer.first_lsn != header.first_lsn
        || trailer.last_lsn != last_lsn
        || h.lsn != last_lsn
        || trailer.record_count != record_count
    {
        return Err(damage(
            DecodeErrorKind::BadField,
            "segment trailer",
            trailer_at,
            format!(
                "the trailer seals LSNs {}..={} ({} records, footer LSN {}), the segment holds LSNs {}..={last_lsn} ({record_count} records)",
                trailer.first_lsn, trailer.last_lsn, trailer.record_count, h.lsn, header.first_lsn
            ),
        ));
    }
    let footer = FooterIndex::decode(payload)
        .map_err(|e| SealError::Damage(e.at(pos + RECORD_HEADER_BYTES as u64)))?;
    if footer.extents.len() + footer.points.len() != record_count as usize {
        return Err(damage(
            DecodeErrorKind::BadField,
            "footer index",
            pos,
            format!(
                "the footer indexes {} records, the segment holds {record_count}",
                footer.extents.len() + footer.points.len()
            ),
        ));
    }
    // Zeros may follow the trailer: a torn tail cut before the seal is zeroed, never truncated
    // (a reader may have the file mapped).
    let file_end = trailer_at + TRAILER_BYTES as u64;
    if let Some(i) = bytes[file_end as usize..].iter().position(|&b| b != 0) {
        return Err(damage(
            DecodeErrorKind::BadField,
            "segment",
            file_end + i as u64,
            "non-zero bytes after the trailer of a sealed segment".to_owned(),
        ));
    }
    Ok((
        SegmentEnd::Sealed {
            footer_offset: pos,
            trailer,
        },
        footer,
    ))
}

/// Reads the trailer at `trailer_at` and checks it was written for the footer `h` at
/// `footer_at`; any failure means the seal never completed.
fn footer_trailer(
    bytes: &[u8],
    trailer_at: u64,
    h: &RecordHeader,
    footer_at: u64,
    expect: &Expect,
) -> Result<Trailer, SealError> {
    let trailer_bytes = bytes
        .get(trailer_at as usize..trailer_at as usize + TRAILER_BYTES)
        .ok_or_else(|| {
            SealError::NoTrailer(DecodeError::new(
                DecodeErrorKind::Truncated,
                "segment trailer",
                trailer_at,
                "the file ends inside the trailer",
            ))
        })?;
    let trailer = Trailer::decode(trailer_bytes, expect.seed)
        .map_err(|e| SealError::NoTrailer(e.at(trailer_at)))?;
    if trailer.segment_id != expect.segment_id
        || trailer.footer_offset != footer_at
        || trailer.footer_crc != h.crc
    {
        return Err(SealError::NoTrailer(DecodeError::new(
            DecodeErrorKind::Misplaced,
            "segment trailer",
            trailer_at,
            format!(
                "the trailer names segment {} footer {} with CRC {:#010x}, not this footer",
                trailer.segment_id, trailer.footer_offset, trailer.footer_crc
            ),
        )));
    }
    Ok(trailer)
}

/// Decides whether the invalid bytes at `pos` are a torn tail, a clean end, or damage.
fn classify_invalid_tail(
    bytes: &[u8],
    pos: u64,
    expect: &Expect,
    failure: DecodeError,
) -> Result<SegmentEnd, DecodeError> {
    let rest = &bytes[pos as usize..];
    if rest.iter().all(|&b| b == 0) {
        return Ok(SegmentEnd::Clean { offset: pos });
    }
    if let Some(later) = durable_record_after(bytes, pos, expect) {
        return Err(DecodeError::new(
            failure.kind,
            "record",
            pos,
            format!(
                "{} (the record at {later} says the segment was durable past this point, so this is damage, not a torn tail)",
                failure.detail
            ),
        ));
    }
    Ok(SegmentEnd::Torn {
        offset: pos,
        reason: failure,
    })
}

/// The offset of a valid record after `pos` whose writer had synced past `pos`, if any.
fn durable_record_after(bytes: &[u8], pos: u64, expect: &Expect) -> Option<u64> {
    let id = expect.segment_id.to_le_bytes();
    let last = bytes.len().checked_sub(RECORD_HEADER_BYTES)?;
    (pos as usize + 1..=last).map(|q| q as u64).find(|&q| {
        let at = q as usize;
        bytes[at + 16..at + 24] == id
            && bytes[at + 24..at + 32] == q.to_le_bytes()
            && record_at(bytes, q, expect).is_ok_and(|(h, _)| h.synced_upto > pos)
    })
}

#[cfg(test)]
mod tests;
