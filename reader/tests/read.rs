//! Reading disks at points: every point and every LSN of a hand-built vault reads exactly what
//! the byte model says, whatever the read sizes.

mod common;

use common::*;
use replog_format::layout;
use replog_format::record::PointKind;
use replog_format::segment::SegmentEnd;
use replog_reader::{ExtentKind, ReadErrorKind, Vault};

#[test]
fn points_come_from_the_manifest_and_the_open_segment() {
    let s = standard_vault();
    let vault = open(&s.builder);
    let points = vault.points();
    let summary: Vec<_> = points
        .iter()
        .map(|p| (p.point_id, p.lsn, p.segment_id, p.label.as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, 4, 1, "p1"),
            (2, 6, 1, "p2"),
            (3, 10, 2, "p3"),
            (4, 12, 2, "p4")
        ]
    );
    assert!(points.iter().all(|p| p.kind == PointKind::CrashConsistent));
    assert_eq!(points[2].record_offset, s.open.points[0].record_offset);
    assert_eq!(
        vault.manifest().points.len(),
        2,
        "only sealed segments' points are in the manifest"
    );
    assert_eq!(vault.latest_point().unwrap().point_id, 4);
    assert_eq!(vault.point(3).unwrap().lsn, 10);
    assert!(vault.point(9).is_none());
    assert_eq!(vault.point_at_or_before(2999).unwrap().point_id, 2);
    assert_eq!(vault.point_at_or_before(3000).unwrap().point_id, 3);
    assert!(vault.point_at_or_before(999).is_none());
    assert_eq!(vault.last_lsn(), LAST_LSN);
}

#[test]
fn every_point_reads_as_the_model_with_any_read_size() {
    let s = standard_vault();
    let vault = open(&s.builder);
    for point in vault.points() {
        let view = vault.view(point).unwrap();
        assert_eq!(view.lsn(), point.lsn);
        assert_eq!(view.point(), Some(point));
        let expected = s.builder.expected(point.lsn);
        let ids: Vec<u32> = view.disks().iter().map(|d| d.disk_id()).collect();
        assert_eq!(
            ids,
            expected.keys().copied().collect::<Vec<_>>(),
            "disks at point {}",
            point.point_id
        );
        for disk in view.disks() {
            let want = &expected[&disk.disk_id()];
            assert_eq!(disk.size(), want.len() as u64);
            for step in [1, 7, 100, 4096, 5000, want.len()] {
                assert!(
                    read_disk(disk, step) == *want,
                    "disk {} at point {} step {step}",
                    disk.name(),
                    point.point_id
                );
            }
        }
    }
}

#[test]
fn every_lsn_reads_as_the_model() {
    let s = standard_vault();
    let vault = open(&s.builder);
    for lsn in 0..=LAST_LSN {
        let view = vault.view_at_lsn(lsn).unwrap();
        let expected = s.builder.expected(lsn);
        assert_eq!(view.disks().len(), expected.len(), "LSN {lsn}");
        for disk in view.disks() {
            assert!(
                read_disk(disk, 3000) == expected[&disk.disk_id()],
                "disk {} at LSN {lsn}",
                disk.name()
            );
        }
    }
}

#[test]
fn a_disk_added_later_is_not_part_of_earlier_points() {
    let s = standard_vault();
    let vault = open(&s.builder);
    let before = vault.view_at_lsn(DATA_ADDED_LSN - 1).unwrap();
    assert!(before.disk("data").is_none());
    let after = vault.view_at_lsn(DATA_ADDED_LSN).unwrap();
    let data = after.disk("data").unwrap();
    let mut buf = vec![0u8; 10];
    data.read_at(4096, &mut buf).unwrap();
    assert_eq!(buf, noise(12, 10));
}

#[test]
fn parallel_readers_see_the_same_bytes() {
    let s = standard_vault();
    let vault = open(&s.builder);
    let view = vault.view(vault.latest_point().unwrap()).unwrap();
    let disk = view.disk("os").unwrap();
    let want = read_disk(disk, OS_BYTES);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let want = &want;
            scope.spawn(move || {
                let mut reader = disk.reader();
                let mut buf = vec![0u8; 333];
                for i in 0..60u64 {
                    let at = (i * 337 + t * 1009) % (OS_BYTES as u64 - 333);
                    reader.read_at(at, &mut buf).unwrap();
                    assert_eq!(buf, want[at as usize..at as usize + 333]);
                }
            });
        }
    });
}

#[test]
fn extents_tile_the_disk_and_name_their_sources() {
    let s = standard_vault();
    let vault = open(&s.builder);
    let view = vault.view(vault.point(1).unwrap()).unwrap();
    let disk = view.disk("os").unwrap();
    let extents: Vec<_> = disk.extents().collect::<Result<_, _>>().unwrap();
    let mut at = 0;
    for pair in extents.windows(2) {
        assert_ne!(
            pair[0].kind, pair[1].kind,
            "neighbours of one kind are merged"
        );
    }
    for e in &extents {
        assert_eq!(e.start, at);
        at = e.end;
    }
    assert_eq!(at, OS_BYTES as u64);
    let kinds: Vec<_> = extents.iter().map(|e| (e.start, e.end, e.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            (0, 100, ExtentKind::Base),
            (100, 4000, ExtentKind::Journal),
            (4000, 13000, ExtentKind::Zero),
            (13000, OS_BYTES as u64, ExtentKind::Base),
        ]
    );
}

#[test]
fn a_torn_tail_of_the_open_segment_is_ignored() {
    let s = standard_vault();
    let b = &s.builder;
    let file = b
        .storage
        .open(&s.open.path, replog_io::OpenMode::ReadWrite)
        .unwrap();
    let valid_end = file.len().unwrap();
    let mut torn = read_file(b.storage.as_ref(), &s.open.path)[s.open_middle_offset as usize..]
        [..100]
        .to_vec();
    torn[70] ^= 0xFF;
    file.write_all_at(&torn, valid_end).unwrap();
    let vault = open(b);
    let seg = vault.open_segment().unwrap();
    assert!(
        matches!(seg.end, SegmentEnd::Torn { offset, .. } if offset == valid_end),
        "{:?}",
        seg.end
    );
    assert_eq!(seg.last_lsn, LAST_LSN);
    assert_eq!(vault.points().len(), 4);
    let view = vault.view_at_lsn(LAST_LSN).unwrap();
    for disk in view.disks() {
        assert!(read_disk(disk, 4096) == b.expected(LAST_LSN)[&disk.disk_id()]);
    }
}

#[test]
fn records_appended_after_opening_are_not_seen() {
    let s = standard_vault();
    let vault = open(&s.builder);
    let mut b = s.builder;
    // Append a point and a write the way a writer would, after the vault was opened.
    let bytes = read_file(b.storage.as_ref(), &s.open.path);
    let old_end = bytes.len();
    let mut seg = common::Segment {
        id: 2,
        first_lsn: s.open.first_lsn,
        bytes,
        extents: vec![],
        points: vec![],
    };
    b.write(&mut seg, 1, 0, &[0x55; 64], false);
    b.point(&mut seg, "p5", 5000);
    let file = b
        .storage
        .open(&s.open.path, replog_io::OpenMode::ReadWrite)
        .unwrap();
    file.write_all_at(&seg.bytes[old_end..], old_end as u64)
        .unwrap();
    assert_eq!(vault.points().len(), 4);
    assert_eq!(vault.last_lsn(), LAST_LSN);
    let view = vault.view_at_lsn(LAST_LSN).unwrap();
    assert!(read_disk(view.disk("os").unwrap(), 4096) == b.expected(LAST_LSN)[&1]);
    let reopened = open(&b);
    assert_eq!(reopened.points().len(), 5);
    let latest = reopened.view(reopened.latest_point().unwrap()).unwrap();
    assert!(read_disk(latest.disk("os").unwrap(), 4096) == b.expected(LAST_LSN + 2)[&1]);
}

#[test]
fn an_open_segment_found_sealed_is_read_from_its_records() {
    let mut b = VaultBuilder::new(4096);
    b.disk(1, "os", noise(1, 3 * 4096), 1);
    let mut s1 = b.segment();
    b.write(&mut s1, 1, 10, &noise(2, 300), true);
    b.point(&mut s1, "p1", 1);
    b.zero(&mut s1, 1, 5000, 100);
    b.seal(s1);
    let mut manifest = b.finish();
    // The manifest was read before the writer sealed the segment.
    manifest.segments[0].sealed = None;
    manifest.points.clear();
    b.write_manifest(&manifest);
    let vault = open(&b);
    assert!(matches!(
        vault.open_segment().unwrap().end,
        SegmentEnd::Sealed { .. }
    ));
    assert_eq!(vault.points().len(), 1);
    let view = vault.view_at_lsn(3).unwrap();
    assert!(read_disk(&view.disks()[0], 4096) == b.expected(3)[&1]);
}

#[test]
fn records_already_in_the_base_are_skipped() {
    let mut b = VaultBuilder::new(4096);
    b.disk(1, "os", vec![0u8; 2 * 4096], 1);
    let mut s1 = b.segment();
    let folded = b.write(&mut s1, 1, 0, &noise(5, 4096), false);
    b.point(&mut s1, "p1", 1);
    b.write(&mut s1, 1, 4096, &noise(6, 100), false);
    b.point(&mut s1, "p2", 2);
    let sealed = b.seal(s1);
    // Retention folded LSNs 1..=3 into the base.
    b.base_lsn = 3;
    b.disks[0].base = b.expected(3)[&1].clone();
    b.disks[0].base_generation = 2;
    b.finish();
    // The folded record is never read again: damage to it goes unnoticed by reads.
    flip_byte(b.storage.as_ref(), &sealed.path, folded + 64 + 7);
    let vault = open(&b);
    assert_eq!(vault.base_lsn(), 3);
    let view = vault.view(vault.point(2).unwrap()).unwrap();
    assert!(read_disk(&view.disks()[0], 4096) == b.expected(4)[&1]);
    assert!(read_disk(&vault.view_at_lsn(3).unwrap().disks()[0], 4096) == b.expected(3)[&1]);
    // A point below the base no longer exists: it is not offered, and its LSN cannot be viewed.
    assert!(vault.point(1).is_none());
    assert_eq!(vault.points().len(), 1);
    let e = vault.view_at_lsn(2).unwrap_err();
    assert_eq!(e.kind(), ReadErrorKind::InvalidRequest);
}

#[test]
fn requests_outside_the_vault_are_refused() {
    let s = standard_vault();
    let vault = open(&s.builder);
    assert_eq!(
        vault.view_at_lsn(LAST_LSN + 1).unwrap_err().kind(),
        ReadErrorKind::InvalidRequest
    );
    let view = vault.view_at_lsn(LAST_LSN).unwrap();
    let disk = view.disk("os").unwrap();
    let mut buf = [0u8; 2];
    assert_eq!(
        disk.read_at(OS_BYTES as u64 - 1, &mut buf)
            .unwrap_err()
            .kind(),
        ReadErrorKind::InvalidRequest
    );
    disk.read_at(OS_BYTES as u64 - 2, &mut buf).unwrap();
    let mut foreign = vault.points()[0].clone();
    foreign.point_id = 77;
    assert_eq!(
        vault.view(&foreign).unwrap_err().kind(),
        ReadErrorKind::InvalidRequest
    );
}

#[test]
fn a_directory_without_a_vault_is_not_a_vault() {
    let dir = tempfile::tempdir().unwrap();
    let e = Vault::open(storage(), dir.path()).unwrap_err();
    assert_eq!(e.kind(), ReadErrorKind::NotAVault);
    write_file(
        storage().as_ref(),
        &dir.path().join(layout::VAULT_FILE),
        b"hello",
    );
    assert_eq!(
        Vault::open(storage(), dir.path()).unwrap_err().kind(),
        ReadErrorKind::NotAVault
    );
}

#[test]
fn stats_count_segments_points_and_bytes() {
    let s = standard_vault();
    let vault = open(&s.builder);
    let stats = vault.stats().unwrap();
    assert_eq!(
        (
            stats.disks,
            stats.segments,
            stats.sealed_segments,
            stats.points
        ),
        (2, 2, 1, 4)
    );
    assert_eq!((stats.base_lsn, stats.last_lsn), (0, LAST_LSN));
    let seg_bytes: u64 = [&s.sealed.path, &s.open.path]
        .iter()
        .map(|p| read_file(s.builder.storage.as_ref(), p).len() as u64)
        .sum();
    assert_eq!(stats.journal_bytes, seg_bytes);
    assert!(stats.base_bytes > (OS_BYTES + DATA_BYTES) as u64);
    let open_seg = stats.open_segment.unwrap();
    assert_eq!(
        (
            open_seg.segment_id,
            open_seg.first_lsn,
            open_seg.last_lsn,
            open_seg.records
        ),
        (2, 7, LAST_LSN, 7)
    );
}
