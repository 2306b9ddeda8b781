//! The capture cycle against a live disk: `qemu-storage-daemon` serving a qcow2 image, written
//! through its NBD export as a guest would while replog cuts it. Each cut's view must read as
//! the disk was at the cut (writes after it are not seen), its dirty bitmap must mark exactly
//! the granules written since the previous cut, an abandoned cut's writes must be marked again
//! at the next one, and every QEMU object a cut made must be gone after it ends.
//!
//! Under the cycle, the protocol it relies on is checked by hand over QMP, as a backup tool
//! drives it (CAPTURE.md): a bitmap disabled at the cut and exported with the node names exactly
//! the granules written before the cut, `base:allocation` shows data where writes went and
//! zero-reading holes elsewhere, and the bytes are the disk's.
//!
//! Skipped, with a message, when `qemu-storage-daemon` (or `qemu-img` and `qemu-io`, which ship
//! in the same qemu-utils package) is not installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use replog_nbd::{Client, ClientOptions, NbdErrorKind, proto};
use replog_qemu::{Capture, CaptureConfig, DiskCut, DiskSource, Qmp, QmpErrorKind};
use replog_tests::qemu::{QemuDaemon, live_disk};
use serde_json::json;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const DISK_BYTES: u64 = 16 * MIB;
/// QEMU's default bitmap granularity for a qcow2 node of 64 KiB clusters (qemu-img's default
/// cluster size): one granule is one cluster, so a written granule is also an allocated cluster.
const GRANULE_BYTES: u64 = 64 * KIB;

fn connect_qmp(daemon: &QemuDaemon) -> Qmp {
    Qmp::connect(&daemon.qmp_socket()).unwrap_or_else(|e| panic!("{e}"))
}

/// Writes `(offset, length, pattern)` through the daemon's live export, as a guest would, and
/// into `model`.
fn guest_writes(daemon: &QemuDaemon, writes: &[(u64, u64, u8)], model: &mut [u8]) {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for &(offset, len, pattern) in writes {
        cmd.arg("-c")
            .arg(format!("write -P {pattern:#x} {offset} {len}"));
        model[offset as usize..(offset + len) as usize].fill(pattern);
    }
    let out = cmd.arg(daemon.nbd_uri()).output().expect("qemu-io starts");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// The dirty flag of a `qemu:dirty-bitmap:` extent.
const DIRTY: u32 = 1;

/// Connects to `export` on `socket`, selecting the meta contexts `contexts`.
fn connect(socket: &Path, export: &str, contexts: &[String]) -> Client {
    let mut opts = ClientOptions::new(export);
    opts.meta_contexts = contexts.to_vec();
    Client::connect_unix(socket, &opts)
        .unwrap_or_else(|e| panic!("export {export} on {}: {e}", socket.display()))
}

/// The whole export, read in pieces of 4 MiB.
fn read_all(c: &mut Client) -> Vec<u8> {
    let mut bytes = vec![0u8; c.size() as usize];
    for (i, piece) in bytes.chunks_mut(4 * MIB as usize).enumerate() {
        c.read(i as u64 * 4 * MIB, piece).unwrap();
    }
    bytes
}

/// The whole disk's extents of context `name` as `(start, end, flags)`, asking again from
/// where each reply stopped; neighbours with equal flags are merged. They must cover the disk
/// exactly.
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

/// Reads a cut's view: its whole content, and the ranges its dirty bitmap marks (if it has one).
fn read_view(d: &DiskCut) -> (Vec<u8>, Option<Vec<(u64, u64)>>) {
    let context = d
        .dirty_bitmap
        .as_ref()
        .map(|b| format!("qemu:dirty-bitmap:{b}"));
    let mut c = connect(&d.socket, &d.export, context.as_slice());
    assert_eq!(c.size(), d.size_bytes);
    let bytes = read_all(&mut c);
    let dirty = context.map(|name| ranges(&extents(&mut c, &name), |f| f & DIRTY != 0));
    c.disconnect().unwrap();
    (bytes, dirty)
}

fn capture(daemon: &QemuDaemon, scratch_dir: &Path, nbd_socket: Option<PathBuf>) -> Capture {
    let disks = vec![DiskSource {
        name: "os".into(),
        node: "disk0".into(),
    }];
    let config = CaptureConfig {
        scratch_dir: scratch_dir.to_path_buf(),
        nbd_socket,
    };
    Capture::new(connect_qmp(daemon), disks, config).unwrap()
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
    let Some((dir, daemon)) = live_disk(DISK_BYTES, true) else {
        return;
    };
    let mut model = vec![0u8; DISK_BYTES as usize];
    let mut cap = capture(&daemon, dir.path(), Some(daemon.nbd_socket()));
    let writes = [(0, MIB, 0x10), (9 * MIB, 64 * KIB, 0x11)];
    guest_writes(&daemon, &writes, &mut model);

    // The first cut has no bitmap to read: a full pass. A write after it is not seen.
    let first = cap.cut().unwrap();
    assert_eq!(first.disks[0].dirty_bitmap, None);
    let at_first = model.clone();
    let b = [
        (2 * MIB + 100 * KIB, 4 * KIB, 0x20),
        (DISK_BYTES - 512, 512, 0x21),
    ];
    guest_writes(&daemon, &b, &mut model);
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
    guest_writes(&daemon, &c, &mut model);
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
    let Some((dir, daemon)) = live_disk(DISK_BYTES, false) else {
        return;
    };
    let mut cap = capture(&daemon, dir.path(), None);
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
    let mut cap = Capture::new(connect_qmp(&daemon), wrong, config).unwrap();
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
    let mut qmp = connect_qmp(&daemon);
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

/// The size of the disk of the hand-driven bitmap test.
const BITMAP_DISK_BYTES: u64 = 32 * MIB;

/// `(offset, length, pattern byte)`: aligned, inside one granule, across three granules, and
/// the disk's last 512 bytes.
const BEFORE_CUT: [(u64, u64, u8); 4] = [
    (MIB, 64 * KIB, 0x11),
    (5 * MIB + 100 * KIB, 4 * KIB, 0x22),
    (10 * MIB + 60 * KIB, 100 * KIB, 0x33),
    (BITMAP_DISK_BYTES - 512, 512, 0x44),
];
/// Written after the bitmap is disabled: visible, but not dirty.
const AFTER_CUT: (u64, u64, u8) = (20 * MIB, 64 * KIB, 0x55);

/// The protocol under the capture, driven by hand over QMP: a dirty bitmap is added, writes are
/// made through the guest's export, the bitmap is disabled (the cut), and the node is exported
/// again read-only with the bitmap. The `qemu:dirty-bitmap:b0` extents are exactly the written
/// ranges rounded out to the bitmap's granularity, `base:allocation` shows data there and holes
/// elsewhere, and the bytes equal a model of the disk. A write made after the cut is read back
/// but is not in the bitmap, and a read past the end is refused.
#[test]
fn a_dirty_bitmap_exported_over_qmp_names_exactly_the_granules_written() {
    let Some((_dir, daemon)) = live_disk(BITMAP_DISK_BYTES, true) else {
        return;
    };
    let mut qmp = connect_qmp(&daemon);
    qmp.execute(
        "block-dirty-bitmap-add",
        json!({"node": "disk0", "name": "b0", "granularity": GRANULE_BYTES, "persistent": false}),
    )
    .unwrap();
    let mut model = vec![0u8; BITMAP_DISK_BYTES as usize];
    guest_writes(&daemon, &BEFORE_CUT, &mut model);
    // The cut: b0 stops growing, as in a backup cycle's transaction.
    qmp.execute(
        "block-dirty-bitmap-disable",
        json!({"node": "disk0", "name": "b0"}),
    )
    .unwrap();
    guest_writes(&daemon, &[AFTER_CUT], &mut model);
    qmp.execute(
        "block-export-add",
        json!({"type": "nbd", "id": "e1", "node-name": "disk0", "name": "snap",
               "writable": false, "bitmaps": [{"node": "disk0", "name": "b0"}]}),
    )
    .unwrap();

    let dirty_context = "qemu:dirty-bitmap:b0";
    let contexts = [proto::BASE_ALLOCATION, dirty_context].map(String::from);
    let mut c = connect(&daemon.nbd_socket(), "snap", &contexts);
    assert_eq!(c.size(), BITMAP_DISK_BYTES);
    let dirty = extents(&mut c, dirty_context);
    assert_eq!(
        ranges(&dirty, |f| f & DIRTY != 0),
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
    let bytes = read_all(&mut c);
    let differs = bytes.iter().zip(&model).position(|(a, b)| a != b);
    assert_eq!(differs, None, "the first byte that differs from the model");
    let mut two = [0u8; 2];
    let past = c.read(BITMAP_DISK_BYTES - 1, &mut two).unwrap_err();
    assert_eq!(past.kind, NbdErrorKind::InvalidRequest, "{past}");
    c.disconnect().unwrap();

    qmp.execute("block-export-del", json!({"id": "e1"}))
        .unwrap();
    qmp.execute(
        "block-dirty-bitmap-remove",
        json!({"node": "disk0", "name": "b0"}),
    )
    .unwrap();
}

/// The live disk of these tests outlives its daemon: restarted (after a SIGKILL), the daemon
/// serves the same image on the same sockets.
#[test]
fn a_restarted_daemon_serves_what_was_written_before() {
    let Some((_dir, mut daemon)) = live_disk(DISK_BYTES, true) else {
        return;
    };
    let mut model = vec![0u8; DISK_BYTES as usize];
    // qemu-io flushes before it exits, so the write is in the image when the daemon dies.
    guest_writes(&daemon, &[(3 * MIB, 128 * KIB, 0x66)], &mut model);
    let pid = daemon.pid();
    daemon.kill();
    daemon.kill();
    daemon.restart();
    assert_ne!(daemon.pid(), pid);
    connect_qmp(&daemon);
    let mut c = connect(&daemon.nbd_socket(), "disk", &[]);
    assert!(read_all(&mut c) == model, "the image reads as written");
    c.disconnect().unwrap();
}
