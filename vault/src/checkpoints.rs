//! Checkpoint indexes as library calls: one written on request, one kept current after the
//! commands that journal, and the resolve benchmark, which measures what they save: the time to
//! the first byte of a failover.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use replog_io::Storage;
use replog_reader::ViewOptions;
use replog_reader::checkpoint::{self, CHECKPOINT_EVERY_LSNS, CheckpointInfo};
use replog_reader::extent_map::Source;
use serde::Serialize;

use crate::error::{Result, VaultError, VaultErrorKind};
use crate::location::Vault;

impl Vault {
    /// Writes a checkpoint index at the end of the newest sealed segment that ends at or before
    /// `at_lsn` (the newest sealed segment without it).
    pub fn write_checkpoint(&self, at_lsn: Option<u64>) -> Result<CheckpointInfo> {
        let v = self.snapshot()?;
        let ends = v.sealed_segment_ends();
        let Some(lsn) = ends
            .iter()
            .copied()
            .filter(|&e| at_lsn.is_none_or(|at| e <= at))
            .max()
        else {
            return Err(VaultError::new(
                VaultErrorKind::InvalidRequest,
                format!(
                    "{}: no sealed journal segment ends{} at or after the base; nothing to index",
                    self.dir().display(),
                    at_lsn.map_or(String::new(), |at| format!(" at or before LSN {at}"))
                ),
            ));
        };
        Ok(checkpoint::write(&v, lsn)?)
    }
}

/// Writes a checkpoint index of the vault in `dir` if one is due: enough was sealed since the
/// last one that a failover would replay a long journal.
pub fn maintain_checkpoint(storage: Arc<dyn Storage>, dir: &Path) -> Result<()> {
    let v = replog_reader::Vault::open(storage, dir)?;
    checkpoint::maintain(&v, CHECKPOINT_EVERY_LSNS)?;
    Ok(())
}

/// How long opening a vault and resolving its points took.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResolveReport {
    /// The vault's last LSN.
    pub records: u64,
    /// Its points.
    pub points: usize,
    /// Milliseconds to open it.
    pub open_ms: f64,
    /// The newest, the middle and the oldest point.
    pub resolve: Vec<ResolvedPoint>,
    /// Lookups in the checkpoint the newest point started from, searched in place.
    pub lookup: Option<LookupReport>,
    /// Peak resident memory of this process after resolving them.
    pub peak_rss_bytes: u64,
}

/// Random lookups in a checkpoint opened in place, without loading it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LookupReport {
    /// The checkpoint's LSN.
    pub checkpoint_lsn: u64,
    /// Its pieces.
    pub pieces: u64,
    /// Milliseconds to open it (header and directory).
    pub open_ms: f64,
    /// Microseconds of the first lookup after opening: the time to the first piece.
    pub first_lookup_us: f64,
    /// Lookups timed after the first.
    pub lookups: u64,
    /// Their mean, in microseconds.
    pub mean_lookup_us: f64,
    /// Blocks read (and verified) by them all.
    pub block_reads: u64,
    /// Block accesses the cache served.
    pub cache_hits: u64,
    /// Bytes the cache held at the end (at most 4 MiB).
    pub cache_bytes: usize,
}

/// Lookups timed after the first.
const LOOKUPS: u64 = 100_000;

/// Opens checkpoint `lsn` in place and looks up random offsets of its most fragmented disk.
fn lookup_bench(v: &replog_reader::Vault, lsn: u64) -> Result<LookupReport> {
    let started = Instant::now();
    let index = checkpoint::CheckpointIndex::open_in(v, lsn)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let Some(disk) = index.disks().iter().max_by_key(|d| d.piece_count).copied() else {
        return Err(VaultError::new(
            VaultErrorKind::InvalidRequest,
            format!("checkpoint at LSN {lsn} holds no disk"),
        ));
    };
    // A fixed xorshift sequence: the same offsets every run.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut offset = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % disk.disk_bytes.max(1)
    };
    let started = Instant::now();
    index.lookup(disk.disk_id, offset())?;
    let first_lookup_us = started.elapsed().as_secs_f64() * 1e6;
    let started = Instant::now();
    for _ in 0..LOOKUPS {
        index.lookup(disk.disk_id, offset())?;
    }
    let mean_lookup_us = started.elapsed().as_secs_f64() * 1e6 / LOOKUPS as f64;
    let stats = index.cache_stats();
    Ok(LookupReport {
        checkpoint_lsn: lsn,
        pieces: index.header().piece_count,
        open_ms,
        first_lookup_us,
        lookups: LOOKUPS,
        mean_lookup_us,
        block_reads: stats.reads,
        cache_hits: stats.hits,
        cache_bytes: stats.bytes,
    })
}

/// One point resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResolvedPoint {
    /// Which: `newest`, `middle` or `oldest`.
    pub point: &'static str,
    /// Its id.
    pub point_id: u64,
    /// Its LSN.
    pub lsn: u64,
    /// Milliseconds to resolve its extent maps.
    pub resolve_ms: f64,
    /// The checkpoint index resolving started from, if any.
    pub checkpoint_lsn: Option<u64>,
    /// Pieces that do not read from the base, over all disks.
    pub pieces: usize,
    /// `in-memory` or `layered` ([`replog_reader::ViewMode`]).
    pub mode: &'static str,
    /// Heap bytes of its extent maps ([`replog_reader::PointView::memory_bytes`]).
    pub memory_bytes: u64,
}

/// Opens the vault in `dir` and resolves its newest, middle and oldest point as `opts` says,
/// timing each.
pub fn resolve_bench(
    storage: Arc<dyn Storage>,
    dir: &Path,
    opts: &ViewOptions,
) -> Result<ResolveReport> {
    let started = Instant::now();
    let v = replog_reader::Vault::open(storage, dir)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let points = v.points();
    if points.is_empty() {
        return Err(VaultError::new(
            VaultErrorKind::NoPoints,
            format!(
                "{}: the vault has no recovery point to resolve",
                dir.display()
            ),
        ));
    }
    let picks = [
        ("newest", points.len() - 1),
        ("middle", points.len() / 2),
        ("oldest", 0),
    ];
    let mut resolve = Vec::new();
    for (name, index) in picks {
        let p = &points[index];
        let started = Instant::now();
        let view = v.view_with(p, opts)?;
        let resolve_ms = started.elapsed().as_secs_f64() * 1e3;
        let mut pieces = 0;
        for disk in view.disks() {
            for piece in disk.pieces(0, disk.size()) {
                pieces += usize::from(piece?.1.source != Source::Base);
            }
        }
        resolve.push(ResolvedPoint {
            point: name,
            point_id: p.point_id,
            lsn: p.lsn,
            resolve_ms,
            checkpoint_lsn: view.checkpoint_lsn(),
            pieces,
            mode: view.mode().name(),
            memory_bytes: view.memory_bytes(),
        });
    }
    let lookup = match resolve[0].checkpoint_lsn {
        Some(lsn) => Some(lookup_bench(&v, lsn)?),
        None => None,
    };
    Ok(ResolveReport {
        records: v.last_lsn(),
        points: points.len(),
        open_ms,
        resolve,
        lookup,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Peak resident memory of this process, from `/proc/self/status` (VmHWM); 0 where it cannot
/// be read.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// What `replog bench read` measured: a failover's read pass of one point, nothing written.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReadBenchReport {
    /// The point's id.
    pub point_id: u64,
    /// Its LSN.
    pub lsn: u64,
    /// Milliseconds to open the vault and resolve the point's view (the time to its first byte).
    pub resolve_ms: f64,
    /// `in-memory` or `layered` ([`replog_reader::ViewMode`]).
    pub mode: &'static str,
    /// Heap bytes of the view's extent maps.
    pub memory_bytes: u64,
    /// Seconds to read every byte through the view, verified and summed, after resolving.
    pub read_seconds: f64,
    /// Apparent bytes over all disks.
    pub disk_bytes: u64,
    /// Bytes of data read (what a failover would write).
    pub data_bytes: u64,
    /// Journal pieces set aside and read in journal order.
    pub journal_order_pieces: u64,
    /// Peak resident memory of this process at the end.
    pub peak_rss_bytes: u64,
}

/// Opens the vault in `dir`, resolves the point `choice` names as `opts` says, and reads every
/// byte of it as a failover would ([`replog_reader::read_pass`]), writing nothing.
pub fn read_bench(
    storage: Arc<dyn Storage>,
    dir: &Path,
    choice: &crate::PointChoice,
    opts: &ViewOptions,
    read: &replog_reader::ReadPassOptions,
) -> Result<ReadBenchReport> {
    let started = Instant::now();
    let v = replog_reader::Vault::open(storage, dir)?;
    let p = crate::choose(&v, &dir.display().to_string(), choice)?;
    let view = v.view_with(p, opts)?;
    let resolve_ms = started.elapsed().as_secs_f64() * 1e3;
    let started = Instant::now();
    let read = replog_reader::read_pass(&view, read)?;
    Ok(ReadBenchReport {
        point_id: p.point_id,
        lsn: p.lsn,
        resolve_ms,
        mode: view.mode().name(),
        memory_bytes: view.memory_bytes(),
        read_seconds: started.elapsed().as_secs_f64(),
        disk_bytes: read.disk_bytes,
        data_bytes: read.data_bytes,
        journal_order_pieces: read.journal_order_pieces,
        peak_rss_bytes: peak_rss_bytes(),
    })
}
