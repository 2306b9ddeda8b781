//! What the standalone test binaries of the tool share: running the `replog` binary.

use std::process::{Command, Output};

/// Runs `replog ARGS` to its end.
pub fn replog(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replog"))
        .args(args)
        .output()
        .expect("replog starts")
}

/// Runs `replog ARGS`, which must succeed; its standard output.
pub fn replog_ok(args: &[&str]) -> String {
    let out = replog(args);
    assert!(
        out.status.success(),
        "replog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `replog ARGS`, which must succeed and print JSON.
pub fn json_of(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&replog_ok(args)).unwrap()
}
