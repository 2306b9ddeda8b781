//! The remote state a local vault keeps in `remote/`: the configuration, the last confirmed
//! remote manifest, and the lock the one `sync` holds.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use replog_format::header::VaultHeader;
use replog_format::remote::{
    REMOTE_CONFIG_FILE, REMOTE_DIR, REMOTE_LATEST_FILE, REMOTE_LOCK_FILE, RemoteConfig,
    RemoteManifest,
};
use replog_format::{VaultId, layout, vault_seed};

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
}

impl LocalVault {
    /// Reads `dir/VAULT`.
    pub fn open(dir: &Path) -> Result<LocalVault> {
        let path = dir.join(layout::VAULT_FILE);
        let header_bytes = fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Refusal::NotAVault.because(format!(
                    "{} is not a replog vault: it has no VAULT file",
                    dir.display()
                ))
            } else {
                RemoteError::local(&path, "read", e)
            }
        })?;
        let header = VaultHeader::decode(&header_bytes).map_err(|e| {
            RemoteError::local(
                &path,
                "decode",
                std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            )
        })?;
        Ok(LocalVault {
            dir: dir.to_path_buf(),
            seed: vault_seed(&header.vault_id),
            vault_id: header.vault_id,
            header_bytes,
        })
    }

    /// `remote/<name>`.
    pub fn remote_path(&self, name: &str) -> PathBuf {
        self.dir.join(REMOTE_DIR).join(name)
    }

    /// The remote configuration, if one was added.
    pub fn config(&self) -> Result<Option<RemoteConfig>> {
        let path = self.remote_path(REMOTE_CONFIG_FILE);
        let Some(bytes) = read_optional(&path)? else {
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

    /// The last confirmed remote manifest, if a sync ever confirmed one.
    pub fn latest(&self) -> Result<Option<RemoteManifest>> {
        let path = self.remote_path(REMOTE_LATEST_FILE);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let m = RemoteManifest::decode(&bytes, self.seed).map_err(|e| decode_error(&path, e))?;
        Ok(Some(m))
    }

    /// Records `manifest` as the last confirmed one, atomically.
    pub fn write_latest(&self, manifest: &RemoteManifest) -> Result<()> {
        self.write_atomic(REMOTE_LATEST_FILE, &manifest.encode(self.seed))
    }

    /// Takes the sync lock, or says a sync is running.
    pub fn lock_sync(&self) -> Result<fs::File> {
        let dir = self.dir.join(REMOTE_DIR);
        fs::create_dir_all(&dir).map_err(|e| RemoteError::local(&dir, "create", e))?;
        let path = dir.join(REMOTE_LOCK_FILE);
        let f = replog_io::sync::open_lock_file(&path)
            .map_err(|e| RemoteError::local(&path, "open", e))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(fs::TryLockError::WouldBlock) => Err(Refusal::SyncRunning.because(format!(
                "another replog sync of {} is running (it holds {})",
                self.dir.display(),
                path.display()
            ))),
            Err(fs::TryLockError::Error(e)) => Err(RemoteError::local(&path, "lock", e)),
        }
    }

    /// Writes `remote/<name>` through a temporary file, synced, renamed and the directory synced.
    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.dir.join(REMOTE_DIR);
        fs::create_dir_all(&dir).map_err(|e| RemoteError::local(&dir, "create", e))?;
        let path = dir.join(name);
        let tmp = dir.join(format!("{name}.tmp"));
        let mut f = fs::File::create(&tmp).map_err(|e| RemoteError::local(&tmp, "create", e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_data())
            .map_err(|e| RemoteError::local(&tmp, "write", e))?;
        fs::rename(&tmp, &path).map_err(|e| RemoteError::local(&path, "rename into place", e))?;
        sync_dir(&dir)
    }
}

/// Syncs a directory, so the names in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RemoteError::local(dir, "sync the directory", e))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RemoteError::local(path, "read", e)),
    }
}

fn decode_error(path: &Path, e: replog_format::DecodeError) -> RemoteError {
    RemoteError::local(
        path,
        "decode",
        std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    )
}
