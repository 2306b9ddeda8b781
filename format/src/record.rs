//! Journal records: writes, zero ranges, recovery-point markers and segment footers.
//!
//! Every record is a 64-byte header followed by `stored_len` payload bytes, packed with no
//! padding. The CRC covers header bytes 4..64 and the payload, seeded with the vault seed.
//! A record names its own segment and offset, so an intact record copied to another place, segment
//! or vault fails validation.
//!
//! ```text
//! offset size field
//!      0    4 crc32 (vault seed) of bytes 4..64 and the payload
//!      4    1 kind: 1 write, 2 zero, 3 point, 4 footer, 5 resize
//!      5    1 flags: bit 0 = payload is LZ4 (write only); other bits zero
//!      6    2 reserved, zero
//!      8    8 lsn (footer: the segment's last LSN)
//!     16    8 segment_id
//!     24    8 segment_offset: where this header starts in its segment file
//!     32    8 synced_upto: segment length known durable when the record was framed
//!     40    4 disk_id (write, zero, resize; else 0)
//!     44    4 stored_len: payload bytes that follow (resize: 0)
//!     48    8 disk_offset (write, zero; resize: the disk's size before; else 0)
//!     56    8 length: logical bytes written or zeroed (write, zero; resize: the size after; else 0)
//! ```
//!
//! A resize record grows one disk: points before it read the disk at its old size, points at or
//! after it at the new one, the grown range reading as zeros until written.

use crate::chain::{CHAIN_HASH_BYTES, ChainHash};
use crate::codec::{Cursor, Put};
use crate::limits::*;
use crate::{DecodeError, DecodeErrorKind};

/// Size of a record header.
pub const RECORD_HEADER_BYTES: usize = 64;
const _: () = assert!(RECORD_HEADER_BYTES == 4 + 1 + 1 + 2 + 8 * 4 + 4 + 4 + 8 + 8);

/// Payload flag: the write payload is an LZ4 block.
pub const FLAG_LZ4: u8 = 1;

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// Bytes written to a disk.
    Write = 1,
    /// A range of a disk set to zero (trim, discard, write-zeroes).
    Zero = 2,
    /// A recovery-point marker covering every disk.
    Point = 3,
    /// The index that seals a segment.
    Footer = 4,
    /// A disk grew: `disk_offset` is its size before, `length` its size after.
    Resize = 5,
}

impl RecordKind {
    /// Parses the kind byte.
    pub fn from_u8(value: u8) -> Option<RecordKind> {
        match value {
            1 => Some(RecordKind::Write),
            2 => Some(RecordKind::Zero),
            3 => Some(RecordKind::Point),
            4 => Some(RecordKind::Footer),
            5 => Some(RecordKind::Resize),
            _ => None,
        }
    }

    /// A short lower-case name, as `dump` prints it.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Write => "write",
            RecordKind::Zero => "zero",
            RecordKind::Point => "point",
            RecordKind::Footer => "footer",
            RecordKind::Resize => "resize",
        }
    }
}

/// A decoded record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// The checksum stored in the header.
    pub crc: u32,
    /// What the record is.
    pub kind: RecordKind,
    /// Payload flags ([`FLAG_LZ4`]).
    pub flags: u8,
    /// Log sequence number: one order across all disks.
    pub lsn: u64,
    /// The segment the record was written to.
    pub segment_id: u64,
    /// The offset of the header in that segment.
    pub segment_offset: u64,
    /// Segment length known durable when the record was framed.
    pub synced_upto: u64,
    /// Target disk (write, zero).
    pub disk_id: u32,
    /// Payload bytes after the header.
    pub stored_len: u32,
    /// Target byte offset on the disk (write, zero).
    pub disk_offset: u64,
    /// Logical length written or zeroed (write, zero).
    pub length: u64,
}

impl RecordHeader {
    /// Total bytes the record occupies in its segment.
    pub fn total_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + u64::from(self.stored_len)
    }

    /// A resize record's sizes: the disk's size before it and after it.
    pub fn resize_bytes(&self) -> Option<(u64, u64)> {
        (self.kind == RecordKind::Resize).then_some((self.disk_offset, self.length))
    }

    /// Whether the write payload is LZ4-compressed.
    pub fn is_lz4(&self) -> bool {
        self.flags & FLAG_LZ4 != 0
    }

    /// The header's bytes as stored, with its CRC.
    pub fn encode(&self) -> [u8; RECORD_HEADER_BYTES] {
        self.encode_with_crc(self.crc)
    }

    /// Encodes the header with `crc` in place (0 while the CRC is being computed).
    fn encode_with_crc(&self, crc: u32) -> [u8; RECORD_HEADER_BYTES] {
        let mut buf = Vec::with_capacity(RECORD_HEADER_BYTES);
        Put::new(&mut buf)
            .u32(crc)
            .u8(self.kind as u8)
            .u8(self.flags)
            .u16(0)
            .u64(self.lsn)
            .u64(self.segment_id)
            .u64(self.segment_offset)
            .u64(self.synced_upto)
            .u32(self.disk_id)
            .u32(self.stored_len)
            .u64(self.disk_offset)
            .u64(self.length);
        let mut out = [0u8; RECORD_HEADER_BYTES];
        out.copy_from_slice(&buf);
        out
    }

    /// Encodes the header for `payload`, computing and storing its CRC (also in `self.crc`).
    pub fn seal(&mut self, seed: u32, payload: &[u8]) -> [u8; RECORD_HEADER_BYTES] {
        assert_eq!(
            payload.len() as u64,
            u64::from(self.stored_len),
            "stored_len must match payload"
        );
        let bytes = self.encode_with_crc(0);
        self.crc = crate::crc32_seeded(seed, &[&bytes[4..], payload]);
        self.encode_with_crc(self.crc)
    }

    /// Decodes the fixed fields and checks everything that does not need the payload: kinds,
    /// flags, reserved bytes and length limits. The CRC is checked by [`RecordHeader::verify`].
    pub fn decode(bytes: &[u8]) -> Result<RecordHeader, DecodeError> {
        let mut c = Cursor::new(bytes, "record header");
        let crc = c.u32()?;
        let kind_raw = c.u8()?;
        let kind = RecordKind::from_u8(kind_raw).ok_or_else(|| {
            c.error_at(
                DecodeErrorKind::BadField,
                4,
                format!("unknown record kind {kind_raw}"),
            )
        })?;
        let flags = c.u8()?;
        c.zeros(2)?;
        let h = RecordHeader {
            crc,
            kind,
            flags,
            lsn: c.u64()?,
            segment_id: c.u64()?,
            segment_offset: c.u64()?,
            synced_upto: c.u64()?,
            disk_id: c.u32()?,
            stored_len: c.u32()?,
            disk_offset: c.u64()?,
            length: c.u64()?,
        };
        h.check_fields().map_err(|(offset, detail)| {
            DecodeError::new(DecodeErrorKind::BadField, "record header", offset, detail)
        })?;
        Ok(h)
    }

    /// Field rules per kind; returns the offending field offset and a sentence.
    fn check_fields(&self) -> Result<(), (u64, String)> {
        let allowed_flags = if self.kind == RecordKind::Write {
            FLAG_LZ4
        } else {
            0
        };
        if self.flags & !allowed_flags != 0 {
            return Err((
                5,
                format!(
                    "flags {:#04x} not allowed for a {} record",
                    self.flags,
                    self.kind.name()
                ),
            ));
        }
        // LSN u64::MAX is refused too, so `lsn + 1` (the next LSN a scan expects) never overflows.
        if self.lsn == 0 || self.lsn == u64::MAX {
            return Err((8, format!("LSN {} is never written", self.lsn)));
        }
        if self.segment_offset < PAGE_BYTES as u64 {
            return Err((24, "a record cannot start inside the segment header".into()));
        }
        match self.kind {
            RecordKind::Write | RecordKind::Zero => self.check_disk_fields(),
            RecordKind::Point | RecordKind::Footer => self.check_metadata_fields(),
            RecordKind::Resize => check_resize_fields(self.disk_id, self.disk_offset, self.length)
                .and_then(|()| match self.stored_len {
                    0 => Ok(()),
                    n => Err((44, format!("a resize record has no payload, not {n} bytes"))),
                }),
        }
    }

    /// Field rules of a write or zero record: a disk range inside the largest disk, and a
    /// payload that matches the kind (none for zero, raw or LZ4 for write).
    fn check_disk_fields(&self) -> Result<(), (u64, String)> {
        let stored = u64::from(self.stored_len);
        if self.length == 0 || self.length > RECORD_DATA_BYTES_MAX {
            return Err((
                56,
                format!("length {} outside 1..={RECORD_DATA_BYTES_MAX}", self.length),
            ));
        }
        if self
            .disk_offset
            .checked_add(self.length)
            .is_none_or(|end| end > DISK_BYTES_MAX)
        {
            return Err((48, "disk range ends past the largest disk".into()));
        }
        if self.kind == RecordKind::Zero && stored != 0 {
            return Err((44, "a zero record has no payload".into()));
        }
        if self.kind == RecordKind::Write && !self.is_lz4() && stored != self.length {
            return Err((
                44,
                format!("raw payload of {stored} bytes for length {}", self.length),
            ));
        }
        if self.kind == RecordKind::Write && (stored == 0 || stored > self.length) {
            return Err((
                44,
                format!(
                    "compressed payload of {stored} bytes for length {}",
                    self.length
                ),
            ));
        }
        Ok(())
    }

    /// Field rules of a point or footer record: no disk range, and a payload within its limit.
    fn check_metadata_fields(&self) -> Result<(), (u64, String)> {
        let stored = u64::from(self.stored_len);
        if self.disk_id != 0 || self.disk_offset != 0 || self.length != 0 {
            return Err((
                40,
                format!("a {} record has no disk range", self.kind.name()),
            ));
        }
        let max = if self.kind == RecordKind::Point {
            (POINT_FIXED_BYTES + LABEL_BYTES_MAX + CHAIN_HASH_BYTES) as u64
        } else {
            FOOTER_BYTES_MAX
        };
        if stored > max {
            return Err((
                44,
                format!("payload of {stored} bytes over the limit {max}"),
            ));
        }
        Ok(())
    }

    /// Checks the CRC of the header bytes and the payload.
    pub fn verify(
        &self,
        seed: u32,
        header_bytes: &[u8],
        payload: &[u8],
    ) -> Result<(), DecodeError> {
        let actual = crate::crc32_seeded(seed, &[&header_bytes[4..RECORD_HEADER_BYTES], payload]);
        if actual == self.crc {
            Ok(())
        } else {
            Err(DecodeError::new(
                DecodeErrorKind::Checksum,
                "record",
                0,
                format!(
                    "stored checksum {:#010x}, bytes hash to {actual:#010x}",
                    self.crc
                ),
            ))
        }
    }
}

/// Field rules of a resize, as a record and as a footer entry hold it: a disk, a size before of
/// at least one byte, and a size after that is larger (disks only grow) and within the largest
/// disk. Returns the offending field's offset in the record header and a sentence.
pub(crate) fn check_resize_fields(
    disk_id: u32,
    old_bytes: u64,
    new_bytes: u64,
) -> Result<(), (u64, String)> {
    if disk_id == 0 {
        return Err((40, "a resize record names no disk".into()));
    }
    if old_bytes == 0 {
        return Err((48, "a resize from a disk of 0 bytes".into()));
    }
    if new_bytes <= old_bytes || new_bytes > DISK_BYTES_MAX {
        return Err((
            56,
            format!(
                "a resize from {old_bytes} to {new_bytes} bytes: disks only grow, to at most \
                 {DISK_BYTES_MAX}"
            ),
        ));
    }
    Ok(())
}

/// How consistent a recovery point is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PointKind {
    /// The disks as a sudden power loss would have left them.
    CrashConsistent = 1,
    /// Taken while the source had quiesced its applications.
    AppConsistent = 2,
}

impl PointKind {
    /// App-consistent if the source had quiesced its applications, crash-consistent otherwise.
    pub fn quiesced(app_consistent: bool) -> PointKind {
        if app_consistent {
            PointKind::AppConsistent
        } else {
            PointKind::CrashConsistent
        }
    }

    /// Parses the stored byte.
    pub fn from_u8(value: u8) -> Option<PointKind> {
        match value {
            1 => Some(PointKind::CrashConsistent),
            2 => Some(PointKind::AppConsistent),
            _ => None,
        }
    }

    /// The name shown to users.
    pub fn name(self) -> &'static str {
        match self {
            PointKind::CrashConsistent => "crash-consistent",
            PointKind::AppConsistent => "app-consistent",
        }
    }
}

/// Fixed bytes of a point payload before the label.
pub const POINT_FIXED_BYTES: usize = 20;

/// Point flag: the payload ends with the point's chain hash (see [`crate::chain`]).
pub const POINT_FLAG_CHAIN: u8 = 1;

/// The payload of a point record.
///
/// ```text
/// offset size field
///      0    8 point_id u64 (1, 2, 3, ... in LSN order)
///      8    8 time_unix_ns i64
///     16    1 kind: 1 crash-consistent, 2 app-consistent
///     17    1 flags: bit 0 (`POINT_FLAG_CHAIN`) a chain hash follows the label; others zero
///     18    2 label_len u16 (<= 1024)
///     20    n label, UTF-8
///   20+n   32 chain hash (flag bit 0 only): the journal chain's value at this point
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointPayload {
    /// The point's id.
    pub point_id: u64,
    /// When the point was taken, nanoseconds since the Unix epoch.
    pub time_unix_ns: i64,
    /// Its consistency.
    pub kind: PointKind,
    /// A free-text label, possibly empty.
    pub label: String,
    /// The journal chain's value at the point (the link ending at its record): it commits to
    /// every record before it. `None` in points written before the chain existed.
    pub chain: Option<ChainHash>,
}

impl PointPayload {
    /// Bytes of the payload after its fixed fields: the label and the chain hash.
    pub fn tail_bytes(&self) -> usize {
        self.label.len() + self.chain.map_or(0, |_| CHAIN_HASH_BYTES)
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.label.len() <= LABEL_BYTES_MAX,
            "label checked by the caller"
        );
        let mut buf = Vec::with_capacity(POINT_FIXED_BYTES + self.tail_bytes());
        self.put(&mut Put::new(&mut buf));
        buf
    }

    /// Appends the payload's bytes, laid out as above: a point record holds them, and so do a
    /// footer's and a manifest's point entries, after their own fields.
    pub(crate) fn put(&self, p: &mut Put<'_>) {
        p.u64(self.point_id)
            .i64(self.time_unix_ns)
            .u8(self.kind as u8)
            .u8(if self.chain.is_some() {
                POINT_FLAG_CHAIN
            } else {
                0
            })
            .u16(self.label.len() as u16)
            .bytes(self.label.as_bytes());
        if let Some(chain) = &self.chain {
            p.bytes(chain);
        }
    }

    /// Decodes the payload inside a footer's or a manifest's point entry, where it follows the
    /// entry's own fields.
    pub(crate) fn decode_in_entry(c: &mut Cursor<'_>) -> Result<PointPayload, DecodeError> {
        let at = c.position();
        let point_id = c.u64()?;
        let time_unix_ns = c.i64()?;
        let kind = PointKind::from_u8(c.u8()?)
            .ok_or_else(|| c.error_at(DecodeErrorKind::BadField, at + 16, "unknown point kind"))?;
        let flags = point_flags(c, at + 17)?;
        let label_len = c.u16()? as usize;
        if label_len > LABEL_BYTES_MAX {
            return Err(c.error_at(DecodeErrorKind::BadField, at + 18, "label over 1024 bytes"));
        }
        let label = std::str::from_utf8(c.take(label_len)?)
            .map_err(|_| c.error_at(DecodeErrorKind::BadField, at + 20, "label is not UTF-8"))?
            .to_owned();
        let chain = point_chain(c, flags)?;
        Ok(PointPayload {
            point_id,
            time_unix_ns,
            kind,
            label,
            chain,
        })
    }

    /// Decodes and validates the payload.
    pub fn decode(bytes: &[u8]) -> Result<PointPayload, DecodeError> {
        let mut c = Cursor::new(bytes, "point payload");
        let point_id = c.u64()?;
        let time_unix_ns = c.i64()?;
        let kind_raw = c.u8()?;
        let kind = PointKind::from_u8(kind_raw).ok_or_else(|| {
            c.error_at(
                DecodeErrorKind::BadField,
                16,
                format!("unknown point kind {kind_raw}"),
            )
        })?;
        let flags = point_flags(&mut c, 17)?;
        let label_len = c.u16()? as usize;
        if label_len > LABEL_BYTES_MAX {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                18,
                format!("label of {label_len} bytes"),
            ));
        }
        let label = std::str::from_utf8(c.take(label_len)?)
            .map_err(|_| {
                c.error_at(
                    DecodeErrorKind::BadField,
                    POINT_FIXED_BYTES,
                    "label is not UTF-8",
                )
            })?
            .to_owned();
        let chain = point_chain(&mut c, flags)?;
        c.finish()?;
        if point_id == 0 {
            return Err(c.error_at(DecodeErrorKind::BadField, 0, "point id 0 is never written"));
        }
        Ok(PointPayload {
            point_id,
            time_unix_ns,
            kind,
            label,
            chain,
        })
    }
}

/// Reads a point's flags byte at `at`: only [`POINT_FLAG_CHAIN`] may be set.
fn point_flags(c: &mut Cursor<'_>, at: usize) -> Result<u8, DecodeError> {
    let flags = c.u8()?;
    if flags & !POINT_FLAG_CHAIN != 0 {
        return Err(c.error_at(
            DecodeErrorKind::BadField,
            at,
            format!("point flags {flags:#04x}"),
        ));
    }
    Ok(flags)
}

/// Reads the chain hash after a point's label, if its flags say one follows.
fn point_chain(c: &mut Cursor<'_>, flags: u8) -> Result<Option<ChainHash>, DecodeError> {
    if flags & POINT_FLAG_CHAIN == 0 {
        return Ok(None);
    }
    Ok(Some(c.array()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_header(stored: u32) -> RecordHeader {
        RecordHeader {
            crc: 0,
            kind: RecordKind::Write,
            flags: 0,
            lsn: 9,
            segment_id: 3,
            segment_offset: 4096,
            synced_upto: 4096,
            disk_id: 1,
            stored_len: stored,
            disk_offset: 8192,
            length: u64::from(stored),
        }
    }

    #[test]
    fn record_header_round_trips_and_verifies() {
        let payload = vec![0xAB; 100];
        let mut h = write_header(100);
        let bytes = h.seal(42, &payload);
        let d = RecordHeader::decode(&bytes).unwrap();
        assert_eq!(d, h);
        d.verify(42, &bytes, &payload).unwrap();
        assert!(
            d.verify(43, &bytes, &payload).is_err(),
            "another vault's seed must not verify"
        );
    }

    #[test]
    fn every_flipped_byte_of_a_record_fails_decode_or_checksum() {
        let payload = vec![0x5A; 37];
        let mut h = write_header(37);
        let mut whole = h.seal(7, &payload).to_vec();
        whole.extend_from_slice(&payload);
        for i in 0..whole.len() {
            let mut b = whole.clone();
            b[i] ^= 0x80;
            let ok = RecordHeader::decode(&b[..64]).is_ok_and(|d| {
                let end = 64 + d.stored_len as usize;
                end <= b.len() && d.verify(7, &b[..64], &b[64..end]).is_ok()
            });
            assert!(!ok, "flip at {i} accepted");
        }
    }

    #[test]
    fn point_payload_round_trips() {
        let p = PointPayload {
            point_id: 5,
            time_unix_ns: -3,
            kind: PointKind::AppConsistent,
            label: "before upgrade ✓".into(),
            chain: None,
        };
        assert_eq!(PointPayload::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn hostile_lengths_are_rejected_before_reading_a_payload() {
        let mut h = write_header(16);
        h.length = RECORD_DATA_BYTES_MAX + 1;
        assert_eq!(
            RecordHeader::decode(&h.encode_with_crc(0))
                .unwrap_err()
                .kind,
            DecodeErrorKind::BadField
        );
        let mut p = write_header(0);
        p.kind = RecordKind::Point;
        p.disk_id = 0;
        p.disk_offset = 0;
        p.length = 0;
        p.stored_len = u32::MAX;
        assert_eq!(
            RecordHeader::decode(&p.encode_with_crc(0))
                .unwrap_err()
                .kind,
            DecodeErrorKind::BadField
        );
    }

    fn resize_header(old_bytes: u64, new_bytes: u64) -> RecordHeader {
        RecordHeader {
            kind: RecordKind::Resize,
            stored_len: 0,
            disk_offset: old_bytes,
            length: new_bytes,
            ..write_header(0)
        }
    }

    #[test]
    fn a_resize_record_round_trips_and_carries_both_sizes() {
        let mut h = resize_header(1 << 20, 2 << 20);
        let bytes = h.seal(11, &[]);
        let d = RecordHeader::decode(&bytes).unwrap();
        assert_eq!(d, h);
        d.verify(11, &bytes, &[]).unwrap();
        assert_eq!(d.resize_bytes(), Some((1 << 20, 2 << 20)));
        assert_eq!(write_header(4).resize_bytes(), None);
    }

    #[test]
    fn a_resize_that_shrinks_or_names_no_disk_or_has_a_payload_is_refused() {
        let same = resize_header(4096, 4096);
        let shrink = resize_header(8192, 4096);
        let from_zero = resize_header(0, 4096);
        let too_big = resize_header(4096, DISK_BYTES_MAX + 1);
        let no_disk = RecordHeader {
            disk_id: 0,
            ..resize_header(4096, 8192)
        };
        let payload = RecordHeader {
            stored_len: 8,
            ..resize_header(4096, 8192)
        };
        let flagged = RecordHeader {
            flags: FLAG_LZ4,
            ..resize_header(4096, 8192)
        };
        for (h, field) in [
            (same, 56),
            (shrink, 56),
            (from_zero, 48),
            (too_big, 56),
            (no_disk, 40),
            (payload, 44),
            (flagged, 5),
        ] {
            let e = RecordHeader::decode(&h.encode_with_crc(0)).unwrap_err();
            assert_eq!(
                (e.kind, e.offset),
                (DecodeErrorKind::BadField, field),
                "{h:?}"
            );
        }
    }
}
