//! Bugs found by the model test, each kept as its own small regression test.

use std::path::Path;
use std::sync::Arc;

use replog_io::sim::SimStorage;
use replog_io::{OpenMode, Storage, WriteAt};
use replog_reader::Vault;
use replog_writer::{PointKind, VaultSettings, Writer};

fn small_segments() -> VaultSettings {
    VaultSettings {
        block_bytes: 4096,
        segment_bytes: 64 << 10,
        ..VaultSettings::default()
    }
}

fn read_all(vault: &Vault, lsn: u64, disk: &str) -> Vec<u8> {
    let p = vault
        .points()
        .iter()
        .find(|p| p.lsn == lsn)
        .expect("the point is listed");
    let view = vault.view(p).expect("view");
    let d = view.disk(disk).expect("disk");
    let mut buf = vec![0u8; d.size() as usize];
    d.read_at(0, &mut buf).expect("read");
    buf
}

/// Regression (model test, seed 2 on the simulator): recovery cuts a torn tail by zeroing it,
/// never truncating (a reader may have the segment mapped), so the file stays longer than its
/// records. When that segment was later sealed, zeros followed the trailer, and the format
/// refused the sealed segment ("bytes after the trailer"), making every point in it unreadable.
/// Zeros after a trailer are now accepted; only non-zero bytes there are damage.
#[test]
fn a_segment_sealed_after_a_torn_tail_cut_stays_readable() {
    let sim = SimStorage::new(1);
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new("/v");
    let mut w = Writer::create(storage.clone(), dir, small_segments()).unwrap();
    let d = w.add_disk("d", 256 << 10).unwrap();
    w.write(d.disk_id, 0, &[1; 4000]).unwrap();
    let first = w.point(PointKind::CrashConsistent, "").unwrap();
    w.close().unwrap();
    // A torn tail of garbage after the last record, as an interrupted writer leaves.
    let vault = Vault::open(storage.clone(), dir).unwrap();
    let open = vault.open_segment().unwrap();
    let seg = replog_format::layout::segment_path(dir, open.segment_id);
    let f = storage.open(&seg, OpenMode::ReadWrite).unwrap();
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8 + 1).collect();
    f.write_batch(
        &[WriteAt {
            offset: open.end.append_offset(),
            data: &garbage,
        }],
        true,
    )
    .unwrap();
    drop(vault);
    // Recovery cuts it (zeroes it); then enough writes to seal the segment.
    let mut w = Writer::open(storage.clone(), dir).unwrap();
    assert!(w.recovery_report().torn_tail.is_some());
    let mut last = first.clone();
    for i in 0..20u8 {
        w.write(d.disk_id, 8192, &[i; 6000]).unwrap();
        last = w.point(PointKind::CrashConsistent, "").unwrap();
    }
    w.close().unwrap();
    let vault = Vault::open(storage.clone(), dir).unwrap();
    assert!(
        vault.stats().unwrap().sealed_segments >= 1,
        "the segment with the cut tail was sealed"
    );
    assert_eq!(read_all(&vault, first.lsn, "d")[..4000], [1; 4000]);
    assert_eq!(read_all(&vault, last.lsn, "d")[8192..14192], [19; 6000]);
    assert!(replog_reader::verify(storage.as_ref(), dir).is_intact());
}

/// Regression (model test, seed 31 on the sync backend): a disk added while earlier records
/// were still staged got `added_lsn` = the next LSN. A crash then lost the staged records, the
/// journal resumed at a lower LSN, and new writes to the disk carried LSNs below its
/// `added_lsn`, so every later point failed to read ("targets disk later before it was added").
/// `add_disk` now makes everything staged durable first.
#[test]
fn a_disk_added_after_unsynced_records_survives_a_crash() {
    let sim = SimStorage::new(3);
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new("/v");
    let mut w = Writer::create(storage.clone(), dir, small_segments()).unwrap();
    let a = w.add_disk("a", 64 << 10).unwrap();
    w.point(PointKind::CrashConsistent, "").unwrap();
    w.write(a.disk_id, 0, &[5; 3000]).unwrap(); // staged, not synced
    let later = w.add_disk("later", 64 << 10).unwrap();
    drop(w); // the process dies without closing
    sim.crash(9);
    let mut w = Writer::open(storage.clone(), dir).unwrap();
    w.write(later.disk_id, 100, &[7; 500]).unwrap();
    let p = w.point(PointKind::CrashConsistent, "").unwrap();
    w.close().unwrap();
    let vault = Vault::open(storage.clone(), dir).unwrap();
    assert_eq!(read_all(&vault, p.lsn, "later")[100..600], [7; 500]);
    assert!(replog_reader::verify(storage.as_ref(), dir).is_intact());
}
