//! Running `qemu-img`, for the image formats replog does not write or read itself.
//!
//! qemu-img is found on `PATH`. It is optional: raw images and fixed VHDs never need it, and
//! every other format says clearly that it does when it is missing.

use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::{ImageError, ImageErrorKind};

/// The program.
const QEMU_IMG: &str = "qemu-img";
/// What to do when it is missing.
const INSTALL_HINT: &str = "Debian: apt-get install qemu-utils";

/// Whether `qemu-img` runs; when it does not, an error saying why:
/// [`ImageErrorKind::ToolMissing`] when it cannot be started, [`ImageErrorKind::ToolFailed`]
/// when `qemu-img --version` fails.
pub fn check() -> Result<(), ImageError> {
    match Command::new(QEMU_IMG).arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(ImageError::new(
            ImageErrorKind::ToolFailed,
            format!(
                "`{QEMU_IMG} --version` failed: {} ({})",
                stderr_of(&out),
                out.status
            ),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(ImageError::new(
            ImageErrorKind::ToolMissing,
            format!("{QEMU_IMG} is not installed"),
        )
        .caused_by(e)),
        Err(e) => Err(not_run(e)),
    }
}

/// Fails with a message naming `what` needs qemu-img and how to install it, when it does not
/// run.
pub fn require(what: &str, native: &str) -> Result<(), ImageError> {
    check().map_err(|why| {
        ImageError::new(
            ImageErrorKind::ToolMissing,
            format!("{what} needs {QEMU_IMG} ({INSTALL_HINT}); {native} ({why})"),
        )
        .caused_by(why)
    })
}

/// How `info` treats an image another process has open for writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// Take qemu's shared lock: fail on an image a running VM writes.
    Shared,
    /// `-U`: read the header anyway (format detection of a raw image a VM has open).
    ForceShare,
}

/// `qemu-img info --output=json [-U] [-f FORMAT] [--backing-chain] IMAGE`; with
/// `--backing-chain` qemu prints an array, one object per image of the chain, and fails when one
/// cannot be opened. The error's sentence is qemu-img's own message.
pub fn info(
    image: &Path,
    format: Option<&str>,
    backing_chain: bool,
    lock: Lock,
) -> Result<Value, ImageError> {
    let mut cmd = Command::new(QEMU_IMG);
    cmd.args(["info", "--output=json"]);
    if lock == Lock::ForceShare {
        cmd.arg("-U");
    }
    if let Some(f) = format {
        cmd.args(["-f", f]);
    }
    if backing_chain {
        cmd.arg("--backing-chain");
    }
    cmd.arg(image);
    let out = run(&mut cmd)?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        ImageError::new(
            ImageErrorKind::Unsupported,
            format!("{QEMU_IMG} info printed something other than JSON: {e}"),
        )
        .caused_by(e)
    })
}

/// `qemu-img check -f FORMAT IMAGE`: `Ok` when the image is consistent, has only leaked
/// clusters (harmless to a reader), or its format has no check; the error names what is wrong
/// ([`ImageErrorKind::Corrupt`] when qemu-img found corruption).
pub fn check_image(image: &Path, format: &str) -> Result<(), ImageError> {
    let out = Command::new(QEMU_IMG)
        .args(["check", "--output=json", "-f", format])
        .arg(image)
        .output()
        .map_err(not_run)?;
    match out.status.code() {
        // 0: consistent; 3: leaked clusters only; 63: the format has no check.
        Some(0 | 3 | 63) => Ok(()),
        Some(2) => {
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let found = report["corruptions"]
                .as_u64()
                .map_or_else(|| "some".to_owned(), |n| n.to_string());
            Err(ImageError::new(
                ImageErrorKind::Corrupt,
                format!("`{QEMU_IMG} check` found {found} corrupted places"),
            ))
        }
        _ => Err(ImageError::new(
            ImageErrorKind::ToolFailed,
            format!(
                "`{QEMU_IMG} check` could not complete: {} ({})",
                stderr_of(&out),
                out.status
            ),
        )),
    }
}

/// How `convert` treats the output's durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    /// qemu-img's default (writeback): it flushes the output before it exits.
    Flush,
    /// `-t unsafe`: no flush, for output that need not survive a crash.
    Unsafe,
}

/// `qemu-img convert -q -f FROM -O TO [-o OPTIONS] SRC DST`. Zeros and holes of the source stay
/// unallocated in the output (qemu-img's default `-S 4k`). The error's sentence is qemu-img's
/// message.
pub fn convert(
    src: &Path,
    src_format: &str,
    dst: &Path,
    dst_format: &str,
    options: Option<&str>,
    cache: Cache,
) -> Result<(), ImageError> {
    let mut cmd = Command::new(QEMU_IMG);
    cmd.args(["convert", "-q", "-f", src_format, "-O", dst_format]);
    if let Some(o) = options {
        cmd.args(["-o", o]);
    }
    if cache == Cache::Unsafe {
        cmd.args(["-t", "unsafe"]);
    }
    cmd.arg(src).arg(dst);
    run(&mut cmd).map(drop)
}

/// Runs a qemu-img command; on failure, its message (stderr, on one line) and exit status.
fn run(cmd: &mut Command) -> Result<Output, ImageError> {
    let out = cmd.output().map_err(|e| match e.kind() {
        ErrorKind::NotFound => ImageError::new(
            ImageErrorKind::ToolMissing,
            format!("{QEMU_IMG} is not installed ({INSTALL_HINT})"),
        )
        .caused_by(e),
        _ => not_run(e),
    })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(ImageError::new(
            ImageErrorKind::ToolFailed,
            format!("{} ({QEMU_IMG} {})", stderr_of(&out), out.status),
        ))
    }
}

/// qemu-img could not be started for another reason than its absence.
fn not_run(e: std::io::Error) -> ImageError {
    ImageError::new(
        ImageErrorKind::ToolMissing,
        format!("{QEMU_IMG} cannot be run: {e}"),
    )
    .caused_by(e)
}

/// qemu-img's error output, on one line.
fn stderr_of(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        "no message".to_owned()
    } else {
        line
    }
}
