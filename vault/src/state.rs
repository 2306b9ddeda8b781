//! The lifecycle state of a vault, for `inspect`: retention, pins, what pruning now would give
//! back, the churn of each disk, the live leases, the active test failover and the migration
//! record. Typed, so that whoever shows it (a table, JSON) decodes nothing.

use replog_format::lease::LeaseRecord;
use replog_format::lifecycle::{Lifecycle, MigrationRecord};
use replog_format::vault_seed;
use replog_writer::plan_retention;

use crate::location::Vault;

const NS_PER_S: i64 = 1_000_000_000;

/// What pruning by the policy now would give back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reclaimable {
    /// Journal bytes of the segments the new base makes unnecessary.
    pub bytes: u64,
    /// Points that would be dropped.
    pub points: usize,
    /// The base LSN after.
    pub new_base_lsn: u64,
}

/// Bytes written and zeroed per disk, since the first point of the retention window.
#[derive(Clone, Debug, PartialEq)]
pub enum Churn {
    /// No point lies in the window.
    NoPointInWindow,
    /// A segment could not be read (`verify` says why).
    Unreadable {
        /// Hours since the first point of the window.
        hours: f64,
    },
    /// The churn of each disk.
    Measured {
        /// The first point of the window.
        since_point: u64,
        /// Hours since it (at least one second).
        hours: f64,
        /// Per disk: its name and the bytes written and zeroed since.
        disks: Vec<(String, u64)>,
    },
}

/// The lifecycle state of a vault.
#[derive(Clone, Debug)]
pub struct LifecycleState {
    /// Retention policy, pins, retired points and the migration record, as the manifest says.
    pub lifecycle: Lifecycle,
    /// What pruning by the policy now would give back (`None` without a policy).
    pub reclaimable: Option<Reclaimable>,
    /// The churn of each disk.
    pub churn: Churn,
    /// The leases of live readers and persistent leases.
    pub leases: Vec<LeaseRecord>,
    /// The active test failover's lease.
    pub test_failover: Option<LeaseRecord>,
}

impl LifecycleState {
    /// The migration record, if a migration started.
    pub fn migration(&self) -> Option<&MigrationRecord> {
        self.lifecycle.migration.as_ref()
    }
}

impl Vault {
    /// The lifecycle state of `snapshot` (a snapshot of this vault) at `now_unix_ns`.
    pub fn lifecycle_state(
        &self,
        snapshot: &replog_reader::Vault,
        now_unix_ns: i64,
    ) -> LifecycleState {
        let m = snapshot.manifest();
        let seed = vault_seed(&snapshot.header().vault_id);
        let leases = replog_reader::list_leases(self.storage().as_ref(), snapshot.dir(), seed)
            .unwrap_or_default();
        let protected: Vec<u64> = leases
            .iter()
            .filter_map(|s| s.record.as_ref().filter(|r| r.persistent).map(|r| r.lsn))
            .collect();
        let reclaimable = m.lifecycle.retention.as_ref().map(|policy| {
            let pins = &m.lifecycle.pins;
            let points: Vec<_> = snapshot.points().to_vec();
            let plan = plan_retention(&points, Some(policy), None, pins, &protected, now_unix_ns);
            let new_base_lsn = plan.base().map_or(0, |p| p.lsn);
            Reclaimable {
                bytes: snapshot.sealed_journal_bytes_upto(new_base_lsn),
                points: plan.removed.len() + plan.retired.len(),
                new_base_lsn,
            }
        });
        let test_failover = leases
            .iter()
            .filter_map(|s| s.record.as_ref())
            .find(|r| r.purpose == "test-failover")
            .cloned();
        LifecycleState {
            lifecycle: m.lifecycle.clone(),
            reclaimable,
            churn: churn(snapshot, now_unix_ns),
            leases: leases
                .into_iter()
                .filter(|s| s.live)
                .filter_map(|s| s.record)
                .collect(),
            test_failover,
        }
    }
}

/// Bytes written and zeroed per disk over the retention window (or, without a policy, since the
/// oldest point).
fn churn(v: &replog_reader::Vault, now: i64) -> Churn {
    let m = v.manifest();
    let window_ns = m.lifecycle.retention.map(|p| {
        i64::try_from(p.window_s)
            .unwrap_or(i64::MAX)
            .saturating_mul(NS_PER_S)
    });
    let from = v
        .points()
        .iter()
        .find(|p| window_ns.is_none_or(|w| p.time_unix_ns >= now.saturating_sub(w)));
    let Some(from) = from else {
        return Churn::NoPointInWindow;
    };
    let hours = ((now - from.time_unix_ns).max(1) as f64 / 3600e9).max(1.0 / 3600.0);
    let Ok(extents) = v.journal_extents_after(from.lsn) else {
        return Churn::Unreadable { hours };
    };
    let mut disks: Vec<(u32, String, u64)> = m
        .disks
        .iter()
        .map(|d| (d.disk_id, d.name.clone(), 0))
        .collect();
    for e in &extents {
        if let Some(d) = disks.iter_mut().find(|(id, ..)| *id == e.disk_id) {
            d.2 += e.length;
        }
    }
    Churn::Measured {
        since_point: from.point_id,
        hours,
        disks: disks
            .into_iter()
            .map(|(_, name, bytes)| (name, bytes))
            .collect(),
    }
}
