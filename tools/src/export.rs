//! Failover output formats: the reader materializes raw images; this layer turns them into the
//! format asked for.
//!
//! - `raw`: the reader's sparse images, `DIR/NAME.raw`, as they are.
//! - `vhd`: a fixed VHD, written natively: the raw image extended (sparsely) to a whole MiB,
//!   then the 512-byte footer of [`vhd`]. This is Azure's upload format.
//! - `qcow2`, `vhdx` (dynamic), `vmdk` (monolithic sparse): `qemu-img convert` of the raw image.
//!   Checked for before anything is written; without qemu-img the run fails and says so.
//!
//! Other formats than raw are built in a hidden staging directory inside `DIR` (same filesystem,
//! so the results are renamed into place, and existing `DIR/NAME.raw` files are left alone).
//! The staging directory holds every disk's sparse raw image at once, plus one converted image
//! at a time; it is removed at the end, also on failure (a killed run leaves it behind, as
//! `DIR/.replog-failover-*`, safe to delete). As for raw output, the results are synced before
//! they are renamed into place, the directory after, and a failure removes every image of the
//! run that was already renamed, so a point's disks appear all or none.

pub mod qemu_img;
pub mod vhd;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use replog_io::{OpenMode, Storage};
use replog_reader::{MaterializeOptions, MaterializeStats, PointView, ReadErrorKind};

use crate::Failure;

/// Image formats of failover output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Sparse raw images.
    Raw,
    /// Fixed VHD (Azure's upload format), size rounded up to a whole MiB.
    Vhd,
    /// qcow2, by qemu-img.
    Qcow2,
    /// Dynamic VHDX, by qemu-img.
    Vhdx,
    /// Monolithic sparse VMDK, by qemu-img.
    Vmdk,
}

impl OutputFormat {
    /// The name on the command line and in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Raw => "raw",
            OutputFormat::Vhd => "vhd",
            OutputFormat::Qcow2 => "qcow2",
            OutputFormat::Vhdx => "vhdx",
            OutputFormat::Vmdk => "vmdk",
        }
    }

    /// The file name extension of the images: the format's name.
    pub fn extension(self) -> &'static str {
        self.name()
    }

    /// qemu-img's output format and creation options, for the formats it writes.
    fn qemu(self) -> Option<(&'static str, Option<&'static str>)> {
        match self {
            OutputFormat::Raw | OutputFormat::Vhd => None,
            OutputFormat::Qcow2 => Some(("qcow2", None)),
            OutputFormat::Vhdx => Some(("vhdx", Some("subformat=dynamic"))),
            OutputFormat::Vmdk => Some(("vmdk", Some("subformat=monolithicSparse"))),
        }
    }
}

/// One disk's image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedDisk {
    /// The disk's name.
    pub name: String,
    /// The image written.
    pub path: PathBuf,
    /// The disk's size.
    pub size_bytes: u64,
    /// The image's virtual size: the disk's size, rounded up to a whole MiB for VHD.
    pub virtual_bytes: u64,
}

/// What a failover wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// Per disk, in the view's order.
    pub disks: Vec<ExportedDisk>,
    /// Bytes of disk data the reader wrote (raw images, before any conversion).
    pub written_bytes: u64,
}

/// Writes every disk of `view` as `out_dir/NAME.<format>`; see the module documentation.
/// `progress` gets the disk bytes materialized so far.
pub fn export(
    view: &PointView,
    out_dir: &Path,
    format: OutputFormat,
    opts: &MaterializeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Exported, Failure> {
    if format == OutputFormat::Raw {
        let stats = materialize(view, out_dir, opts, progress)?;
        let paths = stats.disks.iter().map(|d| d.path.clone()).collect();
        return Ok(exported(&stats, paths, format));
    }
    if format.qemu().is_some() {
        qemu_img::require(
            &format!("--format {}", format.name()),
            "raw and vhd are written natively",
        )?;
    }
    let storage = view.storage().as_ref();
    let targets: Vec<PathBuf> = view
        .disks()
        .iter()
        .map(|d| out_dir.join(format!("{}.{}", d.name(), format.extension())))
        .collect();
    refuse_existing(storage, &targets, opts.force)?;
    create_dir(storage, out_dir, opts.sync)?;
    let staging = tempfile::Builder::new()
        .prefix(".replog-failover-")
        .tempdir_in(out_dir)
        .map_err(|e| {
            Failure::new(format!(
                "{}: cannot create a staging directory: {e}",
                out_dir.display()
            ))
        })?;
    let raw_opts = MaterializeOptions {
        force: false,
        sync: false,
    };
    let stats = materialize(view, staging.path(), &raw_opts, progress)?;
    let mut staged = Vec::with_capacity(stats.disks.len());
    for disk in &stats.disks {
        staged.push(convert(
            storage,
            &disk.path,
            disk.size_bytes,
            format,
            opts.sync,
        )?);
    }
    let mut renamed = Vec::with_capacity(staged.len());
    let placed = place(storage, &staged, &targets, out_dir, opts.sync, &mut renamed);
    if placed.is_err() {
        // A partial set of a point's disks is worse than none.
        for path in &renamed {
            let _ = storage.remove_file(path);
        }
    }
    placed?;
    // Everything left in the staging directory is scratch; failing to remove it loses nothing.
    let _ = staging.close();
    Ok(exported(&stats, targets, format))
}

fn exported(stats: &MaterializeStats, paths: Vec<PathBuf>, format: OutputFormat) -> Exported {
    Exported {
        disks: stats
            .disks
            .iter()
            .zip(paths)
            .map(|(d, path)| ExportedDisk {
                name: d.name.clone(),
                path,
                size_bytes: d.size_bytes,
                virtual_bytes: match format {
                    OutputFormat::Vhd => vhd::padded_size(d.size_bytes),
                    _ => d.size_bytes,
                },
            })
            .collect(),
        written_bytes: stats.written_bytes,
    }
}

/// The reader's materialize, with a hint on the error for existing images.
fn materialize(
    view: &PointView,
    out_dir: &Path,
    opts: &MaterializeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<MaterializeStats, Failure> {
    replog_reader::materialize_with_progress(view, out_dir, opts, progress).map_err(|e| {
        let refused = e.kind() == ReadErrorKind::AlreadyExists;
        let mut f = Failure::from(e);
        if refused {
            f.message += "; pass --force to overwrite";
        }
        f
    })
}

/// Refuses when an output image exists and `force` is off.
fn refuse_existing(storage: &dyn Storage, targets: &[PathBuf], force: bool) -> Result<(), Failure> {
    for target in targets {
        let exists = storage
            .exists(target)
            .map_err(|e| Failure::new(format!("{}: cannot look for it: {e}", target.display())))?;
        if exists && !force {
            return Err(Failure::new(format!(
                "{}: the image exists already; remove it, or pass --force to overwrite",
                target.display()
            )));
        }
    }
    Ok(())
}

/// Creates `dir` and its missing parents; with `sync`, makes each new entry durable.
fn create_dir(storage: &dyn Storage, dir: &Path, sync: bool) -> Result<(), Failure> {
    let fail = |what: &str, p: &Path, e: std::io::Error| {
        Failure::new(format!("{}: cannot {what}: {e}", p.display()))
    };
    let mut missing = Vec::new();
    let mut d = dir;
    while !storage.exists(d).map_err(|e| fail("look for it", d, e))? {
        missing.push(d);
        match d.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => d = parent,
            _ => break,
        }
    }
    storage
        .create_dir_all(dir)
        .map_err(|e| fail("create the output directory", dir, e))?;
    if sync {
        for created in missing {
            let parent = created
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            storage
                .sync_dir(parent)
                .map_err(|e| fail("sync the directory", parent, e))?;
        }
    }
    Ok(())
}

/// Turns one staged raw image into `format`, next to it; returns the staged result, synced
/// when `sync`.
fn convert(
    storage: &dyn Storage,
    raw: &Path,
    disk_bytes: u64,
    format: OutputFormat,
    sync: bool,
) -> Result<PathBuf, Failure> {
    let staged = raw.with_extension(format.extension());
    match format.qemu() {
        None => {
            append_vhd_footer(storage, raw, disk_bytes, sync)?;
            storage
                .rename(raw, &staged)
                .map_err(|e| Failure::new(format!("{}: cannot rename: {e}", raw.display())))?;
        }
        Some((qemu_format, options)) => {
            let cache = if sync {
                qemu_img::Cache::Flush
            } else {
                qemu_img::Cache::Unsafe
            };
            qemu_img::convert(raw, "raw", &staged, qemu_format, options, cache).map_err(|e| {
                Failure::new(format!(
                    "{}: cannot convert to {}: {e}",
                    raw.display(),
                    format.name()
                ))
            })?;
            // The raw image is scratch now; free its space before the next disk.
            let _ = storage.remove_file(raw);
            if sync {
                sync_file(storage, &staged)?;
            }
        }
    }
    Ok(staged)
}

/// Makes a raw image of `disk_bytes` a fixed VHD in place: pads it to a whole MiB (a hole) and
/// writes the footer after the padding.
fn append_vhd_footer(
    storage: &dyn Storage,
    path: &Path,
    disk_bytes: u64,
    sync: bool,
) -> Result<(), Failure> {
    let fail = |what: &str, e: std::io::Error| {
        Failure::new(format!("{}: cannot {what}: {e}", path.display()))
    };
    let file = storage
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| fail("open", e))?;
    let size = vhd::padded_size(disk_bytes);
    file.set_len(size)
        .map_err(|e| fail("extend to a whole MiB", e))?;
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let footer =
        vhd::encode_fixed_footer(size, vhd::timestamp_of_unix(now_s), vhd::random_unique_id());
    file.write_all_at(&footer, size)
        .map_err(|e| fail(&format!("write the VHD footer at byte {size}"), e))?;
    if sync {
        file.sync_data().map_err(|e| fail("sync", e))?;
    }
    Ok(())
}

fn sync_file(storage: &dyn Storage, path: &Path) -> Result<(), Failure> {
    storage
        .open(path, OpenMode::ReadWrite)
        .and_then(|f| f.sync_data())
        .map_err(|e| Failure::new(format!("{}: cannot sync: {e}", path.display())))
}

/// Renames every staged image to its target, then syncs the directory when `sync`; `renamed`
/// collects the targets in place so far.
fn place(
    storage: &dyn Storage,
    staged: &[PathBuf],
    targets: &[PathBuf],
    out_dir: &Path,
    sync: bool,
    renamed: &mut Vec<PathBuf>,
) -> Result<(), Failure> {
    for (from, to) in staged.iter().zip(targets) {
        storage.rename(from, to).map_err(|e| {
            Failure::new(format!(
                "{}: cannot rename to {}: {e}",
                from.display(),
                to.display()
            ))
        })?;
        renamed.push(to.clone());
    }
    if sync {
        storage.sync_dir(out_dir).map_err(|e| {
            Failure::new(format!(
                "{}: cannot sync the directory: {e}",
                out_dir.display()
            ))
        })?;
    }
    Ok(())
}
