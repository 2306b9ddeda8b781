//! `dump`: every journal record, one per call, for people debugging the format. Records are
//! visited straight from the segment files (the manifest only says which files), so a record
//! that fails its checksum shows up as the place where a segment's valid records end.

use std::path::Path;

use replog_format::layout;
use replog_format::record::{PointPayload, RecordHeader, RecordKind};
use replog_format::segment::{self, Expect, SegmentEnd};
use replog_format::{DecodeError, vault_seed};
use replog_io::{OpenMode, Storage};

use crate::error::{ReadError, ReadErrorKind, Result};

/// One record as `dump` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpRecord {
    /// The segment it is in.
    pub segment_id: u64,
    /// Its offset there.
    pub offset: u64,
    /// Its LSN.
    pub lsn: u64,
    /// What it is.
    pub kind: RecordKind,
    /// Target disk (write, zero).
    pub disk_id: u32,
    /// Target offset (write, zero).
    pub disk_offset: u64,
    /// Logical length (write, zero).
    pub length: u64,
    /// Payload bytes stored.
    pub stored_len: u32,
    /// Whether the payload is LZ4.
    pub lz4: bool,
    /// The record's CRC (it verified: records that do not end the segment's valid records).
    pub crc: u32,
    /// For points: the point.
    pub point: Option<PointPayload>,
    /// For resizes: the disk's size before and after.
    pub resize_bytes: Option<(u64, u64)>,
}

/// How a segment's valid records ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DumpEnd {
    /// At EOF or zeros.
    Clean(u64),
    /// Followed by a footer and trailer.
    Sealed(u64),
    /// Followed by bytes that are not a record (torn tail).
    Torn(u64, String),
    /// Damage before the tail: the message names the offset.
    Damaged(String),
}

impl DumpRecord {
    /// The dump line of the record `h` of segment `segment_id`, with its point if it is a
    /// point record whose payload decodes.
    fn from_header(segment_id: u64, h: &RecordHeader, payload: &[u8]) -> DumpRecord {
        DumpRecord {
            segment_id,
            offset: h.segment_offset,
            lsn: h.lsn,
            kind: h.kind,
            disk_id: h.disk_id,
            disk_offset: h.disk_offset,
            length: h.length,
            stored_len: h.stored_len,
            lz4: h.is_lz4(),
            crc: h.crc,
            point: (h.kind == RecordKind::Point)
                .then(|| PointPayload::decode(payload).ok())
                .flatten(),
            resize_bytes: h.resize_bytes(),
        }
    }
}

/// How a segment's scan ended, for a segment the manifest records as `sealed` or not.
fn dump_end(result: Result<segment::Scan, DecodeError>, sealed: bool) -> DumpEnd {
    match result {
        Ok(scan) => match scan.end {
            SegmentEnd::Clean { offset } => DumpEnd::Clean(offset),
            SegmentEnd::Sealed { footer_offset, .. } => DumpEnd::Sealed(footer_offset),
            // A sealed segment was acknowledged whole: an invalid record in it is damage.
            SegmentEnd::Torn { offset, reason } if sealed => DumpEnd::Damaged(format!(
                "byte {offset}: {} (in a sealed segment)",
                reason.detail
            )),
            SegmentEnd::Torn { offset, reason } => DumpEnd::Torn(offset, reason.detail),
        },
        Err(e) => DumpEnd::Damaged(e.to_string()),
    }
}

/// Visits every record of every listed segment (or only `only_segment`), calling `record` for
/// each and `end` once per segment.
pub fn dump(
    storage: &dyn Storage,
    dir: &Path,
    only_segment: Option<u64>,
    mut record: impl FnMut(&DumpRecord),
    mut end: impl FnMut(u64, &Path, &DumpEnd),
) -> Result<()> {
    // The same checks, errors and exit codes as every other command that opens a vault.
    let header = crate::vault::read_vault_header(storage, dir)?;
    let manifest = crate::vault::read_manifest(storage, dir)?;
    let seed = vault_seed(&header.vault_id);
    let ids: Vec<u64> = manifest
        .segments
        .iter()
        .map(|s| s.segment_id)
        .filter(|&id| only_segment.is_none_or(|o| o == id))
        .collect();
    if let (Some(want), true) = (only_segment, ids.is_empty()) {
        return Err(ReadError::new(
            ReadErrorKind::InvalidRequest,
            format!("the vault has no segment {want}"),
        ));
    }
    for id in ids {
        let sealed = manifest
            .segments
            .iter()
            .any(|s| s.segment_id == id && s.sealed.is_some());
        let path = layout::segment_path(dir, id);
        let bytes = storage
            .open(&path, OpenMode::Read)
            .and_then(|f| f.map())
            .map_err(|e| ReadError::io(&path, "read", e))?;
        let expect = Expect {
            vault_id: header.vault_id,
            seed,
            segment_id: id,
        };
        // A released dead prefix is skipped (the dump starts at the base point's marker), and
        // so are the dead ranges the manifest lists: their records may be a hole.
        let live = manifest.live_start(id);
        let dead = manifest.dead_ranges_of(id);
        let result = segment::scan_skipping(&bytes, &expect, live, dead, |h, payload| {
            record(&DumpRecord::from_header(id, h, payload))
        });
        end(id, &path, &dump_end(result, sealed));
    }
    Ok(())
}
