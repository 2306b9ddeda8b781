//! Extent maps of 10^6 scattered pieces (or `REPLOG_BENCH_PIECES`), the compact map
//! (`replog_reader::extent_map`: a sorted array of 20-byte entries over a record table, with a
//! B-tree overlay for inserts) against the map it replaced (`old.rs`: a `BTreeMap` of fat pieces):
//!
//! - `build_sorted`: loading a checkpoint-style sorted list of one-block record pieces.
//! - `build_overwrites`: applying one-block writes at scattered blocks in LSN order, as a view
//!   applies the journal (the new map compacted at the end, as the view does).
//! - `lookup`: 1000 random one-block `pieces_in` lookups on the built map, each read to its end.
//!
//! Run with `cargo bench -p replog-benches --bench extent_map`;
//! `REPLOG_BENCH_PIECES=10000000` for 10^7 pieces.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

#[allow(dead_code)]
mod old;

const BLOCK: u64 = 4096;
/// A 4 TiB disk: 2^30 blocks, so scattered one-block writes rarely touch.
const DISK: u64 = 1 << 42;
const LOOKUPS: usize = 1000;

fn pieces() -> usize {
    std::env::var("REPLOG_BENCH_PIECES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Deterministic scattered block numbers (an LCG).
fn scatter(seed: u64, n: usize) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 34) % (DISK / BLOCK)
        })
        .collect()
}

/// The same workloads over either map: the two modules have the same API.
macro_rules! workloads {
    ($name:ident, $($m:tt)+) => {
        mod $name {
            use super::{BLOCK, DISK};
            use $($m)+ as m;

            pub fn record(lsn: u64, at: u64) -> m::Source {
                m::Source::Record(m::RecordRef {
                    segment_index: (lsn >> 16) as u32,
                    record_offset: 4096 + (lsn & 0xffff) * 4160,
                    lsn,
                    disk_offset: at,
                    length: BLOCK as u32,
                    stored_len: BLOCK as u32,
                    record_crc: lsn as u32,
                    flags: 0,
                    data_offset: 0,
                })
            }

            pub fn sorted(blocks: &[u64]) -> m::ExtentMap {
                let mut b = m::SortedBuilder::new(DISK);
                for (i, &block) in blocks.iter().enumerate() {
                    let at = block * BLOCK;
                    b.push(at, at + BLOCK, record(i as u64 + 1, at));
                }
                b.finish()
            }

            pub fn overwrites(blocks: &[u64]) -> m::ExtentMap {
                let mut map = m::ExtentMap::new(DISK);
                for (i, &block) in blocks.iter().enumerate() {
                    let at = block * BLOCK;
                    map.insert(at, at + BLOCK, record(i as u64 + 1, at));
                }
                super::finish_overwrites(&mut map);
                map
            }

            pub fn lookups(map: &m::ExtentMap, blocks: &[u64]) -> u64 {
                let mut n = 0;
                for &block in blocks {
                    let at = block * BLOCK;
                    for (start, piece) in map.pieces_in(at, at + BLOCK) {
                        n += piece.end - start;
                    }
                }
                n
            }
        }
    };
}

workloads!(new, replog_reader::extent_map);
workloads!(was, crate::old);

/// What a view does once it has applied the journal.
trait Finish {
    fn finish_overwrites(&mut self);
}

impl Finish for replog_reader::extent_map::ExtentMap {
    fn finish_overwrites(&mut self) {
        self.compact();
    }
}

impl Finish for old::ExtentMap {
    fn finish_overwrites(&mut self) {}
}

fn finish_overwrites(map: &mut impl Finish) {
    map.finish_overwrites();
}

fn bench(c: &mut Criterion) {
    let n = pieces();
    let journal = scatter(1, n);
    let mut sorted = scatter(2, n);
    sorted.sort_unstable();
    sorted.dedup();
    let probes = scatter(3, LOOKUPS);

    let mut g = c.benchmark_group("extent_map");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("build_sorted/new", n), |b| {
        b.iter(|| new::sorted(black_box(&sorted)))
    });
    g.bench_function(BenchmarkId::new("build_sorted/old", n), |b| {
        b.iter(|| was::sorted(black_box(&sorted)))
    });
    g.bench_function(BenchmarkId::new("build_overwrites/new", n), |b| {
        b.iter(|| new::overwrites(black_box(&journal)))
    });
    g.bench_function(BenchmarkId::new("build_overwrites/old", n), |b| {
        b.iter(|| was::overwrites(black_box(&journal)))
    });
    g.throughput(Throughput::Elements(LOOKUPS as u64));
    // Half the probes land on a piece, half between pieces.
    let probes: Vec<u64> = probes
        .iter()
        .zip(&journal)
        .enumerate()
        .map(|(i, (&p, &j))| if i % 2 == 0 { j } else { p })
        .collect();
    let new_map = new::overwrites(&journal);
    g.bench_function(BenchmarkId::new("lookup_1000/new", n), |b| {
        b.iter(|| new::lookups(&new_map, black_box(&probes)))
    });
    drop(new_map);
    let old_map = was::overwrites(&journal);
    g.bench_function(BenchmarkId::new("lookup_1000/old", n), |b| {
        b.iter(|| was::lookups(&old_map, black_box(&probes)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
