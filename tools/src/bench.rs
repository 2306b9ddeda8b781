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

use std::sync::Arc;

use replog_io::Storage;
use replog_vault::{
    DataSource, Payload, WriteBenchReport, WriteLoad, open_bench_disk, peak_rss_bytes,
    run_write_bench,
};
use replog_writer::WriterOptions;
use serde_json::json;

use crate::cli::{BenchWriteArgs, Pattern};
use crate::context::{compression_of, reported};
use crate::output::{human_bytes, print_json};
use crate::{CmdResult, EXIT_OK};

/// `replog bench write`, as parsed.
pub fn write_command(storage: Arc<dyn Storage>, a: BenchWriteArgs) -> CmdResult {
    let load = WriteLoad {
        random: matches!(a.pattern, Pattern::Rand),
        block_bytes: a.block,
        total_bytes: a.total,
        point_every_bytes: a.point_every,
        data: match a.data.as_str() {
            "random" => DataSource::Random,
            "zero" => DataSource::Zero,
            file => DataSource::File(file.into()),
        },
        points_in_flight: a.points_in_flight,
        batch: a.batch,
    };
    // Unset options keep the writer's defaults.
    let defaults = WriterOptions::default();
    let options = WriterOptions {
        buffers_in_flight: a.in_flight,
        buffer_bytes: usize::try_from(a.buffer).unwrap_or(usize::MAX),
        direct: a.direct.unwrap_or(defaults.direct),
        preallocate: a.preallocate.unwrap_or(defaults.preallocate),
    };
    let backend = storage.kind().name();
    let payload = Payload::new(&load.data, load.block_bytes)?;
    let disk_bytes = a
        .disk_size
        .unwrap_or(load.total_bytes)
        .max(load.block_bytes);
    let compression = compression_of(a.compression);
    let (w, disk) = open_bench_disk(
        storage,
        &a.vault,
        compression,
        disk_bytes,
        options,
        reported,
    )?;
    let report = run_write_bench(w, disk.disk_id, disk.disk_bytes, &load, &payload)?;
    if a.json {
        print_json(&report_json(&load, options, backend, &report));
        return Ok(EXIT_OK);
    }
    let (bytes, writes, seconds) = (report.bytes, report.writes, report.seconds);
    println!(
        "{} in {writes} writes of {} ({}, {backend}): {:.0} MB/s, {:.0} IOPS in {seconds:.2}s; {} points, latency p50 {:.0} us, p99 {:.0} us; peak memory {}",
        human_bytes(bytes),
        human_bytes(load.block_bytes),
        if load.random { "random" } else { "sequential" },
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

fn report_json(
    load: &WriteLoad,
    o: WriterOptions,
    backend: &str,
    r: &WriteBenchReport,
) -> serde_json::Value {
    json!({
        "backend": backend,
        "pattern": if load.random { "rand" } else { "seq" },
        "block_bytes": load.block_bytes,
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
        "points_in_flight": load.points_in_flight,
        "batch": load.batch,
    })
}
