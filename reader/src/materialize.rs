//! Materializing a view: one raw image file per disk, `<out>/<name>.raw`.
//!
//! **One run at a time in a directory.** The output directory is locked ([`OutputDir`]: an
//! `flock` on `<out>/.replog-out.lock`, taken without waiting) for the whole run, so a second
//! run into the same directory fails at once, naming the holder's pid, instead of mixing its
//! images with the first's. The targets are checked under that lock: a target that exists is
//! refused unless asked to overwrite it, and one that is not a regular file (a directory, a
//! symbolic link, a device) is refused always, before anything is written.
//!
//! Each image is written to a new file of a name no other run uses,
//! `<out>/.<name>.raw.<nonce>.partial`, created exclusively and never through a symbolic link,
//! sized first so that everything never written stays a hole, then filled with only non-zero
//! data: base chunks the checksum table marks as holes and zero records are skipped without
//! reading, and blocks of data that happen to be all zero are not written. Disks are written in
//! parallel, and each disk in ranges of [`RANGE_BYTES`] in parallel; each range works with
//! buffers of a few MiB, never the whole disk. Every record and base chunk is verified as it is
//! read.
//!
//! Only when every disk is complete are the partial files synced (if asked), then placed
//! ([`place_images`]): an image being replaced is first renamed to a backup name, then the new
//! one renamed into place; then each final name is checked to hold the image that was written
//! ([`PlacedCheck`]): by default, that it names the very file this run created and wrote (device,
//! inode and length, no read); with [`MaterializeOptions::read_back`], every byte written is also
//! added to a [`ContentSum`] of its image while writing, and the image is read back under its
//! final name against it. Then the directory is synced, and only then are the backups removed.
//!
//! Scattered small journal pieces may be read in journal order instead of disk order
//! ([`ReadOrder`], [`crate::journal_order`]): set aside in a sort whose runs go to a private
//! `<out>/.replog-sort-*` directory, then read in one forward pass through the journal.
//!
//! On any error every partial file and every image this run placed is
//! removed and the backups are renamed back, so a failed run never leaves part of a point's
//! disks under their final names and never loses the images it was to replace. A run killed
//! midway leaves `.<name>.raw.*.partial` or `.<name>.raw.*.replaced` files, or a
//! `.replog-sort-*` directory, all safe to delete.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use replog_io::content_sum::ContentKey;
use replog_io::{
    BackendKind, ContentSum, DirLock, DirLockError, EntryKind, File, FileId, OpenMode, Storage,
    WriteAt, is_zero,
};

use crate::disk_reader::DiskReader;
use crate::error::{ReadError, ReadErrorKind, Result};
use crate::extent_map::Source;
use crate::journal_order::{DEFER_RECORD_BYTES_MAX, Deferred, ReadOrder, SORT_RUN_PIECES};
use crate::view::{DiskView, PointView};

/// The span of a disk one parallel task writes. A power of two at least as large as the largest
/// base chunk, so no chunk is read by two tasks.
pub const RANGE_BYTES: u64 = 64 << 20;
/// Bytes of data one task gathers before handing them to `write_batch`.
const BATCH_BYTES: usize = 4 << 20;
/// Granularity of the all-zero test: an all-zero block of this size is left as a hole.
const ZERO_BLOCK_BYTES: u64 = 4096;
/// The lock file of an output directory; see [`OutputDir`].
pub const OUTPUT_LOCK_FILE: &str = ".replog-out.lock";
/// How many fresh names a new partial file or backup is tried under before giving up.
const NAME_ATTEMPTS_MAX: u32 = 16;

/// How to materialize.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaterializeOptions {
    /// Replace existing `<name>.raw` files instead of refusing.
    pub force: bool,
    /// Make the images and their names durable (`fdatasync` each, then sync the directory).
    pub sync: bool,
    /// Sum every byte while writing ([`ContentSum`]) and, once placed, read every image back
    /// against its sum. Without it, each final name is checked to be the very file this run
    /// created and wrote (its identity and length), which costs no read.
    pub read_back: bool,
    /// The order journal pieces are read in ([`ReadOrder`]); in journal order the sort's
    /// scratch files go in the output directory.
    pub order: ReadOrder,
    /// Pieces the journal-order sort holds in memory before it writes a run out; 0 means
    /// [`SORT_RUN_PIECES`] (about 56 MiB).
    pub sort_run_pieces: usize,
}

/// What materializing one disk did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskStats {
    /// The disk's name.
    pub name: String,
    /// The image written.
    pub path: PathBuf,
    /// The disk's size, which is the image's length.
    pub size_bytes: u64,
    /// Bytes of data written.
    pub written_bytes: u64,
    /// Bytes left as holes (they read as zeros).
    pub hole_bytes: u64,
    /// With [`MaterializeOptions::read_back`], the sum of the image's bytes, computed while
    /// writing and checked against the image read back under its final name.
    pub sum: Option<ContentSum>,
}

/// What materializing a view did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaterializeStats {
    /// Per disk, in the view's order.
    pub disks: Vec<DiskStats>,
    /// Bytes of data written over all disks.
    pub written_bytes: u64,
    /// Bytes left as holes over all disks.
    pub hole_bytes: u64,
}

/// An output directory, created if it was missing and locked against every other replog run
/// for as long as this value lives (see the module documentation). On the simulator, which has
/// no processes, nothing is locked.
#[derive(Debug)]
pub struct OutputDir {
    path: PathBuf,
    _lock: DirLock,
}

impl OutputDir {
    /// Creates `dir` and its missing parents (with `sync`, durably) and locks it; fails at once
    /// if another run holds it.
    pub fn lock(storage: &Arc<dyn Storage>, dir: &Path, sync: bool) -> Result<OutputDir> {
        match storage
            .entry_kind(dir)
            .map_err(|e| os_err(dir, "look at", e))?
        {
            None | Some(EntryKind::Dir | EntryKind::Symlink) => {}
            Some(kind) => {
                return Err(ReadError::new(
                    ReadErrorKind::InvalidRequest,
                    format!(
                        "is {}, not a directory: the output must be a directory the images go into",
                        kind.describe()
                    ),
                )
                .in_file(dir));
            }
        }
        create_out_dir(storage.as_ref(), dir, sync)?;
        let lock = DirLock::try_lock(storage, dir, OUTPUT_LOCK_FILE).map_err(|e| match e {
            DirLockError::Held { pid, .. } => ReadError::new(
                ReadErrorKind::InvalidRequest,
                format!(
                    "the output directory is in use by another replog{}; wait for it to finish or choose another directory",
                    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
                ),
            )
            .in_file(dir),
            DirLockError::Io { path, op, source } => os_err(path, op, source),
        })?;
        Ok(OutputDir {
            path: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// An I/O error on an output file. An `EEXIST` from the operating system (`--out` naming a
/// file, a name taken) is reported as an I/O error, never as [`ReadErrorKind::AlreadyExists`],
/// which means only "an image is there and overwriting it was not asked for".
fn os_err(path: impl Into<PathBuf>, op: &str, e: io::Error) -> ReadError {
    let e = if e.kind() == io::ErrorKind::AlreadyExists {
        io::Error::other(e)
    } else {
        e
    };
    ReadError::io(path, op, e)
}

/// Checks, before anything is written, that every target can be written: absent, or a regular
/// file when `force` asks to replace it. A target that is a directory, a symbolic link or a
/// device is refused even with `force` (replog replaces only regular files). Call it holding
/// the directory's [`OutputDir`] lock, so that no other run creates a target meanwhile.
pub fn check_targets(storage: &dyn Storage, targets: &[PathBuf], force: bool) -> Result<()> {
    for target in targets {
        match storage
            .entry_kind(target)
            .map_err(|e| os_err(target, "look for", e))?
        {
            None => {}
            Some(EntryKind::File) if force => {}
            Some(EntryKind::File) => {
                return Err(ReadError::new(
                    ReadErrorKind::AlreadyExists,
                    "the image exists already; remove it or ask to overwrite it (force)",
                )
                .in_file(target));
            }
            Some(kind) => {
                return Err(ReadError::new(
                    ReadErrorKind::InvalidRequest,
                    format!(
                        "is {}, not an image file; replog replaces only regular files: remove it or choose another output directory",
                        kind.describe()
                    ),
                )
                .in_file(target));
            }
        }
    }
    Ok(())
}

/// Writes every disk of `view` to `out_dir/<name>.raw`; see the module documentation.
pub fn materialize(
    view: &PointView,
    out_dir: &Path,
    opts: &MaterializeOptions,
) -> Result<MaterializeStats> {
    materialize_with_progress(view, out_dir, opts, &|_| {})
}

/// [`materialize`], calling `progress` with the number of disk bytes done so far over all disks
/// (out of [`PointView::total_bytes`]) as ranges complete. It is called from worker threads.
pub fn materialize_with_progress(
    view: &PointView,
    out_dir: &Path,
    opts: &MaterializeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<MaterializeStats> {
    let out = OutputDir::lock(view.storage(), out_dir, opts.sync)?;
    materialize_into(view, &out, opts, progress)
}

/// [`materialize_with_progress`] into a directory the caller has locked already.
pub fn materialize_into(
    view: &PointView,
    out: &OutputDir,
    opts: &MaterializeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<MaterializeStats> {
    let storage = view.storage().as_ref();
    let out_dir = out.path();
    let targets: Vec<PathBuf> = view
        .disks()
        .iter()
        .map(|d| final_path(out_dir, d))
        .collect();
    check_targets(storage, &targets, opts.force)?;
    let done = AtomicU64::new(0);
    let job = Job {
        storage,
        out_dir,
        done: &done,
        progress,
        key: ContentKey::random(),
        read_back: opts.read_back,
        order: opts.order,
        sort_run_pieces: opts.sort_run_pieces,
        writeback: opts.sync,
        // The sort's scratch goes beside the images, on the filesystem they fill; the
        // simulator's directories are not on any, so its goes in the system's.
        scratch: match storage.kind() {
            BackendKind::Sim => std::env::temp_dir(),
            _ => out_dir.to_path_buf(),
        },
        created: Mutex::new(Vec::new()),
    };
    let written: Result<Vec<_>> = view
        .disks()
        .par_iter()
        .map(|disk| job.write_partial(disk))
        .collect();
    let result = written.and_then(|written| job.finish(view, written, &targets, opts));
    // Best effort: on success the partial files were renamed away; on failure the error being
    // returned is the one that matters.
    for path in job.created.into_inner().unwrap_or_else(|p| p.into_inner()) {
        if result.is_err() {
            let _ = storage.remove_file(&path);
        }
    }
    result
}

/// What reading every byte of a view, without writing it anywhere, found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadPassStats {
    /// Bytes of data over all disks: what a failover would write (the rest it leaves as holes).
    pub data_bytes: u64,
    /// Apparent bytes over all disks.
    pub disk_bytes: u64,
    /// Per disk, in the view's order: its name and the sum of its bytes (as a failover's image
    /// would have).
    pub sums: Vec<(String, ContentSum)>,
    /// Journal pieces set aside and read in journal order, over all disks.
    pub journal_order_pieces: u64,
}

/// How to make a read pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadPassOptions {
    /// The order journal pieces are read in.
    pub order: ReadOrder,
    /// Where the journal-order sort writes its scratch files: the system's temporary directory
    /// if `None`.
    pub scratch: Option<PathBuf>,
    /// As [`MaterializeOptions::sort_run_pieces`].
    pub sort_run_pieces: usize,
}

/// A failover's read pass alone: every disk of `view` walked as [`materialize`] walks it (in
/// parallel ranges, every record and base chunk read and verified, every non-zero block summed),
/// with nothing written. For measuring the reading side of a failover at sizes whose output
/// would not fit; memory as for [`materialize`].
pub fn read_pass(view: &PointView, opts: &ReadPassOptions) -> Result<ReadPassStats> {
    let key = ContentKey::random();
    let scratch = opts.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let per_disk: Vec<Filled> = view
        .disks()
        .par_iter()
        .map(|disk| {
            let name = PathBuf::from(disk.name());
            let fill = Fill {
                disk,
                file: None,
                path: &name,
                key: Some(key),
                journal_order: opts.order.journal_for(disk),
                scratch: &scratch,
                sort_run_pieces: opts.sort_run_pieces,
                writeback: false,
                progress: &|_| {},
            };
            fill.run()
        })
        .collect::<Result<_>>()?;
    let mut stats = ReadPassStats::default();
    for (disk, filled) in view.disks().iter().zip(per_disk) {
        stats.data_bytes += filled.written;
        stats.disk_bytes += disk.size();
        stats.journal_order_pieces += filled.deferred;
        let sum = filled.sum.unwrap_or(ContentSum::new(key));
        stats.sums.push((disk.name().to_owned(), sum));
    }
    Ok(stats)
}

fn final_path(out_dir: &Path, disk: &DiskView) -> PathBuf {
    out_dir.join(format!("{}.raw", disk.name()))
}

/// A name in `dir` no other run uses: `.<name>.<nonce>.<suffix>`, the nonce random.
fn unique_path(dir: &Path, name: &str, suffix: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let random = RandomState::new().hash_one((n, std::process::id()));
    dir.join(format!(
        ".{name}.{}-{random:016x}.{suffix}",
        std::process::id()
    ))
}

/// Creates a new file under a fresh unique name next to `target` (`O_EXCL | O_NOFOLLOW`).
fn create_partial(storage: &dyn Storage, target: &Path) -> Result<(PathBuf, Arc<dyn File>)> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let mut last = None;
    for _ in 0..NAME_ATTEMPTS_MAX {
        let path = unique_path(dir, &name, "partial");
        match storage.open(&path, OpenMode::CreateNew) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some((path, e)),
            Err(e) => return Err(os_err(&path, "create", e)),
        }
    }
    let (path, e) = last.expect("at least one attempt");
    Err(os_err(path, "create (every fresh name was taken)", e))
}

/// One disk's partial image, written.
struct Partial {
    path: PathBuf,
    file: Arc<dyn File>,
    /// Which file it is, to check that its final name still names it.
    id: Option<FileId>,
    written_bytes: u64,
    sum: Option<ContentSum>,
}

/// What every task of one run shares.
struct Job<'a> {
    storage: &'a dyn Storage,
    out_dir: &'a Path,
    done: &'a AtomicU64,
    progress: &'a (dyn Fn(u64) + Sync),
    /// The key of the images' sums.
    key: ContentKey,
    /// Whether every image is summed and read back, rather than checked by identity.
    read_back: bool,
    order: ReadOrder,
    sort_run_pieces: usize,
    /// Where the journal-order sort's scratch directory goes.
    scratch: PathBuf,
    /// Whether the images will be synced, so that their ranges are written back as they go.
    writeback: bool,
    /// Every partial file created, to remove on failure.
    created: Mutex<Vec<PathBuf>>,
}

impl Job<'_> {
    /// Writes one disk's partial image.
    fn write_partial(&self, disk: &DiskView) -> Result<Partial> {
        let (path, file) = create_partial(self.storage, &final_path(self.out_dir, disk))?;
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(path.clone());
        file.set_len(disk.size())
            .map_err(|e| os_err(&path, "set the length", e))?;
        // A file the backend cannot identify is summed and read back instead.
        let id = file.id().ok().filter(|_| !self.read_back);
        let key = id.is_none().then_some(self.key);
        let progress = |n: u64| {
            (self.progress)(self.done.fetch_add(n, Ordering::Relaxed) + n);
        };
        let filled = Fill {
            disk,
            file: Some(file.as_ref()),
            path: &path,
            key,
            journal_order: self.order.journal_for(disk),
            scratch: &self.scratch,
            sort_run_pieces: self.sort_run_pieces,
            writeback: self.writeback,
            progress: &progress,
        }
        .run()?;
        let (written_bytes, sum) = (filled.written, filled.sum);
        Ok(Partial {
            path,
            file,
            id,
            written_bytes,
            sum,
        })
    }

    /// Syncs (if asked) every partial image, then places them all.
    fn finish(
        &self,
        view: &PointView,
        written: Vec<Partial>,
        targets: &[PathBuf],
        opts: &MaterializeOptions,
    ) -> Result<MaterializeStats> {
        // Every image is made durable before any is placed, so a failure leaves no final name.
        if opts.sync {
            for p in &written {
                p.file.sync_data().map_err(|e| os_err(&p.path, "sync", e))?;
            }
        }
        let staged: Vec<Staged> = written
            .iter()
            .zip(view.disks())
            .zip(targets)
            .map(|((p, disk), target)| Staged {
                from: p.path.clone(),
                to: target.clone(),
                len: disk.size(),
                check: match (p.id, p.sum) {
                    (Some(id), _) => PlacedCheck::Identity(id),
                    (None, Some(sum)) => PlacedCheck::Sum(sum),
                    (None, None) => unreachable!("an image without an identity is summed"),
                },
            })
            .collect();
        place_images(self.storage, self.out_dir, &staged, opts.sync)?;
        let mut stats = MaterializeStats::default();
        for ((p, disk), target) in written.into_iter().zip(view.disks()).zip(targets) {
            let hole_bytes = disk.size() - p.written_bytes;
            stats.written_bytes += p.written_bytes;
            stats.hole_bytes += hole_bytes;
            stats.disks.push(DiskStats {
                name: disk.name().to_owned(),
                path: target.clone(),
                size_bytes: disk.size(),
                written_bytes: p.written_bytes,
                hole_bytes,
                sum: p.sum,
            });
        }
        Ok(stats)
    }
}

/// A complete image under a temporary name, to be placed under its final name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    /// The temporary file, in the same directory (or filesystem) as `to`.
    pub from: PathBuf,
    /// The final name.
    pub to: PathBuf,
    /// The image's length.
    pub len: u64,
    /// How to tell, once it is under its final name, that it is the image that was written.
    pub check: PlacedCheck,
}

/// How [`place_images`] checks that each final name holds the image that was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacedCheck {
    /// The file under the final name is this very file (device and inode), of the right
    /// length: the run created it exclusively under a name no other run uses and wrote it
    /// through its own open, so it holds what was written. Costs no read.
    Identity(FileId),
    /// The file read back under its final name has this sum, computed while it was written
    /// (for a file whose writer cannot be trusted to have been the only one, such as
    /// `qemu-img`, or a backend that cannot identify files).
    Sum(ContentSum),
}

/// One step of placing an image, so that it can be undone.
struct Placed {
    to: PathBuf,
    /// Where the image it replaced went.
    backup: Option<PathBuf>,
    /// Whether the new image is under `to`.
    placed: bool,
}

/// Places every staged image under its final name in `out_dir`, all or none: images being
/// replaced go to backup names first, the new ones are renamed into place, every one is read
/// back under its final name and checked against its sum, the directory is synced (with
/// `sync`), and only then are the backups removed. On any error, the images this call placed are
/// removed and the backups renamed back. Call it holding the directory's [`OutputDir`] lock,
/// after [`check_targets`].
pub fn place_images(
    storage: &dyn Storage,
    out_dir: &Path,
    staged: &[Staged],
    sync: bool,
) -> Result<()> {
    let mut steps = Vec::with_capacity(staged.len());
    let placed = place_all(storage, staged, &mut steps)
        .and_then(|()| {
            staged
                .par_iter()
                .try_for_each(|s| verify_placed(storage, s))
        })
        .and_then(|()| sync_out_dir(storage, out_dir, sync));
    if let Err(e) = placed {
        undo(storage, &steps);
        // Best effort: the undo is complete in the directory either way.
        let _ = sync_out_dir(storage, out_dir, sync);
        return Err(e);
    }
    let backups: Vec<&PathBuf> = steps.iter().filter_map(|s| s.backup.as_ref()).collect();
    for backup in &backups {
        // Best effort: the new set is in place and durable; a backup left behind is only space.
        let _ = storage.remove_file(backup);
    }
    if !backups.is_empty() {
        // The new images are durable already; this makes the removals durable, which can wait,
        // so its failure does not fail a run whose images are in place.
        let _ = sync_out_dir(storage, out_dir, sync);
    }
    Ok(())
}

fn sync_out_dir(storage: &dyn Storage, out_dir: &Path, sync: bool) -> Result<()> {
    if sync {
        storage
            .sync_dir(out_dir)
            .map_err(|e| os_err(out_dir, "sync the directory", e))?;
    }
    Ok(())
}

fn place_all(storage: &dyn Storage, staged: &[Staged], steps: &mut Vec<Placed>) -> Result<()> {
    for s in staged {
        let mut step = Placed {
            to: s.to.clone(),
            backup: None,
            placed: false,
        };
        let replacing = storage
            .entry_kind(&s.to)
            .map_err(|e| os_err(&s.to, "look for", e))?;
        if replacing.is_some() {
            let dir = s.to.parent().unwrap_or(Path::new("."));
            let name = s.to.file_name().unwrap_or_default().to_string_lossy();
            let backup = unique_path(dir, &name, "replaced");
            storage
                .rename(&s.to, &backup)
                .map_err(|e| os_err(&s.to, "move aside the image being replaced", e))?;
            step.backup = Some(backup);
        }
        let renamed = storage
            .rename(&s.from, &s.to)
            .map_err(|e| os_err(&s.from, &format!("rename to {}", s.to.display()), e));
        step.placed = renamed.is_ok();
        steps.push(step);
        renamed?;
    }
    Ok(())
}

/// Undoes `steps` in reverse: removes each new image, renames each backup back.
fn undo(storage: &dyn Storage, steps: &[Placed]) {
    for step in steps.iter().rev() {
        // Best effort: each step is independent, and the error that caused the undo is the one
        // reported.
        if step.placed {
            let _ = storage.remove_file(&step.to);
        }
        if let Some(backup) = &step.backup {
            let _ = storage.rename(backup, &step.to);
        }
    }
}

/// Reads the image under its final name and compares its length and sum with what was written.
fn verify_placed(storage: &dyn Storage, s: &Staged) -> Result<()> {
    let expected = match s.check {
        PlacedCheck::Identity(id) => {
            let found = storage
                .file_id(&s.to)
                .map_err(|e| os_err(&s.to, "look up again to check", e))?;
            if found != Some(id) {
                return Err(ReadError::new(
                    ReadErrorKind::Io,
                    "the file under this name is not the image this run wrote; another process \
                     replaced it: it was removed, run the command again",
                )
                .in_file(&s.to));
            }
            None
        }
        PlacedCheck::Sum(sum) => Some(sum),
    };
    let file = storage
        .open(&s.to, OpenMode::Read)
        .map_err(|e| os_err(&s.to, "open again to check", e))?;
    let len = file.len().map_err(|e| os_err(&s.to, "measure", e))?;
    let sum = match expected {
        Some(expected) if len == s.len => Some((
            expected,
            (0..len.div_ceil(RANGE_BYTES))
                .into_par_iter()
                .map(|i| {
                    let mut sum = ContentSum::new(expected.key());
                    let start = i * RANGE_BYTES;
                    sum.add_file(file.as_ref(), start, (start + RANGE_BYTES).min(len))
                        .map_err(|e| os_err(&s.to, "read back", e).at(start))?;
                    Ok(sum)
                })
                .try_reduce(
                    || ContentSum::new(expected.key()),
                    |mut a, b| {
                        a.merge(&b);
                        Ok(a)
                    },
                )?,
        )),
        _ => None,
    };
    if len != s.len || sum.is_some_and(|(want, got)| want != got) {
        return Err(ReadError::new(
            ReadErrorKind::Io,
            format!(
                "the image read back under its final name is not the one this run wrote ({len} bytes, {} expected{}); another process changed it: it was removed, run the command again",
                s.len,
                if len == s.len { ", other bytes" } else { "" }
            ),
        )
        .in_file(&s.to));
    }
    Ok(())
}

/// Creates `out_dir` and its missing parents; with `sync`, makes each new directory's entry
/// durable in its parent (a new directory survives a crash only then).
fn create_out_dir(storage: &dyn Storage, out_dir: &Path, sync: bool) -> Result<()> {
    let mut missing = Vec::new();
    let mut dir = out_dir;
    while !storage
        .exists(dir)
        .map_err(|e| os_err(dir, "look for", e))?
    {
        missing.push(dir);
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
            _ => break,
        }
    }
    storage
        .create_dir_all(out_dir)
        .map_err(|e| os_err(out_dir, "create the output directory", e))?;
    if sync {
        for created in missing {
            let parent = created
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            storage
                .sync_dir(parent)
                .map_err(|e| os_err(parent, "sync the directory", e))?;
        }
    }
    Ok(())
}

/// One disk filled: its image written (or, with no file, read, verified and summed only).
struct Fill<'a> {
    disk: &'a DiskView,
    /// `None`: a read pass.
    file: Option<&'a dyn File>,
    /// The image's path, for errors.
    path: &'a Path,
    /// Sum what is written under this key.
    key: Option<ContentKey>,
    /// Whether small journal pieces are set aside and read in journal order
    /// ([`crate::journal_order`]).
    journal_order: bool,
    /// Where the journal-order sort's scratch directory goes.
    scratch: &'a Path,
    sort_run_pieces: usize,
    /// Start writing each range back as soon as it is written (the image will be synced).
    writeback: bool,
    /// Called with the disk bytes each step completes; they add up to the disk's size.
    progress: &'a (dyn Fn(u64) + Sync),
}

/// What filling one disk did.
struct Filled {
    /// Bytes of data written.
    written: u64,
    sum: Option<ContentSum>,
    /// Journal pieces read in journal order.
    deferred: u64,
}

impl Fill<'_> {
    fn run(&self) -> Result<Filled> {
        if !self.journal_order {
            let (written, sum) = self.walk(None)?;
            return Ok(Filled {
                written,
                sum,
                deferred: 0,
            });
        }
        // The walk in disk order runs on the thread pool and hands the pieces it sets aside to
        // this thread of its own, which sorts them and then reads them in journal order. (A
        // thread outside the pool: the walk's tasks wait on it when the channel is full.)
        let (tx, rx) = mpsc::sync_channel::<Vec<Deferred>>(SORT_BATCHES_QUEUED);
        std::thread::scope(|s| {
            let sorted = s.spawn(move || self.read_deferred(rx));
            let walked = self.walk(Some(&tx));
            drop(tx);
            let sorted = sorted
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            match (walked, sorted) {
                // The walk stops when the sort does: the sort's error is the one that matters.
                (_, Err(e)) | (Err(e), _) => Err(e),
                (Ok((written, sum)), Ok(rest)) => Ok(Filled {
                    written: written + rest.written,
                    sum: merge_sums(sum, rest.sum),
                    deferred: rest.deferred,
                }),
            }
        })
    }

    /// Walks the disk in ranges of [`RANGE_BYTES`] in parallel, writing every piece, or, with
    /// `defer`, every piece but the small journal ones, which it sends there. Returns the bytes
    /// of data written and their sum.
    fn walk(&self, defer: Option<&SyncSender<Vec<Deferred>>>) -> Result<(u64, Option<ContentSum>)> {
        let size = self.disk.size();
        (0..size.div_ceil(RANGE_BYTES))
            .into_par_iter()
            .map(|i| {
                let start = i * RANGE_BYTES;
                let end = (start + RANGE_BYTES).min(size);
                let mut deferred = defer.map(|_| Vec::new());
                let done = copy_range(self, start, end, deferred.as_mut())?;
                if let Some(file) = self.file
                    && self.writeback
                {
                    // The device writes this range while the next ones are read, so the sync
                    // at the end waits for little. Best effort: the sync is what makes the
                    // image durable, and it reports any error this would have.
                    let _ = file.start_writeback(start, end - start);
                }
                if let (Some(tx), Some(deferred)) = (defer, deferred)
                    && !deferred.is_empty()
                {
                    tx.send(deferred).map_err(|_| {
                        ReadError::new(ReadErrorKind::Io, "the journal-order sort stopped")
                    })?;
                }
                // In journal order the walk is half the work.
                let len = end - start;
                (self.progress)(if defer.is_some() { len / 2 } else { len });
                Ok(done)
            })
            .try_reduce(
                || (0, self.key.map(ContentSum::new)),
                |(a, sa), (b, sb)| Ok((a + b, merge_sums(sa, sb))),
            )
    }

    /// Sorts the pieces the walk sets aside and writes them in journal order.
    fn read_deferred(&self, batches: mpsc::Receiver<Vec<Deferred>>) -> Result<Filled> {
        let mut out = Batch::new(self.disk, self.file, self.path, self.key);
        // The walk reported half of each range, and every range but the last is of an even
        // length: it reported half the disk, rounded down.
        let size = self.disk.size();
        let rest = size - size / 2;
        let mut reported = 0;
        let run = match self.sort_run_pieces {
            0 => SORT_RUN_PIECES,
            n => n,
        };
        let deferred = crate::journal_order::read_sorted(
            self.disk,
            self.scratch,
            batches.into_iter(),
            run,
            |d, data| out.push(d.disk_at(), data),
            |done, count| {
                let now = rest * done / count.max(1);
                (self.progress)(now - reported);
                reported = now;
            },
        )?;
        out.flush()?;
        (self.progress)(rest - reported);
        Ok(Filled {
            written: out.written,
            sum: out.sum,
            deferred,
        })
    }
}

/// Batches of set-aside pieces queued for the sort before the walk waits.
const SORT_BATCHES_QUEUED: usize = 8;

fn merge_sums(a: Option<ContentSum>, b: Option<ContentSum>) -> Option<ContentSum> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            a.merge(&b);
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

/// Copies disk bytes `[start, end)` into the fill's file (with none, reads, verifies and sums
/// them only); with `defer`, sets the small journal pieces aside there instead. Returns the
/// bytes of data and their sum.
fn copy_range(
    fill: &Fill<'_>,
    start: u64,
    end: u64,
    mut defer: Option<&mut Vec<Deferred>>,
) -> Result<(u64, Option<ContentSum>)> {
    let disk = fill.disk;
    let mut reader = disk.reader();
    let mut out = Batch::new(disk, fill.file, fill.path, fill.key);
    for piece in disk.pieces(start, end) {
        let (at, piece) = piece?;
        match piece.source {
            Source::Zero => {}
            Source::Base => copy_base(&mut reader, &mut out, at, piece.end)?,
            Source::Record(r) if r.stored_len <= DEFER_RECORD_BYTES_MAX && defer.is_some() => {
                let d = Deferred {
                    r,
                    len: (piece.end - at) as u32,
                };
                debug_assert_eq!(d.disk_at(), at);
                defer.as_mut().expect("checked").push(d);
            }
            Source::Record(r) => {
                let data = reader.record(&r)?;
                let from = r.data_offset as usize;
                out.push(at, &data[from..from + (piece.end - at) as usize])?;
            }
        }
    }
    out.flush()?;
    Ok((out.written, out.sum))
}

/// The most base bytes read (and checked) at once: runs of consecutive chunks up to this
/// length are one read, not one read per chunk (a 4 KiB chunk's read cost more in the system
/// call than in the copy).
const BASE_RUN_BYTES: u64 = 1 << 20;

/// Copies base bytes `[start, end)`, skipping chunks stored as holes. Each run of consecutive
/// stored chunks (up to [`BASE_RUN_BYTES`]) is read at once and every chunk checked against
/// its checksum, and then the run's non-zero blocks are copied by the kernel from the base file
/// (`copy_file_range`): the check's read has just brought those pages into the page cache, so
/// the disk is read once and the bytes are not copied through this process a second time.
fn copy_base(reader: &mut DiskReader<'_>, out: &mut Batch<'_>, start: u64, end: u64) -> Result<()> {
    let base = &reader.disk().base;
    let block = base.block_bytes();
    let data_offset = base.header.data_offset();
    let run_chunks = (BASE_RUN_BYTES / block).max(1) as usize;
    let mut sums = Vec::with_capacity(run_chunks);
    let mut at = start;
    while at < end {
        let first = at / block;
        let (run_start, first_end) = base.chunk_range(first);
        // The stored chunks from `first` on, until a hole, `end` or the run's length.
        sums.clear();
        let mut run_end = run_start;
        while run_end < end && sums.len() < run_chunks {
            let k = first + sums.len() as u64;
            let sum = reader.chunk_sum(k)?;
            if sum.zero {
                break;
            }
            sums.push(sum);
            run_end = base.chunk_range(k).1;
        }
        if sums.is_empty() {
            at = end.min(first_end);
            continue;
        }
        let upto = end.min(run_end);
        let data = reader.chunks(first, &sums)?;
        let part = &data[(at - run_start) as usize..(upto - run_start) as usize];
        for_each_nonzero_run(at, part, |offset, len| {
            let from = (offset - at) as usize;
            out.add_sum(offset, &part[from..from + len as usize]);
            out.copy_base(offset, data_offset + offset, len)
        })?;
        at = upto;
    }
    Ok(())
}

/// Calls `f(offset, len)` for every maximal run of [`ZERO_BLOCK_BYTES`] blocks of `data` (which
/// starts at `offset`) that are not all zero; block boundaries are aligned to the file.
fn for_each_nonzero_run(
    offset: u64,
    data: &[u8],
    mut f: impl FnMut(u64, u64) -> Result<()>,
) -> Result<()> {
    let mut run: Option<(u64, u64)> = None;
    let mut at = 0;
    while at < data.len() {
        let file_at = offset + at as u64;
        let block_end = (file_at / ZERO_BLOCK_BYTES + 1) * ZERO_BLOCK_BYTES;
        let len = ((block_end - file_at) as usize).min(data.len() - at);
        if is_zero(&data[at..at + len]) {
            if let Some((o, l)) = run.take() {
                f(o, l)?;
            }
        } else {
            match &mut run {
                Some((_, l)) => *l += len as u64,
                None => run = Some((file_at, len as u64)),
            }
        }
        at += len;
    }
    match run {
        Some((o, l)) => f(o, l),
        None => Ok(()),
    }
}

/// Gathers non-zero data and writes it with one `write_batch` per [`BATCH_BYTES`], and
/// gathers contiguous ranges of the base file into one kernel copy of at most [`BATCH_BYTES`].
struct Batch<'a> {
    /// `None`: a read pass, nothing is written.
    file: Option<&'a dyn File>,
    path: &'a Path,
    base: &'a dyn File,
    buf: Vec<u8>,
    /// `(file offset, start in buf, length)`, merged when contiguous.
    spans: Vec<(u64, usize, usize)>,
    /// `(file offset, base file offset, length)` of a pending kernel copy.
    copy: Option<(u64, u64, u64)>,
    written: u64,
    /// The sum of every byte written or copied, taken from the verified bytes in memory (when
    /// asked for).
    sum: Option<ContentSum>,
}

impl<'a> Batch<'a> {
    fn new(
        disk: &'a DiskView,
        file: Option<&'a dyn File>,
        path: &'a Path,
        key: Option<ContentKey>,
    ) -> Batch<'a> {
        Batch {
            file,
            path,
            base: disk.base.file(),
            buf: Vec::new(),
            spans: Vec::new(),
            copy: None,
            written: 0,
            sum: key.map(ContentSum::new),
        }
    }

    /// Queues `data` for file offset `offset`, dropping blocks that are all zero.
    fn push(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let mut at = 0;
        while at < data.len() {
            let file_at = offset + at as u64;
            let block_end = (file_at / ZERO_BLOCK_BYTES + 1) * ZERO_BLOCK_BYTES;
            let len = ((block_end - file_at) as usize).min(data.len() - at);
            let part = &data[at..at + len];
            if !is_zero(part) {
                self.add_sum(file_at, part);
                self.append(file_at, part)?;
            }
            at += len;
        }
        Ok(())
    }

    fn add_sum(&mut self, offset: u64, data: &[u8]) {
        if let Some(sum) = &mut self.sum {
            sum.add(offset, data);
        }
    }

    /// Queues a copy of `len` verified bytes at `base_offset` of the base file to `offset`.
    fn copy_base(&mut self, offset: u64, base_offset: u64, len: u64) -> Result<()> {
        if let Some((o, b, l)) = &mut self.copy
            && *o + *l == offset
            && *b + *l == base_offset
            && *l + len <= BATCH_BYTES as u64
        {
            *l += len;
            return Ok(());
        }
        self.flush_copy()?;
        self.copy = Some((offset, base_offset, len));
        Ok(())
    }

    fn flush_copy(&mut self) -> Result<()> {
        let Some((offset, base_offset, len)) = self.copy.take() else {
            return Ok(());
        };
        let Some(file) = self.file else {
            self.written += len;
            return Ok(());
        };
        file.copy_from(self.base, base_offset, offset, len)
            .map_err(|e| {
                os_err(
                    self.path,
                    &format!("copy {len} bytes of the base image to byte {offset}"),
                    e,
                )
                .at(offset)
            })?;
        self.written += len;
        Ok(())
    }

    fn append(&mut self, offset: u64, part: &[u8]) -> Result<()> {
        if self.buf.len() + part.len() > BATCH_BYTES {
            self.flush()?;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(part);
        match self.spans.last_mut() {
            Some(last) if last.0 + last.2 as u64 == offset => last.2 += part.len(),
            _ => self.spans.push((offset, start, part.len())),
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.flush_copy()?;
        if self.spans.is_empty() {
            return Ok(());
        }
        if let Some(file) = self.file {
            let writes: Vec<WriteAt<'_>> = self
                .spans
                .iter()
                .map(|&(offset, start, len)| WriteAt {
                    offset,
                    data: &self.buf[start..start + len],
                })
                .collect();
            let first = self.spans[0].0;
            file.write_batch(&writes, false).map_err(|e| {
                os_err(
                    self.path,
                    &format!("write {} bytes at byte {first}", self.buf.len()),
                    e,
                )
                .at(first)
            })?;
        }
        self.written += self.buf.len() as u64;
        self.buf.clear();
        self.spans.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_io::sim::SimStorage;

    fn write_file(storage: &dyn Storage, path: &str, data: &[u8]) {
        let f = storage.open(Path::new(path), OpenMode::CreateNew).unwrap();
        f.write_all_at(data, 0).unwrap();
    }

    fn read_file(storage: &dyn Storage, path: &str) -> Vec<u8> {
        let f = storage.open(Path::new(path), OpenMode::Read).unwrap();
        let mut buf = vec![0; f.len().unwrap() as usize];
        f.read_exact_at(&mut buf, 0).unwrap();
        buf
    }

    /// Bug (finding 1): nothing checked that the images under their final names were the ones
    /// the run wrote before it said so. An image whose bytes differ from the sum computed while
    /// writing is now refused after placing, the new set is removed, and the images it was to
    /// replace are renamed back.
    #[test]
    fn finding_1_an_image_that_is_not_what_was_written_is_refused_and_the_old_set_restored() {
        let sim = SimStorage::new(1);
        let storage: &dyn Storage = sim.as_ref();
        storage.create_dir_all(Path::new("/out")).unwrap();
        write_file(storage, "/out/a.raw", b"old a");
        write_file(storage, "/out/.a.new", b"new a");
        write_file(storage, "/out/.b.new", b"changed b");
        let key = ContentKey::random();
        let staged = |from: &str, to: &str, wrote: &[u8]| {
            let mut sum = ContentSum::new(key);
            sum.add(0, wrote);
            Staged {
                from: PathBuf::from(from),
                to: PathBuf::from(to),
                len: wrote.len() as u64,
                check: PlacedCheck::Sum(sum),
            }
        };
        let set = [
            staged("/out/.a.new", "/out/a.raw", b"new a"),
            staged("/out/.b.new", "/out/b.raw", b"written b"),
        ];
        let err = place_images(storage, Path::new("/out"), &set, true).unwrap_err();
        assert!(
            err.to_string().contains("not the one this run wrote"),
            "{err}"
        );
        assert_eq!(read_file(storage, "/out/a.raw"), b"old a");
        assert_eq!(storage.read_dir(Path::new("/out")).unwrap(), ["a.raw"]);

        write_file(storage, "/out/.b.new2", b"written b");
        write_file(storage, "/out/.a.new2", b"new a");
        let set = [
            staged("/out/.a.new2", "/out/a.raw", b"new a"),
            staged("/out/.b.new2", "/out/b.raw", b"written b"),
        ];
        place_images(storage, Path::new("/out"), &set, true).unwrap();
        assert_eq!(read_file(storage, "/out/a.raw"), b"new a");
        assert_eq!(read_file(storage, "/out/b.raw"), b"written b");
        assert_eq!(
            storage.read_dir(Path::new("/out")).unwrap(),
            ["a.raw", "b.raw"]
        );
    }

    /// The default check, by identity: a final name that no longer names the file the run
    /// wrote (replaced by another file of the same length) is refused, and the old set restored.
    #[test]
    fn an_image_replaced_by_another_file_is_refused_by_identity_and_the_old_set_restored() {
        let sim = SimStorage::new(1);
        let storage: &dyn Storage = sim.as_ref();
        storage.create_dir_all(Path::new("/out")).unwrap();
        write_file(storage, "/out/a.raw", b"old a");
        write_file(storage, "/out/.a.new", b"new a");
        write_file(storage, "/out/.b.new", b"new b");
        let id = |path: &str| storage.file_id(Path::new(path)).unwrap().unwrap();
        let staged = |from: &str, to: &str, id: FileId| Staged {
            from: PathBuf::from(from),
            to: PathBuf::from(to),
            len: 5,
            check: PlacedCheck::Identity(id),
        };
        let (a, b) = (id("/out/.a.new"), id("/out/.b.new"));
        // Another process replaces b's file with one of its own, same name and length.
        storage.remove_file(Path::new("/out/.b.new")).unwrap();
        write_file(storage, "/out/.b.new", b"evil!");
        let set = [
            staged("/out/.a.new", "/out/a.raw", a),
            staged("/out/.b.new", "/out/b.raw", b),
        ];
        let err = place_images(storage, Path::new("/out"), &set, true).unwrap_err();
        assert!(
            err.to_string().contains("not the image this run wrote"),
            "{err}"
        );
        assert_eq!(read_file(storage, "/out/a.raw"), b"old a");
        assert_eq!(storage.read_dir(Path::new("/out")).unwrap(), ["a.raw"]);

        // A file of the right identity but another length is refused too.
        write_file(storage, "/out/.c.new", b"short");
        let c = id("/out/.c.new");
        let mut wrong_len = staged("/out/.c.new", "/out/c.raw", c);
        wrong_len.len = 6;
        let err = place_images(storage, Path::new("/out"), &[wrong_len], true).unwrap_err();
        assert!(err.to_string().contains("6 expected"), "{err}");

        write_file(storage, "/out/.a.new2", b"new a");
        let set = [staged("/out/.a.new2", "/out/a.raw", id("/out/.a.new2"))];
        place_images(storage, Path::new("/out"), &set, true).unwrap();
        assert_eq!(read_file(storage, "/out/a.raw"), b"new a");
    }
}
