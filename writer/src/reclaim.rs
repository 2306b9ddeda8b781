//! Reclaiming garbage: the space of journal records that every kept point has overwritten,
//! inside segments that stay.
//!
//! After a prune's compaction (or without one, when every point is kept), the records of the
//! journal after the base that no kept point reads are dead (`replog_reader::liveness`: one
//! pass, with extent maps of one interval between kept points at a time). Consecutive dead records form a run; a run's whole
//! 4 KiB pages can be given back with a hole (the run's first and last page, shared with live
//! records, stay). Order, each step durable before the next:
//!
//! 1. **Decide.** The kept points are the offered points of a fresh reader snapshot and the
//!    point of every live lease (a reader's view there reads only live records). A segment is
//!    reclaimed when the holes of its runs reach the garbage ratio of its live bytes (its
//!    length less its released dead prefix); its runs then replace those the manifest lists for
//!    it (a superset: a record dead for a kept set stays dead for every later one).
//! 2. **Seal.** If the open segment is reclaimed, it is sealed first (an ordinary rotation):
//!    only sealed segments, which recovery never scans, ever hold a hole.
//! 3. **Commit.** Under the registration lock held exclusive, the leases are listed again: a
//!    lease at a point the decision did not keep (a reader that registered meanwhile, on a
//!    point this prune retired) may read dead records, so nothing is recorded and the report
//!    names it (skipped, not deferred: the next prune decides again). Otherwise one manifest
//!    replacement (version 5) lists the runs.
//! 4. **Punch.** Every listed run's hole is punched (`files::punch_dead_ranges`), the length set
//!    again and the segment synced; a writer open does the same (recovery, rule O), so a crash
//!    after the commit leaves the space freed by the next open.
//!
//! Memory: extent maps of the records between two consecutive kept points and those records
//! (see `liveness`), plus the runs found, 40 bytes per run of at least one page (at most
//! 1% of the journal's bytes).

use std::collections::BTreeMap;
use std::path::PathBuf;

use replog_format::garbage::DeadRange;
use replog_format::manifest::{Manifest, RELEASE_UNIT_BYTES};
use replog_reader::liveness::TrackedRecord;
use replog_reader::{ReadError, ReadErrorKind};

use crate::error::{Result, WriteError, WriteErrorKind};
use crate::journal::Journal;
use crate::state::VaultState;

/// The share of a segment's live bytes that must be dead before its dead ranges are punched,
/// in thousandths: 0 punches every dead range, 1000 (or more) disables reclaiming garbage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GarbageRatio {
    per_mille: u16,
}

impl GarbageRatio {
    /// The default: half of a segment's live bytes.
    pub const DEFAULT: GarbageRatio = GarbageRatio { per_mille: 500 };
    /// Never reclaim garbage.
    pub const DISABLED: GarbageRatio = GarbageRatio { per_mille: 1000 };

    /// The ratio `fraction` (0.0 ..= 1.0), rounded to a thousandth; `None` outside that range.
    pub fn from_fraction(fraction: f64) -> Option<GarbageRatio> {
        (0.0..=1.0).contains(&fraction).then(|| GarbageRatio {
            per_mille: (fraction * 1000.0).round() as u16,
        })
    }

    /// The ratio as a fraction.
    pub fn fraction(self) -> f64 {
        f64::from(self.per_mille) / 1000.0
    }

    /// Whether reclaiming garbage is disabled.
    pub fn disabled(self) -> bool {
        self.per_mille >= 1000
    }

    /// Whether `dead_bytes` of `live_bytes` reach the ratio (and are not nothing).
    fn reached(self, dead_bytes: u64, live_bytes: u64) -> bool {
        dead_bytes > 0 && dead_bytes * 1000 >= live_bytes * u64::from(self.per_mille)
    }
}

impl Default for GarbageRatio {
    fn default() -> Self {
        GarbageRatio::DEFAULT
    }
}

/// What reclaiming garbage did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GarbageReport {
    /// Segments whose dead ranges this run listed (new or grown).
    pub segments: Vec<u64>,
    /// Bytes of the holes this run listed in addition to those listed before.
    pub dead_bytes_listed: u64,
    /// Segments holding garbage below the ratio: left as they are.
    pub below_ratio: Vec<u64>,
    /// The open segment, sealed so that its garbage could be punched.
    pub sealed_open: Option<u64>,
    /// Dead ranges the manifest lists after this run.
    pub ranges_listed: usize,
    /// Allocated bytes the punch gave back (`st_blocks` before less after, over the segments
    /// punched).
    pub bytes_freed: u64,
    /// A lease at a point the decision did not keep: nothing was recorded.
    pub skipped: Option<String>,
    /// Segment files on a filesystem that cannot punch holes: nothing was freed there.
    pub unsupported: Vec<PathBuf>,
    /// Whether a manifest listing new dead ranges was committed.
    pub committed: bool,
}

/// Dead ranges by segment id.
type RunsBySegment = BTreeMap<u64, Vec<DeadRange>>;

/// Reclaiming garbage: the vault whose manifest it commits and the journal it may seal (and
/// poisons on failure).
pub(crate) struct Reclaim<'w> {
    pub(crate) vault: &'w mut VaultState,
    pub(crate) journal: &'w mut Journal,
}

impl Reclaim<'_> {
    /// Decides, records and punches the dead ranges `ratio` lets through; any failure after the
    /// journal may have changed poisons it (reopening the vault recovers).
    pub(crate) fn run(mut self, ratio: GarbageRatio) -> Result<GarbageReport> {
        if ratio.disabled() {
            return Ok(GarbageReport {
                ranges_listed: self.vault.manifest.dead_ranges.len(),
                ..GarbageReport::default()
            });
        }
        self.journal.flush(true)?;
        let result = self.run_steps(ratio);
        if let Err(e) = &result {
            self.journal.poison(e);
        }
        result
    }

    fn run_steps(&mut self, ratio: GarbageRatio) -> Result<GarbageReport> {
        let mut report = GarbageReport::default();
        let (kept, candidates) = self.decide(ratio, &mut report)?;
        if candidates.is_empty() {
            report.ranges_listed = self.vault.manifest.dead_ranges.len();
            return Ok(report);
        }
        let open = self.journal.active().id;
        if candidates.contains_key(&open) {
            self.journal.seal(&mut self.vault.manifest)?;
            report.sealed_open = Some(open);
        }
        let (registrations, live) = self.vault.live_leases()?;
        if let Some(l) = live.iter().find(|l| kept.binary_search(&l.lsn()).is_err()) {
            report.skipped = Some(l.describe());
            report.ranges_listed = self.vault.manifest.dead_ranges.len();
            return Ok(report);
        }
        let manifest = self.listed(candidates, &mut report);
        self.vault.commit(manifest)?;
        report.committed = true;
        drop(registrations);
        report.ranges_listed = self.vault.manifest.dead_ranges.len();
        let punched = crate::files::punch_dead_ranges(
            self.vault.storage.as_ref(),
            self.vault.dir(),
            &self.vault.manifest,
        )?;
        report.bytes_freed = punched.bytes;
        report.unsupported = punched.unsupported;
        Ok(report)
    }

    /// The kept point LSNs (sorted) and, by segment, the runs of the segments whose garbage
    /// reaches `ratio` (those below it are named in `report`).
    fn decide(
        &self,
        ratio: GarbageRatio,
        report: &mut GarbageReport,
    ) -> Result<(Vec<u64>, RunsBySegment)> {
        let dir = self.vault.dir();
        let read_err = |e: ReadError| reading_error(e).in_file(dir);
        let reader =
            replog_reader::Vault::open(self.vault.storage.clone(), dir).map_err(read_err)?;
        let (registrations, live) = self.vault.live_leases()?;
        drop(registrations);
        let mut kept: Vec<u64> = reader.points().iter().map(|p| p.lsn).collect();
        kept.extend(live.iter().map(|l| l.lsn()));
        kept.sort_unstable();
        kept.dedup();
        let mut runs = Runs::default();
        replog_reader::liveness::dead_records(&reader, &kept, |r| runs.push(r))
            .map_err(read_err)?;
        let open_bytes = reader
            .open_segment()
            .map(|o| (o.segment_id, o.end.append_offset()));
        let mut candidates = BTreeMap::new();
        for (segment_id, found) in runs.by_segment() {
            let m = &self.vault.manifest;
            let Some(live_bytes) = live_bytes(m, segment_id, open_bytes) else {
                continue;
            };
            let dead: u64 = found.iter().map(DeadRange::hole_bytes).sum();
            let listed = m.dead_ranges_of(segment_id);
            let grows = listed
                .iter()
                .all(|old| found.iter().any(|d| d.contains(old)))
                && dead > listed.iter().map(DeadRange::hole_bytes).sum();
            if !grows {
                continue;
            }
            if ratio.reached(dead, live_bytes) {
                candidates.insert(segment_id, found);
            } else {
                report.below_ratio.push(segment_id);
            }
        }
        Ok((kept, candidates))
    }

    /// The manifest listing `candidates` in place of what it listed for their segments.
    fn listed(&self, candidates: RunsBySegment, report: &mut GarbageReport) -> Manifest {
        let mut m = self.vault.manifest.clone();
        m.generation += 1;
        for (segment_id, found) in candidates {
            let before: u64 = m
                .dead_ranges_of(segment_id)
                .iter()
                .map(DeadRange::hole_bytes)
                .sum();
            let after: u64 = found.iter().map(DeadRange::hole_bytes).sum();
            report.dead_bytes_listed += after - before;
            report.segments.push(segment_id);
            m.dead_ranges.retain(|d| d.segment_id != segment_id);
            m.dead_ranges.extend(found);
        }
        m.dead_ranges.sort_unstable();
        m
    }
}

/// The bytes of segment `segment_id` that are not yet released: its length (a sealed one's
/// trailer end, the open one's append offset as scanned) less its released dead prefix. `None`
/// for a segment the manifest does not list.
fn live_bytes(m: &Manifest, segment_id: u64, open: Option<(u64, u64)>) -> Option<u64> {
    let s = m.segments.iter().find(|s| s.segment_id == segment_id)?;
    let len = match (s.sealed, open) {
        (Some(info), _) => info.file_bytes,
        (None, Some((id, bytes))) if id == segment_id => bytes,
        (None, _) => return None,
    };
    let released = m
        .released_prefix(segment_id)
        .map_or(0, |end| end - RELEASE_UNIT_BYTES);
    Some(len.saturating_sub(released))
}

/// A reader's error while deciding what is dead: damage stays damage, anything else is I/O.
fn reading_error(e: ReadError) -> WriteError {
    let kind = if e.kind() == ReadErrorKind::Damaged {
        WriteErrorKind::Damaged
    } else {
        WriteErrorKind::Io
    };
    WriteError::read(kind, Some("finding the records no kept point reads"), e)
}

/// Dead records merged into runs of consecutive records as they come (in LSN order); a run
/// that covers no whole page is dropped as soon as the next one starts.
#[derive(Debug, Default)]
struct Runs {
    runs: Vec<DeadRange>,
}

impl Runs {
    fn push(&mut self, r: &TrackedRecord) {
        if let Some(last) = self.runs.last_mut()
            && last.segment_id == r.segment_id
            && last.end == r.start
            && last.last_lsn + 1 == r.lsn
        {
            last.end = r.end;
            last.last_lsn = r.lsn;
            return;
        }
        self.drop_pageless_last();
        self.runs.push(DeadRange {
            segment_id: r.segment_id,
            start: r.start,
            end: r.end,
            first_lsn: r.lsn,
            last_lsn: r.lsn,
        });
    }

    fn drop_pageless_last(&mut self) {
        if self.runs.last().is_some_and(|d| d.hole().is_none()) {
            self.runs.pop();
        }
    }

    /// The runs, grouped by segment in id order.
    fn by_segment(mut self) -> RunsBySegment {
        self.drop_pageless_last();
        let mut out = RunsBySegment::new();
        for d in self.runs {
            out.entry(d.segment_id).or_default().push(d);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_a_share_of_the_live_bytes_and_1_disables_it() {
        let half = GarbageRatio::DEFAULT;
        assert!(half.reached(500, 1000) && !half.reached(499, 1000));
        let every = GarbageRatio::from_fraction(0.0).unwrap();
        assert!(every.reached(1, 1 << 30) && !every.reached(0, 10));
        assert!(GarbageRatio::from_fraction(1.0).unwrap().disabled());
        assert!(!half.disabled());
        assert_eq!(GarbageRatio::from_fraction(1.5), None);
        assert_eq!(GarbageRatio::from_fraction(-0.1), None);
    }
}
