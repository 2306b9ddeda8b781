//! `replog replicate` across restarts, of itself and of QEMU, against a real
//! `qemu-storage-daemon`: a replication that stops and starts again continues from the dirty
//! bitmap QEMU kept (in memory, or stored in the qcow2 by a clean exit) and reads only what
//! changed; a QEMU killed in the middle of a cycle fails that cycle (no point), is retried, and
//! after it comes back its bitmap is `inconsistent`, so the next point is a full pass. Every
//! point is compared byte for byte with the disk as the daemon serves it.

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use replog_qemu::Qmp;
use replog_tests::qemu::{QemuDaemon, create_qcow2, installed};
use serde_json::{Value, json};
use support::{json_of, replog_ok};

mod support;

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

/// A disk of 32 MiB with 4 MiB of data, served by the daemon, and an empty vault.
struct Live {
    dir: tempfile::TempDir,
    daemon: QemuDaemon,
    vault: String,
}

impl Live {
    fn new() -> Live {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.qcow2");
        create_qcow2(&image, 32 * MIB);
        let daemon = QemuDaemon::start(dir.path(), &image, true);
        let vault = dir.path().join("v").to_str().unwrap().to_owned();
        replog_ok(&["init", &vault]);
        let live = Live { dir, daemon, vault };
        live.write(0x11, 0, 4 * MIB);
        live
    }

    /// `replicate VAULT --disk os=disk0 ...` with the daemon's sockets, then `extra`.
    fn replicate_args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["replicate", &self.vault, "--disk", "os=disk0", "--json"]
            .map(String::from)
            .to_vec();
        for (flag, path) in [
            ("--qmp", self.daemon.qmp_socket()),
            ("--nbd-socket", self.daemon.nbd_socket()),
        ] {
            args.push(flag.into());
            args.push(path.to_str().unwrap().into());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Runs `replicate --every 1s --cycles N` to its end; returns its point events.
    fn cycles(&self, n: u64) -> Vec<Value> {
        let n = n.to_string();
        let args = self.replicate_args(&["--every", "1s", "--cycles", &n]);
        let out = replog_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let events: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            events.iter().all(|e| e["event"] == "point"),
            "no cycle failed: {events:?}"
        );
        events
    }

    /// A guest write through the daemon's export: `len` bytes of `byte` at `offset`.
    fn write(&self, byte: u8, offset: u64, len: u64) {
        let command = format!("write -P {byte} {offset} {len}");
        let out = Command::new("qemu-io")
            .args(["-f", "raw", "-c", &command, &self.daemon.nbd_uri()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}: {out:?}");
    }

    /// The disk as the daemon serves it now.
    fn disk_now(&self) -> Vec<u8> {
        let out = self.dir.path().join("now.raw");
        let done = Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "raw", &self.daemon.nbd_uri()])
            .arg(&out)
            .output()
            .unwrap();
        assert!(done.status.success(), "{done:?}");
        std::fs::read(out).unwrap()
    }

    /// Fails over to the vault's newest point and checks it against the disk as served now.
    fn newest_point_is_the_disk(&self, what: &str) {
        let out = self.dir.path().join("failover");
        let _ = std::fs::remove_dir_all(&out);
        replog_ok(&[
            "failover",
            &self.vault,
            "--latest",
            "--out",
            out.to_str().unwrap(),
        ]);
        let got = std::fs::read(out.join("os.raw")).unwrap();
        let want = self.disk_now();
        assert_eq!(got.len(), want.len(), "{what}: length");
        let first = got.iter().zip(&want).position(|(a, b)| a != b);
        assert_eq!(first, None, "{what}: the first byte that differs");
    }

    /// The daemon's bitmaps of node `disk0`: (name, recording, inconsistent).
    fn bitmaps(&self) -> Vec<(String, bool, bool)> {
        let mut qmp = Qmp::connect(&self.daemon.qmp_socket()).unwrap();
        let nodes = qmp
            .execute("query-named-block-nodes", json!({"flat": true}))
            .unwrap();
        let node = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node-name"] == "disk0")
            .unwrap();
        node["dirty-bitmaps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                (
                    b["name"].as_str().unwrap().to_owned(),
                    b["recording"].as_bool().unwrap_or(false),
                    b["inconsistent"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }
}

/// The one pass of a point event.
fn pass(event: &Value) -> &Value {
    let passes = event["passes"].as_array().unwrap();
    assert_eq!(passes.len(), 1, "{event}");
    &passes[0]
}

#[test]
fn a_replication_started_again_reads_only_what_changed_while_it_was_stopped() {
    if !installed(&["qemu-storage-daemon", "qemu-img", "qemu-io"]) {
        return;
    }
    let mut live = Live::new();
    let first = live.cycles(2);
    assert_eq!(pass(&first[0])["mode"], "full", "{first:?}");
    assert_eq!(pass(&first[1])["mode"], "dirty-bitmap", "{first:?}");
    live.newest_point_is_the_disk("the first run");

    // replog stopped, the guest wrote, replog runs again: the bitmap QEMU kept says what.
    live.write(0x22, MIB, 64 * KIB);
    let again = live.cycles(1);
    assert_eq!(pass(&again[0])["mode"], "dirty-bitmap", "{again:?}");
    assert_eq!(pass(&again[0])["bytes_read"], 64 * KIB, "{again:?}");
    live.newest_point_is_the_disk("after replog started again");

    // QEMU exits cleanly and starts again: the bitmap was stored in the qcow2 image.
    live.daemon.stop();
    live.daemon.restart();
    live.write(0x33, 2 * MIB, 128 * KIB);
    let after_restart = live.cycles(1);
    assert_eq!(
        pass(&after_restart[0])["mode"],
        "dirty-bitmap",
        "{after_restart:?}"
    );
    assert_eq!(pass(&after_restart[0])["bytes_read"], 128 * KIB);
    live.newest_point_is_the_disk("after QEMU exited and started again");

    // A point replog replicate did not take: the bitmap no longer starts at the newest point,
    // so the next cycle reads the whole disk.
    replog_ok(&["point", &live.vault]);
    live.write(0x44, 3 * MIB, 64 * KIB);
    let after_point = live.cycles(1);
    assert_eq!(pass(&after_point[0])["mode"], "full", "{after_point:?}");
    live.newest_point_is_the_disk("after a point of another command");

    // QEMU exits cleanly (storing the bitmap in the image), starts (marking it in use) and is
    // killed: when it starts again it flags the bitmap inconsistent, and replog does not trust
    // it: the next cycle reads the whole disk, and leaves one good bitmap.
    live.daemon.stop();
    live.daemon.restart();
    live.daemon.kill();
    live.daemon.restart();
    let flagged = live.bitmaps();
    assert!(
        matches!(flagged.as_slice(), [(_, _, true)]),
        "QEMU flags the stored bitmap: {flagged:?}"
    );
    live.write(0x55, 4 * MIB, 64 * KIB);
    let after_kill = live.cycles(1);
    assert_eq!(pass(&after_kill[0])["mode"], "full", "{after_kill:?}");
    live.newest_point_is_the_disk("after QEMU was killed");
    let left = live.bitmaps();
    assert!(
        matches!(left.as_slice(), [(name, true, false)] if name != &flagged[0].0),
        "one new bitmap, recording: {left:?}"
    );
}

/// `replicate` running in the background, its JSON events read as they come.
struct Running {
    child: Child,
    events: std::sync::mpsc::Receiver<Value>,
}

impl Running {
    fn start(args: &[String]) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_replog"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("replog replicate starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    return;
                }
            }
        });
        Running { child, events }
    }

    /// The next event, within `seconds`.
    fn next(&self, seconds: u64) -> Value {
        self.events
            .recv_timeout(Duration::from_secs(seconds))
            .expect("an event in time")
    }

    /// SIGTERM; the exit status, and the events that came after.
    fn stop(mut self) -> (std::process::ExitStatus, Vec<Value>) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        // The reader thread ends with the pipe: every event is in the channel now or soon.
        let rest = std::iter::from_fn(|| self.events.recv_timeout(Duration::from_secs(5)).ok());
        (status, rest.collect())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn qemu_killed_mid_cycle_fails_that_cycle_and_the_replication_goes_on_with_a_full_pass() {
    if !installed(&["qemu-storage-daemon", "qemu-img", "qemu-io"]) {
        return;
    }
    let mut live = Live::new();
    live.cycles(2);
    let points_before = points(&live.vault);
    // The first cycle's pre-point hook runs after the cut, with the views exported: it kills
    // QEMU there, in the middle of the cycle.
    let pid = live.daemon.pid();
    let hook = format!("if [ \"$REPLOG_CYCLE\" = 1 ]; then kill -9 {pid}; fi");
    live.write(0x66, 5 * MIB, 64 * KIB);
    let args = live.replicate_args(&["--every", "1s", "--pre-point", &hook]);
    let running = Running::start(&args);
    let failed = running.next(30);
    assert_eq!(failed["event"], "failed", "{failed}");
    // A second replication of the same vault is refused at once: the first holds the vault,
    // and its objects in QEMU must not be swept from under it.
    let second = Command::new(env!("CARGO_BIN_EXE_replog"))
        .args(live.replicate_args(&["--every", "1s"]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = output_within(second, Duration::from_secs(20));
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another replog process"), "{err}");
    // QEMU comes back: the replication, retrying all along, reconnects and reads the disk.
    live.daemon.restart();
    let deadline = Instant::now() + Duration::from_secs(60);
    let point = loop {
        assert!(Instant::now() < deadline, "no point after QEMU came back");
        let event = running.next(60);
        if event["event"] == "point" {
            break event;
        }
    };
    assert_eq!(pass(&point)["mode"], "full", "{point}");
    let (status, rest) = running.stop();
    assert!(status.success(), "replicate exited {status}");
    let more = rest.iter().filter(|e| e["event"] == "point").count();
    assert_eq!(
        points(&live.vault),
        points_before + 1 + more,
        "a point for each point event, none for the killed cycle"
    );
    live.newest_point_is_the_disk("the replication after QEMU was killed");
}

fn points(vault: &str) -> usize {
    json_of(&["points", vault, "--json"])
        .as_array()
        .unwrap()
        .len()
}

/// The output of `child` once it exits on its own, which it must within `limit` (it is
/// killed otherwise).
fn output_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}
