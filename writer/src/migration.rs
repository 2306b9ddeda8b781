//! Complete Migration: ending a migration by materializing the disks at a final point, sealing
//! the vault and removing its journal.
//!
//! A durable state machine kept in the manifest's migration record, each phase committed (one
//! manifest replacement) before the next begins, so a crash at any step resumes where it stopped:
//!
//! | phase | committed when | what the next run does |
//! |---|---|---|
//! | (none) | | recovers the journal, picks the point (default: the newest), refuses if an output exists, commits `started` |
//! | `started` | the point and output directory are fixed; the writer refuses writes and points from here | materializes every disk of the point into the output directory (synced), reads each image back, compares it with the vault and hashes it (xxh3-128), commits `verified` with the hashes |
//! | `verified` | every image is durable and checked | commits `sealed` |
//! | `sealed` | the migration will complete | waits for no reader lease, commits `complete` with the journal removed from the manifest (no segments, no points), then deletes the segment files and the checkpoint indexes (`index/`: each is the map at the end of a segment that no longer exists) |
//! | `complete` | the output disks are the result | nothing: reports the record (and deletes any segment file or checkpoint index a crash left) |
//!
//! The base images stay: they hold the disks at the vault's base LSN, `verify` keeps checking
//! them, and removing the vault directory once the migrated disks are in service frees them.
//! Memory: what materializing takes (see the reader) plus two windows of [`VERIFY_WINDOW_BYTES`]
//! while reading an image back.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::layout;
use replog_format::lifecycle::{MigrationDisk, MigrationPhase, MigrationRecord};
use replog_io::{OpenMode, Storage};
use replog_reader::{MaterializeOptions, ReadError, ReadErrorKind, Vault};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Result, WriteError, WriteErrorKind};
use crate::writer::Writer;

/// Bytes of an output image read back at a time, and as many of the vault's.
pub const VERIFY_WINDOW_BYTES: usize = 8 << 20;

/// What to migrate, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationOptions {
    /// Where `NAME.raw` of every disk is written.
    pub out_dir: PathBuf,
    /// The point to migrate to; `None`: the newest.
    pub point_id: Option<u64>,
    /// How the point's view is built (its memory budget).
    pub view: replog_reader::ViewOptions,
}

/// One disk of a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigratedDisk {
    /// Its name.
    pub name: String,
    /// Its id.
    pub disk_id: u32,
    /// Its size, the image's length.
    pub size_bytes: u64,
    /// The image.
    pub path: PathBuf,
    /// xxh3-128 of the image, once verified.
    pub xxh3: Option<u128>,
}

/// What a run of Complete Migration found and did (or, for a plan, would do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationReport {
    /// The record as it stands after the run (for a plan: as it would start).
    pub record: MigrationRecord,
    /// The disks.
    pub disks: Vec<MigratedDisk>,
    /// Disks added after the point, which the migration does not include.
    pub omitted_disks: Vec<String>,
    /// The phase a previous, interrupted run had reached, when this run resumed it.
    pub resumed_from: Option<MigrationPhase>,
    /// The migration was already complete: nothing was done.
    pub already_complete: bool,
    /// Segment files deleted by this run.
    pub segments_removed: u64,
    /// Only a plan: nothing was changed.
    pub dry_run: bool,
}

/// A reader's error about the vault at `dir`, keeping its kind where the writer has one.
fn read_err(dir: &Path) -> impl Fn(ReadError) -> WriteError + '_ {
    move |e| {
        let kind = match e.kind() {
            ReadErrorKind::Damaged => WriteErrorKind::Damaged,
            ReadErrorKind::AlreadyExists => WriteErrorKind::AlreadyExists,
            ReadErrorKind::InvalidRequest => WriteErrorKind::InvalidRequest,
            _ => WriteErrorKind::Io,
        };
        WriteError::read(kind, None, e).in_file(dir)
    }
}

fn absolute(out_dir: &Path) -> PathBuf {
    if out_dir.is_absolute() {
        out_dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(out_dir))
            .unwrap_or_else(|_| out_dir.to_path_buf())
    }
}

fn out_dir_string(out_dir: &Path) -> Result<String> {
    let s = absolute(out_dir)
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| {
            WriteError::new(
                WriteErrorKind::InvalidRequest,
                "the output directory must be UTF-8",
            )
            .in_file(out_dir)
        })?;
    if s.len() > replog_format::lifecycle::OUT_DIR_BYTES_MAX {
        return Err(WriteError::new(
            WriteErrorKind::InvalidRequest,
            "the output directory's path is over 4096 bytes",
        ));
    }
    Ok(s)
}

/// What Complete Migration would do, changing nothing.
pub fn migration_plan(
    storage: Arc<dyn Storage>,
    dir: &Path,
    opts: &MigrationOptions,
) -> Result<MigrationReport> {
    let vault = Vault::open(storage, dir).map_err(read_err(dir))?;
    let (record, resumed_from) = match &vault.manifest().lifecycle.migration {
        Some(rec) => {
            check_same(rec, opts, dir)?;
            (rec.clone(), Some(rec.phase))
        }
        None => {
            let point = choose_point(&vault, opts.point_id, dir)?;
            let record = MigrationRecord {
                phase: MigrationPhase::Started,
                point_id: point.point_id,
                lsn: point.lsn,
                started_unix_ns: crate::now_unix_ns(),
                finished_unix_ns: 0,
                out_dir: out_dir_string(&opts.out_dir)?,
                disks: Vec::new(),
            };
            (record, None)
        }
    };
    let (disks, omitted_disks) = disks_of(&vault, &record);
    Ok(MigrationReport {
        already_complete: record.phase == MigrationPhase::Complete,
        record,
        disks,
        omitted_disks,
        resumed_from,
        segments_removed: 0,
        dry_run: true,
    })
}

/// Runs (or resumes) Complete Migration; see the module documentation. Running it again after
/// it completed changes nothing and reports the record.
pub fn complete_migration(
    storage: Arc<dyn Storage>,
    dir: &Path,
    opts: &MigrationOptions,
) -> Result<MigrationReport> {
    crate::recover::read_vault_header(storage.as_ref(), dir)?;
    let peek = crate::manifest_io::load(storage.as_ref(), dir)?;
    if let Some(rec) = peek
        .lifecycle
        .migration
        .as_ref()
        .filter(|r| r.phase == MigrationPhase::Complete)
    {
        check_same(rec, opts, dir)?;
        let _lock = crate::lock::VaultLock::acquire(storage.as_ref(), dir)?;
        let removed = remove_segment_files(storage.as_ref(), dir)?;
        let vault = Vault::open(storage, dir).map_err(read_err(dir))?;
        let (disks, omitted_disks) = disks_of(&vault, rec);
        return Ok(MigrationReport {
            record: rec.clone(),
            disks,
            omitted_disks,
            resumed_from: Some(MigrationPhase::Complete),
            already_complete: true,
            segments_removed: removed,
            dry_run: false,
        });
    }
    let mut w = Writer::open_any(storage.clone(), dir)?;
    let (mut record, resumed_from) = match w.manifest().lifecycle.migration.clone() {
        Some(rec) => {
            check_same(&rec, opts, dir)?;
            let phase = rec.phase;
            (rec, Some(phase))
        }
        None => (start(&mut w, opts)?, None),
    };
    if record.phase == MigrationPhase::Started {
        record.disks = materialize_and_verify(&w, &record, &opts.view)?;
        record.phase = MigrationPhase::Verified;
        commit(&mut w, &record)?;
    }
    if record.phase == MigrationPhase::Verified {
        record.phase = MigrationPhase::Sealed;
        commit(&mut w, &record)?;
    }
    let mut segments_removed = 0;
    if record.phase == MigrationPhase::Sealed {
        segments_removed = remove_journal(&mut w, &mut record)?;
    }
    drop(w);
    let vault = Vault::open(storage, dir).map_err(read_err(dir))?;
    let (disks, omitted_disks) = disks_of(&vault, &record);
    Ok(MigrationReport {
        record,
        disks,
        omitted_disks,
        resumed_from,
        already_complete: false,
        segments_removed,
        dry_run: false,
    })
}

/// A resumed migration must be the one asked for.
fn check_same(rec: &MigrationRecord, opts: &MigrationOptions, dir: &Path) -> Result<()> {
    let out = out_dir_string(&opts.out_dir)?;
    let other_point = opts.point_id.is_some_and(|id| id != rec.point_id);
    if other_point || out != rec.out_dir {
        return Err(WriteError::new(
            WriteErrorKind::InvalidRequest,
            format!(
                "a migration to point {} with output {} was {} already; run it with the same --out (and no other --point)",
                rec.point_id,
                rec.out_dir,
                if rec.phase == MigrationPhase::Complete {
                    "completed"
                } else {
                    "started"
                }
            ),
        )
        .in_file(dir)
        .for_point(rec.point_id));
    }
    Ok(())
}

fn choose_point(
    vault: &Vault,
    point_id: Option<u64>,
    dir: &Path,
) -> Result<replog_reader::PointInfo> {
    let point = match point_id {
        Some(id) => vault.point(id),
        None => vault.latest_point(),
    };
    point.cloned().ok_or_else(|| {
        let e = WriteError::new(
            WriteErrorKind::InvalidRequest,
            match point_id {
                Some(id) => format!("no recovery point {id}; `replog points` lists them"),
                None => {
                    "the vault has no recovery point to migrate to; take one with `replog point`"
                        .to_owned()
                }
            },
        )
        .in_file(dir);
        match point_id {
            Some(id) => e.for_point(id),
            None => e,
        }
    })
}

/// Fixes the point and output directory and refuses writes from now on.
fn start(w: &mut Writer, opts: &MigrationOptions) -> Result<MigrationRecord> {
    w.sync()?;
    let dir = w.dir();
    let vault = Vault::open(w.storage().clone(), dir).map_err(read_err(dir))?;
    let point = choose_point(&vault, opts.point_id, dir)?;
    let view = vault.view_with(&point, &opts.view).map_err(read_err(dir))?;
    for disk in view.disks() {
        let target = opts.out_dir.join(format!("{}.raw", disk.name()));
        let exists = w
            .storage()
            .exists(&target)
            .map_err(|e| WriteError::io(&target, None, "looking for", e))?;
        if exists {
            return Err(WriteError::new(
                WriteErrorKind::AlreadyExists,
                "exists already; remove it or choose another --out",
            )
            .in_file(&target));
        }
    }
    let record = MigrationRecord {
        phase: MigrationPhase::Started,
        point_id: point.point_id,
        lsn: point.lsn,
        started_unix_ns: crate::now_unix_ns(),
        finished_unix_ns: 0,
        out_dir: out_dir_string(&opts.out_dir)?,
        disks: Vec::new(),
    };
    commit(w, &record)?;
    Ok(record)
}

/// Stores the manifest with `record`.
fn commit(w: &mut Writer, record: &MigrationRecord) -> Result<()> {
    let mut manifest = w.manifest().clone();
    manifest.lifecycle.migration = Some(record.clone());
    manifest.generation += 1;
    w.commit(manifest)
}

/// Writes every disk of the point to the output directory, synced, then reads each image back
/// against the vault and hashes it.
fn materialize_and_verify(
    w: &Writer,
    record: &MigrationRecord,
    view_opts: &replog_reader::ViewOptions,
) -> Result<Vec<MigrationDisk>> {
    let err = read_err(w.dir());
    let vault = Vault::open(w.storage().clone(), w.dir()).map_err(&err)?;
    let point = vault
        .point(record.point_id)
        .cloned()
        .filter(|p| p.lsn == record.lsn)
        .ok_or_else(|| {
            WriteError::new(
                WriteErrorKind::Damaged,
                format!(
                    "the migration's point {} (LSN {}) is no longer in the vault",
                    record.point_id, record.lsn
                ),
            )
            .in_file(w.dir())
            .for_point(record.point_id)
        })?;
    let view = vault.view_with(&point, view_opts).map_err(&err)?;
    let out = PathBuf::from(&record.out_dir);
    // Images of an interrupted run are this migration's own: replaced.
    let opts = MaterializeOptions {
        force: true,
        sync: true,
        ..MaterializeOptions::default()
    };
    replog_reader::materialize(&view, &out, &opts).map_err(&err)?;
    let mut disks = Vec::with_capacity(view.disks().len());
    for disk in view.disks() {
        let path = out.join(format!("{}.raw", disk.name()));
        disks.push(MigrationDisk {
            disk_id: disk.disk_id(),
            size_bytes: disk.size(),
            xxh3: verify_image(w.storage().as_ref(), disk, &path)?,
        });
    }
    Ok(disks)
}

/// Reads `path` back, compares it with `disk` byte for byte and returns its xxh3-128.
fn verify_image(
    storage: &dyn Storage,
    disk: &replog_reader::DiskView,
    path: &Path,
) -> Result<u128> {
    let file = storage
        .open(path, OpenMode::Read)
        .map_err(|e| WriteError::io(path, None, "opening the migrated image", e))?;
    let len = file
        .len()
        .map_err(|e| WriteError::io(path, None, "measuring", e))?;
    if len != disk.size() {
        return Err(WriteError::new(
            WriteErrorKind::Damaged,
            format!(
                "the migrated image is {len} bytes, disk {} is {}",
                disk.name(),
                disk.size()
            ),
        )
        .in_file(path)
        .for_disk(disk.disk_id()));
    }
    let mut reader = disk.reader();
    let mut hasher = Xxh3::new();
    let mut got = vec![0u8; VERIFY_WINDOW_BYTES];
    let mut want = vec![0u8; VERIFY_WINDOW_BYTES];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(VERIFY_WINDOW_BYTES as u64) as usize;
        file.read_exact_at(&mut got[..n], at)
            .map_err(|e| WriteError::io(path, Some(at), "reading back", e))?;
        reader
            .read_at(at, &mut want[..n])
            .map_err(|e| WriteError::read(WriteErrorKind::Damaged, None, e))?;
        if let Some(i) = got[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
            return Err(WriteError::new(
                WriteErrorKind::Damaged,
                format!(
                    "the migrated image differs from disk {} at byte {}",
                    disk.name(),
                    at + i as u64
                ),
            )
            .in_file(path)
            .for_disk(disk.disk_id()));
        }
        hasher.update(&got[..n]);
        at += n as u64;
    }
    Ok(hasher.digest128())
}

/// Commits the journal's removal and the completion, then deletes the segment files.
fn remove_journal(w: &mut Writer, record: &mut MigrationRecord) -> Result<u64> {
    let (registrations, live) = w.live_leases()?;
    if let Some(lease) = live.first() {
        return Err(WriteError::new(
            WriteErrorKind::Leased,
            format!(
                "{} is in use; the migration is sealed and completes when run again once it is released{}",
                lease.describe(),
                if lease.record.as_ref().is_some_and(|r| r.persistent) {
                    " (`replog test-failover --cleanup` releases a test failover)"
                } else {
                    ""
                }
            ),
        )
        .in_file(w.dir()));
    }
    record.phase = MigrationPhase::Complete;
    record.finished_unix_ns = crate::now_unix_ns().max(1);
    let mut manifest = w.manifest().clone();
    manifest.segments.clear();
    manifest.points.clear();
    manifest.dead_ranges.clear();
    manifest.lifecycle.retired.clear();
    manifest.lifecycle.pins.clear();
    manifest.lifecycle.migration = Some(record.clone());
    manifest.generation += 1;
    w.commit(manifest)?;
    let removed = remove_segment_files(w.storage().as_ref(), w.dir())?;
    drop(registrations);
    Ok(removed)
}

/// Deletes every segment file (after the journal's removal none is listed) and every
/// checkpoint index (each maps the end of a segment, so none describes anything any more; a
/// reader or `verify` would take one left for damage), syncing each directory; returns how many
/// segment files there were. Run again by every later run, so a crash in between only delays it.
fn remove_segment_files(storage: &dyn Storage, dir: &Path) -> Result<u64> {
    let removed = remove_matching(storage, &dir.join(layout::JOURNAL_DIR), |name| {
        layout::parse_segment_file_name(name).is_some()
    })?;
    // Temporaries of an interrupted checkpoint write go too: `index/` holds nothing else.
    remove_matching(storage, &dir.join(layout::INDEX_DIR), |_| true)?;
    Ok(removed)
}

/// Deletes the files of `dir` whose names `matches` accepts, then syncs `dir`; a missing `dir`
/// holds none. Returns how many were deleted.
fn remove_matching(
    storage: &dyn Storage,
    dir: &Path,
    matches: impl Fn(&str) -> bool,
) -> Result<u64> {
    let names = match storage.read_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(WriteError::io(dir, None, "listing", e)),
    };
    let mut removed = 0;
    for name in names.iter().filter(|n| matches(n)) {
        let p = dir.join(name);
        storage
            .remove_file(&p)
            .map_err(|e| WriteError::io(&p, None, "removing", e))?;
        removed += 1;
    }
    if removed > 0 {
        storage
            .sync_dir(dir)
            .map_err(|e| WriteError::io(dir, None, "syncing the directory", e))?;
    }
    Ok(removed)
}

/// The disks a migration to the record's point covers, and those it leaves out.
fn disks_of(vault: &Vault, record: &MigrationRecord) -> (Vec<MigratedDisk>, Vec<String>) {
    let out = PathBuf::from(&record.out_dir);
    let mut disks = Vec::new();
    let mut omitted = Vec::new();
    for d in vault.disks() {
        if d.added_lsn > record.lsn {
            omitted.push(d.name.clone());
            continue;
        }
        disks.push(MigratedDisk {
            name: d.name.clone(),
            disk_id: d.disk_id,
            size_bytes: d.disk_bytes,
            path: out.join(format!("{}.raw", d.name)),
            xxh3: record
                .disks
                .iter()
                .find(|m| m.disk_id == d.disk_id)
                .map(|m| m.xxh3),
        });
    }
    (disks, omitted)
}
