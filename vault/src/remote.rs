//! A vault's object storage remote as library calls: set it (claiming the prefix for the vault),
//! say what its last sync confirmed and how far the remote is behind the local vault (the
//! remote RPO), and sync. The work is `replog-remote`'s; this decides what is checked first and
//! what is refused.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use replog_format::remote::{FileKind, KEEP_MANIFESTS_MAX, RemoteConfig, RemoteManifest};
use replog_io::Storage;
use replog_reader::PointInfo;
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
    /// How far the remote is behind the local vault, as the last confirmed sync left it.
    pub rpo: RemoteRpo,
    /// Why the local vault is older than what it confirmed on its remote, if it is: a local
    /// file replaced by an older copy, or the vault restored from one.
    pub local_older: Option<String>,
}

/// The recovery point objective that survives the loss of the site: the newest point the
/// remote holds against the local vault's newest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteRpo {
    /// The newest point the remote offers (from its last confirmed remote manifest); `None`:
    /// the remote holds no point yet.
    pub newest_remote_point: Option<PointInfo>,
    /// The newest point the local vault offers.
    pub newest_local_point: Option<PointInfo>,
    /// Now minus the time of the newest remote point; `None` when the remote holds no point.
    pub remote_rpo: Option<Duration>,
    /// Whether the remote is behind the local vault: the local vault offers a point newer
    /// (by LSN) than every point the remote offers.
    pub behind: bool,
}

impl RemoteRpo {
    /// The RPO of a remote whose newest point is `remote` against a local vault whose newest
    /// is `local`, at `now_unix_ns`.
    pub fn new(remote: Option<PointInfo>, local: Option<PointInfo>, now_unix_ns: i64) -> Self {
        let behind = match (&remote, &local) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(r), Some(l)) => r.lsn < l.lsn,
        };
        RemoteRpo {
            remote_rpo: remote.as_ref().map(|p| {
                Duration::from_nanos(now_unix_ns.saturating_sub(p.time_unix_ns).max(0) as u64)
            }),
            newest_remote_point: remote,
            newest_local_point: local,
            behind,
        }
    }

    /// Why the local vault is older than what it confirmed on its remote, if it is: its newest
    /// point is older than the remote's (point ids only grow, and the newest point is never
    /// pruned), so a local file was replaced by an older copy, or the vault restored from one.
    /// A vault with no point left (a completed migration) is not compared.
    pub fn local_rolled_back(&self) -> Option<String> {
        let (remote, local) = (
            self.newest_remote_point.as_ref()?,
            self.newest_local_point.as_ref()?,
        );
        (remote.point_id > local.point_id).then(|| {
            format!(
                "the local vault's newest point is {}, older than point {} it already confirmed on its remote (remote/LATEST): a local file was replaced by an older copy, or the vault was restored from one",
                local.point_id, remote.point_id
            )
        })
    }
}

/// What a sync did, and where the remote stands after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    /// What was uploaded, published, evicted and deleted.
    pub report: SyncReport,
    /// The remote's URL.
    pub url: String,
    /// The remote RPO right after the sync (the local vault may have a newer point already:
    /// then `rpo.behind` says so).
    pub rpo: RemoteRpo,
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

/// The remote of the vault in `dir` (refused when it has none), what its last sync confirmed
/// and the remote RPO. Nothing is read from the remote unless the segment holding the newest
/// remote point was evicted since.
pub fn remote_status(dir: &Path) -> Result<RemoteStatus> {
    let local = LocalVault::open(dir)?;
    let config = local.required_config()?;
    let latest = local.latest()?;
    let storage =
        replog_remote::storage_for_vault(local.storage().clone(), dir, &RemoteOptions::default())?;
    let (rpo, local_older) = rpo_and_rollback(storage, dir, latest.as_ref(), &local)?;
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
        rpo,
        local_older,
    })
}

/// The remote RPO of the vault in `dir` (see `remote_rpo`), and why the local vault is older
/// than `latest`, the remote manifest it confirmed, if it is: a journal segment shorter than
/// confirmed (then the RPO leaves `latest` out: its files cannot be read as it says), or a
/// newest point older than the remote's.
fn rpo_and_rollback(
    storage: Arc<dyn Storage>,
    dir: &Path,
    latest: Option<&RemoteManifest>,
    local: &LocalVault,
) -> Result<(RemoteRpo, Option<String>)> {
    let shorter = latest.and_then(|l| shorter_than_confirmed(dir, l));
    let rpo = remote_rpo(storage, dir, latest.filter(|_| shorter.is_none()), local)?;
    let older = shorter.or_else(|| rpo.local_rolled_back());
    Ok((rpo, older))
}

/// Why the local vault is older than `latest`, the remote manifest it confirmed, judged by
/// lengths alone: a local journal segment shorter than the length `latest` records for it. A
/// segment only grows (recovery zeroes a torn tail, compaction and reclaiming punch holes; none
/// shortens the file), so a shorter one was replaced by an older copy. Evicted files are not
/// local and not compared.
fn shorter_than_confirmed(dir: &Path, latest: &RemoteManifest) -> Option<String> {
    latest
        .files
        .iter()
        .filter(|f| f.id.kind == FileKind::Segment)
        .find_map(|f| {
            let rel = replog_remote::file_path(&f.id);
            let local_bytes = std::fs::metadata(dir.join(&rel)).ok()?.len();
            (local_bytes < f.file_bytes).then(|| {
                format!(
                    "{} is {local_bytes} bytes, shorter than the {} bytes this vault confirmed on its remote (remote/LATEST, manifest {}): it was replaced by an older copy, or the vault was restored from one",
                    rel.display(),
                    f.file_bytes,
                    latest.seq
                )
            })
        })
}

/// The remote RPO of the vault in `dir`, read through `storage`, whose last confirmed remote
/// manifest is `latest`.
fn remote_rpo(
    storage: Arc<dyn Storage>,
    dir: &Path,
    latest: Option<&RemoteManifest>,
    local: &LocalVault,
) -> Result<RemoteRpo> {
    let remote = match latest {
        Some(m) => replog_remote::newest_point(storage.as_ref(), dir, m, local.seed)?,
        None => None,
    };
    let local_newest = replog_reader::Vault::open(storage, dir)?
        .latest_point()
        .cloned();
    Ok(RemoteRpo::new(remote, local_newest, now_unix_ns()))
}

fn now_unix_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Syncs the vault in `dir`, whose files `storage` reads, to its remote (refused when it has
/// none); `progress` gets the bytes done and the total. Returns the report, the remote's URL
/// and the remote RPO: a replication loop calls this and reads [`Synced::rpo`].
pub fn sync(
    storage: Arc<dyn Storage>,
    dir: &Path,
    remote_opts: &RemoteOptions,
    opts: &SyncOptions,
    progress: replog_remote::Progress<'_>,
) -> Result<Synced> {
    let local = LocalVault::open(dir)?;
    let config = local.required_config()?;
    let (_, older) = rpo_and_rollback(storage.clone(), dir, local.latest()?.as_ref(), &local)?;
    if let Some(why) = older {
        return Err(VaultError::new(
            VaultErrorKind::Damaged,
            format!(
                "{}: {why}; a sync now would roll the remote back too, so none is made (fail over from the remote, {}, to get the newer points back)",
                dir.display(),
                config.url
            ),
        ));
    }
    let remote = Remote::open(&config.url, remote_opts)?;
    let report = replog_remote::sync(storage.clone(), dir, &remote, opts, progress)?;
    let local_newest = replog_reader::Vault::open(storage, dir)?
        .latest_point()
        .cloned();
    let rpo = RemoteRpo::new(report.newest_point.clone(), local_newest, now_unix_ns());
    Ok(Synced {
        report,
        url: config.url,
        rpo,
    })
}

/// What the remote holds now, against what this vault last confirmed there (`remote/LATEST`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteNow {
    /// The remote's newest manifest is the one confirmed, byte for byte, or a newer one.
    Current {
        /// The newest remote manifest that reads.
        newest_seq: u64,
    },
    /// The remote is older than what this vault confirmed, or the confirmed manifest was
    /// replaced: someone rolled it back or wrote it. Names the object.
    RolledBack(String),
    /// The remote could not be asked (network, credentials).
    Unknown(String),
}

/// Asks the remote of the vault in `dir` for its newest manifest and compares it with the
/// highest one this vault confirmed. Only reads.
pub fn remote_now(dir: &Path, opts: &RemoteOptions) -> Result<RemoteNow> {
    let local = LocalVault::open(dir)?;
    let config = local.required_config()?;
    let latest = local.latest()?;
    let confirmed = latest.as_ref().map_or(0, |l| l.seq);
    let remote = match Remote::open(&config.url, opts) {
        Ok(r) => r,
        Err(e) => return Ok(RemoteNow::Unknown(e.to_string())),
    };
    let scan = match replog_remote::scan_manifests(&remote, &local.vault_id, local.seed) {
        Ok(s) => s,
        Err(e) => return Ok(RemoteNow::Unknown(e.to_string())),
    };
    if let Err(e) = scan.check_newest(&remote, confirmed, false) {
        return Ok(RemoteNow::RolledBack(e.to_string()));
    }
    if let (Some(newest), Some(latest)) = (&scan.newest, &latest)
        && newest.seq == latest.seq
        && newest != latest
    {
        return Ok(RemoteNow::RolledBack(format!(
            "{}/{}: differs from the manifest this vault uploaded and confirmed under that number (remote/LATEST): it was replaced",
            remote.url(),
            replog_format::remote::manifest_key(latest.seq)
        )));
    }
    Ok(RemoteNow::Current {
        newest_seq: scan.newest_seq(),
    })
}
