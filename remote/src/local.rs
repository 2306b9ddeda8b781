//! The remote state a local vault keeps in `remote/`: the configuration, the last confirmed
//! remote manifest, and the lock the one `sync` holds.
//!
//! Every file is read, written, renamed and locked through the vault's [`Storage`], so the
//! simulator can crash a sync between any two of its steps here as anywhere else.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::header::VaultHeader;
use replog_format::remote::{
    REMOTE_CONFIG_FILE, REMOTE_DIR, REMOTE_LATEST_FILE, REMOTE_LOCK_FILE, RemoteConfig,
    RemoteManifest,
};
use replog_format::remote_lock::{REMOTE_IMMUTABLE_FILE, RemoteImmutability};
use replog_format::{VaultId, layout, vault_seed};
use replog_io::{File, LockMode, OpenMode, Storage, WriteAt};

use crate::error::{Refusal, RemoteError, Result};

/// A local vault's identity, read from its `VAULT`.
#[derive(Clone, Debug)]
pub struct LocalVault {
    /// The vault directory.
    pub dir: PathBuf,
    /// `VAULT`, byte for byte.
    pub header_bytes: Vec<u8>,
    /// Its id.
    pub vault_id: VaultId,
    /// Its CRC seed.
    pub seed: u32,
    /// What its files are read and written through.
    storage: Arc<dyn Storage>,
}

impl LocalVault {
    /// Reads `dir/VAULT` on the real filesystem (through plain syscalls).
    pub fn open(dir: &Path) -> Result<LocalVault> {
        LocalVault::open_in(Arc::new(replog_io::sync::SyncStorage::new()), dir)
    }

    /// Reads `dir/VAULT` through `storage`, which serves every file of `remote/` afterwards.
    pub fn open_in(storage: Arc<dyn Storage>, dir: &Path) -> Result<LocalVault> {
        let path = dir.join(layout::VAULT_FILE);
        let header_bytes = read_optional(storage.as_ref(), &path)?.ok_or_else(|| {
            Refusal::NotAVault.because(format!(
                "{} is not a replog vault: it has no VAULT file",
                dir.display()
            ))
        })?;
        let header = VaultHeader::decode(&header_bytes).map_err(|e| {
            RemoteError::local(
                &path,
                "decode",
                io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
            )
        })?;
        Ok(LocalVault {
            dir: dir.to_path_buf(),
            seed: vault_seed(&header.vault_id),
            vault_id: header.vault_id,
            header_bytes,
            storage,
        })
    }

    /// The storage its files go through.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// `remote/<name>`.
    pub fn remote_path(&self, name: &str) -> PathBuf {
        self.dir.join(REMOTE_DIR).join(name)
    }

    /// The remote configuration, if one was added.
    pub fn config(&self) -> Result<Option<RemoteConfig>> {
        let path = self.remote_path(REMOTE_CONFIG_FILE);
        let Some(bytes) = read_optional(self.storage.as_ref(), &path)? else {
            return Ok(None);
        };
        let config = RemoteConfig::decode(&bytes, self.seed).map_err(|e| decode_error(&path, e))?;
        if config.vault_id != self.vault_id {
            return Err(Refusal::OtherVault
                .because(format!("{}: belongs to another vault", path.display())));
        }
        Ok(Some(config))
    }

    /// The configuration, which must exist.
    pub fn required_config(&self) -> Result<RemoteConfig> {
        self.config()?.ok_or_else(|| {
            Refusal::NoRemote.because(format!(
                "{} has no remote: add one with `replog remote add {} s3://BUCKET/PREFIX`",
                self.dir.display(),
                self.dir.display()
            ))
        })
    }

    /// Writes the configuration atomically.
    pub fn write_config(&self, config: &RemoteConfig) -> Result<()> {
        self.write_atomic(REMOTE_CONFIG_FILE, &config.encode(self.seed))
    }

    /// The immutability setting (`remote/IMMUTABLE`), if the remote was added `--immutable`.
    pub fn immutability(&self) -> Result<Option<RemoteImmutability>> {
        let path = self.remote_path(REMOTE_IMMUTABLE_FILE);
        let Some(bytes) = read_optional(self.storage.as_ref(), &path)? else {
            return Ok(None);
        };
        let s =
            RemoteImmutability::decode(&bytes, self.seed).map_err(|e| decode_error(&path, e))?;
        if s.vault_id != self.vault_id {
            return Err(Refusal::OtherVault
                .because(format!("{}: belongs to another vault", path.display())));
        }
        Ok(Some(s))
    }

    /// Writes the immutability setting atomically.
    pub fn write_immutability(&self, setting: &RemoteImmutability) -> Result<()> {
        self.write_atomic(REMOTE_IMMUTABLE_FILE, &setting.encode(self.seed))
    }

    /// The last confirmed remote manifest, if a sync ever confirmed one.
    pub fn latest(&self) -> Result<Option<RemoteManifest>> {
        let path = self.remote_path(REMOTE_LATEST_FILE);
        let Some(bytes) = read_optional(self.storage.as_ref(), &path)? else {
            return Ok(None);
        };
        let m = RemoteManifest::decode(&bytes, self.seed).map_err(|e| decode_error(&path, e))?;
        Ok(Some(m))
    }

    /// Records `manifest` as the last confirmed one, atomically.
    pub fn write_latest(&self, manifest: &RemoteManifest) -> Result<()> {
        self.write_atomic(REMOTE_LATEST_FILE, &manifest.encode(self.seed))
    }

    /// Takes the sync lock, or says a sync is running. Held until the file is dropped; the
    /// kernel (or a simulated crash) lets it go when its holder dies.
    pub fn lock_sync(&self) -> Result<Arc<dyn File>> {
        let dir = self.dir.join(REMOTE_DIR);
        (self.storage)
            .create_dir_all(&dir)
            .map_err(|e| RemoteError::local(&dir, "create", e))?;
        let path = dir.join(REMOTE_LOCK_FILE);
        let f = (self.storage)
            .open_lock_file(&path)
            .map_err(|e| RemoteError::local(&path, "open", e))?;
        match f.lock(LockMode::Exclusive, false) {
            Ok(true) => Ok(f),
            Ok(false) => Err(Refusal::SyncRunning.because(format!(
                "another replog sync of {} is running (it holds {})",
                self.dir.display(),
                path.display()
            ))),
            Err(e) => Err(RemoteError::local(&path, "lock", e)),
        }
    }

    /// Writes `remote/<name>` through a temporary file, synced, renamed and the directory synced.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.dir.join(REMOTE_DIR);
        (self.storage)
            .create_dir_all(&dir)
            .map_err(|e| RemoteError::local(&dir, "create", e))?;
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        let f = (self.storage)
            .open(&tmp, OpenMode::CreateTruncate)
            .map_err(|e| RemoteError::local(&tmp, "create", e))?;
        f.write_batch(
            &[WriteAt {
                offset: 0,
                data: bytes,
            }],
            true,
        )
        .map_err(|e| RemoteError::local(&tmp, "write", e))?;
        drop(f);
        (self.storage)
            .rename(&tmp, &path)
            .map_err(|e| RemoteError::local(&path, "rename into place", e))?;
        sync_dir(self.storage.as_ref(), &dir)
    }
}

/// Syncs a directory, so the names in it are durable.
pub fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage
        .sync_dir(dir)
        .map_err(|e| RemoteError::local(dir, "sync the directory", e))
}

/// The whole file at `path`, or `None` if there is none.
fn read_optional(storage: &dyn Storage, path: &Path) -> Result<Option<Vec<u8>>> {
    let read = storage
        .open(path, OpenMode::Read)
        .and_then(|f| Ok(f.map()?.to_vec()));
    match read {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RemoteError::local(path, "read", e)),
    }
}

fn decode_error(path: &Path, e: replog_format::DecodeError) -> RemoteError {
    RemoteError::local(
        path,
        "decode",
        io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
    )
}
