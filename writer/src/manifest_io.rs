//! Replacing the manifest atomically: write `MANIFEST.tmp`, sync it, rename it over `MANIFEST`,
//! sync the vault directory. A crash at any step leaves the old or the new manifest, whole.
//! Also what the manifest alone decides: whether a migration refuses changes.

use std::path::Path;

use replog_format::layout::{MANIFEST_FILE, MANIFEST_TMP_FILE};
use replog_format::lifecycle::MigrationPhase;
use replog_format::manifest::Manifest;
use replog_io::{OpenMode, Storage};

use crate::error::{Result, WriteError, WriteErrorKind};

/// Writes `manifest` as the vault's manifest, durably.
pub(crate) fn store(storage: &dyn Storage, dir: &Path, manifest: &Manifest) -> Result<()> {
    debug_assert!(manifest.validate().is_ok(), "writing an invalid manifest");
    let bytes = manifest.encode();
    let tmp = dir.join(MANIFEST_TMP_FILE);
    let file = storage
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| WriteError::io(&tmp, None, "creating", e))?;
    file.write_batch(
        &[replog_io::WriteAt {
            offset: 0,
            data: &bytes,
        }],
        true,
    )
    .map_err(|e| WriteError::io(&tmp, Some(0), "writing and syncing", e))?;
    let target = dir.join(MANIFEST_FILE);
    storage
        .rename(&tmp, &target)
        .map_err(|e| WriteError::io(&target, None, "renaming MANIFEST.tmp over", e))?;
    storage
        .sync_dir(dir)
        .map_err(|e| WriteError::io(dir, None, "syncing the directory", e))
}

/// Reads and decodes the vault's manifest.
pub(crate) fn load(storage: &dyn Storage, dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let file = storage.open(&path, OpenMode::Read).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            // `replog init` writes MANIFEST before VAULT, and it is only ever replaced by a
            // rename: next to a VAULT file, a missing one is damage, as the reader says too.
            WriteError::new(
                WriteErrorKind::Damaged,
                "missing; the vault cannot be opened without its manifest",
            )
            .in_file(&path)
        } else {
            WriteError::io(&path, None, "opening", e)
        }
    })?;
    let bytes = file
        .map()
        .map_err(|e| WriteError::io(&path, None, "reading", e))?;
    Manifest::decode(&bytes).map_err(|e| WriteError::damaged(&path, 0, e))
}

/// The refusal of writes once a migration started (see `migration`), naming it.
pub(crate) fn migration_refusal(manifest: &Manifest, dir: &Path) -> Option<WriteError> {
    let m = manifest.lifecycle.migration.as_ref()?;
    let sentence = if m.phase == MigrationPhase::Complete {
        format!(
            "the vault was migrated to point {} (outputs in {}); it takes no more ingest, points or disks; `replog inspect` shows the record",
            m.point_id, m.out_dir
        )
    } else {
        format!(
            "a migration to point {} is in progress (phase {}); the vault takes no more ingest, points or disks; finish it with `replog complete-migration {} --out {}`",
            m.point_id,
            m.phase.name(),
            dir.display(),
            m.out_dir
        )
    };
    Some(
        WriteError::new(WriteErrorKind::Migrated, sentence)
            .in_file(dir)
            .for_point(m.point_id),
    )
}
