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

use std::path::PathBuf;
use std::sync::Arc;

use replog_io::Storage;
use replog_vault::{DataSource, Payload, WriteBenchReport, WriteLoad, run_write_bench};
use replog_writer::{Compression, VaultSettings, Writer, WriterOptions};
use serde_json::json;

use crate::cli::{BenchWriteArgs, Pattern};
use crate::output::{human_bytes, print_json};
use crate::{CmdResult, EXIT_OK, Failure};

/// What `bench write` was asked to do.
#[derive(Clone, Debug)]
pub struct WriteBench {
    pub vault: PathBuf,
    pub disk_bytes: Option<u64>,
    pub compression: Compression,
    pub options: WriterOptions,
    pub load: WriteLoad,
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
        disk_bytes: a.disk_size,
        compression: crate::context::compression_of(a.compression),
        options: writer_options(a.in_flight, a.buffer, a.direct, a.preallocate),
        load: WriteLoad {
            random: matches!(a.pattern, Pattern::Rand),
            block_bytes: a.block,
            total_bytes: a.total,
            point_every_bytes: a.point_every,
            data,
            points_in_flight: a.points_in_flight,
            batch: a.batch,
        },
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
    let disk_bytes = b
        .disk_bytes
        .unwrap_or(b.load.total_bytes)
        .max(b.load.block_bytes);
    let exists = storage.exists(&b.vault.join("VAULT")).unwrap_or(false);
    let mut w = if exists {
        crate::context::open_writer(storage, &b.vault)?
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
    if disk.disk_bytes < b.load.block_bytes {
        return Err(Failure::new(format!(
            "disk bench is smaller than one block of {} bytes",
            b.load.block_bytes
        )));
    }
    Ok((w, disk.disk_id, disk.disk_bytes))
}

/// Runs the benchmark.
pub fn write(storage: Arc<dyn Storage>, b: &WriteBench) -> CmdResult {
    let backend = storage.kind().name();
    let payload = Payload::new(&b.load.data, b.load.block_bytes)?;
    let (w, disk_id, disk_bytes) = open_or_create(storage, b)?;
    let report = run_write_bench(w, disk_id, disk_bytes, &b.load, &payload)?;
    if b.json {
        print_json(&report_json(b, backend, &report));
        return Ok(EXIT_OK);
    }
    let (bytes, writes, seconds) = (report.bytes, report.writes, report.seconds);
    println!(
        "{} in {writes} writes of {} ({}, {backend}): {:.0} MB/s, {:.0} IOPS in {seconds:.2}s; {} points, latency p50 {:.0} us, p99 {:.0} us; peak memory {}",
        human_bytes(bytes),
        human_bytes(b.load.block_bytes),
        if b.load.random {
            "random"
        } else {
            "sequential"
        },
        bytes as f64 / seconds / 1e6,
        writes as f64 / seconds,
        report.point_latencies.len(),
        report.latency_us(0.5),
        report.latency_us(0.99),
        human_bytes(peak_rss_bytes())
    );
    if let Some(note) = &report.io_note {
        println!("note: {note}");
    }
    Ok(EXIT_OK)
}

fn report_json(b: &WriteBench, backend: &str, r: &WriteBenchReport) -> serde_json::Value {
    let o = b.options;
    json!({
        "backend": backend,
        "pattern": if b.load.random { "rand" } else { "seq" },
        "block_bytes": b.load.block_bytes,
        "bytes": r.bytes,
        "writes": r.writes,
        "points": r.point_latencies.len(),
        "seconds": r.seconds,
        "mb_per_s": r.bytes as f64 / r.seconds / 1e6,
        "iops": r.writes as f64 / r.seconds,
        "point_latency_us_p50": r.latency_us(0.5),
        "point_latency_us_p99": r.latency_us(0.99),
        "peak_rss_bytes": peak_rss_bytes(),
        "buffers_in_flight": o.buffers_in_flight,
        "buffer_bytes": o.buffer_bytes,
        "direct": o.direct && r.io_note.is_none(),
        "io_note": r.io_note,
        "preallocate": o.preallocate,
        "points_in_flight": b.load.points_in_flight,
        "batch": b.load.batch,
    })
}
