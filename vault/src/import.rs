//! Source images for adding a disk and for ingest: opened through `replog-image` (raw, fixed VHD,
//! or converted by qemu-img; a conversion's scratch file goes in the vault directory, on the
//! filesystem where the disk's base image will go too), then read by the writer. Growing a disk
//! (`resize_disk`, or an ingest that grows it first) lives here too.

use std::path::Path;

use replog_image::SourceFormat;
use replog_io::Storage;
use replog_writer::{DiskInfo, IngestStats, Writer};
use serde::Serialize;

use crate::error::{Result, VaultError, VaultErrorKind};

/// Where a new disk's content comes from.
#[derive(Clone, Copy, Debug)]
pub enum NewDisk<'a> {
    /// An image, read as this format; its virtual size is the disk's size.
    Image(&'a Path, SourceFormat),
    /// Nothing: an empty disk of this many bytes.
    Empty(u64),
}

/// A disk that was added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AddedDisk {
    /// The disk's name.
    #[serde(rename = "disk")]
    pub name: String,
    /// Its id in records.
    pub disk_id: u32,
    /// Its size.
    pub disk_bytes: u64,
    /// What the image was read as (`raw`, `vhd`, a qemu-img format); `None` for an empty disk.
    pub image_format: Option<String>,
    /// Bytes of the image read.
    pub bytes_read: u64,
}

/// What an ingest did, and what its image was read as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ingested {
    /// The writer's figures.
    pub stats: IngestStats,
    /// Bytes of the image read.
    pub bytes_read: u64,
    /// What the image was read as.
    pub image_format: String,
    /// The disk was grown to the image's size first (ingest with `grow`).
    pub resized: Option<ResizedDisk>,
}

/// How an ingest treats an image larger than its disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IngestOptions {
    /// Grow the disk to the image's size first (a resize record, then the ingest); without it
    /// such an image is refused.
    pub grow: bool,
}

/// A disk that was grown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResizedDisk {
    /// The disk's name.
    #[serde(rename = "disk")]
    pub name: String,
    /// Its id in records.
    pub disk_id: u32,
    /// Its size before.
    pub old_bytes: u64,
    /// Its size now.
    pub disk_bytes: u64,
    /// The LSN of the resize record; `None` when the disk already had the size asked for.
    pub lsn: Option<u64>,
}

/// Grows disk `name` of the vault `w` writes to `new_bytes`: a resize record, acknowledged
/// before this returns. Points before it keep the old size; the grown range reads as zeros until
/// written. Asking for the current size changes nothing; a smaller size is refused
/// ([`VaultErrorKind::InvalidRequest`], naming the disk and both sizes).
pub fn resize_disk(w: &mut Writer, name: &str, new_bytes: u64) -> Result<ResizedDisk> {
    let (old_bytes, last_lsn) = (w.disk(name)?.disk_bytes, w.last_lsn());
    let disk = w.resize_disk(name, new_bytes)?;
    Ok(ResizedDisk {
        name: disk.name,
        disk_id: disk.disk_id,
        old_bytes,
        disk_bytes: disk.disk_bytes,
        lsn: (w.last_lsn() != last_lsn).then(|| w.last_lsn()),
    })
}

/// Adds disk `name` to the vault in `vault` that `w` writes, seeded from `from`.
pub fn add_disk(
    w: &mut Writer,
    storage: &dyn Storage,
    vault: &Path,
    name: &str,
    from: NewDisk<'_>,
) -> Result<AddedDisk> {
    let (disk, image): (DiskInfo, _) = match from {
        NewDisk::Image(path, format) => {
            let source =
                replog_image::open(storage, path, format, vault).map_err(VaultError::from)?;
            let disk = w.add_disk_from_image(name, source.file.as_ref(), path)?;
            (disk, Some(source))
        }
        NewDisk::Empty(bytes) => (w.add_disk(name, bytes)?, None),
    };
    Ok(AddedDisk {
        name: disk.name,
        disk_id: disk.disk_id,
        disk_bytes: disk.disk_bytes,
        image_format: image.as_ref().map(|i| i.format.clone()),
        bytes_read: image.as_ref().map_or(0, |i| i.bytes_read()),
    })
}

/// Ingests the image `from` (read as `format`) into disk `name` of the vault in `vault` that `w`
/// writes; `progress` gets the bytes of the disk scanned so far. An image larger than the disk
/// is refused: see [`ingest_with`].
pub fn ingest(
    w: &mut Writer,
    storage: &dyn Storage,
    vault: &Path,
    name: &str,
    image: (&Path, SourceFormat),
    progress: &dyn Fn(u64),
) -> Result<Ingested> {
    let opts = IngestOptions::default();
    ingest_with(w, storage, vault, name, image, opts, progress)
}

/// [`ingest`], growing the disk first to an image larger than it when `opts.grow` says so.
pub fn ingest_with(
    w: &mut Writer,
    storage: &dyn Storage,
    vault: &Path,
    name: &str,
    (from, format): (&Path, SourceFormat),
    opts: IngestOptions,
    progress: &dyn Fn(u64),
) -> Result<Ingested> {
    let image = replog_image::open(storage, from, format, vault).map_err(VaultError::from)?;
    let image_bytes = image.file.len().map_err(|e| {
        VaultError::from(replog_writer::WriteError::io(
            from,
            None,
            "reading the length",
            e,
        ))
    })?;
    let disk_bytes = w.disk(name)?.disk_bytes;
    let resized = match (image_bytes > disk_bytes, opts.grow) {
        (false, _) => None,
        (true, true) => Some(resize_disk(w, name, image_bytes)?),
        (true, false) => {
            return Err(VaultError::new(
                VaultErrorKind::InvalidRequest,
                format!(
                    "the image is {image_bytes} bytes but disk {name:?} is {disk_bytes} bytes: \
                     grow the disk first (`--grow`, or `replog disk resize`)"
                ),
            )
            .in_file(from));
        }
    };
    let stats = w.ingest(name, image.file.as_ref(), from, progress)?;
    Ok(Ingested {
        stats,
        bytes_read: image.bytes_read(),
        image_format: image.format.clone(),
        resized,
    })
}
