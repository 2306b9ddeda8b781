//! Retention: which recovery points to keep, and pruning the rest.
//!
//! The journal is a log, so a point can only stop existing by moving the base forward: a prune
//! computes the set of points to keep ([`plan_retention`]); the oldest kept point K becomes the
//! new base (every point below K is gone, the space of the segments wholly at or below K comes
//! back); the points between K and the newest that the thinning tiers do not keep are retired:
//! their records stay, since later points need them, but they are recorded in the manifest and
//! no longer offered.
//!
//! Then the records every kept point has overwritten, inside the segments that stay, are
//! reclaimed where they reach the garbage ratio (see `reclaim`), also when every point is kept.
//!
//! Always kept, whatever the policy: the newest point, pinned points, and the point of a
//! persistent lease (a test failover). A reader's process lease does not change the plan; it
//! makes the compaction wait or skip (see [`LeaseWait`]).

use std::path::Path;

use replog_format::lifecycle::{Lifecycle, RetentionPolicy};
use replog_format::record::PointKind;
use replog_reader::PointInfo;

use crate::bases::Bases;
use crate::compact::{CompactReport, CompactRequest, Compaction, LeaseWait};
use crate::error::{Result, WriteError, WriteErrorKind};
use crate::journal::Journal;
use crate::reclaim::{GarbageRatio, GarbageReport, Reclaim};
use crate::state::VaultState;

const NS_PER_S: i64 = 1_000_000_000;

/// Which points a prune keeps and what happens to the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    /// The points kept, oldest first.
    pub kept: Vec<PointInfo>,
    /// Points below the oldest kept one: they cease to exist when the base moves to it.
    pub removed: Vec<PointInfo>,
    /// Points above it that are not kept: retired.
    pub retired: Vec<PointInfo>,
    /// Kept points and why each is kept, when a reason other than the tiers applies.
    pub protected: Vec<(u64, &'static str)>,
}

impl RetentionPlan {
    /// The point that becomes the base: the oldest kept one.
    pub fn base(&self) -> Option<&PointInfo> {
        self.kept.first()
    }
}

/// Decides which of `points` (oldest first, as offered) to keep: by `policy` evaluated at
/// `now_unix_ns`, or only the newest `keep_last` when given. `pins` and `protected_lsns` (points
/// under a persistent lease) are always kept, and so is the newest point.
pub fn plan_retention(
    points: &[PointInfo],
    policy: Option<&RetentionPolicy>,
    keep_last: Option<usize>,
    pins: &[u64],
    protected_lsns: &[u64],
    now_unix_ns: i64,
) -> RetentionPlan {
    let mut keep = vec![false; points.len()];
    let mut plan = RetentionPlan::default();
    for (i, p) in points.iter().enumerate() {
        let reason = if i + 1 == points.len() {
            Some("newest")
        } else if pins.contains(&p.point_id) {
            Some("pinned")
        } else if protected_lsns.contains(&p.lsn) {
            Some("test failover")
        } else {
            None
        };
        if let Some(reason) = reason {
            keep[i] = true;
            plan.protected.push((p.point_id, reason));
        }
    }
    match (keep_last, policy) {
        (Some(n), _) => {
            let from = points.len().saturating_sub(n);
            keep[from..].iter_mut().for_each(|k| *k = true);
        }
        (None, Some(policy)) => apply_policy(points, policy, now_unix_ns, &mut keep),
        (None, None) => keep.iter_mut().for_each(|k| *k = true),
    }
    let oldest_kept = keep.iter().position(|&k| k).unwrap_or(points.len());
    for (i, p) in points.iter().enumerate() {
        if keep[i] {
            plan.kept.push(p.clone());
        } else if i < oldest_kept {
            plan.removed.push(p.clone());
        } else {
            plan.retired.push(p.clone());
        }
    }
    plan
}

/// Marks the points the policy's tiers keep.
fn apply_policy(points: &[PointInfo], policy: &RetentionPolicy, now: i64, keep: &mut [bool]) {
    let age_s = |p: &PointInfo| (now.saturating_sub(p.time_unix_ns)).max(0) / NS_PER_S;
    let bucket = |p: &PointInfo, span_s: u64| p.time_unix_ns.div_euclid(NS_PER_S) / span_s as i64;
    // Newest first, so the first point seen in a bucket is the newest of it.
    let mut seen: Vec<i64> = Vec::new();
    let mut seen_app: Vec<i64> = Vec::new();
    for i in (0..points.len()).rev() {
        let p = &points[i];
        let age = age_s(p) as u64;
        if age <= policy.recent_s {
            keep[i] = true;
        } else if age <= policy.window_s {
            if policy.thin_s == 0 {
                keep[i] = true;
            } else {
                let b = bucket(p, policy.thin_s);
                if !seen.contains(&b) {
                    seen.push(b);
                    keep[i] = true;
                }
            }
        }
        if p.kind == PointKind::AppConsistent && age <= policy.app_window_s {
            if policy.app_thin_s == 0 {
                keep[i] = true;
            } else {
                let b = bucket(p, policy.app_thin_s);
                if !seen_app.contains(&b) {
                    seen_app.push(b);
                    keep[i] = true;
                }
            }
        }
    }
}

/// How to prune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PruneOptions {
    /// Keep only the newest N points (and the protected ones) instead of applying the policy.
    pub keep_last: Option<usize>,
    /// Evaluate the policy as if now were this time (nanoseconds since the Unix epoch).
    pub now_unix_ns: Option<i64>,
    /// What to do when a reader's lease is in the way.
    pub lease_wait: LeaseWait,
    /// Only report what would happen.
    pub dry_run: bool,
    /// The share of a segment's live bytes that must be dead before its dead ranges are
    /// punched (see `GarbageRatio`).
    pub garbage_ratio: GarbageRatio,
    /// How the compaction builds its view at the new base: the heap its extent maps may take
    /// before it is layered over a checkpoint searched on disk.
    pub view: replog_reader::ViewOptions,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            keep_last: None,
            now_unix_ns: None,
            lease_wait: LeaseWait::Skip,
            dry_run: false,
            garbage_ratio: GarbageRatio::DEFAULT,
            view: replog_reader::ViewOptions::default(),
        }
    }
}

/// What a prune decided and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// The decision.
    pub plan: RetentionPlan,
    /// What the compaction did; `None` for a dry run or when there was nothing to do.
    pub compaction: Option<CompactReport>,
    /// For a dry run or before compaction: the journal bytes of the segments the new base makes
    /// unnecessary (file lengths).
    pub journal_bytes_reclaimable: u64,
    /// What reclaiming the records every kept point overwrote did (nothing for a dry run, or
    /// when a lease made the compaction skip).
    pub garbage: GarbageReport,
}

/// Retention's view of the writer: the vault whose lifecycle it changes, the journal whose
/// points it plans over, and the bases a prune's compaction rolls. The `Writer` checks that a
/// change is allowed (not poisoned, not migrated) before it hands itself over.
pub(crate) struct Retention<'w> {
    pub(crate) vault: &'w mut VaultState,
    pub(crate) journal: &'w mut Journal,
    pub(crate) bases: &'w Bases,
}

impl Retention<'_> {
    /// Sets (or, with `None`, removes) the retention policy.
    pub(crate) fn set_policy(self, policy: Option<RetentionPolicy>) -> Result<()> {
        if policy.is_some_and(|p| p.window_s == 0) {
            return Err(WriteError::new(
                WriteErrorKind::InvalidRequest,
                "the retention window must be longer than 0 seconds",
            ));
        }
        self.update_lifecycle(|l| l.retention = policy)
    }

    /// Pins point `point_id`, which must be offered.
    pub(crate) fn pin(self, point_id: u64) -> Result<()> {
        let points = self.journal.points(&self.vault.manifest);
        if !points.iter().any(|p| p.point_id == point_id) {
            return Err(WriteError::new(
                WriteErrorKind::InvalidRequest,
                format!("no recovery point {point_id} to pin; `replog points` lists them"),
            )
            .in_file(self.vault.dir())
            .for_point(point_id));
        }
        self.update_lifecycle(|l| {
            if let Err(at) = l.pins.binary_search(&point_id) {
                l.pins.insert(at, point_id);
            }
        })
    }

    /// Unpins point `point_id`, which must be pinned.
    pub(crate) fn unpin(self, point_id: u64) -> Result<()> {
        let pins = &self.vault.manifest.lifecycle.pins;
        if pins.binary_search(&point_id).is_err() {
            return Err(WriteError::new(
                WriteErrorKind::InvalidRequest,
                format!("point {point_id} is not pinned"),
            )
            .in_file(self.vault.dir())
            .for_point(point_id));
        }
        self.update_lifecycle(|l| l.pins.retain(|&id| id != point_id))
    }

    /// Commits the manifest with `change` made to its lifecycle section; a failure poisons the
    /// journal.
    fn update_lifecycle(self, change: impl FnOnce(&mut Lifecycle)) -> Result<()> {
        let mut manifest = self.vault.manifest.clone();
        change(&mut manifest.lifecycle);
        manifest.generation += 1;
        let stored = self.vault.commit(manifest);
        if let Err(e) = &stored {
            self.journal.poison(e);
        }
        stored
    }

    /// Applies the retention policy (or `keep_last`): plans, then compacts.
    pub(crate) fn prune(self, opts: &PruneOptions) -> Result<PruneReport> {
        let policy = self.vault.manifest.lifecycle.retention;
        check_prune_options(self.vault.dir(), policy.as_ref(), opts)?;
        let protected = persistent_lease_lsns(self.vault)?;
        let points = self.journal.points(&self.vault.manifest);
        let now = opts.now_unix_ns.unwrap_or_else(crate::now_unix_ns);
        let lifecycle = &self.vault.manifest.lifecycle;
        let plan = plan_retention(
            &points,
            policy.as_ref(),
            opts.keep_last,
            &lifecycle.pins,
            &protected,
            now,
        );
        let mut report = PruneReport {
            journal_bytes_reclaimable: reclaimable(self.vault, plan.base().map(|p| p.lsn))?
                + prefix_reclaimable(self.vault, plan.base()),
            plan,
            compaction: None,
            garbage: GarbageReport::default(),
        };
        let Some(base) = report.plan.base().cloned() else {
            return Ok(report);
        };
        let base_lsn = self.vault.manifest.base_lsn;
        let nothing = base.lsn <= base_lsn && report.plan.retired.is_empty();
        if opts.dry_run {
            return Ok(report);
        }
        if !nothing {
            let req = CompactRequest {
                base: (base.point_id, base.lsn.max(base_lsn)),
                retire: report.plan.retired.iter().map(|p| p.point_id).collect(),
                wait: opts.lease_wait,
                view: opts.view,
            };
            let compaction = Compaction {
                vault: &mut *self.vault,
                journal: &mut *self.journal,
                bases: self.bases,
            };
            let done = compaction.run(&req)?;
            let skipped = matches!(done.lease, crate::compact::LeaseOutcome::Skipped { .. });
            report.compaction = Some(done);
            if skipped {
                return Ok(report);
            }
        }
        let reclaim = Reclaim {
            vault: self.vault,
            journal: self.journal,
        };
        report.garbage = reclaim.run(opts.garbage_ratio)?;
        Ok(report)
    }
}

/// Refuses a prune with nothing to decide by (no policy and no `keep_last`) or that would keep
/// no point.
fn check_prune_options(
    dir: &Path,
    policy: Option<&RetentionPolicy>,
    opts: &PruneOptions,
) -> Result<()> {
    if policy.is_none() && opts.keep_last.is_none() {
        return Err(WriteError::new(
            WriteErrorKind::InvalidRequest,
            format!(
                "no retention policy is set; set one with `replog retention {} --window 72h` or pass --keep-last N",
                dir.display()
            ),
        )
        .in_file(dir));
    }
    if opts.keep_last == Some(0) {
        return Err(WriteError::new(
            WriteErrorKind::InvalidRequest,
            "--keep-last must keep at least 1 point",
        ));
    }
    Ok(())
}

/// Journal bytes (file lengths) of the sealed segments of `vault` wholly at or below `lsn`.
pub(crate) fn reclaimable(vault: &VaultState, lsn: Option<u64>) -> Result<u64> {
    let Some(lsn) = lsn else { return Ok(0) };
    let mut bytes = 0;
    for s in &vault.manifest.segments {
        if s.sealed.is_some_and(|i| i.last_lsn <= lsn) {
            let path = replog_format::layout::segment_path(vault.dir(), s.segment_id);
            let f = vault
                .storage
                .open(&path, replog_io::OpenMode::Read)
                .map_err(|e| WriteError::io(&path, None, "opening", e))?;
            bytes += f
                .len()
                .map_err(|e| WriteError::io(&path, None, "measuring", e))?;
        }
    }
    Ok(bytes)
}

/// Bytes of the dead prefix a compaction to `base` would release in the segment holding it,
/// when that segment stays (it holds records after the point): from after its header to the
/// page of the point's marker.
fn prefix_reclaimable(vault: &VaultState, base: Option<&PointInfo>) -> u64 {
    let unit = replog_format::manifest::RELEASE_UNIT_BYTES;
    let Some(p) = base else { return 0 };
    let dropped = vault
        .manifest
        .segments
        .iter()
        .any(|s| s.segment_id == p.segment_id && s.sealed.is_some_and(|i| i.last_lsn <= p.lsn));
    let end = p.record_offset / unit * unit;
    if dropped || end <= unit {
        return 0;
    }
    let already = vault.manifest.released_prefix(p.segment_id).unwrap_or(unit);
    end.saturating_sub(already.max(unit))
}

/// LSNs of points under a persistent lease (a test failover): never pruned.
fn persistent_lease_lsns(vault: &VaultState) -> Result<Vec<u64>> {
    let leases = replog_reader::list_leases(vault.storage.as_ref(), vault.dir(), vault.seed())
        .map_err(|e| WriteError::read(WriteErrorKind::Io, None, e))?;
    Ok(leases
        .into_iter()
        .filter_map(|s| s.record.filter(|r| r.persistent).map(|r| r.lsn))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600 * NS_PER_S;

    fn point(id: u64, hours_ago_x10: i64, app: bool, now: i64) -> PointInfo {
        PointInfo {
            point_id: id,
            lsn: id * 10,
            time_unix_ns: now - hours_ago_x10 * H / 10,
            kind: if app {
                PointKind::AppConsistent
            } else {
                PointKind::CrashConsistent
            },
            label: String::new(),
            segment_id: 1,
            record_offset: 0,
            chain: None,
        }
    }

    fn ids(points: &[PointInfo]) -> Vec<u64> {
        points.iter().map(|p| p.point_id).collect()
    }

    #[test]
    fn recent_points_are_all_kept_and_older_ones_thinned_to_one_per_hour() {
        let now = 1000 * H;
        // Every 20 minutes over 6 hours, oldest first; point 3 is app-consistent.
        let points: Vec<_> = (0..18)
            .map(|i| point(i + 1, (17 - i as i64) * 10 / 3, i == 2, now))
            .collect();
        let policy = RetentionPolicy::with_window(5 * 3600);
        let plan = plan_retention(&points, Some(&policy), None, &[], &[], now);
        // Within 2 hours: all kept.
        for p in &points {
            if now - p.time_unix_ns <= 2 * H {
                assert!(ids(&plan.kept).contains(&p.point_id), "{}", p.point_id);
            }
        }
        // Between 2 and 5 hours: at most one per hour bucket.
        let mut buckets: Vec<i64> = plan
            .kept
            .iter()
            .filter(|p| now - p.time_unix_ns > 2 * H && p.kind == PointKind::CrashConsistent)
            .map(|p| p.time_unix_ns / H)
            .collect();
        let n = buckets.len();
        buckets.dedup();
        assert_eq!(buckets.len(), n, "one point per hour");
        // Older than 5 hours and not app-consistent: removed or retired, never kept.
        assert!(
            plan.kept
                .iter()
                .all(|p| now - p.time_unix_ns <= 5 * H || p.kind == PointKind::AppConsistent)
        );
        // The base is the oldest kept; everything older is removed, nothing older is retired.
        let base = plan.base().unwrap().lsn;
        assert!(plan.removed.iter().all(|p| p.lsn < base));
        assert!(plan.retired.iter().all(|p| p.lsn > base));
        assert_eq!(
            plan.kept.len() + plan.removed.len() + plan.retired.len(),
            points.len()
        );
    }

    #[test]
    fn pins_protected_points_and_the_newest_survive_keep_last() {
        let now = 100 * H;
        let points: Vec<_> = (0..10)
            .map(|i| point(i + 1, 90 - i as i64, false, now))
            .collect();
        let plan = plan_retention(&points, None, Some(2), &[3], &[50], now);
        assert_eq!(ids(&plan.kept), vec![3, 5, 9, 10]);
        assert_eq!(ids(&plan.removed), vec![1, 2]);
        assert_eq!(ids(&plan.retired), vec![4, 6, 7, 8]);
        let plan = plan_retention(&points, None, Some(1), &[], &[], now);
        assert_eq!(ids(&plan.kept), vec![10]);
        assert_eq!(plan.removed.len(), 9);
    }

    #[test]
    fn app_consistent_points_outlive_the_window() {
        let now = 100 * H;
        let points = vec![
            point(1, 500, true, now),
            point(2, 400, false, now),
            point(3, 10, false, now),
        ];
        let mut policy = RetentionPolicy::with_window(24 * 3600);
        policy.app_window_s = 72 * 3600;
        let plan = plan_retention(&points, Some(&policy), None, &[], &[], now);
        assert_eq!(ids(&plan.kept), vec![1, 3]);
        assert_eq!(ids(&plan.retired), vec![2]);
    }
}
