//! End-to-end tests of the `replog` binary. Disks are real raw images, created with `qemu-img`
//! and changed with `qemu-io`; after every recovery point the images are copied aside, and every
//! point is failed over and compared byte for byte with `qemu-img compare`. Nothing is mocked:
//! each test runs the built binary as a child process, in a fresh temporary directory.
//!
//! The child runs on its module's backend (`main.rs` builds the file once per backend); the
//! backend tests pin theirs with `--backend sync` or `REPLOG_IO_BACKEND=uring`.
//!
//! `qemu-img` and `qemu-io` are required: without them the tests fail (never skip) and say to run
//! `scripts/setup.sh`.

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

use super::common::{
    Run, assert_tool_success, compared, failover_latest, require_tools, run_program, s,
};

const MIB: u64 = 1 << 20;

/// Exit codes of `replog` (see `tools/src/main.rs`).
const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_DAMAGED: i32 = 2;
const EXIT_USAGE: i32 = 64;

// ---------------------------------------------------------------------------------------------
// Running replog
// ---------------------------------------------------------------------------------------------

/// How `replog` is started: leading arguments and environment variables, so one test body can run
/// against each I/O backend.
#[derive(Clone, Debug, Default)]
struct Replog {
    leading: Vec<String>,
    env: Vec<(String, String)>,
}

impl Replog {
    fn with_backend_flag(backend: &str) -> Replog {
        Replog {
            leading: vec!["--backend".into(), backend.into()],
            env: Vec::new(),
        }
    }

    fn with_backend_env(backend: &str) -> Replog {
        Replog {
            leading: Vec::new(),
            env: vec![("REPLOG_IO_BACKEND".into(), backend.into())],
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        let out = super::replog_command()
            .args(&self.leading)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("the replog binary runs");
        Run::utf8(out)
    }

    /// Runs and asserts the exit code, showing everything the command printed when it differs.
    fn expect(&self, code: i32, args: &[&str]) -> Run {
        self.run(args).expect_code(code, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        self.expect(EXIT_OK, args).stdout
    }

    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "`replog {}` printed invalid JSON ({e}):\n{stdout}",
                args.join(" ")
            )
        })
    }
}

/// `replog` with the environment the test runs in.
fn replog() -> Replog {
    Replog::default()
}

// ---------------------------------------------------------------------------------------------
// qemu-img and qemu-io
// ---------------------------------------------------------------------------------------------

/// Fails the test, with what to do, when qemu-img or qemu-io cannot run.
fn require_qemu() {
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    require_tools(&FOUND, &["qemu-img", "qemu-io"]);
}

fn run_tool(tool: &str, args: &[&str]) -> Output {
    require_qemu();
    run_program(tool, args)
}

/// Creates a sparse, all-zero raw image.
fn create_image(path: &Path, bytes: u64) {
    let size = bytes.to_string();
    let args = ["create", "-q", "-f", "raw", s(path), &size];
    assert_tool_success("qemu-img", &args, &run_tool("qemu-img", &args));
}

/// Applies `qemu-io` commands (`write -P 0xab OFF LEN`, `write -z OFF LEN`, `discard OFF LEN`).
fn qemu_io(image: &Path, commands: &[&str]) {
    if commands.is_empty() {
        return;
    }
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(s(image));
    assert_tool_success("qemu-io", &args, &run_tool("qemu-io", &args));
}

/// Whether two raw images hold the same bytes, by `qemu-img compare` (0 identical, 1 different).
fn identical(a: &Path, b: &Path) -> bool {
    let args = ["compare", "-q", "-f", "raw", "-F", "raw", s(a), s(b)];
    compared(&args, &run_tool("qemu-img", &args))
}

fn assert_identical(got: &Path, want: &Path, what: &str) {
    assert!(
        identical(got, want),
        "{what}: {} differs from the expected {}",
        got.display(),
        want.display()
    );
}

/// `qemu-img info --output=json`.
fn image_info(path: &Path) -> Value {
    let args = ["info", "--output=json", "-f", "raw", s(path)];
    let out = run_tool("qemu-img", &args);
    assert_tool_success("qemu-img", &args, &out);
    serde_json::from_slice(&out.stdout).expect("qemu-img prints JSON")
}

/// Copies an image keeping its holes, as the expected content at a point.
fn copy_sparse(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .args(["--sparse=always", s(from), s(to)])
        .status()
        .expect("cp runs");
    assert!(
        status.success(),
        "cp {} {} failed",
        from.display(),
        to.display()
    );
}

/// XORs one byte of a file with 0xff: a flipped byte that is certain to differ.
fn flip_byte(path: &Path, offset: u64) {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("the file opens");
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, offset)
        .expect("the byte is inside the file");
    byte[0] ^= 0xff;
    f.write_all_at(&byte, offset).expect("the byte is written");
}

// ---------------------------------------------------------------------------------------------
// The lifecycle scenario
// ---------------------------------------------------------------------------------------------

/// The disks of the scenario: name and size.
const DISKS: [(&str, u64); 2] = [("os", 32 * MIB), ("data", 8 * MIB)];

/// What is on the disks before the vault is created.
const SEED: [&[&str]; 2] = [
    &["write -P 0xab 4097 65536", "write -P 0xac 4194304 1048576"],
    &["write -P 0xba 0 200000"],
];

/// Changes per cycle, per disk (same order as `DISKS`): pattern writes at aligned and unaligned
/// offsets, across chunk boundaries and up to the end of the disk, zero writes and discards.
/// The last cycle leaves `os` unchanged (its ingest must find nothing to journal).
const CYCLES: [[&[&str]; 2]; 4] = [
    [
        &["write -P 0x11 12345 70001", "write -P 0x12 1048576 131072"],
        &["write -P 0x21 0 4096"],
    ],
    [
        &[
            "write -z 12000 30000",
            "discard 4194304 65536",
            "write -P 0x13 33554000 432",
        ],
        &["write -P 0x22 4095 2", "write -z 100000 50000"],
    ],
    [
        &[
            "write -P 0x14 65535 3",
            "write -z 4259840 524288",
            "discard 1048576 4096",
        ],
        &["discard 0 65536", "write -P 0x23 8323072 65536"],
    ],
    [&[], &["write -P 0x24 7000000 1000000"]],
];

/// One recovery point and copies of the images as they were when it was taken (per disk).
#[derive(Debug)]
struct Expected {
    id: u64,
    app_consistent: bool,
    copies: Vec<PathBuf>,
}

/// A vault built by the lifecycle scenario, with the expected content at each of its points.
#[derive(Debug)]
struct Scenario {
    root: PathBuf,
    vault: PathBuf,
    images: Vec<PathBuf>,
    points: Vec<Expected>,
}

/// Creates the images, the vault (with `init_args`) and its disks, takes the `seeded` point, then
/// runs every cycle of `CYCLES`: change the images, ingest, take a point, copy the images aside.
fn build_scenario(r: &Replog, root: &Path, init_args: &[&str]) -> Scenario {
    let vault = root.join("V");
    let images: Vec<PathBuf> = DISKS
        .iter()
        .map(|(name, _)| root.join(format!("{name}.raw")))
        .collect();
    for ((image, (_, bytes)), seed) in images.iter().zip(DISKS).zip(SEED) {
        create_image(image, bytes);
        qemu_io(image, seed);
    }
    r.ok(&[&["init", s(&vault)][..], init_args].concat());
    for (image, (name, _)) in images.iter().zip(DISKS) {
        r.ok(&["disk", "add", s(&vault), name, "--from", s(image)]);
    }
    fs::create_dir(root.join("expected")).expect("the directory is created");
    let mut sc = Scenario {
        root: root.to_owned(),
        vault,
        images,
        points: Vec::new(),
    };
    let id = parse_id(&r.ok(&["point", s(&sc.vault), "--label", "seeded"]));
    sc.snapshot(id, false);
    for (cycle, changes) in CYCLES.iter().enumerate() {
        for ((image, (name, _)), commands) in sc.images.iter().zip(DISKS).zip(changes) {
            qemu_io(image, commands);
            r.ok(&["ingest", s(&sc.vault), name, "--from", s(image)]);
        }
        let app_consistent = cycle % 2 == 1;
        let mut args = vec!["point", s(&sc.vault)];
        if app_consistent {
            args.push("--app-consistent");
        }
        let id = parse_id(&r.ok(&args));
        sc.snapshot(id, app_consistent);
    }
    sc
}

fn parse_id(stdout: &str) -> u64 {
    stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("`replog point` printed {stdout:?}, not an id: {e}"))
}

impl Scenario {
    /// Copies the images aside as the expected content at point `id`.
    fn snapshot(&mut self, id: u64, app_consistent: bool) {
        let copies = DISKS
            .iter()
            .zip(&self.images)
            .map(|((name, _), image)| {
                let copy = self.root.join("expected").join(format!("p{id}-{name}.raw"));
                copy_sparse(image, &copy);
                copy
            })
            .collect();
        if let Some(last) = self.points.last() {
            assert!(id > last.id, "point ids increase: {id} after {}", last.id);
        }
        self.points.push(Expected {
            id,
            app_consistent,
            copies,
        });
    }

    /// Asserts that every disk failed over into `out` equals the copies of `expected`.
    fn assert_failover_matches(&self, out: &Path, expected: &Expected) {
        for ((name, _), copy) in DISKS.iter().zip(&expected.copies) {
            assert_identical(
                &out.join(format!("{name}.raw")),
                copy,
                &format!("disk {name} at point {}", expected.id),
            );
        }
    }
}

/// Checks `points --json` against the points the scenario took, and returns it.
fn check_points_listing(r: &Replog, sc: &Scenario) -> Vec<Value> {
    let listed = r.json(&["points", s(&sc.vault), "--json"]);
    let listed = listed
        .as_array()
        .expect("points --json prints an array")
        .clone();
    assert_eq!(
        listed.len(),
        sc.points.len(),
        "one entry per point: {listed:?}"
    );
    let mut lsn_before = 0;
    for (i, (p, want)) in listed.iter().zip(&sc.points).enumerate() {
        let keys: Vec<&str> = p
            .as_object()
            .expect("a point is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["chain", "id", "kind", "label", "lsn", "time"],
            "keys of {p}"
        );
        let chain = p["chain"].as_str().expect("a chain hash");
        assert!(
            chain.len() == 64 && chain.bytes().all(|b| b.is_ascii_hexdigit()),
            "{p}"
        );
        assert_eq!(p["id"], want.id, "{p}");
        let lsn = p["lsn"].as_u64().expect("lsn is a number");
        assert!(
            lsn > lsn_before,
            "LSNs increase: {p} after LSN {lsn_before}"
        );
        lsn_before = lsn;
        let time = p["time"].as_str().expect("time is a string");
        time.parse::<jiff::Timestamp>()
            .unwrap_or_else(|e| panic!("time {time:?} is not RFC 3339: {e}"));
        let kind = if want.app_consistent {
            "app-consistent"
        } else {
            "crash-consistent"
        };
        assert_eq!(p["kind"], kind, "{p}");
        assert_eq!(p["label"], if i == 0 { "seeded" } else { "" }, "{p}");
    }
    listed
}

/// Fails over to every point by id and compares every disk with its copy.
fn check_failover_of_every_point(r: &Replog, sc: &Scenario) {
    for want in &sc.points {
        let out = sc.root.join(format!("failover-{}", want.id));
        r.ok(&[
            "failover",
            s(&sc.vault),
            "--point",
            &want.id.to_string(),
            "--out",
            s(&out),
        ]);
        sc.assert_failover_matches(&out, want);
    }
}

/// Runs the scenario in `root` and checks every point, `--latest` (into `root/latest`) and `verify`.
fn lifecycle_fails_over_exactly(r: &Replog, root: &Path, init_args: &[&str]) -> Scenario {
    let sc = build_scenario(r, root, init_args);
    check_points_listing(r, &sc);
    check_failover_of_every_point(r, &sc);
    let out = root.join("latest");
    let result = r.json(&[
        "failover",
        s(&sc.vault),
        "--latest",
        "--out",
        s(&out),
        "--json",
    ]);
    let last = sc.points.last().expect("the scenario takes points");
    assert_eq!(
        result["point"]["id"], last.id,
        "--latest selects the newest point: {result}"
    );
    sc.assert_failover_matches(&out, last);
    r.ok(&["verify", s(&sc.vault)]);
    sc
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn lifecycle_every_point_fails_over_to_the_exact_images() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let sc = lifecycle_fails_over_exactly(&r, tmp.path(), &[]);
    let listed = check_points_listing(&r, &sc);

    // --at with a point's own time selects that point, for every point.
    for (p, want) in listed.iter().zip(&sc.points) {
        let time = p["time"].as_str().expect("time is a string");
        let out = sc.root.join(format!("at-{}", want.id));
        let result = r.json(&[
            "failover",
            s(&sc.vault),
            "--at",
            time,
            "--out",
            s(&out),
            "--json",
        ]);
        assert_eq!(
            result["point"]["id"], want.id,
            "--at {time} selects point {}: {result}",
            want.id
        );
        sc.assert_failover_matches(&out, want);
    }
    let before = r.expect(
        EXIT_FAILED,
        &[
            "failover",
            s(&sc.vault),
            "--at",
            "2000-01-01T00:00:00Z",
            "--out",
            s(&sc.root.join("never")),
        ],
    );
    assert!(
        before.stderr.contains("no recovery point at or before"),
        "{}",
        before.stderr
    );

    // The output is raw, of the disk's size, and sparse: `os` is mostly empty.
    let latest = sc.root.join("latest");
    for (name, bytes) in DISKS {
        let info = image_info(&latest.join(format!("{name}.raw")));
        assert_eq!(info["format"], "raw", "{info}");
        assert_eq!(info["virtual-size"], bytes, "{info}");
    }
    let os = fs::metadata(latest.join("os.raw")).expect("the output exists");
    let allocated_bytes = os.blocks() * 512;
    assert!(
        allocated_bytes < DISKS[0].1 / 4,
        "os.raw is not sparse: {allocated_bytes} of {} bytes allocated",
        DISKS[0].1
    );
}

#[test]
fn lifecycle_with_small_segments_rolls_over_and_fails_over_exactly() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let sc = lifecycle_fails_over_exactly(&r, tmp.path(), &["--segment-size", "64KiB"]);
    let inspect = r.json(&["inspect", s(&sc.vault), "--json"]);
    assert_eq!(inspect["segment_bytes"], 64 * 1024, "{inspect}");
    let segments = inspect["segments"].as_u64().expect("segments is a number");
    let sealed = inspect["sealed_segments"]
        .as_u64()
        .expect("sealed_segments is a number");
    assert!(
        segments > 5,
        "the ingests roll over many segments: {inspect}"
    );
    assert!(
        sealed >= segments - 1,
        "all but the last segment are sealed: {inspect}"
    );
    let files = fs::read_dir(sc.vault.join("journal"))
        .expect("journal/ lists")
        .count() as u64;
    assert_eq!(files, segments, "one file per segment");
}

#[test]
fn lifecycle_with_lz4_compression_fails_over_exactly() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let sc = lifecycle_fails_over_exactly(&replog(), tmp.path(), &["--compression", "lz4"]);
    let inspect = replog().json(&["inspect", s(&sc.vault), "--json"]);
    assert_eq!(inspect["compression"], "lz4", "{inspect}");
}

#[test]
fn lifecycle_with_sync_backend_fails_over_exactly() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    lifecycle_fails_over_exactly(&Replog::with_backend_flag("sync"), tmp.path(), &[]);
}

#[test]
fn lifecycle_with_uring_backend_fails_over_exactly() {
    let r = Replog::with_backend_env("uring");
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let probe = r.run(&["init", s(&tmp.path().join("probe"))]);
    if probe.code != EXIT_OK {
        assert!(
            probe.stderr.contains("uring I/O backend is unavailable"),
            "uring init failed for another reason: {}",
            probe.stderr
        );
        eprintln!(
            "note: io_uring is unavailable here, so the uring lifecycle is not run: {}",
            probe.stderr.trim()
        );
        return;
    }
    let root = tmp.path().join("lifecycle");
    fs::create_dir(&root).expect("the directory is created");
    lifecycle_fails_over_exactly(&r, &root, &[]);
}

#[test]
fn ingest_json_counts_changed_bytes_and_zero_when_unchanged() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, image) = (tmp.path().join("V"), tmp.path().join("d.raw"));
    let disk_bytes = 16 * MIB;
    create_image(&image, disk_bytes);
    r.ok(&["init", s(&vault)]);
    r.ok(&["disk", "add", s(&vault), "d", "--from", s(&image)]);
    let ingest = ["ingest", s(&vault), "d", "--from", s(&image), "--json"];

    let unchanged = r.json(&ingest);
    assert_eq!(unchanged["bytes_scanned"], disk_bytes, "{unchanged}");
    assert_eq!(
        unchanged["bytes_changed"], 0,
        "nothing changed since disk add: {unchanged}"
    );

    qemu_io(
        &image,
        &["write -P 0x5a 70000 1000", "write -P 0x5b 5242880 131072"],
    );
    let changed = r.json(&ingest);
    assert_eq!(changed["disk"], "d", "{changed}");
    assert_eq!(changed["bytes_scanned"], disk_bytes, "{changed}");
    let changed_bytes = changed["bytes_changed"]
        .as_u64()
        .expect("bytes_changed is a number");
    assert!(
        changed_bytes >= 1000 + 131072,
        "at least the bytes written changed: {changed}"
    );
    assert!(
        changed["records"].as_u64().expect("records is a number") > 0,
        "{changed}"
    );

    let again = r.json(&ingest);
    assert_eq!(again["bytes_scanned"], disk_bytes, "{again}");
    assert_eq!(
        again["bytes_changed"], 0,
        "the second ingest in a row finds nothing: {again}"
    );
    assert_eq!(again["records"], 0, "{again}");
}

#[test]
fn empty_disk_added_by_size_fails_over_as_zeros() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = tmp.path().join("V");
    r.ok(&["init", s(&vault)]);
    let added = r.ok(&["disk", "add", s(&vault), "empty", "--size", "16MiB"]);
    assert!(added.contains("16777216 bytes"), "{added}");
    r.ok(&["point", s(&vault)]);
    let out = tmp.path().join("out");
    r.ok(&["failover", s(&vault), "--latest", "--out", s(&out)]);
    let zeros = tmp.path().join("zeros.raw");
    create_image(&zeros, 16 * MIB);
    let failed_over = out.join("empty.raw");
    assert_identical(&failed_over, &zeros, "an empty disk");
    assert_eq!(image_info(&failed_over)["virtual-size"], 16 * MIB);
}

#[test]
fn failover_refuses_to_overwrite_output_without_force() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, image, out) = (
        tmp.path().join("V"),
        tmp.path().join("d.raw"),
        tmp.path().join("out"),
    );
    create_image(&image, 8 * MIB);
    qemu_io(&image, &["write -P 0x42 1000 50000"]);
    r.ok(&["init", s(&vault)]);
    r.ok(&["disk", "add", s(&vault), "d", "--from", s(&image)]);
    r.ok(&["point", s(&vault)]);

    fs::create_dir(&out).expect("the directory is created");
    let existing = out.join("d.raw");
    fs::write(&existing, b"precious").expect("the file is written");
    let refused = r.expect(
        EXIT_FAILED,
        &["failover", s(&vault), "--latest", "--out", s(&out)],
    );
    assert!(
        refused.stderr.contains(s(&existing)),
        "the message names the file: {}",
        refused.stderr
    );
    assert_eq!(
        fs::read(&existing).expect("the file reads"),
        b"precious",
        "a refused failover leaves the file alone"
    );

    r.ok(&failover_latest(&vault, &out, &["--force"]));
    assert_identical(&existing, &image, "a forced failover");
}

#[test]
fn failover_rejects_missing_selector_unknown_point_and_bad_time() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, out) = (tmp.path().join("V"), tmp.path().join("out"));
    r.ok(&["init", s(&vault)]);
    r.ok(&["disk", "add", s(&vault), "d", "--size", "1MiB"]);

    let none_yet = r.expect(
        EXIT_FAILED,
        &["failover", s(&vault), "--latest", "--out", s(&out)],
    );
    assert!(
        none_yet.stderr.contains("no recovery point yet"),
        "{}",
        none_yet.stderr
    );
    r.ok(&["point", s(&vault)]);

    let usage = r.expect(EXIT_USAGE, &["failover", s(&vault), "--out", s(&out)]);
    assert!(
        usage.stderr.contains("--latest"),
        "the usage error lists the selectors: {}",
        usage.stderr
    );
    r.expect(
        EXIT_USAGE,
        &[
            "failover",
            s(&vault),
            "--latest",
            "--point",
            "1",
            "--out",
            s(&out),
        ],
    );

    let unknown = r.expect(
        EXIT_FAILED,
        &["failover", s(&vault), "--point", "99", "--out", s(&out)],
    );
    assert!(
        unknown.stderr.contains("no recovery point 99"),
        "{}",
        unknown.stderr
    );
    assert!(
        unknown.stderr.contains(s(&vault)),
        "the message names the vault: {}",
        unknown.stderr
    );

    let bad_time = r.expect(
        EXIT_FAILED,
        &["failover", s(&vault), "--at", "yesterday", "--out", s(&out)],
    );
    assert!(bad_time.stderr.contains("RFC 3339"), "{}", bad_time.stderr);
    assert!(!out.exists(), "no failover wrote output");
}

/// A one-disk vault whose journal holds a write record with a later record after it: point 1
/// (seeded), a change, point 2. Returns the vault and the copies of the image at points 1 and 2.
fn vault_with_one_change(r: &Replog, root: &Path) -> (PathBuf, [PathBuf; 2]) {
    let (vault, image) = (root.join("V"), root.join("d.raw"));
    create_image(&image, 8 * MIB);
    qemu_io(&image, &["write -P 0x31 0 1048576"]);
    r.ok(&["init", s(&vault)]);
    r.ok(&["disk", "add", s(&vault), "d", "--from", s(&image)]);
    r.ok(&["point", s(&vault)]);
    let at_1 = root.join("p1.raw");
    copy_sparse(&image, &at_1);
    qemu_io(&image, &["write -P 0x44 2097152 262144"]);
    r.ok(&["ingest", s(&vault), "d", "--from", s(&image)]);
    r.ok(&["point", s(&vault)]);
    let at_2 = root.join("p2.raw");
    copy_sparse(&image, &at_2);
    (vault, [at_1, at_2])
}

/// The one file under `dir` whose name ends with `suffix`.
fn only_file(dir: &Path, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .expect("the directory lists")
        .map(|e| e.expect("the entry reads").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {suffix} file in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().expect("one file")
}

/// Asserts `verify` (text and JSON) reports damage in `file` at `offset`, and nothing else.
fn assert_verify_finds(r: &Replog, vault: &Path, file: &Path, offset: u64) {
    let name = file
        .file_name()
        .expect("a file name")
        .to_str()
        .expect("UTF-8");
    let text = r.expect(EXIT_DAMAGED, &["verify", s(vault)]);
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with("DAMAGED:") && l.contains(name));
    let line = line.unwrap_or_else(|| panic!("verify names {name}:\n{}", text.stdout));
    assert!(
        line.contains(&format!("at byte {offset}")),
        "verify names offset {offset}: {line}"
    );

    let report = r.run(&["verify", s(vault), "--json"]);
    assert_eq!(
        report.code, EXIT_DAMAGED,
        "verify --json exits 2 on damage: {}",
        report.stderr
    );
    let report: Value = serde_json::from_str(&report.stdout).expect("verify --json prints JSON");
    assert_eq!(report["intact"], false, "{report}");
    let findings = report["findings"].as_array().expect("findings is an array");
    assert_eq!(findings.len(), 1, "one flipped byte, one finding: {report}");
    assert!(
        findings[0]["file"]
            .as_str()
            .expect("file is a string")
            .ends_with(name),
        "{report}"
    );
    assert_eq!(findings[0]["offset"], offset, "{report}");
    assert_eq!(findings[0]["severity"], "damage", "{report}");
}

#[test]
fn verify_and_failover_report_a_flipped_journal_byte_by_file_and_offset() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, copies) = vault_with_one_change(&r, tmp.path());
    r.ok(&["verify", s(&vault)]);

    let records: Vec<Value> = r
        .ok(&["dump", s(&vault), "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let write = records
        .iter()
        .find(|rec| rec["kind"] == "write")
        .expect("the ingest wrote a write record");
    let record_offset = write["offset"].as_u64().expect("offset is a number");
    let stored_bytes = write["stored"].as_u64().expect("stored is a number");
    let segment = only_file(&vault.join("journal"), ".seg");
    // The middle of the payload, which follows the 64-byte record header.
    let flipped = record_offset + 64 + stored_bytes / 2;
    flip_byte(&segment, flipped);

    let out = tmp.path().join("out");
    assert_damage_found_and_undone(&r, &vault, &segment, (flipped, record_offset), 2, &out);
    assert_identical(&out.join("d.raw"), &copies[1], "after the byte is restored");
}

#[test]
fn verify_and_failover_report_a_flipped_base_byte_by_file_and_chunk_offset() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, copies) = vault_with_one_change(&r, tmp.path());
    r.ok(&["verify", s(&vault)]);
    let block_bytes = r.json(&["inspect", s(&vault), "--json"])["block_bytes"]
        .as_u64()
        .expect("block_bytes is a number");

    // Disk byte i is at 4096 + i in the base; 100 000 is inside the seeded pattern.
    let base = only_file(&vault.join("bases"), ".base");
    let disk_offset = 100_000;
    flip_byte(&base, 4096 + disk_offset);
    let chunk_offset = 4096 + disk_offset / block_bytes * block_bytes;

    let out = tmp.path().join("out");
    let flipped = 4096 + disk_offset;
    assert_damage_found_and_undone(&r, &vault, &base, (flipped, chunk_offset), 1, &out);
    assert_identical(&out.join("d.raw"), &copies[0], "after the byte is restored");
}

/// With the byte at `at.0` of `file` flipped: `verify` reports damage in `file` at `at.1`, and
/// a failover of `point` into `out` fails naming the file. Then the byte is flipped back:
/// `verify` finds the vault intact and the failover (forced over what the failed one left)
/// succeeds.
fn assert_damage_found_and_undone(
    r: &Replog,
    vault: &Path,
    file: &Path,
    at: (u64, u64),
    point: u64,
    out: &Path,
) {
    assert_verify_finds(r, vault, file, at.1);
    let point = point.to_string();
    let failed = r.expect(
        EXIT_DAMAGED,
        &["failover", s(vault), "--point", &point, "--out", s(out)],
    );
    let name = file
        .file_name()
        .expect("a file name")
        .to_str()
        .expect("UTF-8");
    assert!(
        failed.stderr.contains(name),
        "failover names the damaged file: {}",
        failed.stderr
    );
    flip_byte(file, at.0);
    r.ok(&["verify", s(vault)]);
    r.ok(&[
        "failover",
        s(vault),
        "--point",
        &point,
        "--out",
        s(out),
        "--force",
    ]);
}

/// A one-disk vault (`os`, 8 MiB) with 64 KiB segments, points `first` and `second` (the second
/// app-consistent) and a write and a zero between them.
fn small_vault_with_two_points(r: &Replog, root: &Path) -> PathBuf {
    let (vault, image) = (root.join("V"), root.join("os.raw"));
    create_image(&image, 8 * MIB);
    r.ok(&["init", s(&vault), "--segment-size", "64KiB"]);
    r.ok(&["disk", "add", s(&vault), "os", "--from", s(&image)]);
    r.ok(&["point", s(&vault), "--label", "first"]);
    qemu_io(
        &image,
        &["write -P 0x61 0 300000", "write -z 1048576 65536"],
    );
    r.ok(&["ingest", s(&vault), "os", "--from", s(&image)]);
    r.ok(&["point", s(&vault), "--app-consistent", "--label", "second"]);
    vault
}

fn json_lines(stdout: &str) -> Vec<Value> {
    let line =
        |l: &str| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}"));
    stdout.lines().map(line).collect()
}

#[test]
fn inspect_describes_disks_segments_journal_points_and_rpo() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = small_vault_with_two_points(&r, tmp.path());

    let inspect = r.json(&["inspect", s(&vault), "--json"]);
    assert_eq!(inspect["disks"][0]["name"], "os", "{inspect}");
    assert_eq!(inspect["disks"][0]["size_bytes"], 8 * MIB, "{inspect}");
    assert_eq!(inspect["points"], 2, "{inspect}");
    assert_eq!(inspect["latest_point"]["label"], "second", "{inspect}");
    let segments = inspect["segments"].as_u64().expect("segments is a number");
    assert!(segments > 1, "{inspect}");
    let journal_bytes = inspect["journal_bytes"]
        .as_u64()
        .expect("journal_bytes is a number");
    let on_disk_bytes: u64 = fs::read_dir(vault.join("journal"))
        .expect("journal/ lists")
        .map(|e| e.expect("an entry").metadata().expect("metadata").len())
        .sum();
    let plausible = journal_bytes > 4096 * segments && journal_bytes <= on_disk_bytes;
    assert!(
        plausible,
        "{journal_bytes} journal bytes, {on_disk_bytes} in files: {inspect}"
    );
    let rpo_seconds = inspect["rpo_seconds"]
        .as_f64()
        .expect("rpo_seconds is a number");
    assert!((0.0..600.0).contains(&rpo_seconds), "{inspect}");

    let text = r.ok(&["inspect", s(&vault)]);
    let segments_text = format!("{segments} segments");
    for word in ["os", "8.0 MiB", "journal", &segments_text, "points      2"] {
        assert!(text.contains(word), "inspect shows {word:?}:\n{text}");
    }
}

#[test]
fn dump_prints_every_record_and_segment_end_and_filters_by_segment() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = small_vault_with_two_points(&r, tmp.path());
    let inspect = r.json(&["inspect", s(&vault), "--json"]);

    let lines = check_dump_json(&r, &vault, &inspect);
    let text = r.ok(&["dump", s(&vault)]);
    let same_count = text.lines().count() == lines.len();
    assert!(
        same_count,
        "text and JSON dumps have a line per record and segment end:\n{text}"
    );
    assert!(
        text.contains("point id=2 app-consistent \"second\""),
        "{text}"
    );

    let first = json_lines(&r.ok(&["dump", s(&vault), "--segment", "1", "--json"]));
    assert!(
        !first.is_empty() && first.len() < lines.len(),
        "--segment 1 is a part of the dump"
    );
    assert!(first.iter().all(|l| l["segment"] == 1), "{first:?}");
    let text = r.ok(&["dump", s(&vault), "--segment", "1"]);
    assert!(text.lines().all(|l| l.starts_with("seg=1 ")), "{text}");
}

/// Checks `dump --json`: one JSON object per line, records in LSN order from 1 to `last_lsn`, each
/// checksum ok, and a sealed or clean end per segment. Returns the lines.
fn check_dump_json(r: &Replog, vault: &Path, inspect: &Value) -> Vec<Value> {
    let lines = json_lines(&r.ok(&["dump", s(vault), "--json"]));
    let records: Vec<&Value> = lines.iter().filter(|l| l.get("lsn").is_some()).collect();
    let ends: Vec<&Value> = lines.iter().filter(|l| l.get("end").is_some()).collect();
    assert_eq!(
        records.len() + ends.len(),
        lines.len(),
        "every line is a record or an end"
    );
    assert_eq!(
        ends.len() as u64,
        inspect["segments"].as_u64().expect("segments"),
        "{ends:?}"
    );
    let clean = ends
        .iter()
        .all(|e| e["end"] == "sealed" || e["end"] == "end");
    assert!(clean, "{ends:?}");
    for (i, rec) in records.iter().enumerate() {
        assert_eq!(
            rec["lsn"],
            i as u64 + 1,
            "LSNs run from 1 without gaps: {rec}"
        );
        assert_eq!(rec["checksum"], "ok", "{rec}");
        match rec["kind"].as_str().expect("kind is a string") {
            "write" | "zero" => assert_eq!(rec["disk"], 1, "{rec}"),
            "point" => assert_eq!(rec["disk"], 0, "{rec}"),
            other => panic!("unexpected record kind {other}: {rec}"),
        }
    }
    let last_lsn = inspect["last_lsn"].as_u64().expect("last_lsn");
    assert_eq!(records.len() as u64, last_lsn, "{inspect}");
    assert_eq!(records.iter().filter(|r| r["kind"] == "point").count(), 2);
    lines
}

/// Asserts a failure message is one line, `replog: ...`, that mentions every one of `parts`.
fn assert_message(run: &Run, parts: &[&str]) {
    let one_line = run.stderr.starts_with("replog: ") && run.stderr.lines().count() == 1;
    assert!(
        one_line,
        "the message is one line starting `replog: `: {:?}",
        run.stderr
    );
    for part in parts {
        assert!(
            run.stderr.contains(part),
            "the message names {part:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn missing_vault_and_non_empty_directory_are_refused_naming_the_path() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let missing = tmp.path().join("nonexistent");
    assert_message(
        &r.expect(EXIT_FAILED, &["points", s(&missing)]),
        &[s(&missing)],
    );
    assert!(!missing.exists(), "reading a vault creates nothing");

    let busy = tmp.path().join("busy");
    fs::create_dir(&busy).expect("the directory is created");
    fs::write(busy.join("something"), b"x").expect("the file is written");
    assert_message(
        &r.expect(EXIT_FAILED, &["init", s(&busy)]),
        &[s(&busy), "not empty"],
    );
    let left: Vec<_> = fs::read_dir(&busy).expect("the directory lists").collect();
    assert_eq!(left.len(), 1, "a refused init adds nothing");
}

#[test]
fn disk_names_that_could_escape_the_vault_are_refused() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = tmp.path().join("V");
    r.ok(&["init", s(&vault)]);
    for bad in ["a/b", "..", "../escape", ".hidden", "", &"x".repeat(65)] {
        let run = r.expect(
            EXIT_FAILED,
            &["disk", "add", s(&vault), bad, "--size", "1MiB"],
        );
        assert_message(&run, &[&format!("{bad:?} is not a valid disk name")]);
    }
    assert!(
        !tmp.path().join("escape").exists(),
        "nothing is created outside the vault"
    );
    let inspect = r.json(&["inspect", s(&vault), "--json"]);
    assert_eq!(
        inspect["disks"],
        Value::Array(Vec::new()),
        "no disk was added: {inspect}"
    );
}

#[test]
fn image_and_disk_errors_name_the_image_sizes_and_disk() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, image) = (tmp.path().join("V"), tmp.path().join("d.raw"));
    r.ok(&["init", s(&vault)]);
    create_image(&image, 8 * MIB);
    r.ok(&["disk", "add", s(&vault), "d", "--from", s(&image)]);

    let small = tmp.path().join("small.raw");
    create_image(&small, 4 * MIB);
    let run = r.expect(
        EXIT_FAILED,
        &["ingest", s(&vault), "d", "--from", s(&small)],
    );
    let (small_bytes, disk_bytes) = ((4 * MIB).to_string(), (8 * MIB).to_string());
    assert_message(&run, &[s(&small), &small_bytes, &disk_bytes]);

    let absent = tmp.path().join("absent.raw");
    let run = r.expect(
        EXIT_FAILED,
        &["disk", "add", s(&vault), "e", "--from", s(&absent)],
    );
    assert_message(&run, &[s(&absent)]);
    let run = r.expect(
        EXIT_FAILED,
        &["ingest", s(&vault), "nosuch", "--from", s(&image)],
    );
    assert_message(&run, &["\"nosuch\""]);
    let run = r.expect(
        EXIT_FAILED,
        &["disk", "add", s(&vault), "d", "--size", "1MiB"],
    );
    assert_message(&run, &["\"d\""]);
    let run = r.expect(EXIT_FAILED, &["disk", "add", s(&vault), "z", "--size", "0"]);
    assert_message(&run, &["size 0"]);
}

#[test]
fn invalid_command_lines_exit_64() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = tmp.path().join("V");
    r.expect(EXIT_USAGE, &["frobnicate"]);
    r.expect(EXIT_USAGE, &["init"]);
    r.expect(EXIT_USAGE, &["init", s(&vault), "--segment-size", "lots"]);
    r.expect(EXIT_USAGE, &["disk", "add", s(&vault), "x"]);
    r.expect(
        EXIT_USAGE,
        &[
            "disk",
            "add",
            s(&vault),
            "x",
            "--size",
            "1M",
            "--from",
            "x.raw",
        ],
    );
    r.expect(EXIT_USAGE, &["--backend", "floppy", "points", s(&vault)]);
    assert!(!vault.exists(), "no usage error created the vault");
    r.ok(&["--help"]);
}

#[test]
fn damage_in_a_sealed_segment_blocks_only_the_points_after_it() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let vault = small_vault_with_two_points(&r, tmp.path());
    let lines = json_lines(&r.ok(&["dump", s(&vault), "--json"]));
    let sealed: Vec<&Value> = lines
        .iter()
        .filter(|l| l["end"] == "sealed")
        .map(|l| &l["segment"])
        .collect();
    let write = lines
        .iter()
        .find(|l| l["kind"] == "write" && sealed.contains(&&l["segment"]))
        .expect("a write record in a sealed segment");
    let record_offset = write["offset"].as_u64().expect("offset is a number");
    let stored_bytes = write["stored"].as_u64().expect("stored is a number");
    let segment_id = write["segment"].as_u64().expect("segment is a number");
    let segment = vault.join("journal").join(format!("{segment_id:016x}.seg"));
    flip_byte(&segment, record_offset + 64 + stored_bytes / 2);

    assert_verify_finds(&r, &vault, &segment, record_offset);
    let out = tmp.path().join("out");
    r.ok(&["failover", s(&vault), "--point", "1", "--out", s(&out)]);
    let zeros = tmp.path().join("zeros.raw");
    create_image(&zeros, 8 * MIB);
    assert_identical(&out.join("os.raw"), &zeros, "point 1, before the damage");
    let failed = r.expect(
        EXIT_DAMAGED,
        &[
            "failover",
            s(&vault),
            "--point",
            "2",
            "--out",
            s(&out),
            "--force",
        ],
    );
    let name = segment
        .file_name()
        .expect("a file name")
        .to_str()
        .expect("UTF-8");
    assert!(
        failed.stderr.contains(name),
        "failover names the damaged file: {}",
        failed.stderr
    );
}

/// Regression: when an ingest sealed a segment part-way, the footer was framed before any sync of
/// the segment (its `synced_upto` was 4096), so nothing vouched for the records before it and a
/// damaged record there was classified as a torn tail: `dump` printed `torn-tail` and exited 0,
/// and `verify` said the segment "has no valid footer and trailer" although both were intact. A
/// segment the manifest lists as sealed was acknowledged whole, so this is damage: `dump` exits 2
/// and names the record. (The writer now also syncs the records before framing the footer.)
#[test]
fn damage_in_a_sealed_segment_written_in_one_batch_is_not_a_torn_tail() {
    let r = replog();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, image) = (tmp.path().join("V"), tmp.path().join("d.raw"));
    create_image(&image, 16 * MIB);
    r.ok(&["init", s(&vault), "--segment-size", "64KiB"]);
    r.ok(&["disk", "add", s(&vault), "d", "--from", s(&image)]);
    r.ok(&["point", s(&vault)]);
    // Two changed ranges: the ingest seals segment 2 after the first and goes on in segment 3.
    qemu_io(
        &image,
        &[
            "write -P 0x11 12345 1000000",
            "write -P 0x22 3000000 300000",
        ],
    );
    r.ok(&["ingest", s(&vault), "d", "--from", s(&image)]);
    r.ok(&["point", s(&vault)]);
    // Segment 2 holds the 1 MiB write record at 4096, then its footer and trailer.
    let segment = vault.join("journal").join("0000000000000002.seg");
    flip_byte(&segment, 4096 + 64 + 5000);

    let dump = r.expect(EXIT_DAMAGED, &["dump", s(&vault), "--segment", "2"]);
    assert!(dump.stdout.contains("damaged"), "{}", dump.stdout);
    let verify = r.expect(EXIT_DAMAGED, &["verify", s(&vault)]);
    assert!(
        verify.stdout.contains("checksum"),
        "verify names the failing checksum: {}",
        verify.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Checkpoint indexes
// ---------------------------------------------------------------------------------------------

/// `replog checkpoint` indexes the newest sealed segment; failovers from the index read the same
/// bytes as a full replay; `bench resolve` says which index each point started from; a damaged
/// index is reported by verify (exit 2) and passed over by failover.
#[test]
fn checkpoint_index_is_used_by_failover_and_checked_by_verify() {
    require_qemu();
    let r = replog();
    let root = tempfile::tempdir().unwrap();
    let sc = build_scenario(&r, root.path(), &["--segment-size", "64KiB"]);
    let replayed = root.path().join("replayed");
    r.ok(&["failover", s(&sc.vault), "--latest", "--out", s(&replayed)]);
    let before = r.json(&["bench", "resolve", s(&sc.vault), "--json"]);
    assert!(before["open_ms"].as_f64().unwrap() >= 0.0);
    let cp = r.json(&["checkpoint", s(&sc.vault), "--json"]);
    let lsn = cp["lsn"].as_u64().unwrap();
    assert!(lsn > 0 && cp["pieces"].as_u64().unwrap() > 0, "{cp}");
    let path = PathBuf::from(cp["path"].as_str().unwrap());
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        cp["file_bytes"].as_u64().unwrap()
    );
    let after = r.json(&["bench", "resolve", s(&sc.vault), "--json"]);
    let newest = &after["resolve"][0];
    assert_eq!(newest["point"], "newest");
    if newest["lsn"].as_u64().unwrap() >= lsn {
        assert_eq!(newest["checkpoint_lsn"].as_u64(), Some(lsn), "{after}");
    }
    let indexed = root.path().join("indexed");
    r.ok(&["failover", s(&sc.vault), "--latest", "--out", s(&indexed)]);
    for name in ["os", "data"] {
        let file = format!("{name}.raw");
        assert_identical(
            &indexed.join(&file),
            &replayed.join(&file),
            "a failover from the index",
        );
    }
    r.ok(&["verify", s(&sc.vault)]);
    flip_byte(&path, fs::metadata(&path).unwrap().len() - 7);
    let run = r.expect(EXIT_DAMAGED, &["verify", s(&sc.vault)]);
    assert!(run.stdout.contains(".idx"), "{}", run.stdout);
    let damaged = root.path().join("damaged");
    r.ok(&["failover", s(&sc.vault), "--latest", "--out", s(&damaged)]);
    for name in ["os", "data"] {
        let file = format!("{name}.raw");
        assert_identical(
            &damaged.join(&file),
            &replayed.join(&file),
            "a failover past a damaged index",
        );
    }
}

/// README's first command: the demo runs the whole lifecycle and checks every point itself; a
/// directory that is not empty is refused rather than overwritten.
#[test]
fn the_demo_checks_every_point_and_refuses_a_directory_in_use() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let dir = root.path().join("demo");
    let out = replog().ok(&["demo", s(&dir)]);
    let checked = out
        .lines()
        .filter(|l| l.contains("both disks match the sources byte for byte"))
        .count();
    assert_eq!(checked, 5, "{out}");
    assert!(out.contains("is intact"), "{out}");
    let run = replog().expect(EXIT_FAILED, &["demo", s(&dir)]);
    assert!(run.stderr.contains(s(&dir)), "{}", run.stderr);
}
