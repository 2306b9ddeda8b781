//! What every command shares: the [`Ctx`] (I/O backend, remote options) that opens vaults, and
//! opening a writer or a source image with the messages an operator needs. Every command module
//! may use this one; it uses none of them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::ValueEnum;
use replog_io::Storage;
use replog_remote::{CACHE_CHUNKS_DEFAULT, RemoteOptions};
use replog_vault::{Access, Location, Vault};
use replog_writer::{Compression, Writer};

use crate::Failure;
use crate::cli::{Backend, Cli, CompressionArg};

/// What every command shares: the I/O backend and how to reach a remote.
pub struct Ctx {
    pub storage: Arc<dyn Storage>,
    remote: RemoteOptions,
    allow_older: bool,
}

impl Ctx {
    /// The context the command line asks for.
    pub fn from_cli(cli: &Cli) -> Result<Ctx, Failure> {
        Ok(Ctx {
            storage: storage(cli.backend)?,
            remote: RemoteOptions {
                config: cli.remote_options.clone(),
                retries: cli.remote_retries,
                retry_timeout: Duration::from_secs(60),
                ..RemoteOptions::default()
            },
            allow_older: cli.allow_older,
        })
    }

    fn access(&self) -> Access {
        Access {
            storage: self.storage.clone(),
            remote: self.remote.clone(),
            allow_older: self.allow_older,
        }
    }

    /// Opens the vault `given` names (a directory, or a remote copy's URL), warning on stderr
    /// when a remote copy is read as of an older manifest.
    pub fn open(&self, given: &Path) -> Result<Vault, Failure> {
        self.open_with_cache(given, CACHE_CHUNKS_DEFAULT)
    }

    /// [`Ctx::open`], holding at most `cache_chunks` remote chunks in memory.
    pub fn open_with_cache(&self, given: &Path, cache_chunks: usize) -> Result<Vault, Failure> {
        let vault = Vault::open_with_cache(&Location::of(given), &self.access(), cache_chunks)?;
        if let Some(warning) = vault.older_manifest_warning() {
            eprintln!("replog: warning: {warning}");
        }
        Ok(vault)
    }

    /// The remote options from the command line.
    pub fn remote(&self) -> &RemoteOptions {
        &self.remote
    }
}

/// The storage backend chosen on the command line or by `REPLOG_IO_BACKEND`.
pub fn storage(backend: Backend) -> Result<Arc<dyn Storage>, Failure> {
    let name = backend.to_possible_value().expect("no backend is skipped");
    let name = name.get_name();
    replog_io::backend(name)
        .map_err(|e| Failure::new(format!("the {name} I/O backend is unavailable: {e}")))
}

/// Nanoseconds since the Unix epoch of the RFC 3339 time `t`, which the operator gave as
/// `{flag}{t:?}` (`--at "..."`).
pub fn parse_time(flag: &str, t: &str) -> Result<i64, Failure> {
    let ts: jiff::Timestamp = t
        .parse()
        .map_err(|e| Failure::new(format!("{flag}{t:?} is not an RFC 3339 time: {e}")))?;
    i64::try_from(ts.as_nanosecond())
        .map_err(|_| Failure::new(format!("{flag}{t:?} is out of range")))
}

pub fn compression_of(c: CompressionArg) -> Compression {
    match c {
        CompressionArg::None => Compression::None,
        CompressionArg::Lz4 => Compression::Lz4,
    }
}

/// Opens the vault for writing and tells the operator what recovery did, if anything.
pub fn open_writer(storage: Arc<dyn Storage>, vault: &Path) -> Result<Writer, Failure> {
    Ok(reported(Writer::open(storage, vault)?))
}

/// Tells the operator what opening `w` recovered, if anything.
pub fn reported(w: Writer) -> Writer {
    let r = w.recovery_report();
    if let Some((path, offset, bytes, kept)) = &r.torn_tail {
        eprintln!(
            "replog: recovered from an interrupted write: cut {bytes} unacknowledged bytes at byte {offset} of {} (kept in {})",
            path.display(),
            kept.display()
        );
    }
    if r.completed_rotation {
        eprintln!("replog: completed an interrupted segment rotation");
    }
    w
}
