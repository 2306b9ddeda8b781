//! `replog`: the command-line tool for replog vaults. A thin layer over the library crates:
//! parsing, output and exit codes live here, everything else in `replog-writer` and
//! `replog-reader`.
//!
//! Exit codes: 0 success; 1 the operation failed (I/O error, invalid input, refused); 2 damage
//! was found (`verify`, or a checksum failure during a read); 64 the command line is invalid.

use std::process::ExitCode;

use clap::Parser;

mod bench;
mod bench_resolve;
mod checkpoints;
mod cli;
mod commands;
mod demo;
mod docs;
mod export;
mod import;
mod lifecycle_commands;
mod nbd;
mod output;
mod read_commands;
mod remote_commands;
mod torture;

/// Success.
const EXIT_OK: u8 = 0;
/// The operation failed.
const EXIT_FAILED: u8 = 1;
/// Damage was found.
const EXIT_DAMAGED: u8 = 2;
/// The command line is invalid (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// A failure the tool reports: a sentence, and whether it means damage.
#[derive(Debug)]
struct Failure {
    message: String,
    damaged: bool,
    /// The message names a vault file relative to the vault (`journal/….seg`, `MANIFEST`), as
    /// the reader's errors do; the vault is named in front of it when reported.
    vault_relative: bool,
}

impl From<replog_writer::WriteError> for Failure {
    fn from(e: replog_writer::WriteError) -> Failure {
        let damaged = e.kind == replog_writer::WriteErrorKind::Damaged;
        Failure {
            message: e.to_string(),
            damaged,
            vault_relative: false,
        }
    }
}

impl From<replog_reader::ReadError> for Failure {
    fn from(e: replog_reader::ReadError) -> Failure {
        let damaged = e.kind() == replog_reader::ReadErrorKind::Damaged;
        Failure {
            message: e.to_string(),
            damaged,
            vault_relative: e.path().is_some_and(replog_format::layout::is_vault_file),
        }
    }
}

impl From<replog_remote::RemoteError> for Failure {
    fn from(e: replog_remote::RemoteError) -> Failure {
        let damaged = matches!(e, replog_remote::RemoteError::Damaged { .. });
        Failure {
            message: e.to_string(),
            damaged,
            vault_relative: false,
        }
    }
}

impl Failure {
    /// Damage found: exit 2.
    fn damage(message: impl Into<String>) -> Failure {
        Failure {
            damaged: true,
            ..Failure::new(message)
        }
    }

    fn new(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            damaged: false,
            vault_relative: false,
        }
    }
}

type CmdResult = Result<u8, Failure>;

fn main() -> ExitCode {
    reset_sigpipe();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("replog: {}", f.message);
            ExitCode::from(if f.damaged { EXIT_DAMAGED } else { EXIT_FAILED })
        }
    }
}

/// Restores the default SIGPIPE action, so `replog dump | head` ends quietly like other Unix
/// tools instead of failing on a closed pipe.
fn reset_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid action
    // for SIGPIPE and no Rust code relies on SIGPIPE being ignored.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
