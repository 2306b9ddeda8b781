//! Regression tests of the vault's own integrity rules, through the `replog` binary on real
//! files: a manifest rolled back to an older copy (finding 2), digest cache temporaries
//! (findings 4 and 7), `verify` after Complete Migration (12), lease checksums (13), and a
//! permission error seen by `verify` (15). The child runs on its module's backend (`main.rs`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::common::{Run, init_small, s};

const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;
const EXIT_DAMAGED: i32 = 2;

/// Bytes of the test disk.
const DISK_BYTES: usize = 1 << 20;
/// Bytes each round rewrites: four 64 KiB segments' worth.
const ROUND_BYTES: usize = 256 << 10;

impl Run {
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

fn run_as(prefix: &[&str], args: &[&str]) -> Run {
    let bin = env!("CARGO_BIN_EXE_replog");
    let out = match prefix.split_first() {
        None => super::replog_command().args(args).output(),
        Some((first, rest)) => Command::new(first)
            .args(rest)
            .arg(bin)
            .args(args)
            .env(super::BACKEND_ENV, super::backend())
            .output(),
    }
    .expect("the replog binary runs");
    Run::from(out)
}

fn run(args: &[&str]) -> Run {
    run_as(&[], args)
}

fn expect(code: i32, args: &[&str]) -> Run {
    run(args).expect_code(code, args)
}

fn shell(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program} cannot be run: {e}"));
    assert!(status.success(), "`{program} {}` failed", args.join(" "));
}

/// A vault of one disk `os` (1 MiB) with 64 KiB segments and 4 KiB blocks, fed from a raw
/// image; each round rewrites a quarter of the disk with bytes that do not compress, ingests
/// and takes a point.
struct Scenario {
    vault: PathBuf,
    image: PathBuf,
    round: u64,
}

impl Scenario {
    fn new(root: &Path) -> Scenario {
        let vault = root.join("vault");
        let image = root.join("os.raw");
        fs::write(&image, vec![0u8; DISK_BYTES]).expect("write the image");
        init_small(&vault);
        expect(
            EXIT_OK,
            &["disk", "add", s(&vault), "os", "--from", s(&image)],
        );
        Scenario {
            vault,
            image,
            round: 0,
        }
    }

    /// Changes the image, ingests it and takes a point.
    fn round(&mut self) {
        self.round += 1;
        let mut bytes = fs::read(&self.image).expect("read the image");
        let at = (self.round as usize * ROUND_BYTES / 2) % (DISK_BYTES - ROUND_BYTES);
        let mut x = self.round.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for b in &mut bytes[at..at + ROUND_BYTES] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        fs::write(&self.image, &bytes).expect("write the image");
        expect(
            EXIT_OK,
            &["ingest", s(&self.vault), "os", "--from", s(&self.image)],
        );
        expect(EXIT_OK, &["point", s(&self.vault)]);
    }
}

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let p = e.expect("entry").path();
            let bytes = fs::read(&p).expect("read");
            (p.strip_prefix(dir).expect("inside").to_path_buf(), bytes)
        })
        .collect();
    out.sort();
    out
}

/// Bug: with the MANIFEST (and digest caches) of a copy taken two points earlier put back over
/// a vault, `verify` called the newer sealed segments "left by an interrupted rotation" and
/// exited 0, and `replog point` deleted them and handed out a point id again for a different
/// state. A rotation leaves at most one empty segment: segments holding records past the
/// manifest are history, so the writer must refuse and delete nothing, and verify must report
/// damage naming them.
#[test]
fn finding_2_rolled_back_manifest_is_refused_and_no_segment_is_deleted() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut sc = Scenario::new(root.path());
    for _ in 0..3 {
        sc.round();
    }
    let old = root.path().join("old");
    shell("cp", &["-a", s(&sc.vault), s(&old)]);
    sc.round();
    sc.round();
    let newest = fs::read(&sc.image).expect("read the image");
    let rb = root.path().join("rb");
    shell("cp", &["-a", s(&sc.vault), s(&rb)]);
    shell("cp", &[s(&old.join("MANIFEST")), s(&rb.join("MANIFEST"))]);
    for (name, _) in files(&old.join("digests")) {
        let from = old.join("digests").join(&name);
        shell("cp", &[s(&from), s(&rb.join("digests").join(&name))]);
    }
    let journal_before = files(&rb.join("journal"));
    let unlisted = journal_before.len() - files(&old.join("journal")).len();
    assert!(
        unlisted >= 4,
        "the scenario must leave several newer segments, got {unlisted}"
    );

    let v = expect(EXIT_DAMAGED, &["verify", s(&rb)]);
    let newest_segment = journal_before.last().expect("segments").0.clone();
    assert!(
        v.stdout
            .contains(s(&Path::new("journal").join(&newest_segment)))
            && v.stdout.contains("MANIFEST is older than the journal"),
        "verify must name the unlisted segments as a rollback:\n{}",
        v.stdout
    );
    assert!(
        !v.stdout.contains("the next writer open"),
        "segments holding records are not a rotation's leftover:\n{}",
        v.stdout
    );

    let p = run(&["point", s(&rb)]);
    assert_ne!(p.code, EXIT_OK, "the writer must refuse:\n{}", p.text());
    assert!(
        p.stderr.contains("MANIFEST is older than the journal")
            && p.stderr.contains(s(&newest_segment)),
        "the refusal must name the segments:\n{}",
        p.stderr
    );
    assert_eq!(
        files(&rb.join("journal")),
        journal_before,
        "no segment may be deleted or changed"
    );

    let out = root.path().join("out");
    expect(
        EXIT_OK,
        &["failover", s(&sc.vault), "--latest", "--out", s(&out)],
    );
    assert!(
        fs::read(out.join("os.raw")).expect("read the failover") == newest,
        "the original vault's newest point must fail over byte for byte"
    );
}

/// The legitimate case next to finding 2: a crash after the rotation created the next segment
/// and before the manifest listed it leaves that one segment with at most its header. Recovery
/// removes it silently and `verify` calls it a leftover, not damage.
#[test]
fn interrupted_rotation_empty_segment_is_still_removed_silently() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut sc = Scenario::new(root.path());
    sc.round();
    let journal = sc.vault.join("journal");
    let last = files(&journal).last().expect("segments").0.clone();
    let id: u64 = s(&last)
        .strip_suffix(".seg")
        .and_then(|n| u64::from_str_radix(n, 16).ok())
        .expect("a segment file name");
    let leftover = journal.join(format!("{:016x}.seg", id + 1));
    fs::write(&leftover, b"").expect("plant the leftover");
    let v = expect(EXIT_OK, &["verify", s(&sc.vault)]);
    assert!(
        v.stdout.contains("interrupted rotation"),
        "verify notes the leftover:\n{}",
        v.stdout
    );
    expect(EXIT_OK, &["point", s(&sc.vault)]);
    assert!(
        !leftover.exists(),
        "the writer removes an interrupted rotation's empty segment"
    );
    expect(EXIT_OK, &["verify", s(&sc.vault)]);
}

/// Bug: an import or ingest killed while writing `digests/<id>.dig.tmp` left it (up to a digest
/// per block of the disk) and no later writer removed it.
#[test]
fn finding_7_stale_digest_temporary_is_removed_at_writer_open() {
    let root = tempfile::tempdir().expect("tempdir");
    let sc = Scenario::new(root.path());
    let tmp = sc.vault.join("digests").join("1.dig.tmp");
    fs::write(&tmp, vec![7u8; 64 << 10]).expect("plant the temporary");
    expect(EXIT_OK, &["point", s(&sc.vault)]);
    assert!(
        !tmp.exists(),
        "the next writer open removes a killed run's digest temporary"
    );
}

/// Bug: `ingest` opened `digests/<id>.dig.tmp` with create-and-truncate, following a symbolic
/// link planted there, so it truncated and overwrote whatever file the link named.
#[test]
fn finding_4_ingest_never_writes_through_a_planted_digest_temporary_link() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut sc = Scenario::new(root.path());
    let victim = root.path().join("victim");
    fs::write(&victim, b"precious").expect("write the victim");
    let tmp = sc.vault.join("digests").join("1.dig.tmp");
    std::os::unix::fs::symlink(&victim, &tmp).expect("plant the link");
    sc.round();
    assert_eq!(fs::read(&victim).expect("read the victim"), b"precious");
    let dig = sc.vault.join("digests").join("1.dig");
    assert!(
        fs::symlink_metadata(&dig)
            .expect("the digest cache")
            .file_type()
            .is_file(),
        "the digest cache is a regular file of its own"
    );
    assert!(fs::symlink_metadata(&tmp).is_err(), "the link is gone");
}

/// Bug: `verify` reported DAMAGED ("LSN N does not end a sealed segment") on a vault after
/// `complete-migration`: the journal was removed but the checkpoint index in `index/` was left.
#[test]
fn finding_12_verify_is_intact_after_complete_migration() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut sc = Scenario::new(root.path());
    sc.round();
    sc.round();
    expect(EXIT_OK, &["checkpoint", s(&sc.vault)]);
    let index = sc.vault.join("index");
    assert!(
        !files(&index).is_empty(),
        "the scenario needs a checkpoint index"
    );
    let out = root.path().join("migrated");
    expect(
        EXIT_OK,
        &["complete-migration", s(&sc.vault), "--out", s(&out)],
    );
    let v = expect(EXIT_OK, &["verify", s(&sc.vault)]);
    assert!(v.stdout.starts_with("intact") || v.stdout.contains("\nintact"));
    assert!(
        files(&index).is_empty(),
        "the migration removes the checkpoint indexes with the journal"
    );
}

/// Bug: `verify` never read lease files, so a lease with a flipped byte was "intact".
#[test]
fn finding_13_verify_checks_lease_checksums() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut sc = Scenario::new(root.path());
    sc.round();
    let out = root.path().join("test");
    expect(
        EXIT_OK,
        &["test-failover", s(&sc.vault), "--latest", "--out", s(&out)],
    );
    expect(EXIT_OK, &["verify", s(&sc.vault)]);
    let lease = sc.vault.join("leases").join("test-failover.lease");
    let mut bytes = fs::read(&lease).expect("read the lease");
    bytes[40] ^= 0x01;
    fs::write(&lease, &bytes).expect("write the lease");
    let v = expect(EXIT_DAMAGED, &["verify", s(&sc.vault)]);
    assert!(
        v.stdout
            .lines()
            .any(|l| l.starts_with("DAMAGED: leases/test-failover.lease")),
        "verify names the damaged lease:\n{}",
        v.stdout
    );
}

/// The effective user id of this process.
fn euid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .expect("a Uid line")
}

fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Makes the tree at `dir` readable by everyone.
fn share(dir: &Path) {
    chmod(dir, 0o755);
    for e in fs::read_dir(dir).expect("list") {
        let p = e.expect("entry").path();
        if fs::symlink_metadata(&p).expect("stat").is_dir() {
            share(&p);
        } else {
            chmod(&p, 0o644);
        }
    }
}

/// Bug: a file `verify` was not allowed to read was reported as DAMAGED (exit 2), as if its
/// bytes were wrong. It is a failure to check (exit 1) that names the file and the error.
#[test]
fn finding_15_verify_reports_a_permission_error_as_a_failure_not_damage() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut sc = Scenario::new(root.path());
    sc.round();
    share(root.path());
    let segment = sc.vault.join("journal").join(format!("{:016x}.seg", 1));
    chmod(&segment, 0o000);
    // Root reads a file whatever its mode: run as nobody then.
    let prefix: &[&str] = if euid() == 0 {
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
    } else {
        &[]
    };
    let v = run_as(prefix, &["verify", s(&sc.vault)]);
    assert_eq!(
        v.code,
        EXIT_FAILED,
        "verify must fail, not find damage:\n{}",
        v.text()
    );
    assert!(
        v.stderr.contains(&format!(
            "cannot read {}: Permission denied",
            segment.display()
        )),
        "the error names the file and the cause:\n{}",
        v.stderr
    );
    assert!(
        !v.stdout.contains("DAMAGED"),
        "nothing is damaged:\n{}",
        v.stdout
    );
}
