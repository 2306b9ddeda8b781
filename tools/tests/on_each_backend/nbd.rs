//! End-to-end tests of `replog serve-nbd` with real NBD clients: `qemu-img`, `qemu-io`,
//! `nbdinfo` and `nbdcopy` talk to the built binary over a Unix socket (or TCP), and a raw
//! socket client sends what no well-behaved client would. Every test builds its own vault in a
//! fresh temporary directory; expected contents are raw images changed with `qemu-io` the same
//! way, compared with `qemu-img compare`.
//!
//! The server runs on its module's backend: `main.rs` builds the file once per backend. The clients
//! are required: without them the tests fail (never skip) and say to run `scripts/setup.sh`.

use std::fs;
use std::io::{BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::common::{
    assert_tool_success, compared, replog_ok as replog, replog_run, require_tools, run_program, s,
    spawn_until_listening,
};

use serde_json::Value;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

// ---------------------------------------------------------------------------------------------
// Running replog and the clients
// ---------------------------------------------------------------------------------------------

/// Fails the test, with what to do, when a client cannot run.
fn require_clients() {
    static FOUND: OnceLock<Result<(), String>> = OnceLock::new();
    require_tools(&FOUND, &["qemu-img", "qemu-io", "nbdinfo", "nbdcopy"]);
}

fn tool(name: &str, args: &[&str]) -> Output {
    require_clients();
    run_program(name, args)
}

/// Runs a client that must succeed (qemu-io also counts "failed" in its output as failure).
fn tool_ok(name: &str, args: &[&str]) -> String {
    let out = tool(name, args);
    assert_tool_success(name, args, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn create_image(path: &Path, bytes: u64) {
    tool_ok(
        "qemu-img",
        &["create", "-q", "-f", "raw", s(path), &bytes.to_string()],
    );
}

/// Applies `qemu-io` commands to an image file or an NBD URI.
fn qemu_io(target: &str, commands: &[&str]) -> String {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(target);
    tool_ok("qemu-io", &args)
}

/// Whether two raw images (files or NBD URIs) hold the same bytes.
fn identical(a: &str, b: &str) -> bool {
    let args = ["compare", "-q", "-f", "raw", "-F", "raw", a, b];
    compared(&args, &tool("qemu-img", &args))
}

fn assert_identical(got: &str, want: &str, what: &str) {
    assert!(identical(got, want), "{what}: {got} differs from {want}");
}

fn copy_sparse(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .args(["--sparse=always", s(from), s(to)])
        .status()
        .expect("cp runs")
        .success();
    assert!(ok, "cp {} {} failed", from.display(), to.display());
}

// ---------------------------------------------------------------------------------------------
// The vault
// ---------------------------------------------------------------------------------------------

/// Disks of the fixture: name and size.
const DISKS: [(&str, u64); 2] = [("os", 32 * MIB), ("data", 8 * MIB)];

/// A vault with two points and copies of the images at each, per disk (same order as DISKS).
struct Fixture {
    dir: tempfile::TempDir,
    vault: PathBuf,
    /// Images as they are now (the latest state), one per disk.
    images: Vec<PathBuf>,
    /// `(point id, copies)`, oldest first.
    points: Vec<(u64, Vec<PathBuf>)>,
}

/// Point 1 ("seeded"): os has data in [0, 1 MiB) and [8, 9 MiB), the rest never written.
/// Point 2: os gains 256 KiB of data at 16 MiB (journal), and [8, 9 MiB) is zeroed (a zero
/// record); data is changed at an unaligned offset.
fn fixture() -> Fixture {
    fixture_with(&[])
}

/// [`fixture`], the vault created with `init_args`.
fn fixture_with(init_args: &[&str]) -> Fixture {
    require_clients();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path();
    let vault = root.join("V");
    replog(&[&["init", s(&vault)], init_args].concat());
    let mut images = Vec::new();
    for (name, size) in DISKS {
        let image = root.join(format!("{name}.raw"));
        create_image(&image, size);
        images.push(image);
    }
    qemu_io(
        s(&images[0]),
        &["write -P 0xab 0 1M", "write -P 0xac 8M 1M"],
    );
    qemu_io(s(&images[1]), &["write -P 0xba 0 200000"]);
    for ((name, _), image) in DISKS.iter().zip(&images) {
        replog(&["disk", "add", s(&vault), name, "--from", s(image)]);
    }
    let mut f = Fixture {
        dir,
        vault,
        images,
        points: Vec::new(),
    };
    f.point("seeded");
    qemu_io(
        s(&f.images[0]),
        &["write -P 0x11 16M 256K", "write -z 8M 1M"],
    );
    qemu_io(s(&f.images[1]), &["write -P 0x22 4095 70001"]);
    for ((name, _), image) in DISKS.iter().zip(&f.images) {
        replog(&["ingest", s(&f.vault), name, "--from", s(image)]);
    }
    f.point("changed");
    f
}

impl Fixture {
    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Takes a point and copies the images aside as its expected content.
    fn point(&mut self, label: &str) -> u64 {
        let id: u64 = replog(&["point", s(&self.vault), "--label", label])
            .trim()
            .parse()
            .expect("point prints an id");
        self.record(id);
        id
    }

    /// Copies the images aside as the expected content of point `id`.
    fn record(&mut self, id: u64) {
        let copies = DISKS
            .iter()
            .zip(&self.images)
            .map(|((name, _), image)| {
                let copy = self.root().join(format!("p{id}-{name}.raw"));
                copy_sparse(image, &copy);
                copy
            })
            .collect();
        self.points.push((id, copies));
    }

    /// Fails over to point `id` into a new directory and returns it.
    fn failover(&self, id: u64) -> PathBuf {
        let out = self
            .root()
            .join(format!("failover-{id}-{}", self.points.len()));
        replog(&[
            "failover",
            s(&self.vault),
            "--point",
            &id.to_string(),
            "--out",
            s(&out),
        ]);
        out
    }

    fn expected(&self, id: u64, disk: usize) -> &Path {
        let (_, copies) = self
            .points
            .iter()
            .find(|(p, _)| *p == id)
            .expect("a known point");
        &copies[disk]
    }
}

// ---------------------------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------------------------

/// A running `replog serve-nbd`, stopped (and checked) by [`Server::stop`], killed if dropped.
struct Server {
    child: Child,
    socket: PathBuf,
    _stdout: BufReader<ChildStdout>,
    stderr_file: PathBuf,
    /// What the server printed up to and including "listening on ...".
    banner: Vec<String>,
}

impl Server {
    /// Starts `replog serve-nbd VAULT ARGS --unix root/nbd-N.sock` and waits until it listens.
    fn start(f: &Fixture, args: &[&str]) -> Server {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let socket = f.root().join(format!("nbd-{n}.sock"));
        let mut all = vec!["serve-nbd", s(&f.vault)];
        all.extend_from_slice(args);
        all.extend(["--unix", s(&socket)]);
        Server::spawn(
            &all,
            socket.clone(),
            f.root().join(format!("server-{n}.err")),
        )
    }

    fn spawn(args: &[&str], socket: PathBuf, stderr_file: PathBuf) -> Server {
        let (child, stdout, banner) = spawn_until_listening(args, &stderr_file);
        Server {
            child,
            socket,
            _stdout: stdout,
            stderr_file,
            banner,
        }
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket.display())
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    /// Sends SIGTERM and waits; the server must exit 0 and remove its socket.
    fn stop(mut self) -> String {
        let status = self.terminate();
        let stderr = self.stderr();
        assert!(
            status.success(),
            "the server exited {status} on SIGTERM; stderr:\n{stderr}"
        );
        assert!(
            !self.socket.exists(),
            "the server removed its socket {}",
            self.socket.display()
        );
        stderr
    }

    fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("the server is waited for") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A raw NBD client, for what well-behaved clients never send
// ---------------------------------------------------------------------------------------------

const OPTS_MAGIC: u64 = 0x4948_4156_454f_5054;
const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
const OPT_ABORT: u32 = 2;
const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;
const REP_ACK: u32 = 1;
const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
const REP_ERR_POLICY: u32 = (1 << 31) + 2;
const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
const REPLY_TYPE_OFFSET_DATA: u16 = 1;
const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;
const EPERM: u32 = 1;
const EIO: u32 = 5;
const EINVAL: u32 = 22;

struct Raw {
    s: UnixStream,
}

impl Raw {
    /// Connects, checks the greeting and sends fixed-newstyle client flags.
    fn connect(socket: &Path) -> Raw {
        let s = UnixStream::connect(socket).expect("the server accepts");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a timeout is set");
        let mut raw = Raw { s };
        let greeting = raw.read_n(18);
        assert_eq!(&greeting[..8], b"NBDMAGIC");
        assert_eq!(&greeting[8..16], b"IHAVEOPT");
        raw.send(&3u32.to_be_bytes());
        raw
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).expect("the server reads");
    }

    fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).expect("the server replies");
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.read_n(2).try_into().unwrap())
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.read_n(4).try_into().unwrap())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.read_n(8).try_into().unwrap())
    }

    /// Whether the server closed the connection (reads end of file).
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }

    fn option_header(&mut self, option: u32, len: u32) {
        let mut b = OPTS_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.send(&b);
    }

    /// Sends an option and reads its replies up to the final one: `(reply type, data)`.
    fn option(&mut self, option: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        self.option_header(option, data.len() as u32);
        self.send(data);
        self.replies(option)
    }

    fn replies(&mut self, option: u32) -> Vec<(u32, Vec<u8>)> {
        let mut list = Vec::new();
        loop {
            assert_eq!(self.u64(), REP_MAGIC);
            assert_eq!(self.u32(), option, "the reply names its option");
            let kind = self.u32();
            let len = self.u32() as usize;
            let data = self.read_n(len);
            list.push((kind, data));
            if kind == REP_ACK || kind & (1 << 31) != 0 {
                return list;
            }
        }
    }

    /// Structured replies, then `NBD_OPT_GO` on `export`.
    fn go(&mut self, export: &str) {
        assert_eq!(self.option(OPT_STRUCTURED_REPLY, &[])[0].0, REP_ACK);
        let mut data = (export.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        let replies = self.option(OPT_GO, &data);
        assert_eq!(
            replies.last().unwrap().0,
            REP_ACK,
            "GO {export}: {replies:?}"
        );
    }

    fn request(&mut self, kind: u16, handle: u64, offset: u64, len: u32) {
        let mut b = REQUEST_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&0u16.to_be_bytes());
        b.extend_from_slice(&kind.to_be_bytes());
        b.extend_from_slice(&handle.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&len.to_be_bytes());
        self.send(&b);
    }

    /// Reads one reply (simple, or every structured chunk to the last): the error (0 when
    /// none) and the data of any data chunks, in order.
    fn reply(&mut self, handle: u64) -> (u32, Vec<u8>) {
        let mut data = Vec::new();
        let mut error = 0;
        loop {
            let magic = self.u32();
            if magic == SIMPLE_REPLY_MAGIC {
                let e = self.u32();
                assert_eq!(self.u64(), handle);
                return (e, data);
            }
            assert_eq!(magic, STRUCTURED_REPLY_MAGIC);
            let flags = self.u16();
            let kind = self.u16();
            assert_eq!(self.u64(), handle);
            let len = self.u32() as usize;
            let payload = self.read_n(len);
            match kind {
                REPLY_TYPE_OFFSET_DATA => data.extend_from_slice(&payload[8..]),
                REPLY_TYPE_ERROR => {
                    error = u32::from_be_bytes(payload[..4].try_into().unwrap());
                }
                other => panic!("unexpected chunk type {other}"),
            }
            if flags & 1 != 0 {
                return (error, data);
            }
        }
    }
}

/// The ranges of `nbdinfo --map --json`, as `(offset, length, hole)`.
fn map(uri: &str) -> Vec<(u64, u64, bool)> {
    let out = tool_ok("nbdinfo", &["--map", "--json", uri]);
    let v: Value = serde_json::from_str(&out).expect("nbdinfo prints JSON");
    v.as_array()
        .expect("an array of ranges")
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().unwrap(),
                r["length"].as_u64().unwrap(),
                r["type"].as_u64().unwrap() & 1 != 0,
            )
        })
        .collect()
}

/// Whether `[start, end)` is entirely reported as one kind in `ranges`.
fn all(ranges: &[(u64, u64, bool)], start: u64, end: u64, hole: bool) -> bool {
    ranges
        .iter()
        .filter(|(o, l, _)| o + l > start && *o < end)
        .all(|r| r.2 == hole)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn qemu_img_info_and_compare_match_the_failed_over_images() {
    let f = fixture();
    for &(id, _) in &f.points {
        let server = Server::start(&f, &["--point", &id.to_string()]);
        let out = f.failover(id);
        for (i, (name, size)) in DISKS.iter().enumerate() {
            let info = tool_ok("qemu-img", &["info", "--output=json", &server.uri(name)]);
            let info: Value = serde_json::from_str(&info).expect("qemu-img prints JSON");
            assert_eq!(info["virtual-size"], *size, "{info}");
            let image = out.join(format!("{name}.raw"));
            assert_identical(
                &server.uri(name),
                s(&image),
                &format!("{name} at point {id}"),
            );
            assert_identical(&server.uri(name), s(f.expected(id, i)), "the expected copy");
        }
        server.stop();
    }
}

#[test]
fn nbdinfo_lists_every_disk_and_maps_the_holes() {
    let f = fixture();
    let server = Server::start(&f, &["--latest"]);
    let list = tool_ok(
        "nbdinfo",
        &[
            "--list",
            "--json",
            &format!("nbd+unix://?socket={}", server.socket.display()),
        ],
    );
    let list: Value = serde_json::from_str(&list).expect("nbdinfo prints JSON");
    let exports = list["exports"].as_array().expect("a list of exports");
    let names: Vec<&str> = exports
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["os", "data"]);
    for (e, (_, size)) in exports.iter().zip(DISKS) {
        assert_eq!(e["export-size"], size, "{e}");
        assert_eq!(e["is_read_only"], true, "{e}");
        assert_eq!(e["block_size_maximum"], 32 * MIB, "{e}");
        let contexts = e["contexts"].as_array().expect("contexts");
        assert!(contexts.iter().any(|c| c == "base:allocation"), "{e}");
    }
    let ranges = map(&server.uri("os"));
    assert_eq!(
        ranges.iter().map(|r| r.1).sum::<u64>(),
        32 * MIB,
        "the map covers the disk"
    );
    assert!(all(&ranges, 0, MIB, false), "base data is data: {ranges:?}");
    assert!(
        all(&ranges, MIB, 8 * MIB, true),
        "unwritten base chunks are holes: {ranges:?}"
    );
    assert!(
        all(&ranges, 8 * MIB, 9 * MIB, true),
        "a zero record is a hole: {ranges:?}"
    );
    assert!(
        all(&ranges, 16 * MIB, 16 * MIB + 256 * KIB, false),
        "a journal write is data: {ranges:?}"
    );
    assert!(
        all(&ranges, 17 * MIB, 32 * MIB, true),
        "the unwritten tail is a hole: {ranges:?}"
    );
    server.stop();
}

#[test]
fn nbdcopy_out_of_a_point_gives_its_exact_bytes() {
    let f = fixture();
    let (id, _) = f.points[0];
    let server = Server::start(&f, &["--point", &id.to_string()]);
    for (i, (name, _)) in DISKS.iter().enumerate() {
        let out = f.root().join(format!("copy-{name}.raw"));
        tool_ok("nbdcopy", &[&server.uri(name), s(&out)]);
        let got = fs::read(&out).expect("the copy reads");
        let want = fs::read(f.expected(id, i)).expect("the expected image reads");
        assert!(got == want, "nbdcopy of {name} at point {id} differs");
    }
    server.stop();
}

#[test]
fn several_clients_at_once_are_served_and_past_the_limit_refused_with_a_message() {
    let f = fixture();
    let server = Server::start(&f, &["--latest", "--max-clients", "2"]);
    let copies: Vec<_> = (0..2)
        .map(|i| {
            let uri = server.uri("os");
            let out = f.root().join(format!("parallel-{i}.raw"));
            std::thread::spawn(move || {
                tool_ok("nbdcopy", &["--connections=1", &uri, s(&out)]);
                out
            })
        })
        .collect();
    for c in copies {
        let out = c.join().expect("the copy thread ends");
        assert_identical(
            s(&out),
            s(f.expected(2, 0)),
            "a copy made alongside another",
        );
    }
    let mut first = Raw::connect(&server.socket);
    first.go("os");
    let mut second = Raw::connect(&server.socket);
    second.go("data");
    let mut third = Raw::connect(&server.socket);
    let refused = third.option(OPT_GO, &[0, 0, 0, 2, b'o', b's', 0, 0]);
    assert_eq!(refused[0].0, REP_ERR_POLICY);
    let message = String::from_utf8(refused[0].1.clone()).unwrap();
    assert!(message.contains("--max-clients"), "{message}");
    assert_eq!(third.option(OPT_ABORT, &[])[0].0, REP_ACK);
    first.request(CMD_DISC, 1, 0, 0);
    assert!(first.closed(), "the server closes after NBD_CMD_DISC");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut again = Raw::connect(&server.socket);
        let replies = again.option(OPT_STRUCTURED_REPLY, &[]);
        if replies[0].0 == REP_ACK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a slot frees up once a client leaves"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(second);
    server.stop();
}

#[test]
fn capture_takes_qemu_io_writes_and_points_from_another_process() {
    let mut f = fixture();
    let server = Server::start(&f, &["--capture"]);
    assert!(
        f.vault.join("control.sock").exists(),
        "the control socket exists"
    );
    let round1 = [
        "write -P 0x5a 4097 300000",
        "write -z 16M 64K",
        "discard 0 64K",
        "write -P 0x5b 33550000 4432",
    ];
    qemu_io(&server.uri("os"), &round1);
    qemu_io(s(&f.images[0]), &round1);
    qemu_io(&server.uri("data"), &["write -P 0x6c 100 5000"]);
    qemu_io(s(&f.images[1]), &["write -P 0x6c 100 5000"]);
    assert_identical(&server.uri("os"), s(&f.images[0]), "reads through capture");
    let id: u64 = replog(&["point", s(&f.vault), "--label", "during capture"])
        .trim()
        .parse()
        .expect("point prints an id");
    f.record(id);
    let round2 = ["write -P 0x7d 20M 2M", "write -z 0 1M"];
    qemu_io(&server.uri("os"), &round2);
    qemu_io(s(&f.images[0]), &round2);
    let stderr = server.stop();
    assert!(
        !f.vault.join("control.sock").exists(),
        "the control socket is removed"
    );
    assert!(stderr.contains(&format!("took point {id}")), "{stderr}");
    let out = f.failover(id);
    for (i, (name, _)) in DISKS.iter().enumerate() {
        assert_identical(
            s(&out.join(format!("{name}.raw"))),
            s(f.expected(id, i)),
            &format!("{name} at the point taken during capture"),
        );
    }
    // Everything acknowledged before the server stopped is durable: a point taken now has it.
    let last = f.point("after capture");
    let out = f.failover(last);
    assert_identical(
        s(&out.join("os.raw")),
        s(f.expected(last, 0)),
        "os after the server stopped",
    );
    replog(&["verify", s(&f.vault)]);
}

#[test]
fn capture_of_a_new_empty_disk_takes_a_start_point_and_serves_zeros() {
    let f = fixture();
    replog(&["disk", "add", s(&f.vault), "scratch", "--size", "4MiB"]);
    let server = Server::start(&f, &["--capture"]);
    assert!(
        server.stderr().contains("capture start"),
        "{}",
        server.stderr()
    );
    let zeros = f.root().join("zeros.raw");
    create_image(&zeros, 4 * MIB);
    assert_identical(
        &server.uri("scratch"),
        s(&zeros),
        "a new disk reads as zeros",
    );
    qemu_io(&server.uri("scratch"), &["write -P 0x01 1M 1M"]);
    qemu_io(s(&zeros), &["write -P 0x01 1M 1M"]);
    assert_identical(&server.uri("scratch"), s(&zeros), "the write reads back");
    server.stop();
}

#[test]
fn a_client_that_disconnects_mid_write_loses_nothing_it_was_told_was_done() {
    let f = fixture();
    let server = Server::start(&f, &["--capture"]);
    let mut raw = Raw::connect(&server.socket);
    raw.go("data");
    raw.request(CMD_WRITE, 1, 0, 4096);
    raw.send(&[0x42; 4096]);
    assert_eq!(raw.reply(1).0, 0, "the first write is acknowledged");
    raw.request(CMD_WRITE, 2, 8192, 65536);
    raw.send(&[0x43; 1000]);
    drop(raw);
    let expected = f.root().join("data-expected.raw");
    copy_sparse(&f.images[1], &expected);
    qemu_io(s(&expected), &["write -P 0x42 0 4096"]);
    assert_identical(
        &server.uri("data"),
        s(&expected),
        "acknowledged, and nothing of the cut write",
    );
    server.stop();
    let id: u64 = replog(&["point", s(&f.vault)]).trim().parse().unwrap();
    let out = f.failover(id);
    assert_identical(
        s(&out.join("data.raw")),
        s(&expected),
        "durable after the server stopped",
    );
}

#[test]
fn overlay_writes_are_seen_during_the_session_and_gone_after() {
    let f = fixture();
    let points_before = replog(&["points", s(&f.vault), "--json"]);
    let server = Server::start(&f, &["--point", "1", "--overlay"]);
    let changes = [
        "write -P 0x99 12345 100000",
        "write -z 0 4096",
        "discard 8M 64K",
    ];
    qemu_io(&server.uri("os"), &changes);
    let expected = f.root().join("overlay-expected.raw");
    copy_sparse(f.expected(1, 0), &expected);
    qemu_io(s(&expected), &changes);
    assert_identical(
        &server.uri("os"),
        s(&expected),
        "overlay writes are visible",
    );
    let ranges = map(&server.uri("os"));
    assert!(
        all(&ranges, 8 * MIB, 8 * MIB + 64 * KIB, true),
        "a discard is a hole: {ranges:?}"
    );
    assert!(
        all(&ranges, 12345, 112345, false),
        "a write is data: {ranges:?}"
    );
    server.stop();
    let again = Server::start(&f, &["--point", "1"]);
    assert_identical(&again.uri("os"), s(f.expected(1, 0)), "the overlay is gone");
    again.stop();
    assert_eq!(replog(&["points", s(&f.vault), "--json"]), points_before);
    replog(&["verify", s(&f.vault)]);
}

#[test]
fn the_read_only_export_refuses_writes_with_eperm() {
    let f = fixture();
    let server = Server::start(&f, &["--latest"]);
    let mut raw = Raw::connect(&server.socket);
    raw.go("os");
    raw.request(CMD_WRITE, 7, 0, 512);
    raw.send(&[1; 512]);
    assert_eq!(raw.reply(7).0, EPERM);
    raw.request(CMD_READ, 8, 0, 512);
    assert_eq!(
        raw.reply(8),
        (0, vec![0xab; 512]),
        "the connection goes on, unchanged"
    );
    let out = tool("nbdcopy", &[s(&f.images[1]), &server.uri("os")]);
    assert!(
        !out.status.success(),
        "nbdcopy into a read-only export fails"
    );
    server.stop();
}

#[test]
fn malformed_handshakes_unknown_options_and_oversized_requests_are_answered_per_protocol() {
    let f = fixture();
    let server = Server::start(&f, &["--latest", "--overlay"]);
    // A wrong option magic cannot be followed: the connection is closed, nothing else.
    let mut raw = Raw::connect(&server.socket);
    raw.send(&[0xde; 16]);
    assert!(raw.closed());
    // Unknown client flags.
    let mut s1 = UnixStream::connect(&server.socket).unwrap();
    let mut greeting = [0u8; 18];
    s1.read_exact(&mut greeting).unwrap();
    s1.write_all(&0xffff_0000u32.to_be_bytes()).unwrap();
    assert!(matches!(s1.read(&mut [0u8; 1]), Ok(0) | Err(_)));
    // Half a greeting, then gone.
    drop(UnixStream::connect(&server.socket).unwrap());
    let mut raw = Raw::connect(&server.socket);
    assert_eq!(raw.option(4242, b"junk")[0].0, REP_ERR_UNSUP);
    // An option claiming 4 GiB of data: refused, and the server reads on from the right place.
    raw.option_header(OPT_GO, 100 << 20);
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..100 {
        raw.send(&chunk);
    }
    assert_eq!(raw.replies(OPT_GO)[0].0, REP_ERR_TOO_BIG);
    raw.go("os");
    raw.request(CMD_READ, 1, 0, (32 << 20) + 1);
    assert_eq!(raw.reply(1).0, EINVAL, "a read over 32 MiB");
    raw.request(CMD_WRITE, 2, 0, (32 << 20) + 1);
    raw.send(&vec![0x77; (32 << 20) + 1]);
    assert_eq!(raw.reply(2).0, EINVAL, "a write over 32 MiB");
    raw.request(CMD_READ, 3, 32 * MIB - 10, 20);
    assert_eq!(raw.reply(3).0, EINVAL, "a read past the end");
    raw.request(CMD_READ, 4, 0, 4096);
    assert_eq!(
        raw.reply(4),
        (0, vec![0xab; 4096]),
        "nothing of the refused write landed"
    );
    raw.send(&[0x55; 28]);
    assert!(
        raw.closed(),
        "a request without the magic ends the connection"
    );
    assert_identical(
        &server.uri("os"),
        s(f.expected(2, 0)),
        "the server still serves",
    );
    server.stop();
}

#[test]
fn a_checksum_failure_is_an_eio_naming_the_file_never_wrong_bytes() {
    // Small segments: the damaged record is in a sealed segment, so point 2 stays listed and
    // the damage is found when the record is read.
    let f = fixture_with(&["--segment-size", "64KiB"]);
    let pattern = [0x22u8; 64];
    let (segment, at) = fs::read_dir(f.vault.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .find_map(|p| {
            let bytes = fs::read(&p).unwrap();
            let at = bytes.windows(64).position(|w| w == pattern)?;
            Some((p, at))
        })
        .expect("a segment holding the payload of the 0x22 write on disk data");
    let mut damaged = fs::read(&segment).unwrap();
    damaged[at + 10] ^= 0xff;
    fs::write(&segment, damaged).unwrap();
    let server = Server::start(&f, &["--point", "2"]);
    let mut raw = Raw::connect(&server.socket);
    raw.go("data");
    raw.request(CMD_READ, 1, 4095, 4096);
    let (error, data) = raw.reply(1);
    assert_eq!(error, EIO);
    assert!(data.is_empty(), "no data is sent with the error");
    let name = segment.file_name().unwrap().to_str().unwrap().to_owned();
    let stderr = server.stop();
    assert!(
        stderr.contains(&name),
        "the log names the segment: {stderr}"
    );
}

#[test]
fn a_served_point_is_protected_from_pruning_while_the_server_runs() {
    let f = fixture();
    let listed = |id: u64| {
        let points: Value = serde_json::from_str(&replog(&["points", s(&f.vault), "--json"]))
            .expect("points prints JSON");
        points
            .as_array()
            .expect("an array")
            .iter()
            .any(|p| p["id"] == id)
    };
    let server = Server::start(&f, &["--point", "1"]);
    let pruned = replog(&["prune", s(&f.vault), "--keep-last", "1"]);
    assert!(pruned.contains("nbd-export lease on point 1"), "{pruned}");
    assert!(listed(1), "the served point is kept");
    for (i, (name, _)) in DISKS.iter().enumerate() {
        assert_identical(
            &server.uri(name),
            s(f.expected(1, i)),
            "the served point, after a prune",
        );
    }
    server.stop();
    replog(&["prune", s(&f.vault), "--keep-last", "1"]);
    assert!(
        !listed(1),
        "once the server is gone, the point can be pruned"
    );
}

#[test]
fn tcp_serves_on_the_address_given_and_defaults_to_loopback() {
    let f = fixture();
    let err = f.root().join("tcp.err");
    let args = [
        "serve-nbd",
        s(&f.vault),
        "--latest",
        "--listen",
        "127.0.0.1:0",
    ];
    let server = Server::spawn(&args, f.root().join("no-socket"), err);
    let line = server.banner.last().unwrap().clone();
    let uri = line.strip_prefix("listening on ").unwrap().to_owned();
    assert!(uri.starts_with("nbd://127.0.0.1:"), "{line}");
    assert_identical(&format!("{uri}/data"), s(f.expected(2, 1)), "over TCP");
    server.stop();
    let help = replog(&["serve-nbd", "--help"]);
    assert!(help.contains("127.0.0.1:10809"), "{help}");
}

#[test]
fn bad_arguments_are_refused_with_a_message() {
    let f = fixture();
    let v = s(&f.vault);
    let out = replog_run(&[
        "serve-nbd",
        v,
        "--point",
        "99",
        "--unix",
        "/nonexistent/x.sock",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no point 99"));
    for args in [
        vec!["serve-nbd", v],
        vec!["serve-nbd", v, "--capture", "--overlay"],
        vec!["serve-nbd", v, "--latest", "--point", "1"],
        vec!["serve-nbd", v, "--latest", "--max-clients", "0"],
    ] {
        let out = replog_run(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
    }
    let taken = Server::start(&f, &["--latest"]);
    let out = replog_run(&["serve-nbd", v, "--latest", "--unix", s(&taken.socket)]);
    assert_eq!(out.status.code(), Some(1), "a socket in use is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another server is listening"));
    taken.stop();
}
