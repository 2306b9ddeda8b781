//! `replog failover --to`: a point written straight into an NBD export served by qemu-nbd and
//! onto a loop device, each prefilled with garbage so that every zero must be written, and
//! compared byte for byte with the vault's own materialized image; and the targets refused
//! before anything is written: a read-only export, an export or device smaller than the disk,
//! a mounted device. A test whose tools are missing (qemu-nbd, losetup, a loop device, mount)
//! says so and returns.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use replog_tests::noise;
use replog_tests::qemu::installed;
use support::{json_of, replog, replog_ok};

mod support;

const MIB: usize = 1 << 20;
/// The disk's size: 24 MiB, with data, holes in the base and zeros written later.
const DISK_BYTES: usize = 24 * MIB;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A vault in `dir` with disk `os` at point 2: a base with data and holes, then an ingest
/// that overwrites part of the data and zeroes a range that held data. Returns the vault and
/// the point's bytes as `failover --out` materializes them.
fn fixture(dir: &Path) -> (String, Vec<u8>) {
    let img = dir.join("os.raw");
    let mut bytes = vec![0u8; DISK_BYTES];
    bytes[..6 * MIB].copy_from_slice(&noise(1, 6 * MIB));
    bytes[10 * MIB..14 * MIB].copy_from_slice(&noise(2, 4 * MIB));
    bytes[20 * MIB + 4096..20 * MIB + 8192].copy_from_slice(&noise(3, 4096));
    std::fs::write(&img, &bytes).unwrap();
    let vault = dir.join("V").display().to_string();
    replog_ok(&["init", &vault]);
    replog_ok(&["disk", "add", &vault, "os", "--from", img.to_str().unwrap()]);
    replog_ok(&["point", &vault]);
    bytes[2 * MIB..5 * MIB].fill(0);
    bytes[11 * MIB..11 * MIB + 100].copy_from_slice(&noise(4, 100));
    bytes[16 * MIB..17 * MIB].copy_from_slice(&noise(5, MIB));
    std::fs::write(&img, &bytes).unwrap();
    replog_ok(&["ingest", &vault, "os", "--from", img.to_str().unwrap()]);
    replog_ok(&["point", &vault]);
    let out = dir.join("ref");
    replog_ok(&[
        "failover",
        &vault,
        "--latest",
        "--out",
        out.to_str().unwrap(),
    ]);
    let expected = std::fs::read(out.join("os.raw")).unwrap();
    assert_eq!(expected, bytes, "the vault's own image is the point");
    (vault, expected)
}

/// A file of `len` bytes of garbage.
fn garbage_file(path: &Path, len: usize) -> Vec<u8> {
    let g = noise(99, len);
    std::fs::write(path, &g).unwrap();
    g
}

/// qemu-nbd serving the raw file `img` on `sock` (read-only with `read_only`), killed when
/// dropped.
struct QemuNbd(Child);

impl QemuNbd {
    fn start(img: &Path, sock: &Path, read_only: bool) -> QemuNbd {
        let mut cmd = Command::new("qemu-nbd");
        cmd.args(["-t", "-f", "raw", "--cache=none", "-k"])
            .arg(sock);
        if read_only {
            cmd.arg("-r");
        }
        let server = QemuNbd(cmd.arg(img).spawn().expect("qemu-nbd starts"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(sock).is_err() {
            assert!(Instant::now() < deadline, "qemu-nbd never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn uri(sock: &Path) -> String {
    format!("nbd+unix:///?socket={}", sock.display())
}

fn failover_to(vault: &str, target: &str) -> Output {
    replog(&["failover", vault, "--latest", "--to", target, "--json"])
}

fn refused(out: &Output) -> String {
    assert!(!out.status.success(), "the failover was not refused");
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn failover_into_a_qemu_nbd_export_of_garbage_is_byte_exact() {
    if !installed(&["qemu-nbd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (vault, expected) = fixture(dir.path());
    let target = dir.path().join("target.raw");
    // One MiB past the disk's end, which the failover must leave as it was.
    let garbage = garbage_file(&target, DISK_BYTES + MIB);
    let sock = dir.path().join("nbd.sock");
    let server = QemuNbd::start(&target, &sock, false);
    let out = failover_to(&vault, &format!("os={}", uri(&sock)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    drop(server);
    let d = &report["disks"][0];
    assert_eq!(d["kind"], "nbd");
    assert_eq!(d["zeroed_by"], "write_zeroes");
    assert_eq!(d["size_bytes"], DISK_BYTES as u64);
    assert_eq!(d["target_size_bytes"], (DISK_BYTES + MIB) as u64);
    assert!(
        d["zero_bytes"].as_u64().unwrap() >= 8 * MIB as u64,
        "{report}"
    );
    assert_eq!(
        d["data_bytes"].as_u64().unwrap() + d["zero_bytes"].as_u64().unwrap(),
        DISK_BYTES as u64
    );
    let got = std::fs::read(&target).unwrap();
    assert!(
        got[..DISK_BYTES] == expected[..],
        "the export differs from the point"
    );
    assert!(
        got[DISK_BYTES..] == garbage[DISK_BYTES..],
        "bytes past the disk changed"
    );
}

#[test]
fn a_read_only_or_smaller_export_is_refused_untouched() {
    if !installed(&["qemu-nbd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (vault, _) = fixture(dir.path());
    let target = dir.path().join("ro.raw");
    let garbage = garbage_file(&target, DISK_BYTES);
    let sock = dir.path().join("ro.sock");
    let server = QemuNbd::start(&target, &sock, true);
    let err = refused(&failover_to(&vault, &uri(&sock)));
    drop(server);
    assert!(
        err.contains("read-only") && err.contains(&uri(&sock)),
        "{err}"
    );
    assert!(std::fs::read(&target).unwrap() == garbage);

    let small = dir.path().join("small.raw");
    let garbage = garbage_file(&small, 8 * MIB);
    let sock = dir.path().join("small.sock");
    let server = QemuNbd::start(&small, &sock, false);
    let err = refused(&failover_to(&vault, &uri(&sock)));
    drop(server);
    let sizes = [format!("{} bytes", 8 * MIB), format!("{DISK_BYTES} bytes")];
    assert!(sizes.iter().all(|s| err.contains(s)), "{err}");
    assert!(err.contains("smaller"), "{err}");
    assert!(std::fs::read(&small).unwrap() == garbage);
}

/// A loop device over a file, detached when dropped.
struct Loop {
    device: PathBuf,
}

impl Loop {
    /// A loop device over `file`, or `None` (said) where loop devices cannot be set up.
    fn attach(file: &Path) -> Option<Loop> {
        if !Path::new("/dev/loop-control").exists() {
            eprintln!("skipped: /dev/loop-control is absent, no loop devices here");
            return None;
        }
        if !installed(&["losetup"]) {
            return None;
        }
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup starts");
        if !out.status.success() {
            eprintln!(
                "skipped: losetup cannot attach a loop device: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        let device = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Some(Loop {
            device: device.into(),
        })
    }

    fn path(&self) -> &str {
        self.device.to_str().unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.device).output();
    }
}

/// A sparse file of `len` bytes whose first `garbage` bytes are garbage.
fn sparse_garbage_file(path: &Path, len: usize, garbage: usize) -> Vec<u8> {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(len as u64).unwrap();
    let g = noise(98, garbage);
    std::os::unix::fs::FileExt::write_all_at(&f, &g, 0).unwrap();
    let mut all = g;
    all.resize(len, 0);
    all
}

#[test]
fn failover_onto_a_loop_device_of_garbage_is_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("dev.img");
    let before = sparse_garbage_file(&backing, DISK_BYTES + MIB, DISK_BYTES);
    let Some(dev) = Loop::attach(&backing) else {
        return;
    };
    let (vault, expected) = fixture(dir.path());
    let report = json_of(&["failover", &vault, "--latest", "--to", dev.path(), "--json"]);
    let d = &report["disks"][0];
    assert_eq!(d["kind"], "device");
    assert_eq!(d["target"], dev.path());
    assert!(
        d["zero_bytes"].as_u64().unwrap() >= 8 * MIB as u64,
        "{report}"
    );
    assert_ne!(d["zeroed_by"], "nothing");
    let got = std::fs::read(&dev.device).unwrap();
    assert!(
        got[..DISK_BYTES] == expected[..],
        "the device differs from the point"
    );
    assert!(
        got[DISK_BYTES..] == before[DISK_BYTES..],
        "bytes past the disk changed"
    );
}

#[test]
fn a_smaller_or_mounted_device_or_a_file_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.img");
    let small_before = sparse_garbage_file(&small, 8 * MIB, 8 * MIB);
    let Some(small_dev) = Loop::attach(&small) else {
        return;
    };
    let (vault, _) = fixture(dir.path());
    let err = refused(&failover_to(&vault, &format!("os={}", small_dev.path())));
    assert!(
        err.contains("smaller") && err.contains(small_dev.path()),
        "{err}"
    );
    assert!(
        err.contains(&format!("{} bytes", 8 * MIB)) && err.contains(&format!("{DISK_BYTES} bytes")),
        "{err}"
    );
    assert!(std::fs::read(&small).unwrap() == small_before);

    let file = dir.path().join("plain.img");
    std::fs::write(&file, b"").unwrap();
    let err = refused(&failover_to(&vault, file.to_str().unwrap()));
    assert!(err.contains("not a block device"), "{err}");

    let fs_img = dir.path().join("fs.img");
    sparse_garbage_file(&fs_img, 32 * MIB, 0);
    let Some(fs_dev) = Loop::attach(&fs_img) else {
        return;
    };
    if !installed(&["mkfs.ext4", "mount", "umount"]) {
        return;
    }
    run(Command::new("mkfs.ext4").args(["-q", fs_dev.path()]));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let Some(_mounted) = Mounted::mount(fs_dev.path(), &mnt) else {
        return;
    };
    let before = std::fs::read(&fs_img).unwrap();
    let err = refused(&failover_to(&vault, fs_dev.path()));
    assert!(
        err.contains("mounted at") && err.contains(mnt.to_str().unwrap()),
        "{err}"
    );
    assert!(
        std::fs::read(&fs_img).unwrap() == before,
        "a mounted device was written"
    );
}

/// A filesystem mounted for a test, unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    /// Mounts `device` at `at`, or `None` (said) where mounting is not permitted.
    fn mount(device: &str, at: &Path) -> Option<Mounted> {
        let out = Command::new("mount").arg(device).arg(at).output().unwrap();
        if !out.status.success() {
            eprintln!(
                "skipped: mount is not permitted here: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Mounted(at.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}
