//! The record of a pass that has started journaling and not finished: `capture/<disk>.pending`
//! in the vault (`<disk>` the decimal disk id), JSON naming the disk, the source and the ranges
//! the pass covers (`null`: the whole disk). It is written and synced before a pass appends its
//! first record, and removed only after the pass's records are durable. While one exists,
//! `replog point` refuses (a point would cover a half-done pass: some extents new, others old),
//! and the disk's next pass covers the recorded ranges as well as its own, so a failed pass is
//! re-covered even when the caller's bitmap or list no longer names its extents. A record that
//! does not parse (a crash while it was written) counts as the whole disk.
//!
//! It goes through the storage seam like every vault file. It is advisory to the writer and the
//! reader, which never read it.

use std::path::{Path, PathBuf};

use replog_io::{OpenMode, Storage, WriteAt};
use replog_writer::{PointInfo, PointKind, Writer};
use serde::{Deserialize, Serialize};

use super::plan::Ranges;
use crate::error::{Result, VaultError, VaultErrorKind};

/// The directory of the records, in the vault.
pub const CAPTURE_DIR: &str = "capture";

/// A pass that started journaling and did not finish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingCapture {
    /// The disk's name.
    pub disk: String,
    /// The disk's id.
    pub disk_id: u32,
    /// What it read from (a URI, or an image and its list).
    pub source: String,
    /// The ranges it covers; `None` is the whole disk.
    pub ranges: Option<Ranges>,
}

fn path_of(vault: &Path, disk_id: u32) -> PathBuf {
    vault.join(CAPTURE_DIR).join(format!("{disk_id}.pending"))
}

fn io_error(path: &Path, doing: &str, e: std::io::Error) -> VaultError {
    let kind = match e.kind() {
        std::io::ErrorKind::StorageFull => VaultErrorKind::NoSpace,
        _ => VaultErrorKind::Io,
    };
    VaultError::new(kind, format!("{doing} {}: {e}", path.display())).in_file(path)
}

/// The unfinished pass of `disk_id`, if any. An unreadable record covers the whole disk.
pub fn read(
    storage: &dyn Storage,
    vault: &Path,
    disk_id: u32,
    disk: &str,
) -> Result<Option<PendingCapture>> {
    let path = path_of(vault, disk_id);
    let file = match storage.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path, "opening", e)),
    };
    let len = file.len().map_err(|e| io_error(&path, "reading", e))?;
    let mut bytes = vec![0u8; len.min(1 << 30) as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| io_error(&path, "reading", e))?;
    Ok(Some(serde_json::from_slice(&bytes).unwrap_or(
        PendingCapture {
            disk: disk.to_owned(),
            disk_id,
            source: format!("an unreadable record in {}", path.display()),
            ranges: None,
        },
    )))
}

/// Records `pending` durably: file synced, then its directory (and the vault's, when the
/// directory is new).
pub fn write(storage: &dyn Storage, vault: &Path, pending: &PendingCapture) -> Result<()> {
    let dir = vault.join(CAPTURE_DIR);
    if !storage
        .exists(&dir)
        .map_err(|e| io_error(&dir, "looking for", e))?
    {
        storage
            .create_dir_all(&dir)
            .map_err(|e| io_error(&dir, "creating", e))?;
        storage
            .sync_dir(vault)
            .map_err(|e| io_error(vault, "syncing", e))?;
    }
    let path = path_of(vault, pending.disk_id);
    let data = serde_json::to_vec(pending).expect("a pending capture serializes");
    let file = storage
        .open(&path, OpenMode::CreateTruncate)
        .map_err(|e| io_error(&path, "creating", e))?;
    file.write_batch(
        &[WriteAt {
            offset: 0,
            data: &data,
        }],
        true,
    )
    .map_err(|e| io_error(&path, "writing", e))?;
    storage
        .sync_dir(&dir)
        .map_err(|e| io_error(&dir, "syncing", e))
}

/// Removes the record of `disk_id`'s pass, durably; none is fine.
pub fn clear(storage: &dyn Storage, vault: &Path, disk_id: u32) -> Result<()> {
    let path = path_of(vault, disk_id);
    match storage.remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&path, "removing", e)),
    }
    let dir = vault.join(CAPTURE_DIR);
    storage
        .sync_dir(&dir)
        .map_err(|e| io_error(&dir, "syncing", e))
}

/// Every unfinished pass in the vault, by disk id.
pub fn all(storage: &dyn Storage, vault: &Path) -> Result<Vec<PendingCapture>> {
    let dir = vault.join(CAPTURE_DIR);
    let names = match storage.read_dir(&dir) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error(&dir, "listing", e)),
    };
    let mut out = Vec::new();
    for name in names {
        let Some(id) = name
            .strip_suffix(".pending")
            .and_then(|i| i.parse::<u32>().ok())
        else {
            continue;
        };
        out.extend(read(storage, vault, id, &format!("id {id}"))?);
    }
    out.sort_by_key(|p| p.disk_id);
    Ok(out)
}

/// Takes a point with `w`, which must write the vault its `storage` holds, unless a pass has
/// not finished. Holding the writer is what makes the check sound: no pass can start, fail or
/// finish between the check and the point. Every point of a vault that takes captures goes
/// through here (`replog point`, `ingest --point`, `replicate`, the capturing NBD server).
pub fn point_unless_pending(
    w: &mut Writer,
    storage: &dyn Storage,
    kind: PointKind,
    label: &str,
) -> Result<PointInfo> {
    refuse_point_while_pending(storage, w.dir())?;
    Ok(w.point(kind, label)?)
}

/// Refuses a point while a pass has not finished, naming the disk and the source.
pub fn refuse_point_while_pending(storage: &dyn Storage, vault: &Path) -> Result<()> {
    let Some(p) = all(storage, vault)?.into_iter().next() else {
        return Ok(());
    };
    Err(VaultError::new(
        VaultErrorKind::InvalidRequest,
        format!(
            "a capture of disk {:?} from {} did not finish, so a point now would cover part of \
             it; run the disk's ingest again (it covers what the failed pass covered) and then \
             take the point",
            p.disk, p.source
        ),
    )
    .in_file(path_of(vault, p.disk_id)))
}
