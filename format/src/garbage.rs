//! Dead ranges: runs of journal records inside a sealed segment that no kept recovery point
//! reads (manifest version 5). Compaction lists them in the manifest and then punches a hole
//! over the whole 4 KiB pages inside each run, so their space comes back while the segment's
//! offsets, footer and trailer stay as they were.
//!
//! ```text
//! dead range, 40 bytes
//! offset size field
//!      0    8 segment_id u64: a sealed segment the manifest lists
//!      8    8 start u64: offset of the run's first record
//!     16    8 end u64: end of the run's last record (its offset plus 64 plus its stored bytes)
//!     24    8 first_lsn u64: LSN of the run's first record
//!     32    8 last_lsn u64: LSN of its last record; the run holds every LSN in between
//! ```
//!
//! The hole is `[align_up(start, 4096), end / 4096 * 4096)`: the pages a live record shares
//! with the run's first or last record are never released, so a live record is never touched.

use crate::limits::PAGE_BYTES;

/// Size of one dead range entry in the manifest.
pub const DEAD_RANGE_BYTES: usize = 40;
/// The unit in which dead ranges are punched: whole pages inside the run.
pub const HOLE_UNIT_BYTES: u64 = PAGE_BYTES as u64;

/// A run of consecutive records of one sealed segment that no kept point reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeadRange {
    /// The segment holding the run.
    pub segment_id: u64,
    /// Offset of the run's first record.
    pub start: u64,
    /// End of the run's last record.
    pub end: u64,
    /// LSN of the run's first record.
    pub first_lsn: u64,
    /// LSN of its last record.
    pub last_lsn: u64,
}

impl DeadRange {
    /// The bytes that may read as zeros: the whole pages inside `[start, end)`, as
    /// `(offset, length)`; `None` when the run covers no whole page.
    pub fn hole(&self) -> Option<(u64, u64)> {
        let from = self.start.checked_next_multiple_of(HOLE_UNIT_BYTES)?;
        let to = self.end / HOLE_UNIT_BYTES * HOLE_UNIT_BYTES;
        (from < to).then(|| (from, to - from))
    }

    /// Bytes of [`DeadRange::hole`] (0 when there is none).
    pub fn hole_bytes(&self) -> u64 {
        self.hole().map_or(0, |(_, len)| len)
    }

    /// Records in the run (saturating: a range read from a hostile manifest may have its LSNs
    /// reversed until it is validated).
    pub fn records(&self) -> u64 {
        self.last_lsn
            .saturating_sub(self.first_lsn)
            .saturating_add(1)
    }

    /// Whether the run holds the record of LSN `lsn`.
    pub fn holds_lsn(&self, lsn: u64) -> bool {
        (self.first_lsn..=self.last_lsn).contains(&lsn)
    }

    /// Whether the run holds every record of `other` (same segment).
    pub fn contains(&self, other: &DeadRange) -> bool {
        self.segment_id == other.segment_id && self.start <= other.start && other.end <= self.end
    }
}

/// Whether `ranges`, sorted by LSN, hold the record of LSN `lsn`.
pub fn holds_lsn(ranges: &[DeadRange], lsn: u64) -> bool {
    let i = ranges.partition_point(|r| r.last_lsn < lsn);
    ranges.get(i).is_some_and(|r| r.holds_lsn(lsn))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, end: u64) -> DeadRange {
        DeadRange {
            segment_id: 1,
            start,
            end,
            first_lsn: 5,
            last_lsn: 7,
        }
    }

    #[test]
    fn the_hole_is_the_whole_pages_inside_the_run() {
        assert_eq!(range(4096, 8192).hole(), Some((4096, 4096)));
        assert_eq!(range(5000, 13_000).hole(), Some((8192, 4096)));
        assert_eq!(range(5000, 12_288).hole(), Some((8192, 4096)));
        assert_eq!(range(5000, 12_000).hole(), None);
        assert_eq!(range(5000, 12_000).hole_bytes(), 0);
    }

    #[test]
    fn lookups_by_lsn_find_the_run_holding_it() {
        let runs = [
            DeadRange {
                first_lsn: 3,
                last_lsn: 4,
                ..range(4096, 9000)
            },
            DeadRange {
                first_lsn: 9,
                last_lsn: 9,
                ..range(10_000, 20_000)
            },
        ];
        let found: Vec<u64> = (1..12).filter(|&l| holds_lsn(&runs, l)).collect();
        assert_eq!(found, vec![3, 4, 9]);
    }
}
