//! The client against real servers: qemu-nbd exporting a qcow2 image with a dirty bitmap, and
//! this crate's own server over a device in memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use replog_nbd::{
    Backend, BlockDevice, Client, ClientOptions, DATA, ExportInfo, Extents, HOLE, Limits, Listener,
    NbdError, NbdErrorKind,
};

const MIB: u64 = 1 << 20;

fn have(binary: &str) -> bool {
    let found = Command::new("which")
        .arg(binary)
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: {binary} is not installed");
    }
    found
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for the server at `sock` to accept a client.
fn connect(sock: &Path, opts: &ClientOptions) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Client::connect_unix(sock, opts) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline && e.kind == NbdErrorKind::Io => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("connecting to {}: {e}", sock.display()),
        }
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A qcow2 image of `size` in `dir` with `bitmap` (added before the writes), written by the
/// qemu-io commands `writes`, exported read-only by qemu-nbd on the socket returned.
fn qcow2_served(
    dir: &Path,
    size: &str,
    bitmap: Option<&str>,
    writes: &[&str],
) -> (PathBuf, Killed) {
    let img = dir.join("d.qcow2");
    let sock = dir.join("nbd.sock");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg(size));
    if let Some(b) = bitmap {
        run(Command::new("qemu-img")
            .args(["bitmap", "--add"])
            .arg(&img)
            .arg(b));
    }
    for w in writes {
        run(Command::new("qemu-io")
            .args(["-f", "qcow2", "-c", w])
            .arg(&img));
    }
    let mut cmd = Command::new("qemu-nbd");
    cmd.args(["-r", "-t", "-f", "qcow2", "-k"]).arg(&sock);
    if let Some(b) = bitmap {
        cmd.args(["-B", b]);
    }
    let server = Killed(cmd.arg(&img).spawn().unwrap());
    (sock, server)
}

#[test]
fn qemu_nbd_dirty_bitmap_and_reads() {
    if !have("qemu-nbd") || !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sock, _server) = qcow2_served(dir.path(), "4M", Some("b0"), &["write -P 0xab 1M 64k"]);
    let mut opts = ClientOptions::new("");
    opts.meta_contexts = vec!["base:allocation".into(), "qemu:dirty-bitmap:b0".into()];
    let mut c = connect(&sock, &opts);
    assert_eq!(c.size(), 4 * MIB);
    let dirty = c
        .context_id("qemu:dirty-bitmap:b0")
        .expect("the bitmap's context");
    let extents = c.block_status(0, 4 * MIB as u32, dirty).unwrap();
    let mut at = 0u64;
    let mut dirty_ranges = Vec::new();
    for e in &extents {
        if e.flags & 1 != 0 {
            dirty_ranges.push((at, at + e.length));
        }
        at += e.length;
    }
    assert_eq!(dirty_ranges, vec![(MIB, MIB + 64 * 1024)]);
    let mut buf = vec![0u8; 128 * 1024];
    c.read(MIB - 32 * 1024, &mut buf).unwrap();
    assert!(buf[..32 * 1024].iter().all(|&b| b == 0));
    assert!(buf[32 * 1024..96 * 1024].iter().all(|&b| b == 0xab));
    assert!(buf[96 * 1024..].iter().all(|&b| b == 0));
    let past = c.read(4 * MIB - 1, &mut buf).unwrap_err();
    assert_eq!(past.kind, NbdErrorKind::InvalidRequest);
    c.disconnect().unwrap();
}

#[test]
fn qemu_nbd_refuses_an_unknown_export() {
    if !have("qemu-nbd") || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.raw");
    let sock = dir.path().join("nbd.sock");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "raw"])
        .arg(&img)
        .arg("1M"));
    let _server = Killed(
        Command::new("qemu-nbd")
            .args(["-r", "-t", "-f", "raw", "-x", "disk", "-k"])
            .arg(&sock)
            .arg(&img)
            .spawn()
            .unwrap(),
    );
    connect(&sock, &ClientOptions::new("disk"))
        .disconnect()
        .unwrap();
    let e = Client::connect_unix(&sock, &ClientOptions::new("nope")).unwrap_err();
    assert_eq!(e.kind, NbdErrorKind::Refused, "{e}");
}

/// 1 MiB in memory whose first half is data (0x5a) and second half a hole.
struct Half;

struct HalfDevice;

impl BlockDevice for HalfDevice {
    fn size(&self) -> u64 {
        MIB
    }

    fn read_only(&self) -> bool {
        true
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = if offset + (i as u64) < MIB / 2 {
                0x5a
            } else {
                0
            };
        }
        Ok(())
    }

    fn block_status(&mut self, offset: u64, end: u64, out: &mut Extents) -> Result<(), NbdError> {
        let half = MIB / 2;
        if offset < half {
            out.push(half.min(end) - offset, DATA);
        }
        if end > half {
            out.push(end - half.max(offset), HOLE);
        }
        Ok(())
    }
}

impl Backend for Half {
    fn exports(&self) -> &[ExportInfo] {
        static EXPORTS: std::sync::OnceLock<Vec<ExportInfo>> = std::sync::OnceLock::new();
        EXPORTS.get_or_init(|| {
            vec![ExportInfo {
                name: "half".into(),
                description: "test".into(),
            }]
        })
    }

    fn open(&self, _index: usize) -> Box<dyn BlockDevice + '_> {
        Box::new(HalfDevice)
    }
}

#[test]
fn own_server_reads_holes_and_block_status() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("own.sock");
    let listener = Listener::unix(&sock).unwrap();
    let waker = listener.waker();
    let stop = Arc::new(AtomicBool::new(false));
    let backend: Arc<dyn Backend> = Arc::new(Half);
    let limits = Limits {
        handshake: Duration::from_secs(10),
        idle: None,
    };
    std::thread::scope(|s| {
        let stop_server = stop.clone();
        s.spawn(move || replog_nbd::serve(&listener, &backend, 4, limits, &stop_server));
        let mut opts = ClientOptions::new("half");
        opts.meta_contexts = vec!["base:allocation".into()];
        let mut c = connect(&sock, &opts);
        assert_eq!(c.size(), MIB);
        let mut buf = vec![1u8; MIB as usize];
        c.read(0, &mut buf).unwrap();
        assert!(buf[..(MIB / 2) as usize].iter().all(|&b| b == 0x5a));
        assert!(buf[(MIB / 2) as usize..].iter().all(|&b| b == 0));
        let id = c.context_id("base:allocation").unwrap();
        let extents = c.block_status(0, MIB as u32, id).unwrap();
        let flags: Vec<(u64, u32)> = extents.iter().map(|e| (e.length, e.flags)).collect();
        assert_eq!(flags, vec![(MIB / 2, DATA), (MIB / 2, HOLE)]);
        let mut small = ClientOptions::new("half");
        small.reply_bytes_max = 4096;
        let mut c2 = connect(&sock, &small);
        let e = c2.read(0, &mut buf).unwrap_err();
        assert_eq!(e.kind, NbdErrorKind::InvalidRequest);
        c.disconnect().unwrap();
        c2.disconnect().unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        waker.wake();
    });
}

/// Many reads in flight against qemu-nbd: every range comes back once with the image's bytes,
/// whatever order the replies take, and the client counts only data it received.
#[test]
fn qemu_nbd_pipelined_reads_return_every_range_once() {
    if !have("qemu-nbd") || !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let writes = [
        "write -P 0x10 0M 1M",
        "write -P 0x11 3M 1M",
        "write -P 0x12 5M 1M",
        "write -P 0x13 7M 1M",
    ];
    let (sock, _server) = qcow2_served(dir.path(), "8M", None, &writes);
    let mut c = connect(&sock, &ClientOptions::new(""));
    let ranges: Vec<(u64, u32)> = (0..32).map(|i| (i * 256 * 1024, 256 * 1024)).collect();
    let mut got = std::collections::BTreeMap::new();
    c.read_many(&mut ranges.iter().copied(), 8, &mut |offset, buf| {
        assert!(got.insert(offset, buf).is_none(), "{offset} twice");
        std::ops::ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(got.len(), ranges.len());
    for (offset, buf) in &got {
        let want = match offset / MIB {
            0 => 0x10,
            3 => 0x11,
            5 => 0x12,
            7 => 0x13,
            _ => 0,
        };
        assert!(buf.iter().all(|&b| b == want), "at {offset}");
    }
    // Unallocated clusters come back as hole chunks, which carry no data.
    assert!(c.data_bytes_read() >= 4 * MIB && c.data_bytes_read() <= 8 * MIB);
    let mut stopped = 0;
    c.read_many(&mut ranges.iter().copied(), 4, &mut |_, _| {
        stopped += 1;
        std::ops::ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(stopped, 1);
}

/// A server that dies with reads in flight: the error is an I/O error naming the reads.
#[test]
fn a_server_killed_mid_read_is_an_io_error_naming_the_offset() {
    if !have("qemu-nbd") || !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (sock, mut server) = qcow2_served(dir.path(), "64M", None, &[]);
    let mut c = connect(&sock, &ClientOptions::new(""));
    let ranges: Vec<(u64, u32)> = (0..64).map(|i| (i * MIB, MIB as u32)).collect();
    let mut seen = 0;
    let e = c
        .read_many(&mut ranges.iter().copied(), 8, &mut |_, _| {
            seen += 1;
            if seen == 2 {
                server.0.kill().unwrap();
                server.0.wait().unwrap();
            }
            std::ops::ControlFlow::Continue(())
        })
        .unwrap_err();
    assert_eq!(e.kind, NbdErrorKind::Io, "{e}");
    // Replies already sent may still be read: the failure is either the next request's send or
    // the wait for a reply, and names where.
    assert!(e.context.contains("at byte "), "{e}");
}

/// qemu-nbd's version as (major, minor).
fn qemu_nbd_version() -> (u32, u32) {
    let out = Command::new("qemu-nbd").arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split_whitespace().nth(1).unwrap_or("0.0");
    let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Extended headers where qemu-nbd offers them (8.2 and later): the same dirty extents and
/// bytes as with structured replies alone.
#[test]
fn extended_headers_give_the_same_extents_and_reads_as_structured_replies() {
    if !have("qemu-nbd") || !have("qemu-img") || !have("qemu-io") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let writes = [
        "write -P 0x61 64k 64k",
        "write -P 0x62 5M 1M",
        "write -z 9M 256k",
    ];
    let (sock, _server) = qcow2_served(dir.path(), "16M", Some("b0"), &writes);
    let mut seen = Vec::new();
    for extended in [true, false] {
        let mut opts = ClientOptions::new("");
        opts.meta_contexts = vec!["base:allocation".into(), "qemu:dirty-bitmap:b0".into()];
        opts.extended_headers = extended;
        let mut c = connect(&sock, &opts);
        let offered = qemu_nbd_version() >= (8, 2);
        assert_eq!(c.extended_headers(), extended && offered);
        let status = c.block_status_all(0, 16 * MIB).unwrap();
        let mut buf = vec![0u8; 2 * MIB as usize];
        c.read(4 * MIB, &mut buf).unwrap();
        seen.push((status, buf));
        c.disconnect().unwrap();
    }
    assert_eq!(seen[0], seen[1]);
    let (status, buf) = &seen[0];
    assert_eq!(status.len(), 2, "both contexts: {status:?}");
    assert!(buf[MIB as usize..].iter().all(|&b| b == 0x62));
}
