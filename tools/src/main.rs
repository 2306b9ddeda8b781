//! `replog`: the command-line tool for replog vaults. A thin layer over the library crates: the
//! clap definitions (`cli.rs`), one dispatch table (`commands.rs`), rendering as tables or JSON,
//! progress bars and exit codes live here; the work is `replog-vault`'s and the crates below it.
//! It must not decode a format structure or match an error by its message.
//!
//! Exit codes are one table, in `exit.rs`: each kind of failure maps to one code.

use std::process::ExitCode;

use clap::Parser;

mod bench;
mod bench_resolve;
mod capture_commands;
mod cli;
mod commands;
mod context;
mod demo;
mod docs;
mod key_commands;
mod lifecycle_commands;
mod nbd;
mod output;
mod read_commands;
mod remote_commands;
mod replicate_commands;
mod torture;
mod write_commands;

mod exit;

pub(crate) use exit::{EXIT_DAMAGED, EXIT_OK};
use exit::{EXIT_USAGE, exit_code};
use replog_vault::{VaultError, VaultErrorKind};

/// A failure the tool reports: a sentence, and the kind of failure, which picks the exit code.
#[derive(Debug)]
struct Failure {
    message: String,
    kind: VaultErrorKind,
    /// The message names a vault file relative to the vault (`journal/….seg`, `MANIFEST`), as
    /// the reader's errors do; the vault is named in front of it when reported.
    vault_relative: bool,
}

impl From<VaultError> for Failure {
    fn from(e: VaultError) -> Failure {
        Failure {
            message: e.to_string(),
            kind: e.kind(),
            vault_relative: e
                .read_error()
                .and_then(replog_reader::ReadError::path)
                .is_some_and(replog_format::layout::is_vault_file),
        }
    }
}

/// The errors of the crates below become failures through the vault's error, which maps their
/// kinds once. A remote's message names the remote object, never a vault-relative file: its
/// source is no reader's error, so it is not named relative to the vault.
macro_rules! failure_via_vault_error {
    ($($error:ty),*) => {$(
        impl From<$error> for Failure {
            fn from(e: $error) -> Failure {
                VaultError::from(e).into()
            }
        }
    )*};
}

failure_via_vault_error!(
    replog_writer::WriteError,
    replog_reader::ReadError,
    replog_remote::RemoteError
);

impl Failure {
    /// A request the tool refuses as given (a missing option, a value out of range): exit 1.
    fn new(message: impl Into<String>) -> Failure {
        Failure::of_kind(VaultErrorKind::InvalidRequest, message)
    }

    /// A failure of `kind`, which picks the exit code.
    fn of_kind(kind: VaultErrorKind, message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            kind,
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
            ExitCode::from(exit_code(f.kind))
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
