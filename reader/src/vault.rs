//! Opening a vault for reading: the vault header, the manifest, and one scan of the open journal
//! segment, taken together as a snapshot. Everything later (points, views, statistics) answers
//! from that snapshot, so a writer working meanwhile never changes what an open [`Vault`] sees.
//!
//! A `Vault` is a cheap handle (`Clone` shares it) and is safe to use from many threads.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use replog_format::header::{VAULT_HEADER_BYTES, VaultHeader};
use replog_format::limits::MANIFEST_BYTES_MAX;
use replog_format::manifest::{DiskEntry, MANIFEST_HEADER_BYTES, Manifest};
use replog_format::record::RecordKind;
use replog_format::segment::{Expect, ExtentEntry, SegmentEnd};
use replog_format::{layout, magic, vault_seed};
use replog_io::{OpenMode, Storage};

use crate::base_image::BaseImage;
use crate::error::{ReadError, ReadErrorKind, Result};
use crate::points::{self, PointInfo};
use crate::segments::{SegmentCtx, SegmentSlot, SlotState};

/// An open vault: a consistent snapshot of its header, manifest and journal.
#[derive(Clone, Debug)]
pub struct Vault {
    pub(crate) inner: Arc<VaultInner>,
}

#[derive(Debug)]
pub(crate) struct VaultInner {
    pub storage: Arc<dyn Storage>,
    pub dir: PathBuf,
    pub header: VaultHeader,
    pub seed: u32,
    pub manifest: Manifest,
    pub segments: Vec<SegmentSlot>,
    pub points: Vec<PointInfo>,
    pub last_lsn: u64,
    /// Base images by manifest disk index, opened and checked on first use.
    pub bases: Vec<OnceLock<Arc<BaseImage>>>,
}

/// The open segment as the vault's scan found it, for `inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenSegmentInfo {
    /// Its id.
    pub segment_id: u64,
    /// Its first LSN.
    pub first_lsn: u64,
    /// The LSN of its last valid record (`first_lsn - 1` when it has none).
    pub last_lsn: u64,
    /// Write, zero and point records found.
    pub records: usize,
    /// The file's length when it was mapped.
    pub file_bytes: u64,
    /// Where its valid records end, and why (clean end, torn tail, or sealed meanwhile).
    pub end: SegmentEnd,
}

/// Sizes and counts of a vault, for `inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultStats {
    /// Disks in the manifest.
    pub disks: usize,
    /// Journal segments in the manifest.
    pub segments: usize,
    /// Of which sealed.
    pub sealed_segments: usize,
    /// Recovery points, including those of the open segment.
    pub points: usize,
    /// The LSN every base reflects.
    pub base_lsn: u64,
    /// The LSN of the last valid record.
    pub last_lsn: u64,
    /// Sum of the lengths of the journal segment files.
    pub journal_bytes: u64,
    /// Sum of the lengths of the base files (apparent sizes; holes included).
    pub base_bytes: u64,
    /// The open segment, if there is one.
    pub open_segment: Option<OpenSegmentInfo>,
}

impl Vault {
    /// Opens the vault in `dir`: reads `VAULT` and `MANIFEST` and scans the open segment.
    pub fn open(storage: Arc<dyn Storage>, dir: &Path) -> Result<Vault> {
        let header = read_vault_header(storage.as_ref(), dir)?;
        let seed = vault_seed(&header.vault_id);
        let manifest = read_manifest(storage.as_ref(), dir)?;
        if manifest.vault_id != header.vault_id {
            return Err(ReadError::damaged(
                layout::MANIFEST_FILE,
                MANIFEST_HEADER_BYTES as u64,
                "the manifest belongs to another vault (its vault id differs from VAULT's)",
            ));
        }
        let mut segments = Vec::with_capacity(manifest.segments.len());
        for entry in &manifest.segments {
            segments.push(match entry.sealed {
                Some(info) => SegmentSlot::sealed(entry, info),
                None => {
                    let expect = Expect {
                        vault_id: header.vault_id,
                        seed,
                        segment_id: entry.segment_id,
                    };
                    SegmentSlot::open(storage.as_ref(), dir, entry, &expect)?
                }
            });
        }
        let open_points = segments.last().and_then(|s| match &s.state {
            SlotState::Open(snap) => Some((s.id, snap.points.as_slice())),
            SlotState::Sealed { .. } => None,
        });
        let points = points::merge(&manifest, open_points);
        let last_lsn = segments
            .last()
            .map_or(0, SegmentSlot::last_lsn)
            .max(manifest.base_lsn);
        let bases = manifest.disks.iter().map(|_| OnceLock::new()).collect();
        let inner = VaultInner {
            storage,
            dir: dir.to_path_buf(),
            header,
            seed,
            manifest,
            segments,
            points,
            last_lsn,
            bases,
        };
        Ok(Vault {
            inner: Arc::new(inner),
        })
    }

    /// The last LSN of every sealed segment at or after the base, increasing: where checkpoint
    /// indexes can stand.
    pub fn sealed_segment_ends(&self) -> Vec<u64> {
        let base_lsn = self.inner.manifest.base_lsn;
        self.inner
            .manifest
            .segments
            .iter()
            .filter_map(|s| s.sealed.map(|i| i.last_lsn))
            .filter(|&l| l >= base_lsn)
            .collect()
    }

    /// The vault directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The storage the vault is read through.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// The vault header.
    pub fn header(&self) -> &VaultHeader {
        &self.inner.header
    }

    /// The manifest as it was read.
    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    /// The disks, in id order.
    pub fn disks(&self) -> &[DiskEntry] {
        &self.inner.manifest.disks
    }

    /// Every recovery point, in LSN order: the manifest's and the open segment's.
    pub fn points(&self) -> &[PointInfo] {
        &self.inner.points
    }

    /// The point with id `point_id`.
    pub fn point(&self, point_id: u64) -> Option<&PointInfo> {
        self.inner.points.iter().find(|p| p.point_id == point_id)
    }

    /// The latest point.
    pub fn latest_point(&self) -> Option<&PointInfo> {
        self.inner.points.last()
    }

    /// The latest point taken at or before `time_unix_ns`.
    pub fn point_at_or_before(&self, time_unix_ns: i64) -> Option<&PointInfo> {
        points::at_or_before(&self.inner.points, time_unix_ns)
    }

    /// The LSN of the last valid record (the base LSN when the journal holds none past it).
    pub fn last_lsn(&self) -> u64 {
        self.inner.last_lsn
    }

    /// The LSN every base reflects.
    pub fn base_lsn(&self) -> u64 {
        self.inner.manifest.base_lsn
    }

    /// Damage found in the open segment before its tail, naming the file and offset. The points
    /// before it are listed and readable; none after it is. `verify` names it too.
    pub fn damage(&self) -> Option<ReadError> {
        let slot = self.inner.segments.last()?;
        let SlotState::Open(snap) = &slot.state else {
            return None;
        };
        let e = snap.damage.clone()?;
        Some(ReadError::decode(
            replog_format::layout::segment_path(Path::new(""), slot.id),
            0,
            e,
        ))
    }

    /// The open segment as scanned, if the manifest lists one.
    pub fn open_segment(&self) -> Option<OpenSegmentInfo> {
        let slot = self.inner.segments.last()?;
        let SlotState::Open(snap) = &slot.state else {
            return None;
        };
        Some(OpenSegmentInfo {
            segment_id: slot.id,
            first_lsn: slot.first_lsn,
            last_lsn: snap.last_lsn,
            records: snap.extents.len() + snap.points.len(),
            file_bytes: snap.bytes.len() as u64,
            end: snap.end.clone(),
        })
    }

    /// The write and zero records of the journal after `lsn`, in LSN order: from the footers of
    /// the sealed segments that hold any (each read and checked on first use) and from the scan
    /// of the open segment, whose torn tail or damage already ended its records.
    pub fn journal_extents_after(&self, lsn: u64) -> Result<Vec<ExtentEntry>> {
        let ctx = self.inner.segment_ctx();
        let mut out = Vec::new();
        for slot in self.inner.segments.iter().filter(|s| s.last_lsn() > lsn) {
            // Resize records are extents of the footer too, but write and zero no byte.
            let changes = slot
                .extents(&ctx)?
                .iter()
                .filter(|e| e.lsn > lsn && matches!(e.kind, RecordKind::Write | RecordKind::Zero));
            out.extend(changes.copied());
        }
        Ok(out)
    }

    /// The file lengths of the sealed segments whose every record is at or below `lsn`: what
    /// moving the base to `lsn` would let compaction delete. A segment that cannot be opened
    /// counts nothing.
    pub fn sealed_journal_bytes_upto(&self, lsn: u64) -> u64 {
        let ctx = self.inner.segment_ctx();
        self.inner
            .manifest
            .segments
            .iter()
            .zip(&self.inner.segments)
            .filter(|(entry, _)| entry.sealed.is_some_and(|i| i.last_lsn <= lsn))
            .filter_map(|(_, slot)| slot.file_bytes(&ctx).ok())
            .sum()
    }

    /// Counts and sizes; opens every segment and base file to learn their lengths.
    pub fn stats(&self) -> Result<VaultStats> {
        let ctx = self.inner.segment_ctx();
        let mut journal_bytes = 0;
        for slot in &self.inner.segments {
            journal_bytes += slot.file_bytes(&ctx)?;
        }
        let mut base_bytes = 0;
        for index in 0..self.inner.manifest.disks.len() {
            base_bytes += self.inner.base(index)?.file_bytes()?;
        }
        Ok(VaultStats {
            disks: self.inner.manifest.disks.len(),
            segments: self.inner.segments.len(),
            sealed_segments: self
                .inner
                .manifest
                .segments
                .iter()
                .filter(|s| s.sealed.is_some())
                .count(),
            points: self.inner.points.len(),
            base_lsn: self.inner.manifest.base_lsn,
            last_lsn: self.inner.last_lsn,
            journal_bytes,
            base_bytes,
            open_segment: self.open_segment(),
        })
    }
}

impl VaultInner {
    pub(crate) fn segment_ctx(&self) -> SegmentCtx<'_> {
        SegmentCtx {
            storage: self.storage.as_ref(),
            dir: &self.dir,
            vault_id: self.header.vault_id,
            seed: self.seed,
        }
    }

    /// The base image of the disk at `index` in the manifest, opened and checked once.
    pub(crate) fn base(&self, index: usize) -> Result<Arc<BaseImage>> {
        if let Some(base) = self.bases[index].get() {
            return Ok(base.clone());
        }
        let disk = &self.manifest.disks[index];
        let base = BaseImage::open(
            self.storage.as_ref(),
            &self.dir,
            disk,
            &self.header.vault_id,
            self.seed,
            self.manifest.resized,
        )?;
        let _ = self.bases[index].set(Arc::new(base));
        Ok(self.bases[index]
            .get()
            .expect("the base was just set")
            .clone())
    }
}

/// Reads a whole small file of the vault, refusing one longer than `max_bytes`.
fn read_small_file(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    max_bytes: u64,
) -> Result<Vec<u8>> {
    let file = storage
        .open(&dir.join(name), OpenMode::Read)
        .map_err(|e| ReadError::io(name, "open", e))?;
    let len = file.len().map_err(|e| ReadError::io(name, "stat", e))?;
    if len > max_bytes {
        return Err(ReadError::damaged(
            name,
            max_bytes,
            format!("the file is {len} bytes, at most {max_bytes} are allowed"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| ReadError::read(name, 0, len, e))?;
    Ok(bytes)
}

pub(crate) fn read_vault_header(storage: &dyn Storage, dir: &Path) -> Result<VaultHeader> {
    let name = layout::VAULT_FILE;
    let not_a_vault = |why: &str| {
        ReadError::new(
            ReadErrorKind::NotAVault,
            format!("{} is not a replog vault: {why}", dir.display()),
        )
    };
    match storage.exists(&dir.join(name)) {
        Ok(true) => {}
        Ok(false) if storage.exists(dir).unwrap_or(true) => {
            return Err(not_a_vault("it has no VAULT file"));
        }
        Ok(false) => {
            return Err(ReadError::new(
                ReadErrorKind::NotFound,
                format!("{}: no such vault directory", dir.display()),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(not_a_vault("it is not a directory"));
        }
        Err(e) => return Err(ReadError::io(dir.join(name), "look for", e)),
    }
    // A longer file is read far enough to report its length as a decode error.
    let bytes =
        read_small_file(storage, dir, name, 2 * VAULT_HEADER_BYTES as u64).map_err(|e| {
            if e.kind() == ReadErrorKind::Damaged {
                not_a_vault("its VAULT file is too long")
            } else {
                e
            }
        })?;
    if !bytes.starts_with(&magic::VAULT) {
        return Err(not_a_vault("its VAULT file is not a vault header"));
    }
    VaultHeader::decode(&bytes).map_err(|e| ReadError::decode(name, 0, e))
}

/// Reads `MANIFEST`. A vault has one from `replog init` on (it is only ever replaced by a
/// rename), so one that is missing next to a `VAULT` file is damage, as for every command.
pub(crate) fn read_manifest(storage: &dyn Storage, dir: &Path) -> Result<Manifest> {
    let name = layout::MANIFEST_FILE;
    let bytes = read_small_file(
        storage,
        dir,
        name,
        MANIFEST_HEADER_BYTES as u64 + MANIFEST_BYTES_MAX,
    )
    .map_err(|e| match e.kind() {
        ReadErrorKind::NotFound => ReadError::damaged(
            name,
            0,
            "the file is missing; every vault has one from `replog init` on",
        ),
        _ => e,
    })?;
    Manifest::decode(&bytes).map_err(|e| ReadError::decode(name, 0, e))
}
