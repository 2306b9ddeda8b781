//! Regression tests of `replog serve-nbd`'s connection limits and start-up messages: slow
//! clients against the handshake deadline, refusals that carry a reason, idle clients that give
//! up their slot, and a server that says what it serves only once it listens. Real clients
//! (`nbdinfo`) and raw sockets talk to the built binary; nothing here asserts a timing, only
//! what each client ends up with.
//!
//! `nbdinfo` is required: without it the tests fail (never skip) and say to run
//! `scripts/setup.sh`.

use std::fs;
use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::common::{replog_ok as replog, replog_run, s, spawn_until_listening};

const MIB: usize = 1 << 20;
/// Slow clients: as many as the default `--max-clients` (8) serves plus as many again.
const SLOW_CLIENTS: usize = 16;

/// Runs `nbdinfo ARGS`; fails the test, saying what to do, when nbdinfo cannot run.
fn nbdinfo(args: &[&str]) -> Output {
    nbdinfo_with(args, &[])
}

/// [`nbdinfo`] with environment variables set.
fn nbdinfo_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("nbdinfo");
    command.args(args).envs(env.iter().copied());
    command.output().unwrap_or_else(|e| {
        panic!("nbdinfo cannot be run ({e}); these tests need it: run scripts/setup.sh")
    })
}

/// A vault with one 4 MiB disk `os` (a pattern in its first MiB) and one point.
struct Fixture {
    dir: tempfile::TempDir,
    vault: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let vault = dir.path().join("V");
    replog(&["init", s(&vault)]);
    let image = dir.path().join("os.raw");
    let mut bytes = vec![0u8; 4 * MIB];
    bytes[..MIB].iter_mut().enumerate().for_each(|(i, b)| {
        *b = (i % 251) as u8;
    });
    fs::write(&image, &bytes).expect("the image is written");
    replog(&["disk", "add", s(&vault), "os", "--from", s(&image)]);
    replog(&["point", s(&vault)]);
    Fixture { dir, vault }
}

/// A running `replog serve-nbd`, killed when dropped.
struct Server {
    child: Child,
    socket: PathBuf,
    _stdout: BufReader<ChildStdout>,
    stderr_file: PathBuf,
}

impl Server {
    /// `replog serve-nbd VAULT --latest --unix SOCKET ARGS`, once it listens.
    fn start(f: &Fixture, name: &str, args: &[&str]) -> Server {
        let socket = f.dir.path().join(format!("{name}.sock"));
        let stderr_file = f.dir.path().join(format!("{name}.err"));
        let mut all = vec!["serve-nbd", s(&f.vault), "--latest", "--unix", s(&socket)];
        all.extend_from_slice(args);
        let (child, stdout, _) = spawn_until_listening(&all, &stderr_file);
        Server {
            child,
            socket,
            _stdout: stdout,
            stderr_file,
        }
    }

    fn uri(&self) -> String {
        format!("nbd+unix:///os?socket={}", self.socket.display())
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client that reads the greeting, then sends the handshake one byte every half second and
/// never finishes it (the option it announces has more data than it will ever send).
struct SlowClient {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<bool>,
}

impl SlowClient {
    /// Connects; returns once the server has sent its greeting (the client has its thread).
    fn start(socket: &Path) -> SlowClient {
        let mut sock = UnixStream::connect(socket).expect("the server accepts");
        let mut greeting = [0u8; 18];
        sock.read_exact(&mut greeting)
            .expect("the server greets every client");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut bytes = 3u32.to_be_bytes().to_vec();
            bytes.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
            bytes.extend_from_slice(&7u32.to_be_bytes());
            bytes.extend_from_slice(&1_000_000u32.to_be_bytes());
            let mut bytes = bytes.into_iter().chain(std::iter::repeat(0u8));
            loop {
                let b = bytes.next().expect("an endless handshake");
                if sock.write_all(&[b]).is_err() {
                    return true;
                }
                if stopped.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        SlowClient { stop, thread }
    }

    /// Whether the server cuts the connection, waiting for that at most `within`.
    fn cut_within(self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the slow client's thread ends")
    }
}

/// Runs nbdinfo until it succeeds or `within` has passed; its last output.
fn nbdinfo_until_served(uri: &str, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    loop {
        let out = nbdinfo(&["--size", uri]);
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The bug: the handshake timeout was per read, so 8 clients sending one byte every few
/// seconds held every slot and 8 more held every refusal slot, for as long as they kept it up;
/// every other client was locked out, and closed without a word.
#[test]
fn finding_6_slow_clients_cannot_lock_out_a_real_client() {
    let f = fixture();
    let server = Server::start(&f, "deadline", &["--handshake-timeout", "2"]);
    let slow: Vec<SlowClient> = (0..SLOW_CLIENTS)
        .map(|_| SlowClient::start(&server.socket))
        .collect();
    let out = nbdinfo_until_served(&server.uri(), Duration::from_secs(90));
    assert!(
        out.status.success(),
        "nbdinfo was locked out by {SLOW_CLIENTS} slow clients; it said:\n{}\nserver stderr:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4194304");
    let cut = slow
        .into_iter()
        .map(|c| c.cut_within(Duration::from_secs(60)))
        .filter(|&cut| cut)
        .count();
    assert_eq!(
        cut, SLOW_CLIENTS,
        "every slow client was cut at the handshake deadline"
    );
    assert!(
        server.stderr().contains("--handshake-timeout"),
        "the log says why: {}",
        server.stderr()
    );
}

/// The bug: past 8 served and 8 refused connections, a client was closed with no message, so
/// a real client behind a few slow ones saw a bare disconnection instead of the reason.
#[test]
fn finding_6_a_refused_client_is_told_why() {
    let f = fixture();
    // A long deadline, so the slow clients hold every served slot throughout.
    let server = Server::start(&f, "refused", &["--handshake-timeout", "600"]);
    let slow: Vec<SlowClient> = (0..SLOW_CLIENTS)
        .map(|_| SlowClient::start(&server.socket))
        .collect();
    // nbdinfo shows that policy refused it; the server's text comes with its debug output.
    let out = nbdinfo_with(&["--size", &server.uri()], &[("LIBNBD_DEBUG", "1")]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "every slot is held: {said}");
    assert!(
        said.contains("server policy prevents NBD_OPT_GO"),
        "nbdinfo says it was refused: {said}"
    );
    assert!(
        said.contains("already serves 8 clients, its limit (--max-clients)"),
        "nbdinfo received the reason: {said}"
    );
    assert!(
        server.stderr().contains("refused"),
        "the server logs the refusal: {}",
        server.stderr()
    );
    drop(server);
    for c in slow {
        // The server is gone: whether it cut the client first does not matter here.
        let _ = c.cut_within(Duration::ZERO);
    }
}

/// A minimal client: greeting, fixed-newstyle flags, `NBD_OPT_GO` for `os`, then requests.
struct Negotiated {
    sock: UnixStream,
}

impl Negotiated {
    fn connect(socket: &Path) -> Negotiated {
        let mut sock = UnixStream::connect(socket).expect("the server accepts");
        sock.set_read_timeout(Some(Duration::from_secs(120)))
            .expect("a timeout is set");
        let mut greeting = [0u8; 18];
        sock.read_exact(&mut greeting).expect("a greeting");
        let mut hello = 3u32.to_be_bytes().to_vec();
        hello.extend_from_slice(&0x4948_4156_454f_5054u64.to_be_bytes());
        hello.extend_from_slice(&7u32.to_be_bytes());
        hello.extend_from_slice(&8u32.to_be_bytes());
        hello.extend_from_slice(&2u32.to_be_bytes());
        hello.extend_from_slice(b"os");
        hello.extend_from_slice(&0u16.to_be_bytes());
        sock.write_all(&hello).expect("the handshake is sent");
        loop {
            let mut head = [0u8; 20];
            sock.read_exact(&mut head).expect("an option reply");
            let kind = u32::from_be_bytes(head[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(head[16..20].try_into().unwrap()) as usize;
            let mut data = vec![0u8; len];
            sock.read_exact(&mut data).expect("the reply's data");
            assert!(
                kind & (1 << 31) == 0,
                "NBD_OPT_GO was refused: {}",
                String::from_utf8_lossy(&data)
            );
            if kind == 1 {
                return Negotiated { sock };
            }
        }
    }

    /// Reads the first 4 KiB of the export; `None` when the server closed the connection.
    fn read_start(&mut self) -> Option<Vec<u8>> {
        let mut req = 0x2560_9513u32.to_be_bytes().to_vec();
        req.extend_from_slice(&[0, 0, 0, 0]);
        req.extend_from_slice(&7u64.to_be_bytes());
        req.extend_from_slice(&0u64.to_be_bytes());
        req.extend_from_slice(&4096u32.to_be_bytes());
        self.sock.write_all(&req).ok()?;
        let mut head = [0u8; 16];
        self.sock.read_exact(&mut head).ok()?;
        assert_eq!(&head[4..8], &[0, 0, 0, 0], "the read succeeds");
        let mut data = vec![0u8; 4096];
        self.sock.read_exact(&mut data).ok()?;
        Some(data)
    }
}

/// The bug: a negotiated client that sent nothing held its slot for ever. Now, when every slot
/// is taken, the one idle past `--idle-timeout` gives its slot to a new client; while slots are
/// free an idle client is left alone (a VM booted from an export may idle for long).
#[test]
fn finding_6_an_idle_client_gives_its_slot_to_a_new_one() {
    let f = fixture();
    let args = ["--max-clients", "1", "--idle-timeout", "1"];
    let server = Server::start(&f, "idle", &args);
    let mut idle = Negotiated::connect(&server.socket);
    std::thread::sleep(Duration::from_secs(3));
    let first = idle
        .read_start()
        .expect("with no one waiting, the idle client stays");
    assert_eq!(first[..4], [0, 1, 2, 3]);
    std::thread::sleep(Duration::from_secs(3));
    let out = nbdinfo_until_served(&server.uri(), Duration::from_secs(90));
    assert!(
        out.status.success(),
        "nbdinfo got the idle client's slot: {}\nserver stderr:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    assert_eq!(
        idle.read_start(),
        None,
        "the idle client was disconnected to make room"
    );
    assert!(
        server.stderr().contains("--idle-timeout"),
        "the log says why: {}",
        server.stderr()
    );
}

/// The bug: `serve-nbd` printed "serving point N" before binding its socket, so a server that
/// then failed to listen had announced a point it never served.
#[test]
fn finding_15_serve_nbd_says_what_it_serves_only_once_it_listens() {
    let f = fixture();
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("an address").to_string();
    let missing = f.dir.path().join("no-such-dir").join("x.sock");
    let cases = [
        vec!["--listen", address.as_str()],
        vec!["--unix", s(&missing)],
    ];
    for args in cases {
        let mut all = vec!["serve-nbd", s(&f.vault), "--latest"];
        all.extend_from_slice(&args);
        let out = replog_run(&all);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(args[1]),
            "the error names {}: {stderr}",
            args[1]
        );
        assert!(
            !stdout.contains("serving") && !stdout.contains("listening"),
            "nothing is announced when binding fails: {stdout}"
        );
    }
    let server = Server::start(&f, "ok", &[]);
    let out = nbdinfo(&["--size", &server.uri()]);
    assert!(out.status.success(), "the server serves once it listens");
}
