//! The heap of a layered view does not grow with the number of pieces: a view of a vault of
//! 10^4 scattered writes and one of 10^5, each over a checkpoint, stay under the same bound
//! while they are built and while every piece is listed, counted by a global allocator that
//! tracks live bytes and their peak (counts, not times). The in-memory view of the larger vault
//! passes that bound, so the check can fail.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use replog_io::Storage;
use replog_reader::{Vault, ViewMode, ViewOptions, checkpoint};
use replog_writer::{VaultSettings, Writer};

/// Counts the bytes allocated and not yet freed, and their peak, then defers to the system
/// allocator.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it keeps
// `System`'s guarantees; it only adds atomic counter updates, which neither allocate nor panic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        // SAFETY: the caller upholds `alloc`'s contract, which is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grew(new_size as isize - layout.size() as isize);
        // SAFETY: the caller upholds `realloc`'s contract, which is `System.realloc`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The heap a layered view may take above what the open vault holds, whatever its pieces: the
/// checkpoint index's block cache (at most `CACHE_BYTES_MAX`, filled by the lookups that start
/// each range under the tail), and 2 MiB for the tail after the checkpoint (a few thousand
/// records of the open segment), the index's directory and one read-ahead buffer.
const LAYERED_BYTES_MAX: isize = (checkpoint::CACHE_BYTES_MAX + (2 << 20)) as isize;

/// `writes` 512-byte writes at scattered 4 KiB blocks of a sparse disk, a point at the end,
/// and a checkpoint at the end of the newest sealed segment.
fn vault(storage: &Arc<dyn Storage>, dir: &Path, writes: u64) {
    let settings = VaultSettings {
        block_bytes: 4096,
        segment_bytes: 4 << 20,
        ..VaultSettings::default()
    };
    let mut w = Writer::create(storage.clone(), dir, settings).unwrap();
    let disk = w.add_disk("d", 64 << 30).unwrap();
    let data = [0x5au8; 512];
    let mut x = 3u64;
    for _ in 0..writes {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let block = (x >> 33) % ((64 << 30) / 4096);
        w.write(disk.disk_id, block * 4096, &data).unwrap();
    }
    w.point(replog_writer::PointKind::quiesced(false), "")
        .unwrap();
    w.close().unwrap();
    let v = Vault::open(storage.clone(), dir).unwrap();
    let newest = *v.sealed_segment_ends().last().unwrap();
    checkpoint::write(&v, newest).unwrap();
}

/// Peak heap above the open vault while a view is built with `opts` and every piece of it
/// listed, and the view's pieces that do not read from the base.
fn peak_of(storage: &Arc<dyn Storage>, dir: &Path, opts: &ViewOptions) -> (isize, u64, ViewMode) {
    let v = Vault::open(storage.clone(), dir).unwrap();
    let p = v.latest_point().unwrap().clone();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let view = v.view_with(&p, opts).unwrap();
    let mut pieces = 0;
    for d in view.disks() {
        for piece in d.pieces(0, d.size()) {
            let (_, piece) = piece.unwrap();
            pieces += u64::from(piece.source != replog_reader::extent_map::Source::Base);
        }
    }
    let peak = PEAK.load(Ordering::Relaxed) - before;
    (peak, pieces, view.mode())
}

#[test]
fn a_layered_view_takes_the_same_bounded_heap_for_ten_times_the_pieces() {
    let tmp = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> = replog_io::backend("sync").unwrap();
    let layered = ViewOptions {
        memory_limit_bytes: 0,
    };
    let mut results = Vec::new();
    for writes in [10_000u64, 100_000] {
        let dir = tmp.path().join(format!("v{writes}"));
        vault(&storage, &dir, writes);
        let (peak, pieces, mode) = peak_of(&storage, &dir, &layered);
        assert!(matches!(mode, ViewMode::Layered { .. }), "{mode:?}");
        assert!(pieces as f64 > writes as f64 * 0.95, "{pieces} pieces");
        assert!(
            peak < LAYERED_BYTES_MAX,
            "{writes} writes: a layered view peaked at {peak} heap bytes"
        );
        results.push((writes, peak));
        if writes == 100_000 {
            let (whole, _, mode) = peak_of(&storage, &dir, &ViewOptions::default());
            assert_eq!(mode, ViewMode::InMemory);
            assert!(
                whole > LAYERED_BYTES_MAX,
                "the in-memory view of {pieces} pieces took only {whole} bytes: the bound proves nothing"
            );
        }
    }
    eprintln!("peak heap of a layered view by writes: {results:?}");
}
