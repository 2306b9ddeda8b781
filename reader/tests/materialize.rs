//! Materializing views: images equal to the model, holes kept, existing images protected, and
//! large disks written in parallel ranges.

mod common;

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use replog_reader::materialize::RANGE_BYTES;
use replog_reader::{MaterializeOptions, ReadErrorKind, materialize, materialize_with_progress};

#[test]
fn every_point_materializes_to_the_model() {
    let s = standard_vault();
    let vault = open(&s.builder);
    for point in vault.points() {
        let view = vault.view(point).unwrap();
        let out = tempfile::tempdir().unwrap();
        let stats = materialize(
            &view,
            out.path(),
            &MaterializeOptions {
                force: false,
                sync: true,
                ..MaterializeOptions::default()
            },
        )
        .unwrap();
        let expected = s.builder.expected(point.lsn);
        assert_eq!(stats.disks.len(), expected.len());
        for (disk, want) in stats.disks.iter().zip(expected.values()) {
            assert_eq!(disk.path, out.path().join(format!("{}.raw", disk.name)));
            let got = std::fs::read(&disk.path).unwrap();
            assert!(
                got == *want,
                "disk {} at point {}",
                disk.name,
                point.point_id
            );
            assert_eq!(disk.written_bytes + disk.hole_bytes, disk.size_bytes);
        }
        assert_eq!(
            stats.written_bytes,
            stats.disks.iter().map(|d| d.written_bytes).sum::<u64>()
        );
        let names: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            expected.len(),
            "only the final images remain: {names:?}"
        );
    }
}

#[test]
fn holes_are_not_written() {
    let s = standard_vault();
    let vault = open(&s.builder);
    let view = vault.view(vault.point(1).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let stats = materialize(&view, out.path(), &MaterializeOptions::default()).unwrap();
    let os = &stats.disks[0];
    // Point 1: chunk 0 base + journal, 4000..13000 zeroed, chunk 4 a base hole.
    assert!(os.hole_bytes >= 9000 - 4096 + 4096, "{os:?}");
    let zeros_in_model = s.builder.expected(4)[&1]
        .chunks(4096)
        .filter(|c| c.iter().all(|&b| b == 0))
        .count();
    assert!(os.hole_bytes >= zeros_in_model as u64 * 4096);
}

#[test]
fn an_existing_image_is_refused_unless_forced() {
    let s = standard_vault();
    let vault = open(&s.builder);
    let view = vault.view(vault.latest_point().unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("data.raw"), b"keep me").unwrap();
    let e = materialize(&view, out.path(), &MaterializeOptions::default()).unwrap_err();
    assert_eq!(e.kind(), ReadErrorKind::AlreadyExists);
    assert_eq!(e.path(), Some(out.path().join("data.raw").as_path()));
    assert_eq!(
        std::fs::read(out.path().join("data.raw")).unwrap(),
        b"keep me"
    );
    assert!(
        !out.path().join("os.raw").exists(),
        "nothing is written when one image is refused"
    );
    materialize(
        &view,
        out.path(),
        &MaterializeOptions {
            force: true,
            sync: false,
            ..MaterializeOptions::default()
        },
    )
    .unwrap();
    assert!(std::fs::read(out.path().join("data.raw")).unwrap() == s.builder.expected(12)[&2]);
}

#[test]
fn progress_reaches_the_total() {
    let s = standard_vault();
    let vault = open(&s.builder);
    let view = vault.view(vault.latest_point().unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let highest = AtomicU64::new(0);
    let calls = AtomicU64::new(0);
    let progress = |done: u64| {
        highest.fetch_max(done, Ordering::Relaxed);
        calls.fetch_add(1, Ordering::Relaxed);
    };
    materialize_with_progress(&view, out.path(), &MaterializeOptions::default(), &progress)
        .unwrap();
    assert_eq!(highest.load(Ordering::Relaxed), view.total_bytes());
    assert_eq!(calls.load(Ordering::Relaxed), 2, "one range per small disk");
}

#[test]
fn a_disk_larger_than_one_range_is_written_in_parallel_ranges_and_stays_sparse() {
    let mut b = VaultBuilder::new(64 << 10);
    b.light = true;
    let size = 2 * RANGE_BYTES as usize + 3 * 4096;
    let mut base = vec![0u8; size];
    base[RANGE_BYTES as usize - 100..RANGE_BYTES as usize + 100].copy_from_slice(&noise(1, 200));
    b.disk(1, "big", base, 1);
    let mut seg = b.segment();
    let boundary = RANGE_BYTES - 3000;
    b.write(&mut seg, 1, boundary, &pattern(0x42, 1 << 20), true);
    b.write(&mut seg, 1, 2 * RANGE_BYTES + 10, &noise(2, 5000), false);
    b.zero(&mut seg, 1, RANGE_BYTES - 50, 20);
    b.point(&mut seg, "p1", 1);
    b.leave_open(seg);
    b.finish();
    let vault = open(&b);
    let view = vault.view(vault.latest_point().unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let stats = materialize(
        &view,
        out.path(),
        &MaterializeOptions {
            force: false,
            sync: true,
            ..MaterializeOptions::default()
        },
    )
    .unwrap();
    let path = out.path().join("big.raw");
    let got = std::fs::read(&path).unwrap();
    assert!(got == b.expected(4)[&1], "the image differs from the model");
    let disk = &stats.disks[0];
    assert!(
        disk.written_bytes <= (1 << 20) + 5000 + 2 * 4096 + 2 * 4096,
        "{disk:?}"
    );
    assert_eq!(disk.hole_bytes, size as u64 - disk.written_bytes);
    let allocated = std::fs::metadata(&path).unwrap().blocks() * 512;
    assert!(
        allocated < size as u64 / 4,
        "{allocated} bytes allocated for a mostly empty image"
    );
}
