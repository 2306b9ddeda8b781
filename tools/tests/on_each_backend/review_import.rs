//! Regression tests of importing sparse images: `disk add --from` and `ingest --from` read only
//! the data of a raw image (and of the raw file qemu-img converts another format into), never
//! its holes, and the vault still fails over to the image's exact bytes. The built `replog`
//! binary runs on real sparse files; `--json` reports the bytes it read.
//!
//! qemu-img is required (to convert and compare): without it the tests fail (never skip) and
//! say to run `scripts/setup.sh`.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The virtual size of the sparse images: large enough that reading it whole would show.
const IMAGE_BYTES: u64 = 64 * GIB;
/// What a read may add to the data: the filesystem reports data in whole blocks.
const READ_MARGIN_BYTES: u64 = MIB;

fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn run(program: &str, args: &[&str]) -> Output {
    run_command(program, Command::new(program), args)
}

fn run_command(program: &str, mut cmd: Command, args: &[&str]) -> Output {
    let out = cmd.args(args).output();
    let out = out.unwrap_or_else(|e| {
        panic!("{program} cannot be run ({e}); these tests need qemu-img: run scripts/setup.sh")
    });
    assert!(
        out.status.success(),
        "`{program} {}` failed ({})\nstdout:\n{}\nstderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn replog(args: &[&str]) -> String {
    let out = run_command("replog", super::replog_command(), args);
    String::from_utf8(out.stdout).expect("replog prints UTF-8")
}

fn replog_json(args: &[&str]) -> Value {
    let out = replog(args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("`replog {args:?}` printed {out:?}: {e}"))
}

/// Writes `len` bytes of a pattern (never zero) at `offset`; returns `len`.
fn write_data(image: &fs::File, offset: u64, len: u64, seed: u8) -> u64 {
    let bytes: Vec<u8> = (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed) | 1)
        .collect();
    image
        .write_all_at(&bytes, offset)
        .expect("the data is written");
    len
}

/// A sparse image of [`IMAGE_BYTES`] with data at scattered, unaligned offsets; the data bytes.
fn sparse_image(path: &Path) -> u64 {
    let f = fs::File::create(path).expect("the image is created");
    f.set_len(IMAGE_BYTES).expect("the image is sized");
    [
        (0, MIB, 1),
        (10 * GIB + 12_345, 300 * KIB, 2),
        (33 * GIB + 7, 2 * MIB, 3),
        (IMAGE_BYTES - MIB, MIB, 4),
    ]
    .iter()
    .map(|&(offset, len, seed)| write_data(&f, offset, len, seed))
    .sum()
}

fn bytes_read(json: &Value) -> u64 {
    json["bytes_read"]
        .as_u64()
        .unwrap_or_else(|| panic!("the JSON reports bytes_read: {json}"))
}

/// Fails the vault over at its latest point and checks the image against `want`, byte for byte
/// (`qemu-img compare`, which skips what both sides say is a hole), and that the failed-over
/// image is sparse too.
fn assert_fails_over_to(vault: &Path, disk: &str, want: &Path, data_bytes: u64) {
    let out = vault.with_extension("out");
    let _ = fs::remove_dir_all(&out);
    replog(&["point", s(vault)]);
    replog(&["failover", s(vault), "--latest", "--out", s(&out)]);
    let got = out.join(format!("{disk}.raw"));
    run(
        "qemu-img",
        &["compare", "-q", "-f", "raw", "-F", "raw", s(&got), s(want)],
    );
    let map = run("qemu-img", &["map", "--output=json", "-f", "raw", s(&got)]);
    let extents: Value = serde_json::from_slice(&map.stdout).expect("qemu-img map prints JSON");
    let allocated: u64 = extents
        .as_array()
        .expect("a list of extents")
        .iter()
        .filter(|e| e["data"] == Value::Bool(true))
        .map(|e| e["length"].as_u64().expect("a length"))
        .sum();
    assert!(
        allocated <= data_bytes + 16 * 64 * KIB,
        "the failed-over image holds {allocated} bytes of data for {data_bytes}: its holes were filled"
    );
}

/// The bug: `disk add` and `ingest` read every byte of a sparse image, holes included (a 1 TiB
/// image with little data took about 18 minutes). Now they read its data only.
#[test]
fn finding_7_a_sparse_raw_image_is_imported_without_reading_its_holes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = dir.path().join("sparse.raw");
    let mut data = sparse_image(&image);
    let vault = dir.path().join("V");
    replog(&["init", s(&vault)]);
    let added = replog_json(&[
        "disk",
        "add",
        s(&vault),
        "os",
        "--from",
        s(&image),
        "--json",
    ]);
    assert_eq!(added["disk_bytes"].as_u64(), Some(IMAGE_BYTES));
    assert!(
        bytes_read(&added) <= data + READ_MARGIN_BYTES,
        "disk add read {} bytes of an image holding {data}",
        bytes_read(&added)
    );
    assert_fails_over_to(&vault, "os", &image, data);

    let f = fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .expect("the image opens");
    data += write_data(&f, 20 * GIB + 999, 700 * KIB, 5);
    write_data(&f, 33 * GIB + 7, 64 * KIB, 6);
    drop(f);
    let ingested = replog_json(&["ingest", s(&vault), "os", "--from", s(&image), "--json"]);
    assert!(
        bytes_read(&ingested) <= data + READ_MARGIN_BYTES,
        "ingest read {} bytes of an image holding {data}",
        bytes_read(&ingested)
    );
    assert_eq!(ingested["bytes_scanned"].as_u64(), Some(IMAGE_BYTES));
    assert_fails_over_to(&vault, "os", &image, data);
}

/// The same through qemu-img: a qcow2 image is converted to a sparse raw file, whose holes are
/// not read either.
#[test]
fn finding_7_a_converted_image_is_imported_without_reading_its_holes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let raw = dir.path().join("sparse.raw");
    let data = sparse_image(&raw);
    let qcow2 = dir.path().join("sparse.qcow2");
    run(
        "qemu-img",
        &["convert", "-f", "raw", "-O", "qcow2", s(&raw), s(&qcow2)],
    );
    let vault = dir.path().join("V");
    replog(&["init", s(&vault)]);
    let added = replog_json(&[
        "disk",
        "add",
        s(&vault),
        "os",
        "--from",
        s(&qcow2),
        "--json",
    ]);
    assert_eq!(added["image_format"].as_str(), Some("qcow2"));
    assert!(
        bytes_read(&added) <= data + READ_MARGIN_BYTES,
        "disk add read {} bytes of the converted image holding {data}",
        bytes_read(&added)
    );
    let ingested = replog_json(&["ingest", s(&vault), "os", "--from", s(&qcow2), "--json"]);
    assert!(
        bytes_read(&ingested) <= data + READ_MARGIN_BYTES,
        "ingest read {} bytes of the converted image holding {data}",
        bytes_read(&ingested)
    );
    assert_eq!(ingested["bytes_changed"].as_u64(), Some(0), "{ingested}");
    assert_fails_over_to(&vault, "os", &raw, data);
}
