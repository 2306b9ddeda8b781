//! Building a view's extent maps: where a view starts (the disks it shows, the checkpoint it
//! may start from, and what an in-memory view would take), and the journal's records applied
//! in LSN order. Used by the in-memory view (`view`), the layered one (`layered`) and the
//! incremental checkpoint writer, none of which this file knows.

use replog_format::limits::RECORD_DATA_BYTES_MAX;
use replog_format::record::RecordKind;
use replog_format::segment::ExtentEntry;

use crate::checkpoint;
use crate::error::{ReadError, Result};
use crate::extent_map::{ExtentMap, RecordRef, Source};
use crate::segments::SegmentSlot;
use crate::vault::VaultInner;

/// Where building a view starts: the disks it shows and the checkpoint it may start from.
pub(crate) struct Start {
    /// Indices into the manifest's disks of those added at or before the view's LSN,
    /// increasing, so also in disk id order.
    pub included: Vec<usize>,
    /// Their bases' sizes.
    pub base_bytes: Vec<u64>,
    /// `(segment id, LSN)` of the newest checkpoint at or before the view's LSN.
    pub checkpoint: Option<(u64, u64)>,
}

/// Peak bytes a piece costs while an in-memory map is built, which is what a memory budget must
/// bound. A built map takes 68 bytes a piece when each piece is its own record (20 in the
/// sorted array, 48 in the record table: the worst case, which scattered small writes reach);
/// while it is built, the sorted array grows by doubling, a journal piece waits in the overlay tree (about
/// 40 bytes) until it is merged, and the allocator keeps some of what is freed. Measured: 1159
/// MiB of peak RSS for an in-memory view of 10^7 scattered pieces, 121 bytes a piece.
pub(crate) const PEAK_BYTES_PER_PIECE: u64 = 128;

impl Start {
    pub(crate) fn of(inner: &VaultInner, lsn: u64) -> Result<Start> {
        let included: Vec<usize> = (0..inner.manifest.disks.len())
            .filter(|&i| inner.manifest.disks[i].added_lsn <= lsn)
            .collect();
        let base_bytes = included
            .iter()
            .map(|&i| Ok(inner.base(i)?.header.disk_bytes))
            .collect::<Result<Vec<u64>>>()?;
        Ok(Start {
            included,
            base_bytes,
            checkpoint: checkpoint::best_for(inner, lsn)?,
        })
    }

    /// What an in-memory view at `lsn` may take at most while it is built: every piece of the
    /// checkpoint, and for each LSN after it (a record at most) one more piece in the map and
    /// its footer entry while the footer is loaded, each piece at its peak cost. Reads one header page.
    pub(crate) fn in_memory_bytes_estimate(&self, inner: &VaultInner, lsn: u64) -> u64 {
        let (start_lsn, pieces) = match self.checkpoint {
            Some((_, cp_lsn)) => (cp_lsn, checkpoint::pieces_of(inner, cp_lsn)),
            None => (inner.manifest.base_lsn, 0),
        };
        let records = lsn.saturating_sub(start_lsn);
        let per_record = PEAK_BYTES_PER_PIECE + size_of::<ExtentEntry>() as u64;
        pieces
            .saturating_mul(PEAK_BYTES_PER_PIECE)
            .saturating_add(records.saturating_mul(per_record))
    }
}

/// Applies the records with `from < LSN <= to` to `maps`, one per disk at `included` (indices
/// into the manifest's disks, increasing), each sized as its disk is at `from`, with the checks
/// a view makes; then compacts them. For writing a checkpoint from the one before it.
pub(crate) fn apply_records(
    inner: &VaultInner,
    from: u64,
    to: u64,
    included: &[usize],
    maps: Vec<ExtentMap>,
) -> Result<Vec<ExtentMap>> {
    let mut builder = MapBuilder {
        inner,
        lsn: to,
        start_lsn: from,
        maps,
        included,
    };
    builder.apply_journal()?;
    let mut maps = builder.maps;
    maps.iter_mut().for_each(ExtentMap::compact);
    Ok(maps)
}

/// Applies the journal's records to the extent maps of the included disks.
pub(crate) struct MapBuilder<'a> {
    pub inner: &'a VaultInner,
    pub lsn: u64,
    /// The maps already hold every record up to this LSN (the base's, or a checkpoint's).
    pub start_lsn: u64,
    /// Indices into the manifest's disks, increasing, so also in disk id order.
    pub included: &'a [usize],
    pub maps: Vec<ExtentMap>,
}

impl MapBuilder<'_> {
    pub(crate) fn apply_journal(&mut self) -> Result<()> {
        let base_lsn = self.inner.manifest.base_lsn;
        if self.lsn == base_lsn {
            return Ok(());
        }
        self.check_coverage(base_lsn)?;
        let from = self.start_lsn;
        if self.lsn == from {
            return Ok(());
        }
        let inner = self.inner;
        let ctx = inner.segment_ctx();
        for (index, slot) in inner.segments.iter().enumerate() {
            if slot.first_lsn > self.lsn {
                break;
            }
            if slot.last_lsn() <= from {
                continue;
            }
            // The footer is not kept loaded once applied: the map holds what it needs, and
            // keeping every footer would cost 56 bytes a record on top of it.
            slot.with_extents(&ctx, |extents| self.apply_extents(index, slot, extents))??;
        }
        Ok(())
    }

    /// Applies the extents of segment `index` after the maps' LSN and up to the view's.
    pub(crate) fn apply_extents(
        &mut self,
        index: usize,
        slot: &SegmentSlot,
        extents: &[ExtentEntry],
    ) -> Result<()> {
        for e in extents {
            if e.lsn <= self.start_lsn {
                continue;
            }
            if e.lsn > self.lsn {
                break;
            }
            self.apply(index, slot, e)?;
        }
        Ok(())
    }

    /// The segments must hold every LSN after the base: a gap means records were lost.
    pub(crate) fn check_coverage(&self, base_lsn: u64) -> Result<()> {
        let first = self.inner.segments.iter().find(|s| s.last_lsn() > base_lsn);
        match first {
            Some(slot) if slot.first_lsn <= base_lsn + 1 => Ok(()),
            Some(slot) => Err(ReadError::damaged(
                &slot.rel_path,
                0,
                format!(
                    "the journal starts at LSN {}, but the base images stop at LSN {base_lsn}: \
                     the records in between are missing",
                    slot.first_lsn
                ),
            )),
            None => unreachable!("a view past the base LSN has records, checked against last_lsn"),
        }
    }

    fn apply(&mut self, segment_index: usize, slot: &SegmentSlot, e: &ExtentEntry) -> Result<()> {
        if e.kind == RecordKind::Resize {
            let position = self.check_resize(slot, e)?;
            self.maps[position].grow(e.length);
            return Ok(());
        }
        let (position, end) = self.check_extent(slot, e)?;
        let source = match e.kind {
            RecordKind::Zero => Source::Zero,
            _ => Source::Record(RecordRef::of_extent(segment_index as u32, e)),
        };
        self.maps[position].insert(e.disk_offset, end, source);
        Ok(())
    }

    /// Checks a resize of `slot` before it is applied: it targets a disk of the view, grows it
    /// from the size the view has reached (the base's, or the last resize's) to at most the
    /// manifest's size (the newest, once the writer committed it; a resize the open segment
    /// holds may be ahead of it after a crash, so only sealed ones are held to it). Returns the
    /// position of the disk's map.
    fn check_resize(&self, slot: &SegmentSlot, e: &ExtentEntry) -> Result<usize> {
        let position = self.disk_position(slot, e)?;
        let disk = &self.inner.manifest.disks[self.included[position]];
        let size = self.maps[position].size();
        let past_manifest = slot.is_sealed() && e.length > disk.disk_bytes;
        if e.disk_offset != size || e.length <= size || past_manifest {
            return Err(damaged_extent(
                slot,
                e,
                format!(
                    "it grows disk {} from {} to {} bytes, but the disk is {size} bytes there and \
                     the manifest says {}",
                    disk.name, e.disk_offset, e.length, disk.disk_bytes
                ),
            ));
        }
        Ok(position)
    }

    /// The position among the view's maps of the disk that `e` targets: a disk the manifest
    /// lists, added at or before `e`.
    fn disk_position(&self, slot: &SegmentSlot, e: &ExtentEntry) -> Result<usize> {
        let damaged = |why: String| damaged_extent(slot, e, why);
        let disks = &self.inner.manifest.disks;
        let Ok(index) = disks.binary_search_by_key(&e.disk_id, |d| d.disk_id) else {
            return Err(damaged(format!(
                "it targets disk {}, which the manifest does not list",
                e.disk_id
            )));
        };
        let disk = &disks[index];
        self.included.binary_search(&index).map_err(|_| {
            damaged(format!(
                "it targets disk {} before it was added at LSN {}",
                disk.name, disk.added_lsn
            ))
        })
    }

    /// Checks a write or zero extent of `slot` before it is applied: it targets a disk of the
    /// view, its length is within the record limit, a write's stored bytes are within its
    /// length, and it ends inside its disk as the view has sized it so far (a write past the old
    /// end before the resize record is refused). Returns the position of the disk's map and the
    /// extent's end.
    fn check_extent(&self, slot: &SegmentSlot, e: &ExtentEntry) -> Result<(usize, u64)> {
        let damaged = |why: String| damaged_extent(slot, e, why);
        let position = self.disk_position(slot, e)?;
        let disk = &self.inner.manifest.disks[self.included[position]];
        let size = self.maps[position].size();
        if e.length == 0 || e.length > RECORD_DATA_BYTES_MAX {
            return Err(damaged(format!(
                "its length {} is outside 1..={RECORD_DATA_BYTES_MAX}",
                e.length
            )));
        }
        // Bounds what reading the record allocates, before any header is seen.
        if e.kind == RecordKind::Write && (e.stored_len == 0 || u64::from(e.stored_len) > e.length)
        {
            return Err(damaged(format!(
                "{} payload bytes for {} logical bytes",
                e.stored_len, e.length
            )));
        }
        let end = e
            .disk_offset
            .checked_add(e.length)
            .filter(|&end| end <= size);
        let Some(end) = end else {
            return Err(damaged(format!(
                "it covers disk bytes {}..{} of disk {}, which is {size} bytes at that LSN",
                e.disk_offset,
                e.disk_offset.saturating_add(e.length),
                disk.name,
            )));
        };
        Ok((position, end))
    }
}

/// Damage in the record `e` of `slot`, naming the file and the record's offset.
fn damaged_extent(slot: &SegmentSlot, e: &ExtentEntry, why: String) -> ReadError {
    ReadError::damaged(
        &slot.rel_path,
        e.record_offset,
        format!(
            "the {} record of LSN {} at byte {}: {why}",
            e.kind.name(),
            e.lsn,
            e.record_offset
        ),
    )
}
