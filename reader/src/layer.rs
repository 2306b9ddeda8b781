//! Layered views: a disk read as a small in-memory extent map of the journal's tail laid over a
//! lower layer that holds everything up to a checkpoint.
//!
//! A [`Lower`] answers, for a range of a disk, its pieces in disk order (base ranges included),
//! each clipped to the range. A view in memory has no lower layer (its one map holds every
//! piece); a layered view's tail map holds only the records after its checkpoint, and a piece
//! the tail leaves to the base falls through to the lower layer. [`Merged`] walks both in one
//! pass: a two-way merge of sorted sources that holds one lower iterator at a time, so its memory
//! does not depend on how many pieces either holds. It also joins neighbours that read as one, so
//! a layered view lists exactly the pieces its in-memory twin lists.

use std::fmt;
use std::sync::Arc;

use crate::error::Result;
use crate::extent_map::{ExtentMap, Piece, Source};

/// Pieces of a lower layer in disk order, as `(start, piece)`.
pub(crate) type LowerPieces<'a> = Box<dyn Iterator<Item = Result<(u64, Piece)>> + Send + 'a>;

/// The layer a view's tail map lies over: every piece of one disk up to a checkpoint.
pub(crate) trait Lower: fmt::Debug + Send + Sync {
    /// The disk's size at the checkpoint: the tail covers anything past it.
    fn size(&self) -> u64;

    /// The pieces overlapping `[start, end)`, clipped to it, in disk order, ranges no piece
    /// covers as base pieces: one lookup of `start`, then a walk forward.
    fn pieces(&self, start: u64, end: u64) -> LowerPieces<'_>;

    /// Bytes this layer keeps on the heap.
    fn memory_bytes(&self) -> usize;
}

impl Lower for ExtentMap {
    fn size(&self) -> u64 {
        ExtentMap::size(self)
    }

    fn pieces(&self, start: u64, end: u64) -> LowerPieces<'_> {
        Box::new(self.pieces_in(start, end).map(Ok))
    }

    fn memory_bytes(&self) -> usize {
        let m = self.memory();
        m.piece_bytes + m.record_bytes + size_of::<ExtentMap>()
    }
}

/// How a view holds its disks' extent maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewMode {
    /// One map per disk in memory holds every piece.
    InMemory,
    /// Each disk is a map of the journal after checkpoint `checkpoint_lsn` over that checkpoint.
    Layered {
        /// The LSN of the checkpoint the tail lies over.
        checkpoint_lsn: u64,
    },
}

impl ViewMode {
    /// `in-memory` or `layered`, for reports.
    pub fn name(self) -> &'static str {
        match self {
            ViewMode::InMemory => "in-memory",
            ViewMode::Layered { .. } => "layered",
        }
    }
}

/// The default [`ViewOptions::memory_limit_bytes`]: 1 GiB, about 8 x 10^6 pieces in memory.
pub const MEMORY_LIMIT_BYTES_DEFAULT: u64 = 1 << 30;

/// How to build a view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewOptions {
    /// The heap a view's extent maps may take. A view whose maps are estimated to fit is built
    /// in memory as one map per disk; a larger one is layered over a checkpoint searched on
    /// disk, with only the journal after the checkpoint in memory (a new checkpoint nearer the
    /// point is written first when even that would not fit). 0 always layers.
    pub memory_limit_bytes: u64,
}

impl Default for ViewOptions {
    fn default() -> ViewOptions {
        ViewOptions {
            memory_limit_bytes: MEMORY_LIMIT_BYTES_DEFAULT,
        }
    }
}

/// A disk's pieces: its map's, with the ranges the map leaves to the base taken from `lower`
/// where there is one; neighbours that read as one joined.
pub(crate) struct Merged<'a, T: Iterator<Item = (u64, Piece)>> {
    tail: T,
    lower: Option<&'a Arc<dyn Lower>>,
    below: Option<LowerPieces<'a>>,
    /// A piece that may still grow by its successor.
    pending: Option<(u64, Piece)>,
}

impl<'a, T: Iterator<Item = (u64, Piece)>> Merged<'a, T> {
    pub(crate) fn new(tail: T, lower: Option<&'a Arc<dyn Lower>>) -> Merged<'a, T> {
        Merged {
            tail,
            lower,
            below: None,
            pending: None,
        }
    }

    /// The next piece of the two layers, not yet joined with its neighbours.
    fn next_raw(&mut self) -> Option<Result<(u64, Piece)>> {
        loop {
            if let Some(below) = &mut self.below {
                match below.next() {
                    Some(item) => return Some(item),
                    None => self.below = None,
                }
            }
            let (start, piece) = self.tail.next()?;
            match (piece.source, self.lower) {
                (Source::Base, Some(lower)) if start < lower.size() => {
                    // Past the checkpoint's size the tail covers everything (a resize's zeros
                    // or later writes), so a base piece there is only an empty map's filler.
                    self.below = Some(lower.pieces(start, piece.end.min(lower.size())));
                }
                _ => return Some(Ok((start, piece))),
            }
        }
    }
}

impl<T: Iterator<Item = (u64, Piece)>> Iterator for Merged<'_, T> {
    type Item = Result<(u64, Piece)>;

    fn next(&mut self) -> Option<Result<(u64, Piece)>> {
        loop {
            let next = match self.next_raw() {
                Some(Ok(next)) => next,
                Some(Err(e)) => return Some(Err(e)),
                None => return self.pending.take().map(Ok),
            };
            match self.pending {
                None => self.pending = Some(next),
                Some((start, piece)) if continues(start, piece, next) => {
                    self.pending = Some((
                        start,
                        Piece {
                            end: next.1.end,
                            ..piece
                        },
                    ));
                }
                Some(done) => {
                    self.pending = Some(next);
                    return Some(Ok(done));
                }
            }
        }
    }
}

/// Whether `next` starts where `(start, piece)` ends and reads as its continuation: both zeros,
/// both base, or the same record at the following data offset.
pub(crate) fn continues(start: u64, piece: Piece, next: (u64, Piece)) -> bool {
    if next.0 != piece.end {
        return false;
    }
    match (piece.source, next.1.source) {
        (Source::Zero, Source::Zero) | (Source::Base, Source::Base) => true,
        (Source::Record(a), Source::Record(b)) => {
            let advanced = u64::from(a.data_offset) + (piece.end - start);
            u64::from(b.data_offset) == advanced
                && crate::extent_map::RecordRef {
                    data_offset: b.data_offset,
                    ..a
                } == b
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent_map::RecordRef;

    fn record(lsn: u64, disk_offset: u64, length: u32) -> Source {
        Source::Record(RecordRef {
            segment_index: 0,
            record_offset: 4096 * lsn,
            lsn,
            disk_offset,
            length,
            stored_len: length,
            record_crc: lsn as u32,
            flags: 0,
            data_offset: 0,
        })
    }

    /// Applies `ops` to one map, and the first `split` of them to a lower map and the rest to a
    /// tail over it: both must list the same pieces over every range.
    fn same_pieces(size: u64, ops: &[(u64, u64, u8)], split: usize) {
        let mut whole = ExtentMap::new(size);
        let mut lower = ExtentMap::new(size);
        let mut tail = ExtentMap::new(size);
        for (i, &(start, len, kind)) in ops.iter().enumerate() {
            let start = start % size;
            let end = (start + len).min(size);
            let source = match kind {
                0 => Source::Zero,
                _ => record(i as u64 + 1, start, (end - start) as u32),
            };
            whole.insert(start, end, source);
            let layer = if i < split { &mut lower } else { &mut tail };
            layer.insert(start, end, source);
        }
        let lower: Arc<dyn Lower> = Arc::new(lower);
        for (a, b) in [(0, size), (size / 3, size / 2 + 1), (size - 1, size)] {
            let merged: Vec<_> = Merged::new(tail.pieces_in(a, b), Some(&lower))
                .map(|r| r.unwrap())
                .collect();
            let expected: Vec<_> = whole.pieces_in(a, b).collect();
            assert_eq!(
                merged, expected,
                "range {a}..{b} of {ops:?} split at {split}"
            );
        }
    }

    #[test]
    fn a_tail_over_a_lower_map_lists_the_pieces_of_one_map() {
        let mut x = 11u64;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        for round in 0..200 {
            let size = 1 + next() % 400;
            let ops: Vec<_> = (0..1 + round % 40)
                .map(|_| (next() % size, 1 + next() % 90, (next() % 3) as u8))
                .collect();
            let split = next() as usize % (ops.len() + 1);
            same_pieces(size, &ops, split);
        }
    }

    #[test]
    fn neighbouring_zero_pieces_of_the_two_layers_are_joined() {
        // Zeros below [0, 10) and in the tail at [10, 20): one piece, as one map would hold.
        same_pieces(30, &[(0, 10, 0), (10, 10, 0)], 1);
        // A record cut by a tail write keeps its two parts apart.
        same_pieces(30, &[(0, 30, 1), (10, 5, 0)], 1);
    }
}
