//! `replog failover --live`: a point served over NBD while its images hydrate. Real clients
//! (qemu-io, qemu-img) talk to the built binary over a Unix socket; every image is compared
//! byte for byte with a model: the point's bytes (kept aside when the point was taken) with
//! the guest's writes applied to them by qemu-io the same way.
//!
//! Hydration is slowed with `--rate` so the guest's writes and reads land while it runs.

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{json_of, replog, replog_ok};

const MIB: u64 = 1 << 20;
/// Disks of the fixture: name and size. Hydration goes in this order.
const DISKS: [(&str, u64); 2] = [("os", 24 * MIB), ("data", 8 * MIB)];
/// The exit code of a live failover stopped before it was complete.
const EXIT_INTERRUPTED: i32 = 75;

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn require(tools: &[&str]) {
    for t in tools {
        let ok = Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "{t} is required; run scripts/setup.sh");
    }
}

fn tool_ok(name: &str, args: &[&str]) -> Output {
    let out = Command::new(name)
        .args(args)
        .output()
        .expect("the tool runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.contains("failed"),
        "{name} {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Applies qemu-io commands to a raw image file or an NBD URI.
fn qemu_io(target: &str, commands: &[&str]) {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c]);
    }
    args.push(target);
    tool_ok("qemu-io", &args);
}

/// A deterministic generator (xorshift64*), so the disks are random but repeatable.
struct Rng(u64);

impl Rng {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Asserts that two files hold the same bytes, naming the first offset that differs.
fn assert_same_bytes(got: &Path, want: &Path) {
    let (a, b) = (fs::read(got).unwrap(), fs::read(want).unwrap());
    assert_eq!(
        a.len(),
        b.len(),
        "{} and {} differ in length",
        got.display(),
        want.display()
    );
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!(
            "{} differs from {} at byte {i}: {:#04x}, expected {:#04x}",
            got.display(),
            want.display(),
            a[i],
            b[i]
        );
    }
}

/// A vault with two points. The disks are random data with zero holes (os: [16, 18) MiB,
/// data: [2, 4) MiB); point 2 adds journal records over point 1's base: os 1 MiB at 5 MiB and
/// zeros at [20, 21) MiB, data 100000 bytes at 4095.
struct Fixture {
    dir: tempfile::TempDir,
    vault: PathBuf,
    /// The bytes of each disk at point 2, one file per disk (DISKS order).
    point2: Vec<PathBuf>,
}

impl Fixture {
    fn new() -> Fixture {
        require(&["qemu-io", "qemu-img"]);
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("V");
        replog_ok(&["init", s(&vault)]);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut images = Vec::new();
        for (i, (name, size)) in DISKS.iter().enumerate() {
            let mut bytes = vec![0u8; *size as usize];
            rng.fill(&mut bytes);
            let hole = if i == 0 {
                16 * MIB..18 * MIB
            } else {
                2 * MIB..4 * MIB
            };
            bytes[hole.start as usize..hole.end as usize].fill(0);
            let image = dir.path().join(format!("{name}.raw"));
            fs::write(&image, &bytes).unwrap();
            replog_ok(&["disk", "add", s(&vault), name, "--from", s(&image)]);
            images.push(image);
        }
        replog_ok(&["point", s(&vault), "--label", "one"]);
        qemu_io(s(&images[0]), &["write -P 0x11 5M 1M", "write -z 20M 1M"]);
        qemu_io(s(&images[1]), &["write -P 0x22 4095 100000"]);
        for ((name, _), image) in DISKS.iter().zip(&images) {
            replog_ok(&["ingest", s(&vault), name, "--from", s(image)]);
        }
        replog_ok(&["point", s(&vault), "--label", "two"]);
        let point2 = images
            .iter()
            .zip(DISKS)
            .map(|(image, (name, _))| {
                let copy = dir.path().join(format!("p2-{name}.raw"));
                fs::copy(image, &copy).unwrap();
                copy
            })
            .collect();
        Fixture { dir, vault, point2 }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A copy of point 2's disk `i`, to apply the guest's writes to.
    fn model(&self, i: usize, tag: &str) -> PathBuf {
        let m = self.root().join(format!("model-{tag}-{}.raw", DISKS[i].0));
        fs::copy(&self.point2[i], &m).unwrap();
        m
    }

    /// The vault is intact, point 2 still fails over to its bytes, and no lease is left.
    fn assert_vault_unchanged(&self) {
        replog_ok(&["verify", s(&self.vault)]);
        let out = self.root().join(format!("check-{}", fastrand_suffix()));
        replog_ok(&["failover", s(&self.vault), "--point", "2", "--out", s(&out)]);
        for (i, (name, _)) in DISKS.iter().enumerate() {
            assert_same_bytes(&out.join(format!("{name}.raw")), &self.point2[i]);
        }
        // A killed run leaves its lease file, which nobody holds: stale, not listed as live.
        let inspect = json_of(&["inspect", s(&self.vault), "--json"]);
        let leases = find_key(&inspect, "leases").expect("inspect lists the leases");
        assert_eq!(leases, &Value::Array(vec![]), "no live lease is left");
    }
}

/// The first value under `key` anywhere in `v`.
fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A running `replog failover --live --json`, its JSON events read by a thread.
struct Live {
    child: Child,
    socket: PathBuf,
    events: Receiver<Value>,
    stderr_file: PathBuf,
    /// Every event received so far.
    seen: Vec<Value>,
}

impl Live {
    /// Starts a live failover of point 2 into `out` and waits for its `serving` event.
    fn start(f: &Fixture, out: &Path, more: &[&str]) -> Live {
        let n = fastrand_suffix();
        let socket = f.root().join(format!("live-{n}.sock"));
        let stderr_file = f.root().join(format!("live-{n}.err"));
        let mut args = vec![
            "failover",
            s(&f.vault),
            "--point",
            "2",
            "--out",
            s(out),
            "--live",
            "--json",
            "--unix",
            s(&socket),
        ];
        args.extend_from_slice(more);
        let mut child = Command::new(env!("CARGO_BIN_EXE_replog"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_file).unwrap())
            .spawn()
            .expect("replog starts");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let mut live = Live {
            child,
            socket,
            events,
            stderr_file,
            seen: Vec::new(),
        };
        live.wait_for(|e| e["event"] == "serving");
        live
    }

    fn uri(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.socket.display())
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    /// Waits (at most 120 s) for an event `pred` accepts and returns it.
    fn wait_for(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no such event in 120 s; seen {:?}\n{}",
                        self.seen,
                        self.stderr()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "replog ended before the event; seen {:?}\n{}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// Waits (at most 120 s) for the process to exit, reading every event it printed.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            while let Ok(v) = self.events.try_recv() {
                self.seen.push(v);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(v) = self.events.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(v);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "replog did not exit in 120 s; seen {:?}\n{}",
                self.seen,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// The events named `name` seen so far.
    fn seen(&self, name: &str) -> Vec<&Value> {
        self.seen.iter().filter(|e| e["event"] == name).collect()
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn export_of<'a>(serving: &'a Value, name: &str) -> &'a Value {
    serving["exports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no export {name} in {serving}"))
}

/// The guest's writes to disk os: whole and partial blocks, unaligned, zeroes and a discard,
/// ahead of hydration and (at 1 MiB) likely behind it.
const OS_WRITES: [&str; 6] = [
    "write -P 0x5a 1M 64k",
    "write -P 0x5b 12345 1000",
    "write -P 0x5c 17M 8k",
    "write -z 7M 100k",
    "write -P 0x5d 24575k 1k",
    "write -P 0x5e 5M 3000",
];
const DATA_WRITES: [&str; 2] = ["write -P 0x6a 4097 70000", "write -z 6M 4k"];

/// The guest writes while hydration runs; at the end each image is point 2 with the writes
/// applied, the maps are gone, the vault is unchanged and its lease released.
#[test]
fn guest_writes_during_hydration_are_kept_and_the_rest_is_the_point() {
    let f = Fixture::new();
    let out = f.root().join("out");
    let mut live = Live::start(&f, &out, &["--rate", "8M"]);
    let with_discard = [&OS_WRITES[..], &["discard 22M 64k"]].concat();
    qemu_io(&live.uri("os"), &with_discard);
    qemu_io(&live.uri("data"), &DATA_WRITES);
    let guest_done = live.seen.len();
    let status = live.wait_exit();
    assert!(status.success(), "exited {status}\n{}", live.stderr());
    let os_complete = live
        .seen
        .iter()
        .position(|e| e["event"] == "disk_complete" && e["disk"] == "os")
        .expect("os completed");
    assert!(
        os_complete >= guest_done,
        "the guest's writes landed during hydration (os completed before they were done)"
    );
    let finished = live.seen("finished");
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0]["complete"], true);
    // The model: the same writes; a discarded range reads as zeros here.
    let os = f.model(0, "t1");
    qemu_io(s(&os), &[&OS_WRITES[..], &["write -z 22M 64k"]].concat());
    let data = f.model(1, "t1");
    qemu_io(s(&data), &DATA_WRITES);
    assert_same_bytes(&out.join("os.raw"), &os);
    assert_same_bytes(&out.join("data.raw"), &data);
    for (name, _) in DISKS {
        assert!(
            !out.join(format!(".{name}.hydration")).exists(),
            "{name}'s map was removed"
        );
    }
    f.assert_vault_unchanged();
}

/// Killed (-9) during hydration, then run again: it resumes from the hydration map (what was
/// durable is not copied again), the guest's flushed write is kept, and the result is exact.
#[test]
fn a_killed_live_failover_resumes_where_it_was() {
    let f = Fixture::new();
    let out = f.root().join("out");
    let mut live = Live::start(&f, &out, &["--rate", "4M"]);
    let guest = ["write -P 0x77 20M 64k", "write -P 0x78 3M 5000", "flush"];
    qemu_io(&live.uri("os"), &guest);
    let progress = live.wait_for(|e| {
        e["event"] == "progress"
            && e["disk"] == "os"
            && e["durable_bytes"].as_u64() >= Some(6 * MIB)
    });
    live.signal("-KILL");
    live.wait_exit();
    let durable = progress["durable_bytes"].as_u64().unwrap();
    assert!(
        durable < 24 * MIB,
        "killed before os was complete: {progress}"
    );
    assert!(
        out.join(".os.hydration").exists(),
        "the map outlives a kill"
    );

    let mut again = Live::start(&f, &out, &[]);
    let serving = again.seen("serving")[0].clone();
    let resumed = export_of(&serving, "os")["resumed_bytes"].as_u64().unwrap();
    assert!(
        resumed >= durable,
        "the run resumed from the map ({resumed} bytes done, the killed run had {durable} durable)"
    );
    let status = again.wait_exit();
    assert!(status.success(), "exited {status}\n{}", again.stderr());
    let os_done = again.seen("disk_complete");
    let copied = os_done
        .iter()
        .find(|e| e["disk"] == "os")
        .expect("os completed")["copied_bytes"]
        .as_u64()
        .unwrap();
    assert!(
        copied <= 24 * MIB - durable,
        "the second run copied {copied} bytes of os, more than what the map did not claim"
    );
    let os = f.model(0, "t2");
    qemu_io(s(&os), &guest);
    assert_same_bytes(&out.join("os.raw"), &os);
    assert_same_bytes(&out.join("data.raw"), &f.point2[1]);
    f.assert_vault_unchanged();
}

/// Reads while hydration runs (a whole-disk compare, most of it not yet hydrated) return the
/// point's bytes; SIGTERM then stops it with exit code 75, keeping the map, and a run without
/// a rate completes it exactly.
#[test]
fn reads_during_hydration_return_the_point_and_sigterm_keeps_the_map() {
    let f = Fixture::new();
    let out = f.root().join("out");
    let mut live = Live::start(&f, &out, &["--rate", "2M"]);
    for (i, (name, _)) in DISKS.iter().enumerate() {
        let uri = live.uri(name);
        tool_ok(
            "qemu-img",
            &[
                "compare",
                "-q",
                "-f",
                "raw",
                "-F",
                "raw",
                &uri,
                s(&f.point2[i]),
            ],
        );
    }
    qemu_io(&live.uri("os"), &["read -P 0 16M 2M", "read -P 0x11 5M 1M"]);
    assert!(
        live.seen("disk_complete").is_empty(),
        "the reads ran while os was still hydrating"
    );
    live.signal("-TERM");
    let status = live.wait_exit();
    assert_eq!(status.code(), Some(EXIT_INTERRUPTED), "{}", live.stderr());
    assert_eq!(live.seen("finished")[0]["complete"], false);
    assert!(out.join(".os.hydration").exists(), "SIGTERM keeps the map");
    assert!(
        out.join(".data.hydration").exists(),
        "SIGTERM keeps the map"
    );

    let mut again = Live::start(&f, &out, &[]);
    let status = again.wait_exit();
    assert!(status.success(), "exited {status}\n{}", again.stderr());
    for (i, (name, _)) in DISKS.iter().enumerate() {
        assert_same_bytes(&out.join(format!("{name}.raw")), &f.point2[i]);
    }
    f.assert_vault_unchanged();
}

/// An image without a map is no live failover's to resume: refused unless --force.
#[test]
fn an_existing_image_without_a_map_is_refused_without_force() {
    let f = Fixture::new();
    let out = f.root().join("out");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("os.raw"), b"someone's file").unwrap();
    let sock = f.root().join("refused.sock");
    let args = [
        "failover",
        s(&f.vault),
        "--point",
        "2",
        "--out",
        s(&out),
        "--live",
        "--unix",
        s(&sock),
    ];
    let run = replog(&args);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("os.raw") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(fs::read(out.join("os.raw")).unwrap(), b"someone's file");
}
