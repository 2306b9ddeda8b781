//! Immutable S3 remotes: every object a sync uploads is written with S3 Object Lock retention
//! (a mode and a retain-until date), so nobody, replog included, can delete it before the date.
//!
//! `object_store` can neither send the `x-amz-object-lock-*` request headers nor show them in
//! a response, and S3 wants every `x-amz-*` header signed. The few requests that need them are
//! made here, over reqwest and signed with SigV4 (`aws-sigv4`): a PUT with the lock headers and
//! a `Content-MD5` (S3 requires a checksum when retention is set), a HEAD that reads an
//! object's lock and version, a DELETE of one version, and the bucket's `?object-lock`
//! configuration. Everything else still goes through `object_store`.
//!
//! Each request returns an `object_store::Error` of the kind the rest of the crate already
//! handles, so it is retried by [`Remote`]'s one retry loop: transport failures and 5xx are
//! `Generic` (retried); 404, 412 and 403 are `NotFound`, `Precondition` and `PermissionDenied`.
//!
//! Garbage collection asks [`LockedUploads::head`] before deleting on an immutable remote: an
//! object still locked is kept and counted ([`KeptLocked`]), and deleted by a later sync once
//! its date has passed (the version the HEAD named, so its bytes are really gone). Azure
//! immutability is not done yet: an `az://` remote is refused.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use base64::Engine;
use bytes::Bytes;
use jiff::Timestamp;
use md5::{Digest, Md5};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};
pub use replog_format::remote_lock::{LOCK_PERIOD_S_MAX, LockMode, RemoteImmutability};

use crate::error::{Refusal, RemoteError, Result};
use crate::local::LocalVault;
use crate::store::{Put, Remote, RemoteOptions};

/// The store name in the `object_store` errors made here.
const STORE: &str = "S3";
/// Longest error body quoted in a message.
const BODY_QUOTED_BYTES_MAX: usize = 300;

/// Parses a lock period as `remote add --immutable` takes it: a number and a unit, `s`, `m`,
/// `h`, `d` or `w` (`30d`, `12h`), at least one second and at most [`LOCK_PERIOD_S_MAX`].
/// Returns seconds.
pub fn parse_period(text: &str) -> std::result::Result<u64, String> {
    let bad = || format!("{text:?} is not a lock period: give a number and a unit, e.g. 30d, 12h");
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(unit_at);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(scale) {
        Some(0) => Err(format!(
            "{text:?} is zero: an object must stay locked for a while"
        )),
        Some(s) if s <= LOCK_PERIOD_S_MAX => Ok(s),
        _ => Err(format!(
            "{text:?} is longer than S3 allows (100 years, {LOCK_PERIOD_S_MAX} s)"
        )),
    }
}

/// How to reach an S3 bucket outside `object_store`: taken from the same builder, so the same
/// environment variables and `--remote-option`s apply.
#[derive(Clone)]
pub(crate) struct S3Access {
    /// The bucket's URL, with no trailing slash: object keys follow it after a `/`.
    bucket_url: String,
    region: String,
    credentials: AwsCredentialProvider,
    request_timeout: Duration,
}

impl S3Access {
    /// The access a store built from `builder` for `bucket` has, with `credentials` (the built
    /// store's own provider: keys, session tokens, instance roles alike).
    pub(crate) fn new(
        builder: &AmazonS3Builder,
        bucket: &str,
        credentials: AwsCredentialProvider,
        request_timeout: Duration,
    ) -> S3Access {
        let get = |k| builder.get_config_value(&k).filter(|v| !v.is_empty());
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".to_owned());
        let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let endpoint = get(AmazonS3ConfigKey::Endpoint).map(|e| e.trim_end_matches('/').to_owned());
        // As the store itself does: a virtual-hosted endpoint already names the bucket.
        let bucket_url = match (endpoint, virtual_hosted) {
            (Some(e), true) => e,
            (Some(e), false) => format!("{e}/{bucket}"),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        S3Access {
            bucket_url,
            region,
            credentials,
            request_timeout,
        }
    }
}

/// An object's lock, as its HEAD tells it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectLock {
    /// `x-amz-object-lock-mode`; `None` when the object carries no retention.
    pub mode: Option<LockMode>,
    /// `x-amz-object-lock-retain-until-date`.
    pub retain_until: Option<Timestamp>,
    /// `x-amz-version-id` (`None` on a bucket without versioning).
    pub version_id: Option<String>,
}

impl ObjectLock {
    /// Whether the object may not be deleted yet at `now`.
    pub fn locked_at(&self, now: Timestamp) -> bool {
        self.retain_until.is_some_and(|u| u > now)
    }
}

/// Uploads with Object Lock retention, and the lock-aware requests, on one remote.
pub struct LockedUploads {
    access: S3Access,
    http: reqwest::Client,
    mode: LockMode,
    /// The retention of an upload, in seconds: the configured period or the vault's retention
    /// window, the longer.
    period_s: AtomicU64,
}

impl std::fmt::Debug for LockedUploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LockedUploads({}, {})",
            self.access.bucket_url,
            self.mode.as_s3()
        )
    }
}

/// A status the store answered with, and the start of its body (S3's error code is there).
#[derive(Debug, thiserror::Error)]
#[error("S3 answered {status} to {method} {what}: {body}")]
struct S3Status {
    status: u16,
    method: &'static str,
    what: String,
    body: String,
}

impl LockedUploads {
    /// Uploads locked in `mode` for `period_s` seconds, through `access`.
    pub(crate) fn new(access: S3Access, mode: LockMode, period_s: u64) -> Result<LockedUploads> {
        crate::store::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(access.request_timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| {
                Refusal::Unusable.because(format!("cannot start an HTTP client for S3: {e}"))
            })?;
        Ok(LockedUploads {
            access,
            http,
            mode,
            period_s: AtomicU64::new(period_s),
        })
    }

    /// The lock mode of uploads.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The retention of an upload made now, in seconds.
    pub fn period_s(&self) -> u64 {
        self.period_s.load(Ordering::Relaxed)
    }

    /// Makes uploads stay locked at least `period_s` seconds (never shortens the period).
    pub fn at_least(&self, period_s: u64) {
        self.period_s
            .fetch_max(period_s.min(LOCK_PERIOD_S_MAX), Ordering::Relaxed);
    }

    /// The retain-until date of an upload made at `now`: whole seconds, rounded up.
    pub fn retain_until(&self, now: Timestamp) -> Timestamp {
        let s = now.as_second() + self.period_s() as i64 + 1;
        Timestamp::from_second(s).expect("a lock period of at most 100 years stays in range")
    }

    /// Signs and sends one request. `full_key` is the object's key with the prefix (empty for
    /// the bucket itself), `query` the query string without `?`.
    async fn send(
        &self,
        method: &'static str,
        full_key: &str,
        query: &str,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    ) -> object_store::Result<reqwest::Response> {
        let mut url = self.access.bucket_url.clone();
        if !full_key.is_empty() {
            url.push('/');
            url.push_str(&encode_key(full_key));
        } else if !query.is_empty() {
            url.push('/');
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let signed = self.sign(method, &url, &headers, &body).await?;
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a valid method");
        let mut request = self.http.request(method, &url).body(body);
        for (name, value) in headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain(signed.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        {
            request = request.header(name, value);
        }
        request.send().await.map_err(|e| generic(e.into()))
    }

    /// The headers that sign `method url` with `headers` and `body` (SigV4 for S3: the payload's
    /// SHA-256 in `x-amz-content-sha256`, the key not double-encoded).
    async fn sign(
        &self,
        method: &'static str,
        url: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> object_store::Result<Vec<(String, String)>> {
        let cred = self.access.credentials.get_credential().await?;
        let identity = Credentials::new(
            cred.key_id.clone(),
            cred.secret_key.clone(),
            cred.token.clone(),
            None,
            "replog",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.access.region)
            .name("s3")
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| generic(e.into()))?
            .into();
        let signable = SignableRequest::new(
            method,
            url,
            headers.iter().map(|(n, v)| (*n, v.as_str())),
            SignableBody::Bytes(body),
        )
        .map_err(|e| generic(e.into()))?;
        let (instructions, _) = sign(signable, &params)
            .map_err(|e| generic(e.into()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect())
    }

    /// Whether the bucket has Object Lock enabled (`GET /?object-lock`). A bucket that does not
    /// exist is `NotFound`.
    pub async fn bucket_lock_enabled(&self) -> object_store::Result<bool> {
        let r = self
            .send("GET", "", "object-lock=", Vec::new(), Bytes::new())
            .await?;
        let status = r.status().as_u16();
        let body = r.text().await.map_err(|e| generic(e.into()))?;
        match status {
            200 => Ok(body.contains("<ObjectLockEnabled>Enabled</ObjectLockEnabled>")),
            404 if error_code(&body) == Some("ObjectLockConfigurationNotFoundError") => Ok(false),
            _ => Err(status_error(
                status,
                "GET",
                "the bucket's object-lock",
                body,
            )),
        }
    }

    /// Writes `bytes` at `full_key`, locked until [`LockedUploads::retain_until`] of now; with
    /// `create`, only if no object is there (`If-None-Match: *`; one there is [`Put::Existed`]).
    pub async fn put(
        &self,
        full_key: &str,
        bytes: Bytes,
        create: bool,
    ) -> object_store::Result<Put> {
        let until = self.retain_until(Timestamp::now());
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&bytes));
        let mut headers = vec![
            ("content-md5", md5),
            ("x-amz-object-lock-mode", self.mode.as_s3().to_owned()),
            ("x-amz-object-lock-retain-until-date", s3_date(until)),
        ];
        if create {
            headers.push(("if-none-match", "*".to_owned()));
        }
        let r = self.send("PUT", full_key, "", headers, bytes).await?;
        let status = r.status().as_u16();
        match status {
            200 | 201 | 204 => Ok(Put::Created),
            412 if create => Ok(Put::Existed),
            _ => {
                let body = r.text().await.unwrap_or_default();
                Err(status_error(status, "PUT", full_key, body))
            }
        }
    }

    /// The lock and version of the object at `full_key`, or `None` when there is none.
    pub async fn head(&self, full_key: &str) -> object_store::Result<Option<ObjectLock>> {
        let r = self
            .send("HEAD", full_key, "", Vec::new(), Bytes::new())
            .await?;
        let status = r.status().as_u16();
        if status == 404 {
            return Ok(None);
        }
        if status != 200 {
            return Err(status_error(status, "HEAD", full_key, String::new()));
        }
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retain_until = match header("x-amz-object-lock-retain-until-date") {
            Some(d) => Some(d.parse::<Timestamp>().map_err(|e| {
                generic(
                    format!("{full_key}: a retain-until date {d:?} that does not parse: {e}")
                        .into(),
                )
            })?),
            None => None,
        };
        Ok(Some(ObjectLock {
            mode: header("x-amz-object-lock-mode").and_then(|m| LockMode::from_s3(&m)),
            retain_until,
            version_id: header("x-amz-version-id"),
        }))
    }

    /// Deletes one version of the object at `full_key` (all of the object when `version` is
    /// `None`). Returns `false` when the store refuses because it is locked (403).
    pub async fn delete(
        &self,
        full_key: &str,
        version: Option<&str>,
    ) -> object_store::Result<bool> {
        let query = version.map_or(String::new(), |v| format!("versionId={}", encode_key(v)));
        let r = self
            .send("DELETE", full_key, &query, Vec::new(), Bytes::new())
            .await?;
        match r.status().as_u16() {
            200 | 204 | 404 => Ok(true),
            403 => Ok(false),
            status => {
                let body = r.text().await.unwrap_or_default();
                Err(status_error(status, "DELETE", full_key, body))
            }
        }
    }
}

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
    let setting = RemoteImmutability {
        vault_id: local.vault_id,
        mode,
        period_s,
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
        },
    }))
}

/// The longest window of the retention policy of the vault whose manifest is `m`, in seconds
/// (0: it has none): an upload stays locked at least this long, as long as the points it holds
/// are kept.
pub(crate) fn retention_window_s(m: &replog_format::manifest::Manifest) -> u64 {
    (m.lifecycle.retention.as_ref()).map_or(0, |r| r.window_s.max(r.app_window_s))
}

/// Locks `setting`'s uploads (for the retention window `window_s` when longer) on `remote` and rewrites its `VAULT` object locked (the claim
/// `remote add` made before the setting existed; the earlier, unlocked version stays beside it
/// until the store drops it).
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

/// A date as S3 takes it in `x-amz-object-lock-retain-until-date`: ISO 8601 in UTC.
fn s3_date(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A key in a URL path: every byte but the unreserved ones and `/` percent-encoded, as SigV4's
/// canonical URI for S3 has it.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// S3's error code in an error body (`<Code>...</Code>`).
fn error_code(body: &str) -> Option<&str> {
    let start = body.find("<Code>")? + "<Code>".len();
    let len = body[start..].find("</Code>")?;
    Some(&body[start..start + len])
}

fn generic(source: Box<dyn std::error::Error + Send + Sync>) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source,
    }
}

/// The `object_store` error for a status: 5xx is retried (`Generic`); the rest is final.
fn status_error(
    status: u16,
    method: &'static str,
    what: &str,
    body: String,
) -> object_store::Error {
    let cut = body
        .char_indices()
        .nth(BODY_QUOTED_BYTES_MAX)
        .map_or(body.len(), |(i, _)| i);
    let source = Box::new(S3Status {
        status,
        method,
        what: what.to_owned(),
        body: body[..cut].to_owned(),
    });
    let path = what.to_owned();
    match status {
        404 => object_store::Error::NotFound { path, source },
        409 | 412 => object_store::Error::Precondition { path, source },
        401 => object_store::Error::Unauthenticated { path, source },
        403 => object_store::Error::PermissionDenied { path, source },
        s if s >= 500 || s == 429 => generic(source),
        _ => object_store::Error::NotSupported { source },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_a_number_and_a_unit() {
        assert_eq!(parse_period("30d"), Ok(30 * 86_400));
        assert_eq!(parse_period("12h"), Ok(12 * 3600));
        assert_eq!(parse_period("90m"), Ok(5400));
        assert_eq!(parse_period("2w"), Ok(14 * 86_400));
        assert_eq!(parse_period("1s"), Ok(1));
        for bad in [
            "",
            "30",
            "d",
            "30x",
            "-1d",
            "1.5d",
            "30 d",
            "0d",
            "36501d",
            "99999999999999999999d",
        ] {
            assert!(parse_period(bad).is_err(), "{bad:?}");
        }
        assert!(parse_period("0h").unwrap_err().contains("zero"));
        assert!(parse_period("36501d").unwrap_err().contains("100 years"));
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

    #[test]
    fn keys_are_encoded_for_the_path_and_error_codes_found() {
        assert_eq!(encode_key("pre fix/chunks/ab.c"), "pre%20fix/chunks/ab.c");
        assert_eq!(encode_key("a+b=c"), "a%2Bb%3Dc");
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code></Error>";
        assert_eq!(error_code(body), Some("NoSuchBucket"));
        assert_eq!(error_code("no code"), None);
    }

    #[test]
    fn dates_are_whole_seconds_in_utc() {
        let t: Timestamp = "2026-12-07T20:49:42.5Z".parse().unwrap();
        assert_eq!(s3_date(t), "2026-12-07T20:49:42Z");
    }
}
