//! `verify` as a library call: every checksum and cross-reference of the vault, under a lease.

use replog_reader::{LeaseOptions, ReadError, ReadErrorKind, VerifyReport};

use crate::location::Vault;

impl Vault {
    /// Checks every byte of the vault. A lease on the oldest point keeps a concurrent prune from
    /// moving the base or deleting the files being checked; it is best effort, so a vault too
    /// damaged to open is still verified.
    pub fn verify(&self) -> VerifyReport {
        let lease = replog_reader::Vault::open_leased(
            self.storage().clone(),
            self.dir(),
            &LeaseOptions::new("verify"),
            |v| {
                v.points().first().cloned().ok_or_else(|| {
                    ReadError::new(ReadErrorKind::InvalidRequest, "no point to lease")
                })
            },
        );
        let report = replog_reader::verify(self.storage().as_ref(), self.dir());
        drop(lease);
        report
    }
}
