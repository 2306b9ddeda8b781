//! The [`Writer`], a small façade over the owners of a vault's parts. It creates and opens
//! vaults (building itself from what recovery returns), checks each request (disk ranges, a
//! poisoned journal, a migration's refusal) and hands it to an owner: the [`Journal`]
//! (records, points, rollover, the pipeline), [`Bases`] (base images), [`Ingest`] (an image
//! scan), or [`Retention`] (policy, pins, and the `Compaction` a prune runs). It holds the
//! [`VaultState`] (storage, directory, header, the manifest they all commit to), the journal
//! and the bases, and lends them to the owner for the length of one call.
//!
//! Imports flow one way: this file uses the owners, none of which knows the `Writer`. Only
//! migration, which drives a whole vault through its phases, uses the `Writer` from above.

use std::path::Path;
use std::sync::Arc;

use replog_format::header::{Compression, VaultHeader};
use replog_format::layout;
use replog_format::lifecycle::RetentionPolicy;
use replog_format::limits::{
    BLOCK_BYTES_DEFAULT, DISK_BYTES_MAX, DISKS_MAX, RECORD_DATA_BYTES_MAX, SEGMENT_BYTES_DEFAULT,
};
use replog_format::magic::FormatVersion;
use replog_format::manifest::{DiskEntry, Manifest, SegmentEntry, valid_disk_name};
use replog_format::record::{PointKind, RecordHeader, RecordKind};
use replog_format::{VaultId, vault_seed};
use replog_io::{File, OpenMode, Storage, WriteAt};
use replog_reader::{LiveLease, PointInfo, Registrations};

use crate::bases::{BaseSpec, Bases};
use crate::batch::write_records;
use crate::compress::encode_payload;
use crate::error::{Result, WriteError, WriteErrorKind};
use crate::ingest::{ImageSource, Ingest, IngestStats};
use crate::journal::{Journal, JournalFiles, PointTicket, empty_header};
use crate::lock::VaultLock;
use crate::manifest_io::migration_refusal;
use crate::pipeline::WriterOptions;
use crate::recover::{Recovered, RecoveryReport};
use crate::retention::{PruneOptions, PruneReport, Retention};
use crate::state::VaultState;

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

/// The one writer of a vault. See the crate documentation for the durability contract.
#[derive(Debug)]
pub struct Writer {
    vault: VaultState,
    journal: Journal,
    bases: Bases,
    recovery: RecoveryReport,
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
        let header = new_header(settings)?;
        let s = storage.as_ref();
        refuse_non_empty(s, dir)?;
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
            vault_id: header.vault_id,
            generation: 1,
            base_lsn: 0,
            disks: Vec::new(),
            segments: vec![SegmentEntry {
                segment_id: 1,
                first_lsn: 1,
                sealed: None,
                prefix_released: false,
            }],
            points: Vec::new(),
            lifecycle: Default::default(),
            resized: false,
            dead_ranges: Vec::new(),
        };
        let journal = Journal::start(JournalFiles::of(&storage, dir, &header))?;
        crate::manifest_io::store(s, dir, &manifest)?;
        // VAULT goes last: a directory without it is not a vault, whatever else it holds.
        write_vault_file(s, dir, &header)?;
        let recovered = Recovered {
            journal,
            manifest,
            report: RecoveryReport::default(),
        };
        Ok(Writer::assemble(storage, dir, header, lock, recovered))
    }

    /// The writer over the state recovery (or creation) left.
    fn assemble(
        storage: Arc<dyn Storage>,
        dir: &Path,
        header: VaultHeader,
        lock: VaultLock,
        recovered: Recovered,
    ) -> Writer {
        let bases = Bases::new(
            storage.clone(),
            dir,
            header.vault_id,
            header.block_bytes,
            vault_seed(&header.vault_id),
        );
        Writer {
            vault: VaultState {
                storage,
                dir: dir.to_path_buf(),
                header,
                manifest: recovered.manifest,
            },
            journal: recovered.journal,
            bases,
            recovery: recovered.report,
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
                "MANIFEST belongs to another vault than VAULT",
            )
            .in_file(dir));
        }
        if !migrating && let Some(e) = migration_refusal(&manifest, dir) {
            return Err(e);
        }
        let recovered = crate::recover::recover(&storage, dir, &header, manifest)?;
        Ok(Writer::assemble(storage, dir, header, lock, recovered))
    }

    /// What [`Writer::open`] found and did.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.vault.dir
    }

    /// The vault header.
    pub fn header(&self) -> &VaultHeader {
        &self.vault.header
    }

    /// The storage the vault is on.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.vault.storage
    }

    /// The disks, in id order.
    pub fn disks(&self) -> Vec<DiskInfo> {
        self.vault.manifest.disks.iter().map(DiskInfo::of).collect()
    }

    /// The disk called `name`.
    pub fn disk(&self, name: &str) -> Result<DiskInfo> {
        self.disk_entry(name).map(DiskInfo::of)
    }

    /// The manifest's entry of the disk called `name`.
    fn disk_entry(&self, name: &str) -> Result<&DiskEntry> {
        let disks = &self.vault.manifest.disks;
        disks.iter().find(|d| d.name == name).ok_or_else(|| {
            WriteError::new(
                WriteErrorKind::InvalidRequest,
                format!("the vault has no disk named {name:?}"),
            )
            .in_file(self.dir())
        })
    }

    /// The LSN of the last record staged (0 when there is none).
    pub fn last_lsn(&self) -> u64 {
        self.journal.last_lsn()
    }

    /// Every recovery point offered to readers, oldest first: not older than the base images,
    /// not retired by retention.
    pub fn points(&self) -> Vec<PointInfo> {
        self.journal.points(&self.vault.manifest)
    }

    /// The manifest as last stored: disks, segments, base LSN and the lifecycle section.
    pub fn manifest(&self) -> &Manifest {
        &self.vault.manifest
    }

    /// Stores `manifest` as the vault's manifest, durably, and keeps it.
    pub(crate) fn commit(&mut self, manifest: Manifest) -> Result<()> {
        self.vault.commit(manifest)
    }

    /// Grows disk `name` to `new_bytes`: a resize record, acknowledged (durable) before this
    /// returns, after which writes up to the new size are accepted. Points before it keep the
    /// old size; the grown range reads as zeros until written. The current size changes
    /// nothing; a smaller size is refused ([`WriteErrorKind::InvalidRequest`], naming the disk
    /// and both sizes): disks only grow.
    pub fn resize_disk(&mut self, name: &str, new_bytes: u64) -> Result<DiskInfo> {
        self.check_change()?;
        let disk = self.disk_entry(name)?.clone();
        crate::resize::grow(&mut self.vault, &mut self.journal, &disk, new_bytes)?;
        self.disk(name)
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
        self.check_change()?;
        self.check_new_disk(name, disk_bytes)?;
        let disk_id = self
            .vault
            .manifest
            .disks
            .last()
            .map_or(1, |d| d.disk_id + 1);
        // Everything staged before the disk exists must be durable first: after any crash the
        // journal then resumes at or after `added_lsn`, so no record of the disk can precede it.
        self.journal.flush(true)?;
        let added_lsn = self.journal.last_lsn() + 1;
        let spec = BaseSpec {
            disk_id,
            generation: 1,
            disk_bytes,
            base_lsn: self.vault.manifest.base_lsn,
        };
        let base_header_crc = self.bases.seed(spec, image, self.journal.last_lsn())?;
        let mut manifest = self.vault.manifest.clone();
        manifest.disks.push(DiskEntry {
            disk_id,
            name: name.to_owned(),
            disk_bytes,
            added_lsn,
            base_generation: 1,
            base_header_crc,
        });
        manifest.generation += 1;
        self.commit(manifest)?;
        Ok(DiskInfo {
            disk_id,
            name: name.to_owned(),
            disk_bytes,
        })
    }

    /// Refuses a disk that could not be added: a bad or taken name, a bad size, too many.
    fn check_new_disk(&self, name: &str, disk_bytes: u64) -> Result<()> {
        let invalid = |m: String| Err(WriteError::new(WriteErrorKind::InvalidRequest, m));
        if !valid_disk_name(name) {
            return invalid(format!(
                "{name:?} is not a valid disk name: use 1 to 64 of A-Z a-z 0-9 . _ -, not starting with ."
            ));
        }
        let disks = &self.vault.manifest.disks;
        if disks.iter().any(|d| d.name == name) {
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
        if disks.len() >= DISKS_MAX as usize {
            return invalid(format!("the vault already has {DISKS_MAX} disks"));
        }
        Ok(())
    }

    /// Refuses a change after a failure (poisoned) or once a migration started.
    /// Whether a write or sync failed: then every later change is refused with the first
    /// failure, and only a writer opened again (which recovers) can go on.
    pub fn is_poisoned(&self) -> bool {
        self.journal.check_poison().is_err()
    }

    fn check_change(&self) -> Result<()> {
        self.journal.check_poison()?;
        self.vault.check_not_migrated()
    }

    /// Refuses a range that is empty or not within disk `disk_id`, and any change once a
    /// migration started.
    fn check_range(&self, disk_id: u32, offset: u64, len: u64) -> Result<()> {
        self.vault.check_not_migrated()?;
        let disk = self
            .vault
            .manifest
            .disks
            .iter()
            .find(|d| d.disk_id == disk_id)
            .ok_or_else(|| {
                WriteError::new(
                    WriteErrorKind::InvalidRequest,
                    format!("the vault has no disk with id {disk_id}"),
                )
                .for_disk(disk_id)
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
            )
            .for_disk(disk_id));
        }
        Ok(())
    }

    /// Stages a write of `data` at `offset` of disk `disk_id`; returns the LSN of its last
    /// record. Not durable until a point, sync or close returns.
    pub fn write(&mut self, disk_id: u32, offset: u64, data: &[u8]) -> Result<u64> {
        self.check_range(disk_id, offset, data.len() as u64)?;
        let mut lsn = 0;
        for (i, piece) in data.chunks(RECORD_DATA_BYTES_MAX as usize).enumerate() {
            let (payload, flags) = encode_payload(self.vault.header.compression, piece);
            let h = RecordHeader {
                kind: RecordKind::Write,
                flags,
                disk_id,
                stored_len: payload.len() as u32,
                disk_offset: offset + (i as u64 * RECORD_DATA_BYTES_MAX),
                length: piece.len() as u64,
                ..empty_header()
            };
            lsn = self.journal.append(&mut self.vault.manifest, h, &payload)?;
        }
        Ok(lsn)
    }

    /// Stages the writes `(offset, data)` to disk `disk_id`, as [`Writer::write`] would one
    /// after the other, but with compression and checksums computed in parallel. Returns the
    /// LSN of the last record. Not durable until a point, sync or close returns.
    ///
    /// Memory: the compressed payloads of the batch are held until it is framed.
    pub fn write_many(&mut self, disk_id: u32, writes: &[(u64, &[u8])]) -> Result<u64> {
        for (offset, data) in writes {
            self.check_range(disk_id, *offset, data.len() as u64)?;
        }
        let records = write_records(self.vault.header.compression, disk_id, writes);
        self.journal.append_many(&mut self.vault.manifest, &records)
    }

    /// Stages setting `len` bytes at `offset` of disk `disk_id` to zero (trim, discard,
    /// write-zeroes); returns the LSN of its last record.
    pub fn zero(&mut self, disk_id: u32, offset: u64, len: u64) -> Result<u64> {
        self.check_range(disk_id, offset, len)?;
        let mut lsn = 0;
        let mut at = offset;
        while at < offset + len {
            let piece = (offset + len - at).min(RECORD_DATA_BYTES_MAX);
            let h = RecordHeader {
                kind: RecordKind::Zero,
                disk_id,
                disk_offset: at,
                length: piece,
                ..empty_header()
            };
            lsn = self.journal.append(&mut self.vault.manifest, h, &[])?;
            at += piece;
        }
        Ok(lsn)
    }

    /// Takes a recovery point over every disk. Returns only when the point and everything
    /// before it are durable.
    pub fn point(&mut self, kind: PointKind, label: &str) -> Result<PointInfo> {
        self.check_change()?;
        let info = self
            .journal
            .frame_point(&mut self.vault.manifest, kind, label)?;
        self.journal.flush(true)?;
        Ok(info)
    }

    /// Takes a recovery point without waiting for it to be durable: the marker is framed and
    /// handed to the disk with a data sync, and the caller goes on writing. The point is
    /// acknowledged only when [`Writer::wait_point`] returns it. Points taken while a sync is
    /// running share the next one (group commit).
    pub fn point_async(&mut self, kind: PointKind, label: &str) -> Result<PointTicket> {
        self.check_change()?;
        self.journal
            .point_async(&mut self.vault.manifest, kind, label)
    }

    /// Whether the point of `ticket` is durable already, without waiting.
    pub fn point_is_durable(&mut self, ticket: &PointTicket) -> Result<bool> {
        self.journal.point_is_durable(ticket)
    }

    /// Waits until the point of `ticket` and everything before it are durable, and returns
    /// it: the point is then acknowledged.
    pub fn wait_point(&mut self, ticket: PointTicket) -> Result<PointInfo> {
        self.journal.wait_point(ticket)
    }

    /// Makes every staged record durable.
    pub fn sync(&mut self) -> Result<()> {
        self.journal.flush(true)
    }

    /// Seals the open segment, when it holds any record, and opens the next: its points become
    /// part of the manifest and its file immutable (what `sync` ships). Returns whether it
    /// sealed.
    pub fn seal_segment(&mut self) -> Result<bool> {
        self.journal.seal(&mut self.vault.manifest)
    }

    /// Sets how this writer moves bytes to the disk. Waits for every buffer in flight first;
    /// the next write uses the new options.
    pub fn set_options(&mut self, options: WriterOptions) -> Result<()> {
        self.journal.set_options(options)
    }

    /// The options in force.
    pub fn options(&self) -> WriterOptions {
        self.journal.options()
    }

    /// Why the journal is not written as the options ask (direct I/O refused by the
    /// filesystem), once the open segment has been written to.
    pub fn io_note(&self) -> Option<&str> {
        self.journal.io_note()
    }

    /// Makes every staged record durable and releases the vault.
    pub fn close(mut self) -> Result<()> {
        self.journal.flush(true)
    }

    /// Journals the blocks of `image` that differ from disk `name`'s latest state, makes them
    /// durable, and updates the digest cache. `progress` is called with the bytes scanned.
    pub fn ingest(
        &mut self,
        name: &str,
        image: &dyn File,
        image_path: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<IngestStats> {
        self.journal.check_poison()?;
        let disk = self.disk_entry(name)?.clone();
        let source = ImageSource {
            image,
            image_path,
            progress,
        };
        Ingest::new(&mut self.vault, &mut self.journal).image(&disk, &source)
    }

    /// Sets (or, with `None`, removes) the retention policy.
    pub fn set_retention(&mut self, policy: Option<RetentionPolicy>) -> Result<()> {
        self.check_change()?;
        self.retention().set_policy(policy)
    }

    /// Pins point `point_id`: retention never prunes it.
    pub fn pin(&mut self, point_id: u64) -> Result<()> {
        self.check_change()?;
        self.retention().pin(point_id)
    }

    /// Unpins point `point_id`.
    pub fn unpin(&mut self, point_id: u64) -> Result<()> {
        self.check_change()?;
        self.retention().unpin(point_id)
    }

    /// Applies the retention policy (or `keep_last`): plans, then compacts.
    pub fn prune(&mut self, opts: &PruneOptions) -> Result<PruneReport> {
        self.check_change()?;
        self.retention().prune(opts)
    }

    /// Journal bytes (file lengths) of the sealed segments wholly at or below `lsn`.
    pub fn reclaimable(&self, lsn: Option<u64>) -> Result<u64> {
        crate::retention::reclaimable(&self.vault, lsn)
    }

    /// Retention over this writer's parts, for one call.
    fn retention(&mut self) -> Retention<'_> {
        Retention {
            vault: &mut self.vault,
            journal: &mut self.journal,
            bases: &self.bases,
        }
    }

    /// The registration lock of the readers' leases, held exclusive, and the live leases.
    pub(crate) fn live_leases(&self) -> Result<(Registrations, Vec<LiveLease>)> {
        self.vault.live_leases()
    }
}

impl DiskInfo {
    /// The disk a manifest entry describes.
    fn of(d: &DiskEntry) -> DiskInfo {
        DiskInfo {
            disk_id: d.disk_id,
            name: d.name.clone(),
            disk_bytes: d.disk_bytes,
        }
    }
}

/// The header of a new vault with `settings`, a fresh id, validated.
fn new_header(settings: VaultSettings) -> Result<VaultHeader> {
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
    Ok(header)
}

/// Refuses to create a vault in a directory that holds anything.
fn refuse_non_empty(s: &dyn Storage, dir: &Path) -> Result<()> {
    if s.exists(dir).map_err(io_at(dir, "checking"))?
        && !s.read_dir(dir).map_err(io_at(dir, "listing"))?.is_empty()
    {
        return Err(WriteError::new(
            WriteErrorKind::AlreadyExists,
            "the directory is not empty; a vault is created in a new or empty directory",
        )
        .in_file(dir));
    }
    Ok(())
}

/// Writes and syncs `VAULT`, then syncs the directories creation made and the parent, so that
/// the whole vault is durable when `create` returns.
fn write_vault_file(s: &dyn Storage, dir: &Path, header: &VaultHeader) -> Result<()> {
    let vault_path = dir.join(layout::VAULT_FILE);
    let f = s
        .open(&vault_path, OpenMode::CreateNew)
        .map_err(io_at(&vault_path, "creating"))?;
    f.write_batch(
        &[WriteAt {
            offset: 0,
            data: &header.encode(),
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use replog_format::DecodeError;
    use replog_io::sim::SimStorage;

    use super::*;

    /// A damaged manifest is refused naming the file and offset, with the decoder's error as
    /// the source rather than flattened into the message.
    #[test]
    fn a_damaged_manifest_is_refused_with_the_decode_error_as_source() {
        let storage: Arc<dyn Storage> = SimStorage::new(0);
        let dir = Path::new("/v");
        let mut w = Writer::create(storage.clone(), dir, VaultSettings::default()).unwrap();
        w.add_disk("d", 1 << 20).unwrap();
        w.close().unwrap();
        let path = dir.join(layout::MANIFEST_FILE);
        let file = storage.open(&path, OpenMode::ReadWrite).unwrap();
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, 40).unwrap();
        byte[0] ^= 0xff;
        file.write_batch(
            &[WriteAt {
                offset: 40,
                data: &byte,
            }],
            true,
        )
        .unwrap();

        let e = Writer::open(storage, dir).unwrap_err();
        assert_eq!(e.kind(), WriteErrorKind::Damaged, "{e}");
        assert_eq!(e.path(), Some(path.as_path()));
        let decode = e
            .source()
            .and_then(|s| s.downcast_ref::<DecodeError>())
            .unwrap_or_else(|| panic!("no decode error under {e:?}"));
        assert_eq!(e.offset(), Some(decode.offset));
        assert_eq!(e.to_string(), format!("{}: {decode}", path.display()));
    }

    /// A request about a disk names the disk as context, not only in the sentence.
    #[test]
    fn a_range_past_the_end_of_a_disk_names_the_disk() {
        let storage: Arc<dyn Storage> = SimStorage::new(0);
        let mut w = Writer::create(storage, Path::new("/v"), VaultSettings::default()).unwrap();
        let d = w.add_disk("d", 1 << 20).unwrap();
        let e = w.write(d.disk_id, (1 << 20) - 1, &[1, 2]).unwrap_err();
        assert_eq!(e.kind(), WriteErrorKind::InvalidRequest);
        assert_eq!(e.disk_id(), Some(d.disk_id));
        assert!(e.source().is_none());
    }
}
