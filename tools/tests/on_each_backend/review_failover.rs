//! Regression tests of materialization into an output directory: concurrent runs, a forced run
//! that fails, symbolic links planted in the directory, the `--force` hint, and a user who may
//! read a vault but not write it. Each test runs the built `replog` binary as a child process
//! over real files; the images are made by writing patterns with the standard library, and the
//! formats qemu-img writes are compared with `qemu-img compare`.
//!
//! The child runs on its module's backend: `main.rs` builds the file once per backend.

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::common::{Run, entries, failover_latest, s};

const MIB: u64 = 1 << 20;
const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;

/// The disks of the test vault: name and size.
const DISKS: [(&str, u64); 2] = [("os", 24 * MIB), ("data", 8 * MIB)];

fn replog() -> Command {
    super::replog_command()
}

fn run(args: &[&str]) -> Run {
    replog().args(args).output().expect("replog runs").into()
}

fn expect(code: i32, args: &[&str]) -> Run {
    run(args).expect_code(code, args)
}

fn spawn(args: &[&str]) -> Child {
    replog()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("replog starts")
}

/// Writes `len` bytes of a pattern that depends on `seed` at `offset` of `image`.
fn write_pattern(image: &Path, offset: u64, len: usize, seed: u8) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .expect("the image opens");
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed) | 1)
        .collect();
    f.write_all_at(&data, offset)
        .expect("the pattern is written");
}

/// A vault with the disks of [`DISKS`] and five points, each with other bytes in most of both
/// disks (so a failover takes long enough for two of them to overlap). Returns the vault and the
/// point ids, oldest first.
fn vault_with_five_points(root: &Path) -> (PathBuf, Vec<u64>) {
    let vault = root.join("V");
    expect(EXIT_OK, &["init", s(&vault)]);
    let images: Vec<PathBuf> = DISKS
        .iter()
        .map(|(name, _)| root.join(format!("{name}.img")))
        .collect();
    for (image, (name, size)) in images.iter().zip(DISKS) {
        fs::File::create(image)
            .and_then(|f| f.set_len(size))
            .expect("the image is created");
        write_pattern(image, 0, (size - MIB) as usize, 0x10);
        expect(
            EXIT_OK,
            &["disk", "add", s(&vault), name, "--from", s(image)],
        );
    }
    let mut ids = Vec::new();
    for round in 0..5u8 {
        for (image, (name, size)) in images.iter().zip(DISKS) {
            if round > 0 {
                write_pattern(image, 4096 * u64::from(round), (size / 2) as usize, round);
                expect(EXIT_OK, &["ingest", s(&vault), name, "--from", s(image)]);
            }
        }
        let id = expect(EXIT_OK, &["point", s(&vault)]).stdout;
        ids.push(id.trim().parse().expect("`replog point` prints the id"));
    }
    (vault, ids)
}

/// The bytes of every disk at `point`, from a failover run alone.
fn reference(vault: &Path, point: u64, dir: &Path) -> Vec<Vec<u8>> {
    let id = point.to_string();
    expect(
        EXIT_OK,
        &[
            "failover",
            s(vault),
            "--point",
            &id,
            "--out",
            s(dir),
            "--no-sync",
        ],
    );
    DISKS
        .iter()
        .map(|(name, _)| fs::read(dir.join(format!("{name}.raw"))).expect("the image reads"))
        .collect()
}

fn image_names(ext: &str) -> Vec<String> {
    let mut names: Vec<String> = DISKS.iter().map(|(n, _)| format!("{n}.{ext}")).collect();
    names.sort();
    names
}

/// Bug: two failovers into one directory both wrote the fixed name `D/.os.raw.partial`, and the
/// "exists already" check ran before either image existed: one exited 0 saying "failed over to
/// point 1" while the images held point 5's bytes, a mix of both, or one disk of each point.
/// Now the directory is locked for the whole run, temporary names are unique and created
/// exclusively, and the images are read back before the success message.
#[test]
fn finding_1_concurrent_failovers_into_one_directory_never_mix_points() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, ids) = vault_with_five_points(tmp.path());
    let (first, last) = (ids[0], ids[4]);
    let want = [
        (
            first,
            reference(&vault, first, &tmp.path().join("ref-first")),
        ),
        (last, reference(&vault, last, &tmp.path().join("ref-last"))),
    ];
    assert_ne!(want[0].1, want[1].1, "the two points hold other bytes");
    let mut wrong = Vec::new();
    for pair in 0..50 {
        let out = tmp.path().join(format!("pair-{pair}"));
        let children: Vec<(u64, Child)> = want
            .iter()
            .map(|(point, _)| {
                let id = point.to_string();
                let args = ["failover", s(&vault), "--point", &id, "--out", s(&out)];
                (*point, spawn(&[&args[..], &["--no-sync"]].concat()))
            })
            .collect();
        let runs: Vec<(u64, Run)> = children
            .into_iter()
            .map(|(p, c)| (p, c.wait_with_output().expect("replog ends").into()))
            .collect();
        if let Some(why) = check_pair(&out, &runs, &want) {
            wrong.push(format!("pair {pair}: {why}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 50 pairs wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// What is wrong with one pair's outcome, if anything: the bytes under the final names first
/// (the harm), then the exit codes and messages.
fn check_pair(out: &Path, runs: &[(u64, Run)], want: &[(u64, Vec<Vec<u8>>)]) -> Option<String> {
    let winners: Vec<&(u64, Run)> = runs.iter().filter(|(_, r)| r.code == EXIT_OK).collect();
    let bytes: Vec<Vec<u8>> = DISKS
        .iter()
        .map(|(name, _)| fs::read(out.join(format!("{name}.raw"))).unwrap_or_default())
        .collect();
    let held: Vec<String> = bytes
        .iter()
        .enumerate()
        .map(|(d, b)| match want.iter().find(|(_, w)| &w[d] == b) {
            Some((p, _)) => format!("{} of point {p}", DISKS[d].0),
            None => format!("{} of no point", DISKS[d].0),
        })
        .collect();
    let mut wrong = Vec::new();
    for (point, _) in &winners {
        let (_, expected) = want.iter().find(|(p, _)| p == point)?;
        if &bytes != expected {
            wrong.push(format!(
                "exit 0 said point {point}; the images hold {held:?}"
            ));
        }
    }
    if winners.len() != 1 {
        wrong.push(format!("{} runs exited 0", winners.len()));
    }
    let clear = ["in use by another replog", "exists already"];
    for (_, r) in runs.iter().filter(|(_, r)| r.code != EXIT_OK) {
        if r.code != EXIT_FAILED || !clear.iter().any(|c| r.stderr.contains(c)) {
            wrong.push(format!("a refused run is unclear: {}", r.stderr.trim()));
        }
    }
    for (point, r) in &winners {
        if !r.stdout.contains(&format!("failed over to point {point} ")) {
            wrong.push(format!("the run that exited 0 says: {}", r.stdout));
        }
    }
    if entries(out) != image_names("raw") {
        wrong.push(format!("the directory holds {:?}", entries(out)));
    }
    (!wrong.is_empty()).then(|| wrong.join("; "))
}

/// Holds the lock of `dir` the way a running replog does, with `pid` written in it.
fn hold_lock(dir: &Path, pid: u32) -> fs::File {
    fs::create_dir_all(dir).expect("the directory is created");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(".replog-out.lock"))
        .expect("the lock file opens");
    f.try_lock().expect("nobody holds it yet");
    f.write_all_at(format!("{pid}\n").as_bytes(), 0)
        .expect("the pid is written");
    f
}

/// Bug (finding 1, every materializing command): every `--format`, `test-failover` and
/// `complete-migration` wrote into a directory another run was writing into. Each now fails at
/// once, naming the holder, and writes nothing.
#[test]
fn finding_1_every_materializing_command_refuses_a_directory_in_use() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, _) = vault_with_five_points(tmp.path());
    let out = tmp.path().join("busy");
    let lock = hold_lock(&out, 4242);
    let mut commands: Vec<Vec<&str>> = ["raw", "vhd", "qcow2", "vhdx", "vmdk"]
        .into_iter()
        .map(|f| failover_latest(&vault, &out, &["--format", f]))
        .collect();
    commands.push(vec![
        "test-failover",
        s(&vault),
        "--latest",
        "--out",
        s(&out),
    ]);
    commands.push(vec!["complete-migration", s(&vault), "--out", s(&out)]);
    for args in &commands {
        let r = expect(EXIT_FAILED, args);
        assert!(
            r.stderr.contains("in use by another replog (pid 4242)") && r.stderr.contains(s(&out)),
            "`replog {}` does not say the directory is in use: {}",
            args.join(" "),
            r.stderr
        );
        assert_eq!(entries(&out), [".replog-out.lock"], "{}", args.join(" "));
    }
    drop(lock);
}

/// Bug: `failover --force` renamed the first new image over the old one before finding that the
/// second target was a directory; it exited 1 with neither the old nor the new `os.raw`. Now
/// every target is checked before anything is written, and old images are kept until the whole
/// new set is in place.
#[test]
fn finding_3_a_failed_forced_failover_keeps_the_images_it_was_to_replace() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, _) = vault_with_five_points(tmp.path());
    for format in ["raw", "vhd"] {
        let out = tmp.path().join(format!("D-{format}"));
        fs::create_dir_all(out.join(format!("data.{format}"))).expect("mkdir -p D/data.raw");
        let precious = out.join(format!("os.{format}"));
        fs::write(&precious, "precious\n").expect("echo precious > D/os.raw");
        let args = failover_latest(&vault, &out, &["--force"]);
        let r = expect(EXIT_FAILED, &[&args[..], &["--format", format]].concat());
        assert!(
            r.stderr.contains("is a directory") && r.stderr.contains(&format!("data.{format}")),
            "the message names the directory in the way: {}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("--force"),
            "--force cannot help: {}",
            r.stderr
        );
        assert_eq!(
            fs::read_to_string(&precious).expect("os.raw reads"),
            "precious\n"
        );
        let mut names = image_names(format);
        names.sort();
        assert_eq!(entries(&out), names, "nothing else is left behind");
    }
}

/// Bug (finding 3, the replacement itself): a forced failover over a complete set of older
/// images replaces them all, and keeps no backup once the new set is in place.
#[test]
fn finding_3_a_forced_failover_replaces_every_image_and_keeps_no_backup() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, ids) = vault_with_five_points(tmp.path());
    let want = reference(&vault, ids[4], &tmp.path().join("ref"));
    let out = tmp.path().join("D");
    reference(&vault, ids[0], &out);
    let id = ids[4].to_string();
    expect(
        EXIT_OK,
        &[
            "failover",
            s(&vault),
            "--point",
            &id,
            "--out",
            s(&out),
            "--force",
        ],
    );
    assert_eq!(entries(&out), image_names("raw"));
    for ((name, _), want) in DISKS.iter().zip(&want) {
        assert!(
            &fs::read(out.join(format!("{name}.raw"))).unwrap() == want,
            "{name}"
        );
    }
}

/// Bug: the temporary name was predictable and opened with `O_TRUNC` through symbolic links, so
/// `ln -s VICTIM D/.os.raw.partial` made a failover truncate and overwrite the victim, exit 0,
/// and leave `D/os.raw` a link to it. Files are now created exclusively under unique names and
/// never through a link.
#[test]
fn finding_4_a_link_at_the_old_temporary_name_is_never_followed() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, ids) = vault_with_five_points(tmp.path());
    let want = reference(&vault, ids[4], &tmp.path().join("ref"));
    let victim = tmp.path().join("victim");
    fs::write(&victim, "victim\n").expect("the victim is written");
    let out = tmp.path().join("D");
    fs::create_dir(&out).expect("mkdir D");
    for (name, _) in DISKS {
        symlink(&victim, out.join(format!(".{name}.raw.partial"))).expect("ln -s");
    }
    expect(
        EXIT_OK,
        &["failover", s(&vault), "--latest", "--out", s(&out)],
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
    for ((name, _), want) in DISKS.iter().zip(&want) {
        let image = out.join(format!("{name}.raw"));
        let meta = fs::symlink_metadata(&image).expect("the image exists");
        assert!(meta.file_type().is_file(), "{name}.raw is a regular file");
        assert!(&fs::read(&image).unwrap() == want, "{name}");
    }
}

/// Bug (finding 4, the final name and the lock file): a link at `D/os.raw` or at the lock file
/// must not be written through, with or without `--force`; the run is refused before anything
/// is written and says why.
#[test]
fn finding_4_a_link_at_the_final_name_or_the_lock_file_is_refused() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, _) = vault_with_five_points(tmp.path());
    let victim = tmp.path().join("victim");
    fs::write(&victim, "victim\n").expect("the victim is written");
    for (case, link) in [("final", "os.raw"), ("lock", ".replog-out.lock")] {
        for force in [false, true] {
            let out = tmp.path().join(format!("D-{case}-{force}"));
            fs::create_dir(&out).expect("mkdir D");
            symlink(&victim, out.join(link)).expect("ln -s");
            let mut args = vec!["failover", s(&vault), "--latest", "--out", s(&out)];
            if force {
                args.push("--force");
            }
            let r = expect(EXIT_FAILED, &args);
            assert!(
                r.stderr.contains("symbolic link"),
                "{case} {force}: {}",
                r.stderr
            );
            assert!(
                !r.stderr.contains("--force"),
                "--force cannot help: {}",
                r.stderr
            );
            assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n");
            assert_eq!(entries(&out), [link], "nothing is written: {case} {force}");
        }
    }
}

/// Bug (finding 4, ingest): a link at the digest cache's temporary name made `ingest` truncate
/// the file it points to. The storage seam now refuses to create a file through a link, so the
/// victim is never written, whatever the writer then does.
#[test]
fn finding_4_ingest_never_writes_through_a_link_at_the_digest_temporary() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, _) = vault_with_five_points(tmp.path());
    let victim = tmp.path().join("victim");
    fs::write(&victim, "victim\n").expect("the victim is written");
    let digests = vault.join("digests");
    for entry in entries(&digests) {
        if let Some(stem) = entry.strip_suffix(".dig") {
            symlink(&victim, digests.join(format!("{stem}.dig.tmp"))).expect("ln -s");
        }
    }
    let image = tmp.path().join("os.img");
    write_pattern(&image, 0, 4096, 0x77);
    let r = run(&["ingest", s(&vault), "os", "--from", s(&image)]);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "victim\n", "{r:?}");
}

/// Bug: "pass --force to overwrite" was appended to errors `--force` cannot fix: `--out` naming
/// a regular file or `/dev/full`, a target that is a directory. It now appears only for an image
/// that exists already.
#[test]
fn finding_15_the_force_hint_appears_only_where_force_helps() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, _) = vault_with_five_points(tmp.path());
    let file = tmp.path().join("a-file");
    fs::write(&file, "x").expect("the file is written");
    let dev_full = Path::new("/dev/full");
    for format in ["raw", "vhd"] {
        let dir_target = tmp.path().join(format!("D-dir-{format}"));
        fs::create_dir_all(dir_target.join(format!("os.{format}"))).expect("mkdir");
        for out in [file.as_path(), dev_full, dir_target.as_path()] {
            let args = failover_latest(&vault, out, &["--format", format]);
            let r = expect(EXIT_FAILED, &args);
            assert!(
                !r.stderr.contains("--force"),
                "{}: {}",
                out.display(),
                r.stderr
            );
            assert!(
                r.stderr.contains(s(out)),
                "the message names it: {}",
                r.stderr
            );
        }
        let out = tmp.path().join(format!("D-{format}"));
        let args = failover_latest(&vault, &out, &["--format", format]);
        expect(EXIT_OK, &args);
        let r = expect(EXIT_FAILED, &args);
        assert!(r.stderr.contains("exists already"), "{}", r.stderr);
        assert!(
            r.stderr.contains("pass --force to overwrite"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), "x");
}

/// The uid and gid of an unprivileged user to run as, when the tests run as root.
const NOBODY: u32 = 65534;

/// Bug: a user who can read the vault but not write it could not fail over (`leases/.lock`:
/// Permission denied). Now the failover reads without a lease and warns that the point is not
/// protected from a concurrent prune.
#[test]
fn finding_15_a_user_who_cannot_write_the_vault_fails_over_without_a_lease() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, ids) = vault_with_five_points(tmp.path());
    let want = reference(&vault, ids[4], &tmp.path().join("ref"));
    let leases = vault.join("leases");
    fs::create_dir_all(&leases).expect("the lease directory exists");
    let out = tmp.path().join("out");
    fs::create_dir(&out).expect("mkdir out");
    let root = effective_uid() == 0;
    let mut cmd = if root {
        // Root ignores permissions: run as nobody, who may read everything but write only `out`.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        chown(&out, NOBODY);
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_replog"))
            .env(super::BACKEND_ENV, super::backend());
        c
    } else {
        replog()
    };
    fs::set_permissions(&leases, fs::Permissions::from_mode(0o555)).expect("chmod");
    let r: Run = cmd
        .args([
            "failover",
            s(&vault),
            "--latest",
            "--out",
            s(&out),
            "--no-sync",
        ])
        .output()
        .expect("replog runs")
        .into();
    fs::set_permissions(&leases, fs::Permissions::from_mode(0o755)).expect("chmod back");
    assert_eq!(r.code, EXIT_OK, "{r:?}");
    assert!(
        r.stderr.contains("warning") && r.stderr.contains("not protected from a concurrent prune"),
        "the failover warns: {}",
        r.stderr
    );
    for ((name, _), want) in DISKS.iter().zip(&want) {
        assert!(
            &fs::read(out.join(format!("{name}.raw"))).unwrap() == want,
            "{name}"
        );
    }
}

/// The effective uid, from `id -u` (the tests use no libc).
fn effective_uid() -> u32 {
    let out = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("id -u prints a number")
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).expect("chown");
}
