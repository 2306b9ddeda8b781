//! End-to-end tests of image formats: `failover --format raw|vhd|qcow2|vhdx|vmdk` and
//! `disk add --from` / `ingest --from` images in other formats than raw.
//!
//! Every image is checked with the real qemu-img: `qemu-img info` for the format and virtual
//! size, `qemu-img check` for the structure, and `qemu-img compare` against a raw failover of
//! the same point. Fixed VHDs are read with `-f vpc` (qemu otherwise takes them for raw). A
//! machine without qemu-img is simulated by running the real binary with `PATH` set to an empty
//! directory.
//!
//! The child runs on its module's backend: `main.rs` builds the file once per backend.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use super::common::{Run, assert_tool_success, compared, entries, expect, failover_latest, s};

const MIB: u64 = 1 << 20;

/// Exit codes of `replog` (see `tools/src/main.rs`).
const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_USAGE: i32 = 64;

/// The disks of the vault: one a whole number of MiB, one that is not (so the VHD is padded).
const DISKS: [(&str, u64); 2] = [("os", 24 * MIB), ("odd", 5 * MIB + 12 * 1024)];

/// The output formats qemu-img writes for replog: `--format` and qemu's name for it.
const QEMU_FORMATS: [(&str, &str); 3] = [("qcow2", "qcow2"), ("vhdx", "vhdx"), ("vmdk", "vmdk")];

// ---------------------------------------------------------------------------------------------
// Running replog and qemu
// ---------------------------------------------------------------------------------------------

/// Runs `replog`, with `PATH` replaced by `path` when given.
fn replog_with_path(path: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = super::replog_command();
    cmd.args(args);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    Run::utf8(cmd.output().expect("the replog binary runs"))
}

fn expect_with_path(path: Option<&Path>, code: i32, args: &[&str]) -> Run {
    replog_with_path(path, args).expect_code(code, args)
}

fn ok(args: &[&str]) -> String {
    expect(EXIT_OK, args).stdout
}

fn json(args: &[&str]) -> Value {
    let stdout = ok(args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "`replog {}` printed bad JSON ({e}): {stdout}",
            args.join(" ")
        )
    })
}

/// Runs a qemu tool; a missing tool fails the test with what to do.
fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} cannot be run ({e}); these tests need qemu-utils: run scripts/setup.sh")
    })
}

fn tool_ok(name: &str, args: &[&str]) -> Output {
    let out = tool(name, args);
    assert_tool_success(name, args, &out);
    out
}

/// Creates an all-zero image of a format.
fn create(format: &str, path: &Path, bytes: u64) {
    tool_ok(
        "qemu-img",
        &["create", "-q", "-f", format, s(path), &bytes.to_string()],
    );
}

/// Applies `qemu-io` commands to an image of a format.
fn qemu_io(format: &str, image: &Path, commands: &[&str]) {
    let mut args = vec!["-f", format];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(s(image));
    tool_ok("qemu-io", &args);
}

/// Creates an all-zero image of a format, then applies `qemu-io` commands to it.
fn image_with(format: &str, path: &Path, bytes: u64, commands: &[&str]) {
    create(format, path, bytes);
    qemu_io(format, path, commands);
}

/// `qemu-img info --output=json -f FORMAT`.
fn info(format: &str, path: &Path) -> Value {
    let out = tool_ok(
        "qemu-img",
        &["info", "--output=json", "-f", format, s(path)],
    );
    serde_json::from_slice(&out.stdout).expect("qemu-img prints JSON")
}

/// `qemu-img compare` of an image (`format`) with a raw one: whether they hold the same bytes.
/// Without strict mode, an extra tail of the larger one must read as zeros.
fn same_content(format: &str, image: &Path, raw: &Path) -> bool {
    let args = ["compare", "-q", "-f", format, "-F", "raw", s(image), s(raw)];
    compared(&args, &tool("qemu-img", &args))
}

fn assert_same_content(format: &str, image: &Path, raw: &Path) {
    assert!(
        same_content(format, image, raw),
        "{} ({format}) differs from {}",
        image.display(),
        raw.display()
    );
}

/// `qemu-img compare` of the first `bytes` of a fixed VHD with a raw image of that size.
fn vhd_prefix_matches(vhd: &Path, bytes: u64, raw: &Path) -> bool {
    let window = format!(
        "driver=raw,size={bytes},file.driver=vpc,file.file.filename={}",
        s(vhd)
    );
    let whole = format!("driver=raw,file.filename={}", s(raw));
    let args = ["compare", "-q", "--image-opts", &whole, &window];
    compared(&args, &tool("qemu-img", &args))
}

/// A directory holding nothing, to stand for a `PATH` where qemu-img is not installed.
fn empty_path_dir(root: &Path) -> PathBuf {
    let dir = root.join("empty-path");
    fs::create_dir_all(&dir).expect("the directory is created");
    dir
}

// ---------------------------------------------------------------------------------------------
// A vault with writes, zeros and holes
// ---------------------------------------------------------------------------------------------

/// A vault with the two disks of `DISKS` at one point, seeded, then changed by an ingest with
/// pattern writes (aligned and not, up to the last byte), zero writes and discards.
fn vault_with_writes_zeros_and_holes(root: &Path) -> PathBuf {
    let vault = root.join("V");
    ok(&["init", s(&vault), "--block-size", "64KiB"]);
    for (name, bytes) in DISKS {
        let image = root.join(format!("src-{name}.raw"));
        create("raw", &image, bytes);
        let last = bytes - 700;
        qemu_io(
            "raw",
            &image,
            &[
                "write -P 0xa1 0 65536",
                "write -P 0xa2 1048577 300000",
                &format!("write -P 0xa3 {last} 700"),
            ],
        );
        ok(&["disk", "add", s(&vault), name, "--from", s(&image)]);
        qemu_io(
            "raw",
            &image,
            &[
                "write -z 4096 8192",
                "write -P 0xb1 3000000 5000",
                "discard 1048576 65536",
                "write -P 0xb2 4194304 4096",
            ],
        );
        ok(&["ingest", s(&vault), name, "--from", s(&image)]);
    }
    ok(&["point", s(&vault)]);
    vault
}

/// A new vault `V` in `root`.
fn new_vault(root: &Path) -> PathBuf {
    let vault = root.join("V");
    ok(&["init", s(&vault)]);
    vault
}

/// The files an import left in the vault directory (its conversions are named `.import-*`).
fn import_leftovers(vault: &Path) -> Vec<String> {
    entries(vault)
        .into_iter()
        .filter(|n| n.starts_with(".import-"))
        .collect()
}

/// Fails over the latest point as raw images into `out`.
fn raw_failover(vault: &Path, out: &Path) {
    ok(&["failover", s(vault), "--latest", "--out", s(out)]);
}

// ---------------------------------------------------------------------------------------------
// Failover formats
// ---------------------------------------------------------------------------------------------

#[test]
fn a_fixed_vhd_is_the_raw_data_padded_to_a_whole_mib_with_a_footer() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = vault_with_writes_zeros_and_holes(tmp.path());
    let raw = tmp.path().join("raw");
    raw_failover(&vault, &raw);
    let out = tmp.path().join("vhd");
    let report = json(&failover_latest(
        &vault,
        &out,
        &["--format", "vhd", "--json"],
    ));
    assert_eq!(report["format"], "vhd", "{report}");
    for (i, (name, bytes)) in DISKS.iter().enumerate() {
        let vhd = out.join(format!("{name}.vhd"));
        let padded = bytes.div_ceil(MIB) * MIB;
        let d = &report["disks"][i];
        assert_eq!(d["name"], *name, "{report}");
        assert_eq!(d["path"], s(&vhd), "{report}");
        assert_eq!(d["format"], "vhd", "{report}");
        assert_eq!(d["size_bytes"], *bytes, "{report}");
        assert_eq!(d["virtual_size_bytes"], padded, "{report}");

        let meta = fs::metadata(&vhd).expect("the VHD exists");
        assert_eq!(
            meta.len(),
            padded + 512,
            "{name}: data rounded to a MiB, then the footer"
        );
        assert!(
            meta.blocks() * 512 < padded / 2,
            "{name}: holes stay holes ({} bytes allocated of {padded})",
            meta.blocks() * 512
        );
        let qemu = info("vpc", &vhd);
        assert_eq!(qemu["format"], "vpc", "{qemu}");
        assert_eq!(
            qemu["virtual-size"], padded,
            "{name}: the exact size: {qemu}"
        );

        let reference = raw.join(format!("{name}.raw"));
        assert!(
            vhd_prefix_matches(&vhd, *bytes, &reference),
            "{name}: the first {bytes} bytes of the VHD are the disk"
        );
        let f = fs::File::open(&vhd).expect("the VHD opens");
        let mut padding = vec![0xffu8; (padded - bytes) as usize];
        f.read_exact_at(&mut padding, *bytes)
            .expect("the padding reads");
        assert!(
            padding.iter().all(|&b| b == 0),
            "{name}: the padding is zeros"
        );
        assert_same_content("vpc", &vhd, &reference);

        let mut footer = [0u8; 512];
        f.read_exact_at(&mut footer, padded)
            .expect("the footer reads");
        assert_eq!(&footer[..8], b"conectix");
        assert_eq!(footer[60..64], [0, 0, 0, 2], "{name}: disk type fixed");
        assert_eq!(footer[48..56], padded.to_be_bytes(), "{name}: current size");
        let sum = footer
            .iter()
            .enumerate()
            .filter(|(i, _)| !(64..68).contains(i))
            .fold(0u32, |a, (_, &b)| a + u32::from(b));
        assert_eq!(footer[64..68], (!sum).to_be_bytes(), "{name}: checksum");
    }
}

#[test]
fn qcow2_vhdx_and_vmdk_hold_the_same_bytes_as_a_raw_failover() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = vault_with_writes_zeros_and_holes(tmp.path());
    let raw = tmp.path().join("raw");
    raw_failover(&vault, &raw);
    for (format, qemu_format) in QEMU_FORMATS {
        let out = tmp.path().join(format);
        let report = json(&failover_latest(
            &vault,
            &out,
            &["--format", format, "--json"],
        ));
        assert_eq!(report["format"], format, "{report}");
        let mut want_files: Vec<String> = DISKS
            .iter()
            .map(|(name, _)| format!("{name}.{format}"))
            .collect();
        want_files.sort();
        assert_eq!(
            entries(&out),
            want_files,
            "only the images, no staging left"
        );
        for (i, (name, bytes)) in DISKS.iter().enumerate() {
            let image = out.join(format!("{name}.{format}"));
            assert_eq!(report["disks"][i]["path"], s(&image), "{report}");
            assert_eq!(report["disks"][i]["format"], format, "{report}");
            let qemu = info(qemu_format, &image);
            assert_eq!(qemu["format"], qemu_format, "{qemu}");
            assert_eq!(qemu["virtual-size"], *bytes, "{name}.{format}: {qemu}");
            tool_ok("qemu-img", &["check", "-q", "-f", qemu_format, s(&image)]);
            assert_same_content(qemu_format, &image, &raw.join(format!("{name}.raw")));
            // qemu detects the format by itself, too.
            let probed = tool_ok("qemu-img", &["info", "--output=json", s(&image)]);
            let probed: Value = serde_json::from_slice(&probed.stdout).expect("JSON");
            assert_eq!(probed["format"], qemu_format, "{probed}");
        }
    }
}

#[test]
fn format_output_refuses_existing_images_without_force_and_leaves_raw_ones_alone() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = vault_with_writes_zeros_and_holes(tmp.path());
    let out = tmp.path().join("out");
    raw_failover(&vault, &out);
    let raw_before = fs::read(out.join("os.raw")).expect("the raw image reads");
    for format in ["vhd", "qcow2"] {
        let args = failover_latest(&vault, &out, &["--format", format]);
        ok(&args);
        let image = out.join(format!("os.{format}"));
        let first = fs::metadata(&image).expect("the image exists").ino();
        let refused = expect(EXIT_FAILED, &args);
        assert!(
            refused.stderr.contains(s(&image)) && refused.stderr.contains("--force"),
            "the refusal names the image and --force: {}",
            refused.stderr
        );
        assert_eq!(
            fs::metadata(&image).expect("still there").ino(),
            first,
            "a refused failover leaves the image alone"
        );
        ok(&[&args[..], &["--force"]].concat());
        assert_ne!(
            fs::metadata(&image).expect("replaced").ino(),
            first,
            "--force replaces the image"
        );
    }
    assert_eq!(
        fs::read(out.join("os.raw")).expect("the raw image reads"),
        raw_before,
        "other formats never touch NAME.raw"
    );
    let leftovers: Vec<String> = entries(&out)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "no staging left: {leftovers:?}");
    assert_same_content("vpc", &out.join("odd.vhd"), &out.join("odd.raw"));
    assert_same_content("qcow2", &out.join("os.qcow2"), &out.join("os.raw"));
}

#[test]
fn without_qemu_img_qemu_formats_say_so_and_raw_and_vhd_still_work() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = vault_with_writes_zeros_and_holes(tmp.path());
    let no_qemu = empty_path_dir(tmp.path());
    let reference = tmp.path().join("reference");
    raw_failover(&vault, &reference);

    for format in ["qcow2", "vhdx", "vmdk"] {
        let out = tmp.path().join(format!("no-{format}"));
        let run = expect_with_path(
            Some(&no_qemu),
            EXIT_FAILED,
            &failover_latest(&vault, &out, &["--format", format]),
        );
        for part in [
            &format!("--format {format} needs qemu-img")[..],
            "apt-get install qemu-utils",
            "raw and vhd are written natively",
        ] {
            assert!(run.stderr.contains(part), "names {part:?}: {}", run.stderr);
        }
        assert!(!out.exists(), "nothing was written before the check");
    }

    let out = tmp.path().join("native");
    for format in ["raw", "vhd"] {
        expect_with_path(
            Some(&no_qemu),
            EXIT_OK,
            &failover_latest(&vault, &out, &["--format", format]),
        );
    }
    for (name, bytes) in DISKS {
        let raw = out.join(format!("{name}.raw"));
        assert_same_content("raw", &raw, &reference.join(format!("{name}.raw")));
        let vhd = out.join(format!("{name}.vhd"));
        assert!(vhd_prefix_matches(&vhd, bytes, &raw), "{name}.vhd");
    }

    // A fixed VHD is read natively too; a qcow2 image is refused, saying why.
    let qcow2 = tmp.path().join("d.qcow2");
    create("qcow2", &qcow2, 4 * MIB);
    let run = expect_with_path(
        Some(&no_qemu),
        EXIT_FAILED,
        &["disk", "add", s(&vault), "q", "--from", s(&qcow2)],
    );
    for part in [s(&qcow2), "qcow2", "needs qemu-img", "--format raw"] {
        assert!(run.stderr.contains(part), "names {part:?}: {}", run.stderr);
    }
    let run = expect_with_path(
        Some(&no_qemu),
        EXIT_FAILED,
        &[
            "disk",
            "add",
            s(&vault),
            "q",
            "--from",
            s(&qcow2),
            "--format",
            "qcow2",
        ],
    );
    assert!(run.stderr.contains("needs qemu-img"), "{}", run.stderr);
    let added = expect_with_path(
        Some(&no_qemu),
        EXIT_OK,
        &[
            "disk",
            "add",
            s(&vault),
            "back",
            "--from",
            s(&out.join("odd.vhd")),
        ],
    );
    assert!(
        added.stdout.contains("from a vhd image"),
        "{}",
        added.stdout
    );
    ok(&["point", s(&vault)]);
    let again = tmp.path().join("again");
    raw_failover(&vault, &again);
    let padded = DISKS[1].1.div_ceil(MIB) * MIB;
    assert_eq!(
        fs::metadata(again.join("back.raw")).expect("exists").len(),
        padded,
        "the VHD's disk is its data, without the footer"
    );
    assert_same_content("raw", &again.join("back.raw"), &reference.join("odd.raw"));
}

// ---------------------------------------------------------------------------------------------
// Importing images
// ---------------------------------------------------------------------------------------------

#[test]
fn disk_add_from_a_qcow2_image_keeps_its_bytes() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = new_vault(tmp.path());
    let image = tmp.path().join("d.qcow2");
    image_with(
        "qcow2",
        &image,
        12 * MIB,
        &[
            "write -P 0x51 0 70000",
            "write -P 0x52 5000000 2000000",
            "write -z 5500000 100000",
            "discard 6291456 65536",
            "write -P 0x53 12582400 512",
        ],
    );
    let added = ok(&["disk", "add", s(&vault), "auto", "--from", s(&image)]);
    assert!(added.contains("from a qcow2 image"), "{added}");
    ok(&[
        "disk",
        "add",
        s(&vault),
        "named",
        "--from",
        s(&image),
        "--format",
        "qcow2",
    ]);
    ok(&["point", s(&vault)]);
    let out = tmp.path().join("out");
    raw_failover(&vault, &out);
    for name in ["auto", "named"] {
        let raw = out.join(format!("{name}.raw"));
        assert_eq!(fs::metadata(&raw).expect("exists").len(), 12 * MIB);
        assert_same_content("qcow2", &image, &raw);
    }
    let leftovers = import_leftovers(&vault);
    assert!(
        leftovers.is_empty(),
        "the conversion's file is removed: {leftovers:?}"
    );
    let verify = expect(EXIT_OK, &["verify", s(&vault)]);
    assert!(verify.stdout.contains("intact"), "{}", verify.stdout);

    // --format raw takes the qcow2 file's own bytes, byte for byte.
    ok(&[
        "disk",
        "add",
        s(&vault),
        "bytes",
        "--from",
        s(&image),
        "--format",
        "raw",
    ]);
    ok(&["point", s(&vault)]);
    let out = tmp.path().join("out2");
    raw_failover(&vault, &out);
    assert_same_content("raw", &image, &out.join("bytes.raw"));
}

#[test]
fn disk_add_from_a_qcow2_with_a_backing_chain_and_refusal_when_the_backing_file_is_gone() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = new_vault(tmp.path());
    let base = tmp.path().join("base.qcow2");
    image_with(
        "qcow2",
        &base,
        8 * MIB,
        &["write -P 0x61 0 3000000", "write -P 0x62 7000000 100000"],
    );
    let top = tmp.path().join("top.qcow2");
    tool_ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&base),
            "-F",
            "qcow2",
            s(&top),
        ],
    );
    qemu_io(
        "qcow2",
        &top,
        &[
            "write -P 0x71 1048576 65536",
            "write -z 2000000 500000",
            "write -P 0x72 8388096 512",
        ],
    );
    ok(&["disk", "add", s(&vault), "top", "--from", s(&top)]);
    ok(&["point", s(&vault)]);
    let out = tmp.path().join("out");
    raw_failover(&vault, &out);
    assert_same_content("qcow2", &top, &out.join("top.raw"));
    assert!(
        !same_content("qcow2", &base, &out.join("top.raw")),
        "the overlay's writes are there, not only the base's"
    );

    let moved = tmp.path().join("moved.qcow2");
    fs::rename(&base, &moved).expect("the base is moved away");
    let run = expect(
        EXIT_FAILED,
        &["disk", "add", s(&vault), "broken", "--from", s(&top)],
    );
    for part in [s(&top), "backing file", s(&base)] {
        assert!(run.stderr.contains(part), "names {part:?}: {}", run.stderr);
    }
    let inspect = json(&["inspect", s(&vault), "--json"]);
    let disks = inspect["disks"].as_array().expect("disks");
    assert_eq!(disks.len(), 1, "the refused disk was not added: {inspect}");
}

/// qemu reads the missing clusters of a truncated qcow2 as zeros; `qemu-img check` finds them.
#[test]
fn a_damaged_qcow2_is_refused_not_read_as_zeros() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = new_vault(tmp.path());
    let image = tmp.path().join("cut.qcow2");
    image_with("qcow2", &image, 8 * MIB, &["write -P 0x41 0 4194304"]);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .expect("the image opens");
    f.set_len(600_000).expect("the image is cut");
    drop(f);
    let run = expect(
        EXIT_FAILED,
        &["disk", "add", s(&vault), "d", "--from", s(&image)],
    );
    for part in [s(&image), "damaged", "qemu-img check", "corrupted"] {
        assert!(run.stderr.contains(part), "names {part:?}: {}", run.stderr);
    }
    let inspect = json(&["inspect", s(&vault), "--json"]);
    assert_eq!(inspect["disks"], Value::Array(Vec::new()), "{inspect}");
    let leftovers = import_leftovers(&vault);
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn disk_add_reads_vmdk_vhdx_and_dynamic_and_fixed_vhd() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = new_vault(tmp.path());
    let source = tmp.path().join("source.raw");
    image_with(
        "raw",
        &source,
        6 * MIB,
        &["write -P 0x81 4096 100000", "write -P 0x82 6290432 1024"],
    );
    let sources = [
        ("vmdk", "vmdk", ""),
        ("vhdx", "vhdx", ""),
        ("dynamic", "vpc", "subformat=dynamic,force_size=on"),
        ("fixed", "vpc", "subformat=fixed,force_size=on"),
    ];
    for (name, format, options) in sources {
        let image = tmp.path().join(format!("{name}.img"));
        let mut args = vec!["convert", "-q", "-f", "raw", "-O", format];
        if !options.is_empty() {
            args.extend(["-o", options]);
        }
        args.extend([s(&source), s(&image)]);
        tool_ok("qemu-img", &args);
        let added = ok(&["disk", "add", s(&vault), name, "--from", s(&image)]);
        let shown = if format == "vpc" { "vhd" } else { format };
        assert!(added.contains(&format!("from a {shown} image")), "{added}");
    }
    ok(&["point", s(&vault)]);
    let out = tmp.path().join("out");
    raw_failover(&vault, &out);
    for (name, _, _) in sources {
        let raw = out.join(format!("{name}.raw"));
        assert_eq!(fs::metadata(&raw).expect("exists").len(), 6 * MIB, "{name}");
        assert_same_content("raw", &raw, &source);
    }
}

#[test]
fn ingest_reads_a_qcow2_image_of_the_disk() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = new_vault(tmp.path());
    let image = tmp.path().join("d.qcow2");
    image_with("qcow2", &image, 8 * MIB, &["write -P 0x91 0 1048576"]);
    ok(&["disk", "add", s(&vault), "d", "--from", s(&image)]);
    ok(&["point", s(&vault)]);
    qemu_io(
        "qcow2",
        &image,
        &["write -P 0x92 2097152 65536", "write -z 0 65536"],
    );
    let report = json(&["ingest", s(&vault), "d", "--from", s(&image), "--json"]);
    assert_eq!(report["image_format"], "qcow2", "{report}");
    assert!(
        report["bytes_changed"].as_u64().expect("a number") >= 2 * 65536,
        "the changes were found: {report}"
    );
    ok(&["point", s(&vault)]);
    let out = tmp.path().join("out");
    raw_failover(&vault, &out);
    assert_same_content("qcow2", &image, &out.join("d.raw"));
}

#[test]
fn unknown_formats_and_format_without_from_are_usage_errors() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = tmp.path().join("V");
    let out = tmp.path().join("out");
    expect(
        EXIT_USAGE,
        &failover_latest(&vault, &out, &["--format", "floppy"]),
    );
    expect(
        EXIT_USAGE,
        &[
            "disk",
            "add",
            s(&vault),
            "d",
            "--size",
            "1MiB",
            "--format",
            "qcow2",
        ],
    );
    expect(
        EXIT_USAGE,
        &[
            "disk",
            "add",
            s(&vault),
            "d",
            "--from",
            "x",
            "--format",
            "floppy",
        ],
    );
    assert!(
        !vault.exists() && !out.exists(),
        "usage errors write nothing"
    );
}
