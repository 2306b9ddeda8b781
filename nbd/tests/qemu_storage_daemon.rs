//! The client against a live disk: `qemu-storage-daemon` serving a qcow2 image, driven over
//! QMP as a backup tool drives it (CAPTURE.md). A dirty bitmap is added, writes are made through
//! the daemon's writable NBD export, the bitmap is disabled (the cut), and the node is exported
//! again read-only with the bitmap. What the client reads must be what was written: the
//! `qemu:dirty-bitmap:b0` extents are exactly the written ranges rounded out to the bitmap's
//! granularity, `base:allocation` shows data there and holes elsewhere, and the bytes equal a
//! model of the disk. A write made after the cut is read back but is not in the bitmap.
//!
//! Skipped, with a message, when `qemu-storage-daemon` (or `qemu-img` and `qemu-io`, which ship
//! in the same qemu-utils package) is not installed.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use replog_nbd::{Client, ClientOptions, NbdErrorKind, proto};
use serde_json::{Value, json};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The disk's size.
const DISK_BYTES: u64 = 32 * MIB;
/// The bitmap's granularity and the image's cluster size: one granule is one cluster, so a
/// written granule is also an allocated cluster.
const GRANULE_BYTES: u64 = 64 * KIB;
/// How long the daemon has to start, and each QMP answer to arrive.
const WAIT: Duration = Duration::from_secs(30);

/// `(offset, length, pattern byte)`: aligned, inside one granule, and across three granules.
const BEFORE_CUT: [(u64, u64, u8); 4] = [
    (MIB, 64 * KIB, 0x11),
    (5 * MIB + 100 * KIB, 4 * KIB, 0x22),
    (10 * MIB + 60 * KIB, 100 * KIB, 0x33),
    (DISK_BYTES - 512, 512, 0x44),
];
/// Written after the bitmap is disabled: visible, but not dirty.
const AFTER_CUT: (u64, u64, u8) = (20 * MIB, 64 * KIB, 0x55);

fn installed(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
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
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    /// Serves `image` as node `disk0`, with an NBD server on `nbd`, a writable export `disk`
    /// and a QMP monitor on `qmp`.
    fn start(image: &Path, nbd: &Path, qmp: &Path) -> Daemon {
        let child = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!(
                "driver=file,filename={},node-name=file0",
                image.display()
            ))
            .args(["--blockdev", "driver=qcow2,file=file0,node-name=disk0"])
            .arg("--nbd-server")
            .arg(format!("addr.type=unix,addr.path={}", nbd.display()))
            .args([
                "--export",
                "type=nbd,id=e0,node-name=disk0,name=disk,writable=on",
            ])
            .arg("--chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=qmp0",
                qmp.display()
            ))
            .args(["--monitor", "chardev=qmp0"])
            .stdout(Stdio::null())
            .spawn()
            .expect("qemu-storage-daemon starts");
        Daemon(child)
    }

    /// Connects to the socket at `path` once the daemon listens there.
    fn connect(&mut self, path: &Path) -> UnixStream {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(s) = UnixStream::connect(path) {
                return s;
            }
            if let Some(status) = self.0.try_wait().expect("the daemon's status") {
                panic!("qemu-storage-daemon exited ({status}) before listening");
            }
            assert!(Instant::now() < deadline, "no daemon on {}", path.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A QMP session: one JSON object per line each way; events are skipped.
struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    /// Reads the greeting and leaves capabilities negotiation mode.
    fn open(stream: UnixStream) -> Qmp {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let w = stream.try_clone().unwrap();
        let mut qmp = Qmp {
            r: BufReader::new(stream),
            w,
        };
        let greeting = qmp.message();
        assert!(
            greeting.get("QMP").is_some(),
            "not a QMP greeting: {greeting}"
        );
        qmp.execute("qmp_capabilities", json!({}));
        qmp
    }

    fn message(&mut self) -> Value {
        let mut line = String::new();
        let n = self.r.read_line(&mut line).expect("a QMP message");
        assert!(n > 0, "the QMP monitor closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    /// Runs `command` and returns its `return` value; an `error` fails the test.
    fn execute(&mut self, command: &str, arguments: Value) -> Value {
        let request = json!({"execute": command, "arguments": arguments});
        writeln!(self.w, "{request}").unwrap();
        loop {
            let mut reply = self.message();
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(error) = reply.get("error") {
                panic!("QMP {command} failed: {error}");
            }
            return reply["return"].take();
        }
    }
}

/// Writes `(offset, length, pattern)` through the NBD export `name` of the daemon at `nbd`,
/// as a guest would, and into `model`.
fn guest_writes(nbd: &Path, name: &str, writes: &[(u64, u64, u8)], model: &mut [u8]) {
    let uri = format!("nbd+unix:///{name}?socket={}", nbd.display());
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for &(offset, len, pattern) in writes {
        cmd.arg("-c")
            .arg(format!("write -P {pattern:#x} {offset} {len}"));
        model[offset as usize..(offset + len) as usize].fill(pattern);
    }
    run(cmd.arg(&uri));
}

/// `(start, end)` of each write rounded out to whole granules, overlaps and neighbours merged.
fn granules(writes: &[(u64, u64, u8)]) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = writes
        .iter()
        .map(|&(offset, len, _)| {
            let start = offset / GRANULE_BYTES * GRANULE_BYTES;
            (
                start,
                (offset + len).div_ceil(GRANULE_BYTES) * GRANULE_BYTES,
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

/// The whole disk's extents of context `name` as `(start, end, flags)`, asking again from
/// where each reply stopped; neighbours with equal flags are merged.
fn extents(c: &mut Client, name: &str) -> Vec<(u64, u64, u32)> {
    let id = c
        .context_id(name)
        .unwrap_or_else(|| panic!("{name} was not selected"));
    let mut out: Vec<(u64, u64, u32)> = Vec::new();
    let mut at = 0;
    while at < c.size() {
        let len = (c.size() - at).min(u64::from(u32::MAX) / 2) as u32;
        for e in c.block_status(at, len, id).unwrap() {
            let end = at + e.length;
            match out.last_mut() {
                Some(last) if last.2 == e.flags => last.1 = end,
                _ => out.push((at, end, e.flags)),
            }
            at = end;
        }
    }
    assert_eq!(at, c.size(), "{name}: the extents cover the disk exactly");
    out
}

/// The ranges of `extents` whose flags satisfy `pick`.
fn ranges(extents: &[(u64, u64, u32)], pick: impl Fn(u32) -> bool) -> Vec<(u64, u64)> {
    extents
        .iter()
        .filter(|e| pick(e.2))
        .map(|e| (e.0, e.1))
        .collect()
}

fn connect(nbd: &Path, export: &str, contexts: &[&str]) -> Client {
    let mut opts = ClientOptions::new(export);
    opts.meta_contexts = contexts.iter().map(|c| (*c).to_owned()).collect();
    Client::connect_unix(nbd, &opts).unwrap_or_else(|e| panic!("export {export}: {e}"))
}

struct Paths {
    image: PathBuf,
    nbd: PathBuf,
    qmp: PathBuf,
}

fn paths(dir: &Path) -> Paths {
    Paths {
        image: dir.join("disk.qcow2"),
        nbd: dir.join("nbd.sock"),
        qmp: dir.join("qmp.sock"),
    }
}

#[test]
fn a_dirty_bitmap_exported_over_qmp_names_exactly_the_granules_written() {
    let missing: Vec<&str> = ["qemu-storage-daemon", "qemu-img", "qemu-io"]
        .into_iter()
        .filter(|b| !installed(b))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "skipped: {} not installed (the qemu-utils package has them)",
            missing.join(", ")
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = paths(dir.path());
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o"])
        .arg(format!("cluster_size={GRANULE_BYTES}"))
        .arg(&p.image)
        .arg(DISK_BYTES.to_string()));
    let mut daemon = Daemon::start(&p.image, &p.nbd, &p.qmp);
    let mut qmp = Qmp::open(daemon.connect(&p.qmp));
    qmp.execute(
        "block-dirty-bitmap-add",
        json!({"node": "disk0", "name": "b0", "granularity": GRANULE_BYTES, "persistent": false}),
    );
    let mut model = vec![0u8; DISK_BYTES as usize];
    guest_writes(&p.nbd, "disk", &BEFORE_CUT, &mut model);
    // The cut: b0 stops growing, as in a backup cycle's transaction.
    qmp.execute(
        "block-dirty-bitmap-disable",
        json!({"node": "disk0", "name": "b0"}),
    );
    guest_writes(&p.nbd, "disk", &[AFTER_CUT], &mut model);
    qmp.execute(
        "block-export-add",
        json!({"type": "nbd", "id": "e1", "node-name": "disk0", "name": "snap",
               "writable": false, "bitmaps": [{"node": "disk0", "name": "b0"}]}),
    );

    let dirty_context = "qemu:dirty-bitmap:b0";
    let mut c = connect(&p.nbd, "snap", &[proto::BASE_ALLOCATION, dirty_context]);
    assert_eq!(c.size(), DISK_BYTES);
    let dirty = extents(&mut c, dirty_context);
    assert_eq!(
        ranges(&dirty, |f| f & 1 != 0),
        granules(&BEFORE_CUT),
        "the dirty extents are the granules written before the cut, and only those"
    );
    let allocation = extents(&mut c, proto::BASE_ALLOCATION);
    let all_writes: Vec<_> = BEFORE_CUT.iter().chain([&AFTER_CUT]).copied().collect();
    assert_eq!(
        ranges(&allocation, |f| f & proto::STATE_HOLE == 0),
        granules(&all_writes),
        "base:allocation: data where any write went"
    );
    assert!(
        allocation
            .iter()
            .all(|e| e.2 & proto::STATE_HOLE == 0 || e.2 & proto::STATE_ZERO != 0),
        "every hole reads as zeros: {allocation:?}"
    );
    let piece_bytes = 4 * MIB;
    let mut buf = vec![0u8; piece_bytes as usize];
    for at in (0..DISK_BYTES).step_by(piece_bytes as usize) {
        c.read(at, &mut buf).unwrap();
        let want = &model[at as usize..(at + piece_bytes) as usize];
        assert!(
            buf == want,
            "the bytes at {at}..{} differ",
            at + piece_bytes
        );
    }
    let past = c.read(DISK_BYTES - 1, &mut buf[..2]).unwrap_err();
    assert_eq!(past.kind, NbdErrorKind::InvalidRequest, "{past}");
    c.disconnect().unwrap();

    qmp.execute("block-export-del", json!({"id": "e1"}));
    qmp.execute(
        "block-dirty-bitmap-remove",
        json!({"node": "disk0", "name": "b0"}),
    );
}
