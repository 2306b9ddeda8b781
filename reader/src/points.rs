//! Recovery points as the reader lists them: the manifest's (points of sealed segments) followed
//! by those found while scanning the open segment, in LSN order, with the lookups the CLI needs.

use replog_format::manifest::{Manifest, PointRef};
use replog_format::record::PointKind;
use replog_format::segment::PointEntry;

/// One recovery point: the disks as they were after every record up to `lsn`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointInfo {
    /// Its id (1, 2, 3, ... in LSN order).
    pub point_id: u64,
    /// The LSN of its marker record.
    pub lsn: u64,
    /// When it was taken, nanoseconds since the Unix epoch.
    pub time_unix_ns: i64,
    /// How consistent it is.
    pub kind: PointKind,
    /// Its label, possibly empty.
    pub label: String,
    /// The segment holding its marker record.
    pub segment_id: u64,
    /// Where the marker record starts in that segment.
    pub record_offset: u64,
    /// The journal chain's value at the point (the link that ends at its marker): it commits
    /// to every record before the point. `None` for points written before the chain existed.
    pub chain: Option<replog_format::chain::ChainHash>,
}

impl PointInfo {
    /// A point of a sealed segment, as the manifest records it.
    pub fn from_manifest(r: &PointRef) -> PointInfo {
        PointInfo {
            point_id: r.point.point_id,
            lsn: r.lsn,
            time_unix_ns: r.point.time_unix_ns,
            kind: r.point.kind,
            label: r.point.label.clone(),
            segment_id: r.segment_id,
            record_offset: r.record_offset,
            chain: r.point.chain,
        }
    }

    /// A point found in segment `segment_id`'s index (the open segment's, or a footer's).
    pub fn from_segment(segment_id: u64, e: &PointEntry) -> PointInfo {
        PointInfo {
            point_id: e.point.point_id,
            lsn: e.lsn,
            time_unix_ns: e.point.time_unix_ns,
            kind: e.point.kind,
            label: e.point.label.clone(),
            segment_id,
            record_offset: e.record_offset,
            chain: e.point.chain,
        }
    }
}

/// Merges the manifest's points with the open segment's: LSN order, each LSN once, only those
/// the manifest offers (not older than the base images, not retired by retention).
pub(crate) fn merge(manifest: &Manifest, open: Option<(u64, &[PointEntry])>) -> Vec<PointInfo> {
    let mut points = merge_all(&manifest.points, open);
    points.retain(|p| manifest.offers(p.point_id, p.lsn));
    points
}

/// Every point of the manifest and the open segment, offered or not.
fn merge_all(manifest: &[PointRef], open: Option<(u64, &[PointEntry])>) -> Vec<PointInfo> {
    let mut points: Vec<PointInfo> = manifest.iter().map(PointInfo::from_manifest).collect();
    if let Some((segment_id, entries)) = open {
        points.extend(
            entries
                .iter()
                .map(|e| PointInfo::from_segment(segment_id, e)),
        );
    }
    points.sort_by_key(|p| p.lsn);
    points.dedup_by_key(|p| p.lsn);
    points
}

/// The latest point (highest LSN) taken at or before `time_unix_ns`.
pub(crate) fn at_or_before(points: &[PointInfo], time_unix_ns: i64) -> Option<&PointInfo> {
    points.iter().rev().find(|p| p.time_unix_ns <= time_unix_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_format::record::PointPayload;

    fn payload(id: u64, time: i64) -> PointPayload {
        PointPayload {
            point_id: id,
            time_unix_ns: time,
            kind: PointKind::CrashConsistent,
            label: String::new(),
            chain: None,
        }
    }

    #[test]
    fn points_merge_in_lsn_order_and_time_lookup_takes_the_latest() {
        let manifest = vec![PointRef {
            lsn: 3,
            segment_id: 1,
            record_offset: 5000,
            point: payload(1, 100),
        }];
        let open = vec![
            PointEntry {
                lsn: 9,
                record_offset: 4096,
                point: payload(2, 200),
            },
            PointEntry {
                lsn: 12,
                record_offset: 4200,
                point: payload(3, 300),
            },
        ];
        let points = merge_all(&manifest, Some((2, &open)));
        assert_eq!(
            points.iter().map(|p| p.point_id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(points[1].segment_id, 2);
        assert_eq!(at_or_before(&points, 250).unwrap().point_id, 2);
        assert_eq!(at_or_before(&points, 300).unwrap().point_id, 3);
        assert!(at_or_before(&points, 99).is_none());
    }
}
