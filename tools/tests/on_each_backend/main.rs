//! Every test of the `replog` binary, run once per storage backend in one test binary:
//! `suite.rs` is compiled twice, as the module `auto` (whose tests start `replog` with
//! `REPLOG_IO_BACKEND=auto`: io_uring where the kernel allows it, else plain syscalls) and as
//! `sync` (`REPLOG_IO_BACKEND=sync`, the plain-syscall backend). Each test file starts the
//! binary with `super::replog_command()`, and a test that pins a backend of its own
//! (`--backend`, or the variable) overrides the module's.
//!
//! One binary instead of a second run of the whole suite with the variable forced: a test's
//! backend is part of its name (`sync::nbd::...`), both run side by side under cargo-nextest,
//! and the files are built and linked once.

// Each test file is compiled once per backend, on purpose: that is what this binary is.
#![allow(clippy::duplicate_mod)]

use std::process::Command;

#[path = "suite.rs"]
mod auto;
#[path = "suite.rs"]
mod sync;

/// The variable that picks the binary's storage backend (`replog_io::BACKEND_ENV`).
const BACKEND_ENV: &str = "REPLOG_IO_BACKEND";

/// A `replog` command whose storage backend is `backend`.
fn replog_command(backend: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_replog"));
    cmd.env(BACKEND_ENV, backend);
    cmd
}
