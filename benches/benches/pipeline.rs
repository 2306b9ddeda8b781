//! The writer's ingest pipeline, beyond the single-record costs `format.rs` measures:
//!
//! - `encode_payload`: adaptive LZ4 of a 1 MiB payload (probe first) against always attempting
//!   the whole block, on random and compressible data: what a failed attempt costs.
//! - `seal_8x1MiB`: sealing (CRC over header and payload) eight 1 MiB records one after the
//!   other, and in parallel with rayon as `write_many` does.
//! - `stage_1MiB`: copying a sealed record into an aligned staging buffer (`IoBuf`).
//! - `writer_16MiB`: `Writer::write` of 16 x 1 MiB against one `write_many`, on the simulator
//!   (no disk), with compression off and on: framing, checksums and compression end to end.
//!
//! Run with `cargo bench -p replog-benches --bench pipeline`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;
use replog_benches::{compressible_bytes, random_bytes};
use replog_format::record::{RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use replog_format::{VaultId, vault_seed};
use replog_io::IoBuf;
use replog_io::sim::SimStorage;
use replog_writer::{Compression, FLUSH_BYTES, VaultSettings, Writer, encode_payload};

const VAULT: VaultId = [0x5A; 16];
const MIB: usize = 1 << 20;

fn header(lsn: u64, len: usize) -> RecordHeader {
    RecordHeader {
        crc: 0,
        kind: RecordKind::Write,
        flags: 0,
        lsn,
        segment_id: 1,
        segment_offset: 4096 + (lsn - 1) * (len + RECORD_HEADER_BYTES) as u64,
        synced_upto: 4096,
        disk_id: 1,
        stored_len: len as u32,
        disk_offset: lsn * len as u64,
        length: len as u64,
    }
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_payload_1MiB");
    group.throughput(Throughput::Bytes(MIB as u64));
    for (name, data) in [
        ("random", random_bytes(MIB, 3)),
        ("compressible", compressible_bytes(MIB)),
    ] {
        group.bench_with_input(BenchmarkId::new("adaptive", name), &data, |b, data| {
            b.iter(|| encode_payload(Compression::Lz4, black_box(data)).1);
        });
        group.bench_with_input(BenchmarkId::new("whole_attempt", name), &data, |b, data| {
            b.iter(|| lz4_flex::block::compress(black_box(data)).len());
        });
    }
    group.finish();
}

fn seal(c: &mut Criterion) {
    let seed = vault_seed(&VAULT);
    let payloads: Vec<Vec<u8>> = (0..8).map(|i| random_bytes(MIB, i + 10)).collect();
    let mut group = c.benchmark_group("seal_8x1MiB");
    group.throughput(Throughput::Bytes(8 * MIB as u64));
    group.bench_function("sequential", |b| {
        b.iter(|| {
            payloads
                .iter()
                .enumerate()
                .map(|(i, p)| header(i as u64 + 1, MIB).seal(seed, black_box(p))[0])
                .fold(0u8, |a, x| a ^ x)
        });
    });
    group.bench_function("rayon", |b| {
        b.iter(|| {
            payloads
                .par_iter()
                .enumerate()
                .map(|(i, p)| header(i as u64 + 1, MIB).seal(seed, black_box(p))[0])
                .reduce(|| 0u8, |a, x| a ^ x)
        });
    });
    group.finish();
}

fn stage(c: &mut Criterion) {
    let payload = random_bytes(MIB, 5);
    let head = header(1, MIB).seal(vault_seed(&VAULT), &payload);
    let mut buf = IoBuf::with_capacity(FLUSH_BYTES + 2 * MIB);
    let mut group = c.benchmark_group("stage_1MiB");
    group.throughput(Throughput::Bytes(MIB as u64));
    group.bench_function("into_iobuf", |b| {
        b.iter(|| {
            if buf.len() + MIB + RECORD_HEADER_BYTES > buf.capacity() {
                buf.clear();
            }
            buf.extend_from_slice(&head);
            buf.extend_from_slice(black_box(&payload));
            buf.len()
        });
    });
    group.finish();
}

/// A fresh simulated vault with one 64 MiB disk.
fn sim_writer(compression: Compression) -> Writer {
    let sim = SimStorage::new(1);
    let settings = VaultSettings {
        compression,
        ..VaultSettings::default()
    };
    let mut w = Writer::create(sim as Arc<_>, Path::new("/v"), settings).expect("created");
    w.add_disk("d", 64 << 20).expect("added");
    w
}

fn writer(c: &mut Criterion) {
    let data = compressible_bytes(16 * MIB);
    let mut group = c.benchmark_group("writer_16MiB");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(16 * MIB as u64));
    for compression in [Compression::None, Compression::Lz4] {
        let name = if compression == Compression::Lz4 {
            "lz4"
        } else {
            "none"
        };
        group.bench_function(BenchmarkId::new("write_each", name), |b| {
            b.iter_batched(
                || sim_writer(compression),
                |mut w| {
                    for (i, piece) in data.chunks(MIB).enumerate() {
                        w.write(1, (i * MIB) as u64, piece).expect("staged");
                    }
                    w.sync().expect("synced");
                    w
                },
                BatchSize::PerIteration,
            );
        });
        group.bench_function(BenchmarkId::new("write_many", name), |b| {
            b.iter_batched(
                || sim_writer(compression),
                |mut w| {
                    let batch: Vec<(u64, &[u8])> = data
                        .chunks(MIB)
                        .enumerate()
                        .map(|(i, piece)| ((i * MIB) as u64, piece))
                        .collect();
                    w.write_many(1, &batch).expect("staged");
                    w.sync().expect("synced");
                    w
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, encode, seal, stage, writer);
criterion_main!(benches);
