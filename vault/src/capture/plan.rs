//! What a pass reads and what it zeroes, decided before anything is journaled: the ranges the
//! pass must cover (dirty extents, a changed-range list, or the whole disk), less the ranges the
//! source says read as zeros, become reads of at most one request each; the zero ranges inside
//! them become zero records, which are never read. All ranges here are `[start, end)` in bytes,
//! sorted and disjoint. Memory: 16 bytes per range and per planned read.

/// Byte ranges `[start, end)`, sorted by start and disjoint.
pub type Ranges = Vec<(u64, u64)>;

/// A pass's work.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `(offset, length)` of each read, in disk order, each at most the read size asked for.
    pub reads: Vec<(u64, u32)>,
    /// Ranges to journal as zeros without reading them.
    pub zeros: Ranges,
}

/// The plan covering `wanted`, where the ranges `zero` read as zeros; reads are at most
/// `read_max` bytes.
pub fn plan(wanted: &[(u64, u64)], zero: &[(u64, u64)], read_max: u32) -> Plan {
    let mut p = Plan::default();
    for &(start, end) in wanted {
        let mut cursor = start;
        let first = zero.partition_point(|z| z.1 <= start);
        for &(zs, ze) in zero[first..].iter().take_while(|z| z.0 < end) {
            if zs > cursor {
                push_reads(&mut p.reads, cursor, zs, read_max);
            }
            let (from, to) = (zs.max(cursor), ze.min(end));
            match p.zeros.last_mut() {
                Some(last) if last.1 == from => last.1 = to,
                _ => p.zeros.push((from, to)),
            }
            cursor = to;
        }
        if cursor < end {
            push_reads(&mut p.reads, cursor, end, read_max);
        }
    }
    p
}

/// Reads of at most `read_max` bytes covering `[start, end)`.
fn push_reads(reads: &mut Vec<(u64, u32)>, start: u64, end: u64, read_max: u32) {
    let mut at = start;
    while at < end {
        let n = (end - at).min(u64::from(read_max));
        reads.push((at, n as u32));
        at += n;
    }
}

/// The sorted, merged union of two range lists.
pub fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Ranges {
    let mut all: Ranges = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(all.len());
    for (s, e) in all {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Bytes `ranges` cover.
pub fn total(ranges: &[(u64, u64)]) -> u64 {
    ranges.iter().map(|r| r.1 - r.0).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeros_inside_wanted_ranges_are_not_read_and_reads_are_split() {
        let wanted = [(0, 100), (200, 300)];
        let zero = [(10, 20), (90, 210), (400, 500)];
        let p = plan(&wanted, &zero, 40);
        assert_eq!(
            p.reads,
            vec![(0, 10), (20, 40), (60, 30), (210, 40), (250, 40), (290, 10)]
        );
        assert_eq!(p.zeros, vec![(10, 20), (90, 100), (200, 210)]);
        let read: u64 = p.reads.iter().map(|r| u64::from(r.1)).sum();
        assert_eq!(read + total(&p.zeros), 200);
    }

    #[test]
    fn union_merges_overlapping_and_touching_ranges() {
        assert_eq!(
            union(&[(0, 10), (50, 60)], &[(5, 20), (20, 30), (70, 80)]),
            vec![(0, 30), (50, 60), (70, 80)]
        );
    }
}
