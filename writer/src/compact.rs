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
//!    verified as it is read), in windows of [`WINDOW_BYTES`]; all-zero blocks stay holes. Data,
//!    table pages, header, one data sync each; then `bases/` synced. No manifest names these
//!    files yet, so a crash leaves only leftovers that recovery removes.
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
//! base, as for a failover), one window of [`WINDOW_BYTES`] and one table page.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use replog_format::base::{
    BASE_HEADER_BYTES, BaseHeader, ChunkSum, TABLE_ENTRIES_PER_PAGE, encode_table_page,
    table_crc_update,
};
use replog_format::layout;
use replog_format::manifest::Manifest;
use replog_io::{File, OpenMode, WriteAt};
use replog_reader::{DiskView, LiveLease, Registrations};

use crate::error::{Result, WriteError, WriteErrorKind};
use crate::writer::Writer;

/// Bytes of a disk read, checksummed and written at a time while rolling a base forward.
pub const WINDOW_BYTES: usize = 8 << 20;
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
}

impl Writer {
    /// Runs a compaction; any failure after files were written poisons the writer (reopening
    /// the vault recovers and removes the leftovers).
    pub(crate) fn compact(&mut self, req: &CompactRequest) -> Result<CompactReport> {
        self.check_poison()?;
        self.check_not_migrated()?;
        self.flush(true)?;
        let result = self.compact_inner(req);
        if let Err(e) = &result {
            self.poisoned = Some(e.to_string());
        }
        result
    }

    fn compact_inner(&mut self, req: &CompactRequest) -> Result<CompactReport> {
        let (_, target) = req.base;
        let mut report = CompactReport {
            base_lsn_before: self.manifest.base_lsn,
            base_lsn_after: self.manifest.base_lsn,
            ..CompactReport::default()
        };
        assert!(
            target >= self.manifest.base_lsn,
            "compaction never moves back"
        );
        let started = Instant::now();
        let mut waited = false;
        match self.wait_for_leases(target, req.wait, started, &mut waited)? {
            Ok(_) => {}
            Err(blocking) => {
                report.lease = LeaseOutcome::Skipped { blocking };
                return Ok(report);
            }
        }
        let rolled = if target > self.manifest.base_lsn {
            self.roll_bases(target)?
        } else {
            Vec::new()
        };
        let (registrations, live) =
            match self.wait_for_leases(target, req.wait, started, &mut waited)? {
                Ok(held) => held,
                Err(blocking) => {
                    self.remove_files(rolled.iter().map(|r| r.path.clone()))?;
                    report.lease = LeaseOutcome::Skipped { blocking };
                    return Ok(report);
                }
            };
        if waited {
            report.lease = LeaseOutcome::Waited {
                waited_ms: started.elapsed().as_millis() as u64,
            };
        }
        let before: Vec<u64> = self.points().iter().map(|p| p.point_id).collect();
        let (manifest, dropped) = self.compacted_manifest(req, &rolled);
        crate::manifest_io::store(self.storage.as_ref(), &self.dir, &manifest)?;
        self.manifest = manifest;
        report.committed = true;
        report.base_lsn_after = target;
        let after: Vec<u64> = self.points().iter().map(|p| p.point_id).collect();
        let retired = &self.manifest.lifecycle.retired;
        for id in before.into_iter().filter(|id| !after.contains(id)) {
            if retired.binary_search(&id).is_ok() {
                report.points_retired.push(id);
            } else {
                report.points_removed.push(id);
            }
        }
        report.new_base_bytes = rolled.iter().map(|r| r.file_bytes).sum();
        let mut old_files = Vec::new();
        for r in &rolled {
            let old = layout::base_path(&self.dir, r.disk_id, r.generation - 1);
            report.old_base_bytes += self.file_len(&old)?;
            old_files.push(old);
        }
        for id in &dropped {
            let path = layout::segment_path(&self.dir, *id);
            report.journal_bytes_dropped += self.file_len(&path)?;
            old_files.push(path);
        }
        report.segments_dropped = dropped;
        drop(registrations);
        report.deferred = self.delete_superseded(old_files, target, &live, req.wait, started)?;
        Ok(report)
    }

    /// Deletes the files the committed manifest no longer names, unless a live lease was taken
    /// against an older manifest (its snapshot may still read them): then waits for it as asked,
    /// or leaves them and returns them.
    fn delete_superseded(
        &self,
        files: Vec<PathBuf>,
        target: u64,
        live: &[LiveLease],
        wait: LeaseWait,
        started: Instant,
    ) -> Result<Vec<PathBuf>> {
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
            readers_of_old = old_snapshot(&self.live_leases()?.1);
        }
        if readers_of_old {
            return Ok(files);
        }
        self.remove_files(files.into_iter())?;
        Ok(Vec::new())
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
            let (registrations, live) = self.live_leases()?;
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

    /// The registration lock, held exclusive, and the live leases.
    pub(crate) fn live_leases(&self) -> Result<(Registrations, Vec<LiveLease>)> {
        let registrations = Registrations::lock(self.storage.as_ref(), &self.dir, self.seed)
            .map_err(|e| WriteError::new(WriteErrorKind::Io, e.to_string()))?;
        let live = registrations
            .live()
            .map_err(|e| WriteError::new(WriteErrorKind::Io, e.to_string()))?;
        Ok((registrations, live))
    }

    /// The manifest after compaction to `req.base`, and the segments it drops.
    fn compacted_manifest(&self, req: &CompactRequest, rolled: &[Rolled]) -> (Manifest, Vec<u64>) {
        let (_, target) = req.base;
        let mut m = self.manifest.clone();
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
        let exists = |id: u64| {
            m.points.iter().any(|p| p.point.point_id == id)
                || self.active.points.iter().any(|p| p.point.point_id == id)
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

    /// Writes a new base generation of every disk that exists at `target`, as of `target`.
    fn roll_bases(&self, target: u64) -> Result<Vec<Rolled>> {
        let read_err = |e: replog_reader::ReadError| {
            let kind = if e.kind() == replog_reader::ReadErrorKind::Damaged {
                WriteErrorKind::Damaged
            } else {
                WriteErrorKind::Io
            };
            WriteError::new(
                kind,
                format!("{}: rolling the base forward: {e}", self.dir.display()),
            )
        };
        let vault =
            replog_reader::Vault::open(self.storage.clone(), &self.dir).map_err(read_err)?;
        let view = vault.view_at_lsn(target).map_err(read_err)?;
        let mut rolled = Vec::with_capacity(view.disks().len());
        for disk in view.disks() {
            let generation = disk.entry().base_generation + 1;
            rolled.push(self.roll_base(disk, generation, target, &read_err)?);
        }
        let bases = self.dir.join(layout::BASES_DIR);
        self.storage
            .sync_dir(&bases)
            .map_err(|e| WriteError::io(&bases, None, "syncing the directory", e))?;
        Ok(rolled)
    }

    fn roll_base(
        &self,
        disk: &DiskView,
        generation: u64,
        target: u64,
        read_err: &dyn Fn(replog_reader::ReadError) -> WriteError,
    ) -> Result<Rolled> {
        let path = layout::base_path(&self.dir, disk.disk_id(), generation);
        let file = self
            .storage
            .open(&path, OpenMode::CreateTruncate)
            .map_err(|e| WriteError::io(&path, None, "creating", e))?;
        let mut header = BaseHeader {
            vault_id: self.header.vault_id,
            disk_id: disk.disk_id(),
            block_bytes: self.header.block_bytes,
            generation,
            disk_bytes: disk.size(),
            base_lsn: target,
            table_crc: self.seed,
        };
        file.set_len(header.file_bytes())
            .map_err(|e| WriteError::io(&path, None, "sizing", e))?;
        let block = self.header.block_bytes as usize;
        let mut table = TableWriter {
            file: file.as_ref(),
            path: &path,
            entries: Vec::with_capacity(TABLE_ENTRIES_PER_PAGE),
            page_index: 0,
            seed: self.seed,
        };
        let mut reader = disk.reader();
        let mut window = vec![0u8; WINDOW_BYTES];
        let mut at = 0u64;
        while at < disk.size() {
            let len = (disk.size() - at).min(WINDOW_BYTES as u64) as usize;
            let buf = &mut window[..len];
            reader.read_at(at, buf).map_err(read_err)?;
            let mut writes = Vec::new();
            for (i, chunk) in buf.chunks(block).enumerate() {
                let zero = crate::base::is_zero(chunk);
                if !zero {
                    writes.push(WriteAt {
                        offset: header.data_offset() + at + (i * block) as u64,
                        data: chunk,
                    });
                }
                table.push(
                    ChunkSum {
                        crc: crc32fast::hash(chunk),
                        zero,
                    },
                    &mut header,
                )?;
            }
            file.write_batch(&writes, false).map_err(|e| {
                WriteError::io(&path, Some(header.data_offset() + at), "writing", e)
            })?;
            at += len as u64;
        }
        table.finish(&mut header)?;
        let head = header.encode(self.seed);
        file.write_batch(
            &[WriteAt {
                offset: 0,
                data: &head,
            }],
            true,
        )
        .map_err(|e| WriteError::io(&path, Some(0), "writing and syncing", e))?;
        Ok(Rolled {
            disk_id: disk.disk_id(),
            generation,
            header_crc: u32::from_le_bytes(
                head[BASE_HEADER_BYTES - 4..].try_into().expect("4 bytes"),
            ),
            file_bytes: header.file_bytes(),
            path,
        })
    }

    fn file_len(&self, path: &std::path::Path) -> Result<u64> {
        match self.storage.open(path, OpenMode::Read) {
            Ok(f) => f
                .len()
                .map_err(|e| WriteError::io(path, None, "measuring", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(WriteError::io(path, None, "opening", e)),
        }
    }

    /// Removes files (missing ones are fine) and syncs each directory touched.
    pub(crate) fn remove_files(&self, paths: impl Iterator<Item = PathBuf>) -> Result<()> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for path in paths {
            match self.storage.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(WriteError::io(&path, None, "removing", e)),
            }
            let dir = path.parent().expect("vault files live in directories");
            if !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_path_buf());
            }
        }
        for dir in dirs {
            self.storage
                .sync_dir(&dir)
                .map_err(|e| WriteError::io(&dir, None, "syncing the directory", e))?;
        }
        Ok(())
    }
}

/// A new base generation written and synced, not yet committed.
#[derive(Clone, Debug)]
struct Rolled {
    disk_id: u32,
    generation: u64,
    header_crc: u32,
    file_bytes: u64,
    path: PathBuf,
}

/// Collects table entries and writes each page when full.
struct TableWriter<'a> {
    file: &'a dyn File,
    path: &'a std::path::Path,
    entries: Vec<ChunkSum>,
    page_index: u32,
    seed: u32,
}

impl TableWriter<'_> {
    fn push(&mut self, sum: ChunkSum, header: &mut BaseHeader) -> Result<()> {
        self.entries.push(sum);
        if self.entries.len() == TABLE_ENTRIES_PER_PAGE {
            self.write_page(header)?;
        }
        Ok(())
    }

    fn finish(&mut self, header: &mut BaseHeader) -> Result<()> {
        if !self.entries.is_empty() {
            self.write_page(header)?;
        }
        Ok(())
    }

    fn write_page(&mut self, header: &mut BaseHeader) -> Result<()> {
        let page = encode_table_page(self.page_index, &self.entries, self.seed);
        let offset = header.table_offset() + u64::from(self.page_index) * page.len() as u64;
        self.file.write_all_at(&page, offset).map_err(|e| {
            WriteError::io(self.path, Some(offset), "writing the checksum table", e)
        })?;
        header.table_crc = table_crc_update(header.table_crc, &page);
        self.page_index += 1;
        self.entries.clear();
        Ok(())
    }
}
