//! Reading a disk of a view: every piece fetched from its source and verified.
//!
//! A journal piece reads its whole write record, checks its CRC (and that it is the record the
//! index described), decompresses it if needed and copies the slice it wants. A base piece reads
//! whole chunks and checks each against the base's checksum table; chunks the table marks as
//! holes read as zeros without I/O. The last record, chunk and table page are kept, so
//! sequential small reads verify each of them once.

use std::sync::{Arc, Mutex};

use replog_format::base::ChunkSum;
use replog_format::manifest::DiskEntry;
use replog_format::record::RECORD_HEADER_BYTES;

use crate::base_image::{BaseImage, TablePageCache};
use crate::error::{ReadError, ReadErrorKind, Result};
use crate::extent_map::{ExtentMap, Piece, RecordRef, Source};
use crate::layer::{Lower, Merged};
use crate::records::{check_matches, decode_write};
use crate::vault::VaultInner;

/// One disk at the view's LSN.
#[derive(Debug)]
pub struct DiskView {
    pub(crate) vault: Arc<VaultInner>,
    pub(crate) entry: DiskEntry,
    pub(crate) base: Arc<BaseImage>,
    /// Every piece (in memory), or the pieces of the journal after the checkpoint `lower` holds
    /// (layered).
    pub(crate) map: ExtentMap,
    pub(crate) lower: Option<Arc<dyn Lower>>,
    cache: Mutex<ReadCache>,
}

/// What a range of a disk reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtentKind {
    /// The base image (which may itself hold holes).
    Base,
    /// Zeros written by a zero record.
    Zero,
    /// Data of journal write records.
    Journal,
}

/// A range `[start, end)` of a disk and where its bytes come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The source.
    pub kind: ExtentKind,
}

impl DiskView {
    pub(crate) fn new(
        vault: Arc<VaultInner>,
        entry: DiskEntry,
        base: Arc<BaseImage>,
        map: ExtentMap,
        lower: Option<Arc<dyn Lower>>,
    ) -> DiskView {
        DiskView {
            vault,
            entry,
            base,
            map,
            lower,
            cache: Mutex::new(ReadCache::default()),
        }
    }

    /// The map, for a view being taken apart.
    pub(crate) fn into_map(self) -> ExtentMap {
        self.map
    }

    /// The disk's name.
    pub fn name(&self) -> &str {
        &self.entry.name
    }

    /// The disk's id.
    pub fn disk_id(&self) -> u32 {
        self.entry.disk_id
    }

    /// The disk's size in bytes at the view's LSN: the manifest's entry holds the newest size,
    /// a view before a resize record the size before it.
    pub fn size(&self) -> u64 {
        self.map.size()
    }

    /// The manifest's entry for the disk.
    pub fn entry(&self) -> &DiskEntry {
        &self.entry
    }

    /// The extent map the view keeps in memory for the disk: every piece in an in-memory view,
    /// only those of the journal after the checkpoint in a layered one. [`DiskView::pieces`]
    /// lists the disk's pieces whatever the mode.
    pub fn extent_map(&self) -> &ExtentMap {
        &self.map
    }

    /// The pieces overlapping `[start, end)`, clipped to it, in disk order, base ranges
    /// included, neighbours that read as one joined: the same list in either mode. A layered
    /// view reads its checkpoint's pieces as it goes (an error names the checkpoint and the
    /// offset); its memory does not grow with the range.
    pub fn pieces(&self, start: u64, end: u64) -> impl Iterator<Item = Result<(u64, Piece)>> + '_ {
        Merged::new(self.map.pieces_in(start, end), self.lower.as_ref())
    }

    /// Heap bytes the view keeps for the disk: its map, and its lower layer's.
    pub fn memory_bytes(&self) -> usize {
        let m = self.map.memory();
        m.piece_bytes + m.record_bytes + self.lower.as_ref().map_or(0, |l| l.memory_bytes())
    }

    /// Fills `buf` with the disk's bytes at `offset`, verifying every record and base chunk it
    /// reads. Concurrent callers share one small cache; give each thread its own
    /// [`DiskView::reader`] to read in parallel.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.read(self, offset, buf)
    }

    /// A reader with its own cache of the last record and chunk it decoded.
    pub fn reader(&self) -> DiskReader<'_> {
        DiskReader::new(self)
    }

    /// The disk's ranges and where their bytes come from, in order; neighbours of the same kind
    /// are merged.
    pub fn extents(&self) -> impl Iterator<Item = Result<Extent>> + '_ {
        let mut pieces = self.pieces(0, self.size()).peekable();
        std::iter::from_fn(move || {
            let (start, piece) = match pieces.next()? {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            let kind = kind_of(piece.source);
            let mut end = piece.end;
            while let Some(Ok((_, next))) =
                pieces.next_if(|p| matches!(p, Ok((_, p)) if kind_of(p.source) == kind))
            {
                end = next.end;
            }
            Some(Ok(Extent { start, end, kind }))
        })
    }
}

fn kind_of(source: Source) -> ExtentKind {
    match source {
        Source::Base => ExtentKind::Base,
        Source::Zero => ExtentKind::Zero,
        Source::Record(_) => ExtentKind::Journal,
    }
}

/// A reader of one disk with its own cache, for one thread.
#[derive(Debug)]
pub struct DiskReader<'a> {
    disk: &'a DiskView,
    cache: ReadCache,
}

impl<'a> DiskReader<'a> {
    pub(crate) fn new(disk: &'a DiskView) -> DiskReader<'a> {
        DiskReader {
            disk,
            cache: ReadCache::default(),
        }
    }

    /// The disk being read.
    pub fn disk(&self) -> &'a DiskView {
        self.disk
    }

    /// Fills `buf` with the disk's bytes at `offset`; see [`DiskView::read_at`].
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.cache.read(self.disk, offset, buf)
    }

    /// Whether the base image stores the chunk holding disk byte `offset` as a hole (its
    /// checksum table marks the chunk all zero), and the disk offset where that chunk ends.
    /// Reads at most one page of the checksum table and no data: for allocation maps, such as
    /// NBD block status, that show where a disk's base holds nothing.
    pub fn base_hole_at(&mut self, offset: u64) -> Result<(bool, u64)> {
        if offset >= self.disk.size() {
            return Err(ReadError::new(
                ReadErrorKind::InvalidRequest,
                format!(
                    "byte {offset} is past the end of disk {} ({} bytes)",
                    self.disk.name(),
                    self.disk.size()
                ),
            ));
        }
        let k = offset / self.disk.base.block_bytes();
        let sum = self.chunk_sum(k)?;
        Ok((sum.zero, self.disk.base.chunk_range(k).1))
    }

    /// The logical bytes of the write record `r`, verified.
    pub(crate) fn record(&mut self, r: &RecordRef) -> Result<&[u8]> {
        self.cache.record(self.disk, r)
    }

    /// The checksum table entry of base chunk `k`.
    pub(crate) fn chunk_sum(&mut self, k: u64) -> Result<ChunkSum> {
        self.disk.base.chunk_sum(k, &mut self.cache.table)
    }

    /// The bytes of the consecutive base chunks from `first`, one per sum (none a hole), read
    /// at once and each verified against its sum.
    pub(crate) fn chunks(&mut self, first: u64, sums: &[ChunkSum]) -> Result<&[u8]> {
        // The buffer of the cached chunk serves: it no longer holds one.
        let cache = &mut self.cache;
        cache.chunk_key = None;
        self.disk
            .base
            .read_chunks(first, sums, &mut cache.chunk_data)?;
        Ok(&cache.chunk_data)
    }
}

/// The last record, chunk and table page a reader decoded.
#[derive(Debug, Default)]
pub(crate) struct ReadCache {
    /// `(segment index, record offset)` of the record in `record_data`.
    record_key: Option<(u32, u64)>,
    record_data: Vec<u8>,
    /// The record as stored (header and payload), before decoding.
    record_raw: Vec<u8>,
    chunk_key: Option<u64>,
    chunk_data: Vec<u8>,
    table: TablePageCache,
}

impl ReadCache {
    pub(crate) fn read(&mut self, disk: &DiskView, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= disk.size());
        let Some(end) = end else {
            return Err(ReadError::new(
                ReadErrorKind::InvalidRequest,
                format!(
                    "cannot read {} bytes at byte {offset} of disk {}: it is {} bytes",
                    buf.len(),
                    disk.name(),
                    disk.size()
                ),
            ));
        };
        for item in disk.pieces(offset, end) {
            let (start, piece) = item?;
            let out = &mut buf[(start - offset) as usize..(piece.end - offset) as usize];
            match piece.source {
                Source::Zero => out.fill(0),
                Source::Base => self.read_base(disk, start, out)?,
                Source::Record(r) => {
                    let data = self.record(disk, &r)?;
                    out.copy_from_slice(&data[r.data_offset as usize..][..out.len()]);
                }
            }
        }
        Ok(())
    }

    /// Fills `out` with base bytes from disk offset `start`, chunk by chunk.
    fn read_base(&mut self, disk: &DiskView, start: u64, out: &mut [u8]) -> Result<()> {
        let end = start + out.len() as u64;
        let block = disk.base.block_bytes();
        let mut at = start;
        while at < end {
            let k = at / block;
            let (chunk_start, chunk_end) = disk.base.chunk_range(k);
            let upto = end.min(chunk_end);
            let dst = &mut out[(at - start) as usize..(upto - start) as usize];
            let sum = disk.base.chunk_sum(k, &mut self.table)?;
            if sum.zero {
                dst.fill(0);
            } else {
                let data = self.chunk(disk, k, sum)?;
                dst.copy_from_slice(
                    &data[(at - chunk_start) as usize..(upto - chunk_start) as usize],
                );
            }
            at = upto;
        }
        Ok(())
    }

    fn chunk(&mut self, disk: &DiskView, k: u64, sum: ChunkSum) -> Result<&[u8]> {
        if self.chunk_key != Some(k) {
            self.chunk_key = None;
            disk.base.read_chunk(k, sum, &mut self.chunk_data)?;
            self.chunk_key = Some(k);
        }
        Ok(&self.chunk_data)
    }

    fn record(&mut self, disk: &DiskView, r: &RecordRef) -> Result<&[u8]> {
        let key = (r.segment_index, r.record_offset);
        if self.record_key != Some(key) {
            self.record_key = None;
            let slot = &disk.vault.segments[r.segment_index as usize];
            let ctx = disk.vault.segment_ctx();
            let total = RECORD_HEADER_BYTES as u64 + u64::from(r.stored_len);
            slot.read_record(&ctx, r.record_offset, total, &mut self.record_raw)?;
            decode_record(disk, r, &self.record_raw, &mut self.record_data)?;
            self.record_key = Some(key);
        }
        Ok(&self.record_data)
    }
}

/// Verifies `raw`, the stored bytes of the write record `r` (header and payload), checks that
/// it is the record `r` describes, and decodes its logical bytes into `out`.
pub(crate) fn decode_record(
    disk: &DiskView,
    r: &RecordRef,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let slot = &disk.vault.segments[r.segment_index as usize];
    let (h, payload) = slot.verify_record(&disk.vault.segment_ctx(), raw, r.record_offset)?;
    check_matches(&h, r).map_err(|e| ReadError::decode(&slot.rel_path, 0, e))?;
    decode_write(&h, payload, out).map_err(|e| ReadError::decode(&slot.rel_path, 0, e))
}
