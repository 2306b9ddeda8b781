//! `replog bench write`, in the spirit of `rbd bench`: writes through the real writer API into a
//! vault disk and reports MB/s, IOPS, recovery-point latency percentiles and peak memory.
//!
//! The payload comes from a pool filled before the clock starts (random bytes, zeros, or the
//! start of a file), so the figures measure replog, not the data generator.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use replog_io::Storage;
use replog_writer::{Compression, PointKind, VaultSettings, Writer};
use serde_json::json;

use crate::output::{human_bytes, print_json};
use crate::{CmdResult, EXIT_OK, Failure};

/// Largest data pool held in memory.
const POOL_BYTES_MAX: usize = 16 << 20;

/// What `bench write` was asked to do.
#[derive(Clone, Debug)]
pub struct WriteBench {
    pub vault: PathBuf,
    pub random: bool,
    pub block_bytes: u64,
    pub total_bytes: u64,
    pub point_every_bytes: u64,
    pub disk_bytes: Option<u64>,
    pub compression: Compression,
    pub data: DataSource,
    pub json: bool,
}

/// Where the payload comes from.
#[derive(Clone, Debug)]
pub enum DataSource {
    Random,
    Zero,
    File(PathBuf),
}

fn pool(source: &DataSource, block: usize) -> Result<Vec<u8>, Failure> {
    let len = POOL_BYTES_MAX.max(block);
    Ok(match source {
        DataSource::Zero => vec![0; len],
        DataSource::Random => {
            let mut v = vec![0; len];
            SmallRng::seed_from_u64(7).fill_bytes(&mut v);
            v
        }
        DataSource::File(path) => {
            use std::io::Read;
            let f = std::fs::File::open(path)
                .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
            let mut v = Vec::with_capacity(len);
            f.take(len as u64)
                .read_to_end(&mut v)
                .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
            if v.len() < block {
                return Err(Failure::new(format!(
                    "{}: shorter than one block ({block} bytes)",
                    path.display()
                )));
            }
            v
        }
    })
}

/// Peak resident memory of this process, from `/proc/self/status` (VmHWM).
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

fn open_or_create(
    storage: Arc<dyn Storage>,
    b: &WriteBench,
) -> Result<(Writer, u32, u64), Failure> {
    let disk_bytes = b.disk_bytes.unwrap_or(b.total_bytes).max(b.block_bytes);
    let exists = storage.exists(&b.vault.join("VAULT")).unwrap_or(false);
    let mut w = if exists {
        crate::commands::open_writer(storage, &b.vault)?
    } else {
        let settings = VaultSettings {
            compression: b.compression,
            ..VaultSettings::default()
        };
        Writer::create(storage, &b.vault, settings)?
    };
    let disk = match w.disks().into_iter().find(|d| d.name == "bench") {
        Some(d) => d,
        None => w.add_disk("bench", disk_bytes)?,
    };
    if disk.disk_bytes < b.block_bytes {
        return Err(Failure::new(format!(
            "disk bench is smaller than one block of {} bytes",
            b.block_bytes
        )));
    }
    Ok((w, disk.disk_id, disk.disk_bytes))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// Runs the benchmark.
pub fn write(storage: Arc<dyn Storage>, b: &WriteBench) -> CmdResult {
    let backend = storage.kind().name();
    let block = usize::try_from(b.block_bytes).map_err(|_| Failure::new("block size too large"))?;
    let data = pool(&b.data, block)?;
    let (mut w, disk_id, disk_bytes) = open_or_create(storage, b)?;
    let blocks_on_disk = disk_bytes / b.block_bytes;
    let writes = b.total_bytes / b.block_bytes;
    let mut rng = SmallRng::seed_from_u64(11);
    let mut latencies = Vec::new();
    let mut since_point = 0;
    let started = Instant::now();
    for i in 0..writes {
        let offset = if b.random {
            rng.gen_range(0..blocks_on_disk)
        } else {
            i % blocks_on_disk
        } * b.block_bytes;
        let at = (i as usize * block) % (data.len() - block + 1);
        w.write(disk_id, offset, &data[at..at + block])?;
        since_point += b.block_bytes;
        if since_point >= b.point_every_bytes {
            let t = Instant::now();
            w.point(PointKind::CrashConsistent, "")?;
            latencies.push(t.elapsed());
            since_point = 0;
        }
    }
    w.close()?;
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let bytes = writes * b.block_bytes;
    let (mb_per_s, iops) = (bytes as f64 / seconds / 1e6, writes as f64 / seconds);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let peak = peak_rss_bytes();
    if b.json {
        print_json(&json!({
            "backend": backend,
            "pattern": if b.random { "rand" } else { "seq" },
            "block_bytes": b.block_bytes,
            "bytes": bytes,
            "writes": writes,
            "points": latencies.len(),
            "seconds": seconds,
            "mb_per_s": mb_per_s,
            "iops": iops,
            "point_latency_us_p50": p50,
            "point_latency_us_p99": p99,
            "peak_rss_bytes": peak,
        }));
    } else {
        println!(
            "{} in {writes} writes of {} ({}, {backend}): {mb_per_s:.0} MB/s, {iops:.0} IOPS in {seconds:.2}s; {} points, latency p50 {:.0} us, p99 {:.0} us; peak memory {}",
            human_bytes(bytes),
            human_bytes(b.block_bytes),
            if b.random { "random" } else { "sequential" },
            latencies.len(),
            p50,
            p99,
            human_bytes(peak)
        );
    }
    Ok(EXIT_OK)
}
