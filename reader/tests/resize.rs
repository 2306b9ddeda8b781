//! Disks that grow: a resize record changes a disk's size from its LSN on. Views, reads,
//! materialization, checkpoints, `verify` and `dump` all take a disk's size at the LSN they
//! look at, so a point before a resize keeps the old size.

mod common;

use common::*;
use proptest::prelude::*;
use replog_format::record::RecordKind;
use replog_reader::{MaterializeOptions, ReadErrorKind, materialize};

const KIB: u64 = 1024;

/// Disk 1 of 16 KiB: a write, point 1; a resize to 32 KiB, a write across the old end, point 2
/// (sealed segment); a resize to 48 KiB, a write at the new end, point 3 (open segment).
fn grown_vault() -> (VaultBuilder, [u64; 3]) {
    let mut b = VaultBuilder::new(4096);
    b.disk(1, "os", noise(1, 16 * KIB as usize), 1);
    let mut seg = b.segment();
    b.write(&mut seg, 1, 4096, &pattern(0x11, 4096), false);
    let p1 = b.point(&mut seg, "small", 10);
    b.resize(&mut seg, 1, 32 * KIB);
    b.write(&mut seg, 1, 12 * KIB, &noise(2, 8 * KIB as usize), true);
    let p2 = b.point(&mut seg, "grown", 20);
    b.seal(seg);
    let mut seg = b.segment();
    b.resize(&mut seg, 1, 48 * KIB);
    b.write(&mut seg, 1, 44 * KIB, &pattern(0x33, 4096), false);
    let p3 = b.point(&mut seg, "grown again", 30);
    b.leave_open(seg);
    b.finish();
    (b, [p1, p2, p3])
}

#[test]
fn each_point_reads_its_disk_at_the_size_it_had_then_with_the_grown_range_zero() {
    let (b, lsns) = grown_vault();
    let vault = open(&b);
    assert_eq!(
        vault.disks()[0].disk_bytes,
        48 * KIB,
        "the manifest has the newest size"
    );
    for (i, lsn) in lsns.into_iter().enumerate() {
        let view = vault.view(vault.point(i as u64 + 1).unwrap()).unwrap();
        let expected = &b.expected(lsn)[&1];
        let disk = &view.disks()[0];
        assert_eq!(disk.size(), expected.len() as u64, "point {}", i + 1);
        assert_eq!(&read_disk(disk, 3000), expected, "point {}", i + 1);
    }
    // Past the old end and before the write, point 2 reads zeros, not base bytes.
    let view = vault.view(vault.point(2).unwrap()).unwrap();
    let mut grown = vec![0xFF; 4096];
    view.disks()[0].read_at(24 * KIB, &mut grown).unwrap();
    assert!(grown.iter().all(|&x| x == 0));
}

#[test]
fn failover_of_each_point_writes_an_image_of_its_size() {
    let (b, lsns) = grown_vault();
    let vault = open(&b);
    for (i, lsn) in lsns.into_iter().enumerate() {
        let view = vault.view(vault.point(i as u64 + 1).unwrap()).unwrap();
        let out = tempfile::tempdir().unwrap();
        materialize(&view, out.path(), &MaterializeOptions::default()).unwrap();
        let image = std::fs::read(out.path().join("os.raw")).unwrap();
        assert_eq!(&image, &b.expected(lsn)[&1], "point {}", i + 1);
    }
}

#[test]
fn disk_bytes_at_follows_the_resize_records() {
    let (b, _) = grown_vault();
    let vault = open(&b);
    for lsn in 1..b.next_lsn {
        let want = b.expected(lsn)[&1].len() as u64;
        assert_eq!(
            vault.disk_bytes_at(1, lsn).unwrap(),
            Some(want),
            "LSN {lsn}"
        );
    }
    assert_eq!(vault.disk_bytes_at(9, 1).unwrap(), None, "no such disk");
    let past = vault.disk_bytes_at(1, b.next_lsn).unwrap_err();
    assert_eq!(past.kind(), ReadErrorKind::InvalidRequest);
}

#[test]
fn a_checkpoint_after_a_resize_holds_the_size_at_its_lsn() {
    let (b, lsns) = grown_vault();
    let vault = open(&b);
    let sealed_end = b.segments[0].sealed.unwrap().last_lsn;
    replog_reader::checkpoint::write(&vault, sealed_end).unwrap();
    let vault = open(&b);
    let view = vault.view(vault.point(3).unwrap()).unwrap();
    assert_eq!(
        view.checkpoint_lsn(),
        Some(sealed_end),
        "the view starts from it"
    );
    assert_eq!(&read_disk(&view.disks()[0], 4096), &b.expected(lsns[2])[&1]);
    assert!(replog_reader::verify(b.storage.as_ref(), b.path()).is_intact());
}

/// A vault whose journal writes past the disk's old end before the resize record.
fn write_before_resize_vault() -> (VaultBuilder, u64) {
    let mut b = VaultBuilder::new(4096);
    b.disk(1, "os", noise(1, 16 * KIB as usize), 1);
    let mut seg = b.segment();
    b.point(&mut seg, "small", 10);
    let bad_offset = seg.bytes.len() as u64;
    b.write_unchecked(&mut seg, 1, 16 * KIB, &pattern(0x44, 4096));
    b.resize(&mut seg, 1, 32 * KIB);
    b.point(&mut seg, "grown", 20);
    b.seal(seg);
    b.finish();
    (b, bad_offset)
}

#[test]
fn a_write_past_the_old_end_before_the_resize_record_is_damage() {
    let (b, bad_offset) = write_before_resize_vault();
    let vault = open(&b);
    assert!(
        vault.view(vault.point(1).unwrap()).is_ok(),
        "before it, all is well"
    );
    let e = vault.view(vault.point(2).unwrap()).unwrap_err();
    assert_eq!(e.kind(), ReadErrorKind::Damaged, "{e}");
    assert!(e.to_string().contains("16384 bytes at that LSN"), "{e}");
    let report = replog_reader::verify(b.storage.as_ref(), b.path());
    let finding = report
        .findings()
        .iter()
        .find(|f| f.message.contains("at that LSN"))
        .unwrap_or_else(|| panic!("no range finding: {:?}", report.findings()));
    assert_eq!(finding.offset, Some(bad_offset));
}

#[test]
fn a_resize_that_does_not_start_from_the_disks_size_is_damage() {
    let mut b = VaultBuilder::new(4096);
    b.disk(1, "os", noise(1, 16 * KIB as usize), 1);
    let mut seg = b.segment();
    b.resize(&mut seg, 1, 32 * KIB);
    b.point(&mut seg, "grown", 20);
    b.seal(seg);
    b.finish();
    // The base claims the disk was already 32 KiB: the resize from 16 KiB contradicts it.
    b.disks[0].base = noise(1, 32 * KIB as usize);
    b.finish();
    let vault = open(&b);
    let e = vault.view(vault.point(1).unwrap()).unwrap_err();
    assert_eq!(e.kind(), ReadErrorKind::Damaged, "{e}");
    assert!(replog_reader::verify(b.storage.as_ref(), b.path()).is_damaged());
}

#[test]
fn dump_shows_both_sizes_of_a_resize() {
    let (b, _) = grown_vault();
    let mut resizes = Vec::new();
    replog_reader::dump(
        b.storage.as_ref(),
        b.path(),
        None,
        |r| {
            if r.kind == RecordKind::Resize {
                resizes.push((r.disk_id, r.resize_bytes));
            }
        },
        |_, _, _| {},
    )
    .unwrap();
    assert_eq!(
        resizes,
        vec![
            (1, Some((16 * KIB, 32 * KIB))),
            (1, Some((32 * KIB, 48 * KIB)))
        ]
    );
}

/// One step of a random journal: a write inside the disk's current size, a resize, or a point;
/// sealing the segment after it or not.
#[derive(Clone, Debug)]
enum Step {
    Write { at_permille: u64, len: u64 },
    Grow { by: u64 },
    Point,
}

fn step() -> impl Strategy<Value = (Step, bool)> {
    let op = prop_oneof![
        (0u64..1000, 1u64..6000).prop_map(|(at_permille, len)| Step::Write { at_permille, len }),
        (1u64..20_000).prop_map(|by| Step::Grow { by }),
        Just(Step::Point),
    ];
    (op, prop::bool::weighted(0.2))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The size at every LSN, as `disk_bytes_at` and as a view have it, is the model's, and every
    /// point's bytes are the model's, whatever mix of writes, resizes and seals came before.
    #[test]
    fn sizes_and_bytes_at_every_lsn_match_a_model(
        base in 1u64..20_000,
        steps in prop::collection::vec(step(), 1..24),
    ) {
        let mut b = VaultBuilder::new(4096);
        b.disk(1, "d", noise(base, base as usize), 1);
        let mut seg = b.segment();
        let mut size = base;
        for (i, (s, seal)) in steps.into_iter().enumerate() {
            match s {
                Step::Write { at_permille, len } => {
                    let at = size * at_permille / 1000;
                    let len = len.min(size - at).max(1);
                    let at = at.min(size - len);
                    b.write(&mut seg, 1, at, &noise(i as u64, len as usize), i % 2 == 0);
                }
                Step::Grow { by } => {
                    size += by;
                    b.resize(&mut seg, 1, size);
                }
                Step::Point => {
                    b.point(&mut seg, "", i as i64);
                }
            }
            if seal {
                b.seal(seg);
                seg = b.segment();
            }
        }
        b.point(&mut seg, "last", 0);
        b.leave_open(seg);
        b.finish();
        let vault = open(&b);
        for lsn in 1..b.next_lsn {
            let want = &b.expected(lsn)[&1];
            prop_assert_eq!(vault.disk_bytes_at(1, lsn).unwrap(), Some(want.len() as u64));
            let view = vault.view_at_lsn(lsn).unwrap();
            prop_assert_eq!(view.disks()[0].size(), want.len() as u64);
        }
        for p in vault.points() {
            let view = vault.view(p).unwrap();
            prop_assert_eq!(&read_disk(&view.disks()[0], 5000), &b.expected(p.lsn)[&1]);
        }
    }
}

#[test]
fn the_journals_changes_after_a_point_leave_resizes_out() {
    let (b, _) = grown_vault();
    let vault = open(&b);
    let changes = vault.journal_extents_after(0).unwrap();
    assert_eq!(changes.len(), 3, "three writes: {changes:?}");
    assert!(changes.iter().all(|e| e.kind == RecordKind::Write));
}
