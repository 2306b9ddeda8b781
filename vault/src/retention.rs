//! Retention as a library call: change the policy and the pins, prune (with the disk usage
//! measured around it), and what pruning now would give back.

use std::path::Path;

use replog_format::lifecycle::{Lifecycle, RetentionPolicy};
use replog_writer::{CompactReport, LeaseOutcome, PruneOptions, PruneReport};

use crate::error::{Result, VaultError, VaultErrorKind};
use crate::location::Vault;

/// A change of the retention policy and pins. Every field left `None` or empty keeps what is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionChange {
    /// A new window, in seconds: a policy with this window replaces the current one.
    pub window_s: Option<u64>,
    /// Keep every point of this last span (seconds).
    pub recent_s: Option<u64>,
    /// Beyond it, one point per this span (seconds).
    pub thin_s: Option<u64>,
    /// How long app-consistent points are kept (seconds).
    pub app_window_s: Option<u64>,
    /// One app-consistent point per this span beyond the recent span (seconds).
    pub app_thin_s: Option<u64>,
    /// Remove the policy.
    pub clear: bool,
    /// Points to pin.
    pub pin: Vec<u64>,
    /// Points to unpin.
    pub unpin: Vec<u64>,
}

impl RetentionChange {
    fn changes_policy(&self) -> bool {
        self.window_s.is_some()
            || self.recent_s.is_some()
            || self.thin_s.is_some()
            || self.app_window_s.is_some()
            || self.app_thin_s.is_some()
    }

    /// The policy after the change, from the current one.
    fn policy(&self, current: Option<RetentionPolicy>) -> Result<Option<RetentionPolicy>> {
        if self.clear {
            return Ok(None);
        }
        let mut p = match (self.window_s, current) {
            (Some(window), _) => RetentionPolicy::with_window(window),
            (None, Some(p)) => p,
            (None, None) => {
                return Err(VaultError::new(
                    VaultErrorKind::NoRetentionPolicy,
                    "the vault has no retention policy yet: give --window (e.g. --window 72h)",
                ));
            }
        };
        let set = |field: &mut u64, value: Option<u64>| {
            if let Some(v) = value {
                *field = v;
            }
        };
        set(&mut p.recent_s, self.recent_s);
        set(&mut p.thin_s, self.thin_s);
        set(&mut p.app_window_s, self.app_window_s);
        set(&mut p.app_thin_s, self.app_thin_s);
        Ok(Some(p))
    }
}

/// What a prune did, with the vault's disk usage (allocated blocks) measured around it.
#[derive(Clone, Debug)]
pub struct Pruned {
    /// The decision and the compaction's report.
    pub report: PruneReport,
    /// What the compaction did (a report of nothing, at the current base, when it did not run).
    pub compaction: CompactReport,
    /// Allocated bytes of the vault before.
    pub usage_before: u64,
    /// Allocated bytes of the vault after.
    pub usage_after: u64,
    /// Allocated bytes before, per kind of file.
    pub kinds_before: DiskUsage,
    /// Allocated bytes after, per kind of file.
    pub kinds_after: DiskUsage,
}

/// Allocated bytes (`st_blocks` x 512) of a vault's files, per kind: what `du` counts, so
/// what pruning gives back is measured rather than computed from file lengths (a released
/// dead prefix is a hole, the same length with fewer blocks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Journal segments, `journal/`.
    pub journal: u64,
    /// Base images, `bases/`.
    pub bases: u64,
    /// Checkpoint indexes, `index/`.
    pub index: u64,
    /// Everything else: manifest, digest caches, leases, quarantine, remote state.
    pub other: u64,
}

impl DiskUsage {
    /// Measures the files under the vault directory `dir`.
    pub fn measure(dir: &Path) -> DiskUsage {
        let journal = disk_usage(&dir.join("journal"));
        let bases = disk_usage(&dir.join("bases"));
        let index = disk_usage(&dir.join("index"));
        let other = disk_usage(dir).saturating_sub(journal + bases + index);
        DiskUsage {
            journal,
            bases,
            index,
            other,
        }
    }

    /// The sum over every kind.
    pub fn total(&self) -> u64 {
        self.journal + self.bases + self.index + self.other
    }

    /// What went from `self` (before) to `after`, per kind: bytes freed (0 where it grew).
    pub fn freed_to(&self, after: &DiskUsage) -> DiskUsage {
        DiskUsage {
            journal: self.journal.saturating_sub(after.journal),
            bases: self.bases.saturating_sub(after.bases),
            index: self.index.saturating_sub(after.index),
            other: self.other.saturating_sub(after.other),
        }
    }
}

impl Pruned {
    /// Why the prune changed nothing, if a reader's lease made it skip.
    pub fn skipped(&self) -> Option<&str> {
        match &self.compaction.lease {
            LeaseOutcome::Skipped { blocking } => Some(blocking),
            _ => None,
        }
    }
}

impl Vault {
    /// Changes the retention policy and pins as `change` says (nothing, to read them), and
    /// returns the vault's lifecycle state after.
    pub fn change_retention(&self, change: &RetentionChange) -> Result<Lifecycle> {
        let mut w = self.writer()?;
        let current = w.manifest().lifecycle.retention;
        if change.clear || change.changes_policy() {
            w.set_retention(change.policy(current)?)?;
        }
        for &id in &change.pin {
            w.pin(id)?;
        }
        for &id in &change.unpin {
            w.unpin(id)?;
        }
        let lifecycle = w.manifest().lifecycle.clone();
        w.close()?;
        Ok(lifecycle)
    }

    /// Applies the retention policy (or keeps the newest points), then compacts.
    pub fn prune(&self, opts: &PruneOptions) -> Result<Pruned> {
        let kinds_before = DiskUsage::measure(self.dir());
        let mut w = self.writer()?;
        let report = w.prune(opts)?;
        let base_lsn = w.manifest().base_lsn;
        w.close()?;
        let compaction = report.compaction.clone().unwrap_or_else(|| CompactReport {
            base_lsn_before: base_lsn,
            base_lsn_after: base_lsn,
            ..Default::default()
        });
        let kinds_after = DiskUsage::measure(self.dir());
        Ok(Pruned {
            report,
            compaction,
            usage_before: kinds_before.total(),
            usage_after: kinds_after.total(),
            kinds_before,
            kinds_after,
        })
    }
}

/// Bytes the files under `dir` take on disk (allocated blocks, `st_blocks`): what an operator's
/// `du` says, which is what pruning gives back. A measurement of the filesystem, not a read of
/// the vault's data, so it looks at the directory tree itself.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}
