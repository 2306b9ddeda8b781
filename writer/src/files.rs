//! Removing and measuring vault files, and the readers' lease registry as the writer sees it.
//! Shared by recovery, compaction and migration, which all delete what a manifest no longer
//! names; knows nothing of the journal or the bases.

use std::path::{Path, PathBuf};

use replog_io::{OpenMode, Storage};
use replog_reader::{LiveLease, Registrations};

use crate::error::{Result, WriteError, WriteErrorKind};

/// Removes files (missing ones are fine) and syncs each directory touched.
pub(crate) fn remove_files(
    storage: &dyn Storage,
    paths: impl Iterator<Item = PathBuf>,
) -> Result<()> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for path in paths {
        match storage.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(WriteError::io(&path, None, "removing", e)),
        }
        let dir = path.parent().expect("vault files live in directories");
        if !dirs.iter().any(|d| d == dir) {
            dirs.push(dir.to_path_buf());
        }
    }
    for dir in dirs {
        storage
            .sync_dir(&dir)
            .map_err(|e| WriteError::io(&dir, None, "syncing the directory", e))?;
    }
    Ok(())
}

/// The length of `path`; 0 when it does not exist.
pub(crate) fn file_len(storage: &dyn Storage, path: &Path) -> Result<u64> {
    match storage.open(path, OpenMode::Read) {
        Ok(f) => f
            .len()
            .map_err(|e| WriteError::io(path, None, "measuring", e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(WriteError::io(path, None, "opening", e)),
    }
}

/// The registration lock of the vault at `dir`, held exclusive, and the live leases.
pub(crate) fn live_leases(
    storage: &dyn Storage,
    dir: &Path,
    seed: u32,
) -> Result<(Registrations, Vec<LiveLease>)> {
    let registrations = Registrations::lock(storage, dir, seed)
        .map_err(|e| WriteError::read(WriteErrorKind::Io, None, e))?;
    let live = registrations
        .live()
        .map_err(|e| WriteError::read(WriteErrorKind::Io, None, e))?;
    Ok((registrations, live))
}

/// What releasing the dead prefixes of a manifest's segments did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Released {
    /// Segments whose prefix is now a hole (punched now, or already).
    pub(crate) segments: Vec<u64>,
    /// Allocated bytes given back (`st_blocks` before less after, over those segments).
    pub(crate) bytes: u64,
    /// Segment files whose filesystem cannot punch holes: nothing was released there.
    pub(crate) unsupported: Vec<PathBuf>,
}

/// Releases the dead prefix of every segment `manifest` marks (see
/// `Manifest::released_prefix`): a hole punched over `[4096, end)`, keeping the header page and
/// the base point's marker page, then the file's length set again (filesystems free blocks
/// reserved past the end there: the preallocation of a segment sealed early), then a data sync
/// so that the punch is durable. The manifest marking the segment must be durable first: an
/// older manifest would read the hole as missing records. Idempotent, so recovery redoes it
/// after a crash. A filesystem that cannot punch holes gets nothing written: the range would
/// take the same space as zeros, and it is reported instead.
pub(crate) fn release_prefixes(
    storage: &dyn Storage,
    dir: &Path,
    manifest: &replog_format::manifest::Manifest,
) -> Result<Released> {
    let mut out = Released::default();
    for s in &manifest.segments {
        let Some(end) = manifest.released_prefix(s.segment_id) else {
            continue;
        };
        let path = replog_format::layout::segment_path(dir, s.segment_id);
        let start = replog_format::manifest::RELEASE_UNIT_BYTES;
        let io = |at: u64, what: &str| {
            let path = path.clone();
            let what = what.to_owned();
            move |e| WriteError::io(&path, Some(at), &what, e)
        };
        let f = match storage.open(&path, OpenMode::ReadWrite) {
            Ok(f) => f,
            // Evicted to a remote (tiered storage): nothing of it is here to release.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(0, "opening to release its dead prefix")(e)),
        };
        if f.next_data(start)
            .map_err(io(start, "looking for data"))?
            .is_none_or(|(data, _)| data >= end)
        {
            out.segments.push(s.segment_id);
            continue;
        }
        let before = f.allocated_bytes().map_err(io(0, "measuring"))?;
        let what = "punching a hole over the released prefix";
        if !f.punch_hole(start, end - start).map_err(io(start, what))? {
            out.unsupported.push(path);
            continue;
        }
        let len = f.len().map_err(io(0, "measuring"))?;
        f.set_len(len).map_err(io(
            len,
            "setting the length (freeing space reserved past the end)",
        ))?;
        f.sync_data()
            .map_err(io(start, "syncing the released prefix"))?;
        let after = f.allocated_bytes().map_err(io(0, "measuring"))?;
        out.bytes += before.saturating_sub(after);
        out.segments.push(s.segment_id);
    }
    Ok(out)
}

/// Punches the hole of every dead range `manifest` lists (see `replog_format::garbage`): the
/// whole pages inside each run, skipping those `SEEK_DATA` says are already a hole; then, in
/// each segment punched, the length set again (freeing space reserved past the end of a
/// segment sealed early) and a data sync so that the holes are durable. The manifest listing
/// the ranges must be durable first: an older manifest would scan for the records the holes
/// remove. Idempotent, so recovery redoes it after a crash. A filesystem that cannot punch
/// holes gets nothing written, and the segment is reported.
pub(crate) fn punch_dead_ranges(
    storage: &dyn Storage,
    dir: &Path,
    manifest: &replog_format::manifest::Manifest,
) -> Result<Released> {
    let mut out = Released::default();
    let mut ids: Vec<u64> = manifest.dead_ranges.iter().map(|d| d.segment_id).collect();
    ids.dedup();
    for id in ids {
        let path = replog_format::layout::segment_path(dir, id);
        let io = |at: u64, what: &'static str| {
            let path = path.clone();
            move |e| WriteError::io(&path, Some(at), what, e)
        };
        let f = match storage.open(&path, OpenMode::ReadWrite) {
            Ok(f) => f,
            // Evicted to a remote (tiered storage): nothing of it is here to free.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(0, "opening to punch its dead ranges")(e)),
        };
        let before = f.allocated_bytes().map_err(io(0, "measuring"))?;
        let mut punched = false;
        for (at, len) in manifest.dead_ranges_of(id).iter().filter_map(|d| d.hole()) {
            let data = f.next_data(at).map_err(io(at, "looking for data"))?;
            if data.is_none_or(|(data, _)| data >= at + len) {
                continue;
            }
            let what = "punching a hole over a dead range";
            if !f.punch_hole(at, len).map_err(io(at, what))? {
                out.unsupported.push(path.clone());
                break;
            }
            punched = true;
        }
        if punched {
            let len = f.len().map_err(io(0, "measuring"))?;
            f.set_len(len).map_err(io(
                len,
                "setting the length (freeing space reserved past the end)",
            ))?;
            f.sync_data()
                .map_err(io(0, "syncing the punched dead ranges"))?;
            let after = f.allocated_bytes().map_err(io(0, "measuring"))?;
            out.bytes += before.saturating_sub(after);
        }
        out.segments.push(id);
    }
    Ok(out)
}
