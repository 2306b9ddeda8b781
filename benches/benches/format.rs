//! Hot paths of the on-disk format: framing a record (header + CRC over the payload), CRC32
//! throughput, LZ4 block compression of 64 KiB blocks, and scanning a whole segment.
//!
//! Run with `cargo bench -p replog-benches --bench format`; throughput is reported in bytes of
//! payload (or segment) per second.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use replog_benches::{compressible_bytes, random_bytes};
use replog_format::record::{RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use replog_format::segment::{Expect, SEGMENT_HEADER_BYTES, SegmentEnd, SegmentHeader, scan};
use replog_format::{VaultId, crc32_seeded, vault_seed};
use std::hint::black_box;

const VAULT: VaultId = [0x5A; 16];
const SEGMENT: u64 = 1;
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn write_header(lsn: u64, segment_offset: u64, len: usize) -> RecordHeader {
    RecordHeader {
        crc: 0,
        kind: RecordKind::Write,
        flags: 0,
        lsn,
        segment_id: SEGMENT,
        segment_offset,
        synced_upto: SEGMENT_HEADER_BYTES as u64,
        disk_id: 1,
        stored_len: len as u32,
        disk_offset: lsn * len as u64,
        length: len as u64,
    }
}

fn framing(c: &mut Criterion) {
    let seed = vault_seed(&VAULT);
    let mut group = c.benchmark_group("frame_write_record");
    for len in [4 * KIB, MIB] {
        let payload = random_bytes(len, 1);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::from_parameter(len), &payload, |b, payload| {
            let mut header = write_header(1, SEGMENT_HEADER_BYTES as u64, payload.len());
            b.iter(|| black_box(header.seal(seed, black_box(payload))));
        });
    }
    group.finish();
}

fn crc32(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32");
    for len in [4 * KIB, MIB] {
        let data = random_bytes(len, 2);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("unseeded", len), &data, |b, data| {
            b.iter(|| crc32fast::hash(black_box(data)));
        });
        group.bench_with_input(BenchmarkId::new("vault_seeded", len), &data, |b, data| {
            b.iter(|| crc32_seeded(0x1234_5678, &[black_box(data)]));
        });
    }
    group.finish();
}

fn lz4(c: &mut Criterion) {
    const BLOCK_BYTES: usize = 64 * KIB;
    let mut group = c.benchmark_group("lz4_block_64KiB");
    group.throughput(Throughput::Bytes(BLOCK_BYTES as u64));
    for (name, data) in [
        ("compressible", compressible_bytes(BLOCK_BYTES)),
        ("random", random_bytes(BLOCK_BYTES, 3)),
    ] {
        let compressed = lz4_flex::block::compress(&data);
        group.bench_with_input(BenchmarkId::new("compress", name), &data, |b, data| {
            let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(data.len())];
            b.iter(|| lz4_flex::block::compress_into(black_box(data), &mut out).unwrap());
        });
        group.bench_with_input(
            BenchmarkId::new("decompress", name),
            &compressed,
            |b, compressed| {
                let mut out = vec![0u8; BLOCK_BYTES];
                b.iter(|| {
                    lz4_flex::block::decompress_into(black_box(compressed), &mut out).unwrap()
                });
            },
        );
    }
    group.finish();
}

/// A segment of `segment_bytes` (rounded down to whole records) of 4 KiB write records.
fn segment_of_4k_writes(segment_bytes: usize) -> Vec<u8> {
    let seed = vault_seed(&VAULT);
    let header = SegmentHeader {
        vault_id: VAULT,
        segment_id: SEGMENT,
        first_lsn: 1,
        created_unix_ns: 0,
        chain_start: None,
    };
    let mut bytes = header.encode(seed);
    let payload = random_bytes(4 * KIB, 4);
    let mut lsn = 1;
    while bytes.len() + RECORD_HEADER_BYTES + payload.len() <= segment_bytes {
        let mut h = write_header(lsn, bytes.len() as u64, payload.len());
        bytes.extend_from_slice(&h.seal(seed, &payload));
        bytes.extend_from_slice(&payload);
        lsn += 1;
    }
    bytes
}

fn scan_segment(c: &mut Criterion) {
    let bytes = segment_of_4k_writes(4 * MIB);
    let expect = Expect {
        vault_id: VAULT,
        seed: vault_seed(&VAULT),
        segment_id: SEGMENT,
    };
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("segment_4MiB_of_4KiB_writes", |b| {
        b.iter(|| {
            let mut visited = 0u32;
            let s = scan(black_box(&bytes), &expect, |_, _| visited += 1).unwrap();
            assert!(matches!(s.end, SegmentEnd::Clean { .. }) && visited == s.record_count);
            s.record_count
        });
    });
    group.finish();
}

criterion_group!(benches, framing, crc32, lz4, scan_segment);
criterion_main!(benches);
