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
use crate::pipeline::Stage;
use crate::writer::Writer;

/// Staged bytes that trigger handing the staging buffer to the disk (written, not synced), by
/// default (see `WriterOptions::buffer_bytes`).
pub const FLUSH_BYTES: usize = 8 << 20;
/// Space reserved at a time ahead of the journal's end when preallocating.
pub const RESERVE_STEP_BYTES: u64 = 64 << 20;

/// The segment records are appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub(crate) id: u64,
    pub(crate) first_lsn: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn File>,
    /// Bytes handed to the file (maybe still being written): the offset where the staged
    /// bytes start.
    pub(crate) written: u64,
    /// Bytes known durable.
    pub(crate) synced: u64,
    /// Framed records not yet handed to the file, the buffers in flight and the write pipe
    /// (see `pipeline`).
    pub(crate) pending: Stage,
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

    pub(crate) fn record_count(&self) -> u32 {
        (self.extents.len() + self.points.len()) as u32
    }

    /// Whether a record of `total` bytes must go to a new segment.
    pub(crate) fn is_full_for(&self, total: u64, segment_bytes: u64) -> bool {
        full_after(
            self.end(),
            self.record_count(),
            self.footer_bytes,
            total,
            segment_bytes,
        )
    }
}

/// Whether a segment ending at `end` with `records` records and a footer of `footer_bytes` has
/// no room for one more record of `total` bytes (a first record always fits): past the segment
/// size, the record limit, or a footer that could not take one more point.
pub(crate) fn full_after(
    end: u64,
    records: u32,
    footer_bytes: u64,
    total: u64,
    segment_bytes: u64,
) -> bool {
    let worst_footer = (FOOTER_POINT_FIXED_BYTES + LABEL_BYTES_MAX) as u64;
    records > 0
        && (end + total > segment_bytes
            || records + 1 >= SEGMENT_RECORDS_MAX
            || footer_bytes + worst_footer > FOOTER_BYTES_MAX)
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
        let staged = seg.stage(&[&head, payload]);
        self.poison_on(staged, "reading back the journal's last block")?;
        let seg = &mut self.active;
        match h.kind {
            RecordKind::Write | RecordKind::Zero => {
                seg.extents.push(ExtentEntry::from_header(&h));
                seg.footer_bytes += FOOTER_EXTENT_BYTES as u64;
            }
            RecordKind::Point | RecordKind::Footer => {}
        }
        self.next_lsn += 1;
        if self.active.staged() >= self.active.pending.options.buffer_bytes {
            self.flush(false)?;
        }
        Ok(h.lsn)
    }

    /// Hands the staged bytes to the file; with `sync`, waits until everything handed over is
    /// durable. Without, returns once the bytes are handed over (a buffer in flight may still
    /// fail, which poisons the writer at a later call). Any failure poisons the writer.
    pub(crate) fn flush(&mut self, sync: bool) -> Result<()> {
        self.check_poison()?;
        let seg = &self.active;
        if seg.staged() == 0 && (!sync || (seg.synced == seg.written && seg.pending.idle())) {
            if sync {
                self.active.pending.durable_lsn = self.next_lsn - 1;
            }
            return Ok(());
        }
        self.reserve_ahead()?;
        let last_lsn = self.next_lsn - 1;
        let (what, r) = if sync {
            let r = self
                .active
                .hand_over(true, last_lsn)
                .and_then(|()| self.active.collect(true));
            ("writing and syncing the journal", r)
        } else {
            (
                "writing the journal",
                self.active.hand_over(false, last_lsn),
            )
        };
        self.poison_on(r, what)?;
        if sync {
            assert_eq!(
                self.active.synced, self.active.written,
                "a completed sync covers everything handed over"
            );
            self.active.pending.durable_lsn = self.next_lsn - 1;
        }
        Ok(())
    }

    /// Through the page cache, reserves the segment's space ahead of what is about to be
    /// written, [`RESERVE_STEP_BYTES`] at a time (up to the segment size), so the filesystem
    /// does not allocate blocks write by write (measured: sequential ingest through the page
    /// cache about 15% faster; with direct I/O, converting reserved extents measured slower, so
    /// it is skipped). Stepping bounds what an idle open segment holds unused. A filesystem
    /// without the call is skipped by the backend; a full disk is an error, as a write would be.
    fn reserve_ahead(&mut self) -> Result<()> {
        let segment_bytes = self.header.segment_bytes;
        let seg = &mut self.active;
        let end = seg.end();
        if !seg.pending.preallocates() || end <= seg.pending.reserved {
            return Ok(());
        }
        let from = seg.pending.reserved.max(seg.written);
        let to = (end + RESERVE_STEP_BYTES).min(segment_bytes).max(end);
        let r = seg.file.allocate(from, to - from);
        self.poison_on(r, "reserving the segment's space")?;
        self.active.pending.reserved = to;
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
        let staged = seg.stage(&[&head, &footer, &trailer.encode(self.seed)]);
        self.poison_on(staged, "reading back the journal's last block")?;
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
            self.poisoned = Some(e.to_string());
        }
        result
    }

    fn try_start_next_segment(
        &mut self,
        sealed: SealedInfo,
        points: Vec<PointEntry>,
    ) -> Result<()> {
        let old_id = self.active.id;
        let mut next = create_segment(self, old_id + 1, sealed.last_lsn + 1)?;
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
        next.pending = self.active.pending.carry_over();
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
        pending: Stage::default(),
        extents: Vec::new(),
        points: Vec::new(),
        footer_bytes: 8,
    })
}
