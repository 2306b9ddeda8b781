//! The journal segments a vault lists, as the reader holds them.
//!
//! A sealed segment is never scanned: its footer record is read at the offset the manifest gives,
//! checked against the manifest's footer CRC, decoded once and kept. The open segment is mapped
//! once and scanned when the vault is opened; the mapping is the snapshot every later read of
//! that segment uses, so a writer appending meanwhile changes nothing the reader sees.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use replog_format::limits::FOOTER_BYTES_MAX;
use replog_format::manifest::{SealedInfo, SegmentEntry};
use replog_format::record::{RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use replog_format::segment::{
    self, Expect, ExtentEntry, FooterIndex, IndexBuilder, PointEntry, SEGMENT_HEADER_BYTES,
    SegmentEnd, TRAILER_BYTES,
};
use replog_format::{DecodeError, layout};
use replog_io::{File, Mapped, OpenMode, Storage};

use crate::error::{ReadError, Result};
use crate::records::record_in;

/// One segment of the manifest.
#[derive(Debug)]
pub(crate) struct SegmentSlot {
    /// Its id.
    pub id: u64,
    /// Its first LSN.
    pub first_lsn: u64,
    /// `journal/<id>.seg`, relative to the vault, for messages.
    pub rel_path: PathBuf,
    /// What the reader knows of its records.
    pub state: SlotState,
}

/// A sealed segment (read through its footer) or the open one (scanned).
#[derive(Debug)]
pub(crate) enum SlotState {
    /// Sealed: the manifest's promise, and what has been loaded so far.
    Sealed {
        info: SealedInfo,
        file: OnceLock<Arc<dyn File>>,
        footer: OnceLock<FooterIndex>,
    },
    /// Open when the manifest was read: a scanned snapshot.
    Open(OpenSnapshot),
}

/// The open segment as one scan saw it.
#[derive(Debug)]
pub(crate) struct OpenSnapshot {
    /// The file's bytes at mapping time, for the scan; only `..end` is ever read.
    pub bytes: Mapped,
    /// The file, which records are read from with positional reads (as sealed segments are):
    /// reading them through the map would make every record read resident, up to the whole
    /// segment.
    pub file: Arc<dyn File>,
    /// Its write, zero and resize records, in LSN order.
    pub extents: Vec<ExtentEntry>,
    /// Its points, in LSN order.
    pub points: Vec<PointEntry>,
    /// Where its valid records end.
    pub end: SegmentEnd,
    /// The LSN of its last valid record (`first_lsn - 1` when none).
    pub last_lsn: u64,
    /// Damage found before the tail: the records before it are served, the points after it
    /// cannot be reached, and the writer refuses to open until it is dealt with.
    pub damage: Option<DecodeError>,
}

impl SegmentSlot {
    /// A slot for a sealed segment; nothing is read until its footer is needed.
    pub fn sealed(entry: &SegmentEntry, info: SealedInfo) -> SegmentSlot {
        SegmentSlot {
            id: entry.segment_id,
            first_lsn: entry.first_lsn,
            rel_path: rel_path(entry.segment_id),
            state: SlotState::Sealed {
                info,
                file: OnceLock::new(),
                footer: OnceLock::new(),
            },
        }
    }

    /// A slot for the open segment, mapped and scanned now.
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        entry: &SegmentEntry,
        expect: &Expect,
    ) -> Result<SegmentSlot> {
        let rel_path = rel_path(entry.segment_id);
        let file = storage
            .open(&layout::segment_path(dir, entry.segment_id), OpenMode::Read)
            .map_err(|e| ReadError::io(&rel_path, "open the open journal segment", e))?;
        let bytes = file
            .map()
            .map_err(|e| ReadError::io(&rel_path, "map the open journal segment", e))?;
        let snapshot =
            scan_snapshot(bytes, file, entry.first_lsn, expect).map_err(|e| match e {
                ScanFailure::Decode(e) => ReadError::decode(&rel_path, 0, e),
                ScanFailure::FirstLsn(found) => ReadError::damaged(
                    &rel_path,
                    40,
                    format!(
                        "segment header says its first LSN is {found}, the manifest says {}",
                        entry.first_lsn
                    ),
                ),
            })?;
        Ok(SegmentSlot {
            id: entry.segment_id,
            first_lsn: entry.first_lsn,
            rel_path,
            state: SlotState::Open(snapshot),
        })
    }

    /// Whether the manifest lists the segment as sealed.
    pub fn is_sealed(&self) -> bool {
        matches!(self.state, SlotState::Sealed { .. })
    }

    /// The LSN of the segment's last record.
    pub fn last_lsn(&self) -> u64 {
        match &self.state {
            SlotState::Sealed { info, .. } => info.last_lsn,
            SlotState::Open(s) => s.last_lsn,
        }
    }

    fn expect(&self, ctx: &SegmentCtx<'_>) -> Expect {
        Expect {
            vault_id: ctx.vault_id,
            seed: ctx.seed,
            segment_id: self.id,
        }
    }

    /// The segment's write, zero and resize records, in LSN order: from the footer of a sealed segment
    /// (loaded and checked on first use), from the scan of the open one.
    pub fn extents(&self, ctx: &SegmentCtx<'_>) -> Result<&[ExtentEntry]> {
        match &self.state {
            SlotState::Open(s) => Ok(&s.extents),
            SlotState::Sealed { info, footer, .. } => {
                if let Some(f) = footer.get() {
                    return Ok(&f.extents);
                }
                let loaded = self.load_footer(ctx, info)?;
                // Two threads may load the same footer; either copy is the same bytes.
                let _ = footer.set(loaded);
                Ok(&footer.get().expect("the footer was just set").extents)
            }
        }
    }

    /// Calls `f` with the segment's extents, as [`SegmentSlot::extents`] lists them, without
    /// keeping a sealed segment's footer loaded if it was not already: a layered view reads
    /// every footer after its checkpoint once, and keeping them all would cost the heap it
    /// exists to save (48 bytes a record).
    pub fn with_extents<R>(
        &self,
        ctx: &SegmentCtx<'_>,
        f: impl FnOnce(&[ExtentEntry]) -> R,
    ) -> Result<R> {
        match &self.state {
            SlotState::Open(s) => Ok(f(&s.extents)),
            SlotState::Sealed { info, footer, .. } => match footer.get() {
                Some(loaded) => Ok(f(&loaded.extents)),
                None => Ok(f(&self.load_footer(ctx, info)?.extents)),
            },
        }
    }

    fn file(&self, ctx: &SegmentCtx<'_>) -> Result<&Arc<dyn File>> {
        let SlotState::Sealed { file, .. } = &self.state else {
            unreachable!("only sealed segments are read through a file handle")
        };
        if let Some(f) = file.get() {
            return Ok(f);
        }
        let opened = ctx
            .storage
            .open(&layout::segment_path(ctx.dir, self.id), OpenMode::Read)
            .map_err(|e| ReadError::io(&self.rel_path, "open the journal segment", e))?;
        let _ = file.set(opened);
        Ok(file.get().expect("the file was just set"))
    }

    fn read(&self, ctx: &SegmentCtx<'_>, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file(ctx)?
            .read_exact_at(buf, offset)
            .map_err(|e| ReadError::read(&self.rel_path, offset, buf.len() as u64, e))
    }

    /// Reads and checks the footer record of a sealed segment against the manifest's promise.
    fn load_footer(&self, ctx: &SegmentCtx<'_>, info: &SealedInfo) -> Result<FooterIndex> {
        self.check_seal_bounds(ctx, info)?;
        let at = info.footer_offset;
        let room = info.file_bytes.saturating_sub(TRAILER_BYTES as u64);
        let mut record = vec![0u8; RECORD_HEADER_BYTES];
        self.read(ctx, at, &mut record)?;
        let h =
            RecordHeader::decode(&record).map_err(|e| ReadError::decode(&self.rel_path, at, e))?;
        if h.kind != RecordKind::Footer
            || at + h.total_bytes() != room
            || h.total_bytes() > FOOTER_BYTES_MAX + 64
        {
            return Err(ReadError::damaged(
                &self.rel_path,
                at,
                format!(
                    "expected the footer record ending at the trailer (byte {room}), found a {} record of {} bytes",
                    h.kind.name(),
                    h.total_bytes()
                ),
            ));
        }
        record.resize(h.total_bytes() as usize, 0);
        self.read(
            ctx,
            at + RECORD_HEADER_BYTES as u64,
            &mut record[RECORD_HEADER_BYTES..],
        )?;
        let (h, payload) = record_in(&record, at, &self.expect(ctx))
            .map_err(|e| ReadError::decode(&self.rel_path, 0, e))?;
        if h.crc != info.footer_crc || h.lsn != info.last_lsn {
            return Err(ReadError::damaged(
                &self.rel_path,
                at,
                format!(
                    "the footer record has CRC {:#010x} and LSN {}, the manifest says CRC {:#010x} and LSN {}",
                    h.crc, h.lsn, info.footer_crc, info.last_lsn
                ),
            ));
        }
        let footer = FooterIndex::decode(payload)
            .map_err(|e| ReadError::decode(&self.rel_path, at + RECORD_HEADER_BYTES as u64, e))?;
        self.check_footer_entries(&footer, info)?;
        Ok(footer)
    }

    /// Checks the file holds the sealed segment the manifest describes, and that the footer it
    /// names starts after the segment header and leaves room for a record header before the
    /// trailer.
    fn check_seal_bounds(&self, ctx: &SegmentCtx<'_>, info: &SealedInfo) -> Result<()> {
        let file_bytes = self
            .file(ctx)?
            .len()
            .map_err(|e| ReadError::io(&self.rel_path, "stat", e))?;
        // A segment can be longer than its trailer's end: a torn tail cut before the seal is
        // zeroed, never truncated (a reader may have it mapped). Those zeros are verify's concern.
        if file_bytes < info.file_bytes {
            return Err(ReadError::damaged(
                &self.rel_path,
                file_bytes,
                format!(
                    "the sealed segment is {file_bytes} bytes long, the manifest says it ends at byte {}",
                    info.file_bytes
                ),
            ));
        }
        let file_bytes = info.file_bytes;
        let at = info.footer_offset;
        let room = file_bytes.saturating_sub(TRAILER_BYTES as u64);
        if at < SEGMENT_HEADER_BYTES as u64 || at.saturating_add(RECORD_HEADER_BYTES as u64) > room
        {
            return Err(ReadError::damaged(
                &self.rel_path,
                at,
                format!(
                    "the manifest puts the footer at byte {at}, outside the {file_bytes}-byte segment"
                ),
            ));
        }
        Ok(())
    }

    /// Every indexed record must lie inside this segment's LSNs and before its footer.
    fn check_footer_entries(&self, footer: &FooterIndex, info: &SealedInfo) -> Result<()> {
        let lsns = self.first_lsn..=info.last_lsn;
        let records_end = info.footer_offset;
        for e in &footer.extents {
            let end = e
                .record_offset
                .saturating_add(RECORD_HEADER_BYTES as u64 + u64::from(e.stored_len));
            if !lsns.contains(&e.lsn)
                || e.record_offset < SEGMENT_HEADER_BYTES as u64
                || end > records_end
            {
                return Err(ReadError::damaged(
                    &self.rel_path,
                    info.footer_offset,
                    format!(
                        "the footer indexes LSN {} at bytes {}..{end}, outside the segment's LSNs {}..={} \
                         or its records (which end at byte {records_end})",
                        e.lsn, e.record_offset, self.first_lsn, info.last_lsn
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Reads the record of `total_bytes` at `offset` into `buf`: a copy from the open segment's
    /// snapshot, or a positional read of the sealed segment's file. Sealed segments are read,
    /// not mapped, so a failover's resident memory is its buffers, not the journal it touched.
    pub fn read_record(
        &self,
        ctx: &SegmentCtx<'_>,
        offset: u64,
        total_bytes: u64,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let end = offset.saturating_add(total_bytes);
        match &self.state {
            SlotState::Open(s) => {
                let valid = s.end.append_offset();
                if end > valid {
                    return Err(ReadError::damaged(
                        &self.rel_path,
                        offset,
                        format!(
                            "a record ending at byte {end} lies past the valid records, which end at byte {valid}"
                        ),
                    ));
                }
                buf.resize(total_bytes as usize, 0);
                s.file
                    .read_exact_at(buf, offset)
                    .map_err(|e| ReadError::read(&self.rel_path, offset, total_bytes, e))
            }
            SlotState::Sealed { info, .. } => {
                if end > info.file_bytes {
                    return Err(ReadError::damaged(
                        &self.rel_path,
                        offset,
                        format!(
                            "a record ending at byte {end} lies past the end of the {}-byte file",
                            info.file_bytes
                        ),
                    ));
                }
                buf.resize(total_bytes as usize, 0);
                self.file(ctx)?
                    .read_exact_at(buf, offset)
                    .map_err(|e| ReadError::read(&self.rel_path, offset, total_bytes, e))
            }
        }
    }

    /// Verifies the record at `offset` as read by [`SegmentSlot::read_record`].
    pub fn verify_record<'a>(
        &self,
        ctx: &SegmentCtx<'_>,
        bytes: &'a [u8],
        offset: u64,
    ) -> Result<(RecordHeader, &'a [u8])> {
        record_in(bytes, offset, &self.expect(ctx))
            .map_err(|e| ReadError::decode(&self.rel_path, 0, e))
    }

    /// The file's length on disk, for statistics.
    pub fn file_bytes(&self, ctx: &SegmentCtx<'_>) -> Result<u64> {
        match &self.state {
            SlotState::Open(s) => Ok(s.bytes.len() as u64),
            SlotState::Sealed { .. } => self
                .file(ctx)?
                .len()
                .map_err(|e| ReadError::io(&self.rel_path, "stat", e)),
        }
    }
}

/// What a segment needs from the vault to read itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentCtx<'a> {
    pub storage: &'a dyn Storage,
    pub dir: &'a Path,
    pub vault_id: replog_format::VaultId,
    pub seed: u32,
}

enum ScanFailure {
    Decode(DecodeError),
    FirstLsn(u64),
}

/// Bytes of the open segment a scan passes before releasing them.
const SCAN_RELEASE_BYTES: usize = 8 << 20;

/// Scans the mapped open segment. A file too short for a header, or all zeros, holds no record
/// yet: a writer that created it has not written its header.
fn scan_snapshot(
    bytes: Mapped,
    file: Arc<dyn File>,
    first_lsn: u64,
    expect: &Expect,
) -> Result<OpenSnapshot, ScanFailure> {
    if bytes.len() < SEGMENT_HEADER_BYTES || bytes.iter().all(|&b| b == 0) {
        let end = SegmentEnd::Clean { offset: 0 };
        return Ok(OpenSnapshot {
            bytes,
            file,
            extents: Vec::new(),
            points: Vec::new(),
            end,
            last_lsn: first_lsn - 1,
            damage: None,
        });
    }
    let mut index = IndexBuilder::default();
    // The scan verifies every record, touching every page: pages it has passed are released as
    // it goes, so a 256 MiB open segment costs a window of resident memory, not 256 MiB.
    let mut released = 0;
    let scan = segment::scan(&bytes, expect, |h, payload| {
        index.visit(h, payload);
        // Where this record starts (the scan checked that its header says so).
        let at = h.segment_offset as usize;
        if at.saturating_sub(released) >= SCAN_RELEASE_BYTES {
            bytes.release(released, at);
            released = at;
        }
    });
    let IndexBuilder {
        extents,
        points,
        bad_point,
    } = index;
    let scan = match scan {
        Ok(scan) => scan,
        // Damage past the header: every record before it was visited and verified, so the
        // points before it stay readable (during an outage an earlier point is worth having).
        Err(e) if e.offset >= SEGMENT_HEADER_BYTES as u64 => {
            let last_lsn = extents
                .last()
                .map(|x| x.lsn)
                .max(points.last().map(|p| p.lsn))
                .unwrap_or(first_lsn - 1);
            let end = SegmentEnd::Torn {
                offset: e.offset,
                reason: e.clone(),
            };
            return Ok(OpenSnapshot {
                bytes,
                file,
                extents,
                points,
                end,
                last_lsn,
                damage: Some(e),
            });
        }
        Err(e) => return Err(ScanFailure::Decode(e)),
    };
    if let Some(e) = bad_point {
        return Err(ScanFailure::Decode(e));
    }
    if scan.header.first_lsn != first_lsn {
        return Err(ScanFailure::FirstLsn(scan.header.first_lsn));
    }
    Ok(OpenSnapshot {
        bytes,
        file,
        extents,
        points,
        end: scan.end,
        last_lsn: scan.last_lsn,
        damage: None,
    })
}

fn rel_path(segment_id: u64) -> PathBuf {
    Path::new(layout::JOURNAL_DIR).join(layout::segment_file_name(segment_id))
}
