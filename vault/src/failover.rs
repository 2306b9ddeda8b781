//! Opening a recovery point to fail over to: the snapshot, the point, and the lease that keeps a
//! concurrent prune from moving the base past the point, or deleting the files the snapshot reads,
//! until the images are complete. A point's disks are written as image files by `export`, or
//! into NBD exports and block devices by [`failover_to_targets`].

use replog_reader::{Lease, LeaseOptions, PointInfo, PointView, ReadError};

use crate::choose::{PointChoice, choose};
use crate::error::{Result, VaultError};
use crate::failover_target::{DiskTarget, Target, TargetWritten, assign};
use crate::location::{Tier, Vault};

/// A point opened for failover.
#[derive(Debug)]
pub struct FailoverSource {
    /// The snapshot the point is read from.
    pub snapshot: replog_reader::Vault,
    /// The point.
    pub point: PointInfo,
    /// The lease held until the images are complete; `None` for a remote copy (the remote keeps
    /// its newest manifests whole) and when [`FailoverSource::unprotected`] says why.
    pub lease: Option<Lease>,
    /// Why no lease could be taken on a local vault (a user who may read the vault but not write
    /// its `leases/`): the point is then not protected from a concurrent prune.
    pub unprotected: Option<ReadError>,
}

/// Why opening under a lease failed: reading the vault, or choosing the point.
enum LeasedOpen {
    Read(ReadError),
    Choose(VaultError),
}

impl From<ReadError> for LeasedOpen {
    fn from(e: ReadError) -> LeasedOpen {
        LeasedOpen::Read(e)
    }
}

impl Vault {
    /// Opens the point `choice` names for failover: under a lease on a local vault, without one
    /// on a remote copy.
    pub fn failover_source(&self, choice: &PointChoice) -> Result<FailoverSource> {
        let shown_as = self.location().display();
        if let Tier::Remote { .. } = self.tier() {
            let snapshot = self.snapshot()?;
            let point = choose(&snapshot, &shown_as, choice)?.clone();
            return Ok(FailoverSource {
                snapshot,
                point,
                lease: None,
                unprotected: None,
            });
        }
        let leased = replog_reader::Vault::open_leased(
            self.storage().clone(),
            self.dir(),
            &LeaseOptions::new("failover"),
            |v| {
                choose(v, &shown_as, choice)
                    .cloned()
                    .map_err(LeasedOpen::Choose)
            },
        );
        match leased {
            Ok(l) => Ok(FailoverSource {
                snapshot: l.vault,
                point: l.point,
                lease: Some(l.lease),
                unprotected: None,
            }),
            Err(LeasedOpen::Choose(e)) => Err(e),
            Err(LeasedOpen::Read(e)) if replog_reader::lease_not_permitted(&e) => {
                let snapshot = self.snapshot()?;
                let point = choose(&snapshot, &shown_as, choice)?.clone();
                Ok(FailoverSource {
                    snapshot,
                    point,
                    lease: None,
                    unprotected: Some(e),
                })
            }
            Err(LeasedOpen::Read(e)) => Err(e.into()),
        }
    }
}

/// Every disk of a point written into its target, in the view's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetsWritten {
    /// Per disk.
    pub disks: Vec<TargetWritten>,
    /// Bytes of data over all disks.
    pub written_bytes: u64,
}

/// One target opened and checked.
enum Output {
    Nbd(crate::failover_nbd::NbdOutput),
    Device(crate::failover_device::DeviceOutput),
}

/// Writes every disk of `view` into its target (`--to`): pairs disks with targets, opens and
/// checks every target before writing any (so a refused one leaves all of them untouched),
/// then writes, syncs and checks each disk in turn (`failover_nbd`, `failover_device`).
/// `progress` gets the disk bytes done so far over all disks. A failure stops the run: disks
/// written before it are complete and checked, the one it happened in is partly written.
pub fn failover_to_targets(
    view: &PointView,
    targets: &[DiskTarget],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<TargetsWritten> {
    let names: Vec<&str> = view.disks().iter().map(|d| d.name()).collect();
    let assigned = assign(&names, targets)?;
    let mut outputs = Vec::with_capacity(assigned.len());
    for (disk, target) in view.disks().iter().zip(assigned) {
        outputs.push(match target {
            Target::Nbd(uri) => Output::Nbd(crate::failover_nbd::open(uri, disk)?),
            Target::Device(path) => Output::Device(crate::failover_device::open(path, disk)?),
        });
    }
    let mut written = TargetsWritten {
        disks: Vec::with_capacity(outputs.len()),
        written_bytes: 0,
    };
    let mut before = 0;
    for (disk, output) in view.disks().iter().zip(outputs) {
        let at = |n: u64| progress(before + n);
        let done = match output {
            Output::Nbd(o) => o.write(disk, &at)?,
            Output::Device(o) => o.write(disk, &at)?,
        };
        before += disk.size();
        written.written_bytes += done.data_bytes;
        written.disks.push(done);
    }
    Ok(written)
}
