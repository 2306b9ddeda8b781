//! Source images of every kind read back as the bytes written, with the real qemu-img; damaged
//! and hostile VHD footers are refused with the kind a caller matches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_image::{ImageErrorKind, SourceFormat, qemu_img, vhd};
use replog_io::Storage;

const MIB: usize = 1 << 20;

fn storage() -> Arc<dyn Storage> {
    replog_io::backend("sync").expect("the sync backend")
}

/// Two MiB with data in the first and last 64 KiB and a hole between.
fn disk_bytes() -> Vec<u8> {
    let mut bytes = vec![0u8; 2 * MIB];
    for (i, b) in bytes[..65536].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    bytes[2 * MIB - 65536..].fill(0xa5);
    bytes
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("the image is written");
    path
}

/// All the bytes a source presents, and the format it was read as.
fn read_all(image: &Path, format: SourceFormat, scratch: &Path) -> (Vec<u8>, String) {
    let source = replog_image::open(storage().as_ref(), image, format, scratch)
        .unwrap_or_else(|e| panic!("{} opens: {e}", image.display()));
    let len = source.file.len().expect("a length");
    let mut bytes = vec![0u8; usize::try_from(len).expect("fits")];
    source.file.read_exact_at(&mut bytes, 0).expect("reads");
    (bytes, source.format.clone())
}

#[test]
fn auto_detects_raw_fixed_vhd_qcow2_and_vmdk() {
    qemu_img::check().expect("qemu-img is installed for these tests");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = disk_bytes();
    let raw = write(dir.path(), "disk.raw", &data);
    let mut vhd_bytes = data.clone();
    vhd_bytes.extend_from_slice(&vhd::encode_fixed_footer(2 * MIB as u64, 0, [3; 16]));
    let fixed = write(dir.path(), "disk.vhd", &vhd_bytes);
    let mut cases = vec![(raw.clone(), "raw"), (fixed, "vhd")];
    for format in ["qcow2", "vmdk"] {
        let out = dir.path().join(format!("disk.{format}"));
        qemu_img::convert(&raw, "raw", &out, format, None, qemu_img::Cache::Unsafe)
            .expect("qemu-img writes the image");
        cases.push((out, format));
    }
    for (image, want) in cases {
        let (bytes, format) = read_all(&image, SourceFormat::Auto, dir.path());
        assert_eq!(format, want, "{}", image.display());
        assert!(bytes == data, "{} reads back as written", image.display());
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("listable")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".import-"))
        .collect();
    assert!(left.is_empty(), "conversion scratch files are removed");
}

/// raw -> qcow2/vmdk by qemu-img, read back through the crate; and the crate's raw view
/// converted back by qemu-img equals the original.
#[test]
fn qcow2_and_vmdk_round_trip_both_ways_through_qemu_img() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = disk_bytes();
    let raw = write(dir.path(), "disk.raw", &data);
    for (format, options) in [
        ("qcow2", None),
        ("vmdk", Some("subformat=monolithicSparse")),
    ] {
        let image = dir.path().join(format!("out.{format}"));
        qemu_img::convert(&raw, "raw", &image, format, options, qemu_img::Cache::Flush)
            .expect("qemu-img writes the image");
        let asked = if format == "qcow2" {
            SourceFormat::Qcow2
        } else {
            SourceFormat::Vmdk
        };
        let (bytes, read_as) = read_all(&image, asked, dir.path());
        assert_eq!(read_as, format);
        assert!(bytes == data, "{format} reads back as the raw image");
        let back = write(dir.path(), &format!("back-{format}.raw"), &bytes);
        let again = dir.path().join(format!("again.{format}"));
        qemu_img::convert(
            &back,
            "raw",
            &again,
            format,
            options,
            qemu_img::Cache::Unsafe,
        )
        .expect("qemu-img converts the read bytes");
        let info = qemu_img::info(&again, Some(format), false, qemu_img::Lock::Shared)
            .expect("qemu-img reads its own image");
        assert_eq!(info["virtual-size"].as_u64(), Some(2 * MIB as u64));
        let (twice, _) = read_all(&again, asked, dir.path());
        assert!(twice == data, "{format} survives a second round trip");
    }
}

#[test]
fn a_truncated_fixed_vhd_is_refused_as_truncated() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = disk_bytes();
    // The footer of a 2 MiB disk after only 1 MiB of data: the file was cut short.
    let mut bytes = data[..MIB].to_vec();
    bytes.extend_from_slice(&vhd::encode_fixed_footer(2 * MIB as u64, 0, [3; 16]));
    let image = write(dir.path(), "cut.vhd", &bytes);
    for format in [SourceFormat::Vhd, SourceFormat::Raw] {
        let opened = replog_image::open(storage().as_ref(), &image, format, dir.path());
        if format == SourceFormat::Raw {
            let source = opened.expect("raw takes the bytes as they are");
            assert_eq!(source.file.len().expect("a length"), bytes.len() as u64);
            continue;
        }
        let err = opened.expect_err("a truncated VHD");
        assert_eq!(err.kind(), ImageErrorKind::Truncated, "{err}");
        assert_eq!(err.path(), Some(image.as_path()));
        assert_eq!(err.offset(), Some(MIB as u64));
    }
}

/// A footer whose checksum holds but whose size is far beyond the file (up to u64::MAX) is
/// refused, never read as a disk that large; a footer with a bad checksum is a bad footer.
#[test]
fn hostile_vhd_footer_fields_are_refused() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for size in [4 * MIB as u64, 1 << 40, u64::MAX - 511] {
        let mut footer = vhd::encode_fixed_footer(512, 0, [9; 16]);
        footer[48..56].copy_from_slice(&size.to_be_bytes());
        let sum = vhd::checksum(&footer);
        footer[64..68].copy_from_slice(&sum.to_be_bytes());
        let mut bytes = vec![0u8; 4096];
        bytes.extend_from_slice(&footer);
        let image = write(dir.path(), "hostile.vhd", &bytes);
        let err = replog_image::open(storage().as_ref(), &image, SourceFormat::Vhd, dir.path())
            .expect_err("a size beyond the file");
        assert_eq!(err.kind(), ImageErrorKind::Truncated, "{size}: {err}");
    }
    let mut footer = vhd::encode_fixed_footer(4096, 0, [9; 16]);
    footer[48] ^= 0x80;
    let mut bytes = vec![0u8; 4096];
    bytes.extend_from_slice(&footer);
    let image = write(dir.path(), "bad-sum.vhd", &bytes);
    let err = replog_image::open(storage().as_ref(), &image, SourceFormat::Auto, dir.path())
        .expect_err("a damaged footer");
    assert_eq!(err.kind(), ImageErrorKind::BadFooter, "{err}");
    assert_eq!(err.offset(), Some(4096));
}

#[test]
fn a_missing_image_is_not_found() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = dir.path().join("absent.raw");
    let err = replog_image::open(storage().as_ref(), &image, SourceFormat::Auto, dir.path())
        .expect_err("no such image");
    assert_eq!(err.kind(), ImageErrorKind::NotFound, "{err}");
}
