//! The capture cycle against a live disk: `qemu-storage-daemon` serving a qcow2 image, written
//! through its NBD export as a guest would while replog cuts it. Each cut's view must read as
//! the disk was at the cut (writes after it are not seen), its dirty bitmap must mark exactly
//! the granules written since the previous cut, an abandoned cut's writes must be marked again
//! at the next one, and every QEMU object a cut made must be gone after it ends.
//!
//! Skipped, with a message, when `qemu-storage-daemon` (or `qemu-img` and `qemu-io`, which ship
//! in the same qemu-utils package) is not installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use replog_nbd::{Client, ClientOptions};
use replog_qemu::{Capture, CaptureConfig, DiskCut, DiskSource, Qmp, QmpErrorKind};
use serde_json::json;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const DISK_BYTES: u64 = 16 * MIB;
/// QEMU's default bitmap granularity for a qcow2 node of 64 KiB clusters.
const GRANULE_BYTES: u64 = 64 * KIB;

fn installed(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn skip() -> bool {
    let missing: Vec<&str> = ["qemu-storage-daemon", "qemu-img", "qemu-io"]
        .into_iter()
        .filter(|b| !installed(b))
        .collect();
    if !missing.is_empty() {
        eprintln!("skipped: {} not installed (qemu-utils)", missing.join(", "));
    }
    !missing.is_empty()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The daemon, killed when the test ends however it ends.
struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Serves a new qcow2 image as node `disk0` (with a writable NBD export `disk` on
    /// `nbd.sock` when `nbd_server`) and a QMP monitor on `qmp.sock`.
    fn start(dir: &Path, nbd_server: bool) -> Daemon {
        let image = dir.join("disk.qcow2");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&image)
            .arg(DISK_BYTES.to_string()));
        let mut cmd = Command::new("qemu-storage-daemon");
        cmd.arg("--blockdev")
            .arg(format!(
                "driver=file,filename={},node-name=file0",
                image.display()
            ))
            .args(["--blockdev", "driver=qcow2,file=file0,node-name=disk0"]);
        if nbd_server {
            cmd.arg("--nbd-server")
                .arg(format!(
                    "addr.type=unix,addr.path={}",
                    dir.join("nbd.sock").display()
                ))
                .args([
                    "--export",
                    "type=nbd,id=e0,node-name=disk0,name=disk,writable=on",
                ]);
        }
        cmd.arg("--chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=qmp0",
                dir.join("qmp.sock").display()
            ))
            .args(["--monitor", "chardev=qmp0"])
            .stdout(Stdio::null());
        let child = cmd.spawn().expect("qemu-storage-daemon starts");
        Daemon {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn qmp(&mut self) -> Qmp {
        let socket = self.dir.join("qmp.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Qmp::connect(&socket) {
                Ok(q) => return q,
                Err(e) if e.kind() == QmpErrorKind::Io && Instant::now() < deadline => {
                    assert!(
                        self.child.try_wait().unwrap().is_none(),
                        "the daemon exited"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Writes `(offset, length, pattern)` through the live export, and into `model`.
    fn write(&self, writes: &[(u64, u64, u8)], model: &mut [u8]) {
        let uri = format!(
            "nbd+unix:///disk?socket={}",
            self.dir.join("nbd.sock").display()
        );
        let mut cmd = Command::new("qemu-io");
        cmd.args(["-f", "raw"]);
        for &(offset, len, pattern) in writes {
            cmd.arg("-c")
                .arg(format!("write -P {pattern:#x} {offset} {len}"));
            model[offset as usize..(offset + len) as usize].fill(pattern);
        }
        run(cmd.arg(&uri));
    }
}

/// `(start, end)` of each write rounded out to whole granules, neighbours merged.
fn granules(writes: &[(u64, u64, u8)]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = writes
        .iter()
        .map(|&(o, l, _)| {
            (
                o / GRANULE_BYTES * GRANULE_BYTES,
                (o + l).div_ceil(GRANULE_BYTES) * GRANULE_BYTES,
            )
        })
        .collect();
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if last.1 >= start => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// Reads a cut's view: its whole content, and the ranges its dirty bitmap marks (if it has one).
fn read_view(d: &DiskCut) -> (Vec<u8>, Option<Vec<(u64, u64)>>) {
    let mut opts = ClientOptions::new(d.export.clone());
    let context = d
        .dirty_bitmap
        .as_ref()
        .map(|b| format!("qemu:dirty-bitmap:{b}"));
    opts.meta_contexts = context.iter().cloned().collect();
    let mut c =
        Client::connect_unix(&d.socket, &opts).unwrap_or_else(|e| panic!("{}: {e}", d.uri()));
    assert_eq!(c.size(), d.size_bytes);
    let mut bytes = vec![0u8; d.size_bytes as usize];
    for (i, piece) in bytes.chunks_mut(4 * MIB as usize).enumerate() {
        c.read(i as u64 * 4 * MIB, piece).unwrap();
    }
    let dirty = context.map(|name| {
        let id = c.context_id(&name).expect("the bitmap is offered");
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut at = 0;
        while at < d.size_bytes {
            for e in c.block_status(at, (d.size_bytes - at) as u32, id).unwrap() {
                let end = at + e.length;
                if e.flags & 1 != 0 {
                    match out.last_mut() {
                        Some(last) if last.1 == at => last.1 = end,
                        _ => out.push((at, end)),
                    }
                }
                at = end;
            }
        }
        out
    });
    c.disconnect().unwrap();
    (bytes, dirty)
}

fn capture(daemon: &mut Daemon, nbd_socket: Option<PathBuf>) -> Capture {
    let disks = vec![DiskSource {
        name: "os".into(),
        node: "disk0".into(),
    }];
    let config = CaptureConfig {
        scratch_dir: daemon.dir.clone(),
        nbd_socket,
    };
    Capture::new(daemon.qmp(), disks, config).unwrap()
}

/// What the daemon still holds that a cut made: exports other than the guest's, jobs, nodes.
fn leftovers(qmp: &mut Qmp) -> (usize, usize, usize) {
    let count = |v: serde_json::Value, pick: &dyn Fn(&serde_json::Value) -> bool| {
        v.as_array().unwrap().iter().filter(|x| pick(x)).count()
    };
    let exports = qmp.execute("query-block-exports", json!({})).unwrap();
    let jobs = qmp.execute("query-block-jobs", json!({})).unwrap();
    let nodes = qmp
        .execute("query-named-block-nodes", json!({"flat": true}))
        .unwrap();
    (
        count(exports, &|e| e["id"] != "e0"),
        count(jobs, &|_| true),
        count(nodes, &|n| {
            n["node-name"].as_str().unwrap().starts_with("rlf")
        }),
    )
}

#[test]
fn each_cut_reads_as_the_disk_was_and_its_bitmap_marks_what_changed_since_the_last_point() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), true);
    let mut model = vec![0u8; DISK_BYTES as usize];
    // Connected once the daemon answers on QMP, which it does after its NBD server listens.
    let mut cap = capture(&mut daemon, Some(dir.path().join("nbd.sock")));
    daemon.write(&[(0, MIB, 0x10), (9 * MIB, 64 * KIB, 0x11)], &mut model);

    // The first cut has no bitmap to read: a full pass. A write after it is not seen.
    let first = cap.cut().unwrap();
    assert_eq!(first.disks[0].dirty_bitmap, None);
    let at_first = model.clone();
    let b = [
        (2 * MIB + 100 * KIB, 4 * KIB, 0x20),
        (DISK_BYTES - 512, 512, 0x21),
    ];
    daemon.write(&b, &mut model);
    let (bytes, dirty) = read_view(&first.disks[0]);
    assert!(
        bytes == at_first,
        "the first view reads as the disk was at the cut"
    );
    assert_eq!(dirty, None);
    cap.finish(first).unwrap();
    assert_eq!(
        leftovers(cap.qmp()),
        (0, 0, 0),
        "a finished cut leaves nothing behind"
    );

    // The second cut's bitmap marks exactly what was written since the first.
    let second = cap.cut().unwrap();
    let at_second = model.clone();
    let c = [(5 * MIB, 200 * KIB, 0x30)];
    daemon.write(&c, &mut model);
    let (bytes, dirty) = read_view(&second.disks[0]);
    assert!(
        bytes == at_second,
        "the second view reads as the disk was at its cut"
    );
    assert_eq!(dirty, Some(granules(&b)));
    // No point is taken from it: its bitmap is merged back.
    cap.abandon(second).unwrap();
    assert_eq!(
        leftovers(cap.qmp()),
        (0, 0, 0),
        "an abandoned cut leaves nothing behind"
    );

    let third = cap.cut().unwrap();
    let (bytes, dirty) = read_view(&third.disks[0]);
    assert!(bytes == model, "the third view reads as the disk is");
    let both: Vec<_> = b.iter().chain(&c).copied().collect();
    assert_eq!(
        dirty,
        Some(granules(&both)),
        "the abandoned cut's writes are marked again"
    );
    cap.finish(third).unwrap();
    cap.close().unwrap();
}

#[test]
fn a_daemon_without_an_nbd_server_gets_a_private_one_and_a_running_one_must_be_named() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), false);
    let mut cap = capture(&mut daemon, None);
    let cut = cap.cut().unwrap();
    let (bytes, _) = read_view(&cut.disks[0]);
    assert!(bytes.iter().all(|&b| b == 0));
    cap.finish(cut).unwrap();

    cap.close().unwrap();
    assert!(
        !dir.path().join("nbd.sock").exists(),
        "the private server is stopped"
    );

    // An unknown node is refused at the cut, naming it, and leaves nothing behind.
    let config = CaptureConfig {
        scratch_dir: dir.path().to_path_buf(),
        nbd_socket: None,
    };
    let disks = vec![DiskSource {
        name: "os".into(),
        node: "disk0".into(),
    }];
    let wrong = vec![DiskSource {
        name: "os".into(),
        node: "nosuch".into(),
    }];
    let mut cap = Capture::new(daemon.qmp(), wrong, config).unwrap();
    let e = cap.cut().unwrap_err();
    assert_eq!(e.kind(), QmpErrorKind::State, "{e}");
    assert!(e.to_string().contains("nosuch"), "{e}");
    assert_eq!(
        overlays(dir.path()),
        0,
        "no fleecing overlay is left behind"
    );
    cap.close().unwrap();

    // A server that is already running must be named: replog cannot learn its address.
    let mut qmp = daemon.qmp();
    let elsewhere = dir.path().join("elsewhere.sock");
    qmp.execute(
        "nbd-server-start",
        json!({"addr": {"type": "unix", "data": {"path": elsewhere}}}),
    )
    .unwrap();
    let config = CaptureConfig {
        scratch_dir: dir.path().to_path_buf(),
        nbd_socket: None,
    };
    let e = Capture::new(qmp, disks, config).unwrap_err();
    assert_eq!(e.kind(), QmpErrorKind::State, "{e}");
}

/// The fleecing overlays left in a scratch directory.
fn overlays(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().starts_with("fleece-")
        })
        .count()
}
