//! Checkpoint indexes (`index/<lsn>.idx`, layout in `replog_format::checkpoint`): writing one
//! from a view, choosing the one a view starts from, and loading it.
//!
//! A checkpoint is derived from sealed segments, which never change, so any process may write
//! one without the writer's lock: it is written under a unique temporary name, synced, and
//! renamed into place; two processes writing the same LSN write the same map. A checkpoint that
//! fails to load is ignored (the view replays the journal instead) and reported by `verify`.
//!
//! Memory: loading holds the extent maps being built (the same maps a replayed view holds) and
//! one 1 MiB read buffer; writing holds the view and one 1 MiB write buffer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use replog_format::checkpoint::{
    CHECKPOINT_HEADER_BYTES, CheckpointHeader, CheckpointPiece, DiskUnit, PieceSource, RecordPiece,
    UNIT_BYTES, decode_disk_unit, decode_piece_unit,
};
use replog_format::layout::{self, INDEX_DIR};
use replog_io::{File, OpenMode, WriteAt};

use crate::base_image::base_bytes_or_manifest;
use crate::disk_reader::DiskView;
use crate::error::{ReadError, ReadErrorKind, Result};
use crate::extent_map::{ExtentMap, RecordRef, SortedBuilder, Source};
use crate::point_view::PointView;
use crate::segments::SlotState;
use crate::vault::{Vault, VaultInner};

/// Bytes read or written at a time.
const IO_BYTES: usize = 1 << 20;

/// By default a checkpoint is written once this many LSNs (records and points) have been
/// sealed since the newest one: rare enough that writing checkpoints costs a small fraction of
/// the journal's own writes, often enough that a view never replays more than this many
/// records beyond what the journal's open segment holds.
pub const CHECKPOINT_EVERY_LSNS: u64 = 1 << 18;

/// A checkpoint on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Its LSN.
    pub lsn: u64,
    /// Its path.
    pub path: PathBuf,
    /// Pieces over all disks.
    pub pieces: u64,
    /// Its length.
    pub file_bytes: u64,
}

/// The LSNs of the checkpoints in the vault's `index/`, sorted; none if there is no directory.
pub(crate) fn list(inner: &VaultInner) -> Result<Vec<u64>> {
    let dir = inner.dir.join(INDEX_DIR);
    match inner.storage.read_dir(&dir) {
        Ok(names) => {
            let mut lsns: Vec<u64> = names
                .iter()
                .filter_map(|n| layout::parse_checkpoint_file_name(n))
                .collect();
            lsns.sort_unstable();
            Ok(lsns)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ReadError::io(INDEX_DIR, "list", e)),
    }
}

/// The LSNs at which a checkpoint can stand: the ends of sealed segments at or after the base.
fn sealed_ends(inner: &VaultInner) -> impl Iterator<Item = (u64, u64)> + '_ {
    let base_lsn = inner.manifest.base_lsn;
    inner.segments.iter().filter_map(move |s| match &s.state {
        SlotState::Sealed { info, .. } if info.last_lsn >= base_lsn => Some((s.id, info.last_lsn)),
        _ => None,
    })
}

/// The newest usable checkpoint for a view at `lsn`: at or before it, at or after the base, at
/// the end of a sealed segment of this snapshot.
pub(crate) fn best_for(inner: &VaultInner, lsn: u64) -> Result<Option<(u64, u64)>> {
    let on_disk = list(inner)?;
    Ok(sealed_ends(inner)
        .filter(|&(_, end)| end <= lsn && on_disk.binary_search(&end).is_ok())
        .last())
}

/// What loading a checkpoint checks it against.
pub(crate) struct LoadCtx<'a> {
    pub storage: &'a dyn replog_io::Storage,
    pub dir: &'a Path,
    pub vault_id: replog_format::VaultId,
    pub seed: u32,
    pub manifest: &'a replog_format::manifest::Manifest,
    /// Ids of the segments of the snapshot, increasing; a record piece's index is its
    /// position here.
    pub segment_ids: &'a [u64],
}

impl<'a> LoadCtx<'a> {
    pub(crate) fn of(inner: &'a VaultInner, segment_ids: &'a [u64]) -> LoadCtx<'a> {
        LoadCtx {
            storage: inner.storage.as_ref(),
            dir: &inner.dir,
            vault_id: inner.header.vault_id,
            seed: inner.seed,
            manifest: &inner.manifest,
            segment_ids,
        }
    }
}

/// Loads checkpoint `lsn` (which ends segment `segment_id`) as maps for the disks at `disks`
/// (indices into the manifest's disks, those added at or before `lsn`), whose bases hold
/// `base_bytes` each. Disks added after the checkpoint get a map of their base. Record pieces
/// already folded into the base read from the base.
pub(crate) fn load(
    inner: &LoadCtx<'_>,
    lsn: u64,
    segment_id: u64,
    disks: &[usize],
    base_bytes: &[u64],
) -> Result<Vec<ExtentMap>> {
    let path = layout::checkpoint_path(inner.dir, lsn);
    let rel = path.strip_prefix(inner.dir).unwrap_or(&path).to_path_buf();
    let file = inner
        .storage
        .open(&path, OpenMode::Read)
        .map_err(|e| ReadError::io(&rel, "open the checkpoint", e))?;
    let header = load_header(inner, file.as_ref(), &rel, lsn, segment_id)?;
    let mut units = UnitReader {
        file: file.as_ref(),
        rel: &rel,
        buf: Vec::new(),
        pos: 0,
        left: header.unit_count,
        next_offset: CHECKPOINT_HEADER_BYTES as u64,
        crc: crc32fast::Hasher::new_with_initial(inner.seed),
    };
    let mut maps: Vec<Option<ExtentMap>> = disks.iter().map(|_| None).collect();
    let mut previous_id = None;
    for _ in 0..header.disk_count {
        let at = units.next_offset;
        let disk = decode_disk_unit(units.next()?).map_err(|e| ReadError::decode(&rel, at, e))?;
        let position = disk_position(inner, disks, &disk, previous_id, &units, at)?;
        previous_id = Some(disk.disk_id);
        let map = load_disk(inner, &header, &disk, &mut units)?;
        if disk.disk_bytes < base_bytes[position] || !map.base_reads_within(base_bytes[position]) {
            return Err(ReadError::damaged(
                &rel,
                at,
                format!(
                    "disk {} of {} bytes reads past its base of {} bytes",
                    disk.disk_id, disk.disk_bytes, base_bytes[position]
                ),
            ));
        }
        maps[position] = Some(map);
    }
    check_body_end(&header, units)?;
    Ok(maps
        .into_iter()
        .zip(base_bytes)
        .map(|(map, &b)| map.unwrap_or_else(|| ExtentMap::new(b)))
        .collect())
}

/// Reads and decodes the header page of checkpoint `lsn`, which must belong to this vault and
/// end segment `segment_id`.
fn load_header(
    inner: &LoadCtx<'_>,
    file: &dyn File,
    rel: &Path,
    lsn: u64,
    segment_id: u64,
) -> Result<CheckpointHeader> {
    let mut page = vec![0u8; CHECKPOINT_HEADER_BYTES];
    file.read_exact_at(&mut page, 0)
        .map_err(|e| ReadError::read(rel, 0, page.len() as u64, e))?;
    let header =
        CheckpointHeader::decode(&page, inner.seed).map_err(|e| ReadError::decode(rel, 0, e))?;
    let misplaced = if header.vault_id != inner.vault_id {
        Some("it belongs to another vault".to_owned())
    } else if (header.lsn, header.last_segment_id) != (lsn, segment_id) {
        Some(format!(
            "it is for LSN {} at the end of segment {}, its name and the manifest say LSN {lsn} of segment {segment_id}",
            header.lsn, header.last_segment_id
        ))
    } else {
        None
    };
    match misplaced {
        Some(why) => Err(ReadError::damaged(rel, 0, why)),
        None => Ok(header),
    }
}

/// The position among the view's `disks` of the disk that the unit at byte `at` describes. Disk
/// units come in increasing id order (after `previous_id`), name a disk of the view with the
/// size the manifest gives it (at most that size once a disk was resized: the checkpoint holds
/// the size at its LSN), and promise no more pieces than units remain.
fn disk_position(
    inner: &LoadCtx<'_>,
    disks: &[usize],
    disk: &DiskUnit,
    previous_id: Option<u32>,
    units: &UnitReader<'_>,
    at: u64,
) -> Result<usize> {
    let manifest_disks = &inner.manifest.disks;
    let position = disks
        .iter()
        .position(|&i| manifest_disks[i].disk_id == disk.disk_id);
    let order_ok = previous_id.is_none_or(|p| p < disk.disk_id);
    let Some(position) = position.filter(|_| order_ok) else {
        return Err(ReadError::damaged(
            units.rel,
            at,
            format!(
                "disk {} is out of order or not a disk of this view",
                disk.disk_id
            ),
        ));
    };
    let entry = &manifest_disks[disks[position]];
    let size_ok = if inner.manifest.resized {
        disk.disk_bytes <= entry.disk_bytes
    } else {
        disk.disk_bytes == entry.disk_bytes
    };
    if !size_ok || disk.piece_count > units.left {
        return Err(ReadError::damaged(
            units.rel,
            at,
            format!(
                "disk {} of {} bytes with {} pieces; the manifest says {} bytes and {} units remain",
                disk.disk_id, disk.disk_bytes, disk.piece_count, entry.disk_bytes, units.left
            ),
        ));
    }
    Ok(position)
}

/// After the last disk: no unit the header counts is left over, and the body's CRC holds.
fn check_body_end(header: &CheckpointHeader, units: UnitReader<'_>) -> Result<()> {
    if units.left != 0 {
        return Err(ReadError::damaged(
            units.rel,
            units.next_offset,
            format!("{} units after the last disk", units.left),
        ));
    }
    let body_crc = units.crc.finalize();
    if body_crc != header.body_crc {
        return Err(ReadError::damaged(
            units.rel,
            CHECKPOINT_HEADER_BYTES as u64,
            format!(
                "the body fails its checksum (stored {:#010x}, computed {body_crc:#010x})",
                header.body_crc
            ),
        ));
    }
    Ok(())
}

fn load_disk(
    inner: &LoadCtx<'_>,
    header: &CheckpointHeader,
    disk: &DiskUnit,
    units: &mut UnitReader<'_>,
) -> Result<ExtentMap> {
    let base_lsn = inner.manifest.base_lsn;
    // Room for the pieces the disk's unit counts, up to 2^22 (80 MiB) before the body proves
    // them: a damaged count costs no more than that.
    let hint = disk.piece_count.min(1 << 22) as usize;
    let mut map = SortedBuilder::with_capacity(disk.disk_bytes, hint);
    for _ in 0..disk.piece_count {
        let at = units.next_offset;
        let piece = decode_piece_unit(units.next()?, header)
            .map_err(|e| ReadError::decode(units.rel, at, e))?;
        let source = source_of(inner, &piece, base_lsn)
            .map_err(|why| ReadError::damaged(units.rel, at, why))?;
        if !map.push(piece.start, piece.start + piece.len, source) {
            return Err(ReadError::damaged(
                units.rel,
                at,
                format!(
                    "piece {}..{} of disk {} overlaps the one before, goes backwards or runs past \
                     the disk's {} bytes",
                    piece.start,
                    piece.start + piece.len,
                    disk.disk_id,
                    disk.disk_bytes
                ),
            ));
        }
    }
    Ok(map.finish())
}

/// The source a checkpoint piece stands for in this snapshot.
fn source_of(
    inner: &LoadCtx<'_>,
    piece: &CheckpointPiece,
    base_lsn: u64,
) -> std::result::Result<Source, String> {
    match piece.source {
        PieceSource::Zero => Ok(Source::Zero),
        // Folded into the base by a compaction after the checkpoint was written: the base
        // holds exactly this record's bytes there, since no later folded record covers them.
        PieceSource::Record(r) if r.lsn <= base_lsn => Ok(Source::Base),
        PieceSource::Record(r) => {
            let index = inner
                .segment_ids
                .binary_search(&r.segment_id)
                .map_err(|_| {
                    format!(
                        "a piece reads segment {}, which the manifest does not list",
                        r.segment_id
                    )
                })?;
            Ok(Source::Record(record_ref(index as u32, piece.start, &r)))
        }
    }
}

fn record_ref(segment_index: u32, start: u64, r: &RecordPiece) -> RecordRef {
    RecordRef {
        segment_index,
        record_offset: r.record_offset,
        lsn: r.lsn,
        disk_offset: start - u64::from(r.data_offset),
        length: r.length,
        stored_len: r.stored_len,
        record_crc: r.record_crc,
        flags: r.flags,
        data_offset: r.data_offset,
    }
}

/// Checks checkpoint `lsn` of a vault whose manifest is `manifest`, for `verify`: it must load
/// against the manifest as a view would load it.
pub(crate) fn check(
    storage: &dyn replog_io::Storage,
    dir: &Path,
    vault_id: replog_format::VaultId,
    seed: u32,
    manifest: &replog_format::manifest::Manifest,
    lsn: u64,
) -> Result<()> {
    let segment_ids: Vec<u64> = manifest.segments.iter().map(|s| s.segment_id).collect();
    let Some(segment) = manifest
        .segments
        .iter()
        .find(|s| s.sealed.is_some_and(|i| i.last_lsn == lsn))
    else {
        return Err(ReadError::new(
            ReadErrorKind::Damaged,
            format!("LSN {lsn} does not end a sealed segment of the manifest"),
        ));
    };
    let disks: Vec<usize> = (0..manifest.disks.len())
        .filter(|&i| manifest.disks[i].added_lsn <= lsn)
        .collect();
    let ctx = LoadCtx {
        storage,
        dir,
        vault_id,
        seed,
        manifest,
        segment_ids: &segment_ids,
    };
    let base_bytes: Vec<u64> = disks
        .iter()
        .map(|&i| base_bytes_or_manifest(storage, dir, manifest, &manifest.disks[i], seed))
        .collect();
    load(&ctx, lsn, segment.segment_id, &disks, &base_bytes).map(|_| ())
}

/// Reads the body one unit at a time through a 1 MiB buffer, hashing it as it goes.
struct UnitReader<'a> {
    file: &'a dyn File,
    rel: &'a Path,
    buf: Vec<u8>,
    pos: usize,
    /// Units not yet returned.
    left: u64,
    /// File offset of the next unit.
    next_offset: u64,
    crc: crc32fast::Hasher,
}

impl UnitReader<'_> {
    fn next(&mut self) -> Result<&[u8]> {
        if self.left == 0 {
            return Err(ReadError::damaged(
                self.rel,
                self.next_offset,
                "the body ends before the units its header and disks promise",
            ));
        }
        if self.pos == self.buf.len() {
            let units = (IO_BYTES / UNIT_BYTES) as u64;
            let len = units.min(self.left) as usize * UNIT_BYTES;
            self.buf.resize(len, 0);
            self.file
                .read_exact_at(&mut self.buf, self.next_offset)
                .map_err(|e| ReadError::read(self.rel, self.next_offset, len as u64, e))?;
            self.crc.update(&self.buf);
            self.pos = 0;
        }
        let unit = &self.buf[self.pos..self.pos + UNIT_BYTES];
        self.pos += UNIT_BYTES;
        self.left -= 1;
        self.next_offset += UNIT_BYTES as u64;
        Ok(unit)
    }
}

/// Writes a checkpoint at `lsn`, which must end a sealed segment of the snapshot at or after
/// the base. Returns what was written; an existing checkpoint at `lsn` is left as it is.
pub fn write(vault: &Vault, lsn: u64) -> Result<CheckpointInfo> {
    let inner = &vault.inner;
    let Some((segment_id, _)) = sealed_ends(inner).find(|&(_, end)| end == lsn) else {
        return Err(ReadError::new(
            ReadErrorKind::InvalidRequest,
            format!("LSN {lsn} does not end a sealed segment at or after the base"),
        ));
    };
    let view = vault.view_at_lsn(lsn)?;
    write_view(inner, &view, segment_id)
}

/// Writes `view`, a view at the end of sealed segment `segment_id`, as the checkpoint at its
/// LSN; the pieces are streamed from the view in disk order, so a layered view is written
/// without loading the checkpoint it lies over.
pub(crate) fn write_view(
    inner: &VaultInner,
    view: &PointView,
    segment_id: u64,
) -> Result<CheckpointInfo> {
    let lsn = view.lsn();
    let storage = inner.storage.as_ref();
    let index_dir = inner.dir.join(INDEX_DIR);
    let created = !storage
        .exists(&index_dir)
        .map_err(|e| ReadError::io(INDEX_DIR, "look for", e))?;
    storage
        .create_dir_all(&index_dir)
        .map_err(|e| ReadError::io(INDEX_DIR, "create", e))?;
    if created {
        storage
            .sync_dir(&inner.dir)
            .map_err(|e| ReadError::io(&inner.dir, "sync the directory", e))?;
    }
    let target = layout::checkpoint_path(&inner.dir, lsn);
    static UNIQUE: AtomicU64 = AtomicU64::new(0);
    let tmp = index_dir.join(format!(
        ".{lsn:016x}.{}.{}.tmp",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    let result = write_file(inner, view, lsn, segment_id, &tmp).and_then(|info| {
        storage
            .rename(&tmp, &target)
            .map_err(|e| ReadError::io(&tmp, "rename", e))?;
        storage
            .sync_dir(&index_dir)
            .map_err(|e| ReadError::io(&index_dir, "sync the directory", e))?;
        Ok(CheckpointInfo {
            path: target.clone(),
            ..info
        })
    });
    if result.is_err() {
        let _ = storage.remove_file(&tmp);
    }
    result
}

fn write_file(
    inner: &VaultInner,
    view: &PointView,
    lsn: u64,
    segment_id: u64,
    tmp: &Path,
) -> Result<CheckpointInfo> {
    let file = inner
        .storage
        .open(tmp, OpenMode::CreateNew)
        .map_err(|e| ReadError::io(tmp, "create", e))?;
    let mut out = UnitWriter {
        file: file.as_ref(),
        path: tmp,
        buf: Vec::with_capacity(IO_BYTES),
        offset: CHECKPOINT_HEADER_BYTES as u64,
        units: 0,
        crc: crc32fast::Hasher::new_with_initial(inner.seed),
    };
    let mut pieces = 0;
    for disk in view.disks() {
        pieces += write_disk(inner, disk, &mut out)?;
    }
    out.flush()?;
    let header = CheckpointHeader {
        vault_id: inner.header.vault_id,
        lsn,
        last_segment_id: segment_id,
        disk_count: view.disks().len() as u32,
        unit_count: out.units,
        body_crc: out.crc.finalize(),
    };
    file.write_batch(
        &[WriteAt {
            offset: 0,
            data: &header.encode(inner.seed),
        }],
        true,
    )
    .map_err(|e| ReadError::io(tmp, "write and sync", e))?;
    Ok(CheckpointInfo {
        lsn,
        path: tmp.to_path_buf(),
        pieces,
        file_bytes: header.file_bytes().unwrap_or(u64::MAX),
    })
}

/// Writes the unit of `disk` and one unit for each of its pieces that does not read the base.
/// Returns the number of pieces written.
fn write_disk(inner: &VaultInner, disk: &DiskView, out: &mut UnitWriter<'_>) -> Result<u64> {
    let stored = |source: &Source| !matches!(source, Source::Base);
    let mut count = 0;
    for piece in disk.pieces(0, disk.size()) {
        count += u64::from(stored(&piece?.1.source));
    }
    DiskUnit {
        disk_id: disk.entry.disk_id,
        disk_bytes: disk.size(),
        piece_count: count,
    }
    .encode(&mut out.buf);
    out.unit()?;
    for piece in disk.pieces(0, disk.size()) {
        let (start, piece) = piece?;
        let source = match piece.source {
            Source::Base => continue,
            Source::Zero => PieceSource::Zero,
            Source::Record(r) => PieceSource::Record(RecordPiece {
                segment_id: inner.segments[r.segment_index as usize].id,
                record_offset: r.record_offset,
                lsn: r.lsn,
                length: r.length,
                stored_len: r.stored_len,
                record_crc: r.record_crc,
                flags: r.flags,
                data_offset: r.data_offset,
            }),
        };
        CheckpointPiece {
            start,
            len: piece.end - start,
            source,
        }
        .encode(&mut out.buf);
        out.unit()?;
    }
    Ok(count)
}

/// Gathers encoded units and writes them 1 MiB at a time, hashing them.
struct UnitWriter<'a> {
    file: &'a dyn File,
    path: &'a Path,
    buf: Vec<u8>,
    offset: u64,
    units: u64,
    crc: crc32fast::Hasher,
}

impl UnitWriter<'_> {
    /// Counts the unit just encoded into `buf`, writing `buf` out when full.
    fn unit(&mut self) -> Result<()> {
        self.units += 1;
        if self.buf.len() >= IO_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.crc.update(&self.buf);
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| ReadError::io(self.path, "write", e).at(self.offset))?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// The units of the body of checkpoint `lsn`, from its header; 0 if it has none or it does not
/// read (the next checkpoint then replaces it).
pub(crate) fn units_of(inner: &VaultInner, lsn: u64) -> u64 {
    let path = layout::checkpoint_path(&inner.dir, lsn);
    let mut page = vec![0u8; CHECKPOINT_HEADER_BYTES];
    inner
        .storage
        .open(&path, OpenMode::Read)
        .and_then(|f| f.read_exact_at(&mut page, 0))
        .ok()
        .and_then(|()| CheckpointHeader::decode(&page, inner.seed).ok())
        .map_or(0, |h| h.unit_count)
}

/// Writes a checkpoint at the end of the newest sealed segment if, since the newest checkpoint
/// (or the base), at least `every_lsns` LSNs were sealed and at least as many as that
/// checkpoint holds pieces; removes checkpoints the base has passed. Cheap when there is
/// nothing to do: it lists `index/` and reads one header page.
/// Returns the checkpoint written, if any.
pub fn maintain(vault: &Vault, every_lsns: u64) -> Result<Option<CheckpointInfo>> {
    let inner = &vault.inner;
    let base_lsn = inner.manifest.base_lsn;
    let on_disk = list(inner)?;
    // At the base LSN too: compaction dropped the segment that ended there.
    for &old in on_disk.iter().filter(|&&l| l <= base_lsn && base_lsn > 0) {
        let path = layout::checkpoint_path(&inner.dir, old);
        match inner.storage.remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ReadError::io(&path, "remove", e)),
        }
    }
    let Some((_, newest)) = sealed_ends(inner).last() else {
        return Ok(None);
    };
    let since = on_disk
        .iter()
        .copied()
        .filter(|&l| l >= base_lsn && l <= newest)
        .max()
        .unwrap_or(base_lsn);
    // A checkpoint costs in proportion to the pieces it holds: spacing them at least that many
    // LSNs apart keeps the index writes a bounded fraction of the journal's, however
    // fragmented the disks are, while a view still replays at most that many records.
    let spacing = every_lsns.max(units_of(inner, since));
    if newest - since < spacing || on_disk.binary_search(&newest).is_ok() {
        return Ok(None);
    }
    write(vault, newest).map(Some)
}
