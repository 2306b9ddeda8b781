//! Materializing a view: one raw image file per disk, `<out>/<name>.raw`.
//!
//! Each image is written to `<out>/.<name>.raw.partial`, sized first so that everything never
//! written stays a hole, then filled with only non-zero data: base chunks the checksum table
//! marks as holes and zero records are skipped without reading, and blocks of data that happen
//! to be all zero are not written. Disks are written in parallel, and each disk in ranges of
//! [`RANGE_BYTES`] in parallel; each range works with buffers of a few MiB, never the whole disk.
//!
//! Every record and base chunk is verified as it is read. Only when every disk is complete are
//! the partial files synced (if asked), then renamed into place, then the directory synced; on
//! any error every partial file and every image this run renamed into place is removed, so a
//! failed run never leaves part of a point's disks under their final names.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use replog_io::{File, OpenMode, Storage, WriteAt};

use crate::disk_reader::DiskReader;
use crate::error::{ReadError, ReadErrorKind, Result};
use crate::extent_map::Source;
use crate::view::{DiskView, PointView};

/// The span of a disk one parallel task writes. A power of two at least as large as the largest
/// base chunk, so no chunk is read by two tasks.
pub const RANGE_BYTES: u64 = 64 << 20;
/// Bytes of data one task gathers before handing them to `write_batch`.
const BATCH_BYTES: usize = 4 << 20;
/// Granularity of the all-zero test: an all-zero block of this size is left as a hole.
const ZERO_BLOCK_BYTES: u64 = 4096;

/// How to materialize.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaterializeOptions {
    /// Replace existing `<name>.raw` files instead of refusing.
    pub force: bool,
    /// Make the images and their names durable (`fdatasync` each, then sync the directory).
    pub sync: bool,
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
    let storage = view.storage().as_ref();
    create_out_dir(storage, out_dir, opts.sync)?;
    for disk in view.disks() {
        let target = final_path(out_dir, disk);
        let exists = storage
            .exists(&target)
            .map_err(|e| ReadError::io(&target, "look for", e))?;
        if exists && !opts.force {
            return Err(ReadError::new(
                ReadErrorKind::AlreadyExists,
                "the image exists already; remove it or ask to overwrite it (force)",
            )
            .in_file(target));
        }
    }
    let done = AtomicU64::new(0);
    let job = Job {
        storage,
        out_dir,
        done: &done,
        progress,
    };
    let written: Result<Vec<_>> = view
        .disks()
        .par_iter()
        .map(|disk| job.write_partial(disk))
        .collect();
    let result = written.and_then(|written| job.finish(view, written, opts));
    if result.is_err() {
        for disk in view.disks() {
            // Best effort: the error being returned is the one that matters.
            let _ = storage.remove_file(&partial_path(out_dir, disk));
        }
    }
    result
}

fn final_path(out_dir: &Path, disk: &DiskView) -> PathBuf {
    out_dir.join(format!("{}.raw", disk.name()))
}

fn partial_path(out_dir: &Path, disk: &DiskView) -> PathBuf {
    out_dir.join(format!(".{}.raw.partial", disk.name()))
}

/// What every task of one run shares.
struct Job<'a> {
    storage: &'a dyn Storage,
    out_dir: &'a Path,
    done: &'a AtomicU64,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl Job<'_> {
    /// Writes one disk's partial image; returns its open file and the bytes written.
    fn write_partial(&self, disk: &DiskView) -> Result<(Arc<dyn File>, u64)> {
        let path = partial_path(self.out_dir, disk);
        let file = self
            .storage
            .open(&path, OpenMode::CreateTruncate)
            .map_err(|e| ReadError::io(&path, "create", e))?;
        file.set_len(disk.size())
            .map_err(|e| ReadError::io(&path, "set the length of", e))?;
        let ranges = disk.size().div_ceil(RANGE_BYTES);
        let written = (0..ranges)
            .into_par_iter()
            .map(|i| {
                let start = i * RANGE_BYTES;
                let end = (start + RANGE_BYTES).min(disk.size());
                let written = copy_range(disk, file.as_ref(), &path, start, end)?;
                (self.progress)(
                    self.done.fetch_add(end - start, Ordering::Relaxed) + (end - start),
                );
                Ok(written)
            })
            .try_reduce(|| 0, |a, b| Ok(a + b))?;
        Ok((file, written))
    }

    /// Syncs (if asked) and renames every partial image into place.
    fn finish(
        &self,
        view: &PointView,
        written: Vec<(Arc<dyn File>, u64)>,
        opts: &MaterializeOptions,
    ) -> Result<MaterializeStats> {
        // Every image is made durable before any is renamed, so a failure leaves no final name.
        if opts.sync {
            for (disk, (file, _)) in view.disks().iter().zip(&written) {
                file.sync_data()
                    .map_err(|e| ReadError::io(partial_path(self.out_dir, disk), "sync", e))?;
            }
        }
        let mut renamed = Vec::with_capacity(written.len());
        let result = self.rename_all(view, written, opts, &mut renamed);
        if result.is_err() {
            // A partial set of a point's disks is worse than none: remove this run's images.
            for path in &renamed {
                let _ = self.storage.remove_file(path);
            }
        }
        result
    }

    fn rename_all(
        &self,
        view: &PointView,
        written: Vec<(Arc<dyn File>, u64)>,
        opts: &MaterializeOptions,
        renamed: &mut Vec<PathBuf>,
    ) -> Result<MaterializeStats> {
        let mut stats = MaterializeStats::default();
        for (disk, (file, written_bytes)) in view.disks().iter().zip(written) {
            drop(file);
            let partial = partial_path(self.out_dir, disk);
            let target = final_path(self.out_dir, disk);
            self.storage
                .rename(&partial, &target)
                .map_err(|e| ReadError::io(&partial, "rename", e))?;
            renamed.push(target.clone());
            let hole_bytes = disk.size() - written_bytes;
            stats.written_bytes += written_bytes;
            stats.hole_bytes += hole_bytes;
            stats.disks.push(DiskStats {
                name: disk.name().to_owned(),
                path: target,
                size_bytes: disk.size(),
                written_bytes,
                hole_bytes,
            });
        }
        if opts.sync {
            self.storage
                .sync_dir(self.out_dir)
                .map_err(|e| ReadError::io(self.out_dir, "sync the directory", e))?;
        }
        Ok(stats)
    }
}

/// Creates `out_dir` and its missing parents; with `sync`, makes each new directory's entry
/// durable in its parent (a new directory survives a crash only then).
fn create_out_dir(storage: &dyn Storage, out_dir: &Path, sync: bool) -> Result<()> {
    let mut missing = Vec::new();
    let mut dir = out_dir;
    while !storage
        .exists(dir)
        .map_err(|e| ReadError::io(dir, "look for", e))?
    {
        missing.push(dir);
        match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
            _ => break,
        }
    }
    storage
        .create_dir_all(out_dir)
        .map_err(|e| ReadError::io(out_dir, "create the output directory", e))?;
    if sync {
        for created in missing {
            let parent = created
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            storage
                .sync_dir(parent)
                .map_err(|e| ReadError::io(parent, "sync the directory", e))?;
        }
    }
    Ok(())
}

/// Copies disk bytes `[start, end)` into `file`; returns the bytes written.
fn copy_range(disk: &DiskView, file: &dyn File, path: &Path, start: u64, end: u64) -> Result<u64> {
    let mut reader = disk.reader();
    let mut out = Batch {
        file,
        path,
        base: disk.base.file(),
        buf: Vec::new(),
        spans: Vec::new(),
        copy: None,
        written: 0,
    };
    for (at, piece) in disk.map.pieces_in(start, end) {
        match piece.source {
            Source::Zero => {}
            Source::Base => copy_base(&mut reader, &mut out, at, piece.end)?,
            Source::Record(r) => {
                let data = reader.record(&r)?;
                let from = r.data_offset as usize;
                out.push(at, &data[from..from + (piece.end - at) as usize])?;
            }
        }
    }
    out.flush()?;
    Ok(out.written)
}

/// Copies base bytes `[start, end)` chunk by chunk, skipping chunks stored as holes. Each chunk
/// is read and checked against its checksum, and then, block by block, the chunk's non-zero
/// blocks are copied by the kernel from the base file (`copy_file_range`): the check's read has
/// just brought those pages into the page cache, so the disk is read once and the bytes are
/// not copied through this process a second time.
fn copy_base(reader: &mut DiskReader<'_>, out: &mut Batch<'_>, start: u64, end: u64) -> Result<()> {
    let base = &reader.disk().base;
    let block = base.block_bytes();
    let data_offset = base.header.data_offset();
    let mut at = start;
    while at < end {
        let k = at / block;
        let (chunk_start, chunk_end) = base.chunk_range(k);
        let upto = end.min(chunk_end);
        let sum = reader.chunk_sum(k)?;
        if !sum.zero {
            let data = reader.chunk(k, sum)?;
            let part = &data[(at - chunk_start) as usize..(upto - chunk_start) as usize];
            for_each_nonzero_run(at, part, |offset, len| {
                out.copy_base(offset, data_offset + offset, len)
            })?;
        }
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
    file: &'a dyn File,
    path: &'a Path,
    base: &'a dyn File,
    buf: Vec<u8>,
    /// `(file offset, start in buf, length)`, merged when contiguous.
    spans: Vec<(u64, usize, usize)>,
    /// `(file offset, base file offset, length)` of a pending kernel copy.
    copy: Option<(u64, u64, u64)>,
    written: u64,
}

impl Batch<'_> {
    /// Queues `data` for file offset `offset`, dropping blocks that are all zero.
    fn push(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let mut at = 0;
        while at < data.len() {
            let file_at = offset + at as u64;
            let block_end = (file_at / ZERO_BLOCK_BYTES + 1) * ZERO_BLOCK_BYTES;
            let len = ((block_end - file_at) as usize).min(data.len() - at);
            let part = &data[at..at + len];
            if !is_zero(part) {
                self.append(file_at, part)?;
            }
            at += len;
        }
        Ok(())
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
        self.file
            .copy_from(self.base, base_offset, offset, len)
            .map_err(|e| {
                ReadError::io(
                    self.path,
                    &format!("copy {len} bytes of the base image to byte {offset} of"),
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
        let writes: Vec<WriteAt<'_>> = self
            .spans
            .iter()
            .map(|&(offset, start, len)| WriteAt {
                offset,
                data: &self.buf[start..start + len],
            })
            .collect();
        let first = self.spans[0].0;
        self.file.write_batch(&writes, false).map_err(|e| {
            ReadError::io(
                self.path,
                &format!("write {} bytes at byte {first}", self.buf.len()),
                e,
            )
            .at(first)
        })?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        self.spans.clear();
        Ok(())
    }
}

/// Whether every byte is zero; ORs 64-byte lanes so the compiler can vectorize it.
fn is_zero(bytes: &[u8]) -> bool {
    let mut lanes = bytes.chunks_exact(64);
    let body = lanes
        .by_ref()
        .all(|lane| lane.iter().fold(0u8, |acc, &b| acc | b) == 0);
    body && lanes.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_zero_finds_a_single_set_byte_anywhere() {
        for len in [0usize, 1, 63, 64, 65, 4096, 5000] {
            let zeros = vec![0u8; len];
            assert!(is_zero(&zeros));
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len > 0 {
                    let mut b = zeros.clone();
                    b[at] = 1;
                    assert!(!is_zero(&b), "len {len} at {at}");
                }
            }
        }
    }
}
