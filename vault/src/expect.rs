//! What an operator knows a vault held, checked before anything is read from it: a point, and
//! optionally that point's chain hash (`replog points --json` shows it; see FORMAT.md, "Journal
//! hash chain"). A copy that does not reach the point, a remote whose newer manifests were
//! removed (rolled back) or a history whose chain hash differs is refused as damage, naming the
//! manifest it was read from.

use replog_format::chain::{self, ChainHash};

use crate::error::{Result, VaultError, VaultErrorKind};
use crate::location::{Tier, Vault};

/// A point the vault must reach, and optionally the chain hash it must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedPoint {
    /// The point's id: the vault's newest point must be this one or a later one.
    pub point_id: u64,
    /// The point's chain hash, when known: the vault must still hold the point, with this hash.
    pub chain: Option<ChainHash>,
}

impl Vault {
    /// Refuses `snapshot` (a snapshot of this vault) unless it reaches `expected`.
    pub fn check_expected(
        &self,
        snapshot: &replog_reader::Vault,
        expected: &ExpectedPoint,
    ) -> Result<()> {
        let read_from = match self.tier() {
            Tier::Remote { manifest_seq, .. } => format!(
                "{}/{} (its newest remote manifest that reads)",
                self.location().display(),
                replog_format::remote::manifest_key(*manifest_seq)
            ),
            Tier::Local => self
                .dir()
                .join(replog_format::layout::MANIFEST_FILE)
                .display()
                .to_string(),
        };
        let refuse = |why: String| {
            Err(VaultError::new(
                VaultErrorKind::Damaged,
                format!("{read_from}: {why}"),
            ))
        };
        let points = snapshot.points();
        let newest = points.last().map_or(0, |p| p.point_id);
        if newest < expected.point_id {
            return refuse(format!(
                "the newest point is {newest}, older than point {} that was expected: this copy was rolled back, or lost its newer manifests",
                expected.point_id
            ));
        }
        let Some(want) = expected.chain else {
            return Ok(());
        };
        let Some(point) = points.iter().find(|p| p.point_id == expected.point_id) else {
            return refuse(format!(
                "point {} is no longer kept (retention removed it), so its chain hash cannot be checked; expect a point that is kept",
                expected.point_id
            ));
        };
        match point.chain {
            Some(found) if found == want => Ok(()),
            Some(found) => refuse(format!(
                "point {}'s chain hash is {}, not the expected {}: this is another history than the one recorded",
                point.point_id,
                chain::hex(&found),
                chain::hex(&want)
            )),
            None => refuse(format!(
                "point {} was written before the chain existed and has no chain hash to check",
                point.point_id
            )),
        }
    }
}
