//! Opening a vault for writing after any crash: the `TolerateTornTail` policy.
//!
//! | found | action |
//! |---|---|
//! | `MANIFEST.tmp` | removed: an interrupted manifest replacement, never trusted |
//! | the segment after the open one, not listed, holding no record | removed: an interrupted rotation; records are only appended to listed segments |
//! | any other unlisted segment at or after the first listed (one holding records that continue the journal) | refused, naming the segments, nothing removed: the manifest is older than the journal (restored from an older copy), and removing them would lose history and reuse point ids |
//! | `digests/<disk>.dig.tmp` | removed: an interrupted ingest or disk addition; never renamed into place |
//! | a base generation newer than the manifest's, or of a disk it does not list | removed: an interrupted compaction or disk addition |
//! | an older base generation, a segment before the first listed | removed once no reader's lease names an older manifest: a compaction committed but did not finish deleting |
//! | open segment ends cleanly (EOF or zeros) | append from there |
//! | open segment has a torn tail at X | bytes from X copied to `quarantine/`, zeroed, synced; append from X |
//! | open segment is sealed (footer + trailer) | the rotation is completed: next segment created, manifest updated |
//! | damage before the tail, a bad header, a manifest that fails its checksum | refused, naming the file and offset |

use std::path::{Path, PathBuf};

use replog_format::header::VaultHeader;
use replog_format::layout;
use replog_format::segment::{
    self, Expect, FOOTER_EXTENT_BYTES, FOOTER_POINT_FIXED_BYTES, IndexBuilder, PointEntry,
    SEGMENT_HEADER_BYTES, SegmentEnd,
};
use replog_io::{OpenMode, Storage, WriteAt};
use replog_reader::verify::{
    UnlistedSegment, classify_unlisted_segment, describe_unlisted_segment,
};

use crate::error::{Result, WriteError, WriteErrorKind};
use crate::journal::ActiveSegment;
use crate::writer::Writer;

/// Reads and decodes `VAULT`.
pub(crate) fn read_vault_header(storage: &dyn Storage, dir: &Path) -> Result<VaultHeader> {
    let path = dir.join(layout::VAULT_FILE);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WriteError::new(
                WriteErrorKind::NotAVault,
                format!(
                    "{}: not a replog vault (no VAULT file); create one with `replog init`",
                    dir.display()
                ),
            ),
            _ => WriteError::io(&path, None, "opening", e),
        })?;
    let bytes = file
        .map()
        .map_err(|e| WriteError::io(&path, None, "reading", e))?;
    VaultHeader::decode(&bytes).map_err(|e| WriteError::damaged(&path, 0, e))
}

/// Applies the recovery rules and sets up the active segment, LSN and point counters.
pub(crate) fn recover(w: &mut Writer) -> Result<()> {
    remove_leftovers(w)?;
    let open = w.manifest.segments.last().cloned().ok_or_else(|| {
        WriteError::new(
            WriteErrorKind::Damaged,
            format!("{}: MANIFEST lists no journal segment", w.dir.display()),
        )
    })?;
    if open.sealed.is_some() {
        return Err(WriteError::new(
            WriteErrorKind::Damaged,
            format!(
                "{}: MANIFEST lists no open segment after segment {}",
                w.dir.display(),
                open.segment_id
            ),
        ));
    }
    let path = layout::segment_path(&w.dir, open.segment_id);
    let file = w
        .storage
        .open(&path, OpenMode::ReadWrite)
        .map_err(|e| WriteError::io(&path, None, "opening", e))?;
    let bytes = file
        .map()
        .map_err(|e| WriteError::io(&path, None, "reading", e))?;
    let expect = Expect {
        vault_id: w.header.vault_id,
        seed: w.seed,
        segment_id: open.segment_id,
    };
    let mut index = IndexBuilder::default();
    let mut vouched = SEGMENT_HEADER_BYTES as u64;
    let scan = segment::scan(&bytes, &expect, |h, payload| {
        vouched = h.synced_upto;
        index.visit(h, payload);
    })
    .map_err(|e| WriteError::damaged(&path, 0, e))?;
    let IndexBuilder {
        extents,
        points,
        bad_point,
    } = index;
    if let Some(e) = bad_point {
        return Err(WriteError::damaged(&path, 0, e));
    }
    if scan.header.first_lsn != open.first_lsn {
        return Err(WriteError::new(
            WriteErrorKind::Damaged,
            format!(
                "{}: starts at LSN {}, the manifest says {}",
                path.display(),
                scan.header.first_lsn,
                open.first_lsn
            ),
        ));
    }
    if let SegmentEnd::Sealed { footer_offset, .. } = scan.end {
        let (footer, _) = segment::record_at(&bytes, footer_offset, &expect)
            .map_err(|e| WriteError::damaged(&path, 0, e))?;
        vouched = footer.synced_upto;
    }
    repersist(&path, file.as_ref(), &bytes, vouched, scan.valid_end)?;
    let file_len = bytes.len() as u64;
    drop(bytes);
    let end = scan.end.append_offset();
    if let SegmentEnd::Torn { offset, .. } = &scan.end {
        cut_torn_tail(w, &path, file.as_ref(), *offset, file_len)?;
    }
    let footer_bytes = 8
        + (extents.len() * FOOTER_EXTENT_BYTES) as u64
        + points
            .iter()
            .map(|p: &PointEntry| (FOOTER_POINT_FIXED_BYTES + p.point.label.len()) as u64)
            .sum::<u64>();
    w.next_lsn = scan.last_lsn + 1;
    w.next_point_id = points
        .last()
        .map(|p| p.point.point_id)
        .or(w.manifest.points.last().map(|p| p.point.point_id))
        .unwrap_or(0)
        + 1;
    w.active = ActiveSegment {
        id: open.segment_id,
        first_lsn: open.first_lsn,
        path,
        file,
        written: end,
        synced: end,
        pending: Default::default(),
        extents,
        points,
        footer_bytes,
    };
    if let SegmentEnd::Sealed { trailer, .. } = scan.end {
        let sealed = replog_format::manifest::SealedInfo {
            last_lsn: trailer.last_lsn,
            footer_offset: trailer.footer_offset,
            file_bytes: scan.valid_end,
            footer_crc: trailer.footer_crc,
        };
        let points = std::mem::take(&mut w.active.points);
        w.active.extents.clear();
        w.start_next_segment(sealed, points)?;
        w.recovery.completed_rotation = true;
    }
    Ok(())
}

/// Writes `[from, to)` of the open segment again and syncs it. No record vouches that those
/// bytes were ever durable: the writer that framed them may have died, or its sync may have
/// failed, in which case the kernel may have dropped them while reads still show them
/// (fsyncgate). Building on them unsynced could acknowledge a point that a power loss then
/// takes away. At most one staging batch and a footer, so it is cheap.
fn repersist(
    path: &Path,
    file: &dyn replog_io::File,
    bytes: &[u8],
    from: u64,
    to: u64,
) -> Result<()> {
    if from >= to {
        return Ok(());
    }
    let again = bytes[from as usize..to as usize].to_vec();
    file.write_batch(
        &[WriteAt {
            offset: from,
            data: &again,
        }],
        true,
    )
    .map_err(|e| WriteError::io(path, Some(from), "re-persisting the unsynced records", e))
}

/// Syncs the directories whose entries recovery is about to trust: a rename or creation whose
/// directory sync failed may show in the namespace without being durable.
pub(crate) fn sync_dirs(storage: &dyn Storage, dir: &Path) -> Result<()> {
    for sub in [
        "",
        layout::JOURNAL_DIR,
        layout::BASES_DIR,
        layout::DIGESTS_DIR,
    ] {
        let d = if sub.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(sub)
        };
        storage
            .sync_dir(&d)
            .map_err(|e| WriteError::io(&d, None, "syncing the directory", e))?;
    }
    Ok(())
}

/// Removes `MANIFEST.tmp`, the empty segment an interrupted rotation left and digest caches an
/// interrupted ingest left, after refusing a manifest older than the journal.
fn remove_leftovers(w: &mut Writer) -> Result<()> {
    let debris = unlisted_segments(w)?;
    let s = w.storage.as_ref();
    let tmp = w.dir.join(layout::MANIFEST_TMP_FILE);
    let mut removed_in_root = false;
    if s.exists(&tmp)
        .map_err(|e| WriteError::io(&tmp, None, "checking", e))?
    {
        s.remove_file(&tmp)
            .map_err(|e| WriteError::io(&tmp, None, "removing", e))?;
        w.recovery.removed.push(tmp);
        removed_in_root = true;
    }
    let journal = w.dir.join(layout::JOURNAL_DIR);
    for p in &debris {
        s.remove_file(p)
            .map_err(|e| WriteError::io(p, None, "removing", e))?;
    }
    for (dir, removed) in [(&w.dir, removed_in_root), (&journal, !debris.is_empty())] {
        if removed {
            s.sync_dir(dir)
                .map_err(|e| WriteError::io(dir, None, "syncing the directory", e))?;
        }
    }
    w.recovery.removed.extend(debris);
    remove_digest_temporaries(w)?;
    remove_superseded(w)
}

/// The unlisted segment files at or after the first listed one that an interrupted rotation
/// left (at most one, empty), to be removed. Any other is evidence that the manifest was
/// rolled back: the open is refused, naming them, and nothing is removed. (Segments before the
/// first listed are a compaction's; `remove_superseded` decides.)
fn unlisted_segments(w: &Writer) -> Result<Vec<PathBuf>> {
    let s = w.storage.as_ref();
    let journal = w.dir.join(layout::JOURNAL_DIR);
    let mut debris = Vec::new();
    let mut rolled_back = Vec::new();
    let first_listed = w.manifest.segments.first().map(|seg| seg.segment_id);
    for name in s
        .read_dir(&journal)
        .map_err(|e| WriteError::io(&journal, None, "listing", e))?
    {
        let Some(id) = layout::parse_segment_file_name(&name) else {
            continue;
        };
        let listed = w.manifest.segments.iter().any(|seg| seg.segment_id == id);
        if listed || first_listed.is_none_or(|first| id < first) {
            continue;
        }
        let p = journal.join(&name);
        let bytes = s
            .open(&p, OpenMode::Read)
            .and_then(|f| f.map())
            .map_err(|e| WriteError::io(&p, None, "reading", e))?;
        let expect = Expect {
            vault_id: w.header.vault_id,
            seed: w.seed,
            segment_id: id,
        };
        match classify_unlisted_segment(&w.manifest, id, &bytes, &expect) {
            UnlistedSegment::InterruptedRotation | UnlistedSegment::Superseded => debris.push(p),
            UnlistedSegment::RolledBack => rolled_back.push(format!(
                "{}/{name} ({})",
                layout::JOURNAL_DIR,
                describe_unlisted_segment(&bytes, &expect)
            )),
        }
    }
    if rolled_back.is_empty() {
        return Ok(debris);
    }
    Err(WriteError::new(
        WriteErrorKind::Damaged,
        format!(
            "{}: MANIFEST is older than the journal: it does not list {}. An interrupted rotation leaves at most one empty segment, so MANIFEST was rolled back (restored from an older copy?). Nothing was changed: opening for writing would remove that history and hand out its point ids again. Put back the MANIFEST that belongs with this journal; `replog verify` names what does not agree",
            w.dir.display(),
            rolled_back.join(", ")
        ),
    ))
}

/// Removes `digests/*.dig.tmp`: a digest cache an ingest or disk addition was writing when it
/// was stopped. It was never renamed into place, so nothing relies on it; left, it would hold
/// up to a digest per block of the disk.
fn remove_digest_temporaries(w: &mut Writer) -> Result<()> {
    let s = w.storage.as_ref();
    let digests = w.dir.join(layout::DIGESTS_DIR);
    let names = s
        .read_dir(&digests)
        .map_err(|e| WriteError::io(&digests, None, "listing", e))?;
    let stale: Vec<PathBuf> = names
        .iter()
        .filter(|n| n.ends_with(crate::digest::DIGEST_TMP_SUFFIX))
        .map(|n| digests.join(n))
        .collect();
    w.remove_files(stale.iter().cloned())?;
    w.recovery.removed.extend(stale);
    Ok(())
}

/// Removes what an interrupted compaction left: base generations newer than the manifest's
/// (written, never committed) and files an older manifest named that a committed compaction did
/// not get to delete (older base generations, segments before the first listed one). The
/// latter only once no live lease was taken against an older manifest: a reader's snapshot may
/// still name them (they are then left for a later open or prune). `leases/` and `index/` are
/// not touched.
fn remove_superseded(w: &mut Writer) -> Result<()> {
    let s = w.storage.as_ref();
    let bases = w.dir.join(layout::BASES_DIR);
    let journal = w.dir.join(layout::JOURNAL_DIR);
    let mut newer = Vec::new();
    let mut older = Vec::new();
    for name in s
        .read_dir(&bases)
        .map_err(|e| WriteError::io(&bases, None, "listing", e))?
    {
        let Some((disk_id, generation)) = parse_base_file_name(&name) else {
            continue;
        };
        match w.manifest.disks.iter().find(|d| d.disk_id == disk_id) {
            Some(d) if generation == d.base_generation => {}
            Some(d) if generation < d.base_generation => older.push(bases.join(&name)),
            _ => newer.push(bases.join(&name)),
        }
    }
    let first_listed = w.manifest.segments.first().map(|seg| seg.segment_id);
    for name in s
        .read_dir(&journal)
        .map_err(|e| WriteError::io(&journal, None, "listing", e))?
    {
        if let Some(id) = layout::parse_segment_file_name(&name)
            && first_listed.is_some_and(|first| id < first)
        {
            older.push(journal.join(&name));
        }
    }
    if !older.is_empty() {
        let (registrations, live) = w.live_leases()?;
        let base_lsn = w.manifest.base_lsn;
        if live.iter().all(|l| l.snapshot_base_lsn() >= base_lsn) {
            newer.append(&mut older);
        }
        drop(registrations);
    }
    w.remove_files(newer.iter().cloned())?;
    w.recovery.removed.extend(newer);
    Ok(())
}

/// Parses `<disk>.<gen>.base` (decimal numbers) back to its disk id and generation.
fn parse_base_file_name(name: &str) -> Option<(u32, u64)> {
    let (disk, generation) = name.strip_suffix(".base")?.split_once('.')?;
    let canonical = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !canonical(disk) || !canonical(generation) {
        return None;
    }
    Some((disk.parse().ok()?, generation.parse().ok()?))
}

/// Keeps the torn bytes `[offset, file_len)` in `quarantine/`, then zeroes them in the segment.
fn cut_torn_tail(
    w: &mut Writer,
    path: &Path,
    file: &dyn replog_io::File,
    offset: u64,
    file_len: u64,
) -> Result<()> {
    let s = w.storage.as_ref();
    let mut tail = vec![0u8; (file_len - offset) as usize];
    file.read_exact_at(&mut tail, offset)
        .map_err(|e| WriteError::io(path, Some(offset), "reading the torn tail", e))?;
    let qdir = w.dir.join(layout::QUARANTINE_DIR);
    let seg_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let qpath = qdir.join(format!("{seg_name}.{offset}.tail"));
    let q = s
        .open(&qpath, OpenMode::CreateTruncate)
        .map_err(|e| WriteError::io(&qpath, None, "creating", e))?;
    q.write_batch(
        &[WriteAt {
            offset: 0,
            data: &tail,
        }],
        true,
    )
    .map_err(|e| WriteError::io(&qpath, Some(0), "writing and syncing", e))?;
    s.sync_dir(&qdir)
        .map_err(|e| WriteError::io(&qdir, None, "syncing the directory", e))?;
    file.zero_range(offset, file_len - offset)
        .map_err(|e| WriteError::io(path, Some(offset), "zeroing the torn tail", e))?;
    file.sync_data().map_err(|e| {
        WriteError::io(path, Some(offset), "syncing after cutting the torn tail", e)
    })?;
    w.recovery.torn_tail = Some((path.to_path_buf(), offset, file_len - offset, qpath));
    Ok(())
}
