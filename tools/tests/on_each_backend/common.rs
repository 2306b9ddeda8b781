//! What the CLI test files share: running `replog` on the module's backend and reading what it
//! printed, paths as arguments, and judging the runs of the qemu tools.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::OnceLock;

/// A path as a command-line argument; temporary directories have UTF-8 names.
pub(super) fn s(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// What one run of `replog` printed and how it exited.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) code: i32,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

/// What `out` printed, with any byte that is not UTF-8 replaced.
impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().expect("replog exits, it is not killed"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// What `out` printed, which must be UTF-8.
    pub(super) fn utf8(out: Output) -> Run {
        Run {
            code: out.status.code().expect("replog exits, it is not killed"),
            stdout: String::from_utf8(out.stdout).expect("replog prints UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("replog prints UTF-8"),
        }
    }

    /// Asserts that `replog ARGS` exited with `code`, showing everything it printed if not.
    pub(super) fn expect_code(self, code: i32, args: &[&str]) -> Run {
        assert_eq!(
            self.code,
            code,
            "`replog {}` exited {} (expected {code})\nstdout:\n{}\nstderr:\n{}",
            args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// Runs `replog ARGS`, returning the output whatever the exit code.
pub(super) fn replog_run(args: &[&str]) -> Output {
    super::replog_command()
        .args(args)
        .output()
        .expect("the replog binary runs")
}

/// Runs `replog ARGS`, whose output must be UTF-8.
pub(super) fn run(args: &[&str]) -> Run {
    Run::utf8(replog_run(args))
}

/// Runs `replog ARGS`, which must exit with `code`.
pub(super) fn expect(code: i32, args: &[&str]) -> Run {
    run(args).expect_code(code, args)
}

/// Runs `replog ARGS`, which must succeed; returns its stdout.
pub(super) fn replog_ok(args: &[&str]) -> String {
    expect(0, args).stdout
}

/// Starts `replog ARGS` (a server) with stdout piped and stderr into `stderr_file`, and reads
/// stdout up to its `listening on ...` line: returns the child, its stdout and every line it
/// printed until then. A server that exits before it listens fails the test, saying how it
/// exited and what it printed.
pub(super) fn spawn_until_listening(
    args: &[&str],
    stderr_file: &Path,
) -> (Child, BufReader<ChildStdout>, Vec<String>) {
    let err = std::fs::File::create(stderr_file).expect("the stderr file is created");
    let mut child = super::replog_command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("the server starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut banner = Vec::new();
    loop {
        let mut line = String::new();
        let n = stdout
            .read_line(&mut line)
            .expect("the server's stdout reads");
        if n == 0 {
            let status = child.wait().expect("the server is waited for");
            panic!(
                "`replog {}` exited ({status}) before listening; it printed {banner:?} and on stderr:\n{}",
                args.join(" "),
                std::fs::read_to_string(stderr_file).unwrap_or_default()
            );
        }
        let done = line.starts_with("listening on ");
        banner.push(line.trim_end().to_owned());
        if done {
            break;
        }
    }
    (child, stdout, banner)
}

/// The arguments of `replog failover VAULT --latest --out OUT`, then `more`.
pub(super) fn failover_latest<'a>(
    vault: &'a Path,
    out: &'a Path,
    more: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["failover", s(vault), "--latest", "--out", s(out)];
    args.extend(more);
    args
}

/// `replog init VAULT` with small segments and blocks (64 KiB and 4 KiB), so a few writes fill
/// several segments.
pub(super) fn init_small(vault: &Path) {
    let args = [
        "init",
        s(vault),
        "--segment-size",
        "64KiB",
        "--block-size",
        "4KiB",
    ];
    expect(0, &args);
}

/// Fails the test, saying to run `scripts/setup.sh`, unless every tool in `tools` runs
/// (`TOOL --version` succeeds). `found` keeps the answer, so the tools are asked once.
pub(super) fn require_tools(found: &OnceLock<Result<(), String>>, tools: &[&str]) {
    let found = found.get_or_init(|| {
        for tool in tools {
            match Command::new(tool).arg("--version").output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => return Err(format!("`{tool} --version` exited with {}", out.status)),
                Err(e) => return Err(format!("{tool} cannot be run: {e}")),
            }
        }
        Ok(())
    });
    if let Err(why) = found {
        panic!(
            "{why}. These tests need {}: run scripts/setup.sh to install them.",
            tools.join(", ")
        );
    }
}

/// Runs `NAME ARGS` to its end, whatever its exit code; a program that cannot start fails the
/// test.
pub(super) fn run_program(name: &str, args: &[&str]) -> Output {
    Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{name} cannot be run: {e}"))
}

/// Asserts that `TOOL ARGS` succeeded. Older qemu-io versions exit 0 when a command fails, so
/// what it printed counts too.
pub(super) fn assert_tool_success(tool: &str, args: &[&str], out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let failed = !out.status.success() || stdout.contains("failed") || stderr.contains("failed");
    assert!(
        !failed,
        "`{tool} {}` failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        args.join(" "),
        out.status
    );
}

/// What `qemu-img ARGS` (a `compare`) found: whether the images hold the same bytes (exit 0)
/// or not (exit 1); any other exit fails the test.
pub(super) fn compared(args: &[&str], out: &Output) -> bool {
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        _ => panic!(
            "`qemu-img {}` could not compare: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The names in `dir`, sorted.
pub(super) fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the directory lists")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    names.sort();
    names
}
