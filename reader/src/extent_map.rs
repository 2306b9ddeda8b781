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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(id: u32, length: u32) -> Source {
        Source::Record(RecordRef {
            segment_index: 0,
            record_offset: 4096 + u64::from(id) * 100,
            lsn: u64::from(id),
            disk_offset: 0,
            length,
            stored_len: length,
            record_crc: id,
            flags: 0,
            data_offset: 0,
        })
    }

    /// What each byte reads as, for comparing with the naive model: (tag, offset in source).
    fn expand(map: &ExtentMap) -> Vec<(i64, u64)> {
        let mut out = Vec::with_capacity(map.size() as usize);
        let mut expected_start = 0;
        for (start, piece) in map.iter() {
            assert_eq!(start, expected_start, "pieces must tile the disk");
            assert!(piece.end > start);
            for at in start..piece.end {
                out.push(match piece.source {
                    Source::Base => (-1, at),
                    Source::Zero => (-2, 0),
                    Source::Record(r) => (r.lsn as i64, u64::from(r.data_offset) + at - start),
                });
            }
            expected_start = piece.end;
        }
        assert_eq!(expected_start, map.size());
        out
    }

    #[test]
    fn a_new_map_reads_everything_from_the_base() {
        let map = ExtentMap::new(100);
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            vec![(
                0,
                Piece {
                    end: 100,
                    source: Source::Base
                }
            )]
        );
        assert!(ExtentMap::new(100).is_empty());
        assert_eq!(ExtentMap::new(0).iter().count(), 0);
    }

    #[test]
    fn an_insert_inside_a_piece_splits_it_in_three() {
        let mut map = ExtentMap::new(100);
        map.insert(10, 20, Source::Zero);
        let starts: Vec<_> = map.iter().map(|(s, p)| (s, p.end)).collect();
        assert_eq!(starts, vec![(0, 10), (10, 20), (20, 100)]);
    }

    #[test]
    fn splitting_a_record_piece_moves_the_data_offset_of_the_tail() {
        let mut map = ExtentMap::new(100);
        map.insert(10, 60, record(1, 50));
        map.insert(20, 30, Source::Zero);
        let tail = map.iter().find(|(s, _)| *s == 30).unwrap().1;
        match tail.source {
            Source::Record(r) => assert_eq!(r.data_offset, 20),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn overwriting_the_same_range_keeps_the_piece_count_bounded() {
        let mut map = ExtentMap::new(1 << 40);
        for i in 1..1000u32 {
            map.insert(4096, 8192, record(i, 4096));
        }
        assert_eq!(map.len(), 1);
        assert_eq!(map.iter().count(), 3);
        map.insert(4096, 8192, Source::Base);
        assert_eq!(map.len(), 0);
        assert_eq!(
            map.iter().count(),
            1,
            "base next to base reads as one piece"
        );
    }

    #[test]
    fn pieces_in_clips_to_the_range_and_adjusts_offsets() {
        let mut map = ExtentMap::new(100);
        map.insert(10, 60, record(1, 50));
        let got: Vec<_> = map.pieces_in(15, 70).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 15);
        assert_eq!(got[0].1.end, 60);
        assert!(matches!(got[0].1.source, Source::Record(r) if r.data_offset == 5));
        assert_eq!(
            (got[1].0, got[1].1.end, got[1].1.source),
            (60, 70, Source::Base)
        );
        assert_eq!(map.pieces_in(0, 100).count(), 3);
        assert_eq!(map.pieces_in(20, 30).count(), 1);
    }

    #[test]
    fn a_grown_map_reads_zeros_past_its_old_end_and_only_the_base_below_it() {
        let mut map = ExtentMap::new(100);
        map.insert(90, 100, record(1, 10));
        map.grow(250);
        assert_eq!(map.size(), 250);
        let pieces: Vec<_> = map.iter().map(|(s, p)| (s, p.end, p.source)).collect();
        assert_eq!(pieces[0], (0, 90, Source::Base));
        assert_eq!((pieces[1].0, pieces[1].1), (90, 100));
        assert_eq!(pieces[2], (100, 250, Source::Zero));
        assert!(map.base_reads_within(90) && !map.base_reads_within(50));
        map.insert(150, 200, Source::Base);
        assert!(!map.base_reads_within(100), "a base piece past the old end");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn inserts_match_a_naive_byte_model(
            size in 1u64..300,
            ops in prop::collection::vec((0u64..300, 1u64..120, 0u8..3), 0..60),
        ) {
            let mut map = ExtentMap::new(size);
            let mut model: Vec<(i64, u64)> = (0..size).map(|at| (-1, at)).collect();
            for (i, (start, len, kind)) in ops.into_iter().enumerate() {
                let start = start % size;
                let end = (start + len).min(size);
                let lsn = i as u64 + 1;
                let source = match kind {
                    0 => Source::Zero,
                    1 => Source::Base,
                    _ => record(lsn as u32, (end - start) as u32),
                };
                map.insert(start, end, source);
                for at in start..end {
                    model[at as usize] = match source {
                        Source::Base => (-1, at),
                        Source::Zero => (-2, 0),
                        Source::Record(_) => (lsn as i64, at - start),
                    };
                }
                prop_assert_eq!(&expand(&map), &model);
                let pieces: Vec<_> = map.iter().collect();
                for pair in pieces.windows(2) {
                    prop_assert!(!pair[0].1.source.continues_into(pair[0].1.end - pair[0].0, pair[1].1.source),
                        "adjacent pieces that read as one must be merged");
                }
            }
            let a = size / 3;
            let b = (2 * size / 3).max(a + 1).min(size);
            let mut clipped = Vec::new();
            for (start, piece) in map.pieces_in(a, b) {
                for at in start..piece.end {
                    clipped.push(match piece.source {
                        Source::Base => (-1, at),
                        Source::Zero => (-2, 0),
                        Source::Record(r) => (r.lsn as i64, u64::from(r.data_offset) + at - start),
                    });
                }
            }
            prop_assert_eq!(&clipped[..], &model[a as usize..b as usize]);
        }
    }
}
