//! The CLI's contract, pinned: one scripted session of the built `replog` binary runs every
//! command that has `--json` (and the failures an operator meets most), and its transcript (the
//! command line, the exit code, stdout's JSON and stderr) must equal `golden/cli.txt`, byte for
//! byte, after the values that change from run to run (times, durations, rates, random vault
//! ids, the temporary directory, the object server's port) are replaced by a placeholder.
//!
//! A change of output or exit code is then a visible diff of `golden/cli.txt` in review. To
//! accept one on purpose: `REPLOG_BLESS=1 cargo nextest run -p replog-tests --test golden_cli`,
//! and read the diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use replog_tests::replog_bin;
use replog_tests::servers::S3Server;
use serde_json::Value;

const GOLDEN: &str = "tests/golden/cli.txt";
const MIB: usize = 1 << 20;

/// Keys whose values differ between two runs of the same session.
const VOLATILE_KEYS: &[&str] = &[
    "time_unix_ns",
    // Heap bytes by capacity: they follow the allocator's growth policy, not the vault.
    "memory_bytes",
    "crc",
    "iops",
    "time",
    "created",
    "started",
    "finished",
    "rpo_seconds",
    "hours",
    "bytes_per_hour",
    "waited_ms",
    "created_unix_ns",
    "vault_id",
    "elapsed_s",
    "elapsed_ms",
    "elapsed_ns",
    "seconds",
    "secs",
    "mib_per_s",
    "mb_per_s",
    "bytes_per_s",
    "rate",
    "throughput",
    "duration_s",
    "duration_ms",
    "wall_s",
    "cpu_s",
    "peak_rss_bytes",
    "pid",
    "since",
    "expires_unix_ns",
    "taken_unix_ns",
    "now_unix_ns",
    "latency",
    "p50_us",
    "p99_us",
    "max_us",
    "mean_us",
];

/// A deterministic image: `len` bytes, each 4 KiB block filled with a byte of `seed` and its
/// index, every third block left as zeros.
fn image(len: usize, seed: u8) -> Vec<u8> {
    let mut data = vec![0u8; len];
    for (i, block) in data.chunks_mut(4096).enumerate() {
        if i % 3 != 0 {
            block.fill(seed.wrapping_add(i as u8));
        }
    }
    data
}

struct Session {
    dir: PathBuf,
    env: Vec<(String, String)>,
    port: String,
    transcript: String,
}

impl Session {
    /// Runs `replog ARGS` in the session's directory and appends it to the transcript.
    fn run(&mut self, args: &[&str]) -> i32 {
        let out = Command::new(replog_bin())
            .args(args)
            .current_dir(&self.dir)
            .env("REPLOG_IO_BACKEND", "sync")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("replog ran");
        let code = out.status.code().expect("replog exited");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let json = args.contains(&"--json");
        writeln!(self.transcript, "$ replog {}", args.join(" ")).unwrap();
        writeln!(self.transcript, "exit {code}").unwrap();
        if json {
            for doc in json_documents(&stdout) {
                writeln!(self.transcript, "{}", self.scrub(&doc)).unwrap();
            }
        }
        if !stderr.is_empty() {
            writeln!(self.transcript, "--- stderr").unwrap();
            writeln!(self.transcript, "{}", self.scrub(stderr.trim_end())).unwrap();
        }
        writeln!(self.transcript).unwrap();
        code
    }

    fn scrub(&self, text: &str) -> String {
        let dir = self.dir.display().to_string();
        let mut s = text.replace(&dir, "<TMP>");
        if !self.port.is_empty() {
            s = s.replace(&self.port, "<PORT>");
        }
        blank_after(
            &blank_after(&blank_after(&s, "manifest 1 ("), "stored checksum "),
            "hash to ",
        )
    }

    fn write(&self, name: &str, data: &[u8]) {
        std::fs::write(self.dir.join(name), data).expect("image written");
    }
}

/// Stdout as JSON documents, volatile values blanked: one document, or one per line.
fn json_documents(stdout: &str) -> Vec<String> {
    let pretty = |mut v: Value| {
        blank_volatile(&mut v);
        serde_json::to_string_pretty(&v).unwrap()
    };
    if stdout.trim().is_empty() {
        return Vec::new();
    }
    if let Ok(v) = serde_json::from_str::<Value>(stdout) {
        return vec![pretty(v)];
    }
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(v) => pretty(v),
            Err(_) => format!("(not JSON) {line}"),
        })
        .collect()
}

/// `text` with the word after each `marker` (a timestamp or a checksum over timestamps) blanked.
fn blank_after(text: &str, marker: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        let start = at + marker.len();
        out.push_str(&rest[..start]);
        out.push_str("<volatile>");
        let end = rest[start..]
            .find(|c: char| c == ')' || c == ',' || c == '"' || c.is_whitespace())
            .map_or(rest.len(), |n| start + n);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn blank_volatile(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, value) in map.iter_mut() {
                if VOLATILE_KEYS.contains(&k.as_str())
                    || k.ends_with("_unix_ns")
                    || k.ends_with("_secs")
                    || k.ends_with("_per_s")
                    || k.ends_with("_ms")
                    || k.ends_with("_us")
                    || k.starts_with("point_latency")
                    // A chain hash follows from the random vault id; verify's summary of the
                    // chain is an object, and stays.
                    || (k == "chain" && value.is_string())
                {
                    *value = Value::String("<volatile>".into());
                } else {
                    blank_volatile(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(blank_volatile),
        _ => {}
    }
}

/// The session: a vault built from images, every inspection, failovers in each format, the
/// lifecycle commands, object storage, and the refusals.
fn script(s: &mut Session) {
    s.write("os.raw", &image(4 * MIB, 1));
    s.run(&[
        "init",
        "V",
        "--block-size",
        "64KiB",
        "--segment-size",
        "1MiB",
    ]);
    s.run(&["disk", "add", "V", "os", "--from", "os.raw", "--json"]);
    s.run(&["disk", "add", "V", "data", "--size", "2MiB", "--json"]);
    s.run(&["point", "V", "--label", "first", "--json"]);
    for round in 2..=4u8 {
        let mut os = image(4 * MIB, 1);
        let start = usize::from(round) * 300 * 1024;
        os[start..start + 200 * 1024].fill(round * 11);
        s.write("os.raw", &os);
        s.run(&["ingest", "V", "os", "--from", "os.raw", "--json"]);
        let label = format!("round-{round}");
        if round == 3 {
            s.run(&[
                "point",
                "V",
                "--app-consistent",
                "--label",
                &label,
                "--json",
            ]);
        } else {
            s.run(&["point", "V", "--label", &label, "--json"]);
        }
    }
    for cmd in ["points", "inspect", "verify", "checkpoint", "dump"] {
        s.run(&[cmd, "V", "--json"]);
    }
    s.run(&["dump", "V", "--segment", "1", "--json"]);
    s.run(&["bench", "resolve", "V", "--json"]);
    s.run(&["failover", "V", "--point", "1", "--out", "f1", "--json"]);
    s.run(&[
        "failover", "V", "--latest", "--out", "fv", "--format", "vhd", "--json",
    ]);
    s.run(&[
        "failover", "V", "--point", "2", "--out", "fq", "--format", "qcow2", "--json",
    ]);
    s.run(&["failover", "V", "--point", "1", "--out", "f1", "--json"]);
    s.run(&[
        "failover", "V", "--point", "1", "--out", "f1", "--force", "--json",
    ]);
    s.run(&["failover", "V", "--point", "99", "--out", "f99", "--json"]);
    s.run(&[
        "failover", "nowhere", "--point", "1", "--out", "f0", "--json",
    ]);
    s.run(&["retention", "V", "--json"]);
    s.run(&["retention", "V", "--window", "72h", "--pin", "2", "--json"]);
    s.run(&["prune", "V", "--keep-last", "2", "--dry-run", "--json"]);
    s.run(&[
        "test-failover",
        "V",
        "--point",
        "2",
        "--out",
        "tf",
        "--json",
    ]);
    s.run(&["prune", "V", "--keep-last", "1", "--json"]);
    s.run(&["test-failover", "V", "--cleanup", "--json"]);
    s.run(&["prune", "V", "--keep-last", "2", "--json"]);
    s.run(&["points", "V", "--json"]);
    s.run(&["remote", "show", "V", "--json"]);
    s.run(&["sync", "V", "--json"]);
    remote(s);
    s.run(&[
        "complete-migration",
        "V",
        "--out",
        "mig",
        "--dry-run",
        "--json",
    ]);
    s.run(&[
        "complete-migration",
        "V",
        "--out",
        "mig",
        "--latest",
        "--json",
    ]);
    s.run(&["point", "V", "--json"]);
    s.run(&["ingest", "V", "os", "--from", "os.raw", "--json"]);
    s.run(&["points", "V", "--json"]);
    s.run(&["verify", "V", "--json"]);
    damaged(s);
    s.run(&[
        "bench",
        "write",
        "B",
        "--total",
        "4MiB",
        "--block",
        "256KiB",
        "--point-every",
        "1MiB",
        "--json",
    ]);
    s.run(&["points", "B", "--json"]);
    s.run(&["inspect", "nowhere", "--json"]);
    s.run(&["point", "V", "--bogus"]);
}

/// A remote on s3s-fs: add, sync, show, fail over from the URL.
fn remote(s: &mut Session) {
    let url = s
        .env
        .iter()
        .find(|(k, _)| k == "GOLDEN_URL")
        .unwrap()
        .1
        .clone();
    s.run(&["remote", "add", "V", &url]);
    s.run(&["sync", "V", "--seal", "--json"]);
    s.run(&["remote", "show", "V", "--json"]);
    s.run(&["sync", "V", "--json"]);
    s.run(&["failover", &url, "--latest", "--out", "fr", "--json"]);
    s.run(&["points", &url, "--json"]);
}

/// A vault with one flipped journal byte: verify reports damage, exit 2.
fn damaged(s: &mut Session) {
    s.run(&["init", "D", "--block-size", "64KiB"]);
    s.run(&["disk", "add", "D", "os", "--from", "os.raw", "--json"]);
    s.run(&["point", "D", "--json"]);
    let seg = s.dir.join("D/journal");
    let mut names: Vec<_> = std::fs::read_dir(&seg)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let first = &names[0];
    let mut bytes = std::fs::read(first).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(first, bytes).unwrap();
    s.run(&["verify", "D", "--json"]);
    s.run(&["failover", "D", "--latest", "--out", "fd", "--json"]);
}

#[test]
fn every_json_output_and_exit_code_matches_the_golden_transcript() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let server = S3Server::start().expect("s3s-fs started (scripts/setup.sh installs it)");
    let endpoint = server.endpoint();
    let port = endpoint.rsplit(':').next().unwrap_or_default().to_owned();
    let mut env = server.env();
    env.push(("GOLDEN_URL".into(), server.url("golden")));
    let mut session = Session {
        dir: tmp.path().canonicalize().unwrap(),
        env,
        port,
        transcript: String::new(),
    };
    script(&mut session);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("REPLOG_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &session.transcript).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&golden)
        .unwrap_or_else(|e| panic!("{}: {e} (bless it with REPLOG_BLESS=1)", golden.display()));
    if expected != session.transcript {
        let got = golden.with_extension("got.txt");
        std::fs::write(&got, &session.transcript).unwrap();
        let first = expected
            .lines()
            .zip(session.transcript.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(
                expected
                    .lines()
                    .count()
                    .min(session.transcript.lines().count()),
            );
        panic!(
            "the CLI's output differs from {} from line {}: see `diff {} {}`",
            golden.display(),
            first + 1,
            golden.display(),
            got.display()
        );
    }
}
