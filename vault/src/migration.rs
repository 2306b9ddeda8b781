//! Complete migration as a library call: finalize the disks at a point, seal the vault, remove
//! its journal; or, as a dry run, say what that would do.

use replog_writer::{MigrationOptions, MigrationReport, complete_migration, migration_plan};

use crate::error::Result;
use crate::location::Vault;

impl Vault {
    /// Completes the migration (resuming an interrupted one), or with `dry_run` only plans it.
    pub fn complete_migration(
        &self,
        opts: &MigrationOptions,
        dry_run: bool,
    ) -> Result<MigrationReport> {
        let storage = self.storage().clone();
        Ok(if dry_run {
            migration_plan(storage, self.dir(), opts)?
        } else {
            complete_migration(storage, self.dir(), opts)?
        })
    }
}
