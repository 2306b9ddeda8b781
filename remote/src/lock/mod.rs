//! Immutable S3 remotes: every object a sync uploads is written with S3 Object Lock retention
//! (a mode and a retain-until date), so nobody, replog included, can delete it before the date.
//!
//! This module decides: it checks a bucket before a remote is made immutable, records the
//! setting (`remote/IMMUTABLE`), tells garbage collection which objects it may not delete yet
//! ([`KeptLocked`]: a locked manifest is kept with everything it names), and reads the lock
//! horizon `remote show` prints. The requests themselves, which `object_store` cannot make
//! (S3's `x-amz-object-lock-*` headers), are [`LockedUploads`]' (`s3.rs`); a [`Remote`] whose
//! uploads are locked makes every write through it. Azure immutability is not done yet: an
//! `az://` remote is refused.

pub(crate) mod s3;

use std::path::Path;

use bytes::Bytes;
use jiff::Timestamp;
pub use replog_format::remote_lock::{LOCK_PERIOD_S_MAX, LockMode, RemoteImmutability};
pub use s3::{LockedUploads, ObjectLock};

use crate::error::{Refusal, RemoteError, Result};
use crate::local::LocalVault;
use crate::store::{Remote, RemoteOptions};

/// Objects garbage collection kept because they are still locked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeptLocked {
    /// How many.
    pub objects: u64,
    /// The earliest retain-until date among them: when the first may go.
    pub earliest_until: Option<Timestamp>,
}

impl KeptLocked {
    /// Counts one more, locked until `until`.
    pub fn add(&mut self, until: Option<Timestamp>) {
        self.objects += 1;
        self.earliest_until = match (self.earliest_until, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Whether the objects a manifest needs, all locked until `locked_until_s` (Unix seconds; 0:
/// not known), must be locked longer at `now`: when that is less than half the upload period
/// (`period_s`) away. Renewing then, each object is touched about twice per period, and stays
/// locked at least half a period ahead for as long as a manifest needs it.
pub fn needs_renewal(locked_until_s: i64, now: Timestamp, period_s: u64) -> bool {
    locked_until_s < now.as_second().saturating_add((period_s / 2) as i64)
}

/// After a sync of an immutable remote confirmed a manifest (its uploads started at
/// `started`): keeps `remote/IMMUTABLE`'s lock horizon true, and when [`needs_renewal`] says
/// so, locks every object the manifest needs (`needed()`, which lists them) until a full
/// period from now first. An object whose lock the store refuses to change (it cannot be
/// shortened) must be locked at least that long already; otherwise the sync fails, naming it.
/// Returns the horizon (Unix seconds).
pub(crate) fn keep_horizon(
    remote: &Remote,
    locked: &LockedUploads,
    local: &LocalVault,
    started: Timestamp,
    needed: impl FnOnce() -> Result<Vec<String>>,
) -> Result<i64> {
    let Some(mut setting) = local.immutability()? else {
        return Ok(0);
    };
    let now = Timestamp::now();
    // This run's uploads are locked until at least `started` plus the period.
    let uploads_s = started.as_second() + locked.period_s() as i64;
    let mut horizon = setting.locked_until_s.min(uploads_s);
    if needs_renewal(horizon, now, locked.period_s()) {
        let until = locked.retain_until(now);
        renew(remote, locked, needed()?, until)?;
        horizon = until.as_second();
    }
    if horizon != setting.locked_until_s {
        setting.locked_until_s = horizon;
        local.write_immutability(&setting)?;
    }
    Ok(horizon)
}

/// Locks each of `keys` until `until`, 16 at a time; see [`keep_horizon`].
fn renew(
    remote: &Remote,
    locked: &LockedUploads,
    keys: Vec<String>,
    until: Timestamp,
) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    remote.block_on(
        futures::stream::iter(keys)
            .map(|key| async move { lock_until(remote, locked, &key, until).await })
            .buffer_unordered(16)
            .try_collect::<Vec<()>>(),
    )?;
    Ok(())
}

/// Locks the object at `key` (one a sync found on the remote already and names again) until a
/// full period from now, as if it had just been uploaded.
pub(crate) async fn renew_one(remote: &Remote, locked: &LockedUploads, key: &str) -> Result<()> {
    lock_until(remote, locked, key, locked.retain_until(Timestamp::now())).await
}

/// Locks the object at `key` until `until`. One whose lock the store refuses to change (a
/// lock cannot be shortened) must be locked at least that long already; otherwise this fails,
/// naming it.
async fn lock_until(
    remote: &Remote,
    locked: &LockedUploads,
    key: &str,
    until: Timestamp,
) -> Result<()> {
    let full = remote.full_key(key);
    if remote
        .attempt(key, "lengthen the lock of", || locked.retain(&full, until))
        .await?
    {
        return Ok(());
    }
    let lock = remote
        .attempt(key, "read the lock of", || locked.head(&full))
        .await?;
    match lock.and_then(|l| l.retain_until) {
        Some(t) if t >= until => Ok(()),
        found => Err(Refusal::Unusable.because(format!(
            "{}/{key}: the store refuses to lock it until {until} (it is locked until {}): \
             check that the credentials may set object retention (s3:PutObjectRetention)",
            remote.url(),
            found.map_or("no date".to_owned(), |t| t.to_string())
        ))),
    }
}

/// Splits `manifests` (keys garbage collection would delete) into those that may go and those
/// still locked, which are counted in `kept`.
pub(crate) fn split_locked(
    remote: &Remote,
    locked: &LockedUploads,
    manifests: Vec<String>,
    kept: &mut KeptLocked,
) -> Result<(Vec<String>, Vec<String>)> {
    let now = Timestamp::now();
    let (mut free, mut held) = (Vec::new(), Vec::new());
    for key in manifests {
        let full = remote.full_key(&key);
        let lock =
            remote.block_on(remote.attempt(&key, "read the lock of", || locked.head(&full)))?;
        match lock {
            Some(l) if l.locked_at(now) => {
                kept.add(l.retain_until);
                held.push(key);
            }
            _ => free.push(key),
        }
    }
    Ok((free, held))
}

/// Deletes each of `keys` whose lock has passed (or that has none): the version its HEAD names,
/// so the bytes are gone and not hidden behind a delete marker. One still locked (or that the
/// store refuses to delete as locked) is counted in `kept`. Keys are taken in order up to the
/// first that is not a manifest (manifests go first, so none names a deleted object), the rest
/// 16 at a time. Returns how many were deleted.
pub(crate) fn delete_unless_locked(
    remote: &Remote,
    locked: &LockedUploads,
    keys: Vec<String>,
    kept: &mut KeptLocked,
) -> Result<u64> {
    use futures::{StreamExt, TryStreamExt};
    let now = Timestamp::now();
    let one = |key: String| async move {
        let full = remote.full_key(&key);
        let Some(lock) = remote
            .attempt(&key, "read the lock of", || locked.head(&full))
            .await?
        else {
            return Ok::<_, RemoteError>((false, None));
        };
        if lock.locked_at(now) {
            return Ok((false, Some(lock.retain_until)));
        }
        let version = lock.version_id.as_deref();
        let gone = remote
            .attempt(&key, "delete", || locked.delete(&full, version))
            .await?;
        Ok((gone, (!gone).then_some(lock.retain_until)))
    };
    let split = keys
        .iter()
        .position(|k| replog_format::remote::parse_manifest_key(k).is_none())
        .unwrap_or(keys.len());
    let mut keys = keys;
    let rest = keys.split_off(split);
    let mut outcomes = Vec::with_capacity(keys.len() + rest.len());
    for key in keys {
        outcomes.push(remote.block_on(one(key))?);
    }
    outcomes.extend(
        remote.block_on(
            futures::stream::iter(rest)
                .map(one)
                .buffer_unordered(16)
                .try_collect::<Vec<_>>(),
        )?,
    );
    let mut deleted = 0;
    for (gone, held_until) in outcomes {
        match (gone, held_until) {
            (true, _) => deleted += 1,
            (false, Some(until)) => kept.add(until),
            (false, None) => {}
        }
    }
    Ok(deleted)
}

/// Checks that `remote` can take locked uploads: an `s3://` remote whose bucket has Object Lock
/// enabled. Refused otherwise, naming the bucket.
pub fn check_bucket(remote: &Remote, mode: LockMode, period_s: u64) -> Result<()> {
    let locked = remote.lock_uploads(mode, period_s)?;
    let enabled = remote.block_on(remote.attempt(
        "?object-lock",
        "read the Object Lock configuration of",
        || locked.bucket_lock_enabled(),
    ));
    match enabled {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refusal::Unusable.because(format!(
            "cannot make {} immutable: bucket {} does not have S3 Object Lock enabled (it can \
             only be enabled on a bucket with versioning; create one with Object Lock, or give \
             another bucket)",
            remote.url(),
            remote.bucket()
        ))),
        Err(RemoteError::Store { source, .. })
            if matches!(*source, object_store::Error::NotFound { .. }) =>
        {
            Err(RemoteError::NoBucket {
                url: remote.url().to_owned(),
                noun: "bucket",
                bucket: remote.bucket().to_owned(),
            })
        }
        Err(e) => Err(e),
    }
}

/// Checks, before a remote is added `--immutable`, that `url` can be: an `s3://` remote
/// (Azure immutability is not supported yet) whose bucket has Object Lock enabled.
pub fn check_url_immutable(
    url: &str,
    mode: LockMode,
    period_s: u64,
    opts: &RemoteOptions,
) -> Result<()> {
    if crate::store::check_url(url)?.scheme != "s3" {
        return Err(Refusal::Unusable.because(format!(
            "{url}: --immutable is not supported yet on Azure (az://) remotes, only on S3 \
             (s3://) ones with Object Lock"
        )));
    }
    check_bucket(&Remote::open(url, opts)?, mode, period_s)
}

/// Makes the remote of the vault in `dir` immutable: every object a sync uploads from now on
/// is locked in `mode` for `period_s` seconds at least (longer when the vault's retention
/// window is). Checks the bucket, locks the remote's `VAULT` object, then records the setting
/// in `remote/IMMUTABLE`, which later syncs read.
pub fn make_immutable(
    dir: &Path,
    mode: LockMode,
    period_s: u64,
    opts: &RemoteOptions,
) -> Result<RemoteImmutability> {
    if !(1..=LOCK_PERIOD_S_MAX).contains(&period_s) {
        return Err(Refusal::Unusable.because(format!(
            "a lock period of {period_s} s: give 1 s to 100 years"
        )));
    }
    let local = LocalVault::open(dir)?;
    let config = local.required_config()?;
    check_url_immutable(&config.url, mode, period_s, opts)?;
    let remote = Remote::open(&config.url, opts)?;
    // The first sync lengthens every lock the remote's manifest needs (objects uploaded before
    // this, unlocked, included): nothing is known locked yet.
    let setting = RemoteImmutability {
        vault_id: local.vault_id,
        mode,
        period_s,
        locked_until_s: 0,
    };
    let vault = replog_reader::Vault::open(local.storage().clone(), dir)?;
    let window_s = retention_window_s(vault.manifest());
    lock_claim(
        &remote,
        &setting,
        window_s,
        Bytes::from(local.header_bytes.clone()),
    )?;
    local.write_immutability(&setting)?;
    Ok(setting)
}

/// The lock horizon of the vault in `dir`'s remote, or `None` when it is not immutable. The
/// remote is asked for the retain-until date of the last confirmed manifest; when it cannot
/// be, [`LockHorizon::unknown_because`] says why.
pub fn vault_horizon(dir: &Path, opts: &RemoteOptions) -> Result<Option<LockHorizon>> {
    let local = LocalVault::open(dir)?;
    let Some(setting) = local.immutability()? else {
        return Ok(None);
    };
    let config = local.required_config()?;
    let latest_seq = local.latest()?.map(|m| m.seq);
    Ok(Some(match Remote::open(&config.url, opts) {
        Ok(remote) => horizon(&remote, &setting, latest_seq),
        Err(e) => LockHorizon {
            mode: setting.mode,
            period_s: setting.period_s,
            latest_until: None,
            unknown_because: Some(e.to_string()),
            all_until: all_until(&setting),
        },
    }))
}

/// The longest window of the retention policy of the vault whose manifest is `m`, in seconds
/// (0: it has none): an upload stays locked at least this long, as long as the points it holds
/// are kept.
pub(crate) fn retention_window_s(m: &replog_format::manifest::Manifest) -> u64 {
    (m.lifecycle.retention.as_ref()).map_or(0, |r| r.window_s.max(r.app_window_s))
}

/// Locks `setting`'s uploads (for the retention window `window_s` when longer) on `remote` and
/// rewrites its `VAULT` object locked (the claim `remote add` made before the setting existed;
/// the earlier, unlocked version stays beside it until the store drops it).
fn lock_claim(
    remote: &Remote,
    setting: &RemoteImmutability,
    window_s: u64,
    header: Bytes,
) -> Result<()> {
    let locked = remote.lock_uploads(setting.mode, setting.period_s.max(window_s))?;
    let key = remote.full_key(replog_format::remote::VAULT_KEY);
    remote
        .block_on(
            remote.attempt(replog_format::remote::VAULT_KEY, "write", || {
                locked.put(&key, header.clone(), false)
            }),
        )
        .map(drop)
}

/// What an immutable remote's lock reaches: its mode and period, and the retain-until date
/// of the newest object the last confirmed sync wrote (its remote manifest), when read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHorizon {
    /// The lock mode of uploads.
    pub mode: LockMode,
    /// The configured shortest retention of an upload, in seconds.
    pub period_s: u64,
    /// The retain-until date of the last confirmed remote manifest: the latest of every
    /// object uploaded (later uploads are locked from their own time on).
    pub latest_until: Option<Timestamp>,
    /// Why `latest_until` is not known (no sync yet, the remote could not be asked).
    pub unknown_because: Option<String>,
    /// Every object the last confirmed remote manifest needs is locked until at least this
    /// (`remote/IMMUTABLE`); `None` until a sync has made sure of it.
    pub all_until: Option<Timestamp>,
}

/// The time until which the setting says everything needed is locked, if it says.
fn all_until(setting: &RemoteImmutability) -> Option<Timestamp> {
    (setting.locked_until_s > 0)
        .then(|| Timestamp::from_second(setting.locked_until_s).ok())
        .flatten()
}

/// The lock horizon of `remote`, given its setting and the number of the last remote manifest
/// a sync confirmed (`None`: none yet).
pub fn horizon(
    remote: &Remote,
    setting: &RemoteImmutability,
    latest_seq: Option<u64>,
) -> LockHorizon {
    let mut h = LockHorizon {
        mode: setting.mode,
        period_s: setting.period_s,
        latest_until: None,
        unknown_because: None,
        all_until: all_until(setting),
    };
    let Some(seq) = latest_seq else {
        h.unknown_because = Some("no sync confirmed a manifest yet".to_owned());
        return h;
    };
    let key = replog_format::remote::manifest_key(seq);
    let head = remote
        .lock_uploads(setting.mode, setting.period_s)
        .and_then(|l| {
            let full = remote.full_key(&key);
            remote.block_on(remote.attempt(&key, "read the lock of", || l.head(&full)))
        });
    match head {
        Ok(Some(lock)) => h.latest_until = lock.retain_until,
        Ok(None) => h.unknown_because = Some(format!("{}/{key} is not there", remote.url())),
        Err(e) => h.unknown_because = Some(e.to_string()),
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_are_renewed_once_less_than_half_a_period_is_left() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let day = 86_400;
        assert!(needs_renewal(0, now, day), "nothing known locked");
        assert!(needs_renewal(1_000_000 + day as i64 / 2 - 1, now, day));
        assert!(!needs_renewal(1_000_000 + day as i64 / 2, now, day));
        assert!(!needs_renewal(1_000_000 + day as i64, now, day));
    }

    #[test]
    fn kept_locked_remembers_the_earliest_date() {
        let mut k = KeptLocked::default();
        k.add(Timestamp::from_second(200).ok());
        k.add(None);
        k.add(Timestamp::from_second(100).ok());
        assert_eq!(k.objects, 3);
        assert_eq!(k.earliest_until, Timestamp::from_second(100).ok());
    }
}
