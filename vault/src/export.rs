//! Failover output formats: the reader materializes raw images; this module turns them into the
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
//! `DIR/.replog-failover-*`, safe to delete). As for raw output, `DIR` is locked for the whole
//! run ([`OutputDir`]), the targets are checked under the lock before anything is written, the
//! results are synced and then placed by the reader's [`replog_reader::place_images`]: images
//! being replaced are kept aside until the whole new set is in place and has been read back and
//! checked against the sums computed while writing (a VHD's is its raw image's plus the
//! footer's; a qemu-img image's is taken from the file qemu-img wrote), so a point's disks
//! appear all or none and a failure restores what was there.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use replog_image::{qemu_img, vhd};
use replog_io::{ContentSum, OpenMode, Storage};
use replog_reader::{
    DiskStats, MaterializeOptions, MaterializeStats, OutputDir, PlacedCheck, PointView, Staged,
};

use crate::error::{Result, VaultError, VaultErrorKind};
use crate::location::{Tier, Vault};

/// Image formats of failover output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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

impl Vault {
    /// Writes every disk of `view` (a point of this vault) as `out_dir/NAME.<format>`; see the
    /// module documentation. Reading a remote copy, `parallel` workers fetch chunks (and write
    /// disk ranges) at once: more than cores, since each mostly waits for a chunk to arrive.
    /// `progress` gets the disk bytes materialized so far.
    pub fn export(
        &self,
        view: &PointView,
        out_dir: &Path,
        format: OutputFormat,
        opts: &MaterializeOptions,
        parallel: usize,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Exported> {
        let run = || export(view, out_dir, format, opts, progress);
        if !matches!(self.tier(), Tier::Remote { .. }) {
            return run();
        }
        let n = parallel.max(1);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| {
                VaultError::new(VaultErrorKind::Io, format!("cannot start {n} workers: {e}"))
            })?
            .install(run)
    }
}

/// Writes every disk of `view` as `out_dir/NAME.<format>`; see the module documentation.
/// `progress` gets the disk bytes materialized so far.
pub fn export(
    view: &PointView,
    out_dir: &Path,
    format: OutputFormat,
    opts: &MaterializeOptions,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Exported> {
    if format == OutputFormat::Raw {
        let stats = replog_reader::materialize_with_progress(view, out_dir, opts, progress)?;
        let paths = stats.disks.iter().map(|d| d.path.clone()).collect();
        return Ok(exported(&stats, paths, format));
    }
    if format.qemu().is_some() {
        qemu_img::require(
            &format!("--format {}", format.name()),
            "raw and vhd are written natively",
        )
        .map_err(VaultError::from)?;
    }
    let storage = view.storage().as_ref();
    let targets: Vec<PathBuf> = view
        .disks()
        .iter()
        .map(|d| out_dir.join(format!("{}.{}", d.name(), format.extension())))
        .collect();
    // Held until every image is in place: no other run writes into the directory meanwhile.
    let out = OutputDir::lock(view.storage(), out_dir, opts.sync)?;
    replog_reader::check_targets(storage, &targets, opts.force)?;
    let staging = tempfile::Builder::new()
        .prefix(".replog-failover-")
        .tempdir_in(out.path())
        .map_err(|e| {
            io_error(
                out_dir,
                format!(
                    "{}: cannot create a staging directory: {e}",
                    out_dir.display()
                ),
            )
        })?;
    // Summed while written: each converted image is checked against sums derived from these.
    let raw_opts = MaterializeOptions {
        force: false,
        sync: false,
        read_back: true,
        ..MaterializeOptions::default()
    };
    let stats =
        replog_reader::materialize_with_progress(view, staging.path(), &raw_opts, progress)?;
    let mut staged = Vec::with_capacity(stats.disks.len());
    for (disk, target) in stats.disks.iter().zip(&targets) {
        staged.push(convert(storage, disk, target, format, opts.sync)?);
    }
    replog_reader::place_images(storage, out.path(), &staged, opts.sync)?;
    // Everything left in the staging directory is scratch; failing to remove it loses nothing.
    let _ = staging.close();
    drop(out);
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

/// Turns one staged raw image into `format`, next to it; returns it staged for `target`, with
/// its sum (synced when `sync`).
fn convert(
    storage: &dyn Storage,
    disk: &DiskStats,
    target: &Path,
    format: OutputFormat,
    sync: bool,
) -> Result<Staged> {
    let raw = disk.path.as_path();
    let staged = raw.with_extension(format.extension());
    let (len, sum) = match format.qemu() {
        None => {
            let (len, sum) = append_vhd_footer(storage, disk, sync)?;
            storage
                .rename(raw, &staged)
                .map_err(|e| io_error(raw, format!("{}: cannot rename: {e}", raw.display())))?;
            (len, sum)
        }
        Some((qemu_format, options)) => {
            let cache = if sync {
                qemu_img::Cache::Flush
            } else {
                qemu_img::Cache::Unsafe
            };
            qemu_img::convert(raw, "raw", &staged, qemu_format, options, cache).map_err(|e| {
                VaultError::from(e.reworded(raw, |m| {
                    format!(
                        "{}: cannot convert to {}: {m}",
                        raw.display(),
                        format.name()
                    )
                }))
            })?;
            // The raw image is scratch now; free its space before the next disk.
            let _ = storage.remove_file(raw);
            if sync {
                sync_file(storage, &staged)?;
            }
            sum_of(storage, &staged, ContentSum::new(raw_sum(disk).key()))?
        }
    };
    Ok(Staged {
        from: staged,
        to: target.to_path_buf(),
        len,
        check: PlacedCheck::Sum(sum),
    })
}

/// The sum of a raw image materialized with `read_back`, which sums every image.
fn raw_sum(disk: &DiskStats) -> ContentSum {
    disk.sum
        .expect("a raw image materialized with read_back has a sum")
}

/// The length and sum of a file qemu-img wrote, to check it again once it is in place.
fn sum_of(storage: &dyn Storage, path: &Path, mut sum: ContentSum) -> Result<(u64, ContentSum)> {
    let fail =
        |e: std::io::Error| io_error(path, format!("{}: cannot read back: {e}", path.display()));
    let file = storage.open(path, OpenMode::Read).map_err(fail)?;
    let len = file.len().map_err(fail)?;
    sum.add_file(file.as_ref(), 0, len).map_err(fail)?;
    Ok((len, sum))
}

/// Makes a disk's raw image a fixed VHD in place: pads it to a whole MiB (a hole) and writes the
/// footer after the padding. Returns the VHD's length and sum: the raw image's, plus the footer.
fn append_vhd_footer(
    storage: &dyn Storage,
    disk: &DiskStats,
    sync: bool,
) -> Result<(u64, ContentSum)> {
    let path = disk.path.as_path();
    let fail = |what: &str, e: std::io::Error| {
        io_error(path, format!("{}: cannot {what}: {e}", path.display()))
    };
    let file = storage
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| fail("open", e))?;
    let size = vhd::padded_size(disk.size_bytes);
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
    let mut sum = raw_sum(disk);
    sum.add(size, &footer);
    Ok((size + footer.len() as u64, sum))
}

fn sync_file(storage: &dyn Storage, path: &Path) -> Result<()> {
    storage
        .open(path, OpenMode::ReadWrite)
        .and_then(|f| f.sync_data())
        .map_err(|e| io_error(path, format!("{}: cannot sync: {e}", path.display())))
}

/// An I/O failure on `path`, said in `detail`.
fn io_error(path: &Path, detail: String) -> VaultError {
    VaultError::new(VaultErrorKind::Io, detail).in_file(path)
}
