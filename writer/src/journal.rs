//! The open segment: staging records, flushing them in batches, sealing the segment with its
//! footer index and trailer, and starting the next one.
//!
//! Invariants:
//! - `written <= file length`, and everything before `synced` is durable.
//! - Records are framed with `synced_upto = synced`, so recovery can tell a torn tail (no later
//!   record vouches for it) from damage (a later record says it was durable).
//! - A segment is listed in the manifest before any record is appended to it.

use std::path::PathBuf;
use std::sync::Arc;

use replog_format::layout;
use replog_format::limits::{FOOTER_BYTES_MAX, LABEL_BYTES_MAX, SEGMENT_RECORDS_MAX};
use replog_format::manifest::{PointRef, SealedInfo, SegmentEntry};
use replog_format::record::{RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use replog_format::segment::{
    ExtentEntry, FOOTER_EXTENT_BYTES, FOOTER_POINT_FIXED_BYTES, FooterIndex, PointEntry,
    SegmentHeader, Trailer,
};
use replog_io::{File, OpenMode, WriteAt};

use crate::error::{Result, WriteError, WriteErrorKind};
use crate::writer::Writer;

/// Staged bytes that trigger a flush (written, not synced) of the staging buffer.
pub const FLUSH_BYTES: usize = 8 << 20;
/// Size of each write submitted for a flush, so several are in flight at once.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// The segment records are appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub(crate) id: u64,
    pub(crate) first_lsn: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn File>,
    /// Bytes handed to the file: the offset where `pending` starts.
    pub(crate) written: u64,
    /// Bytes known durable.
    pub(crate) synced: u64,
    /// Framed records not yet handed to the file.
    pub(crate) pending: Vec<u8>,
    /// Index of every write and zero record, for the footer.
    pub(crate) extents: Vec<ExtentEntry>,
    /// Index of every point, for the footer and the manifest.
    pub(crate) points: Vec<PointEntry>,
    /// Bytes the footer payload will take.
    pub(crate) footer_bytes: u64,
}

impl ActiveSegment {
    /// Offset where the next record goes.
    pub(crate) fn end(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    fn record_count(&self) -> u32 {
        (self.extents.len() + self.points.len()) as u32
    }

    /// Whether a record of `total` bytes must go to a new segment.
    fn is_full_for(&self, total: u64, segment_bytes: u64) -> bool {
        let any = self.record_count() > 0;
        let worst_footer = (FOOTER_POINT_FIXED_BYTES + LABEL_BYTES_MAX) as u64;
        any && (self.end() + total > segment_bytes
            || self.record_count() + 1 >= SEGMENT_RECORDS_MAX
            || self.footer_bytes + worst_footer > FOOTER_BYTES_MAX)
    }
}

impl Writer {
    /// Frames one record into the staging buffer and returns its LSN. Rotates first if the
    /// record would overfill the segment.
    pub(crate) fn append(&mut self, mut h: RecordHeader, payload: &[u8]) -> Result<u64> {
        self.check_poison()?;
        let total = (RECORD_HEADER_BYTES + payload.len()) as u64;
        if self.active.is_full_for(total, self.header.segment_bytes) {
            self.seal_and_rotate()?;
        }
        let seg = &mut self.active;
        h.lsn = self.next_lsn;
        h.segment_id = seg.id;
        h.segment_offset = seg.end();
        h.synced_upto = seg.synced;
        let head = h.seal(self.seed, payload);
        seg.pending.extend_from_slice(&head);
        seg.pending.extend_from_slice(payload);
        match h.kind {
            RecordKind::Write | RecordKind::Zero => {
                seg.extents.push(ExtentEntry::from_header(&h));
                seg.footer_bytes += FOOTER_EXTENT_BYTES as u64;
            }
            RecordKind::Point | RecordKind::Footer => {}
        }
        self.next_lsn += 1;
        if self.active.pending.len() >= FLUSH_BYTES {
            self.flush(false)?;
        }
        Ok(h.lsn)
    }

    /// Hands the staged bytes to the file; with `sync`, makes everything written durable.
    /// Any failure poisons the writer.
    pub(crate) fn flush(&mut self, sync: bool) -> Result<()> {
        self.check_poison()?;
        let seg = &mut self.active;
        if seg.pending.is_empty() && (!sync || seg.synced == seg.written) {
            return Ok(());
        }
        let writes: Vec<WriteAt<'_>> = seg
            .pending
            .chunks(WRITE_CHUNK_BYTES)
            .enumerate()
            .map(|(i, data)| WriteAt {
                offset: seg.written + (i * WRITE_CHUNK_BYTES) as u64,
                data,
            })
            .collect();
        let result = seg.file.write_batch(&writes, sync);
        if let Err(e) = result {
            let what = if sync {
                "writing and syncing the journal"
            } else {
                "writing the journal"
            };
            let err = WriteError::io(&seg.path, Some(seg.written), what, e);
            self.poisoned = Some(err.message().to_owned());
            return Err(err);
        }
        seg.written += seg.pending.len() as u64;
        seg.pending.clear();
        if sync {
            seg.synced = seg.written;
        }
        Ok(())
    }

    /// Appends the footer and trailer, syncs, and moves on to a new segment.
    pub(crate) fn seal_and_rotate(&mut self) -> Result<()> {
        // The records are made durable before the footer is framed, so the footer vouches for
        // all of them (`synced_upto`): a damaged record under a footer then reads as damage,
        // never as a torn tail, even before the manifest records the seal.
        self.flush(true)?;
        let seg = &mut self.active;
        let last_lsn = self.next_lsn - 1;
        let record_count = seg.record_count();
        let footer = FooterIndex {
            extents: std::mem::take(&mut seg.extents),
            points: seg.points.clone(),
        }
        .encode();
        let footer_offset = seg.end();
        let mut h = RecordHeader {
            crc: 0,
            kind: RecordKind::Footer,
            flags: 0,
            lsn: last_lsn,
            segment_id: seg.id,
            segment_offset: footer_offset,
            synced_upto: seg.synced,
            disk_id: 0,
            stored_len: footer.len() as u32,
            disk_offset: 0,
            length: 0,
        };
        let head = h.seal(self.seed, &footer);
        let trailer = Trailer {
            segment_id: seg.id,
            footer_offset,
            first_lsn: seg.first_lsn,
            last_lsn,
            record_count,
            footer_crc: h.crc,
        };
        seg.pending.extend_from_slice(&head);
        seg.pending.extend_from_slice(&footer);
        seg.pending.extend_from_slice(&trailer.encode(self.seed));
        self.flush(true)?;
        let sealed = SealedInfo {
            last_lsn,
            footer_offset,
            file_bytes: self.active.written,
            footer_crc: h.crc,
        };
        let points = std::mem::take(&mut self.active.points);
        self.start_next_segment(sealed, points)
    }

    /// Records the seal of the open segment in the manifest together with a new, empty open
    /// segment, creating its file (header synced, directory synced) first.
    pub(crate) fn start_next_segment(
        &mut self,
        sealed: SealedInfo,
        points: Vec<PointEntry>,
    ) -> Result<()> {
        let result = self.try_start_next_segment(sealed, points);
        if let Err(e) = &result {
            self.poisoned = Some(e.message().to_owned());
        }
        result
    }

    fn try_start_next_segment(
        &mut self,
        sealed: SealedInfo,
        points: Vec<PointEntry>,
    ) -> Result<()> {
        let old_id = self.active.id;
        let next = create_segment(self, old_id + 1, sealed.last_lsn + 1)?;
        let mut manifest = self.manifest.clone();
        let last = manifest
            .segments
            .last_mut()
            .expect("the open segment is listed");
        assert_eq!(
            last.segment_id, old_id,
            "the manifest's open segment is the active one"
        );
        last.sealed = Some(sealed);
        manifest.points.extend(points.into_iter().map(|p| PointRef {
            lsn: p.lsn,
            segment_id: old_id,
            record_offset: p.record_offset,
            point: p.point,
        }));
        manifest.segments.push(SegmentEntry {
            segment_id: next.id,
            first_lsn: next.first_lsn,
            sealed: None,
        });
        manifest.generation += 1;
        crate::manifest_io::store(self.storage.as_ref(), &self.dir, &manifest)?;
        self.manifest = manifest;
        self.active = next;
        Ok(())
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        match &self.poisoned {
            None => Ok(()),
            Some(cause) => Err(WriteError::new(
                WriteErrorKind::Poisoned,
                format!(
                    "the writer stopped after an earlier failure ({cause}); nothing after the last acknowledged point was acknowledged; reopen the vault to recover"
                ),
            )),
        }
    }
}

/// Creates segment `id` starting at `first_lsn`: header written and synced, journal directory
/// synced. A file left by an interrupted rotation is replaced: it was never listed, so it holds
/// nothing acknowledged.
pub(crate) fn create_segment(w: &Writer, id: u64, first_lsn: u64) -> Result<ActiveSegment> {
    let path = layout::segment_path(&w.dir, id);
    let storage = w.storage.as_ref();
    let file = storage
        .open(&path, OpenMode::CreateTruncate)
        .map_err(|e| WriteError::io(&path, None, "creating the segment", e))?;
    let header = SegmentHeader {
        vault_id: w.header.vault_id,
        segment_id: id,
        first_lsn,
        created_unix_ns: crate::now_unix_ns(),
    };
    let bytes = header.encode(w.seed);
    file.write_batch(
        &[WriteAt {
            offset: 0,
            data: &bytes,
        }],
        true,
    )
    .map_err(|e| WriteError::io(&path, Some(0), "writing and syncing the segment header", e))?;
    let journal = w.dir.join(layout::JOURNAL_DIR);
    storage
        .sync_dir(&journal)
        .map_err(|e| WriteError::io(&journal, None, "syncing the directory", e))?;
    Ok(ActiveSegment {
        id,
        first_lsn,
        path,
        file,
        written: bytes.len() as u64,
        synced: bytes.len() as u64,
        pending: Vec::with_capacity(FLUSH_BYTES + (1 << 20)),
        extents: Vec::new(),
        points: Vec::new(),
        footer_bytes: 8,
    })
}
