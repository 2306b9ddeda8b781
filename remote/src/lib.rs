//! Object storage tiering for replog vaults.
//!
//! A vault's sealed files (journal segments, checkpoint indexes, base images), and the open
//! segment's prefix up to the newest point, are shipped to an
//! S3-compatible store or Azure Blob, through `object_store`, in the layout of
//! `replog_format::remote`: content-addressed chunks, file maps and sequence-numbered remote
//! manifests, never rewritten. [`sync()`] uploads, confirms, evicts and collects garbage;
//! [`TieredStorage`] lets the reader read a vault whose files are partly or wholly remote, so a
//! machine with no local vault can fail over from the bucket ([`open_remote`]).
//!
//! It must not know the command line or how a result is shown, and it never writes a vault's
//! journal or manifest: it reads the local vault through `replog-reader` and owns only `remote/`.

mod error;
pub mod fault;
mod files;
mod local;
pub mod lock;
mod prefix;
mod store;
mod sync;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::header::VaultHeader;
use replog_format::remote::VAULT_KEY;
use replog_format::vault_seed;
use replog_io::Storage;

pub use error::{Refusal, RemoteError, RemoteErrorKind, Result};
pub use files::{
    CACHE_CHUNKS_DEFAULT, RANGED_CHUNK_BYTES_MIN, RemoteFiles, TieredStorage, file_id, file_path,
};
pub use local::LocalVault;
pub use prefix::{newest_point, prefix_segment};
pub use store::{Put, Remote, RemoteOptions, check_url, install_tls_provider};
pub use sync::{
    LockReport, ManifestScan, Progress, SyncOptions, SyncReport, claim, newest_manifest,
    scan_manifests, sync,
};

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
    /// Set when an older manifest was read because newer ones are missing or damaged (allowed
    /// by [`open_remote_with`]'s `allow_older`): a sentence for the operator saying which.
    pub older_warning: Option<String>,
}

/// Opens the vault at `remote` for reading, from its newest remote manifest. `local` serves
/// every path outside the vault (where images are written); `cache_chunks` bounds the chunks
/// held in memory. A newest manifest that is damaged is [`RemoteError::Damaged`]; one that is
/// missing (a higher number is listed or marked) is [`RemoteError::Older`]: never is an older
/// manifest read in its place (see [`open_remote_with`]).
pub fn open_remote(
    remote: Arc<Remote>,
    local: Arc<dyn Storage>,
    cache_chunks: usize,
) -> Result<RemoteVault> {
    open_remote_with(remote, local, cache_chunks, false)
}

/// [`open_remote`], but with `allow_older` the newest manifest that decodes is read when newer
/// ones are missing or damaged, and [`RemoteVault::older_warning`] says so.
pub fn open_remote_with(
    remote: Arc<Remote>,
    local: Arc<dyn Storage>,
    cache_chunks: usize,
    allow_older: bool,
) -> Result<RemoteVault> {
    let header_bytes = remote_header(&remote)?;
    let header =
        VaultHeader::decode(&header_bytes).map_err(|e| remote.damaged(VAULT_KEY, e.to_string()))?;
    let seed = vault_seed(&header.vault_id);
    let scan = scan_manifests(&remote, &header.vault_id, seed)?;
    let older_warning = scan.check_newest(&remote, 0, allow_older)?;
    let manifest = scan.newest.ok_or_else(|| {
        Refusal::NotOnRemote.because(format!(
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
        older_warning,
    })
}

/// The remote's `VAULT` object. Its absence is told apart from a missing bucket, and bytes
/// that fail the header's checksum are damage, whatever field the damage fell in (a flipped
/// bit in the version must not read as a format this replog does not know).
fn remote_header(remote: &Remote) -> Result<bytes::Bytes> {
    let Some(bytes) = remote.get(VAULT_KEY)? else {
        // A store that says a missing bucket is missing when listed (S3) gives `NoBucket`;
        // others fail the listing some other way, which is then quoted.
        return Err(match remote.list(replog_format::remote::MANIFESTS_DIR) {
            Ok(_) => Refusal::NotAVault.because(format!(
                "{} holds no replog vault (there is no {VAULT_KEY} object)",
                remote.url()
            )),
            Err(e @ RemoteError::NoBucket { .. }) => e,
            Err(e) => Refusal::NotAVault.because(format!(
                "{} holds no replog vault: there is no {VAULT_KEY} object, and it cannot be \
                 listed either (does the bucket or container exist?): {e}",
                remote.url()
            )),
        });
    };
    if bytes.len() == replog_format::header::VAULT_HEADER_BYTES
        && bytes.starts_with(&replog_format::magic::VAULT)
        && let Err(e) = replog_format::codec::check_page_crc(&bytes, "vault header", 0)
    {
        return Err(remote.damaged(VAULT_KEY, e.to_string()));
    }
    Ok(bytes)
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
    if !matches!(local.exists(&config_path), Ok(true)) {
        return Ok(local);
    }
    let vault = LocalVault::open_in(local.clone(), dir)?;
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
