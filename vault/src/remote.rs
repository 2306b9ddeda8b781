//! A vault's object storage remote as library calls: set it (claiming the prefix for the vault),
//! say what its last sync confirmed, and sync. The work is `replog-remote`'s; this decides what
//! is checked first and what is refused.

use std::path::Path;
use std::sync::Arc;

use replog_format::remote::{KEEP_MANIFESTS_MAX, RemoteConfig, RemoteManifest};
use replog_io::Storage;
use replog_remote::{LocalVault, Remote, RemoteOptions, SyncOptions, SyncReport};

use crate::error::{Result, VaultError, VaultErrorKind};

/// A vault's remote and what its last sync confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteStatus {
    /// The remote, its cache limit and the manifests kept.
    pub config: RemoteConfig,
    /// The last remote manifest a sync confirmed, if one did.
    pub latest: Option<RemoteManifest>,
    /// Files it names that are also local.
    pub files_local: usize,
    /// Files it names that were evicted: on the remote only.
    pub files_remote_only: usize,
}

/// Sets the remote of the vault in `dir` to `url` and claims the prefix for the vault (a prefix
/// holding another vault is refused, and so is a second remote). Every limit is checked before
/// anything is read or written, here or on the remote. Returns the remote's URL as it names it.
pub fn add_remote(
    dir: &Path,
    url: &str,
    cache_limit_bytes: u64,
    keep_manifests: u32,
    opts: &RemoteOptions,
) -> Result<String> {
    replog_remote::check_url(url)?;
    if !(1..=KEEP_MANIFESTS_MAX).contains(&keep_manifests) {
        return Err(VaultError::new(
            VaultErrorKind::InvalidRequest,
            format!("--keep-manifests must be 1 to {KEEP_MANIFESTS_MAX}"),
        ));
    }
    let local = LocalVault::open(dir)?;
    if let Some(old) = local.config()?
        && old.url.trim_end_matches('/') != url.trim_end_matches('/')
    {
        return Err(VaultError::new(
            VaultErrorKind::InvalidRequest,
            format!(
                "{} already syncs to {}; a vault has one remote",
                dir.display(),
                old.url
            ),
        ));
    }
    let remote = Remote::open(url, opts)?;
    replog_remote::claim(&local, &remote)?;
    local.write_config(&RemoteConfig {
        vault_id: local.vault_id,
        url: remote.url().to_owned(),
        cache_limit_bytes,
        keep_manifests,
    })?;
    Ok(remote.url().to_owned())
}

/// The remote of the vault in `dir` (refused when it has none) and what its last sync confirmed.
pub fn remote_status(dir: &Path) -> Result<RemoteStatus> {
    let local = LocalVault::open(dir)?;
    let config = local.required_config()?;
    let latest = local.latest()?;
    let (mut files_local, mut files_remote_only) = (0, 0);
    for f in latest.iter().flat_map(|l| &l.files) {
        if dir.join(replog_remote::file_path(&f.id)).exists() {
            files_local += 1;
        } else {
            files_remote_only += 1;
        }
    }
    Ok(RemoteStatus {
        config,
        latest,
        files_local,
        files_remote_only,
    })
}

/// Syncs the vault in `dir`, whose files `storage` reads, to its remote (refused when it has
/// none); `progress` gets the bytes done and the total. Returns the report and the remote's URL.
pub fn sync(
    storage: Arc<dyn Storage>,
    dir: &Path,
    remote_opts: &RemoteOptions,
    opts: &SyncOptions,
    progress: replog_remote::Progress<'_>,
) -> Result<(SyncReport, String)> {
    let local = LocalVault::open(dir)?;
    let config = local.required_config()?;
    let remote = Remote::open(&config.url, remote_opts)?;
    let report = replog_remote::sync(storage, dir, &remote, opts, progress)?;
    Ok((report, config.url))
}
