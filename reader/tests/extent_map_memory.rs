//! Heap bytes an extent map keeps per visible piece, counted by a global allocator that tracks
//! live bytes. Counts, not times: a map of 10^6 scattered pieces built the two ways a view
//! builds one (journal overwrites applied in order, a checkpoint's sorted pieces loaded) must
//! stay within the per-piece budget, so the representation cannot grow back unnoticed.

use replog_reader::extent_map::{ExtentMap, RecordRef, SortedBuilder, Source};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts the bytes allocated and not yet freed, then defers to the system allocator.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
/// The measurements share the counter, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it keeps
// `System`'s guarantees; it only adds atomic counter updates, which neither allocate nor panic.
// A counting allocator needs `unsafe impl GlobalAlloc`; there is no safe way to observe the heap.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds `alloc`'s contract, which is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: the caller upholds `realloc`'s contract, which is `System.realloc`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PIECES: u64 = 1_000_000;
const BLOCK: u64 = 4096;
/// A 4 TiB disk: 2^30 blocks, so 10^6 scattered one-block writes rarely touch.
const DISK: u64 = 1 << 42;

/// A deterministic scatter of block numbers (an LCG), the same in every run.
fn scatter(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed;
    std::iter::repeat_with(move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 34) % (DISK / BLOCK)
    })
}

fn record(lsn: u64, disk_offset: u64, length: u64, data_offset: u64) -> Source {
    Source::Record(RecordRef {
        segment_index: (lsn >> 16) as u32,
        record_offset: 4096 + (lsn & 0xffff) * 4160,
        lsn,
        disk_offset,
        length: length as u32,
        stored_len: length as u32,
        record_crc: lsn as u32 ^ 0x5a5a,
        flags: 0,
        data_offset: data_offset as u32,
    })
}

/// Live heap bytes while `build` runs and the map it returns is alive, and the map.
fn measure(build: impl FnOnce() -> ExtentMap) -> (i64, ExtentMap) {
    let before = LIVE.load(Ordering::Relaxed);
    let map = build();
    let after = LIVE.load(Ordering::Relaxed);
    ((after - before) as i64, map)
}

/// Journal-style: 10^6 one-block writes at scattered blocks, applied in LSN order, each its own
/// record (the worst case for the record table: one record per piece).
fn overwrites() -> ExtentMap {
    let mut map = ExtentMap::new(DISK);
    for (i, block) in scatter(1).take(PIECES as usize).enumerate() {
        let at = block * BLOCK;
        map.insert(at, at + BLOCK, record(i as u64 + 1, at, BLOCK, 0));
    }
    settle(&mut map);
    map
}

/// Checkpoint-style: the same kind of scatter, sorted, loaded piece by piece.
fn sorted_load() -> ExtentMap {
    let mut blocks: Vec<u64> = scatter(2).take(PIECES as usize).collect();
    blocks.sort_unstable();
    blocks.dedup();
    let mut builder = SortedBuilder::new(DISK);
    for (i, &block) in blocks.iter().enumerate() {
        let at = block * BLOCK;
        assert!(builder.push(at, at + BLOCK, record(i as u64 + 1, at, BLOCK, 0)));
    }
    drop(blocks);
    builder.finish()
}

/// Few records, many pieces: 4096 writes of 4 MiB cover 16 GiB, then 5 x 10^5 scattered
/// one-block zero writes cut them into about 10^6 pieces.
fn fragmented() -> ExtentMap {
    const BIG: u64 = 4 << 20;
    let mut map = ExtentMap::new(DISK);
    for i in 0..4096 {
        map.insert(i * BIG, (i + 1) * BIG, record(i + 1, i * BIG, BIG, 0));
    }
    let blocks = 4096 * BIG / BLOCK;
    for block in scatter(3).take(PIECES as usize / 2) {
        let at = (block % blocks) * BLOCK;
        map.insert(at, at + BLOCK, Source::Zero);
    }
    settle(&mut map);
    map
}

/// The map as a view leaves it once the journal is applied.
fn settle(map: &mut ExtentMap) {
    map.compact();
}

/// Bytes per stored piece for the pieces themselves (the array, 20 bytes an entry); allowed a
/// little spare capacity.
const PIECE_BUDGET: f64 = 24.0;
/// Bytes per record in the record table (48 bytes a record).
const RECORD_BUDGET: f64 = 48.0;
/// Fixed overhead: the map itself, the builder's table of recent records.
const FIXED: i64 = 64 << 10;

/// Builds the map, checks its answers still tile the disk, and checks the live heap bytes:
/// everything the map keeps (counted by the allocator) is within the per-piece budget plus the
/// per-record budget, and the part that is not the record table within the per-piece budget.
fn check(name: &str, build: fn() -> ExtentMap) -> (f64, f64) {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (bytes, map) = measure(build);
    let pieces = map.len() as i64;
    let memory = map.memory();
    let records = memory.records as i64;
    let piece_part = (bytes - memory.record_bytes as i64 - FIXED) as f64 / pieces as f64;
    let record_part = memory.record_bytes as f64 / records.max(1) as f64;
    eprintln!(
        "{name}: {pieces} pieces, {records} records, {bytes} live bytes: {:.1} bytes/piece in \
         all, {piece_part:.1} bytes/piece without the record table, {record_part:.1} \
         bytes/record",
        bytes as f64 / pieces as f64
    );
    assert!(
        pieces as u64 > PIECES / 2,
        "{name}: too few pieces to measure"
    );
    assert!(
        piece_part <= PIECE_BUDGET,
        "{name}: {piece_part:.1} bytes per piece, over {PIECE_BUDGET}"
    );
    assert!(
        record_part <= RECORD_BUDGET,
        "{name}: {record_part:.1} bytes per record, over {RECORD_BUDGET}"
    );
    let budget = PIECE_BUDGET * pieces as f64 + RECORD_BUDGET * records as f64 + FIXED as f64;
    assert!(
        bytes as f64 <= budget,
        "{name}: {bytes} live bytes over {budget}"
    );
    assert_eq!(
        map.iter().filter(|(_, p)| p.source != Source::Base).count() as i64,
        pieces
    );
    (bytes as f64 / pieces as f64, piece_part)
}

#[test]
fn journal_overwrites_cost_at_most_24_bytes_a_piece_and_48_a_record() {
    check("overwrites", overwrites);
}

#[test]
fn a_sorted_load_costs_at_most_24_bytes_a_piece_and_48_a_record() {
    check("sorted load", sorted_load);
}

#[test]
fn pieces_of_few_records_cost_at_most_24_bytes_a_piece_in_all() {
    let (all, _) = check("fragmented", fragmented);
    assert!(all <= PIECE_BUDGET, "{all:.1} bytes per piece in all");
}
