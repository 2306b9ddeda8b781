//! The manifest, file `MANIFEST`: the authoritative list of disks, bases, segments and the
//! recovery points of sealed segments. It is replaced atomically (write `MANIFEST.tmp`, sync it,
//! rename over `MANIFEST`, sync the directory), so a reader sees the old or the new one whole.
//!
//! ```text
//! header
//! offset size field
//!      0    8 magic "RPLG-MAN"
//!      8    4 format_version u32
//!     12    4 reserved, zero
//!     16    8 body_bytes u64
//!     24    4 body_crc: crc32 (unseeded) of the body
//!     28    4 header_crc: crc32 (unseeded) of bytes 0..28
//! body
//!      0   16 vault_id
//!     16    8 generation u64: bumped on every replacement
//!     24    8 base_lsn u64: the LSN every base reflects
//!     32    4 flags u32: bit 0 (versions 3 and 4) a disk was resized; zero in versions 1 and 2
//!     36    4 disk_count u32
//!      .    . disks, 40 bytes + name each:
//!             disk_id u32, name_len u8, reserved 3, disk_bytes u64, added_lsn u64,
//!             base_generation u64, base_header_crc u32, reserved u32, name
//!      .    4 segment_count u32
//!      .    . segments, 48 bytes each, in id order:
//!             segment_id u64, first_lsn u64, last_lsn u64, footer_offset u64, file_bytes u64,
//!             footer_crc u32, sealed u8, flags u8, reserved 2   (open segment: last five fields
//!             zero); flags bit 0 (version 4 only): the dead prefix was released
//!      .    4 point_count u32
//!      .    . points of sealed segments, 44 bytes + label each, in LSN order:
//!             lsn u64, segment_id u64, record_offset u64, point_id u64, time_unix_ns i64,
//!             kind u8, reserved u8, label_len u16, label
//!      .    4 dead_range_count u32 (version 5 only; at least 1)
//!      .    . dead ranges, 40 bytes each (see `garbage`), by segment id then offset
//!      .    . version 2: the lifecycle section (see `lifecycle`); versions 3 to 5: the
//!             lifecycle section when it is not empty
//! ```
//!
//! Version 2 appends the lifecycle section and is written exactly when that section is not
//! empty; version 1 manifests are read as having an empty one. Version 3 is written exactly when
//! flag bit 0 is set: some disk was resized, so the journal holds resize records and a disk's
//! size depends on the LSN (the disk entry holds the newest). Code that knows only versions 1
//! and 2 refuses it rather than reading a resize record as a torn tail. Version 4 is written
//! exactly when a sealed segment carries flag bit 0: compaction released its dead prefix, the
//! bytes `[4096, P)` with `P` the start of the 4 KiB page holding the marker of the point at
//! `base_lsn` (which the manifest lists, in that segment), so they may read as zeros (a hole).
//! Body flag bit 0 may be set or not in version 4. Version 5 is written exactly when the
//! manifest lists dead ranges: runs of records of sealed segments that no kept point reads,
//! whose whole pages may read as zeros (see [`crate::garbage`]); its segment flags and body
//! flag are as in version 4, but no segment needs to carry the prefix flag.

use crate::codec::{Cursor, Put};
use crate::garbage::{DEAD_RANGE_BYTES, DeadRange};
use crate::lifecycle::Lifecycle;
use crate::limits::*;
use crate::magic;
use crate::record::PointPayload;
use crate::{DecodeError, DecodeErrorKind, VaultId};

/// Size of the manifest header.
pub const MANIFEST_HEADER_BYTES: usize = 32;
const DISK_FIXED_BYTES: usize = 40;
const SEGMENT_ENTRY_BYTES: usize = 48;
const POINT_FIXED_BYTES: usize = 44;
/// Body flag: a disk of the vault was resized (manifest version 3 or 4).
pub const MANIFEST_FLAG_RESIZED: u32 = 1;
/// Segment entry flag: the segment's dead prefix was released (manifest version 4).
pub const SEGMENT_FLAG_PREFIX_RELEASED: u8 = 1;
/// The unit in which a dead prefix is released: the hole ends at a multiple of it.
pub const RELEASE_UNIT_BYTES: u64 = 4096;

/// A disk of the vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskEntry {
    /// Its id, used in records.
    pub disk_id: u32,
    /// Its name: `[A-Za-z0-9._-]`, 1..=64 bytes, not starting with `.`.
    pub name: String,
    /// Its size.
    pub disk_bytes: u64,
    /// The first LSN that can touch it; points before this do not include the disk.
    pub added_lsn: u64,
    /// The generation of its current base file.
    pub base_generation: u64,
    /// The CRC of that base file's header, as stored in its last four bytes.
    pub base_header_crc: u32,
}

/// What a sealed segment's trailer promises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedInfo {
    /// Its last LSN.
    pub last_lsn: u64,
    /// Where its footer record starts.
    pub footer_offset: u64,
    /// Its length.
    pub file_bytes: u64,
    /// The footer record's CRC.
    pub footer_crc: u32,
}

/// A journal segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentEntry {
    /// Its id.
    pub segment_id: u64,
    /// Its first LSN.
    pub first_lsn: u64,
    /// Set once sealed.
    pub sealed: Option<SealedInfo>,
    /// Compaction released its dead prefix (sealed segments only): see
    /// [`Manifest::released_prefix`].
    pub prefix_released: bool,
}

/// A recovery point of a sealed segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointRef {
    /// The marker record's LSN.
    pub lsn: u64,
    /// The segment holding the marker.
    pub segment_id: u64,
    /// The marker's offset in it.
    pub record_offset: u64,
    /// The marker's payload.
    pub point: PointPayload,
}

/// The decoded manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The vault's id.
    pub vault_id: VaultId,
    /// Bumped on every replacement.
    pub generation: u64,
    /// The LSN every base reflects.
    pub base_lsn: u64,
    /// Disks, in id order.
    pub disks: Vec<DiskEntry>,
    /// Segments, in id order; only the last may be open.
    pub segments: Vec<SegmentEntry>,
    /// Points of sealed segments, in LSN order. After the base moved forward, the point at the
    /// base LSN stays listed even once its segment is deleted (it reads as the base), and points
    /// of kept segments older than the base stay listed (their footers hold them) but are no
    /// longer offered: see [`Manifest::offers`].
    pub points: Vec<PointRef>,
    /// Retention policy, pins, retired points and migration record (version 2).
    pub lifecycle: Lifecycle,
    /// Set before the first resize record is written, and never cleared: the journal may hold
    /// resize records, so a disk's size depends on the LSN (version 3).
    pub resized: bool,
    /// Runs of records of sealed segments that no kept point reads, by segment id then offset
    /// (version 5): their whole pages may read as zeros. See [`crate::garbage`].
    pub dead_ranges: Vec<DeadRange>,
}

/// Whether `name` is a valid disk name: it becomes a file name, so it is confined.
pub fn valid_disk_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= DISK_NAME_BYTES_MAX
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Manifest {
    /// Whether the point with `point_id` at `lsn` is offered to readers: not older than the
    /// base images and not retired by retention.
    pub fn offers(&self, point_id: u64, lsn: u64) -> bool {
        lsn >= self.base_lsn && self.lifecycle.retired.binary_search(&point_id).is_err()
    }

    /// The version this manifest is written with: 5 when it lists dead ranges, else 4 when a
    /// segment's dead prefix was released, else 3 once a disk was resized, else 2 when it has a
    /// lifecycle section.
    pub fn version(&self) -> u32 {
        if !self.dead_ranges.is_empty() {
            5
        } else if self.segments.iter().any(|s| s.prefix_released) {
            4
        } else if self.resized {
            3
        } else if self.lifecycle.is_empty() {
            1
        } else {
            2
        }
    }

    /// Encodes header and body.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        let mut p = Put::new(&mut body);
        p.bytes(&self.vault_id)
            .u64(self.generation)
            .u64(self.base_lsn)
            .u32(if self.resized {
                MANIFEST_FLAG_RESIZED
            } else {
                0
            });
        p.u32(self.disks.len() as u32);
        for d in &self.disks {
            p.u32(d.disk_id)
                .u8(d.name.len() as u8)
                .zeros(3)
                .u64(d.disk_bytes)
                .u64(d.added_lsn)
                .u64(d.base_generation)
                .u32(d.base_header_crc)
                .u32(0)
                .bytes(d.name.as_bytes());
        }
        p.u32(self.segments.len() as u32);
        for s in &self.segments {
            let sealed = s.sealed.unwrap_or(SealedInfo {
                last_lsn: 0,
                footer_offset: 0,
                file_bytes: 0,
                footer_crc: 0,
            });
            p.u64(s.segment_id)
                .u64(s.first_lsn)
                .u64(sealed.last_lsn)
                .u64(sealed.footer_offset)
                .u64(sealed.file_bytes)
                .u32(sealed.footer_crc)
                .u8(u8::from(s.sealed.is_some()))
                .u8(if s.prefix_released {
                    SEGMENT_FLAG_PREFIX_RELEASED
                } else {
                    0
                })
                .zeros(2);
        }
        p.u32(self.points.len() as u32);
        for r in &self.points {
            p.u64(r.lsn).u64(r.segment_id).u64(r.record_offset);
            r.point.put(&mut p);
        }
        if !self.dead_ranges.is_empty() {
            p.u32(self.dead_ranges.len() as u32);
            for d in &self.dead_ranges {
                p.u64(d.segment_id)
                    .u64(d.start)
                    .u64(d.end)
                    .u64(d.first_lsn)
                    .u64(d.last_lsn);
            }
        }
        if !self.lifecycle.is_empty() {
            self.lifecycle.encode(&mut body);
        }
        let mut out = Vec::with_capacity(MANIFEST_HEADER_BYTES + body.len());
        Put::new(&mut out)
            .bytes(&magic::MANIFEST)
            .u32(self.version())
            .u32(0)
            .u64(body.len() as u64)
            .u32(crc32fast::hash(&body));
        let header_crc = crc32fast::hash(&out);
        Put::new(&mut out).u32(header_crc).bytes(&body);
        out
    }

    /// Decodes and validates a whole manifest file.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, DecodeError> {
        let mut c = Cursor::new(bytes, "manifest header");
        if c.array::<8>()? != magic::MANIFEST {
            return Err(c.error_at(DecodeErrorKind::BadMagic, 0, "not a replog manifest"));
        }
        let version = c.u32()?;
        if !magic::MANIFEST_VERSIONS.contains(&version) {
            return Err(c.error_at(
                DecodeErrorKind::UnsupportedVersion,
                8,
                format!("manifest version {version}; this replog reads versions 1 to 5"),
            ));
        }
        c.zeros(4)?;
        let body_bytes = c.u64()?;
        let body_crc = c.u32()?;
        let header_crc = c.u32()?;
        if crc32fast::hash(&bytes[..28]) != header_crc {
            return Err(c.error_at(
                DecodeErrorKind::Checksum,
                28,
                "manifest header checksum does not match",
            ));
        }
        if body_bytes > MANIFEST_BYTES_MAX || body_bytes != c.remaining() as u64 {
            return Err(c.error_at(
                DecodeErrorKind::Truncated,
                16,
                format!(
                    "header says {body_bytes} body bytes, the file has {}",
                    c.remaining()
                ),
            ));
        }
        let body = c.take(body_bytes as usize)?;
        if crc32fast::hash(body) != body_crc {
            return Err(c.error_at(
                DecodeErrorKind::Checksum,
                24,
                "manifest body checksum does not match",
            ));
        }
        let m = decode_body(body, version).map_err(|e| e.at(MANIFEST_HEADER_BYTES as u64))?;
        m.validate().map_err(|detail| {
            DecodeError::new(
                DecodeErrorKind::BadField,
                "manifest",
                MANIFEST_HEADER_BYTES as u64,
                detail,
            )
        })?;
        Ok(m)
    }

    /// The end of the released dead prefix of segment `segment_id`, when compaction released
    /// one: bytes `[4096, end)` of the segment file may read as zeros. `end` is the start of the
    /// [`RELEASE_UNIT_BYTES`] page holding the marker of the point at `base_lsn`, which is in
    /// that segment; every record before the marker is at or below `base_lsn`, so no reader
    /// needs it, and the marker and everything after it are intact.
    pub fn released_prefix(&self, segment_id: u64) -> Option<u64> {
        let s = self.segments.iter().find(|s| s.segment_id == segment_id)?;
        if !s.prefix_released {
            return None;
        }
        self.release_end(segment_id)
    }

    /// Where a scan of segment `segment_id` starts when its dead prefix was released: the
    /// base point's marker.
    pub fn live_start(&self, segment_id: u64) -> Option<crate::segment::LiveStart> {
        self.released_prefix(segment_id)?;
        let p = self.points.iter().find(|p| p.lsn == self.base_lsn)?;
        Some(crate::segment::LiveStart {
            offset: p.record_offset,
            lsn: p.lsn,
        })
    }

    /// Where a dead prefix of `segment_id` released now would end: the page of the base point's
    /// marker, when that point is in the segment and the page is past the header.
    pub fn release_end(&self, segment_id: u64) -> Option<u64> {
        let p = self
            .points
            .iter()
            .find(|p| p.lsn == self.base_lsn && p.segment_id == segment_id)?;
        let end = p.record_offset / RELEASE_UNIT_BYTES * RELEASE_UNIT_BYTES;
        (end > RELEASE_UNIT_BYTES).then_some(end)
    }

    /// The dead ranges of segment `segment_id`, in offset (and LSN) order.
    pub fn dead_ranges_of(&self, segment_id: u64) -> &[DeadRange] {
        let from = self
            .dead_ranges
            .partition_point(|d| d.segment_id < segment_id);
        let to = self
            .dead_ranges
            .partition_point(|d| d.segment_id <= segment_id);
        &self.dead_ranges[from..to]
    }

    /// Cross-checks the lists: unique and ordered ids, contiguous LSNs, one open segment at most.
    pub fn validate(&self) -> Result<(), String> {
        if self.disks.len() > DISKS_MAX as usize {
            return Err(format!(
                "{} disks, the limit is {DISKS_MAX}",
                self.disks.len()
            ));
        }
        for w in self.disks.windows(2) {
            if w[0].disk_id >= w[1].disk_id {
                return Err("disk ids are not in increasing order".into());
            }
        }
        for (i, d) in self.disks.iter().enumerate() {
            if !valid_disk_name(&d.name) || self.disks[..i].iter().any(|o| o.name == d.name) {
                return Err(format!("disk name {:?} is invalid or repeated", d.name));
            }
            if d.disk_id == 0 || d.disk_bytes == 0 || d.disk_bytes > DISK_BYTES_MAX {
                return Err(format!(
                    "disk {:?} has id {} and size {}",
                    d.name, d.disk_id, d.disk_bytes
                ));
            }
        }
        let mut next_lsn = None;
        for (i, s) in self.segments.iter().enumerate() {
            if i > 0 && s.segment_id <= self.segments[i - 1].segment_id {
                return Err("segment ids are not in increasing order".into());
            }
            if next_lsn.is_some_and(|n| n != s.first_lsn) {
                return Err(format!(
                    "segment {} starts at LSN {}, not where the previous ended",
                    s.segment_id, s.first_lsn
                ));
            }
            match s.sealed {
                Some(info) if info.last_lsn == u64::MAX => {
                    return Err(format!(
                        "sealed segment {} ends at LSN {}, past the last LSN",
                        s.segment_id, info.last_lsn
                    ));
                }
                Some(info) if info.last_lsn >= s.first_lsn => next_lsn = Some(info.last_lsn + 1),
                Some(_) => return Err(format!("sealed segment {} holds no record", s.segment_id)),
                None if i + 1 == self.segments.len() => {}
                None => return Err(format!("segment {} is open but not the last", s.segment_id)),
            }
        }
        for w in self.points.windows(2) {
            if w[0].lsn >= w[1].lsn || w[0].point.point_id >= w[1].point.point_id {
                return Err("points are not in increasing order".into());
            }
        }
        for s in self.segments.iter().filter(|s| s.prefix_released) {
            if s.sealed.is_none() || self.release_end(s.segment_id).is_none() {
                return Err(format!(
                    "segment {} is marked as having its dead prefix released, but it is not sealed or does not hold the point at base LSN {} past its first page",
                    s.segment_id, self.base_lsn
                ));
            }
        }
        self.validate_dead_ranges()
    }

    /// Each dead range lies in a listed sealed segment, between its header and its footer, after
    /// the base, covers at least one whole page and 64 bytes a record; the ranges are ordered
    /// and disjoint.
    fn validate_dead_ranges(&self) -> Result<(), String> {
        if self.dead_ranges.len() > DEAD_RANGES_MAX as usize {
            return Err(format!("{} dead ranges", self.dead_ranges.len()));
        }
        for w in self.dead_ranges.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            let ordered = a.segment_id < b.segment_id
                || (a.segment_id == b.segment_id
                    && a.end < b.start
                    && a.last_lsn + 1 < b.first_lsn);
            if !ordered {
                return Err(format!(
                    "dead ranges {}..{} and {}..{} of segments {} and {} are not ordered and apart",
                    a.start, a.end, b.start, b.end, a.segment_id, b.segment_id
                ));
            }
        }
        for d in &self.dead_ranges {
            let segment = self.segments.iter().find(|s| s.segment_id == d.segment_id);
            let fits = segment
                .and_then(|s| s.sealed.map(|i| (s, i)))
                .is_some_and(|(s, i)| {
                    d.first_lsn > self.base_lsn
                        && s.first_lsn <= d.first_lsn
                        && d.first_lsn <= d.last_lsn
                        && d.last_lsn <= i.last_lsn
                        && d.start >= PAGE_BYTES as u64
                        && d.end <= i.footer_offset
                        && d.start < d.end
                        && d.records().saturating_mul(64) <= d.end - d.start
                        && d.hole().is_some()
                });
            if !fits {
                return Err(format!(
                    "dead range {}..{} (LSN {}..={}) does not lie after the base LSN {} in sealed segment {}, before its footer, covering a whole page",
                    d.start, d.end, d.first_lsn, d.last_lsn, self.base_lsn, d.segment_id
                ));
            }
        }
        Ok(())
    }
}

fn decode_body(body: &[u8], version: u32) -> Result<Manifest, DecodeError> {
    let mut c = Cursor::new(body, "manifest body");
    let vault_id = c.array()?;
    let generation = c.u64()?;
    let base_lsn = c.u64()?;
    let flags_at = c.position();
    let flags = c.u32()?;
    // Canonical: version 3 exactly when the flag is set, and no other bit; version 4 (a
    // released prefix) with or without it.
    let resized = match (version, flags) {
        (3..=5, MANIFEST_FLAG_RESIZED) => true,
        (4 | 5, 0) => false,
        (1 | 2, 0) => false,
        _ => {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                flags_at,
                format!("flags {flags:#x} in a version {version} manifest"),
            ));
        }
    };
    let disk_count = bounded_count(&mut c, DISKS_MAX, DISK_FIXED_BYTES)?;
    let disks = (0..disk_count)
        .map(|_| decode_disk_entry(&mut c))
        .collect::<Result<Vec<_>, _>>()?;
    let segment_count = bounded_count(&mut c, SEGMENTS_MAX, SEGMENT_ENTRY_BYTES)?;
    let segments_at = c.position();
    let segments = (0..segment_count)
        .map(|_| decode_segment_entry(&mut c, version))
        .collect::<Result<Vec<_>, _>>()?;
    if version == 4 && !segments.iter().any(|s| s.prefix_released) {
        return Err(c.error_at(
            DecodeErrorKind::BadField,
            segments_at,
            "a version 4 manifest with no segment whose prefix was released",
        ));
    }
    let point_count = bounded_count(&mut c, POINTS_MAX, POINT_FIXED_BYTES)?;
    let points = (0..point_count)
        .map(|_| decode_point_ref(&mut c))
        .collect::<Result<Vec<_>, _>>()?;
    let dead_ranges = if version == 5 {
        let at = c.position();
        let count = bounded_count(&mut c, DEAD_RANGES_MAX, DEAD_RANGE_BYTES)?;
        if count == 0 {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                at,
                "a version 5 manifest with no dead range",
            ));
        }
        (0..count)
            .map(|_| decode_dead_range(&mut c))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        Vec::new()
    };
    let lifecycle = if version == 2 || (version >= 3 && c.remaining() > 0) {
        Lifecycle::decode(&mut c)?
    } else {
        Lifecycle::default()
    };
    c.finish()?;
    Ok(Manifest {
        vault_id,
        generation,
        base_lsn,
        disks,
        segments,
        points,
        lifecycle,
        resized,
        dead_ranges,
    })
}

/// Decodes one dead range entry (see [`crate::garbage`]); the manifest checks where it lies.
fn decode_dead_range(c: &mut Cursor<'_>) -> Result<DeadRange, DecodeError> {
    Ok(DeadRange {
        segment_id: c.u64()?,
        start: c.u64()?,
        end: c.u64()?,
        first_lsn: c.u64()?,
        last_lsn: c.u64()?,
    })
}

/// Decodes one disk entry: its fixed fields, then its UTF-8 name.
fn decode_disk_entry(c: &mut Cursor<'_>) -> Result<DiskEntry, DecodeError> {
    let disk_id = c.u32()?;
    let name_len = c.u8()? as usize;
    c.zeros(3)?;
    let (disk_bytes, added_lsn, base_generation) = (c.u64()?, c.u64()?, c.u64()?);
    let base_header_crc = c.u32()?;
    c.zeros(4)?;
    let at = c.position();
    let name = std::str::from_utf8(c.take(name_len)?)
        .map_err(|_| c.error_at(DecodeErrorKind::BadField, at, "disk name is not UTF-8"))?
        .to_owned();
    Ok(DiskEntry {
        disk_id,
        name,
        disk_bytes,
        added_lsn,
        base_generation,
        base_header_crc,
    })
}

/// Decodes one segment entry; an open segment has every sealed field zero, and only a sealed
/// one of a version 4 manifest may have its prefix released.
fn decode_segment_entry(c: &mut Cursor<'_>, version: u32) -> Result<SegmentEntry, DecodeError> {
    let at = c.position();
    let (segment_id, first_lsn, last_lsn, footer_offset, file_bytes) =
        (c.u64()?, c.u64()?, c.u64()?, c.u64()?, c.u64()?);
    let footer_crc = c.u32()?;
    let sealed = match c.u8()? {
        1 => Some(SealedInfo {
            last_lsn,
            footer_offset,
            file_bytes,
            footer_crc,
        }),
        0 if last_lsn == 0 && footer_offset == 0 && file_bytes == 0 && footer_crc == 0 => None,
        _ => {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                at + 44,
                "segment state is not open or sealed",
            ));
        }
    };
    let prefix_released = match c.u8()? {
        0 => false,
        SEGMENT_FLAG_PREFIX_RELEASED if version >= 4 && sealed.is_some() => true,
        flags => {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                at + 45,
                format!("segment flags {flags:#x} in a version {version} manifest"),
            ));
        }
    };
    c.zeros(2)?;
    Ok(SegmentEntry {
        segment_id,
        first_lsn,
        sealed,
        prefix_released,
    })
}

/// Decodes one point entry: its fixed fields, then its UTF-8 label of at most 1024 bytes.
fn decode_point_ref(c: &mut Cursor<'_>) -> Result<PointRef, DecodeError> {
    let (lsn, segment_id, record_offset) = (c.u64()?, c.u64()?, c.u64()?);
    Ok(PointRef {
        lsn,
        segment_id,
        record_offset,
        point: PointPayload::decode_in_entry(c)?,
    })
}

/// Reads a count and checks it against a limit and the bytes left, before any allocation.
fn bounded_count(c: &mut Cursor<'_>, max: u32, entry_bytes: usize) -> Result<usize, DecodeError> {
    let at = c.position();
    let count = c.u32()?;
    if count > max || count as u64 * entry_bytes as u64 > c.remaining() as u64 {
        return Err(c.error_at(
            DecodeErrorKind::BadField,
            at,
            format!(
                "count {count} does not fit the limit {max} or the {} bytes left",
                c.remaining()
            ),
        ));
    }
    Ok(count as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::PointKind;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            vault_id: [3; 16],
            generation: 4,
            base_lsn: 0,
            disks: vec![
                DiskEntry {
                    disk_id: 1,
                    name: "os".into(),
                    disk_bytes: 1 << 30,
                    added_lsn: 1,
                    base_generation: 1,
                    base_header_crc: 5,
                },
                DiskEntry {
                    disk_id: 2,
                    name: "data-1".into(),
                    disk_bytes: 4096,
                    added_lsn: 9,
                    base_generation: 1,
                    base_header_crc: 6,
                },
            ],
            segments: vec![
                SegmentEntry {
                    segment_id: 1,
                    first_lsn: 1,
                    sealed: Some(SealedInfo {
                        last_lsn: 10,
                        footer_offset: 9000,
                        file_bytes: 9200,
                        footer_crc: 3,
                    }),
                    prefix_released: false,
                },
                SegmentEntry {
                    segment_id: 2,
                    first_lsn: 11,
                    sealed: None,
                    prefix_released: false,
                },
            ],
            points: vec![PointRef {
                lsn: 10,
                segment_id: 1,
                record_offset: 8000,
                point: PointPayload {
                    point_id: 1,
                    time_unix_ns: 5,
                    kind: PointKind::CrashConsistent,
                    label: "x".into(),
                    chain: None,
                },
            }],
            lifecycle: Lifecycle::default(),
            resized: false,
            dead_ranges: Vec::new(),
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn every_flipped_byte_of_a_manifest_is_rejected() {
        for m in [sample(), sample_v2(), sample_v3(false), sample_v3(true)] {
            let bytes = m.encode();
            for i in 0..bytes.len() {
                let mut b = bytes.clone();
                b[i] ^= 0x10;
                assert!(Manifest::decode(&b).is_err(), "flip at {i} accepted");
            }
        }
    }

    fn sample_v2() -> Manifest {
        let mut m = sample();
        m.lifecycle.retention = Some(crate::lifecycle::RetentionPolicy::with_window(3600));
        m.lifecycle.pins = vec![1];
        m
    }

    #[test]
    fn a_manifest_is_version_2_exactly_when_it_has_a_lifecycle_section() {
        let v1 = sample().encode();
        assert_eq!(u32::from_le_bytes(v1[8..12].try_into().unwrap()), 1);
        let m = sample_v2();
        let v2 = m.encode();
        assert_eq!(u32::from_le_bytes(v2[8..12].try_into().unwrap()), 2);
        assert_eq!(Manifest::decode(&v2).unwrap(), m);
        // A version 2 header over a body without the section is refused, not misread.
        let mut forged = v1.clone();
        forged[8] = 2;
        let crc = crc32fast::hash(&forged[..28]);
        forged[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(Manifest::decode(&forged).is_err());
    }

    fn sample_v3(lifecycle: bool) -> Manifest {
        let mut m = if lifecycle { sample_v2() } else { sample() };
        m.resized = true;
        m
    }

    #[test]
    fn a_manifest_is_version_3_exactly_when_a_disk_was_resized() {
        for lifecycle in [false, true] {
            let m = sample_v3(lifecycle);
            let v3 = m.encode();
            assert_eq!(u32::from_le_bytes(v3[8..12].try_into().unwrap()), 3);
            assert_eq!(Manifest::decode(&v3).unwrap(), m);
        }
        // The flag in a version 2 manifest, or its absence in a version 3 one, is refused.
        assert_eq!(forged(&sample_v3(true), 2), DecodeErrorKind::BadField);
        assert_eq!(forged(&sample_v2(), 3), DecodeErrorKind::BadField);
    }

    /// Why `m`, encoded and then stamped `version` (with its header CRC made good again), does
    /// not decode.
    fn forged(m: &Manifest, version: u8) -> DecodeErrorKind {
        let mut b = m.encode();
        b[8] = version;
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        Manifest::decode(&b).unwrap_err().kind
    }

    /// Base moved to point 1 (LSN 10, marker at 12000 in sealed segment 1), whose dead prefix
    /// `[4096, 8192)` was released.
    fn sample_v4(resized: bool) -> Manifest {
        let mut m = sample_v3(true);
        m.resized = resized;
        m.base_lsn = 10;
        m.segments[0].sealed = Some(SealedInfo {
            last_lsn: 10,
            footer_offset: 20_000,
            file_bytes: 20_200,
            footer_crc: 3,
        });
        m.points[0].record_offset = 12_000;
        m.segments[0].prefix_released = true;
        m
    }

    #[test]
    fn a_manifest_is_version_4_exactly_when_a_segment_prefix_was_released() {
        for resized in [false, true] {
            let m = sample_v4(resized);
            let v4 = m.encode();
            assert_eq!(u32::from_le_bytes(v4[8..12].try_into().unwrap()), 4);
            assert_eq!(Manifest::decode(&v4).unwrap(), m);
            assert_eq!(m.released_prefix(1), Some(8192));
            assert_eq!(m.released_prefix(2), None);
            for i in 0..v4.len() {
                let mut b = v4.clone();
                b[i] ^= 0x10;
                assert!(Manifest::decode(&b).is_err(), "flip at {i} accepted");
            }
        }
        // The segment flag under an older version, or version 4 without it, is refused.
        assert_eq!(forged(&sample_v4(true), 3), DecodeErrorKind::BadField);
        assert_eq!(forged(&sample_v3(true), 4), DecodeErrorKind::BadField);
        // A released prefix needs the base point in that segment, past its first page.
        let mut m = sample_v4(false);
        m.points[0].record_offset = 5000;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = sample_v4(false);
        m.base_lsn = 9;
        assert!(Manifest::decode(&m.encode()).is_err());
        let mut m = sample_v4(false);
        m.segments[1].prefix_released = true;
        assert!(Manifest::decode(&m.encode()).is_err(), "an open segment");
    }

    /// Sealed segment 1 (LSNs 1..=10, footer at 20 000) with two dead runs after the base.
    fn sample_v5(prefix: bool) -> Manifest {
        let mut m = sample_v4(true);
        m.segments[0].prefix_released = prefix;
        m.base_lsn = if prefix { 10 } else { 0 };
        m.segments[0].sealed = Some(SealedInfo {
            last_lsn: 14,
            footer_offset: 40_000,
            file_bytes: 40_200,
            footer_crc: 3,
        });
        m.segments[1].first_lsn = 15;
        m.dead_ranges = vec![
            DeadRange {
                segment_id: 1,
                start: 13_000,
                end: 21_000,
                first_lsn: 11,
                last_lsn: 12,
            },
            DeadRange {
                segment_id: 1,
                start: 22_000,
                end: 30_000,
                first_lsn: 14,
                last_lsn: 14,
            },
        ];
        m
    }

    #[test]
    fn a_manifest_is_version_5_exactly_when_it_lists_dead_ranges() {
        for prefix in [false, true] {
            let m = sample_v5(prefix);
            let v5 = m.encode();
            assert_eq!(u32::from_le_bytes(v5[8..12].try_into().unwrap()), 5);
            assert_eq!(Manifest::decode(&v5).unwrap(), m);
            assert_eq!(m.dead_ranges_of(1).len(), 2);
            assert!(m.dead_ranges_of(2).is_empty());
            for i in 0..v5.len() {
                let mut b = v5.clone();
                b[i] ^= 0x10;
                assert!(Manifest::decode(&b).is_err(), "flip at {i} accepted");
            }
        }
        // Dead ranges under an older version, or version 5 without them, are refused.
        // (`forged` fails the test if the forged manifest decodes.)
        forged(&sample_v5(true), 4);
        forged(&sample_v4(true), 5);
        let refused = |change: fn(&mut Manifest)| {
            let mut m = sample_v5(true);
            change(&mut m);
            assert!(
                Manifest::decode(&m.encode()).is_err(),
                "{:?}",
                m.dead_ranges
            );
        };
        refused(|m| m.dead_ranges[0].first_lsn = 10); // at the base
        refused(|m| m.dead_ranges[0].end = 40_001); // past the footer
        refused(|m| m.dead_ranges[0].start = 2000); // in the header
        refused(|m| m.dead_ranges[0].end = 16_000); // no whole page
        refused(|m| m.dead_ranges[1].start = 21_000); // touching the previous run
        refused(|m| m.dead_ranges[1].segment_id = 2); // the open segment
        refused(|m| m.dead_ranges.swap(0, 1)); // out of order
        refused(|m| m.dead_ranges[1].last_lsn = 15); // past the segment
    }

    #[test]
    fn retired_and_older_points_are_not_offered() {
        let mut m = sample();
        m.base_lsn = 10;
        m.lifecycle.retired = vec![4];
        assert!(m.offers(1, 10));
        assert!(!m.offers(1, 9));
        assert!(!m.offers(4, 20));
    }

    /// Regression: a sealed segment ending at LSN u64::MAX made `validate` compute the next
    /// segment's first LSN with an overflowing add (a panic in debug builds).
    #[test]
    fn regression_a_segment_ending_at_the_last_lsn_is_refused_not_overflowed() {
        let mut m = sample();
        m.segments.truncate(1);
        m.points.clear();
        m.segments[0].sealed = Some(SealedInfo {
            last_lsn: u64::MAX,
            footer_offset: 9000,
            file_bytes: 9200,
            footer_crc: 3,
        });
        assert!(m.validate().unwrap_err().contains("past the last LSN"));
        assert_eq!(
            Manifest::decode(&m.encode()).unwrap_err().kind,
            DecodeErrorKind::BadField
        );
    }

    #[test]
    fn disk_names_are_confined() {
        assert!(valid_disk_name("os-disk_1.vhd"));
        for bad in ["", ".hidden", "../x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_disk_name(bad), "{bad:?}");
        }
    }
}
