//! `replog ingest --from nbd://...` and `--changed-ranges` against real servers: qemu-nbd
//! exporting a qcow2 image with a persistent dirty bitmap, nbdkit's error filter failing reads
//! midway, and images written by qemu-io. Every point is compared byte for byte with
//! `qemu-img convert -O raw` of the image it should equal. A test whose tools are missing says
//! so and returns.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use replog_tests::qemu::{QemuDaemon, installed};
use support::{json_of, replog, replog_ok};

mod support;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A server process, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// Bytes the server has read from files so far (`rchar` of /proc/PID/io).
    fn rchar(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.0.id())).unwrap();
        let line = io.lines().find(|l| l.starts_with("rchar:")).unwrap();
        line["rchar:".len()..].trim().parse().unwrap()
    }
}

/// Starts `cmd` and waits until `sock` accepts connections.
fn serve(cmd: &mut Command, sock: &Path) -> Server {
    let server = Server(cmd.spawn().expect("the server starts"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(Instant::now() < deadline, "{cmd:?} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// qemu-nbd exporting `img` read-only (and persistently) on `sock`, with `bitmap` if given.
fn qemu_nbd(img: &Path, format: &str, sock: &Path, bitmap: Option<&str>) -> Server {
    let _ = std::fs::remove_file(sock);
    let mut cmd = Command::new("qemu-nbd");
    cmd.args(["-r", "-t", "-f", format, "-k"]).arg(sock);
    if let Some(b) = bitmap {
        cmd.args(["-B", b]);
    }
    serve(cmd.arg(img), sock)
}

fn uri(sock: &Path) -> String {
    format!("nbd+unix:///?socket={}", sock.display())
}

fn bitmap(op: &[&str], img: &Path, name: &str) {
    run(Command::new("qemu-img")
        .arg("bitmap")
        .args(op)
        .arg(img)
        .arg(name));
}

fn create(img: &Path, format: &str, size: &str) {
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", format])
        .arg(img)
        .arg(size));
}

fn convert(from: &Path, format: &str, to: &Path) {
    run(Command::new("qemu-img")
        .args(["convert", "-O", format])
        .arg(from)
        .arg(to));
}

/// `ingest VAULT d --from URI [--dirty-bitmap NAME]`, then `extra`.
fn ingest_nbd(vault: &str, from: &str, bitmap: Option<&str>, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["ingest", vault, "d", "--from", from];
    if let Some(b) = bitmap {
        args.extend(["--dirty-bitmap", b]);
    }
    args.extend(extra);
    args.into_iter().map(String::from).collect()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn qemu_io(img: &Path, format: &str, command: &str) {
    run(Command::new("qemu-io")
        .args(["-f", format, "-c", command])
        .arg(img));
}

/// The raw bytes of `img`, as qemu-img reads them.
fn raw_of(dir: &Path, img: &Path) -> Vec<u8> {
    let out = dir.join("expected.raw");
    convert(img, "raw", &out);
    std::fs::read(&out).unwrap()
}

/// Takes a point and returns the failover of it of disk `d`.
fn point_and_failover(dir: &Path, vault: &str) -> Vec<u8> {
    let id = replog_ok(&["point", vault]).trim().to_owned();
    let out = dir.join(format!("out{id}"));
    let out_s = out.to_str().unwrap();
    replog_ok(&["failover", vault, "--point", &id, "--out", out_s]);
    std::fs::read(out.join("d.raw")).unwrap()
}

fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    assert_eq!(first, None, "{what}: first differing byte");
}

struct Setup {
    dir: tempfile::TempDir,
    vault: String,
    img: PathBuf,
    sock: PathBuf,
}

/// A vault with disk `d` of 64 MiB added from a qcow2 image holding some data, and the image.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.qcow2");
    let sock = dir.path().join("nbd.sock");
    let vault = dir.path().join("vault").to_str().unwrap().to_owned();
    create(&img, "qcow2", "64M");
    qemu_io(&img, "qcow2", "write -P 0x11 0 8M");
    qemu_io(&img, "qcow2", "write -P 0x22 32M 4M");
    replog_ok(&["init", &vault]);
    Setup {
        dir,
        vault,
        img,
        sock,
    }
}

/// The scenario the feature is for: seed from NBD, then points that read only what a bitmap
/// marks, each byte-exact; the bytes read are the dirty bytes, and qemu-nbd read no more.
#[test]
fn bitmap_ingests_read_only_dirty_extents_and_every_point_is_byte_exact() {
    if !installed(&["qemu-img", "qemu-nbd", "qemu-io"]) {
        return;
    }
    let s = setup();
    let (dir, vault) = (s.dir.path(), s.vault.as_str());
    let seeded = {
        let _server = qemu_nbd(&s.img, "qcow2", &s.sock, None);
        let added = json_of(&["disk", "add", vault, "d", "--from", &uri(&s.sock), "--json"]);
        assert_eq!(added["disk_bytes"], 64 * MIB);
        assert_eq!(
            added["bytes_read"],
            12 * MIB,
            "only the data was read: {added}"
        );
        raw_of(dir, &s.img)
    };
    assert_same(&point_and_failover(dir, vault), &seeded, "the seeded point");
    bitmap(&["--add", "--enable"], &s.img, "b0");
    qemu_io(&s.img, "qcow2", "write -P 0xab 1M 64k");
    qemu_io(&s.img, "qcow2", "write -P 0xcd 40M 1M");
    qemu_io(&s.img, "qcow2", "write -z 2M 128k");
    let first = bitmap_pass(&s, "b0", 64 * KIB + MIB + 128 * KIB, &[]);
    assert_eq!(
        first["bytes_read"],
        64 * KIB + MIB,
        "zeroed extents are not read"
    );
    assert_eq!(first["bytes_zeroed"], 128 * KIB);
    assert_same(
        &point_and_failover(dir, vault),
        &raw_of(dir, &s.img),
        "the first bitmap point",
    );
    // A fresh bitmap for the next cycle: it marks only what is written from now on.
    bitmap(&["--remove"], &s.img, "b0");
    bitmap(&["--add", "--enable"], &s.img, "b1");
    qemu_io(&s.img, "qcow2", "write -P 0xef 50M 256k");
    let second = bitmap_pass(&s, "b1", 256 * KIB, &["--point", "--label", "cycle 2"]);
    assert_eq!(second["bytes_read"], 256 * KIB);
    assert_eq!(second["bytes_written"], 256 * KIB);
    // The ingest took the point itself, over the records it had made durable.
    let point = &second["point"];
    assert_eq!(
        (&point["label"], &point["kind"]),
        (&"cycle 2".into(), &"crash-consistent".into())
    );
    let out = dir.join("second");
    let id = point["id"].to_string();
    replog_ok(&[
        "failover",
        vault,
        "--point",
        &id,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_same(
        &std::fs::read(out.join("d.raw")).unwrap(),
        &raw_of(dir, &s.img),
        "the second bitmap point",
    );
}

/// One `ingest --dirty-bitmap` pass; checks the bytes the bitmap marks, the bytes read by the
/// client and qemu-nbd's own count of what it read.
fn bitmap_pass(s: &Setup, bitmap: &str, dirty_bytes: u64, extra: &[&str]) -> serde_json::Value {
    let server = qemu_nbd(&s.img, "qcow2", &s.sock, Some(bitmap));
    let before = server.rchar();
    let extra = [&["--json"], extra].concat();
    let args = ingest_nbd(&s.vault, &uri(&s.sock), Some(bitmap), &extra);
    let done = json_of(&strs(&args));
    let served = server.rchar() - before;
    eprintln!("{bitmap}: {done}; qemu-nbd rchar grew by {served}");
    assert_eq!(done["mode"], "dirty-bitmap");
    assert_eq!(done["bytes_marked"], dirty_bytes, "{done}");
    let read = done["bytes_read"].as_u64().unwrap();
    assert!(read * 10 <= dirty_bytes * 11, "{done}");
    // qemu-nbd read the data asked for and some qcow2 metadata (refcount and L2 tables), never
    // the whole image.
    assert!(
        served >= read && served <= read + 2 * MIB,
        "rchar {served} for {read}"
    );
    done
}

/// The digest cache stays right after an NBD pass: an image ingest afterwards, of the image as
/// it was before the pass, must journal back the blocks the pass changed (they are newer than
/// the cache), and one of the image as it is now must leave the disk equal to it.
#[test]
fn an_image_ingest_after_an_nbd_pass_gives_byte_exact_points() {
    if !installed(&["qemu-img", "qemu-nbd", "qemu-io"]) {
        return;
    }
    let s = setup();
    let (dir, vault) = (s.dir.path(), s.vault.as_str());
    let before = dir.join("before.raw");
    convert(&s.img, "raw", &before);
    let before_s = before.to_str().unwrap();
    replog_ok(&["disk", "add", vault, "d", "--from", before_s]);
    bitmap(&["--add", "--enable"], &s.img, "b0");
    qemu_io(&s.img, "qcow2", "write -P 0x77 4M 512k");
    qemu_io(&s.img, "qcow2", "write -z 0 64k");
    {
        let _server = qemu_nbd(&s.img, "qcow2", &s.sock, Some("b0"));
        let from = uri(&s.sock);
        replog_ok(&strs(&ingest_nbd(vault, &from, Some("b0"), &[])));
    }
    let after = raw_of(dir, &s.img);
    assert_same(
        &point_and_failover(dir, vault),
        &after,
        "after the NBD pass",
    );
    let back = json_of(&["ingest", vault, "d", "--from", before_s, "--json"]);
    assert_eq!(back["digest_cache"], "stale", "{back}");
    let want = std::fs::read(&before).unwrap();
    assert_same(
        &point_and_failover(dir, vault),
        &want,
        "the image before, ingested again",
    );
    let img_s = s.img.to_str().unwrap();
    replog_ok(&["ingest", vault, "d", "--from", img_s]);
    assert_same(
        &point_and_failover(dir, vault),
        &after,
        "the image after, ingested",
    );
}

/// Nothing is journaled, and no point refused, when the pass cannot start: a bitmap the server
/// does not offer, an export larger or smaller than the disk.
#[test]
fn a_missing_bitmap_or_a_resized_export_is_refused_before_anything_is_journaled() {
    if !installed(&["qemu-img", "qemu-nbd", "qemu-io"]) {
        return;
    }
    let s = setup();
    let (dir, vault) = (s.dir.path(), s.vault.as_str());
    let img_s = s.img.to_str().unwrap();
    replog_ok(&["disk", "add", vault, "d", "--from", img_s]);
    bitmap(&["--add", "--enable"], &s.img, "b0");
    let lsn = |v: &str| json_of(&["inspect", v, "--json"])["last_lsn"].clone();
    let start = lsn(vault);
    {
        let _server = qemu_nbd(&s.img, "qcow2", &s.sock, Some("b0"));
        let from = uri(&s.sock);
        let out = replog(&strs(&ingest_nbd(vault, &from, Some("b9"), &[])));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&from) && err.contains("qemu:dirty-bitmap:b9"),
            "{err}"
        );
    }
    for size in ["60M", "68M"] {
        let other = dir.join(format!("other{size}.raw"));
        create(&other, "raw", size);
        let _server = qemu_nbd(&other, "raw", &s.sock, None);
        let from = uri(&s.sock);
        let out = replog(&["ingest", vault, "d", "--from", &from]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&from) && err.contains("bytes but disk"),
            "{err}"
        );
    }
    assert_eq!(lsn(vault), start, "nothing was journaled");
    assert_same(
        &point_and_failover(dir, vault),
        &raw_of(dir, &s.img),
        "a point still works",
    );
}

/// A server that fails reads midway (nbdkit's error filter over a raw file): the ingest fails
/// naming the URI and offset, no point can be taken over its records, and the next pass, from
/// a healthy server and with a bitmap that knows nothing of the failed pass, covers what the
/// failed one covered: its point is byte-exact.
#[test]
fn a_read_failing_midway_leaves_no_point_and_the_next_pass_covers_it() {
    if !installed(&["qemu-img", "qemu-nbd", "qemu-io", "nbdkit"]) {
        return;
    }
    let s = setup();
    let (dir, vault) = (s.dir.path(), s.vault.as_str());
    replog_ok(&["disk", "add", vault, "d", "--size", "64MiB"]);
    // Data everywhere: 32 reads of 2 MiB, of which the filter fails about a third.
    let raw = dir.join("disk.raw");
    convert(&s.img, "raw", &raw);
    qemu_io(&raw, "raw", "write -P 0x33 8M 24M");
    qemu_io(&raw, "raw", "write -P 0x44 36M 28M");
    let img = dir.join("healthy.qcow2");
    convert(&raw, "qcow2", &img);
    {
        let mut cmd = Command::new("nbdkit");
        cmd.args(["-f", "-U"]).arg(&s.sock);
        cmd.args(["--filter=error", "file"]).arg(&raw);
        cmd.args(["error-pread=EIO", "error-pread-rate=30%"]);
        let _server = serve(&mut cmd, &s.sock);
        let from = uri(&s.sock);
        let out = replog(&["ingest", vault, "d", "--from", &from]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&from) && err.contains(" at "), "{err}");
    }
    let refused = replog(&["point", vault]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.contains("did not finish"), "{err}");
    bitmap(&["--add", "--enable"], &img, "b0");
    let _server = qemu_nbd(&img, "qcow2", &s.sock, Some("b0"));
    let from = uri(&s.sock);
    let done = json_of(&strs(&ingest_nbd(vault, &from, Some("b0"), &["--json"])));
    assert_eq!(done["bytes_marked"], 0, "{done}");
    assert_eq!(
        done["bytes_unfinished"],
        64 * MIB,
        "the failed pass was a full one: {done}"
    );
    assert_same(
        &point_and_failover(dir, vault),
        &std::fs::read(&raw).unwrap(),
        "the next point",
    );
}

/// `--changed-ranges` reads only the listed ranges of an image, zeroes those that no longer
/// exist, and refuses a bad list before journaling anything.
#[test]
fn changed_ranges_read_only_what_is_listed_and_a_bad_list_is_refused() {
    if !installed(&["qemu-img", "qemu-io"]) {
        return;
    }
    let s = setup();
    let (dir, vault) = (s.dir.path(), s.vault.as_str());
    let raw = dir.join("disk.raw");
    let raw_s = raw.to_str().unwrap();
    convert(&s.img, "raw", &raw);
    replog_ok(&[
        "disk", "add", vault, "d", "--from", raw_s, "--format", "raw",
    ]);
    qemu_io(&raw, "raw", "write -P 0x5e 20M 1M");
    qemu_io(&raw, "raw", "write -z 0 1M");
    let list = dir.join("changes.json");
    let rbd = r#"[{"offset":20971520,"length":1048576,"exists":"true"},{"offset":0,"length":1048576,"exists":"false"}]"#;
    std::fs::write(&list, rbd).unwrap();
    let list_s = list.to_str().unwrap();
    let args = ["ingest", vault, "d", "--from", raw_s, "--format", "raw"];
    let done = json_of(&[&args[..], &["--changed-ranges", list_s, "--json"]].concat());
    assert_eq!(done["bytes_read"], MIB, "{done}");
    assert_eq!(done["bytes_zeroed"], MIB, "{done}");
    assert_same(
        &point_and_failover(dir, vault),
        &std::fs::read(&raw).unwrap(),
        "the point",
    );
    let lines = "{\"offset\":0,\"length\":4096}\n{\"offset\":67108864,\"length\":4096}\n";
    std::fs::write(&list, lines).unwrap();
    let out = replog(&[&args[..], &["--changed-ranges", list_s]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("line 2") && err.contains("past the disk"),
        "{err}"
    );
    replog_ok(&["point", vault]);
}

/// The guest of the replication test: qemu-io on the daemon's writable export, fed one write
/// at a time on its standard input. Write `i` puts the byte `stamp(i)` in block `i`; it is
/// acknowledged when qemu-io reports it done, and only then is the next one sent (queue
/// depth 1).
struct Guest {
    child: Child,
    acked: u64,
}

const GUEST_BLOCK: u64 = 4 * KIB;

fn stamp(i: u64) -> u8 {
    (i % 251 + 1) as u8
}

impl Guest {
    fn start(daemon: &QemuDaemon) -> Guest {
        let child = Command::new("qemu-io")
            .args(["-f", "raw"])
            .arg(daemon.nbd_uri())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("qemu-io starts");
        Guest { child, acked: 0 }
    }

    /// Writes the next block and waits for its acknowledgement.
    fn write_next(&mut self, out: &mut impl BufRead) {
        use std::io::Write;
        let i = self.acked;
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(
            stdin,
            "write -P {} {} {GUEST_BLOCK}",
            stamp(i),
            i * GUEST_BLOCK
        )
        .unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "qemu-io ended");
            if line.contains("wrote ") {
                break;
            }
        }
        self.acked += 1;
    }
}

/// How many blocks `image` holds as a prefix of the guest's writes: blocks `0..k` carry their
/// stamps and everything after is zeros. Fails if the image is not such a prefix.
fn written_prefix(image: &[u8], what: &str) -> u64 {
    let blocks: Vec<&[u8]> = image.chunks(GUEST_BLOCK as usize).collect();
    let k = blocks
        .iter()
        .position(|b| b.iter().all(|&x| x == 0))
        .unwrap_or(blocks.len());
    for (i, b) in blocks.iter().enumerate() {
        let want = if (i as u64) < k as u64 {
            stamp(i as u64)
        } else {
            0
        };
        assert!(
            b.iter().all(|&x| x == want),
            "{what}: block {i} is not {want:#x} (the first {k} blocks are written): not a prefix of the acknowledged writes"
        );
    }
    k as u64
}

/// The size of the live disk: 8192 blocks of the guest.
const LIVE_DISK_BYTES: u64 = 32 * MIB;

/// The live disk of the replication tests (see [`replog_tests::qemu::live_disk`]: node
/// `disk0`, the writable NBD export `disk`, a QMP monitor), or `None`, the test skipped, where
/// qemu-utils or one of the `other` tools the test needs is not installed.
fn live_disk(other: &[&str]) -> Option<(tempfile::TempDir, QemuDaemon)> {
    if !installed(other) {
        return None;
    }
    replog_tests::qemu::live_disk(LIVE_DISK_BYTES, true)
}

/// `replog replicate VAULT --every EVERY --disk os=disk0` on the live disk `daemon` (its QMP
/// monitor and NBD server), for the caller to add the rest to and run.
fn replicate(vault: &str, every: &str, daemon: &QemuDaemon) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_replog"));
    cmd.args(["replicate", vault, "--every", every, "--disk", "os=disk0"])
        .arg("--qmp")
        .arg(daemon.qmp_socket())
        .arg("--nbd-socket")
        .arg(daemon.nbd_socket());
    cmd
}

#[test]
fn a_disk_that_grew_at_the_source_grows_with_replicate_grow_and_old_points_keep_their_size() {
    let Some((dir, daemon)) = live_disk(&[]) else {
        return;
    };
    let d = dir.path();
    let vault = d.join("v");
    let vault_s = vault.to_str().unwrap();
    let write = daemon.nbd_uri();
    let once = |grow: bool| {
        let mut cmd = replicate(vault_s, "1s", &daemon);
        cmd.args(["--cycles", "1"]);
        if grow {
            cmd.arg("--grow");
        }
        cmd.output().expect("replog starts")
    };
    replog_ok(&["init", vault_s]);
    run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x61 0 64k", &write]));
    assert!(once(false).status.success());
    // The source grows from 32 MiB to 48 MiB, and the guest writes past the old end.
    // (The guest's export holds the node without the right to resize it: it is taken down
    // for the resize and put back, as a guest's disk is detached and attached again.)
    let mut q = replog_qemu::Qmp::connect(&daemon.qmp_socket()).unwrap();
    q.execute("block-export-del", serde_json::json!({"id": "e0"}))
        .unwrap();
    let resize = serde_json::json!({"node-name": "disk0", "size": 48 * MIB});
    let deadline = Instant::now() + Duration::from_secs(20);
    while q.execute("block_resize", resize.clone()).is_err() {
        assert!(Instant::now() < deadline, "the node never became resizable");
        std::thread::sleep(Duration::from_millis(50));
    }
    let export = serde_json::json!({"type": "nbd", "id": "e0", "node-name": "disk0",
                                     "name": "disk", "writable": true});
    q.execute("block-export-add", export).unwrap();
    drop(q);
    run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x62 40M 64k", &write]));
    // Without --grow the cycle fails, and replication stops saying why (waiting mends nothing).
    let refused = once(false);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(said.contains("--grow"), "{said}");
    assert_eq!(points_of(vault_s), [1]);
    let grown = once(true);
    assert!(
        grown.status.success(),
        "{}",
        String::from_utf8_lossy(&grown.stderr)
    );
    let sizes: Vec<u64> = points_of(vault_s)
        .iter()
        .map(|&id| {
            let out = d.join(format!("p{id}"));
            let id_s = id.to_string();
            replog_ok(&[
                "failover",
                vault_s,
                "--point",
                &id_s,
                "--out",
                out.to_str().unwrap(),
            ]);
            std::fs::metadata(out.join("os.raw")).unwrap().len()
        })
        .collect();
    assert_eq!(
        sizes,
        [32 * MIB, 48 * MIB],
        "each point keeps the size it had"
    );
    let newest = std::fs::read(d.join("p2/os.raw")).unwrap();
    let live = d.join("live.raw");
    // -U: the daemon holds the image; nothing writes it now.
    run(Command::new("qemu-img")
        .args(["convert", "-U", "-O", "raw"])
        .arg(d.join("disk.qcow2"))
        .arg(&live));
    assert_same(&newest, &std::fs::read(&live).unwrap(), "the grown disk");
}

/// The ids of the vault's points.
fn points_of(vault: &str) -> Vec<u64> {
    json_of(&["points", vault, "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn replicate_with_sync_every_puts_its_newest_point_in_the_bucket() {
    let Some((dir, daemon)) = live_disk(&["s3s-fs"]) else {
        return;
    };
    let server = replog_tests::servers::S3Server::start().expect("s3s-fs starts");
    let d = dir.path();
    let vault = d.join("v");
    let vault_s = vault.to_str().unwrap();
    let url = server.url("v");
    let with_env = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_replog"));
        cmd.args(args).envs(server.env());
        run(&mut cmd)
    };
    replog_ok(&["init", vault_s]);
    with_env(&["remote", "add", vault_s, &url]);
    let write = daemon.nbd_uri();
    run(Command::new("qemu-io").args(["-f", "raw", "-c", "write -P 0x5a 1M 256k", &write]));
    run(replicate(vault_s, "1s", &daemon)
        .args(["--sync-every", "1s", "--cycles", "2"])
        .envs(server.env()));
    let status = json_of(&["replicate", vault_s, "--status", "--json"]);
    let remote_point = status["replication"]["remote_point_id"].as_u64();
    assert_eq!(
        remote_point,
        Some(2),
        "the last cycle's point was shipped: {status}"
    );
    assert_eq!(status["replication"]["sync_error"], serde_json::Value::Null);
    // From the bucket alone, the point fails over to the same bytes as from the vault.
    let local = d.join("local");
    replog_ok(&[
        "failover",
        vault_s,
        "--point",
        "2",
        "--out",
        local.to_str().unwrap(),
    ]);
    let remote = d.join("remote");
    with_env(&[
        "failover",
        &url,
        "--point",
        "2",
        "--out",
        remote.to_str().unwrap(),
    ]);
    let want = std::fs::read(local.join("os.raw")).unwrap();
    assert_same(
        &std::fs::read(remote.join("os.raw")).unwrap(),
        &want,
        "point 2 from the bucket",
    );
    assert!(
        want[MIB as usize..(MIB + 256 * KIB) as usize]
            .iter()
            .all(|&b| b == 0x5a)
    );
}

/// The interval of the replication that the guest writes under.
const EVERY: Duration = Duration::from_secs(10);

/// How long the guest writes at least, while `replicate --every 10s` takes points.
const GUEST_WRITES_FOR: Duration = Duration::from_secs(25);

/// The guest's pause after each acknowledged write: about 100 writes a second, so 25 s of
/// writing (45 s at most) stays well inside the disk's 8192 blocks.
const GUEST_PACE: Duration = Duration::from_millis(10);

/// When the cycle of each `point` event of `replicate --json` started (when the event arrived,
/// less the cycle's `seconds`), read from its stdout on a thread; other events are printed.
fn point_events(stdout: ChildStdout) -> mpsc::Receiver<Instant> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if event["event"] != "point" {
                eprintln!("replicate: {line}");
                continue;
            }
            let took = Duration::from_secs_f64(event["seconds"].as_f64().unwrap_or_default());
            if tx.send(Instant::now() - took).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn replicate_points_are_each_a_prefix_of_the_acknowledged_writes_while_the_guest_writes() {
    let Some((dir, daemon)) = live_disk(&[]) else {
        return;
    };
    let d = dir.path();
    let vault = d.join("v");
    let vault_s = vault.to_str().unwrap();
    replog_ok(&["init", vault_s]);

    // The guest writes before replication starts, so even the first point is cut mid-stream.
    let mut guest = Guest::start(&daemon);
    let mut out = BufReader::new(guest.child.stdout.take().unwrap());
    guest.write_next(&mut out);
    let every = format!("{}s", EVERY.as_secs());
    let replicate = replicate(vault_s, &every, &daemon)
        .arg("--json")
        .stdout(Stdio::piped())
        .spawn()
        .expect("replog replicate starts");
    let mut replicate = Server(replicate);
    let events = point_events(replicate.0.stdout.take().unwrap());
    let started = Instant::now();
    // Serially numbered writes at a steady pace, through at least three points (cut at about
    // 0, 10 and 20 s), until about 25 s have passed. The guest stops at least 2 s before the
    // next cycle is due (10 s after the last one started), so that cycle's point is cut after
    // its last write.
    let mut during = Vec::new();
    loop {
        guest.write_next(&mut out);
        std::thread::sleep(GUEST_PACE);
        during.extend(events.try_iter());
        let before_next = during
            .last()
            .is_some_and(|&cut| Instant::now() + Duration::from_secs(2) < cut + EVERY);
        if started.elapsed() >= GUEST_WRITES_FOR && during.len() >= 3 && before_next {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "{} points in {:?} of writing",
            during.len(),
            started.elapsed()
        );
        assert!(
            guest.acked < LIVE_DISK_BYTES / GUEST_BLOCK,
            "the guest filled the disk"
        );
    }
    drop(guest.child.stdin.take());
    assert!(guest.child.wait().unwrap().success());
    let acked = guest.acked;
    eprintln!(
        "the guest wrote {acked} blocks in {:?}, through {} points",
        started.elapsed(),
        during.len()
    );
    // One more cycle after the guest stopped: its point must hold every acknowledged write.
    events
        .recv_timeout(Duration::from_secs(30))
        .expect("a point after the guest stopped");
    // SIGTERM: the current cycle ends cleanly, and the process exits 0.
    unsafe_free_sigterm(replicate.0.id());
    let status = replicate.0.wait().unwrap();
    assert!(status.success(), "replicate exited {status}");

    let points = json_of(&["points", vault_s, "--json"]);
    let points = points.as_array().unwrap();
    assert!(
        points.len() >= 4,
        "several points were taken: {}",
        points.len()
    );
    let mut previous = 0;
    let mut prefixes = Vec::new();
    for p in points {
        let id = p["id"].as_u64().unwrap();
        let out = d.join(format!("p{id}"));
        replog_ok(&[
            "failover",
            vault_s,
            "--point",
            &id.to_string(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let image = std::fs::read(out.join("os.raw")).unwrap();
        let k = written_prefix(&image, &format!("point {id}"));
        assert!(
            k <= acked && k >= previous,
            "point {id} holds {k} writes after {previous}, of {acked}"
        );
        previous = k;
        prefixes.push(k);
        std::fs::remove_dir_all(&out).unwrap();
    }
    eprintln!("{acked} acknowledged writes; the points hold prefixes of {prefixes:?}");
    assert_eq!(
        previous, acked,
        "the last point holds every acknowledged write"
    );
    assert!(
        prefixes.iter().filter(|&&k| k < acked).count() >= 3,
        "at least three points were cut while the guest wrote: {prefixes:?} of {acked}"
    );
    let status = json_of(&["replicate", vault_s, "--status", "--json"]);
    assert_eq!(status["running"], false);
    assert_eq!(
        status["replication"]["cycles_ok"].as_u64().unwrap() as usize,
        points.len()
    );
}

/// Sends SIGTERM to `pid` (through kill(1): the tests use no unsafe code).
fn unsafe_free_sigterm(pid: u32) {
    run(Command::new("kill").args(["-TERM", &pid.to_string()]));
}

#[test]
fn app_consistent_points_come_from_a_freeze_and_thaw_that_succeeded() {
    let Some((dir, daemon)) = live_disk(&[]) else {
        return;
    };
    let d = dir.path();
    let log = d.join("hooks.log");
    let note = |what: &str| {
        format!(
            "echo \"{what} $REPLOG_DISK $REPLOG_POINT\" >> {}",
            log.display()
        )
    };
    let run_with = |vault: &str, freeze: &str, cycles: &str| {
        replog_ok(&["init", vault]);
        run(replicate(vault, "1s", &daemon).args([
            "--cycles",
            cycles,
            "--app-consistent-every",
            "1h",
            "--freeze",
            freeze,
            "--thaw",
            &note("thaw"),
            "--post-point",
            &note("post"),
        ]));
        let points = json_of(&["points", vault, "--json"]);
        let kinds: Vec<String> = points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["kind"].as_str().unwrap().to_owned())
            .collect();
        kinds
    };
    // The first cycle is due an app-consistent point; the second, within the hour, is not.
    let good = d.join("good");
    let kinds = run_with(good.to_str().unwrap(), &note("freeze"), "2");
    assert_eq!(kinds, ["app-consistent", "crash-consistent"]);
    let said = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        said, "freeze  \nthaw  \npost os 1\npost os 2\n",
        "the hooks ran in order, with their context"
    );
    // A freeze that fails gives a crash-consistent point, and says so in the status.
    let bad = d.join("bad");
    let kinds = run_with(bad.to_str().unwrap(), "exit 7", "1");
    assert_eq!(kinds, ["crash-consistent"]);
    let status = json_of(&["replicate", bad.to_str().unwrap(), "--status", "--json"]);
    let error = status["replication"]["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("freeze") && error.contains("crash-consistent"),
        "{status}"
    );
}
