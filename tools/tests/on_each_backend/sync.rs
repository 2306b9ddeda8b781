//! The CLI tests with `replog` on the plain-syscall backend.

use std::process::Command;

use super::BACKEND_ENV;

/// The backend of every `replog` these tests start.
const BACKEND: &str = "sync";

/// A `replog` command on [`BACKEND`].
fn replog_command() -> Command {
    super::replog_command(BACKEND)
}

#[path = "bench_write.rs"]
mod bench_write;
#[path = "cli.rs"]
mod cli;
#[path = "formats.rs"]
mod formats;
#[path = "kill_nine.rs"]
mod kill_nine;
#[path = "lifecycle.rs"]
mod lifecycle;
#[path = "nbd.rs"]
mod nbd;
#[path = "review_failover.rs"]
mod review_failover;
#[path = "review_import.rs"]
mod review_import;
#[path = "review_messages.rs"]
mod review_messages;
#[path = "review_nbd.rs"]
mod review_nbd;
#[path = "review_vault.rs"]
mod review_vault;
