//! Object storage tiering for replog vaults.
//!
//! A vault's sealed files (journal segments, checkpoint indexes, base images) are shipped to an
//! S3-compatible store or Azure Blob, through `object_store`, in the layout of
//! `replog_format::remote`: content-addressed chunks, file maps and sequence-numbered remote
//! manifests, never rewritten. [`sync()`] uploads, confirms, evicts and collects garbage;
//! [`TieredStorage`] lets the reader read a vault whose files are partly or wholly remote, so a
//! machine with no local vault can fail over from the bucket ([`open_remote`]).

mod error;
pub mod fault;
mod files;
mod local;
mod store;
mod sync;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::header::VaultHeader;
use replog_format::remote::VAULT_KEY;
use replog_format::vault_seed;
use replog_io::Storage;

pub use error::{RemoteError, Result};
pub use files::{CACHE_CHUNKS_DEFAULT, RemoteFiles, TieredStorage, file_id, file_path};
pub use local::LocalVault;
pub use store::{Put, Remote, RemoteOptions};
pub use sync::{Progress, SyncOptions, SyncReport, claim, newest_manifest, sync};

/// A vault read from a remote alone.
#[derive(Debug)]
pub struct RemoteVault {
    /// Storage that serves the vault under [`RemoteVault::root`] and everything else locally.
    pub storage: Arc<dyn Storage>,
    /// The made-up directory the vault is under: its URL.
    pub root: PathBuf,
    /// The remote manifest read.
    pub manifest_seq: u64,
    /// When it was made.
    pub manifest_time_unix_ns: i64,
}

/// Opens the vault at `remote` for reading, from its newest remote manifest that decodes.
/// `local` serves every path outside the vault (where images are written); `cache_chunks` bounds
/// the chunks held in memory.
pub fn open_remote(
    remote: Arc<Remote>,
    local: Arc<dyn Storage>,
    cache_chunks: usize,
) -> Result<RemoteVault> {
    let header_bytes = remote.get(VAULT_KEY)?.ok_or_else(|| {
        RemoteError::Refused(format!(
            "{} holds no replog vault (there is no {VAULT_KEY} object)",
            remote.url()
        ))
    })?;
    let header =
        VaultHeader::decode(&header_bytes).map_err(|e| remote.damaged(VAULT_KEY, e.to_string()))?;
    let seed = vault_seed(&header.vault_id);
    let (newest, _) = newest_manifest(&remote, &header.vault_id, seed)?;
    let manifest = newest.ok_or_else(|| {
        RemoteError::Refused(format!(
            "{} has no remote manifest yet: run `replog sync` on the vault first",
            remote.url()
        ))
    })?;
    let root = PathBuf::from(remote.url());
    let (manifest_seq, manifest_time_unix_ns) = (manifest.seq, manifest.time_unix_ns);
    let files = Arc::new(RemoteFiles::new(remote, manifest, seed, cache_chunks));
    let storage = TieredStorage::remote_only(local, &root, files, header_bytes.to_vec());
    Ok(RemoteVault {
        storage: Arc::new(storage),
        root,
        manifest_seq,
        manifest_time_unix_ns,
    })
}

/// The storage to read the local vault in `dir` through: `local` itself when the vault has no
/// remote, otherwise a [`TieredStorage`] that reads evicted files from the remote (connecting,
/// with `opts`, only when one is read).
pub fn storage_for_vault(
    local: Arc<dyn Storage>,
    dir: &Path,
    opts: &RemoteOptions,
) -> Result<Arc<dyn Storage>> {
    let config_path = dir
        .join(replog_format::remote::REMOTE_DIR)
        .join(replog_format::remote::REMOTE_CONFIG_FILE);
    if !config_path.exists() {
        return Ok(local);
    }
    let vault = LocalVault::open(dir)?;
    let Some(config) = vault.config()? else {
        return Ok(local);
    };
    Ok(Arc::new(TieredStorage::over_local(
        local,
        vault,
        config.url,
        opts.clone(),
    )))
}
