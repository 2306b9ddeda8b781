//! A live disk for the capture and replication tests: [`QemuDaemon`] runs `qemu-storage-daemon`
//! serving a qcow2 image as QEMU would serve a guest's disk, with a QMP monitor and, if asked,
//! the guest's writable NBD export. [`installed`] lets a test skip itself, saying so, where the
//! tools are missing (qemu-utils has `qemu-storage-daemon`, `qemu-img`, `qemu-io` and
//! `qemu-nbd`).
//!
//! The daemon's stdout and stderr go to `DIR/qemu-storage-daemon.log` (appended across
//! restarts), whose end a failed start quotes.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The program [`QemuDaemon`] runs.
const PROGRAM: &str = "qemu-storage-daemon";

/// How long the daemon may take to accept connections on its sockets.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How much of the daemon's output a failed start quotes, at most (its end).
const LOG_TAIL: usize = 4000;

/// Whether every tool is on PATH; prints "skipped: TOOL is not installed" for the first missing
/// one, so a test can `return` early.
pub fn installed(tools: &[&str]) -> bool {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for tool in tools {
        let found = dirs.iter().any(|d| {
            std::fs::metadata(d.join(tool)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        });
        if !found {
            eprintln!("skipped: {tool} is not installed");
            return false;
        }
    }
    true
}

/// Creates a qcow2 image of `bytes` (64 KiB clusters, qemu-img's default) at `image`.
pub fn create_qcow2(image: &Path, bytes: u64) {
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(image)
        .arg(bytes.to_string())
        .output()
        .expect("qemu-img starts");
    assert!(
        out.status.success(),
        "qemu-img create {}: {}",
        image.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new temporary directory holding a new qcow2 image `disk.qcow2` of `bytes` served by a
/// [`QemuDaemon`] there (with its NBD server if `nbd_server`), or `None`, the test to be
/// skipped, where qemu-utils (`qemu-storage-daemon`, `qemu-img`, `qemu-io`) is not installed.
pub fn live_disk(bytes: u64, nbd_server: bool) -> Option<(tempfile::TempDir, QemuDaemon)> {
    if !installed(&["qemu-storage-daemon", "qemu-img", "qemu-io"]) {
        return None;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let image = dir.path().join("disk.qcow2");
    create_qcow2(&image, bytes);
    let daemon = QemuDaemon::start(dir.path(), &image, nbd_server);
    Some((dir, daemon))
}

/// `qemu-storage-daemon` serving a qcow2 image as node `disk0` (over file node `file0`), a QMP
/// monitor on `DIR/qmp.sock`, and, if asked, an NBD server on `DIR/nbd.sock` exporting the node
/// writable as export `disk` (export id `e0`). Killed when dropped.
#[derive(Debug)]
pub struct QemuDaemon {
    dir: PathBuf,
    image: PathBuf,
    nbd_server: bool,
    child: Option<Child>,
}

impl QemuDaemon {
    /// Starts the daemon on `image` with its sockets in `dir`, and waits until they accept
    /// connections. Panics, quoting the end of the daemon's output, if it exits first or 20 s
    /// pass.
    pub fn start(dir: &Path, image: &Path, nbd_server: bool) -> QemuDaemon {
        let mut daemon = QemuDaemon {
            dir: dir.to_path_buf(),
            image: image.to_path_buf(),
            nbd_server,
            child: None,
        };
        daemon.spawn();
        daemon
    }

    /// The QMP monitor's socket.
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// The NBD server's socket (served only if the daemon was started with one).
    pub fn nbd_socket(&self) -> PathBuf {
        self.dir.join("nbd.sock")
    }

    /// The URI of the writable export `disk`, as qemu-io and qemu-img take it.
    pub fn nbd_uri(&self) -> String {
        format!("nbd+unix:///disk?socket={}", self.nbd_socket().display())
    }

    /// The daemon's process id. Panics if it was killed.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon runs").id()
    }

    /// Kills the daemon (SIGKILL) and reaps it; nothing if it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Either fails only if the process is already gone, which is what is wanted.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Asks the daemon to exit (SIGTERM: it closes its images, storing persistent dirty
    /// bitmaps in them) and reaps it; nothing if it is not running. Panics if it has not exited
    /// within 20 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -TERM {}", child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while child
            .try_wait()
            .expect("the daemon can be waited for")
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "{PROGRAM} did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the daemon if it runs, removes its stale sockets, and starts it again with the
    /// same arguments, waiting as [`QemuDaemon::start`] does.
    pub fn restart(&mut self) {
        self.kill();
        for socket in self.sockets() {
            let _ = std::fs::remove_file(socket);
        }
        self.spawn();
    }

    /// The sockets the daemon listens on.
    fn sockets(&self) -> Vec<PathBuf> {
        let mut sockets = vec![self.qmp_socket()];
        if self.nbd_server {
            sockets.push(self.nbd_socket());
        }
        sockets
    }

    fn log(&self) -> PathBuf {
        self.dir.join(format!("{PROGRAM}.log"))
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(PROGRAM);
        cmd.arg("--blockdev")
            .arg(format!(
                "driver=file,filename={},node-name=file0",
                self.image.display()
            ))
            .args(["--blockdev", "driver=qcow2,file=file0,node-name=disk0"]);
        if self.nbd_server {
            cmd.arg("--nbd-server")
                .arg(format!(
                    "addr.type=unix,addr.path={}",
                    self.nbd_socket().display()
                ))
                .args([
                    "--export",
                    "type=nbd,id=e0,node-name=disk0,name=disk,writable=on",
                ]);
        }
        cmd.arg("--chardev")
            .arg(format!(
                "socket,path={},server=on,wait=off,id=qmp0",
                self.qmp_socket().display()
            ))
            .args(["--monitor", "chardev=qmp0"]);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("the daemon's log opens");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log's handle is cloned"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{PROGRAM} does not start: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let why = loop {
            let waiting = self
                .sockets()
                .into_iter()
                .filter(|s| UnixStream::connect(s).is_err())
                .count();
            if waiting == 0 {
                return;
            }
            let child = self.child.as_mut().expect("spawned above");
            if let Some(status) = child.try_wait().expect("the daemon's status") {
                break format!("exited ({status})");
            }
            if Instant::now() >= deadline {
                break format!("did not listen within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.kill();
        let output = std::fs::read(self.log()).unwrap_or_default();
        let tail = &output[output.len().saturating_sub(LOG_TAIL)..];
        panic!(
            "{PROGRAM} {why}; the end of its output:\n{}",
            String::from_utf8_lossy(tail)
        );
    }
}

impl Drop for QemuDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}
