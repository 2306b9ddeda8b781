//! Checkpoint indexes (`index/<lsn>.idx`, layout in `replog_format::checkpoint`): writing one
//! from a view, choosing the one a view starts from, and loading it.
//!
//! A checkpoint is derived from sealed segments, which never change, so any process may write
//! one without the writer's lock: it is written under a unique temporary name, synced, and
//! renamed into place; two processes writing the same LSN write the same map. A checkpoint that
//! fails to load is ignored (the view replays the journal instead) and reported by `verify`.
//!
//! [`CheckpointIndex`] searches a checkpoint in place (`index`); `writer` writes one as a stream
//! of pieces in disk order.
//!
//! Memory: loading holds the extent maps being built (the same maps a replayed view holds) and
//! one iterator's 64 KiB; writing holds the view and one 1 MiB write buffer.

mod index;
mod merge;
mod writer;

pub use index::{CACHE_BYTES_MAX, CacheStats, CheckpointIndex, Pieces, READ_AHEAD_BLOCKS};
pub use merge::{STEP_LSNS_MAX, write, write_in_steps};

use std::path::{Path, PathBuf};

use replog_format::checkpoint::{
    CHECKPOINT_HEADER_BYTES, CheckpointHeader, CheckpointPiece, PieceSource, RecordPiece,
};
use replog_format::layout::{self, INDEX_DIR};
use replog_io::OpenMode;

use crate::base_image::base_bytes_or_manifest;
use crate::disk_reader::DiskView;
use crate::error::{ReadError, ReadErrorKind, Result};
use crate::extent_map::{ExtentMap, RecordRef, SortedBuilder, Source};
use crate::point_view::PointView;
use crate::segments::SlotState;
use crate::vault::{Vault, VaultInner};
use writer::{IndexWriter, Target};

/// By default a checkpoint is written once this many LSNs (records and points) have been
/// sealed since the newest one: rare enough that writing checkpoints costs a small fraction of
/// the journal's own writes, often enough that a view never replays more than this many
/// records beyond what the journal's open segment holds.
pub const CHECKPOINT_EVERY_LSNS: u64 = 1 << 18;

/// A checkpoint on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Its LSN.
    pub lsn: u64,
    /// Its path.
    pub path: PathBuf,
    /// Pieces over all disks.
    pub pieces: u64,
    /// Its length.
    pub file_bytes: u64,
}

/// The LSNs of the checkpoints in the vault's `index/`, sorted; none if there is no directory.
pub(crate) fn list(inner: &VaultInner) -> Result<Vec<u64>> {
    let dir = inner.dir.join(INDEX_DIR);
    match inner.storage.read_dir(&dir) {
        Ok(names) => {
            let mut lsns: Vec<u64> = names
                .iter()
                .filter_map(|n| layout::parse_checkpoint_file_name(n))
                .collect();
            lsns.sort_unstable();
            Ok(lsns)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ReadError::io(INDEX_DIR, "list", e)),
    }
}

/// The LSNs at which a checkpoint can stand: the ends of sealed segments at or after the base.
fn sealed_ends(inner: &VaultInner) -> impl Iterator<Item = (u64, u64)> + '_ {
    let base_lsn = inner.manifest.base_lsn;
    inner.segments.iter().filter_map(move |s| match &s.state {
        SlotState::Sealed { info, .. } if info.last_lsn >= base_lsn => Some((s.id, info.last_lsn)),
        _ => None,
    })
}

/// The newest usable checkpoint for a view at `lsn`: at or before it, at or after the base, at
/// the end of a sealed segment of this snapshot.
pub(crate) fn best_for(inner: &VaultInner, lsn: u64) -> Result<Option<(u64, u64)>> {
    let on_disk = list(inner)?;
    Ok(sealed_ends(inner)
        .filter(|&(_, end)| end <= lsn && on_disk.binary_search(&end).is_ok())
        .last())
}

/// What loading a checkpoint checks it against.
pub(crate) struct LoadCtx<'a> {
    pub storage: &'a dyn replog_io::Storage,
    pub dir: &'a Path,
    pub vault_id: replog_format::VaultId,
    pub seed: u32,
    pub manifest: &'a replog_format::manifest::Manifest,
    /// Ids of the segments of the snapshot, increasing; a record piece's index is its
    /// position here.
    pub segment_ids: &'a [u64],
}

impl<'a> LoadCtx<'a> {
    pub(crate) fn of(inner: &'a VaultInner, segment_ids: &'a [u64]) -> LoadCtx<'a> {
        LoadCtx {
            storage: inner.storage.as_ref(),
            dir: &inner.dir,
            vault_id: inner.header.vault_id,
            seed: inner.seed,
            manifest: &inner.manifest,
            segment_ids,
        }
    }
}

/// Opens checkpoint `lsn`, refusing it unless it ends segment `segment_id`, as the manifest
/// says LSN `lsn` does.
pub(crate) fn open_ending(
    storage: &dyn replog_io::Storage,
    dir: &Path,
    vault_id: replog_format::VaultId,
    seed: u32,
    lsn: u64,
    segment_id: u64,
) -> Result<CheckpointIndex> {
    let index = CheckpointIndex::open(storage, dir, vault_id, seed, lsn)?;
    if index.header().last_segment_id != segment_id {
        return Err(ReadError::damaged(
            index.path(),
            40,
            format!(
                "it ends segment {}, the manifest says LSN {lsn} ends segment {segment_id}",
                index.header().last_segment_id
            ),
        ));
    }
    Ok(index)
}

/// Loads checkpoint `lsn` (which ends segment `segment_id`) as maps for the disks at `disks`
/// (indices into the manifest's disks, those added at or before `lsn`), whose bases hold
/// `base_bytes` each. Disks added after the checkpoint get a map of their base. Record pieces
/// already folded into the base read from the base. Streams the file through a
/// [`CheckpointIndex`], verifying every block.
pub(crate) fn load(
    ctx: &LoadCtx<'_>,
    lsn: u64,
    segment_id: u64,
    disks: &[usize],
    base_bytes: &[u64],
) -> Result<Vec<ExtentMap>> {
    let index = open_ending(
        ctx.storage,
        ctx.dir,
        ctx.vault_id,
        ctx.seed,
        lsn,
        segment_id,
    )?;
    let rel = index.path().to_path_buf();
    let mut maps: Vec<Option<ExtentMap>> = disks.iter().map(|_| None).collect();
    for (i, entry) in index.disks().iter().enumerate() {
        let at = (CHECKPOINT_HEADER_BYTES + i * 32) as u64;
        let position = disk_position(ctx, disks, entry, &rel, at)?;
        let map = load_disk(ctx, &index, entry)?;
        let base = base_bytes[position];
        if entry.disk_bytes < base || !map.base_reads_within(base) {
            return Err(ReadError::damaged(
                &rel,
                at,
                format!(
                    "disk {} of {} bytes reads past its base of {base} bytes",
                    entry.disk_id, entry.disk_bytes
                ),
            ));
        }
        maps[position] = Some(map);
    }
    Ok(maps
        .into_iter()
        .zip(base_bytes)
        .map(|(map, &b)| map.unwrap_or_else(|| ExtentMap::new(b)))
        .collect())
}

/// The position among the view's `disks` of the disk of directory entry `entry` (at byte
/// `at`): a disk of the view with the size the manifest gives it (at most that size once a
/// disk was resized: the checkpoint holds the size at its LSN).
pub(crate) fn disk_position(
    ctx: &LoadCtx<'_>,
    disks: &[usize],
    entry: &replog_format::checkpoint::DirectoryEntry,
    rel: &Path,
    at: u64,
) -> Result<usize> {
    let manifest_disks = &ctx.manifest.disks;
    let Some(position) = disks
        .iter()
        .position(|&i| manifest_disks[i].disk_id == entry.disk_id)
    else {
        return Err(ReadError::damaged(
            rel,
            at,
            format!("disk {} is not a disk of this view", entry.disk_id),
        ));
    };
    let listed = &manifest_disks[disks[position]];
    let size_ok = if ctx.manifest.resized {
        entry.disk_bytes <= listed.disk_bytes
    } else {
        entry.disk_bytes == listed.disk_bytes
    };
    if !size_ok {
        return Err(ReadError::damaged(
            rel,
            at,
            format!(
                "disk {} of {} bytes; the manifest says {} bytes",
                entry.disk_id, entry.disk_bytes, listed.disk_bytes
            ),
        ));
    }
    Ok(position)
}

fn load_disk(
    ctx: &LoadCtx<'_>,
    index: &CheckpointIndex,
    entry: &replog_format::checkpoint::DirectoryEntry,
) -> Result<ExtentMap> {
    let base_lsn = ctx.manifest.base_lsn;
    // Room for the pieces the directory counts, up to 2^22 (80 MiB) before the blocks prove
    // them: a damaged count costs no more than that.
    let hint = entry.piece_count.min(1 << 22) as usize;
    let mut map = SortedBuilder::with_capacity(entry.disk_bytes, hint);
    let mut pieces = index.pieces(entry.disk_id, 0..entry.disk_bytes)?;
    while let Some(piece) = pieces.next() {
        let piece = piece?;
        let at = pieces.last_offset();
        let source = source_of(ctx, &piece, base_lsn)
            .map_err(|why| ReadError::damaged(index.path(), at, why))?;
        if !map.push(piece.start, piece.start + piece.len, source) {
            return Err(ReadError::damaged(
                index.path(),
                at,
                format!(
                    "piece {}..{} of disk {} overlaps the one before or runs past the disk",
                    piece.start,
                    piece.start + piece.len,
                    entry.disk_id,
                ),
            ));
        }
    }
    Ok(map.finish())
}

/// The source a checkpoint piece stands for in this snapshot.
pub(crate) fn source_of(
    ctx: &LoadCtx<'_>,
    piece: &CheckpointPiece,
    base_lsn: u64,
) -> std::result::Result<Source, String> {
    match piece.source {
        PieceSource::Zero => Ok(Source::Zero),
        // Folded into the base by a compaction after the checkpoint was written: the base
        // holds exactly this record's bytes there, since no later folded record covers them.
        PieceSource::Record(r) if r.lsn <= base_lsn => Ok(Source::Base),
        PieceSource::Record(r) => {
            let index = ctx.segment_ids.binary_search(&r.segment_id).map_err(|_| {
                format!(
                    "a piece reads segment {}, which the manifest does not list",
                    r.segment_id
                )
            })?;
            Ok(Source::Record(record_ref(index as u32, piece.start, &r)))
        }
    }
}

fn record_ref(segment_index: u32, start: u64, r: &RecordPiece) -> RecordRef {
    RecordRef {
        segment_index,
        record_offset: r.record_offset,
        lsn: r.lsn,
        disk_offset: start - u64::from(r.data_offset),
        length: r.length,
        stored_len: r.stored_len,
        record_crc: r.record_crc,
        flags: r.flags,
        data_offset: r.data_offset,
    }
}

/// The maps a view at `lsn` starts from: the newest usable checkpoint at or before it that
/// loads, and its LSN; `None` to replay from the base. A checkpoint that does not load is
/// passed over for the one before it (the journal is the authority; `verify` reports it); when
/// maintenance removed the chosen one between listing and opening (thinning), `index/` is
/// listed again. At most [`START_ATTEMPTS_MAX`] are tried.
pub(crate) fn start_maps(
    inner: &VaultInner,
    lsn: u64,
    disks: &[usize],
    base_bytes: &[u64],
) -> Result<Option<(u64, Vec<ExtentMap>)>> {
    let ids: Vec<u64> = inner.segments.iter().map(|s| s.id).collect();
    let ctx = LoadCtx::of(inner, &ids);
    let mut at = lsn;
    for _ in 0..START_ATTEMPTS_MAX {
        let Some((segment_id, cp_lsn)) = best_for(inner, at)? else {
            return Ok(None);
        };
        match load(&ctx, cp_lsn, segment_id, disks, base_bytes) {
            Ok(maps) => return Ok(Some((cp_lsn, maps))),
            // Removed since the listing: list again.
            Err(e) if e.kind() == ReadErrorKind::NotFound => continue,
            Err(_) => match cp_lsn.checked_sub(1) {
                Some(before) => at = before,
                None => return Ok(None),
            },
        }
    }
    Ok(None)
}

/// Checkpoints a view tries before it replays from the base.
const START_ATTEMPTS_MAX: usize = 4;

/// Checks checkpoint `lsn` of a vault whose manifest is `manifest`, for `verify`: it must load
/// against the manifest as a view would load it.
pub(crate) fn check(
    storage: &dyn replog_io::Storage,
    dir: &Path,
    vault_id: replog_format::VaultId,
    seed: u32,
    manifest: &replog_format::manifest::Manifest,
    lsn: u64,
) -> Result<()> {
    let segment_ids: Vec<u64> = manifest.segments.iter().map(|s| s.segment_id).collect();
    let Some(segment) = manifest
        .segments
        .iter()
        .find(|s| s.sealed.is_some_and(|i| i.last_lsn == lsn))
    else {
        return Err(ReadError::new(
            ReadErrorKind::Damaged,
            format!("LSN {lsn} does not end a sealed segment of the manifest"),
        ));
    };
    let disks: Vec<usize> = (0..manifest.disks.len())
        .filter(|&i| manifest.disks[i].added_lsn <= lsn)
        .collect();
    let ctx = LoadCtx {
        storage,
        dir,
        vault_id,
        seed,
        manifest,
        segment_ids: &segment_ids,
    };
    let base_bytes: Vec<u64> = disks
        .iter()
        .map(|&i| base_bytes_or_manifest(storage, dir, manifest, &manifest.disks[i], seed))
        .collect();
    load(&ctx, lsn, segment.segment_id, &disks, &base_bytes).map(|_| ())
}

/// Writes `view`, a view at the end of sealed segment `segment_id`, as the checkpoint at its
/// LSN. The pieces are streamed from the view in disk order, so a layered view is written
/// without loading the checkpoint it lies over.
pub(crate) fn write_view(
    inner: &VaultInner,
    view: &PointView,
    segment_id: u64,
) -> Result<CheckpointInfo> {
    let lsn = view.lsn();
    let target = target(inner, lsn, segment_id);
    let mut out = IndexWriter::create(target, view.disks().len() as u32)?;
    for disk in view.disks() {
        if let Err(e) = write_disk(inner, disk, &mut out) {
            out.abandon();
            return Err(e);
        }
    }
    out.finish()
}

fn target(inner: &VaultInner, lsn: u64, last_segment_id: u64) -> Target<'_> {
    Target {
        storage: inner.storage.as_ref(),
        dir: &inner.dir,
        vault_id: inner.header.vault_id,
        seed: inner.seed,
        lsn,
        last_segment_id,
    }
}

/// Writes `disk` and each of its pieces that does not read the base.
fn write_disk(inner: &VaultInner, disk: &DiskView, out: &mut IndexWriter<'_>) -> Result<()> {
    out.begin_disk(disk.entry.disk_id, disk.size())?;
    for piece in disk.pieces(0, disk.size()) {
        let (start, piece) = piece?;
        let source = match piece.source {
            Source::Base => continue,
            Source::Zero => PieceSource::Zero,
            Source::Record(r) => record_piece(inner, &r),
        };
        out.push(CheckpointPiece {
            start,
            len: piece.end - start,
            source,
        })?;
    }
    Ok(())
}

/// How a checkpoint names the journal piece `r` reads: by segment id rather than by the
/// snapshot's segment index.
pub(crate) fn record_piece(inner: &VaultInner, r: &RecordRef) -> PieceSource {
    PieceSource::Record(RecordPiece {
        segment_id: inner.segments[r.segment_index as usize].id,
        record_offset: r.record_offset,
        lsn: r.lsn,
        length: r.length,
        stored_len: r.stored_len,
        record_crc: r.record_crc,
        flags: r.flags,
        data_offset: r.data_offset,
    })
}

/// The pieces of checkpoint `lsn`, from its header; 0 if it has none or it does not read (the
/// next checkpoint then replaces it).
pub(crate) fn pieces_of(inner: &VaultInner, lsn: u64) -> u64 {
    read_header(inner, lsn).map_or(0, |h| h.piece_count)
}

fn read_header(inner: &VaultInner, lsn: u64) -> Result<CheckpointHeader> {
    let path = layout::checkpoint_path(&inner.dir, lsn);
    let mut page = vec![0u8; CHECKPOINT_HEADER_BYTES];
    inner
        .storage
        .open(&path, OpenMode::Read)
        .and_then(|f| f.read_exact_at(&mut page, 0))
        .map_err(|e| ReadError::io(&path, "read the header of", e))?;
    CheckpointHeader::decode(&page, inner.seed).map_err(|e| ReadError::decode(&path, 0, e))
}

/// Writes a checkpoint at the end of the newest sealed segment if, since the newest checkpoint
/// (or the base), at least `every_lsns` LSNs were sealed and at least as many as that
/// checkpoint holds pieces; removes checkpoints the base has passed and those of an older
/// format, and thins the rest ([`thinned`]). Cheap when there is nothing to do: it lists
/// `index/` and reads one header page per checkpoint (a few dozen at most, once thinned).
/// Returns the checkpoint written, if any.
pub fn maintain(vault: &Vault, every_lsns: u64) -> Result<Option<CheckpointInfo>> {
    let inner = &vault.inner;
    let base_lsn = inner.manifest.base_lsn;
    let mut on_disk = Vec::new();
    for lsn in list(inner)? {
        // At the base LSN too: compaction dropped the segment that ended there.
        let passed = lsn <= base_lsn && base_lsn > 0;
        let older_format =
            read_header(inner, lsn).is_err_and(|e| e.kind() == ReadErrorKind::Unsupported);
        if passed || older_format {
            remove(inner, lsn)?;
        } else {
            on_disk.push(lsn);
        }
    }
    let written = maintain_newest(vault, &on_disk, every_lsns)?;
    thin(inner)?;
    Ok(written)
}

/// Writes a checkpoint at the newest sealed end if one is due (see [`maintain`]); `on_disk`
/// lists the usable checkpoints.
fn maintain_newest(
    vault: &Vault,
    on_disk: &[u64],
    every_lsns: u64,
) -> Result<Option<CheckpointInfo>> {
    let inner = &vault.inner;
    let base_lsn = inner.manifest.base_lsn;
    let Some((_, newest)) = sealed_ends(inner).last() else {
        return Ok(None);
    };
    let since = on_disk
        .iter()
        .copied()
        .filter(|&l| l >= base_lsn && l <= newest)
        .max()
        .unwrap_or(base_lsn);
    // A checkpoint costs in proportion to the pieces it holds: spacing them at least that many
    // LSNs apart keeps the index writes a bounded fraction of the journal's, however
    // fragmented the disks are, while a view still replays at most that many records.
    let spacing = every_lsns.max(pieces_of(inner, since));
    if newest - since < spacing || on_disk.binary_search(&newest).is_ok() {
        return Ok(None);
    }
    write(vault, newest).map(Some)
}

/// Removes the checkpoints [`thinned`] names.
pub(crate) fn thin(inner: &VaultInner) -> Result<()> {
    for lsn in thinned(&list(inner)?) {
        remove(inner, lsn)?;
    }
    Ok(())
}

fn remove(inner: &VaultInner, lsn: u64) -> Result<()> {
    let path = layout::checkpoint_path(&inner.dir, lsn);
    match inner.storage.remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ReadError::io(&path, "remove", e)),
    }
}

/// The checkpoints (LSNs, increasing) that thinning removes. It keeps the newest two, then,
/// going back, each one at least as far before the last kept as that one is before the
/// newest: the kept ones are spaced out exponentially, so at most about `2 + log2(span)` stay
/// (span: the LSNs between the oldest and the newest), and a view at an older point still
/// starts from one at most as far behind as it is behind the newest.
///
/// A reader holding a removed checkpoint open keeps reading it (an unlinked file stays
/// readable through an open handle); one that lists `index/` and then finds its choice gone
/// looks again ([`start_maps`]).
pub fn thinned(lsns: &[u64]) -> Vec<u64> {
    let mut removed = Vec::new();
    let Some((&newest, older)) = lsns.split_last() else {
        return removed;
    };
    let Some((&second, older)) = older.split_last() else {
        return removed;
    };
    let mut last_kept = second;
    for &lsn in older.iter().rev() {
        if last_kept - lsn >= newest - last_kept {
            last_kept = lsn;
        } else {
            removed.push(lsn);
        }
    }
    removed.reverse();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_newest_two_and_exponentially_spaced_older_ones() {
        let lsns: Vec<u64> = (1..=100).collect();
        let removed = thinned(&lsns);
        let kept: Vec<u64> = lsns
            .iter()
            .copied()
            .filter(|l| !removed.contains(l))
            .collect();
        assert_eq!(kept, vec![36, 68, 84, 92, 96, 98, 99, 100]);
        assert_eq!(
            thinned(&kept),
            Vec::<u64>::new(),
            "thinning twice removes nothing more"
        );
        assert!(thinned(&[5]).is_empty() && thinned(&[5, 9]).is_empty());
        // However many were written, few stay.
        let many: Vec<u64> = (1..=1_000_000).map(|i| i * 1000).collect();
        assert!(many.len() - thinned(&many).len() <= 2 + 21);
    }
}
