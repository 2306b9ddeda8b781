//! The [`Writer`]: creating and opening vaults (with crash recovery), disks, writes, zero
//! ranges and recovery points. Framing and segment rotation live in `journal`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::header::{Compression, VaultHeader};
use replog_format::layout;
use replog_format::limits::{
    BLOCK_BYTES_DEFAULT, DISK_BYTES_MAX, DISKS_MAX, LABEL_BYTES_MAX, RECORD_DATA_BYTES_MAX,
    SEGMENT_BYTES_DEFAULT,
};
use replog_format::magic::FormatVersion;
use replog_format::manifest::{DiskEntry, Manifest, SegmentEntry, valid_disk_name};
use replog_format::record::{PointKind, PointPayload, RecordHeader, RecordKind};
use replog_format::segment::{FOOTER_POINT_FIXED_BYTES, PointEntry};
use replog_format::{VaultId, vault_seed};
use replog_io::{File, OpenMode, Storage, WriteAt};
use replog_reader::PointInfo;

use crate::compress::encode_payload;
use crate::error::{Result, WriteError, WriteErrorKind};
use crate::journal::{ActiveSegment, create_segment};
use crate::lock::VaultLock;

/// Settings fixed when a vault is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaultSettings {
    /// Chunk size of base checksums and ingest digests (power of two, 4 KiB..=4 MiB).
    pub block_bytes: u32,
    /// Size at which a segment is sealed (64 KiB..=4 GiB).
    pub segment_bytes: u64,
    /// Payload compression.
    pub compression: Compression,
}

impl Default for VaultSettings {
    fn default() -> Self {
        VaultSettings {
            block_bytes: BLOCK_BYTES_DEFAULT,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            compression: Compression::None,
        }
    }
}

/// A disk of the vault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Its id in records.
    pub disk_id: u32,
    /// Its name.
    pub name: String,
    /// Its size.
    pub disk_bytes: u64,
}

/// What [`Writer::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A torn tail that was cut: the segment file, the offset it was cut at, the bytes cut, and
    /// where they were kept.
    pub torn_tail: Option<(PathBuf, u64, u64, PathBuf)>,
    /// The open segment was found sealed, and the rotation was completed.
    pub completed_rotation: bool,
    /// Files left by interrupted operations and removed (never listed, never acknowledged).
    pub removed: Vec<PathBuf>,
}

/// The one writer of a vault. See the crate documentation for the durability contract.
#[derive(Debug)]
pub struct Writer {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    pub(crate) header: VaultHeader,
    pub(crate) seed: u32,
    pub(crate) manifest: Manifest,
    pub(crate) active: ActiveSegment,
    pub(crate) next_lsn: u64,
    pub(crate) next_point_id: u64,
    pub(crate) poisoned: Option<String>,
    pub(crate) recovery: RecoveryReport,
    _lock: VaultLock,
}

fn io_at<'a>(path: &'a Path, what: &str) -> impl FnOnce(std::io::Error) -> WriteError + 'a {
    let what = what.to_owned();
    move |e| WriteError::io(path, None, &what, e)
}

impl Writer {
    /// Creates a vault in `dir`, which must not exist or be empty.
    pub fn create(
        storage: Arc<dyn Storage>,
        dir: &Path,
        settings: VaultSettings,
    ) -> Result<Writer> {
        let mut vault_id: VaultId = [0; 16];
        vault_id[..8].copy_from_slice(&crate::now_unix_ns().to_le_bytes());
        vault_id[8..].copy_from_slice(&rand::random::<u64>().to_le_bytes());
        let header = VaultHeader {
            version: FormatVersion::CURRENT,
            vault_id,
            created_unix_ns: crate::now_unix_ns(),
            block_bytes: settings.block_bytes,
            compression: settings.compression,
            segment_bytes: settings.segment_bytes,
        };
        header
            .validate_settings()
            .map_err(|e| WriteError::new(WriteErrorKind::InvalidRequest, e))?;
        let s = storage.as_ref();
        if s.exists(dir).map_err(io_at(dir, "checking"))?
            && !s.read_dir(dir).map_err(io_at(dir, "listing"))?.is_empty()
        {
            return Err(WriteError::new(
                WriteErrorKind::AlreadyExists,
                format!(
                    "{}: the directory is not empty; a vault is created in a new or empty directory",
                    dir.display()
                ),
            ));
        }
        for sub in [
            layout::JOURNAL_DIR,
            layout::BASES_DIR,
            layout::DIGESTS_DIR,
            layout::QUARANTINE_DIR,
        ] {
            let p = dir.join(sub);
            s.create_dir_all(&p)
                .map_err(io_at(&p, "creating the directory"))?;
        }
        let lock = VaultLock::acquire(s, dir)?;
        let manifest = Manifest {
            vault_id,
            generation: 1,
            base_lsn: 0,
            disks: Vec::new(),
            segments: vec![SegmentEntry {
                segment_id: 1,
                first_lsn: 1,
                sealed: None,
            }],
            points: Vec::new(),
            lifecycle: Default::default(),
        };
        let mut w = Writer::assemble(storage.clone(), dir, header, manifest, lock, 1, 1);
        w.active = create_segment(&w, 1, 1)?;
        crate::manifest_io::store(s, dir, &w.manifest)?;
        // VAULT goes last: a directory without it is not a vault, whatever else it holds.
        let vault_path = dir.join(layout::VAULT_FILE);
        let f = s
            .open(&vault_path, OpenMode::CreateNew)
            .map_err(io_at(&vault_path, "creating"))?;
        f.write_batch(
            &[WriteAt {
                offset: 0,
                data: &w.header.encode(),
            }],
            true,
        )
        .map_err(io_at(&vault_path, "writing and syncing"))?;
        for d in [
            dir.join(layout::BASES_DIR),
            dir.join(layout::DIGESTS_DIR),
            dir.join(layout::QUARANTINE_DIR),
            dir.to_path_buf(),
        ] {
            s.sync_dir(&d).map_err(io_at(&d, "syncing the directory"))?;
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            s.sync_dir(parent)
                .map_err(io_at(parent, "syncing the directory"))?;
        }
        Ok(w)
    }

    /// A writer over state already read; the active segment is a placeholder until replaced.
    fn assemble(
        storage: Arc<dyn Storage>,
        dir: &Path,
        header: VaultHeader,
        manifest: Manifest,
        lock: VaultLock,
        next_lsn: u64,
        next_point_id: u64,
    ) -> Writer {
        let seed = vault_seed(&header.vault_id);
        let placeholder = ActiveSegment {
            id: 0,
            first_lsn: 0,
            path: PathBuf::new(),
            file: Arc::new(Closed),
            written: 0,
            synced: 0,
            pending: Default::default(),
            extents: Vec::new(),
            points: Vec::new(),
            footer_bytes: 8,
        };
        Writer {
            storage,
            dir: dir.to_path_buf(),
            header,
            seed,
            manifest,
            active: placeholder,
            next_lsn,
            next_point_id,
            poisoned: None,
            recovery: RecoveryReport::default(),
            _lock: lock,
        }
    }

    /// Opens an existing vault for writing, recovering from any crash first (see `FORMAT.md`,
    /// recovery rules): leftovers of interrupted operations are removed, a torn tail is kept in
    /// `quarantine/` and cut, and an interrupted segment rotation is completed.
    ///
    /// A vault whose migration has started (see `complete_migration`) is refused with
    /// [`WriteErrorKind::Migrated`]: it takes no more writes or points.
    pub fn open(storage: Arc<dyn Storage>, dir: &Path) -> Result<Writer> {
        Writer::open_with(storage, dir, false)
    }

    /// [`Writer::open`] without the migration check, for the migration itself.
    pub(crate) fn open_any(storage: Arc<dyn Storage>, dir: &Path) -> Result<Writer> {
        Writer::open_with(storage, dir, true)
    }

    fn open_with(storage: Arc<dyn Storage>, dir: &Path, migrating: bool) -> Result<Writer> {
        let header = crate::recover::read_vault_header(storage.as_ref(), dir)?;
        let lock = VaultLock::acquire(storage.as_ref(), dir)?;
        crate::recover::sync_dirs(storage.as_ref(), dir)?;
        let manifest = crate::manifest_io::load(storage.as_ref(), dir)?;
        if manifest.vault_id != header.vault_id {
            return Err(WriteError::new(
                WriteErrorKind::Damaged,
                format!(
                    "{}: MANIFEST belongs to another vault than VAULT",
                    dir.display()
                ),
            ));
        }
        if !migrating && let Some(e) = crate::migration::refusal(&manifest, dir) {
            return Err(e);
        }
        let mut w = Writer::assemble(storage, dir, header, manifest, lock, 0, 0);
        crate::recover::recover(&mut w)?;
        Ok(w)
    }

    /// What [`Writer::open`] found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The vault header.
    pub fn header(&self) -> &VaultHeader {
        &self.header
    }

    /// The disks, in id order.
    pub fn disks(&self) -> Vec<DiskInfo> {
        self.manifest
            .disks
            .iter()
            .map(|d| DiskInfo {
                disk_id: d.disk_id,
                name: d.name.clone(),
                disk_bytes: d.disk_bytes,
            })
            .collect()
    }

    /// The disk called `name`.
    pub fn disk(&self, name: &str) -> Result<DiskInfo> {
        self.disks()
            .into_iter()
            .find(|d| d.name == name)
            .ok_or_else(|| {
                WriteError::new(
                    WriteErrorKind::InvalidRequest,
                    format!(
                        "{}: the vault has no disk named {name:?}",
                        self.dir.display()
                    ),
                )
            })
    }

    /// The LSN of the last record staged (0 when there is none).
    pub fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }

    /// Every recovery point offered to readers, oldest first: not older than the base images,
    /// not retired by retention.
    pub fn points(&self) -> Vec<PointInfo> {
        let sealed = self.manifest.points.iter().map(PointInfo::from_manifest);
        let open = self
            .active
            .points
            .iter()
            .map(|p| PointInfo::from_segment(self.active.id, p));
        sealed
            .chain(open)
            .filter(|p| self.manifest.offers(p.point_id, p.lsn))
            .collect()
    }

    /// The manifest as last stored: disks, segments, base LSN and the lifecycle section.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Adds an empty (all-zero) disk of `disk_bytes`.
    pub fn add_disk(&mut self, name: &str, disk_bytes: u64) -> Result<DiskInfo> {
        self.add_disk_inner(name, disk_bytes, None)
    }

    /// Adds a disk seeded from `image`, a raw image whose length is the disk's size.
    pub fn add_disk_from_image(
        &mut self,
        name: &str,
        image: &dyn File,
        image_path: &Path,
    ) -> Result<DiskInfo> {
        let len = image
            .len()
            .map_err(io_at(image_path, "reading the length"))?;
        self.add_disk_inner(name, len, Some((image, image_path)))
    }

    fn add_disk_inner(
        &mut self,
        name: &str,
        disk_bytes: u64,
        image: Option<(&dyn File, &Path)>,
    ) -> Result<DiskInfo> {
        self.check_poison()?;
        self.check_not_migrated()?;
        let invalid = |m: String| Err(WriteError::new(WriteErrorKind::InvalidRequest, m));
        if !valid_disk_name(name) {
            return invalid(format!(
                "{name:?} is not a valid disk name: use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with ."
            ));
        }
        if self.manifest.disks.iter().any(|d| d.name == name) {
            return Err(WriteError::new(
                WriteErrorKind::AlreadyExists,
                format!("the vault already has a disk named {name:?}"),
            ));
        }
        if disk_bytes == 0 || disk_bytes > DISK_BYTES_MAX {
            return invalid(format!(
                "disk size {disk_bytes} is not between 1 byte and 64 TiB"
            ));
        }
        if self.manifest.disks.len() >= DISKS_MAX as usize {
            return invalid(format!("the vault already has {DISKS_MAX} disks"));
        }
        let disk_id = self.manifest.disks.last().map_or(1, |d| d.disk_id + 1);
        // Everything staged before the disk exists must be durable first: after any crash the
        // journal then resumes at or after `added_lsn`, so no record of the disk can precede it.
        self.flush(true)?;
        let added_lsn = self.next_lsn;
        let base_header_crc = crate::base::write_base(self, disk_id, 1, disk_bytes, image)?;
        let mut manifest = self.manifest.clone();
        manifest.disks.push(DiskEntry {
            disk_id,
            name: name.to_owned(),
            disk_bytes,
            added_lsn,
            base_generation: 1,
            base_header_crc,
        });
        manifest.generation += 1;
        crate::manifest_io::store(self.storage.as_ref(), &self.dir, &manifest)?;
        self.manifest = manifest;
        Ok(DiskInfo {
            disk_id,
            name: name.to_owned(),
            disk_bytes,
        })
    }

    pub(crate) fn check_range(&self, disk_id: u32, offset: u64, len: u64) -> Result<()> {
        self.check_not_migrated()?;
        let disk = self
            .manifest
            .disks
            .iter()
            .find(|d| d.disk_id == disk_id)
            .ok_or_else(|| {
                WriteError::new(
                    WriteErrorKind::InvalidRequest,
                    format!("the vault has no disk with id {disk_id}"),
                )
            })?;
        if len == 0
            || offset
                .checked_add(len)
                .is_none_or(|end| end > disk.disk_bytes)
        {
            return Err(WriteError::new(
                WriteErrorKind::InvalidRequest,
                format!(
                    "range {offset}+{len} is empty or ends past the end of disk {:?} ({} bytes)",
                    disk.name, disk.disk_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Stages a write of `data` at `offset` of disk `disk_id`; returns the LSN of its last
    /// record. Not durable until a point, sync or close returns.
    pub fn write(&mut self, disk_id: u32, offset: u64, data: &[u8]) -> Result<u64> {
        self.check_range(disk_id, offset, data.len() as u64)?;
        let mut lsn = 0;
        for (i, piece) in data.chunks(RECORD_DATA_BYTES_MAX as usize).enumerate() {
            let (payload, flags) = encode_payload(self.header.compression, piece);
            lsn = self.append_data(
                disk_id,
                offset + (i as u64 * RECORD_DATA_BYTES_MAX),
                piece.len() as u64,
                flags,
                &payload,
            )?;
        }
        Ok(lsn)
    }

    /// Stages a write whose payload was already encoded by [`encode_payload`].
    pub(crate) fn append_data(
        &mut self,
        disk_id: u32,
        offset: u64,
        length: u64,
        flags: u8,
        payload: &[u8],
    ) -> Result<u64> {
        let h = record(
            RecordKind::Write,
            flags,
            disk_id,
            payload.len() as u32,
            offset,
            length,
        );
        self.append(h, payload)
    }

    /// Stages setting `len` bytes at `offset` of disk `disk_id` to zero (trim, discard,
    /// write-zeroes); returns the LSN of its last record.
    pub fn zero(&mut self, disk_id: u32, offset: u64, len: u64) -> Result<u64> {
        self.check_range(disk_id, offset, len)?;
        let mut lsn = 0;
        let mut at = offset;
        while at < offset + len {
            let piece = (offset + len - at).min(RECORD_DATA_BYTES_MAX);
            lsn = self.append(record(RecordKind::Zero, 0, disk_id, 0, at, piece), &[])?;
            at += piece;
        }
        Ok(lsn)
    }

    /// Takes a recovery point over every disk. Returns only when the point and everything
    /// before it are durable.
    pub fn point(&mut self, kind: PointKind, label: &str) -> Result<PointInfo> {
        let info = self.frame_point(kind, label)?;
        self.flush(true)?;
        Ok(info)
    }

    /// Frames a point's marker and indexes it; durable only once a sync covers it.
    pub(crate) fn frame_point(&mut self, kind: PointKind, label: &str) -> Result<PointInfo> {
        self.check_poison()?;
        self.check_not_migrated()?;
        if label.len() > LABEL_BYTES_MAX {
            return Err(WriteError::new(
                WriteErrorKind::InvalidRequest,
                format!(
                    "the label is {} bytes; the limit is {LABEL_BYTES_MAX}",
                    label.len()
                ),
            ));
        }
        let point = PointPayload {
            point_id: self.next_point_id,
            time_unix_ns: crate::now_unix_ns(),
            kind,
            label: label.to_owned(),
        };
        let payload = point.encode();
        let lsn = self.append(
            record(RecordKind::Point, 0, 0, payload.len() as u32, 0, 0),
            &payload,
        )?;
        let record_offset = self.active.end()
            - payload.len() as u64
            - replog_format::record::RECORD_HEADER_BYTES as u64;
        self.active.footer_bytes += (FOOTER_POINT_FIXED_BYTES + label.len()) as u64;
        let entry = PointEntry {
            lsn,
            record_offset,
            point,
        };
        let info = PointInfo::from_segment(self.active.id, &entry);
        self.active.points.push(entry);
        self.next_point_id += 1;
        Ok(info)
    }

    /// Makes every staged record durable.
    pub fn sync(&mut self) -> Result<()> {
        self.flush(true)
    }

    /// Seals the open segment, when it holds any record, and opens the next: its points become
    /// part of the manifest and its file immutable (what `sync` ships). Returns whether it
    /// sealed.
    pub fn seal_segment(&mut self) -> Result<bool> {
        self.check_poison()?;
        if self.active.record_count() == 0 {
            return Ok(false);
        }
        self.seal_and_rotate()?;
        Ok(true)
    }

    /// Makes every staged record durable and releases the vault.
    pub fn close(mut self) -> Result<()> {
        self.flush(true)
    }
}

fn record(
    kind: RecordKind,
    flags: u8,
    disk_id: u32,
    stored_len: u32,
    disk_offset: u64,
    length: u64,
) -> RecordHeader {
    RecordHeader {
        crc: 0,
        kind,
        flags,
        lsn: 0,
        segment_id: 0,
        segment_offset: 0,
        synced_upto: 0,
        disk_id,
        stored_len,
        disk_offset,
        length,
    }
}

/// Stands in for the active segment before recovery has opened the real one.
#[derive(Debug)]
struct Closed;

impl File for Closed {
    fn read_at(&self, _: &mut [u8], _: u64) -> std::io::Result<usize> {
        Err(std::io::Error::other("no open segment"))
    }
    fn write_batch(&self, _: &[WriteAt<'_>], _: bool) -> std::io::Result<()> {
        Err(std::io::Error::other("no open segment"))
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Err(std::io::Error::other("no open segment"))
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(0)
    }
    fn set_len(&self, _: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("no open segment"))
    }
    fn allocate(&self, _: u64, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn zero_range(&self, _: u64, _: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("no open segment"))
    }
    fn map(&self) -> std::io::Result<replog_io::Mapped> {
        Ok(replog_io::Mapped::Owned(Vec::new()))
    }
}
