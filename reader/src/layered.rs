//! Building a layered view: each disk's records after a checkpoint in a small in-memory map,
//! laid over that checkpoint (`layer`).
//!
//! The view starts from the newest checkpoint at or before its LSN (or the bases) and applies
//! the journal after it segment by segment, reading each sealed footer once and dropping it
//! (`SegmentSlot::with_extents`). At the end of each sealed segment it checks what the tail
//! maps take: past the budget, it writes a checkpoint there (any process may; it is derived
//! data, written atomically) from the layers it has, lays a fresh tail over it and goes on. At
//! the last sealed end before the point the budget is the limit; at earlier ends it is at least
//! [`TAIL_BYTES_MIN`], so that a budget of 0 writes one checkpoint per view (plus one per
//! [`TAIL_BYTES_MIN`] of tail in a vault whose checkpoints were not kept current), not one per
//! segment. A checkpoint that cannot be written (a read-only vault) leaves the tail in memory,
//! past the budget: the view is still exact.
//!
//! Memory: the tail maps (bounded by the budget, or [`TAIL_BYTES_MIN`], plus one segment's
//! records: a segment's records cannot be split by a checkpoint) plus one segment's footer
//! while it is applied, plus the lower layers.

use std::sync::Arc;

use replog_format::checkpoint::CHECKPOINT_HEADER_BYTES;

use crate::base_image::BaseImage;
use crate::checkpoint::{self, CheckpointIndex};
use crate::disk_reader::DiskView;
use crate::error::{ReadError, Result};
use crate::extent_map::{ExtentMap, Piece, Source};
use crate::layer::{Lower, LowerPieces, ViewMode, ViewOptions};
use crate::point_view::PointView;
use crate::vault::{Vault, VaultInner};
use crate::view_build::{MapBuilder, Start};

/// The tail a view keeps in memory before it writes a checkpoint at the end of a sealed
/// segment that is not the last before its point, whatever the budget: about 10^6 pieces.
pub const TAIL_BYTES_MIN: u64 = 64 << 20;

/// The layers below the tail maps: one per disk of the view, from one checkpoint.
struct Lowers {
    /// The checkpoint's LSN, or the base LSN when there is none.
    lsn: u64,
    checkpoint: bool,
    /// By position among the view's disks; `None` reads the base.
    layers: Vec<Option<Arc<dyn Lower>>>,
}

impl Lowers {
    /// The bases alone.
    fn bases(inner: &VaultInner, disks: usize) -> Lowers {
        Lowers {
            lsn: inner.manifest.base_lsn,
            checkpoint: false,
            layers: vec![None; disks],
        }
    }

    /// Checkpoint `lsn`, which ends segment `segment_id`, opened in place for the disks of
    /// `start`: its header and directory are read and checked against the manifest now, its
    /// blocks as reads reach them.
    fn checkpoint(inner: &VaultInner, start: &Start, segment_id: u64, lsn: u64) -> Result<Lowers> {
        let index = checkpoint::open_ending(
            inner.storage.as_ref(),
            &inner.dir,
            inner.header.vault_id,
            inner.seed,
            lsn,
            segment_id,
        )?;
        let rel = index.path().to_path_buf();
        let segment_ids: Arc<[u64]> = inner.segments.iter().map(|s| s.id).collect();
        let ctx = checkpoint::LoadCtx::of(inner, &segment_ids);
        let mut layers: Vec<Option<Arc<dyn Lower>>> = vec![None; start.included.len()];
        let index = Arc::new(index);
        for (i, entry) in index.disks().iter().enumerate() {
            let at = (CHECKPOINT_HEADER_BYTES + i * 32) as u64;
            let position = checkpoint::disk_position(&ctx, &start.included, entry, &rel, at)?;
            let base_bytes = start.base_bytes[position];
            if entry.disk_bytes < base_bytes {
                return Err(ReadError::damaged(
                    &rel,
                    at,
                    format!(
                        "disk {} of {} bytes is smaller than its base of {base_bytes} bytes",
                        entry.disk_id, entry.disk_bytes
                    ),
                ));
            }
            layers[position] = Some(Arc::new(CheckpointLayer {
                index: index.clone(),
                disk_id: entry.disk_id,
                disk_bytes: entry.disk_bytes,
                base_bytes,
                base_lsn: inner.manifest.base_lsn,
                segment_ids: segment_ids.clone(),
                charges_index: i == 0,
            }));
        }
        Ok(Lowers {
            lsn,
            checkpoint: true,
            layers,
        })
    }

    /// Empty tail maps, each the size its disk has at the lower layers' LSN.
    fn tails(&self, start: &Start) -> Vec<ExtentMap> {
        self.layers
            .iter()
            .zip(&start.base_bytes)
            .map(|(layer, &b)| ExtentMap::new(layer.as_ref().map_or(b, |l| l.size())))
            .collect()
    }
}

/// Heap bytes of the tail maps.
fn tail_bytes(maps: &[ExtentMap]) -> u64 {
    let settled: u64 = maps
        .iter()
        .map(|m| {
            let memory = m.memory();
            (memory.piece_bytes + memory.record_bytes) as u64
        })
        .sum();
    // While it grows, a map takes about twice what it settles at (its sorted array is copied
    // when the overlay is merged into it; 128 against 68 bytes a scattered piece): the budget
    // bounds that peak. Measured: a middle point of 10^8 records whose tail settled at 844 MB
    // peaked at 1469 MiB of RSS when the settled size alone was held to the budget.
    settled.saturating_mul(2)
}

/// The view at `lsn`, layered; see the module documentation.
pub(crate) fn view(vault: &Vault, lsn: u64, start: Start, opts: &ViewOptions) -> Result<PointView> {
    let inner = &vault.inner;
    let base_lsn = inner.manifest.base_lsn;
    let bases = start
        .included
        .iter()
        .map(|&i| inner.base(i))
        .collect::<Result<Vec<_>>>()?;
    // The journal is the authority: a checkpoint that does not load is passed over.
    let mut lower = start
        .checkpoint
        .and_then(|(segment_id, cp_lsn)| Lowers::checkpoint(inner, &start, segment_id, cp_lsn).ok())
        .unwrap_or_else(|| Lowers::bases(inner, start.included.len()));
    let mut builder = MapBuilder {
        inner,
        lsn,
        start_lsn: lower.lsn,
        included: &start.included,
        maps: lower.tails(&start),
    };
    if lsn > base_lsn {
        builder.check_coverage(base_lsn)?;
    }
    let last_end = inner
        .segments
        .iter()
        .filter(|s| s.is_sealed() && s.last_lsn() <= lsn)
        .map(|s| s.last_lsn())
        .next_back();
    let ctx = inner.segment_ctx();
    for (index, slot) in inner.segments.iter().enumerate() {
        if slot.first_lsn > lsn {
            break;
        }
        if slot.last_lsn() <= builder.start_lsn {
            continue;
        }
        slot.with_extents(&ctx, |extents| builder.apply_extents(index, slot, extents))??;
        let end = slot.last_lsn();
        if !slot.is_sealed() || end > lsn {
            continue;
        }
        let limit = if Some(end) == last_end {
            opts.memory_limit_bytes
        } else {
            opts.memory_limit_bytes.max(TAIL_BYTES_MIN)
        };
        if tail_bytes(&builder.maps) > limit {
            let maps = std::mem::take(&mut builder.maps);
            let at = Boundary {
                lsn: end,
                segment_id: slot.id,
            };
            match checkpoint_at(inner, &start, &bases, &lower, maps, at) {
                Ok(next) => {
                    lower = next;
                    builder.maps = lower.tails(&start);
                    builder.start_lsn = end;
                }
                Err(maps) => builder.maps = maps,
            }
        }
    }
    let MapBuilder { mut maps, .. } = builder;
    maps.iter_mut().for_each(ExtentMap::compact);
    let disks = start
        .included
        .iter()
        .zip(maps)
        .zip(bases)
        .zip(lower.layers)
        .map(|(((&index, map), base), layer)| {
            DiskView::new(
                inner.clone(),
                inner.manifest.disks[index].clone(),
                base,
                map,
                layer,
            )
        })
        .collect();
    let (checkpoint_lsn, mode) = if lower.checkpoint {
        let checkpoint_lsn = lower.lsn;
        (Some(checkpoint_lsn), ViewMode::Layered { checkpoint_lsn })
    } else {
        (None, ViewMode::InMemory)
    };
    Ok(PointView {
        vault: inner.clone(),
        lsn,
        point: None,
        disks,
        checkpoint_lsn,
        mode,
    })
}

/// The end of a sealed segment, where a checkpoint may stand.
#[derive(Clone, Copy)]
struct Boundary {
    lsn: u64,
    segment_id: u64,
}

/// Writes the checkpoint at `at` from `lower` and the tail `maps` (which hold every record up
/// to it), and opens it as the next lower layers. On failure the maps come back unchanged, to
/// go on in memory.
fn checkpoint_at(
    inner: &Arc<VaultInner>,
    start: &Start,
    bases: &[Arc<BaseImage>],
    lower: &Lowers,
    maps: Vec<ExtentMap>,
    at: Boundary,
) -> std::result::Result<Lowers, Vec<ExtentMap>> {
    // The checkpoint holds the disks added at or before its LSN; the others keep their maps.
    let mut disks = Vec::new();
    let mut later = Vec::new();
    for (position, map) in maps.into_iter().enumerate() {
        let index = start.included[position];
        let entry = &inner.manifest.disks[index];
        if entry.added_lsn <= at.lsn {
            disks.push(DiskView::new(
                inner.clone(),
                entry.clone(),
                bases[position].clone(),
                map,
                lower.layers[position].clone(),
            ));
        } else {
            later.push((position, map));
        }
    }
    let view = PointView {
        vault: inner.clone(),
        lsn: at.lsn,
        point: None,
        disks,
        checkpoint_lsn: None,
        mode: ViewMode::InMemory,
    };
    let written = checkpoint::write_view(inner, &view, at.segment_id);
    let mut maps: Vec<ExtentMap> = view.disks.into_iter().map(|d| d.into_map()).collect();
    for (position, map) in later {
        maps.insert(position, map);
    }
    match written.and_then(|_| Lowers::checkpoint(inner, start, at.segment_id, at.lsn)) {
        Ok(next) => Ok(next),
        Err(_) => Err(maps),
    }
}

/// One disk of a checkpoint searched in place, as a lower layer.
#[derive(Debug)]
struct CheckpointLayer {
    index: Arc<CheckpointIndex>,
    disk_id: u32,
    /// The disk's size at the checkpoint.
    disk_bytes: u64,
    /// Its base's size: no range past it may read from the base.
    base_bytes: u64,
    /// Record pieces at or below it were folded into the base.
    base_lsn: u64,
    /// The snapshot's segment ids: a record piece's segment index is its position here.
    segment_ids: Arc<[u64]>,
    /// Whether this disk's layer reports the index's shared cache in its memory.
    charges_index: bool,
}

impl Lower for CheckpointLayer {
    fn size(&self) -> u64 {
        self.disk_bytes
    }

    fn pieces(&self, start: u64, end: u64) -> LowerPieces<'_> {
        let end = end.min(self.disk_bytes).max(start);
        match self.index.pieces(self.disk_id, start..end) {
            Ok(pieces) => Box::new(WithBase {
                layer: self,
                pieces,
                next: None,
                at: start,
                end,
            }),
            Err(e) => Box::new(std::iter::once(Err(e))),
        }
    }

    fn memory_bytes(&self) -> usize {
        let shared = if self.charges_index {
            self.index.cache_stats().bytes + size_of::<CheckpointIndex>()
        } else {
            0
        };
        shared + size_of::<CheckpointLayer>()
    }
}

impl CheckpointLayer {
    /// The piece `p` (read at `at` of the file) stands for in this snapshot, clipped to
    /// `[start, end)`.
    fn piece(
        &self,
        p: &replog_format::checkpoint::CheckpointPiece,
        at: u64,
        start: u64,
        end: u64,
    ) -> Result<(u64, Piece)> {
        let source = match p.source {
            replog_format::checkpoint::PieceSource::Zero => Source::Zero,
            replog_format::checkpoint::PieceSource::Record(r) if r.lsn <= self.base_lsn => {
                Source::Base
            }
            replog_format::checkpoint::PieceSource::Record(r) => {
                let Ok(index) = self.segment_ids.binary_search(&r.segment_id) else {
                    return Err(ReadError::damaged(
                        self.index.path(),
                        at,
                        format!(
                            "a piece reads segment {}, which the manifest does not list",
                            r.segment_id
                        ),
                    ));
                };
                Source::Record(crate::extent_map::RecordRef {
                    segment_index: index as u32,
                    record_offset: r.record_offset,
                    lsn: r.lsn,
                    disk_offset: p.start - u64::from(r.data_offset),
                    length: r.length,
                    stored_len: r.stored_len,
                    record_crc: r.record_crc,
                    flags: r.flags,
                    data_offset: r.data_offset,
                })
            }
        };
        let s = p.start.max(start);
        let source = match source {
            Source::Record(r) => Source::Record(crate::extent_map::RecordRef {
                data_offset: r.data_offset + (s - p.start) as u32,
                ..r
            }),
            other => other,
        };
        Ok((
            s,
            Piece {
                end: (p.start + p.len).min(end),
                source,
            },
        ))
    }

    /// A base piece `[start, end)`, refused where it lies past the base: the grown range of a
    /// resized disk must be covered by pieces.
    fn base(&self, start: u64, end: u64) -> Result<(u64, Piece)> {
        if end > self.base_bytes {
            return Err(ReadError::damaged(
                self.index.path(),
                0,
                format!(
                    "disk {} reads bytes {}..{end} from its base of {} bytes",
                    self.disk_id,
                    start.max(self.base_bytes),
                    self.base_bytes
                ),
            ));
        }
        Ok((
            start,
            Piece {
                end,
                source: Source::Base,
            },
        ))
    }
}

/// A checkpoint disk's pieces over a range, clipped, with the ranges between them as base
/// pieces.
struct WithBase<'a> {
    layer: &'a CheckpointLayer,
    pieces: checkpoint::Pieces<'a>,
    /// A piece read but not yet returned (a base gap came first).
    next: Option<(u64, Piece)>,
    at: u64,
    end: u64,
}

impl Iterator for WithBase<'_> {
    type Item = Result<(u64, Piece)>;

    fn next(&mut self) -> Option<Result<(u64, Piece)>> {
        if self.at >= self.end {
            return None;
        }
        if self.next.is_none() {
            match self.pieces.next() {
                Some(Ok(p)) => {
                    let at = self.pieces.last_offset();
                    match self.layer.piece(&p, at, self.at, self.end) {
                        Ok(piece) => self.next = Some(piece),
                        Err(e) => return self.fail(e),
                    }
                }
                Some(Err(e)) => return self.fail(e),
                None => {}
            }
        }
        let item = match self.next {
            Some((s, _)) if s > self.at => self.layer.base(self.at, s),
            Some(piece) => {
                self.next = None;
                Ok(piece)
            }
            None => self.layer.base(self.at, self.end),
        };
        match item {
            Ok((_, piece)) => {
                self.at = piece.end;
                Some(item)
            }
            Err(e) => self.fail(e),
        }
    }
}

impl WithBase<'_> {
    /// Ends the iteration with `e`.
    fn fail(&mut self, e: ReadError) -> Option<Result<(u64, Piece)>> {
        self.at = self.end;
        Some(Err(e))
    }
}
