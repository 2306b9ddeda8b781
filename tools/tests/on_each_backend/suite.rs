//! The CLI tests on one backend: the one this module is named after (`auto` or `sync`, see
//! `main.rs`), which every `replog` they start runs on.

use std::process::Command;

use super::BACKEND_ENV;

/// The backend of every `replog` these tests start: the name of this module.
fn backend() -> &'static str {
    module_path!()
        .rsplit("::")
        .next()
        .expect("a module path names its module")
}

/// A `replog` command on [`backend()`].
fn replog_command() -> Command {
    super::replog_command(backend())
}

#[path = "bench_write.rs"]
mod bench_write;
#[path = "cli.rs"]
mod cli;
#[path = "common.rs"]
mod common;
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
