//! Where a vault is, and the one place that decides how to reach it: a directory whose files are
//! all local, a directory whose sync evicted files to its remote (tiered: local first, the remote
//! for the rest), or the URL of a remote copy alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::remote::{is_remote_url, looks_like_url};
use replog_io::Storage;
use replog_remote::{CACHE_CHUNKS_DEFAULT, Remote, RemoteOptions};
use replog_writer::Writer;

use crate::error::{Result, VaultError, VaultErrorKind};

/// Where a vault is, as the operator named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A directory on this machine.
    Dir(PathBuf),
    /// The URL of a remote copy (`s3://bucket/prefix`, `az://container/prefix`).
    Url(String),
}

impl Location {
    /// The location `given` names: a URL of a scheme replog reads, or else a directory.
    pub fn of(given: &Path) -> Location {
        match given.to_str().filter(|s| is_remote_url(s)) {
            Some(url) => Location::Url(url.to_owned()),
            None => Location::Dir(given.to_path_buf()),
        }
    }

    /// The location as the operator wrote it, for messages.
    pub fn display(&self) -> String {
        match self {
            Location::Dir(d) => d.display().to_string(),
            Location::Url(u) => u.clone(),
        }
    }
}

/// What opening a vault needs besides its location.
#[derive(Clone, Debug)]
pub struct Access {
    /// The local storage backend (io_uring, plain syscalls, the simulator).
    pub storage: Arc<dyn Storage>,
    /// How to reach object storage.
    pub remote: RemoteOptions,
    /// Read an older remote manifest when newer ones are missing or damaged (and say so).
    pub allow_older: bool,
}

impl Access {
    /// Local access only, with default remote options.
    pub fn local(storage: Arc<dyn Storage>) -> Access {
        Access {
            storage,
            remote: RemoteOptions::default(),
            allow_older: false,
        }
    }
}

/// How a vault's files are reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tier {
    /// A local directory (whose evicted files, if any, are read from its remote).
    Local,
    /// A remote copy alone, as of one of its remote manifests.
    Remote {
        /// The remote manifest read.
        manifest_seq: u64,
        /// When it was made.
        manifest_time_unix_ns: i64,
    },
}

/// A vault, opened where it is: the storage and directory every operation reads and writes it
/// through.
#[derive(Clone, Debug)]
pub struct Vault {
    location: Location,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    tier: Tier,
    warning: Option<String>,
}

impl Vault {
    /// Opens the vault at `location`, holding the default number of remote chunks in memory.
    pub fn open(location: &Location, access: &Access) -> Result<Vault> {
        Vault::open_with_cache(location, access, CACHE_CHUNKS_DEFAULT)
    }

    /// Opens the vault at `location`; a remote copy holds at most `cache_chunks` chunks in
    /// memory. A local vault with a remote reads its evicted files from it (connecting only
    /// when one is read). A path that looks like a URL of a scheme replog does not read
    /// (`gs://b`, `s3:/x`) and is no directory is refused as such.
    pub fn open_with_cache(
        location: &Location,
        access: &Access,
        cache_chunks: usize,
    ) -> Result<Vault> {
        match location {
            Location::Url(url) => {
                let remote = Arc::new(Remote::open(url, &access.remote)?);
                let rv = replog_remote::open_remote_with(
                    remote,
                    access.storage.clone(),
                    cache_chunks,
                    access.allow_older,
                )?;
                Ok(Vault {
                    location: location.clone(),
                    storage: rv.storage,
                    dir: rv.root,
                    tier: Tier::Remote {
                        manifest_seq: rv.manifest_seq,
                        manifest_time_unix_ns: rv.manifest_time_unix_ns,
                    },
                    warning: rv.older_warning,
                })
            }
            Location::Dir(dir) => {
                if let Some(s) = dir.to_str()
                    && looks_like_url(s)
                    && !dir.exists()
                {
                    replog_remote::check_url(s)?;
                }
                let storage =
                    replog_remote::storage_for_vault(access.storage.clone(), dir, &access.remote)?;
                Ok(Vault {
                    location: location.clone(),
                    storage,
                    dir: dir.clone(),
                    tier: Tier::Local,
                    warning: None,
                })
            }
        }
    }

    /// Where the vault is.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The storage its files are read and written through.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The directory its files are under (for a remote copy, a made-up one: its URL).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How its files are reached.
    pub fn tier(&self) -> &Tier {
        &self.tier
    }

    /// A sentence for the operator when an older remote manifest was read in place of a newer
    /// one that is missing or damaged (only with [`Access::allow_older`]).
    pub fn older_manifest_warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    /// A read-only snapshot of the vault as it is now.
    pub fn snapshot(&self) -> Result<replog_reader::Vault> {
        Ok(replog_reader::Vault::open(self.storage.clone(), &self.dir)?)
    }

    /// The vault's writer, recovering from a crash if one interrupted the last. A remote copy
    /// is read-only.
    pub fn writer(&self) -> Result<Writer> {
        if let Location::Url(url) = &self.location {
            return Err(VaultError::new(
                VaultErrorKind::InvalidRequest,
                format!("{url} is a remote copy, which is read-only: write to the local vault"),
            ));
        }
        Ok(Writer::open(self.storage.clone(), &self.dir)?)
    }
}
