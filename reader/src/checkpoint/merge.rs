//! Writing a checkpoint incrementally: the next checkpoint is the previous one (read in disk
//! order through [`CheckpointIndex::pieces`]) overlaid with the records sealed since it (an
//! in-memory extent map of only those records), written out in disk order. The whole map is
//! never built.
//!
//! Memory: for at most [`STEP_LSNS_MAX`] LSNs, the overlay (an extent map costs at most three
//! 20-byte pieces and one 48-byte record per write, plus about 40 bytes a piece in its
//! transient overlay tree; a footer is read, applied and dropped, one at a time): about
//! 150 bytes an LSN, under 700 MiB for 2^22 LSNs, within a view's default budget of 1 GiB (a
//! layered view may write a checkpoint before it lies over it); plus one iterator's 64 KiB,
//! the previous index's block cache (4 MiB) and the writer's 1 MiB. When more LSNs than that
//! were sealed since the previous checkpoint, intermediate checkpoints are written at segment
//! ends, each step within the bound (a step always covers at least one whole sealed segment).
//! Every step streams the whole previous checkpoint, so a first checkpoint of N records costs
//! about N^2 / (2 STEP_LSNS_MAX) pieces written: larger steps are the cheaper for it.

use replog_format::checkpoint::{CheckpointPiece, PieceSource, RecordPiece};

use super::writer::{IndexWriter, Target};
use super::{CheckpointIndex, CheckpointInfo, best_for, sealed_ends};
use crate::error::{ReadError, ReadErrorKind, Result};
use crate::extent_map::{ExtentMap, Source};
use crate::vault::{Vault, VaultInner};

/// Most LSNs one step applies in memory.
pub const STEP_LSNS_MAX: u64 = 1 << 22;

/// Writes a checkpoint at `lsn`, which must end a sealed segment of the snapshot at or after
/// the base: from the newest checkpoint before it that opens (or the base), in steps of at
/// most [`STEP_LSNS_MAX`] LSNs. Returns what was written; when a checkpoint at `lsn` already
/// opens, it is returned as it is.
pub fn write(vault: &Vault, lsn: u64) -> Result<CheckpointInfo> {
    write_in_steps(vault, lsn, STEP_LSNS_MAX)
        .map(|mut written| written.pop().expect("at least one step"))
}

/// [`write`] with steps of at most `step_lsns_max` LSNs (each step still covers one whole
/// sealed segment at least). Returns every checkpoint written, the one at `lsn` last.
pub fn write_in_steps(vault: &Vault, lsn: u64, step_lsns_max: u64) -> Result<Vec<CheckpointInfo>> {
    let inner = &vault.inner;
    let ends: Vec<(u64, u64)> = sealed_ends(inner).filter(|&(_, e)| e <= lsn).collect();
    if ends.last().is_none_or(|&(_, e)| e != lsn) {
        return Err(ReadError::new(
            ReadErrorKind::InvalidRequest,
            format!("LSN {lsn} does not end a sealed segment at or after the base"),
        ));
    }
    let mut prev = newest_opening(inner, lsn)?;
    if let Some(p) = prev.as_ref().filter(|p| p.lsn() == lsn) {
        return Ok(vec![info_of(inner, p)]);
    }
    let mut from = prev.as_ref().map_or(inner.manifest.base_lsn, |p| p.lsn());
    let mut written = Vec::new();
    // Each step after the first reads through a fresh snapshot, which must still hold the same
    // base and the segment ending at `lsn` (a compaction in between ends the write).
    let mut snapshot = vault.clone();
    loop {
        let mut next = ends.iter().copied().filter(|&(_, e)| e > from);
        let first = next
            .next()
            .expect("an end after `from`, since `lsn` is one");
        let (segment_id, to) = next
            .take_while(|&(_, e)| e - from <= step_lsns_max)
            .last()
            .unwrap_or(first);
        let step = &snapshot.inner;
        written.push(merge_step(step, prev.as_ref(), from, to, segment_id)?);
        if to == lsn {
            return Ok(written);
        }
        prev = Some(open(step, to)?);
        // Intermediate checkpoints are thinned as they are written, as maintenance thins them:
        // at 10^8 pieces each is gigabytes, and two dozen of them would fill the disk.
        super::thin(step)?;
        from = to;
        snapshot = fresh_snapshot(vault, lsn)?;
    }
}

/// A new snapshot of `vault`'s directory for the next step, which must still hold the same
/// base and the sealed segment ending at `lsn` (a compaction in between ends the write: the
/// next maintenance starts again from the checkpoints written so far).
fn fresh_snapshot(vault: &Vault, lsn: u64) -> Result<Vault> {
    let inner = &vault.inner;
    let fresh = Vault::open(inner.storage.clone(), &inner.dir)?;
    let same_base = fresh.inner.manifest.base_lsn == inner.manifest.base_lsn;
    if !same_base || !sealed_ends(&fresh.inner).any(|(_, e)| e == lsn) {
        return Err(ReadError::new(
            ReadErrorKind::InvalidRequest,
            format!(
                "the vault was compacted while a checkpoint at LSN {lsn} was being written; \
                 the checkpoints written so far stay, and the next one starts from them"
            ),
        ));
    }
    Ok(fresh)
}

fn open(inner: &VaultInner, lsn: u64) -> Result<CheckpointIndex> {
    CheckpointIndex::open(
        inner.storage.as_ref(),
        &inner.dir,
        inner.header.vault_id,
        inner.seed,
        lsn,
    )
}

fn info_of(inner: &VaultInner, index: &CheckpointIndex) -> CheckpointInfo {
    CheckpointInfo {
        lsn: index.lsn(),
        path: inner.dir.join(index.path()),
        pieces: index.header().piece_count,
        file_bytes: index.header().file_bytes(),
    }
}

/// The newest checkpoint at or before `lsn` that a view could start from and that opens.
fn newest_opening(inner: &VaultInner, lsn: u64) -> Result<Option<CheckpointIndex>> {
    let mut at = lsn;
    while let Some((segment_id, cp)) = best_for(inner, at)? {
        if let Ok(index) = open(inner, cp)
            && index.header().last_segment_id == segment_id
        {
            return Ok(Some(index));
        }
        if cp == 0 {
            break;
        }
        at = cp - 1;
    }
    Ok(None)
}

/// Writes checkpoint `to` (the end of segment `segment_id`) from `prev` (at `from`; the base
/// when `None`) and the records in between.
fn merge_step(
    inner: &VaultInner,
    prev: Option<&CheckpointIndex>,
    from: u64,
    to: u64,
    segment_id: u64,
) -> Result<CheckpointInfo> {
    let disks = &inner.manifest.disks;
    let included: Vec<usize> = (0..disks.len())
        .filter(|&i| disks[i].added_lsn <= to)
        .collect();
    let mut maps = Vec::with_capacity(included.len());
    for &i in &included {
        let size = match prev.and_then(|p| p.disk(disks[i].disk_id)) {
            Some(entry) => entry.disk_bytes,
            None => inner.base(i)?.header.disk_bytes,
        };
        maps.push(ExtentMap::new(size));
    }
    let overlays = crate::view_build::apply_records(inner, from, to, &included, maps)?;
    let target = Target {
        storage: inner.storage.as_ref(),
        dir: &inner.dir,
        vault_id: inner.header.vault_id,
        seed: inner.seed,
        lsn: to,
        last_segment_id: segment_id,
    };
    let mut out = IndexWriter::create(target, included.len() as u32)?;
    for (&i, overlay) in included.iter().zip(&overlays) {
        if let Err(e) = merge_disk(inner, prev, disks[i].disk_id, overlay, &mut out) {
            out.abandon();
            return Err(e);
        }
    }
    out.finish()
}

/// Writes one disk: the overlay's journal pieces, and where it reads the base, the previous
/// checkpoint's pieces clipped to that range. A previous piece that compaction has since folded
/// into the base (its LSN at or below the base's) is left out: the base holds its bytes.
fn merge_disk(
    inner: &VaultInner,
    prev: Option<&CheckpointIndex>,
    disk_id: u32,
    overlay: &ExtentMap,
    out: &mut IndexWriter<'_>,
) -> Result<()> {
    out.begin_disk(disk_id, overlay.size())?;
    let base_lsn = inner.manifest.base_lsn;
    let mut below = match prev {
        Some(p) => Some(p.pieces(disk_id, 0..u64::MAX)?),
        None => None,
    };
    let mut pending: Option<CheckpointPiece> = None;
    for (start, piece) in overlay.iter() {
        let source = match piece.source {
            Source::Base => {
                let Some(below) = below.as_mut() else {
                    continue;
                };
                // Previous pieces ending at or before `start` lie under journal pieces.
                loop {
                    let p = match pending.take() {
                        Some(p) => p,
                        None => match below.next() {
                            Some(p) => p?,
                            None => break,
                        },
                    };
                    if p.start + p.len <= start {
                        continue;
                    }
                    if p.start >= piece.end {
                        pending = Some(p);
                        break;
                    }
                    let folded = matches!(p.source, PieceSource::Record(r) if r.lsn <= base_lsn);
                    if !folded {
                        out.push(clip(&p, start, piece.end))?;
                    }
                    if p.start + p.len > piece.end {
                        pending = Some(p);
                        break;
                    }
                }
                continue;
            }
            Source::Zero => PieceSource::Zero,
            Source::Record(r) => super::record_piece(inner, &r),
        };
        out.push(CheckpointPiece {
            start,
            len: piece.end - start,
            source,
        })?;
    }
    Ok(())
}

/// `p` cut to `[start, end)` (which overlaps it), its data offset moved with its start.
pub(crate) fn clip(p: &CheckpointPiece, start: u64, end: u64) -> CheckpointPiece {
    let s = p.start.max(start);
    let e = (p.start + p.len).min(end);
    let source = match p.source {
        PieceSource::Zero => PieceSource::Zero,
        PieceSource::Record(r) => PieceSource::Record(RecordPiece {
            data_offset: r.data_offset + (s - p.start) as u32,
            ..r
        }),
    };
    CheckpointPiece {
        start: s,
        len: e - s,
        source,
    }
}
