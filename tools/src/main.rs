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
        // A read through the storage seam of a remote object that is damaged (a chunk or a map
        // that does not hash to its key, a chunk cut short) arrives as the reader's I/O error
        // with the remote error inside.
        let damaged = e.kind() == replog_reader::ReadErrorKind::Damaged
            || replog_remote::RemoteError::find_in(&e).is_some_and(|r| r.is_damage());
        Failure {
            message: e.to_string(),
            damaged,
            vault_relative: e.path().is_some_and(replog_format::layout::is_vault_file),
        }
    }
}

impl From<replog_remote::RemoteError> for Failure {
    fn from(e: replog_remote::RemoteError) -> Failure {
        let damaged = e.is_damage()
            || matches!(&e, replog_remote::RemoteError::Read(r)
                if r.kind() == replog_reader::ReadErrorKind::Damaged);
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
    // SIGPIPE stays ignored (Rust's default): a write to a socket whose peer went away must
    // fail that request, which is retried or reported, never kill the process in silence.
    quiet_exit_on_closed_stdout();
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

/// `println!` panics when stdout is a pipe whose reader has gone (`replog points V | head -1`).
/// That is not a failure of the command: whoever reads stdout has read all it wanted. So a
/// panic raised by the standard library's printing while stdout has no reader left ends the
/// process at once, quietly, with exit 0, and any other panic is reported as usual.
fn quiet_exit_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_stdio = info
            .location()
            .is_some_and(|l| l.file().ends_with("io/stdio.rs"));
        if in_stdio && stdout_reader_gone() {
            std::process::exit(i32::from(EXIT_OK));
        }
        default(info);
    }));
}

/// Whether stdout is a pipe or socket with no reader left: `poll` reports `POLLERR` on a pipe's
/// write end once its read end is closed.
fn stdout_reader_gone() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: `fd` is a valid pollfd for the duration of the call, and the count is 1.
    let n = unsafe { libc::poll(&mut fd, 1, 0) };
    n == 1 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}
