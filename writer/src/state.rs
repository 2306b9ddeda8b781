//! `VaultState`: what every owner of the writer reads about the open vault (its storage,
//! directory and header) and the manifest as last stored, with the one way operations commit
//! a new one. The journal's rollover stores its manifest through `manifest_io` itself and is
//! handed this manifest to update; nothing here knows the journal, the bases or the `Writer`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::header::VaultHeader;
use replog_format::manifest::Manifest;
use replog_format::vault_seed;
use replog_io::Storage;
use replog_reader::{LiveLease, Registrations};

use crate::error::Result;
use crate::manifest_io::migration_refusal;

/// The open vault's storage, directory, header and manifest.
#[derive(Debug)]
pub(crate) struct VaultState {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    pub(crate) header: VaultHeader,
    /// The manifest as last stored; the journal's rollover and every lifecycle change commit
    /// a new one.
    pub(crate) manifest: Manifest,
}

impl VaultState {
    /// The CRC seed of the vault's checksums.
    pub(crate) fn seed(&self) -> u32 {
        vault_seed(&self.header.vault_id)
    }

    /// The vault directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `manifest` as the vault's manifest, durably, and keeps it.
    pub(crate) fn commit(&mut self, manifest: Manifest) -> Result<()> {
        crate::manifest_io::store(self.storage.as_ref(), &self.dir, &manifest)?;
        self.manifest = manifest;
        Ok(())
    }

    /// Refuses a change once a migration started.
    pub(crate) fn check_not_migrated(&self) -> Result<()> {
        match migration_refusal(&self.manifest, &self.dir) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The registration lock of the readers' leases, held exclusive, and the live leases.
    pub(crate) fn live_leases(&self) -> Result<(Registrations, Vec<LiveLease>)> {
        crate::files::live_leases(self.storage.as_ref(), &self.dir, self.seed())
    }

    /// Removes files (missing ones are fine) and syncs each directory touched.
    pub(crate) fn remove_files(&self, paths: impl Iterator<Item = PathBuf>) -> Result<()> {
        crate::files::remove_files(self.storage.as_ref(), paths)
    }
}
