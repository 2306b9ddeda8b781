//! The extent map as it was before the compact one (a `BTreeMap` of fat pieces), kept only
//! for `extent_map` benchmark to compare against. Unchanged but for this line and dead code.
//!
//! The extent map of one disk at one point: which source holds each byte range, as disjoint
//! pieces keyed by their start.
//!
//! A map starts as one piece covering the whole disk from its base. Applying the journal's write
//! and zero records in LSN order with [`ExtentMap::insert`] leaves, for every byte, the last
//! record that touched it. Memory is proportional to the number of pieces (at most three new
//! pieces per insert, fewer after merging), never to the size of the disk. A resize record
//! grows the map ([`ExtentMap::grow`]): the new range has no base and reads as zeros.

use std::collections::BTreeMap;

/// Where the bytes of a journal piece live: a range of one write record's logical data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef {
    /// Index of the segment in the vault's segment list.
    pub segment_index: u32,
    /// Where the record's header starts in its segment.
    pub record_offset: u64,
    /// The record's LSN, checked against the header when the record is read.
    pub lsn: u64,
    /// Where the record writes on the disk, checked against the header.
    pub disk_offset: u64,
    /// The record's logical length.
    pub length: u32,
    /// Payload bytes after the header.
    pub stored_len: u32,
    /// The record's CRC, as the index promised it.
    pub record_crc: u32,
    /// The record's flags (LZ4).
    pub flags: u8,
    /// Offset, within the record's logical data, of the piece's first byte.
    pub data_offset: u32,
}

/// The source of a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The disk's base image, at the same disk offset.
    Base,
    /// Zeros, from a zero record.
    Zero,
    /// The logical data of a write record.
    Record(RecordRef),
}

impl Source {
    /// The source of the byte `by` bytes after a piece with this source starts.
    fn advanced(self, by: u64) -> Source {
        match self {
            Source::Record(r) => {
                let data_offset = u64::from(r.data_offset) + by;
                assert!(
                    data_offset < u64::from(r.length),
                    "a piece runs past its record"
                );
                Source::Record(RecordRef {
                    data_offset: data_offset as u32,
                    ..r
                })
            }
            other => other,
        }
    }

    /// Whether a piece with source `next` can extend a piece of `len` bytes with this source.
    fn continues_into(self, len: u64, next: Source) -> bool {
        match (self, next) {
            (Source::Base, Source::Base) | (Source::Zero, Source::Zero) => true,
            (Source::Record(_), Source::Record(_)) => self.advanced_unchecked(len) == next,
            _ => false,
        }
    }

    fn advanced_unchecked(self, by: u64) -> Source {
        match self {
            Source::Record(r) => {
                let data_offset = u64::from(r.data_offset) + by;
                Source::Record(RecordRef {
                    data_offset: data_offset.min(u64::from(u32::MAX)) as u32,
                    ..r
                })
            }
            other => other,
        }
    }
}

/// One piece: bytes `[start, end)` come from `source`; the start is the map key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// One past the last byte of the piece.
    pub end: u64,
    /// Where its bytes come from.
    pub source: Source,
}

/// Disjoint pieces covering `[0, size)`. Only pieces that do not read from the base are
/// stored: every range between them reads from the base, so a disk with a few scattered writes
/// costs one entry per write, not three.
#[derive(Clone, Debug)]
pub struct ExtentMap {
    size: u64,
    /// Pieces whose source is not [`Source::Base`], keyed by their start.
    pieces: BTreeMap<u64, Piece>,
}

impl ExtentMap {
    /// A map of a disk of `size` bytes that reads entirely from its base.
    pub fn new(size: u64) -> ExtentMap {
        ExtentMap {
            size,
            pieces: BTreeMap::new(),
        }
    }

    /// The size of the disk the map covers.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The number of pieces that do not read from the base (journal and zero pieces).
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether every byte reads from the base.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Grows the disk to `new_size` bytes, as a resize record does: the grown range reads as
    /// zeros (the base holds only the old size) until a later record writes it. Callers check
    /// that the disk grows; a shrink is a bug.
    pub fn grow(&mut self, new_size: u64) {
        assert!(
            new_size > self.size,
            "a disk of {} bytes grows, it does not become {new_size}",
            self.size
        );
        let old_size = self.size;
        self.size = new_size;
        self.insert(old_size, new_size, Source::Zero);
    }

    /// Whether every range that reads from the base lies below `base_bytes`: a map that grew
    /// past its base covers the grown range with zero or journal pieces.
    pub fn base_reads_within(&self, base_bytes: u64) -> bool {
        base_bytes >= self.size
            || self
                .pieces_in(base_bytes, self.size)
                .all(|(_, p)| p.source != Source::Base)
    }

    /// Makes `[start, end)` come from `source`, replacing and splitting whatever covered it.
    /// Callers check the range against the disk; a range outside it is a bug.
    pub fn insert(&mut self, start: u64, end: u64, source: Source) {
        assert!(
            start < end && end <= self.size,
            "range {start}..{end} outside the disk of {} bytes",
            self.size
        );
        self.split_at(start);
        self.split_at(end);
        while let Some((&key, _)) = self.pieces.range(start..end).next() {
            self.pieces.remove(&key);
        }
        if source == Source::Base {
            return;
        }
        self.pieces.insert(start, Piece { end, source });
        self.merge_with_next(start);
        if let Some((&prev, _)) = self.pieces.range(..start).next_back() {
            self.merge_with_next(prev);
        }
    }

    /// Ensures no stored piece spans `at`: one that does is cut in two there.
    fn split_at(&mut self, at: u64) {
        let Some((&key, &piece)) = self.pieces.range(..=at).next_back() else {
            return;
        };
        if key == at || piece.end <= at {
            return;
        }
        self.pieces.insert(
            key,
            Piece {
                end: at,
                source: piece.source,
            },
        );
        self.pieces.insert(
            at,
            Piece {
                end: piece.end,
                source: piece.source.advanced(at - key),
            },
        );
    }

    /// Merges the piece starting at `key` with the next one when they touch and read as one.
    fn merge_with_next(&mut self, key: u64) {
        let piece = self.pieces[&key];
        let Some(&next) = self.pieces.get(&piece.end) else {
            return;
        };
        if piece.source.continues_into(piece.end - key, next.source) {
            self.pieces.remove(&piece.end);
            self.pieces.insert(
                key,
                Piece {
                    end: next.end,
                    source: piece.source,
                },
            );
        }
    }

    /// Every piece in disk order, as `(start, piece)`, base ranges included.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Piece)> + '_ {
        self.pieces_in(0, self.size)
    }

    /// The pieces overlapping `[start, end)`, clipped to it, as `(start, piece)`, base ranges
    /// included: a clipped journal piece has its data offset moved to match its new start.
    pub fn pieces_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, Piece)> + '_ {
        let end = end.min(self.size);
        let first = self
            .pieces
            .range(..=start)
            .next_back()
            .map_or(start, |(&k, _)| k);
        let stored = self
            .pieces
            .range(first..end.max(first))
            .filter(move |(_, p)| p.end > start)
            .map(move |(&k, &p)| {
                let clipped_start = k.max(start);
                let source = p.source.advanced(clipped_start - k);
                (
                    clipped_start,
                    Piece {
                        end: p.end.min(end),
                        source,
                    },
                )
            })
            .peekable();
        WithGaps {
            stored,
            at: start,
            end,
        }
    }
}

/// Fills the ranges between stored pieces with base pieces.
struct WithGaps<I: Iterator<Item = (u64, Piece)>> {
    stored: std::iter::Peekable<I>,
    /// Where the next piece starts.
    at: u64,
    end: u64,
}

impl<I: Iterator<Item = (u64, Piece)>> Iterator for WithGaps<I> {
    type Item = (u64, Piece);

    fn next(&mut self) -> Option<(u64, Piece)> {
        if self.at >= self.end {
            return None;
        }
        let gap_end = match self.stored.peek() {
            Some(&(start, _)) if start <= self.at => {
                let (start, piece) = self.stored.next().expect("peeked");
                self.at = piece.end;
                return Some((start, piece));
            }
            Some(&(start, _)) => start,
            None => self.end,
        };
        let start = self.at;
        self.at = gap_end;
        Some((
            start,
            Piece {
                end: gap_end,
                source: Source::Base,
            },
        ))
    }
}

/// Builds a map from pieces given in increasing disk order, such as a checkpoint holds; the
/// ranges between them read from the base. One append per piece.
#[derive(Debug)]
pub struct SortedBuilder {
    map: ExtentMap,
    at: u64,
}

impl SortedBuilder {
    /// A builder for a disk of `size` bytes.
    pub fn new(size: u64) -> SortedBuilder {
        SortedBuilder {
            map: ExtentMap::new(size),
            at: 0,
        }
    }

    /// Appends `[start, end)` read from `source`; false, appending nothing, if the piece is
    /// empty, starts before the end of the previous one, or runs past the disk.
    pub fn push(&mut self, start: u64, end: u64, source: Source) -> bool {
        if start < self.at || end <= start || end > self.map.size {
            return false;
        }
        if source != Source::Base {
            self.map.pieces.insert(start, Piece { end, source });
        }
        self.at = end;
        true
    }

    /// The map, the rest of the disk reading from the base.
    pub fn finish(self) -> ExtentMap {
        self.map
    }
}
