//! The [`Journal`]: the open segment, framing records into it through the pipeline, flushing
//! and group-committing syncs, sealing the segment with its footer index and trailer, and
//! rolling over to the next one. It also holds the poison: after a failed write or sync it
//! acknowledges nothing more.
//!
//! Invariants:
//! - `written <= file length`, and everything before `synced` is durable.
//! - Records are framed with `synced_upto = synced`, so recovery can tell a torn tail (no later
//!   record vouches for it) from damage (a later record says it was durable).
//! - A segment is listed in the manifest before any record is appended to it: rolling over
//!   commits the manifest, which is why the methods that may roll over are handed it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use replog_format::chain::{CHAIN_HASH_BYTES, ChainHash, ChainKey, Link};
use replog_format::header::VaultHeader;
use replog_format::layout;
use replog_format::limits::{FOOTER_BYTES_MAX, LABEL_BYTES_MAX, SEGMENT_RECORDS_MAX};
use replog_format::manifest::{Manifest, PointRef, SealedInfo, SegmentEntry};
use replog_format::record::{
    POINT_FIXED_BYTES, PointKind, PointPayload, RECORD_HEADER_BYTES, RecordHeader, RecordKind,
};
use replog_format::segment::{
    ExtentEntry, FOOTER_EXTENT_BYTES, FOOTER_POINT_FIXED_BYTES, FooterIndex, PointEntry,
    SegmentHeader, Trailer,
};
use replog_format::{VaultId, vault_seed};
use replog_io::{OpenMode, Storage, WriteAt};
use replog_reader::PointInfo;

use crate::batch::NewRecord;
use crate::error::{Result, WriteError, WriteErrorKind};
use crate::pipeline::{SegmentFile, WriterOptions};

/// Staged bytes from which the chain is hashed on every core rather than one.
const PARALLEL_HASH_BYTES_MIN: usize = 1 << 20;

/// Space reserved at a time ahead of the journal's end when preallocating.
pub const RESERVE_STEP_BYTES: u64 = 64 << 20;

/// The footer payload of a segment with no record: its two counts.
const EMPTY_FOOTER_BYTES: u64 = 8;

/// Where a vault's journal lives and how its records are sealed: what creating a segment needs.
#[derive(Debug, Clone)]
pub(crate) struct JournalFiles {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) dir: PathBuf,
    pub(crate) vault_id: VaultId,
    pub(crate) seed: u32,
    pub(crate) segment_bytes: u64,
    /// The key of the journal's hash chain.
    pub(crate) chain_key: ChainKey,
}

impl JournalFiles {
    /// Where the journal of the vault at `dir`, whose header is `header`, lives.
    pub(crate) fn of(storage: &Arc<dyn Storage>, dir: &Path, header: &VaultHeader) -> JournalFiles {
        JournalFiles {
            storage: storage.clone(),
            dir: dir.to_path_buf(),
            vault_id: header.vault_id,
            seed: vault_seed(&header.vault_id),
            segment_bytes: header.segment_bytes,
            chain_key: ChainKey::public(&header.vault_id),
        }
    }

    /// Creates segment `id` starting at `first_lsn`, its first chain link starting from
    /// `chain_start`: header written and synced, journal directory synced. A file left by an
    /// interrupted rotation is replaced: it was never listed, so it holds nothing acknowledged.
    pub(crate) fn create_segment(
        &self,
        id: u64,
        first_lsn: u64,
        chain_start: ChainHash,
    ) -> Result<ActiveSegment> {
        let path = layout::segment_path(&self.dir, id);
        let storage = self.storage.as_ref();
        let file = storage
            .open(&path, OpenMode::CreateTruncate)
            .map_err(|e| WriteError::io(&path, None, "creating the segment", e))?;
        let header = SegmentHeader {
            vault_id: self.vault_id,
            segment_id: id,
            first_lsn,
            created_unix_ns: crate::now_unix_ns(),
            chain_start: Some(chain_start),
        };
        let bytes = header.encode(self.seed);
        file.write_batch(
            &[WriteAt {
                offset: 0,
                data: &bytes,
            }],
            true,
        )
        .map_err(|e| WriteError::io(&path, Some(0), "writing and syncing the segment header", e))?;
        let journal = self.dir.join(layout::JOURNAL_DIR);
        storage
            .sync_dir(&journal)
            .map_err(|e| WriteError::io(&journal, None, "syncing the directory", e))?;
        let out = SegmentFile::new(path, file, bytes.len() as u64);
        Ok(ActiveSegment::new(
            id,
            first_lsn,
            out,
            Vec::new(),
            Vec::new(),
        ))
    }
}

/// The segment records are appended to.
#[derive(Debug)]
pub(crate) struct ActiveSegment {
    pub(crate) id: u64,
    pub(crate) first_lsn: u64,
    /// The file, what of it is written and durable, and the pipeline writing it.
    pub(crate) out: SegmentFile,
    /// Index of every write and zero record, for the footer.
    pub(crate) extents: Vec<ExtentEntry>,
    /// Index of every point, for the footer and the manifest.
    pub(crate) points: Vec<PointEntry>,
    /// Bytes the footer payload will take.
    footer_bytes: u64,
}

impl ActiveSegment {
    /// Segment `id` whose records so far are indexed by `extents` and `points`.
    pub(crate) fn new(
        id: u64,
        first_lsn: u64,
        out: SegmentFile,
        extents: Vec<ExtentEntry>,
        points: Vec<PointEntry>,
    ) -> ActiveSegment {
        let footer_bytes = EMPTY_FOOTER_BYTES
            + (extents.len() * FOOTER_EXTENT_BYTES) as u64
            + points
                .iter()
                .map(|p| (FOOTER_POINT_FIXED_BYTES + p.point.tail_bytes()) as u64)
                .sum::<u64>();
        ActiveSegment {
            id,
            first_lsn,
            out,
            extents,
            points,
            footer_bytes,
        }
    }

    /// Offset where the next record goes.
    pub(crate) fn end(&self) -> u64 {
        self.out.end()
    }

    pub(crate) fn record_count(&self) -> u32 {
        (self.extents.len() + self.points.len()) as u32
    }

    /// Whether a record of `total` bytes must go to a new segment.
    fn is_full_for(&self, total: u64, segment_bytes: u64) -> bool {
        full_after(
            self.end(),
            self.record_count(),
            self.footer_bytes,
            total,
            segment_bytes,
        )
    }

    /// Indexes a write or zero record just framed.
    fn index_extent(&mut self, h: &RecordHeader) {
        self.extents.push(ExtentEntry::from_header(h));
        self.footer_bytes += FOOTER_EXTENT_BYTES as u64;
    }
}

/// Whether a segment ending at `end` with `records` records and a footer of `footer_bytes` has
/// no room for one more record of `total` bytes (a first record always fits): past the segment
/// size, the record limit, or a footer that could not take one more point.
fn full_after(end: u64, records: u32, footer_bytes: u64, total: u64, segment_bytes: u64) -> bool {
    let worst_footer = (FOOTER_POINT_FIXED_BYTES + LABEL_BYTES_MAX + CHAIN_HASH_BYTES) as u64;
    records > 0
        && (end + total > segment_bytes
            || records + 1 >= SEGMENT_RECORDS_MAX
            || footer_bytes + worst_footer > FOOTER_BYTES_MAX)
}

/// A recovery point that was framed and handed to the disk with a sync, not yet known durable.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "a point is acknowledged only by Writer::wait_point"]
pub struct PointTicket {
    info: PointInfo,
}

impl PointTicket {
    /// The point as it will be acknowledged.
    pub fn info(&self) -> &PointInfo {
        &self.info
    }
}

/// The chain's link of the open segment, and how far its staged bytes are hashed: the records
/// are hashed from the staging buffer, a buffer's worth at a time (`Journal::hash_staged`).
#[derive(Debug)]
pub(crate) struct ChainRun {
    link: Link,
    /// Segment offset up to which the staged records are hashed.
    hashed_upto: u64,
}

impl ChainRun {
    /// A link from `value` over the records from segment offset `from`.
    pub(crate) fn new(key: &ChainKey, value: &ChainHash, from: u64) -> ChainRun {
        ChainRun::resume(key.link(value), from)
    }

    /// `link`, which has hashed the records up to segment offset `upto`.
    pub(crate) fn resume(link: Link, upto: u64) -> ChainRun {
        ChainRun {
            link,
            hashed_upto: upto,
        }
    }
}

/// The vault's journal as one writer appends to it; see the module documentation.
#[derive(Debug)]
pub(crate) struct Journal {
    files: JournalFiles,
    active: ActiveSegment,
    next_lsn: u64,
    next_point_id: u64,
    /// The hash chain's link being hashed; `None` while the open segment is one written
    /// before the chain existed (the next segment starts a chain).
    chain: Option<ChainRun>,
    /// The first failure, after which the journal stopped.
    poisoned: Option<WriteError>,
}

impl Journal {
    /// The journal of a new vault: segment 1 created, empty.
    pub(crate) fn start(files: JournalFiles) -> Result<Journal> {
        let genesis = files.chain_key.genesis();
        let active = files.create_segment(1, 1, genesis)?;
        let run = ChainRun::new(&files.chain_key, &genesis, active.end());
        Ok(Journal::resume(files, active, 1, 1, Some(run)))
    }

    /// The journal continuing at `active`, the next record numbered `next_lsn`, the next point
    /// `next_point_id`, the chain's link over its records after the last point `chain`.
    pub(crate) fn resume(
        files: JournalFiles,
        active: ActiveSegment,
        next_lsn: u64,
        next_point_id: u64,
        chain: Option<ChainRun>,
    ) -> Journal {
        Journal {
            files,
            active,
            next_lsn,
            next_point_id,
            chain,
            poisoned: None,
        }
    }

    /// The open segment.
    pub(crate) fn active(&self) -> &ActiveSegment {
        &self.active
    }

    /// The LSN of the last record staged (0 when there is none).
    pub(crate) fn last_lsn(&self) -> u64 {
        self.next_lsn - 1
    }

    /// Every recovery point offered to readers, oldest first: those of the sealed segments
    /// `manifest` lists and those of the open segment, not older than the base images, not
    /// retired by retention.
    pub(crate) fn points(&self, manifest: &Manifest) -> Vec<PointInfo> {
        let active = &self.active;
        let sealed = manifest.points.iter().map(PointInfo::from_manifest);
        let open = active
            .points
            .iter()
            .map(|p| PointInfo::from_segment(active.id, p));
        sealed
            .chain(open)
            .filter(|p| manifest.offers(p.point_id, p.lsn))
            .collect()
    }

    /// Frames one record into the staging buffer and returns its LSN. Rolls over first if the
    /// record would overfill the segment.
    pub(crate) fn append(
        &mut self,
        manifest: &mut Manifest,
        mut h: RecordHeader,
        payload: &[u8],
    ) -> Result<u64> {
        self.check_poison()?;
        let total = (RECORD_HEADER_BYTES + payload.len()) as u64;
        if self.active.is_full_for(total, self.files.segment_bytes) {
            self.seal_and_rotate(manifest)?;
        }
        let seg = &mut self.active;
        h.lsn = self.next_lsn;
        h.segment_id = seg.id;
        h.segment_offset = seg.end();
        h.synced_upto = seg.out.synced;
        let head = h.seal(self.files.seed, payload);
        let staged = seg.out.stage(&[&head, payload]);
        self.poison_on(staged, "reading back the journal's last block")?;
        match h.kind {
            RecordKind::Write | RecordKind::Zero | RecordKind::Resize => {
                self.active.index_extent(&h)
            }
            RecordKind::Point | RecordKind::Footer => {}
        }
        self.next_lsn += 1;
        self.flush_when_full()?;
        Ok(h.lsn)
    }

    /// Hands the staging buffer to the disk once it holds a buffer's worth.
    fn flush_when_full(&mut self) -> Result<()> {
        let out = &self.active.out;
        if out.staged() >= out.pending.options.buffer_bytes {
            self.flush(false)?;
        }
        Ok(())
    }

    /// Frames `records` in order, sealing them in parallel (see `batch`); returns the LSN of
    /// the last.
    pub(crate) fn append_many(
        &mut self,
        manifest: &mut Manifest,
        records: &[NewRecord<'_>],
    ) -> Result<u64> {
        self.check_poison()?;
        let mut at = 0;
        while at < records.len() {
            let total = (RECORD_HEADER_BYTES + records[at].payload.len()) as u64;
            if self.active.is_full_for(total, self.files.segment_bytes) {
                self.seal_and_rotate(manifest)?;
            }
            let mut headers = self.lay_out(&records[at..]);
            let n = headers.len();
            let seed = self.files.seed;
            let sealed: Vec<[u8; RECORD_HEADER_BYTES]> = headers
                .par_iter_mut()
                .zip(&records[at..at + n])
                .map(|(h, r)| h.seal(seed, &r.payload))
                .collect();
            for ((h, head), r) in headers.iter().zip(&sealed).zip(&records[at..]) {
                let staged = self.active.out.stage(&[head, &r.payload]);
                self.poison_on(staged, "reading back the journal's last block")?;
                self.active.index_extent(h);
                self.next_lsn += 1;
                self.flush_when_full()?;
            }
            at += n;
        }
        Ok(self.last_lsn())
    }

    /// The headers (not yet sealed) of the longest prefix of `records` that fits in the open
    /// segment; at least one record.
    fn lay_out(&self, records: &[NewRecord<'_>]) -> Vec<RecordHeader> {
        let seg = &self.active;
        let (mut end, mut count, mut footer) = (seg.end(), seg.record_count(), seg.footer_bytes);
        let mut headers = Vec::new();
        for r in records {
            let total = (RECORD_HEADER_BYTES + r.payload.len()) as u64;
            if !headers.is_empty()
                && full_after(end, count, footer, total, self.files.segment_bytes)
            {
                break;
            }
            headers.push(RecordHeader {
                crc: 0,
                kind: r.kind,
                flags: r.flags,
                lsn: self.next_lsn + headers.len() as u64,
                segment_id: seg.id,
                segment_offset: end,
                synced_upto: seg.out.synced,
                disk_id: r.disk_id,
                stored_len: r.payload.len() as u32,
                disk_offset: r.disk_offset,
                length: r.length,
            });
            end += total;
            count += 1;
            footer += FOOTER_EXTENT_BYTES as u64;
        }
        headers
    }

    /// Frames a point's marker and indexes it; durable only once a sync covers it.
    pub(crate) fn frame_point(
        &mut self,
        manifest: &mut Manifest,
        kind: PointKind,
        label: &str,
    ) -> Result<PointInfo> {
        if label.len() > LABEL_BYTES_MAX {
            return Err(WriteError::new(
                WriteErrorKind::InvalidRequest,
                format!(
                    "the label is {} bytes; the limit is {LABEL_BYTES_MAX}",
                    label.len()
                ),
            ));
        }
        // Into the segment it goes first, so that its link ends where the point is framed: a
        // rotation ends a link too (with the chain hash it may have, the largest it can be).
        let total =
            (RECORD_HEADER_BYTES + POINT_FIXED_BYTES + label.len() + CHAIN_HASH_BYTES) as u64;
        self.check_poison()?;
        if self.active.is_full_for(total, self.files.segment_bytes) {
            self.seal_and_rotate(manifest)?;
        }
        let at = self.active.end();
        let chain = self.end_link();
        if let Some(value) = &chain {
            self.chain = Some(ChainRun::new(&self.files.chain_key, value, at));
        }
        let point = PointPayload {
            point_id: self.next_point_id,
            time_unix_ns: crate::now_unix_ns(),
            kind,
            label: label.to_owned(),
            chain,
        };
        let payload = point.encode();
        let marker = RecordHeader {
            kind: RecordKind::Point,
            stored_len: payload.len() as u32,
            ..empty_header()
        };
        let lsn = self.append(manifest, marker, &payload)?;
        let record_offset = self.active.end() - payload.len() as u64 - RECORD_HEADER_BYTES as u64;
        self.active.footer_bytes += (FOOTER_POINT_FIXED_BYTES + point.tail_bytes()) as u64;
        let entry = PointEntry {
            lsn,
            record_offset,
            point,
        };
        let info = PointInfo::from_segment(self.active.id, &entry);
        self.active.points.push(entry);
        self.next_point_id += 1;
        Ok(info)
    }

    /// Hands the staged bytes to the file; with `sync`, waits until everything handed over is
    /// durable. Without, returns once the bytes are handed over (a buffer in flight may still
    /// fail, which poisons the journal at a later call). Any failure poisons the journal.
    pub(crate) fn flush(&mut self, sync: bool) -> Result<()> {
        self.check_poison()?;
        self.hash_staged();
        let out = &self.active.out;
        if out.staged() == 0 && (!sync || (out.synced == out.written && out.pending.idle())) {
            if sync {
                self.active.out.pending.durable_lsn = self.last_lsn();
            }
            return Ok(());
        }
        self.reserve_ahead()?;
        let last_lsn = self.last_lsn();
        let out = &mut self.active.out;
        let (what, r) = if sync {
            let r = out
                .hand_over(true, last_lsn)
                .and_then(|()| out.collect(true));
            ("writing and syncing the journal", r)
        } else {
            ("writing the journal", out.hand_over(false, last_lsn))
        };
        self.poison_on(r, what)?;
        if sync {
            let out = &mut self.active.out;
            assert_eq!(
                out.synced, out.written,
                "a completed sync covers everything handed over"
            );
            out.pending.durable_lsn = last_lsn;
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
        let segment_bytes = self.files.segment_bytes;
        let out = &mut self.active.out;
        let end = out.end();
        if !out.pending.preallocates() || end <= out.pending.reserved {
            return Ok(());
        }
        let from = out.pending.reserved.max(out.written);
        let to = (end + RESERVE_STEP_BYTES).min(segment_bytes).max(end);
        let r = out.file.allocate(from, to - from);
        self.poison_on(r, "reserving the segment's space")?;
        self.active.out.pending.reserved = to;
        Ok(())
    }

    /// Seals the open segment, when it holds any record, and opens the next. Returns whether
    /// it sealed.
    pub(crate) fn seal(&mut self, manifest: &mut Manifest) -> Result<bool> {
        self.check_poison()?;
        if self.active.record_count() == 0 {
            return Ok(false);
        }
        self.seal_and_rotate(manifest)?;
        Ok(true)
    }

    /// Appends the footer and trailer, syncs, and moves on to a new segment.
    fn seal_and_rotate(&mut self, manifest: &mut Manifest) -> Result<()> {
        // The records are made durable before the footer is framed, so the footer vouches for
        // all of them (`synced_upto`): a damaged record under a footer then reads as damage,
        // never as a torn tail, even before the manifest records the seal.
        self.flush(true)?;
        let seed = self.files.seed;
        let last_lsn = self.last_lsn();
        let seg = &mut self.active;
        let record_count = seg.record_count();
        let footer = FooterIndex {
            extents: std::mem::take(&mut seg.extents),
            points: seg.points.clone(),
        }
        .encode();
        let footer_offset = seg.end();
        let mut h = RecordHeader {
            kind: RecordKind::Footer,
            lsn: last_lsn,
            segment_id: seg.id,
            segment_offset: footer_offset,
            synced_upto: seg.out.synced,
            stored_len: footer.len() as u32,
            ..empty_header()
        };
        let head = h.seal(seed, &footer);
        let trailer = Trailer {
            segment_id: seg.id,
            footer_offset,
            first_lsn: seg.first_lsn,
            last_lsn,
            record_count,
            footer_crc: h.crc,
        };
        let staged = seg.out.stage(&[&head, &footer, &trailer.encode(seed)]);
        self.poison_on(staged, "reading back the journal's last block")?;
        // The footer and trailer are not part of the chain; every record before them was
        // hashed by the flush above.
        if let Some(run) = &mut self.chain {
            run.hashed_upto = self.active.end();
        }
        self.flush(true)?;
        let sealed = SealedInfo {
            last_lsn,
            footer_offset,
            file_bytes: self.active.out.written,
            footer_crc: h.crc,
        };
        let points = std::mem::take(&mut self.active.points);
        self.start_next_segment(manifest, sealed, points)
    }

    /// Records the seal of the open segment in the manifest together with a new, empty open
    /// segment, creating its file (header synced, directory synced) first. A failure poisons
    /// the journal.
    pub(crate) fn start_next_segment(
        &mut self,
        manifest: &mut Manifest,
        sealed: SealedInfo,
        points: Vec<PointEntry>,
    ) -> Result<()> {
        let result = self.try_start_next_segment(manifest, sealed, points);
        if let Err(e) = &result {
            self.poison(e);
        }
        result
    }

    fn try_start_next_segment(
        &mut self,
        manifest: &mut Manifest,
        sealed: SealedInfo,
        points: Vec<PointEntry>,
    ) -> Result<()> {
        let old_id = self.active.id;
        // A segment written before the chain existed is followed by one that starts a chain.
        // (The records are hashed: the seal flushed them before framing the footer.)
        let chain = self
            .end_link()
            .unwrap_or_else(|| self.files.chain_key.genesis());
        let mut next = self
            .files
            .create_segment(old_id + 1, sealed.last_lsn + 1, chain)?;
        let mut new = manifest.clone();
        let last = new.segments.last_mut().expect("the open segment is listed");
        assert_eq!(
            last.segment_id, old_id,
            "the manifest's open segment is the active one"
        );
        last.sealed = Some(sealed);
        new.points.extend(points.into_iter().map(|p| PointRef {
            lsn: p.lsn,
            segment_id: old_id,
            record_offset: p.record_offset,
            point: p.point,
        }));
        new.segments.push(SegmentEntry {
            segment_id: next.id,
            first_lsn: next.first_lsn,
            sealed: None,
            prefix_released: false,
        });
        new.generation += 1;
        crate::manifest_io::store(self.files.storage.as_ref(), &self.files.dir, &new)?;
        *manifest = new;
        next.out.pending = self.active.out.pending.carry_over();
        self.chain = Some(ChainRun::new(&self.files.chain_key, &chain, next.end()));
        self.active = next;
        Ok(())
    }

    /// Sets how the journal moves bytes to the disk. Waits for every buffer in flight first;
    /// the next write uses the new options.
    pub(crate) fn set_options(&mut self, options: WriterOptions) -> Result<()> {
        // Synced, so that a partial block a direct write carried is on the file for the next
        // pipe to read back.
        self.flush(true)?;
        let r = self.active.out.close_pipe();
        self.poison_on(r, "writing the journal")?;
        self.active.out.pending.set_options(options);
        Ok(())
    }

    /// The options in force.
    pub(crate) fn options(&self) -> WriterOptions {
        self.active.out.pending.options
    }

    /// Why the journal is not written as the options ask.
    pub(crate) fn io_note(&self) -> Option<&str> {
        self.active.out.pending.note.as_deref()
    }

    /// Frames a point and hands it to the disk with a data sync, without waiting.
    pub(crate) fn point_async(
        &mut self,
        manifest: &mut Manifest,
        kind: PointKind,
        label: &str,
    ) -> Result<PointTicket> {
        let info = self.frame_point(manifest, kind, label)?;
        let last = self.last_lsn();
        self.hash_staged();
        let r = self.active.out.hand_over(true, last);
        self.poison_on(r, "writing and syncing the journal")?;
        Ok(PointTicket { info })
    }

    /// Hashes the records staged since the last call into the chain's link: one long stream a
    /// buffer at a time, which BLAKE3 hashes many chunks at once. Called before every hand-over
    /// of the staging buffer, so nothing leaves it unhashed.
    fn hash_staged(&mut self) {
        let Some(run) = &mut self.chain else {
            return;
        };
        let end = self.active.out.end();
        if run.hashed_upto < end {
            let bytes = self.active.out.staged_from(run.hashed_upto);
            // Both cores for a buffer's worth (BLAKE3's tree splits it), one for a few records.
            if bytes.len() >= PARALLEL_HASH_BYTES_MIN {
                run.link.update_parallel(bytes);
            } else {
                run.link.update(bytes);
            }
            run.hashed_upto = end;
        }
    }

    /// The chain hash after every record staged (`None` in a segment from before the chain).
    /// The caller starts the next link from it.
    fn end_link(&mut self) -> Option<ChainHash> {
        self.hash_staged();
        self.chain.as_ref().map(|run| run.link.value())
    }

    /// Whether the point of `ticket` is durable already, without waiting.
    pub(crate) fn point_is_durable(&mut self, ticket: &PointTicket) -> Result<bool> {
        self.check_poison()?;
        let r = self.active.out.collect(false);
        self.poison_on(r, "writing and syncing the journal")?;
        Ok(self.active.out.pending.durable_lsn >= ticket.info.lsn)
    }

    /// Waits until the point of `ticket` and everything before it are durable, and returns it.
    pub(crate) fn wait_point(&mut self, ticket: PointTicket) -> Result<PointInfo> {
        while self.active.out.pending.durable_lsn < ticket.info.lsn {
            self.check_poison()?;
            if self.active.out.pending.idle() {
                // Nothing in flight yet not durable: make everything durable (afterwards
                // `durable_lsn` is the last LSN).
                self.flush(true)?;
                continue;
            }
            let r = self.active.out.wait_one();
            self.poison_on(r.map(|_| ()), "writing and syncing the journal")?;
        }
        Ok(ticket.info)
    }

    /// Refuses everything once an earlier write or sync failed.
    pub(crate) fn check_poison(&self) -> Result<()> {
        match &self.poisoned {
            None => Ok(()),
            Some(first) => Err(WriteError::poisoned_by(first)),
        }
    }

    /// Stops the journal after `cause`: nothing more is acknowledged. Every later call reports
    /// the first failure (a later one is often only its consequence).
    pub(crate) fn poison(&mut self, cause: &WriteError) {
        if self.poisoned.is_none() {
            self.poisoned = Some(cause.duplicate());
        }
    }

    /// Poisons the journal if `r` failed, naming the open segment.
    fn poison_on(&mut self, r: io::Result<()>, what: &str) -> Result<()> {
        r.map_err(|e| {
            let out = &self.active.out;
            let err = WriteError::io(&out.path, Some(out.written), what, e);
            self.poison(&err);
            err
        })
    }
}

/// A record header with every field zero, for the fields a record does not use; the journal
/// fills in the LSN, the place and `synced_upto` when it frames the record.
pub(crate) fn empty_header() -> RecordHeader {
    RecordHeader {
        crc: 0,
        kind: RecordKind::Write,
        flags: 0,
        lsn: 0,
        segment_id: 0,
        segment_offset: 0,
        synced_upto: 0,
        disk_id: 0,
        stored_len: 0,
        disk_offset: 0,
        length: 0,
    }
}
