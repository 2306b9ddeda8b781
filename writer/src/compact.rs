//! Compaction: rolling the base images forward to a recovery point B, deleting the journal
//! segments no longer needed, and retiring points that retention thinned out.
//!
//! Order, each step durable before the next (a crash anywhere leaves the old state or the new
//! one, and recovery finishes or undoes the rest):
//!
//! 1. **Leases.** No live lease may hold a point below B: compaction waits for it or skips
//!    (see [`LeaseWait`]). The registration lock is not held meanwhile, so readers keep opening.
//! 2. **New bases.** For each disk, a new generation file `bases/<disk>.<gen+1>.base` holds the
//!    disk as of B: read through the reader's view at B (every journal record and old base chunk
//!    verified as it is read), written window by window by the one base writer (`bases`);
//!    all-zero blocks stay holes. Data, table pages, header, one data sync each; then `bases/`
//!    synced. No manifest names these files yet, so a crash leaves only leftovers that recovery
//!    removes.
//! 3. **Commit.** Under the registration lock held exclusive, the leases are checked again and
//!    one manifest replacement records base LSN B, the new generations, the segments wholly at or
//!    below B dropped, the points below B dropped (the point at B stays: it reads as the base)
//!    and the retired points. Segments straddling B stay; readers skip their records up to B.
//! 4. **Delete.** The old base files and dropped segments are removed and their directories
//!    synced, unless a live lease was taken against an older manifest, whose snapshot still
//!    names them: then they are left (deferred) and removed by a later prune or writer open once
//!    no such lease remains. Recovery also redoes deletions a crash interrupted.
//!
//! Memory: the reader's extent maps of the view at B (proportional to the records after the old
//! base, as for a failover), one window and one table page.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use replog_format::base::ChunkSum;
use replog_format::layout;
use replog_format::manifest::Manifest;
use replog_reader::extent_map::Source;
use replog_reader::{DiskReader, LiveLease, ReadError, ReadErrorKind, Registrations};

use crate::bases::{BaseSource, BaseSpec, Bases, WrittenBase};
use crate::blocks::is_zero;
use crate::error::{Result, WriteError, WriteErrorKind};
use crate::files::file_len;
use crate::journal::Journal;
use crate::state::VaultState;

/// How often a waiting compaction looks at the leases again.
const LEASE_POLL: Duration = Duration::from_millis(50);

/// What compaction does when a reader's lease stands in the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseWait {
    /// Give up at once and report the lease.
    Skip,
    /// Wait up to this long for it to go, then give up and report it.
    Wait(Duration),
}

/// How the leases affected a compaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// No lease was in the way.
    #[default]
    Clear,
    /// A lease was in the way and went within the wait.
    Waited {
        /// How long compaction waited, in milliseconds.
        waited_ms: u64,
    },
    /// A lease was in the way; nothing was changed.
    Skipped {
        /// The lease, described.
        blocking: String,
    },
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactReport {
    /// The base LSN before.
    pub base_lsn_before: u64,
    /// The base LSN after (unchanged when skipped).
    pub base_lsn_after: u64,
    /// Ids of the points below the new base, which no longer exist.
    pub points_removed: Vec<u64>,
    /// Ids of the points retired (thinned): their records stay, they are no longer offered.
    pub points_retired: Vec<u64>,
    /// Segments deleted (or deferred, see `deferred`).
    pub segments_dropped: Vec<u64>,
    /// Their bytes (file lengths).
    pub journal_bytes_dropped: u64,
    /// Bytes of the old base files replaced (file lengths, holes included).
    pub old_base_bytes: u64,
    /// Bytes of the new base files (file lengths, holes included).
    pub new_base_bytes: u64,
    /// Old files a reader's snapshot still names, left for a later prune or writer open.
    pub deferred: Vec<PathBuf>,
    /// Segments whose dead prefix was released: a hole punched from after the header to the
    /// page of the new base point's marker (see `Manifest::released_prefix`).
    pub prefixes_released: Vec<u64>,
    /// Allocated bytes that release gave back (`st_blocks` before less after).
    pub prefix_bytes_released: u64,
    /// Segments whose dead prefix the committed manifest marks but a reader's older snapshot
    /// may still read: released by a later prune or writer open (as `deferred` files are).
    pub prefixes_deferred: Vec<u64>,
    /// Segment files on a filesystem that cannot punch holes: their dead prefix stays
    /// allocated (nothing is written over it instead).
    pub release_unsupported: Vec<PathBuf>,
    /// How leases affected it.
    pub lease: LeaseOutcome,
    /// Whether a manifest was committed.
    pub committed: bool,
}

/// What a compaction is asked to do: move the base to a point, retire points above it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompactRequest {
    /// The point that becomes the base: (id, LSN). Its LSN may equal the current base LSN.
    pub base: (u64, u64),
    /// Points above it to retire.
    pub retire: Vec<u64>,
    /// What to do about leases.
    pub wait: LeaseWait,
    /// How the view at the new base is built (its memory budget).
    pub view: replog_reader::ViewOptions,
}

/// A compaction: the vault whose manifest it commits, the journal (whose open segment's points
/// it keeps, and which it poisons on failure) and the base writer that rolls the bases.
pub(crate) struct Compaction<'w> {
    pub(crate) vault: &'w mut VaultState,
    pub(crate) journal: &'w mut Journal,
    pub(crate) bases: &'w Bases,
}

impl Compaction<'_> {
    /// Makes the journal durable, then runs the compaction `req` asks for; any failure after
    /// files were written poisons the journal (reopening the vault recovers and removes the
    /// leftovers).
    pub(crate) fn run(mut self, req: &CompactRequest) -> Result<CompactReport> {
        self.journal.flush(true)?;
        let result = self.run_steps(req);
        if let Err(e) = &result {
            self.journal.poison(e);
        }
        result
    }

    fn run_steps(&mut self, req: &CompactRequest) -> Result<CompactReport> {
        let (_, target) = req.base;
        let base_lsn = self.vault.manifest.base_lsn;
        let mut report = CompactReport {
            base_lsn_before: base_lsn,
            base_lsn_after: base_lsn,
            ..CompactReport::default()
        };
        assert!(target >= base_lsn, "compaction never moves back");
        let started = Instant::now();
        let mut waited = false;
        if let Err(blocking) = self.wait_for_leases(target, req.wait, started, &mut waited)? {
            report.lease = LeaseOutcome::Skipped { blocking };
            return Ok(report);
        }
        let rolled = if target > base_lsn {
            self.seal_around(target)?;
            self.roll_bases(target, &req.view)?
        } else {
            Vec::new()
        };
        let (registrations, live) =
            match self.wait_for_leases(target, req.wait, started, &mut waited)? {
                Ok(held) => held,
                Err(blocking) => {
                    self.vault
                        .remove_files(rolled.iter().map(|r| r.path.clone()))?;
                    report.lease = LeaseOutcome::Skipped { blocking };
                    return Ok(report);
                }
            };
        if waited {
            report.lease = LeaseOutcome::Waited {
                waited_ms: started.elapsed().as_millis() as u64,
            };
        }
        let dropped = self.commit_compaction(req, &rolled, &mut report)?;
        let old_files = self.superseded_files(&rolled, &dropped, &mut report)?;
        report.segments_dropped = dropped;
        drop(registrations);
        self.delete_superseded(old_files, target, &live, (req.wait, started), &mut report)?;
        Ok(report)
    }

    /// When the new base point is in the open segment past its first data page, seals the
    /// segment (an ordinary rotation, durable before anything else) so that its dead prefix,
    /// everything before the point, can be released: only a sealed segment, read through its
    /// footer and never scanned by recovery, may have a hole.
    fn seal_around(&mut self, target: u64) -> Result<()> {
        let unit = replog_format::manifest::RELEASE_UNIT_BYTES;
        let active = self.journal.active();
        let past_first_page = active
            .points
            .iter()
            .any(|p| p.lsn == target && p.record_offset / unit * unit > unit);
        if active.first_lsn <= target && past_first_page {
            self.journal.seal(&mut self.vault.manifest)?;
        }
        Ok(())
    }

    /// Commits the manifest after compaction and records in `report` which points went:
    /// removed (below the new base) or retired. Returns the segments it dropped.
    fn commit_compaction(
        &mut self,
        req: &CompactRequest,
        rolled: &[WrittenBase],
        report: &mut CompactReport,
    ) -> Result<Vec<u64>> {
        let offered = |s: &Self| -> Vec<u64> {
            let points = s.journal.points(&s.vault.manifest);
            points.iter().map(|p| p.point_id).collect()
        };
        let before = offered(self);
        let (manifest, dropped) = self.compacted_manifest(req, rolled);
        self.vault.commit(manifest)?;
        report.committed = true;
        report.base_lsn_after = req.base.1;
        let after = offered(self);
        let retired = &self.vault.manifest.lifecycle.retired;
        for id in before.into_iter().filter(|id| !after.contains(id)) {
            if retired.binary_search(&id).is_ok() {
                report.points_retired.push(id);
            } else {
                report.points_removed.push(id);
            }
        }
        Ok(dropped)
    }

    /// The files the committed compaction made superseded (old base generations, dropped
    /// segments), their bytes counted in `report`.
    fn superseded_files(
        &self,
        rolled: &[WrittenBase],
        dropped: &[u64],
        report: &mut CompactReport,
    ) -> Result<Vec<PathBuf>> {
        let (storage, dir) = (self.vault.storage.as_ref(), self.vault.dir());
        report.new_base_bytes = rolled.iter().map(|r| r.file_bytes).sum();
        let mut old_files = Vec::new();
        for r in rolled {
            let old = layout::base_path(dir, r.disk_id, r.generation - 1);
            report.old_base_bytes += file_len(storage, &old)?;
            old_files.push(old);
        }
        for id in dropped {
            let path = layout::segment_path(dir, *id);
            report.journal_bytes_dropped += file_len(storage, &path)?;
            old_files.push(path);
        }
        Ok(old_files)
    }

    /// Deletes the files the committed manifest no longer names and releases the dead prefix it
    /// marks, unless a live lease was taken against an older manifest (its snapshot may still
    /// read them): then waits for it as asked, or leaves them (in `report.deferred`; a later
    /// prune or writer open finishes).
    fn delete_superseded(
        &self,
        files: Vec<PathBuf>,
        target: u64,
        live: &[LiveLease],
        (wait, started): (LeaseWait, Instant),
        report: &mut CompactReport,
    ) -> Result<()> {
        let old_snapshot = |live: &[LiveLease]| live.iter().any(|l| l.snapshot_base_lsn() < target);
        let mut readers_of_old = old_snapshot(live);
        while readers_of_old {
            let LeaseWait::Wait(limit) = wait else {
                break;
            };
            if started.elapsed() >= limit {
                break;
            }
            std::thread::sleep(LEASE_POLL);
            readers_of_old = old_snapshot(&self.vault.live_leases()?.1);
        }
        if readers_of_old {
            report.deferred = files;
            let marked = self.vault.manifest.segments.iter();
            report.prefixes_deferred = marked
                .filter(|s| s.prefix_released)
                .map(|s| s.segment_id)
                .collect();
            return Ok(());
        }
        self.vault.remove_files(files.into_iter())?;
        let released = crate::files::release_prefixes(
            self.vault.storage.as_ref(),
            self.vault.dir(),
            &self.vault.manifest,
        )?;
        report.prefixes_released = released.segments;
        report.prefix_bytes_released = released.bytes;
        report.release_unsupported = released.unsupported;
        Ok(())
    }

    /// Holds the registration lock once no live lease is below `lsn`; `Err(description)` of the
    /// lease in the way when not waiting or the wait ran out.
    fn wait_for_leases(
        &self,
        lsn: u64,
        wait: LeaseWait,
        started: Instant,
        waited: &mut bool,
    ) -> Result<std::result::Result<(Registrations, Vec<LiveLease>), String>> {
        loop {
            let (registrations, live) = self.vault.live_leases()?;
            let Some(blocking) = live.iter().find(|l| l.lsn() < lsn) else {
                return Ok(Ok((registrations, live)));
            };
            let out_of_time = match wait {
                LeaseWait::Skip => true,
                LeaseWait::Wait(limit) => started.elapsed() >= limit,
            };
            if out_of_time {
                return Ok(Err(blocking.describe()));
            }
            drop(registrations);
            *waited = true;
            std::thread::sleep(LEASE_POLL);
        }
    }

    /// The manifest after compaction to `req.base`, and the segments it drops.
    fn compacted_manifest(
        &self,
        req: &CompactRequest,
        rolled: &[WrittenBase],
    ) -> (Manifest, Vec<u64>) {
        let (_, target) = req.base;
        let mut m = self.vault.manifest.clone();
        m.generation += 1;
        m.base_lsn = target;
        for r in rolled {
            let d = m
                .disks
                .iter_mut()
                .find(|d| d.disk_id == r.disk_id)
                .expect("rolled disks are listed");
            d.base_generation = r.generation;
            d.base_header_crc = r.header_crc;
        }
        let dropped: Vec<u64> = m
            .segments
            .iter()
            .filter(|s| s.sealed.is_some_and(|info| info.last_lsn <= target))
            .map(|s| s.segment_id)
            .collect();
        m.segments.retain(|s| !dropped.contains(&s.segment_id));
        m.points
            .retain(|p| p.lsn == target || !dropped.contains(&p.segment_id));
        // Dead ranges go with their segments, and those below the new base with the records
        // the base now holds (they lie in the dead prefix released below).
        m.dead_ranges
            .retain(|d| d.first_lsn > target && !dropped.contains(&d.segment_id));
        // The first segment left holds the new base point when it straddles it: everything
        // before the point's marker page is dead and is released after this commit.
        let released = m
            .segments
            .first()
            .filter(|s| s.sealed.is_some() && m.release_end(s.segment_id).is_some())
            .map(|s| s.segment_id);
        for seg in &mut m.segments {
            seg.prefix_released = Some(seg.segment_id) == released;
        }
        let open_points = &self.journal.active().points;
        let exists = |id: u64| {
            m.points.iter().any(|p| p.point.point_id == id)
                || open_points.iter().any(|p| p.point.point_id == id)
        };
        let mut retired: Vec<u64> = m
            .lifecycle
            .retired
            .iter()
            .chain(&req.retire)
            .copied()
            .collect();
        retired.sort_unstable();
        retired.dedup();
        retired.retain(|&id| exists(id));
        m.lifecycle.retired = retired;
        let pins: Vec<u64> = m
            .lifecycle
            .pins
            .iter()
            .copied()
            .filter(|&id| exists(id))
            .collect();
        m.lifecycle.pins = pins;
        (m, dropped)
    }

    /// Writes a new base generation of every disk that exists at `target`, as of `target`,
    /// through the one base writer; then syncs `bases/` once for all of them.
    fn roll_bases(
        &self,
        target: u64,
        opts: &replog_reader::ViewOptions,
    ) -> Result<Vec<WrittenBase>> {
        let dir = self.vault.dir();
        let read_err = |e: ReadError| rolling_error(e).in_file(dir);
        let vault =
            replog_reader::Vault::open(self.vault.storage.clone(), dir).map_err(read_err)?;
        let view = vault.view_at_lsn_with(target, opts).map_err(read_err)?;
        let mut rolled = Vec::with_capacity(view.disks().len());
        for disk in view.disks() {
            let spec = BaseSpec {
                disk_id: disk.disk_id(),
                generation: disk.entry().base_generation + 1,
                disk_bytes: disk.size(),
                base_lsn: target,
            };
            let block = self.vault.header.block_bytes as usize;
            let mut source = ViewSource {
                reader: disk.reader(),
                block,
                zero_block: zero_sum(block),
                dir,
            };
            rolled.push(self.bases.write(spec, &mut source)?);
        }
        self.bases.sync_dir()?;
        Ok(rolled)
    }
}

/// A reader's error while rolling a base forward: damage stays damage, anything else is I/O.
fn rolling_error(e: ReadError) -> WriteError {
    let kind = if e.kind() == ReadErrorKind::Damaged {
        WriteErrorKind::Damaged
    } else {
        WriteErrorKind::Io
    };
    WriteError::read(kind, Some("rolling the base forward"), e)
}

/// A disk as of the new base, read through the reader's view: every journal record and old
/// base chunk verified as it is read. A chunk that reads as zeros by the map alone (zero
/// pieces, and base ranges the old base stores as holes) is neither read nor checksummed: a
/// sparse disk of many TiB rolls forward at the cost of the chunks holding its data, not its
/// size.
struct ViewSource<'a> {
    reader: DiskReader<'a>,
    block: usize,
    /// The checksum entry of a whole zero block, computed once.
    zero_block: ChunkSum,
    dir: &'a std::path::Path,
}

/// The checksum entry of `len` zero bytes.
fn zero_sum(len: usize) -> ChunkSum {
    ChunkSum {
        crc: crc32fast::hash(&vec![0u8; len]),
        zero: true,
    }
}

impl BaseSource for ViewSource<'_> {
    fn fill(&mut self, at: u64, buf: &mut [u8]) -> Result<Vec<ChunkSum>> {
        // Only the chunks something non-zero may land in are read and checksummed: a window
        // of a scattered disk (a 64-byte piece every few MiB of a 10 TiB disk) costs its few
        // chunks, not 8 MiB of zeros read, copied and summed; a window that reads as zeros
        // costs no read at all. The other chunks keep the zero entry and are never written
        // (the base writer writes only non-zero chunks).
        let chunks = buf.len().div_ceil(self.block);
        let wanted = self.chunks_to_read(at, buf.len() as u64, chunks);
        let mut sums = Vec::with_capacity(chunks);
        let mut i = 0;
        while i < chunks {
            if !wanted[i] {
                sums.push(self.zero_sum_of(buf.len(), i));
                i += 1;
                continue;
            }
            let run = wanted[i..].iter().take_while(|w| **w).count();
            let (from, to) = (i * self.block, ((i + run) * self.block).min(buf.len()));
            let part = &mut buf[from..to];
            self.reader
                .read_at(at + from as u64, part)
                .map_err(|e| rolling_error(e).in_file(self.dir))?;
            sums.par_extend(part.par_chunks(self.block).map(|chunk| ChunkSum {
                crc: crc32fast::hash(chunk),
                zero: is_zero(chunk),
            }));
            i += run;
        }
        Ok(sums)
    }
}

impl ViewSource<'_> {
    /// The checksum entry of chunk `i` of a window of `len` bytes when it is all zero.
    fn zero_sum_of(&self, len: usize, i: usize) -> ChunkSum {
        let chunk = (len - i * self.block).min(self.block);
        if chunk == self.block {
            self.zero_block
        } else {
            zero_sum(chunk)
        }
    }

    /// Which of the window's `chunks` may hold a non-zero byte: those a journal piece covers,
    /// and those whose old base chunk is not stored as a hole. Any doubt (a piece or a table
    /// entry that cannot be read) says yes: the chunk is then read, and verified, like any
    /// other, so the error surfaces there.
    fn chunks_to_read(&mut self, at: u64, len: u64, chunks: usize) -> Vec<bool> {
        let block = self.block as u64;
        let end = at + len;
        let mut wanted = vec![false; chunks];
        let mut mark = |from: u64, to: u64| {
            let (a, b) = ((from - at) / block, (to - at).div_ceil(block));
            wanted[a as usize..b as usize].fill(true);
        };
        let mut bases = Vec::new();
        for piece in self.reader.disk().pieces(at, end) {
            match piece {
                Err(_) => {
                    mark(at, end);
                    return wanted;
                }
                Ok((start, piece)) => match piece.source {
                    Source::Zero => {}
                    Source::Record(_) => mark(start, piece.end.min(end)),
                    Source::Base => bases.push((start, piece.end.min(end))),
                },
            }
        }
        for (start, stop) in bases {
            let mut offset = start;
            while offset < stop {
                let chunk_end = match self.reader.base_hole_at(offset) {
                    Ok((true, chunk_end)) => chunk_end,
                    Ok((false, chunk_end)) => {
                        mark(offset, chunk_end.min(stop));
                        chunk_end
                    }
                    Err(_) => {
                        let chunk_end = (offset / block + 1) * block;
                        mark(offset, chunk_end.min(stop));
                        chunk_end
                    }
                };
                offset = chunk_end.min(stop).max(offset + 1);
            }
        }
        wanted
    }
}
