//! Capturing what changed on a disk at the cost of what changed: from an NBD export with a dirty
//! bitmap (only the dirty extents are read), from an NBD export without one (a full pass that
//! reads everything but the ranges that read as zeros), or from an image or device with a list
//! of changed ranges (only the listed ranges are read). Each pass decides all it will do before
//! it journals anything (the export's size against the disk's, the bitmap offered, the whole
//! extent map or list), records itself as pending (`pending`), journals, makes its records
//! durable and only then clears the record. Reads run on a thread of their own, several in
//! flight, while the caller's thread journals (`pull`).
//!
//! A pass takes no point (as `ingest` of an image takes none): its caller does, through
//! [`point_unless_pending`], which refuses while a pass is pending. Blocks a pass journals are records newer than the disk's digest
//! cache, so a later image ingest re-reads them rather than trusting the cache.

mod nbd_map;
mod pending;
mod plan;
mod pull;
mod ranges;
mod uri;

use std::path::Path;
use std::sync::Arc;

use replog_image::SourceFormat;
use replog_io::{File, Storage};
use replog_nbd::{Client, proto};
use replog_writer::{DiskInfo, Writer};
use serde::Serialize;

use crate::error::{Result, VaultError, VaultErrorKind};
use crate::import::AddedDisk;
use plan::{Plan, Ranges};
use pull::{Handover, READ_BYTES, READS_IN_FLIGHT, ReadFn};

pub use pending::{PendingCapture, point_unless_pending, refuse_point_while_pending};
pub use pull::{BATCH_READS, QUEUE_READS};
pub use ranges::{ChangedRange, parse_changed_ranges};
pub use uri::{NbdAddress, NbdUri};

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Captured {
    /// The disk's name.
    pub disk: String,
    /// What it read from.
    pub source: String,
    /// `dirty-bitmap`, `full` or `changed-ranges`.
    pub mode: &'static str,
    /// Bytes the bitmap marks dirty or the list names (the disk's size for a full pass).
    pub bytes_marked: u64,
    /// Bytes an unfinished earlier pass covered that the bitmap or list did not, covered again.
    pub bytes_unfinished: u64,
    /// Bytes of data read from the source (the client's count of data received; holes and
    /// zero ranges are not read).
    pub bytes_read: u64,
    /// Bytes journaled as writes.
    pub bytes_written: u64,
    /// Bytes journaled as zeros without reading them.
    pub bytes_zeroed: u64,
    /// Records appended.
    pub records: u64,
}

/// Where a pass over NBD reads from.
#[derive(Clone, Copy, Debug)]
pub struct NbdSource<'a> {
    /// The export.
    pub uri: &'a NbdUri,
    /// The dirty bitmap to read only the marked extents of; `None`: a full pass.
    pub bitmap: Option<&'a str>,
    /// Grow the disk first when the export is larger (a resize record; see `Writer::resize_disk`).
    pub grow: bool,
}

/// Journals what changed on disk `name` of the vault in `vault` from the NBD export
/// `source.uri`: with a bitmap, only the extents `qemu:dirty-bitmap:BITMAP` marks dirty (zero
/// ranges among them as zero records); without, every range that does not read as zeros (zero
/// ranges as zero records). `progress` gets the bytes journaled so far.
pub fn ingest_nbd(
    w: &mut Writer,
    storage: &dyn Storage,
    vault: &Path,
    name: &str,
    source: NbdSource<'_>,
    progress: &dyn Fn(u64),
) -> Result<Captured> {
    let NbdSource { uri, bitmap, grow } = source;
    let mut disk = w.disk(name)?;
    let mut contexts = vec![proto::BASE_ALLOCATION.to_owned()];
    contexts.extend(bitmap.map(|b| format!("qemu:dirty-bitmap:{b}")));
    let mut client = uri.connect(&contexts)?;
    let grows = grow && client.size() > disk.disk_bytes;
    if client.size() != disk.disk_bytes && !grows {
        return Err(VaultError::new(
            VaultErrorKind::InvalidRequest,
            format!(
                "{uri} (export {:?}) is {} bytes but disk {name:?} is {} bytes; nothing was \
                 journaled (a larger export: grow the disk with --grow or `replog disk resize`)",
                uri.export,
                client.size(),
                disk.disk_bytes
            ),
        ));
    }
    let marked = match bitmap {
        Some(_) => Some(nbd_map::dirty(&mut client, uri, &contexts[1])?),
        None => None,
    };
    let zeros = nbd_map::zeros(&mut client, uri)?;
    if grows {
        // Only now that the whole extent map was read: a refused pass resizes nothing.
        disk = w.resize_disk(name, client.size())?;
    }
    let mode = if bitmap.is_some() {
        "dirty-bitmap"
    } else {
        "full"
    };
    let pass = Pass::new(storage, vault, &disk, marked, &zeros, mode, uri.to_string())?;
    let read = nbd_reads(client, uri);
    pass.run(w, storage, vault, true, read, progress)
}

/// Adds disk `name`, the size of the NBD export `uri`, and journals the export's content: every
/// range that does not read as zeros (a new disk reads as zeros already).
pub fn add_disk_from_nbd(
    w: &mut Writer,
    storage: &dyn Storage,
    vault: &Path,
    name: &str,
    uri: &NbdUri,
) -> Result<(AddedDisk, Captured)> {
    let mut client = uri.connect(&[proto::BASE_ALLOCATION.to_owned()])?;
    let zeros = nbd_map::zeros(&mut client, uri)?;
    let disk = w.add_disk(name, client.size())?;
    let pass = Pass::new(storage, vault, &disk, None, &zeros, "full", uri.to_string())?;
    let read = nbd_reads(client, uri);
    let captured = pass.run(w, storage, vault, false, read, &|_| {})?;
    let added = AddedDisk {
        name: disk.name,
        disk_id: disk.disk_id,
        disk_bytes: disk.disk_bytes,
        image_format: Some("nbd".into()),
        bytes_read: captured.bytes_read,
    };
    Ok((added, captured))
}

/// Journals the ranges of `list` (named `list_name`) from the image `from`, read as `format`,
/// into disk `name`: ranges that exist are read, ranges that do not become zero records.
/// Everything the list leaves out is trusted as unchanged.
pub fn ingest_changed_ranges(
    w: &mut Writer,
    storage: &dyn Storage,
    vault: &Path,
    name: &str,
    (from, format): (&Path, SourceFormat),
    (list, list_name): (&[ChangedRange], &str),
    progress: &dyn Fn(u64),
) -> Result<Captured> {
    let disk = w.disk(name)?;
    let image = replog_image::open(storage, from, format, vault).map_err(VaultError::from)?;
    let len = image.file.len().map_err(|e| {
        VaultError::new(VaultErrorKind::Io, format!("{}: {e}", from.display())).in_file(from)
    })?;
    if len != disk.disk_bytes {
        return Err(VaultError::new(
            VaultErrorKind::InvalidRequest,
            format!(
                "{} is {len} bytes but disk {name:?} is {} bytes; nothing was journaled",
                from.display(),
                disk.disk_bytes
            ),
        )
        .in_file(from));
    }
    let range = |r: &ChangedRange| (r.offset, r.offset + r.length);
    let marked: Ranges = list.iter().map(range).collect();
    let zeros: Ranges = list.iter().filter(|r| !r.exists).map(range).collect();
    let source = format!("{} (changed ranges from {list_name})", from.display());
    let pass = Pass::new(
        storage,
        vault,
        &disk,
        Some(marked),
        &zeros,
        "changed-ranges",
        source,
    )?;
    let read = image_reads(image.file.clone(), from);
    pass.run(w, storage, vault, true, read, progress)
}

/// Reads from an NBD export, pipelined; the bytes read are the client's count of data received.
fn nbd_reads(mut client: Client, uri: &NbdUri) -> Box<ReadFn<'_>> {
    Box::new(
        move |reads: &mut dyn Iterator<Item = (u64, u32)>, done: &mut Handover<'_>| {
            let e = |e| uri.error(e);
            client.read_many(reads, READS_IN_FLIGHT, done).map_err(e)?;
            let bytes = client.data_bytes_read();
            client.disconnect().map_err(e)?;
            Ok(bytes)
        },
    )
}

/// Reads from an image file, one after the other (the reader thread still overlaps them with
/// journaling).
fn image_reads(file: Arc<dyn File>, path: &Path) -> Box<ReadFn<'_>> {
    Box::new(
        move |reads: &mut dyn Iterator<Item = (u64, u32)>, done: &mut Handover<'_>| {
            let mut bytes = 0u64;
            for (offset, len) in reads {
                let mut buf = vec![0u8; len as usize];
                file.read_exact_at(&mut buf, offset).map_err(|e| {
                    let what = format!("{}: reading {len} bytes at {offset}: {e}", path.display());
                    VaultError::new(VaultErrorKind::Io, what).in_file(path)
                })?;
                bytes += u64::from(len);
                if done(offset, buf).is_break() {
                    break;
                }
            }
            Ok(bytes)
        },
    )
}

/// A pass decided: its plan and what it reports.
struct Pass {
    disk_id: u32,
    plan: Plan,
    pending: PendingCapture,
    captured: Captured,
}

impl Pass {
    /// The pass over `marked` (`None`: the whole disk) and whatever an unfinished earlier pass
    /// of the disk covered, less `zeros`.
    fn new(
        storage: &dyn Storage,
        vault: &Path,
        disk: &DiskInfo,
        marked: Option<Ranges>,
        zeros: &[(u64, u64)],
        mode: &'static str,
        source: String,
    ) -> Result<Pass> {
        let whole = vec![(0, disk.disk_bytes)];
        let earlier = pending::read(storage, vault, disk.disk_id, &disk.name)?;
        let bytes_marked = plan::total(marked.as_ref().unwrap_or(&whole));
        let wanted = match (marked, earlier.map(|p| p.ranges)) {
            (None, _) | (_, Some(None)) => None,
            (Some(m), None) => Some(m),
            (Some(m), Some(Some(e))) => Some(plan::union(&m, &e)),
        };
        let covered = wanted.as_ref().unwrap_or(&whole);
        let captured = Captured {
            disk: disk.name.clone(),
            source: source.clone(),
            mode,
            bytes_marked,
            bytes_unfinished: plan::total(covered) - bytes_marked,
            ..Captured::default()
        };
        Ok(Pass {
            disk_id: disk.disk_id,
            plan: plan::plan(covered, zeros, READ_BYTES),
            pending: PendingCapture {
                disk: disk.name.clone(),
                disk_id: disk.disk_id,
                source,
                ranges: wanted,
            },
            captured,
        })
    }

    /// Records the pass as pending, journals it, makes it durable and clears the record.
    fn run(
        mut self,
        w: &mut Writer,
        storage: &dyn Storage,
        vault: &Path,
        zeros: bool,
        read: Box<ReadFn<'_>>,
        progress: &dyn Fn(u64),
    ) -> Result<Captured> {
        let first_lsn = w.last_lsn();
        pending::write(storage, vault, &self.pending)?;
        let pumped = pull::pump(w, self.disk_id, &self.plan, zeros, read, progress)?;
        w.sync()?;
        pending::clear(storage, vault, self.disk_id)?;
        self.captured.bytes_read = pumped.bytes_read;
        self.captured.bytes_written = pumped.bytes_written;
        self.captured.bytes_zeroed = pumped.bytes_zeroed;
        self.captured.records = w.last_lsn() - first_lsn;
        Ok(self.captured)
    }
}

/// Marks disk `name`'s unfinished pass, if any, as finished: an image ingest read the whole
/// image and journaled every block that differed, which covers whatever that pass covered.
pub fn finish_after_full_ingest(
    w: &Writer,
    storage: &dyn Storage,
    vault: &Path,
    name: &str,
) -> Result<()> {
    pending::clear(storage, vault, w.disk(name)?.disk_id)
}
