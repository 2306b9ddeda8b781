//! Opening a recovery point to fail over to: the snapshot, the point, and the lease that keeps a
//! concurrent prune from moving the base past the point, or deleting the files the snapshot reads,
//! until the images are complete.

use replog_reader::{Lease, LeaseOptions, PointInfo, ReadError};

use crate::choose::{PointChoice, choose};
use crate::error::{Result, VaultError};
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
