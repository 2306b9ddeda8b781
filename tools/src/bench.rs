//! `replog bench write`, in the spirit of `rbd bench`: writes through the real writer API into a
//! vault disk and reports MB/s, IOPS, recovery-point latency percentiles and peak memory.
//!
//! The payload comes from a pool filled before the clock starts (random bytes, zeros, or the
//! start of a file), so the figures measure replog, not the data generator.
//!
//! The writer's pipeline is configurable (`--in-flight`, `--buffer`, `--direct true|false`,
//! `--preallocate true|false`, `--batch`), and `--points-in-flight K` takes points with
//! `point_async`, waiting only when more than K are pending, so that group commit shows: a
//! point's latency is then from its request until the writer first reports it durable.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use replog_io::Storage;
use replog_writer::{Compression, PointKind, PointTicket, VaultSettings, Writer, WriterOptions};
use serde_json::json;

use crate::cli::{BenchWriteArgs, Pattern};
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
    pub options: WriterOptions,
    pub points_in_flight: usize,
    pub batch: usize,
    pub json: bool,
}

/// `replog bench write`, as parsed.
pub fn write_command(storage: Arc<dyn Storage>, a: BenchWriteArgs) -> CmdResult {
    let data = match a.data.as_str() {
        "random" => DataSource::Random,
        "zero" => DataSource::Zero,
        file => DataSource::File(file.into()),
    };
    let b = WriteBench {
        vault: a.vault,
        random: matches!(a.pattern, Pattern::Rand),
        block_bytes: a.block,
        total_bytes: a.total,
        point_every_bytes: a.point_every,
        disk_bytes: a.disk_size,
        compression: crate::commands::compression_of(a.compression),
        data,
        options: writer_options(a.in_flight, a.buffer, a.direct, a.preallocate),
        points_in_flight: a.points_in_flight,
        batch: a.batch,
        json: a.json,
    };
    write(storage, &b)
}

/// The writer options `bench write` was asked for; unset ones keep the writer's defaults.
fn writer_options(
    in_flight: usize,
    buffer_bytes: u64,
    direct: Option<bool>,
    preallocate: Option<bool>,
) -> WriterOptions {
    let defaults = WriterOptions::default();
    WriterOptions {
        buffers_in_flight: in_flight,
        buffer_bytes: usize::try_from(buffer_bytes).unwrap_or(usize::MAX),
        direct: direct.unwrap_or(defaults.direct),
        preallocate: preallocate.unwrap_or(defaults.preallocate),
    }
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
    w.set_options(b.options)?;
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
    let mut points = Points::default();
    let mut since_point = 0;
    let started = Instant::now();
    let mut batch: Vec<(u64, &[u8])> = Vec::with_capacity(b.batch.max(1));
    for i in 0..writes {
        let offset = if b.random {
            rng.gen_range(0..blocks_on_disk)
        } else {
            i % blocks_on_disk
        } * b.block_bytes;
        let at = (i as usize * block) % (data.len() - block + 1);
        batch.push((offset, &data[at..at + block]));
        since_point += b.block_bytes;
        let point_due = since_point >= b.point_every_bytes;
        if batch.len() >= b.batch.max(1) || point_due || i + 1 == writes {
            match batch[..] {
                [(offset, one)] => w.write(disk_id, offset, one)?,
                _ => w.write_many(disk_id, &batch)?,
            };
            batch.clear();
        }
        if point_due {
            points.take(&mut w, b.points_in_flight)?;
            since_point = 0;
        }
        points.collect(&mut w, false)?;
    }
    points.collect(&mut w, true)?;
    let io_note = w.io_note().map(str::to_owned);
    w.close()?;
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = points.latencies;
    latencies.sort_unstable();
    let bytes = writes * b.block_bytes;
    let (mb_per_s, iops) = (bytes as f64 / seconds / 1e6, writes as f64 / seconds);
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    let peak = peak_rss_bytes();
    let o = b.options;
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
            "buffers_in_flight": o.buffers_in_flight,
            "buffer_bytes": o.buffer_bytes,
            "direct": o.direct && io_note.is_none(),
            "io_note": io_note,
            "preallocate": o.preallocate,
            "points_in_flight": b.points_in_flight,
            "batch": b.batch,
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
        if let Some(note) = &io_note {
            println!("note: {note}");
        }
    }
    Ok(EXIT_OK)
}

/// Points requested and not yet seen durable, and the latencies of those that were.
#[derive(Default)]
struct Points {
    pending: VecDeque<(PointTicket, Instant)>,
    latencies: Vec<Duration>,
}

impl Points {
    /// Takes a point: waits for it when `in_flight` is 0, otherwise requests it and waits only
    /// for the oldest ones beyond `in_flight`.
    fn take(&mut self, w: &mut Writer, in_flight: usize) -> Result<(), Failure> {
        let t = Instant::now();
        if in_flight == 0 {
            w.point(PointKind::CrashConsistent, "")?;
            self.latencies.push(t.elapsed());
            return Ok(());
        }
        self.pending
            .push_back((w.point_async(PointKind::CrashConsistent, "")?, t));
        while self.pending.len() > in_flight {
            let (ticket, t) = self.pending.pop_front().expect("more than zero");
            w.wait_point(ticket)?;
            self.latencies.push(t.elapsed());
        }
        Ok(())
    }

    /// Records the pending points that are durable; with `wait`, waits for all of them.
    fn collect(&mut self, w: &mut Writer, wait: bool) -> Result<(), Failure> {
        while let Some((ticket, _)) = self.pending.front() {
            if !wait && !w.point_is_durable(ticket)? {
                break;
            }
            let (ticket, t) = self.pending.pop_front().expect("checked");
            w.wait_point(ticket)?;
            self.latencies.push(t.elapsed());
        }
        Ok(())
    }
}
