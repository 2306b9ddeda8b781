//! Source images for adding a disk and for ingest: opened through `replog-image` (raw, fixed VHD,
//! or converted by qemu-img; a conversion's scratch file goes in the vault directory, on the
//! filesystem where the disk's base image will go too), then read by the writer.

use std::path::Path;

use replog_image::SourceFormat;
use replog_io::Storage;
use replog_writer::{DiskInfo, IngestStats, Writer};
use serde::Serialize;

use crate::error::{Result, VaultError};

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
/// writes; `progress` gets the bytes of the disk scanned so far.
pub fn ingest(
    w: &mut Writer,
    storage: &dyn Storage,
    vault: &Path,
    name: &str,
    (from, format): (&Path, SourceFormat),
    progress: &dyn Fn(u64),
) -> Result<Ingested> {
    let image = replog_image::open(storage, from, format, vault).map_err(VaultError::from)?;
    let stats = w.ingest(name, image.file.as_ref(), from, progress)?;
    Ok(Ingested {
        stats,
        bytes_read: image.bytes_read(),
        image_format: image.format.clone(),
    })
}
