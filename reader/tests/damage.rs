//! Damage is detected and named: a flipped byte in a record, a base chunk, a table page, a footer,
//! or a file that disagrees with the manifest gives an error naming the vault file and offset,
//! never wrong bytes.

mod common;

use std::path::Path;

use common::*;
use replog_format::base::BaseHeader;
use replog_format::layout;
use replog_io::ContentSum;
use replog_reader::{
    MaterializeOptions, ReadErrorKind, ReadOrder, ReadPassOptions, materialize, read_pass,
};

fn seg_name(id: u64) -> std::path::PathBuf {
    Path::new("journal").join(layout::segment_file_name(id))
}

#[test]
fn a_flipped_payload_byte_fails_materialize_naming_the_segment_and_offset() {
    for order in [ReadOrder::Disk, ReadOrder::Journal] {
        a_flipped_payload_byte_fails_materialize_in(order);
    }
}

fn a_flipped_payload_byte_fails_materialize_in(order: ReadOrder) {
    let s = standard_vault();
    let b = &s.builder;
    flip_byte(
        b.storage.as_ref(),
        &s.sealed.path,
        s.first_write_offset + 64 + 10,
    );
    let vault = open(b);
    let view = vault.view(vault.point(1).unwrap()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let opts = MaterializeOptions {
        order,
        ..MaterializeOptions::default()
    };
    let e = materialize(&view, out.path(), &opts).unwrap_err();
    assert_eq!(e.kind(), ReadErrorKind::Damaged, "{e}");
    assert_eq!(e.path(), Some(seg_name(1).as_path()));
    assert_eq!(e.offset(), Some(s.first_write_offset));
    let message = e.to_string();
    assert!(
        message.starts_with(&format!(
            "journal/0000000000000001.seg: record at byte {}",
            s.first_write_offset
        )),
        "{message}"
    );
    assert!(message.contains("fails its checksum"), "{message}");
    let left: Vec<_> = std::fs::read_dir(out.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "no partial or final image, and no scratch file of the sort, is left: {left:?}"
    );
}

#[test]
fn a_damaged_record_fails_only_the_reads_that_touch_it() {
    let s = standard_vault();
    let b = &s.builder;
    flip_byte(
        b.storage.as_ref(),
        &s.sealed.path,
        s.first_write_offset + 64 + 4999,
    );
    let vault = open(b);
    let view = vault.view(vault.point(1).unwrap()).unwrap();
    let disk = view.disk("os").unwrap();
    let mut buf = vec![0u8; 10];
    let e = disk.read_at(200, &mut buf).unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ReadErrorKind::Damaged, Some(s.first_write_offset))
    );
    disk.read_at(14000, &mut buf).unwrap();
    assert_eq!(buf, b.expected(4)[&1][14000..14010]);
}

/// Damage in the middle of the open segment (a later record vouches for it) is named with its
/// file and offset; the points before it stay listed and readable, none after it is listed.
#[test]
fn a_flipped_byte_inside_the_open_segment_is_named_and_hides_only_later_points() {
    let s = standard_vault();
    let b = &s.builder;
    let all_points = replog_reader::Vault::open(b.storage.clone(), b.path())
        .unwrap()
        .points()
        .to_vec();
    flip_byte(b.storage.as_ref(), &s.open.path, s.open_middle_offset + 64);
    let vault = replog_reader::Vault::open(b.storage.clone(), b.path()).unwrap();
    let e = vault.damage().expect("the damage is reported");
    assert_eq!(e.kind(), ReadErrorKind::Damaged, "{e}");
    assert_eq!(e.path(), Some(seg_name(2).as_path()));
    assert_eq!(e.offset(), Some(s.open_middle_offset));
    let listed = vault.points();
    assert!(
        listed.len() < all_points.len(),
        "points after the damage are not listed"
    );
    for p in listed {
        assert!(
            p.segment_id < 2 || p.record_offset < s.open_middle_offset,
            "point {} lies after the damage",
            p.point_id
        );
        let view = vault.view(p).unwrap();
        for d in view.disks() {
            let mut buf = vec![0u8; d.size() as usize];
            d.read_at(0, &mut buf).unwrap();
            assert_eq!(
                buf,
                b.expected(p.lsn)[&d.disk_id()],
                "point {} disk {}",
                p.point_id,
                d.name()
            );
        }
    }
}

#[test]
fn a_flipped_base_byte_fails_the_chunk_naming_the_base_and_offset() {
    let s = standard_vault();
    let b = &s.builder;
    let base = layout::base_path(b.path(), 1, 1);
    // Chunk 3 (disk bytes 12288..16384) is partly zeroed by LSN 3; its base part is still read.
    flip_byte(b.storage.as_ref(), &base, 4096 + 3 * 4096 + 2000);
    let vault = open(b);
    let view = vault.view(vault.point(1).unwrap()).unwrap();
    let disk = view.disk("os").unwrap();
    let mut buf = vec![0u8; 100];
    let read = disk.read_at(14000, &mut buf).unwrap_err();
    // A read pass reads chunk 3 with its neighbours in one read; the check still names chunk 3
    // alone.
    let opts = ReadPassOptions {
        order: ReadOrder::Disk,
        ..ReadPassOptions::default()
    };
    let pass = read_pass(&view, &opts).unwrap_err();
    for e in [read, pass] {
        assert_eq!(e.kind(), ReadErrorKind::Damaged);
        assert_eq!(e.path(), Some(Path::new("bases/1.1.base")));
        assert_eq!(e.offset(), Some(4096 + 3 * 4096));
        assert!(e.to_string().contains("chunk 3 "), "{e}");
    }
    // Bytes of that chunk overwritten by the zero record are not read from the base.
    disk.read_at(12300, &mut buf).unwrap();
    assert_eq!(buf, vec![0u8; 100]);
}

#[test]
fn a_flipped_table_page_byte_is_detected() {
    let s = standard_vault();
    let b = &s.builder;
    let path = layout::base_path(b.path(), 1, 1);
    let header = BaseHeader::decode(&read_file(b.storage.as_ref(), &path)[..4096], b.seed).unwrap();
    flip_byte(b.storage.as_ref(), &path, header.table_offset() + 9);
    let vault = open(b);
    let view = vault.view_at_lsn(1).unwrap();
    let e = view
        .disk("os")
        .unwrap()
        .read_at(0, &mut [0u8; 1])
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.offset()),
        (ReadErrorKind::Damaged, Some(header.table_offset() + 4092))
    );
    assert_eq!(e.path(), Some(Path::new("bases/1.1.base")));
}

#[test]
fn a_base_that_is_not_the_one_the_manifest_names_is_refused() {
    let s = standard_vault();
    let b = &s.builder;
    let mut manifest = replog_reader::Vault::open(b.storage.clone(), b.path())
        .unwrap()
        .manifest()
        .clone();
    manifest.disks[0].base_header_crc ^= 1;
    b.write_manifest(&manifest);
    let vault = open(b);
    let e = vault.view_at_lsn(1).unwrap_err();
    assert_eq!(
        (e.kind(), e.path()),
        (ReadErrorKind::Damaged, Some(Path::new("bases/1.1.base")))
    );
    assert!(e.to_string().contains("does not match the manifest"), "{e}");
}

#[test]
fn a_footer_that_is_not_the_one_the_manifest_names_is_refused() {
    let s = standard_vault();
    let b = &s.builder;
    let mut manifest = open(b).manifest().clone();
    let info = manifest.segments[0].sealed.as_mut().unwrap();
    info.footer_crc ^= 1;
    let footer_offset = info.footer_offset;
    b.write_manifest(&manifest);
    let vault = open(b);
    let e = vault.view_at_lsn(1).unwrap_err();
    assert_eq!(e.kind(), ReadErrorKind::Damaged);
    assert_eq!(
        (e.path(), e.offset()),
        (Some(seg_name(1).as_path()), Some(footer_offset))
    );
}

#[test]
fn a_sealed_segment_of_the_wrong_length_is_refused() {
    let s = standard_vault();
    let b = &s.builder;
    let f = b
        .storage
        .open(&s.sealed.path, replog_io::OpenMode::ReadWrite)
        .unwrap();
    f.set_len(f.len().unwrap() - 1).unwrap();
    let e = open(b).view_at_lsn(1).unwrap_err();
    assert_eq!(
        (e.kind(), e.path()),
        (ReadErrorKind::Damaged, Some(seg_name(1).as_path()))
    );
}

/// Flips every byte of `path` in turn: opening, viewing and reading either fail or return
/// exactly the model's bytes at every original point.
fn every_flip_is_detected_or_harmless(path: &Path, s: &Standard, journal_order: bool) {
    let b = &s.builder;
    let points = open(b).points().to_vec();
    let len = read_file(b.storage.as_ref(), path).len() as u64;
    let mut detected = 0;
    for offset in 0..len {
        flip_byte(b.storage.as_ref(), path, offset);
        let outcome = replog_reader::Vault::open(b.storage.clone(), b.path()).and_then(|vault| {
            for p in &points {
                let view = vault.view(p)?;
                let expected = b.expected(p.lsn);
                for disk in view.disks() {
                    let mut bytes = vec![0u8; disk.size() as usize];
                    disk.read_at(0, &mut bytes)?;
                    assert!(
                        bytes == expected[&disk.disk_id()],
                        "flip at {offset} read back wrong bytes"
                    );
                }
                // And a failover's read pass: in journal order for a flip in the journal, in
                // disk order (base chunks read in runs) for one in a base.
                let opts = ReadPassOptions {
                    order: if journal_order {
                        ReadOrder::Journal
                    } else {
                        ReadOrder::Disk
                    },
                    ..ReadPassOptions::default()
                };
                for (name, sum) in read_pass(&view, &opts)?.sums {
                    let mut want = ContentSum::new(sum.key());
                    want.add(0, &expected[&view.disk(&name).unwrap().disk_id()]);
                    assert_eq!(
                        sum, want,
                        "flip at {offset} read wrong bytes in a read pass ({:?})",
                        opts.order
                    );
                }
            }
            Ok(())
        });
        if outcome.is_err() {
            detected += 1;
        }
        flip_byte(b.storage.as_ref(), path, offset);
    }
    assert!(detected > 0);
}

#[test]
fn every_flipped_byte_of_the_sealed_segment_is_detected_or_never_read() {
    let s = standard_vault();
    every_flip_is_detected_or_harmless(&s.sealed.path.clone(), &s, true);
}

#[test]
fn every_flipped_byte_of_the_open_segment_is_detected_or_never_read() {
    let s = standard_vault();
    every_flip_is_detected_or_harmless(&s.open.path.clone(), &s, true);
}

#[test]
fn every_flipped_byte_of_a_base_is_detected_or_never_read() {
    let s = standard_vault();
    // Base pieces are never set aside: disk order alone.
    every_flip_is_detected_or_harmless(&layout::base_path(s.builder.path(), 1, 1), &s, false);
}
