//! A map of disjoint byte ranges to values, for the layers the NBD exports put over a point:
//! the copy-on-write overlay (what was written or zeroed) and the capture's writes that the
//! current read view does not hold yet. Ranges not in the map fall through to the layer below.
//!
//! Memory is proportional to the number of ranges, never to the disk: a later insert replaces
//! whatever it covers, and neighbours that read as one are merged.

use std::collections::BTreeMap;

/// A value that can be split: the value of the byte `by` bytes into a range that has `self`.
pub trait Piece: Clone {
    /// The value of the range's tail starting `by` bytes in.
    fn advanced(&self, by: u64) -> Self;
    /// Whether a range of `len` bytes with `self` followed by one with `next` reads as one.
    fn continues_into(&self, len: u64, next: &Self) -> bool;
}

/// Disjoint ranges `[start, end)` keyed by start.
#[derive(Debug)]
pub struct RangeMap<V> {
    ranges: BTreeMap<u64, (u64, V)>,
}

impl<V> Default for RangeMap<V> {
    fn default() -> Self {
        RangeMap {
            ranges: BTreeMap::new(),
        }
    }
}

impl<V: Piece> RangeMap<V> {
    /// Gives `[start, end)` the value `value`, replacing what was there.
    pub fn insert(&mut self, start: u64, end: u64, value: V) {
        assert!(start < end, "an empty range {start}..{end}");
        self.split_at(start);
        self.split_at(end);
        let covered: Vec<u64> = self.ranges.range(start..end).map(|(&k, _)| k).collect();
        for k in covered {
            self.ranges.remove(&k);
        }
        self.ranges.insert(start, (end, value));
        self.merge_with_next(start);
        if let Some((&prev, _)) = self.ranges.range(..start).next_back() {
            self.merge_with_next(prev);
        }
    }

    /// The ranges overlapping `[start, end)`, clipped to it, in order, as `(start, end, value)`.
    pub fn pieces_in(&self, start: u64, end: u64) -> Vec<(u64, u64, V)> {
        let first = self
            .ranges
            .range(..=start)
            .next_back()
            .map_or(start, |(&k, _)| k);
        self.ranges
            .range(first..end)
            .filter(|(_, (e, _))| *e > start)
            .map(|(&k, (e, v))| {
                let s = k.max(start);
                (s, (*e).min(end), v.advanced(s - k))
            })
            .collect()
    }

    /// Forgets every range.
    pub fn clear(&mut self) {
        self.ranges.clear();
    }

    /// The number of ranges.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether no range is held.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    fn split_at(&mut self, at: u64) {
        let Some((&k, (end, value))) = self.ranges.range(..at).next_back() else {
            return;
        };
        if *end <= at {
            return;
        }
        let (end, tail) = (*end, value.advanced(at - k));
        self.ranges.get_mut(&k).expect("the range exists").0 = at;
        self.ranges.insert(at, (end, tail));
    }

    fn merge_with_next(&mut self, k: u64) {
        let (end, value) = self.ranges[&k].clone();
        let Some((next_end, next)) = self.ranges.get(&end) else {
            return;
        };
        if value.continues_into(end - k, next) {
            let next_end = *next_end;
            self.ranges.remove(&end);
            self.ranges.get_mut(&k).expect("the range exists").0 = next_end;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A value that remembers which insert wrote it and the offset within that insert.
    #[derive(Clone, Debug, PartialEq, Eq)]
    struct Tag(u32, u64);

    impl Piece for Tag {
        fn advanced(&self, by: u64) -> Tag {
            Tag(self.0, self.1 + by)
        }
        fn continues_into(&self, len: u64, next: &Tag) -> bool {
            self.0 == next.0 && self.1 + len == next.1
        }
    }

    #[test]
    fn an_insert_inside_a_range_splits_it_and_keeps_offsets() {
        let mut m = RangeMap::default();
        m.insert(0, 100, Tag(1, 0));
        m.insert(10, 20, Tag(2, 0));
        assert_eq!(
            m.pieces_in(0, 100),
            vec![
                (0, 10, Tag(1, 0)),
                (10, 20, Tag(2, 0)),
                (20, 100, Tag(1, 20))
            ]
        );
        m.insert(10, 20, Tag(1, 10));
        assert_eq!(m.len(), 1, "a range that continues its neighbours merges");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn inserts_match_a_byte_model(ops in prop::collection::vec((0u64..200, 1u64..60), 1..40)) {
            let mut m = RangeMap::default();
            let mut model: Vec<Option<Tag>> = vec![None; 260];
            for (i, (start, len)) in ops.into_iter().enumerate() {
                let tag = Tag(i as u32, 0);
                m.insert(start, start + len, tag.clone());
                for at in start..start + len {
                    model[at as usize] = Some(tag.advanced(at - start));
                }
            }
            let (a, b) = (17, 233);
            let mut got: Vec<Option<Tag>> = vec![None; 260];
            let mut last_end = 0;
            for (s, e, v) in m.pieces_in(a, b) {
                prop_assert!(s >= last_end && s < e && s >= a && e <= b);
                last_end = e;
                for at in s..e {
                    got[at as usize] = Some(v.advanced(at - s));
                }
            }
            prop_assert_eq!(&got[a as usize..b as usize], &model[a as usize..b as usize]);
        }
    }
}
