//! The open segment's prefix: what a sync ships of the segment the writer is still appending
//! to, so that the remote holds the vault's newest point and not only those of sealed segments.
//!
//! A prefix is the open segment's bytes `[0, end)`, where `end` is the end of the marker record
//! of the vault's newest point (or the end of the valid records, when a disk was added after
//! that point: its `added_lsn` vouches that the records before it are durable). Before those bytes are read for upload the segment is synced
//! (`fdatasync`), so what is shipped is durable locally too: no local recovery can cut it
//! afterwards, and the remote never holds a point the local vault may lose in a crash. The
//! marker record itself is read and checked (CRC, kind, LSN, its own segment and offset) before
//! its end is trusted as the prefix's end.
//!
//! On the remote a prefix is an ordinary file entry of kind "segment" whose `file_bytes` is the
//! prefix length, of a segment that the embedded `MANIFEST` lists as open. Its map and chunks
//! are stored under their hashes like every other file's, so a longer prefix is a new map (and
//! a new last chunk), and the older ones go once no kept remote manifest names them. A reader of
//! the remote scans the prefix as it scans a local open segment, and finds a clean end at the
//! end of the marker.

use std::path::Path;

use replog_format::layout;
use replog_format::manifest::Manifest;
use replog_format::record::{PointPayload, RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use replog_format::remote::{FileId, FileKind, REMOTE_DIR, REMOTE_LATEST_FILE, RemoteManifest};
use replog_format::segment::{Expect, PointEntry, SEGMENT_HEADER_BYTES, record_in};
use replog_io::{File, OpenMode, Storage};
use replog_reader::{PointInfo, ReadError, Vault};

use crate::error::{RemoteError, Result};

/// The open segment's prefix to ship, when the vault's newest point is in its open segment:
/// the segment's file id and the end of that point's marker record. The segment is synced
/// first, so the prefix is durable locally.
pub(crate) fn open_prefix(
    storage: &dyn Storage,
    dir: &Path,
    vault: &Vault,
) -> Result<Option<(FileId, u64)>> {
    let (Some(open), Some(point)) = (vault.open_segment(), vault.latest_point()) else {
        return Ok(None);
    };
    if point.segment_id != open.segment_id {
        return Ok(None);
    }
    let rel = Path::new(layout::JOURNAL_DIR).join(layout::segment_file_name(open.segment_id));
    let path = dir.join(&rel);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| RemoteError::local(&path, "open the open segment for upload", e))?;
    file.sync_data()
        .map_err(|e| RemoteError::local(&path, "sync the open segment before upload", e))?;
    let expect = Expect {
        vault_id: vault.header().vault_id,
        seed: replog_format::vault_seed(&vault.header().vault_id),
        segment_id: open.segment_id,
    };
    let (header, _) = read_record(file.as_ref(), &rel, point.record_offset, &expect)?;
    if header.kind != RecordKind::Point || header.lsn != point.lsn {
        return Err(ReadError::damaged(
            &rel,
            point.record_offset,
            format!(
                "point {} (LSN {}) should start here, but a {} record of LSN {} does",
                point.point_id,
                point.lsn,
                header.kind.name(),
                header.lsn
            ),
        )
        .into());
    }
    let id = FileId {
        kind: FileKind::Segment,
        a: open.segment_id,
        b: 0,
    };
    // A disk added after the point says every record before its `added_lsn` was durable, and
    // `verify` holds the journal to that: the prefix then runs to the end of the valid records
    // (synced above like the rest).
    let end = if vault.disks().iter().any(|d| d.added_lsn > point.lsn + 1) {
        open.end.append_offset()
    } else {
        point.record_offset + header.total_bytes()
    };
    Ok(Some((id, end)))
}

/// Reads and verifies the record at `offset` of a segment file: header, payload and CRC.
fn read_record(
    file: &dyn File,
    rel: &Path,
    offset: u64,
    expect: &Expect,
) -> Result<(RecordHeader, Vec<u8>)> {
    let mut head = [0u8; RECORD_HEADER_BYTES];
    file.read_exact_at(&mut head, offset)
        .map_err(|e| ReadError::read(rel, offset, head.len() as u64, e))?;
    let h = RecordHeader::decode(&head).map_err(|e| ReadError::decode(rel, offset, e))?;
    let mut bytes = vec![0u8; h.total_bytes() as usize];
    file.read_exact_at(&mut bytes, offset)
        .map_err(|e| ReadError::read(rel, offset, h.total_bytes(), e))?;
    let (h, payload) =
        record_in(&bytes, offset, expect).map_err(|e| ReadError::decode(rel, 0, e))?;
    let payload = payload.to_vec();
    Ok((h, payload))
}

/// The id of the segment whose prefix `manifest` names: a segment file entry of a segment the
/// embedded `MANIFEST` lists as open. `None` when it names none (it was synced with no point in
/// the open segment, or by a replog that shipped sealed segments only).
pub fn prefix_segment(manifest: &RemoteManifest) -> Option<u64> {
    let m = Manifest::decode(&manifest.manifest).ok()?;
    let open = m.segments.last().filter(|s| s.sealed.is_none())?;
    let id = FileId {
        kind: FileKind::Segment,
        a: open.segment_id,
        b: 0,
    };
    manifest.file(&id).map(|_| open.segment_id)
}

/// The newest point `manifest` offers: the newest of its embedded `MANIFEST`'s offered points
/// and of the points in the prefix it names. The prefix's records are read through `storage`
/// from the vault in `dir` (the local segment, whose bytes up to the prefix's end are the ones
/// shipped, or the remote's copy where the segment was since sealed and evicted), each
/// verified by its CRC; memory is one record at a time.
pub fn newest_point(
    storage: &dyn Storage,
    dir: &Path,
    manifest: &RemoteManifest,
    seed: u32,
) -> Result<Option<PointInfo>> {
    let m = Manifest::decode(&manifest.manifest).map_err(|e| {
        let latest = Path::new(REMOTE_DIR).join(REMOTE_LATEST_FILE);
        RemoteError::from(ReadError::decode(latest, 0, e))
    })?;
    let mut newest = m
        .points
        .iter()
        .filter(|p| m.offers(p.point.point_id, p.lsn))
        .max_by_key(|p| p.lsn)
        .map(PointInfo::from_manifest);
    if let Some(segment_id) = prefix_segment(manifest) {
        let id = FileId {
            kind: FileKind::Segment,
            a: segment_id,
            b: 0,
        };
        let end = manifest.file(&id).map_or(0, |f| f.file_bytes);
        let expect = Expect {
            vault_id: manifest.vault_id,
            seed,
            segment_id,
        };
        let in_prefix = prefix_points(storage, dir, end, &expect)?
            .into_iter()
            .filter(|p| m.offers(p.point_id, p.lsn))
            .max_by_key(|p| p.lsn);
        if in_prefix.as_ref().map(|p| p.lsn) > newest.as_ref().map(|p| p.lsn) {
            newest = in_prefix;
        }
    }
    Ok(newest)
}

/// The points in bytes `[0, end)` of segment `expect.segment_id`, walking its records from the
/// header on.
fn prefix_points(
    storage: &dyn Storage,
    dir: &Path,
    end: u64,
    expect: &Expect,
) -> Result<Vec<PointInfo>> {
    let rel = Path::new(layout::JOURNAL_DIR).join(layout::segment_file_name(expect.segment_id));
    let path = dir.join(&rel);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| RemoteError::local(&path, "open to find its points", e))?;
    let mut points = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES as u64;
    while at < end {
        let (h, payload) = read_record(file.as_ref(), &rel, at, expect)?;
        if h.kind == RecordKind::Point {
            let point =
                PointPayload::decode(&payload).map_err(|e| ReadError::decode(&rel, at, e))?;
            let entry = PointEntry {
                lsn: h.lsn,
                record_offset: at,
                point,
            };
            points.push(PointInfo::from_segment(expect.segment_id, &entry));
        }
        at += h.total_bytes();
    }
    if at != end {
        return Err(ReadError::damaged(
            &rel,
            at,
            format!("the remote manifest says the shipped prefix ends at {end}, inside a record"),
        )
        .into());
    }
    Ok(points)
}
