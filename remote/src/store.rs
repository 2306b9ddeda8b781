//! A blocking handle on one remote: an `object_store` client, the prefix under which the vault
//! lives, and the runtime its requests run on. Every method names the key in its errors.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};

use crate::error::{Refusal, RemoteError, Result};
use crate::lock::s3::{LockedUploads, S3Access};
use replog_format::remote_lock::LockMode;

/// How to reach a remote. Endpoint and credentials come from the environment variables
/// `object_store` reads (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_REGION`, `AWS_ALLOW_HTTP`; `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`,
/// `AZURE_STORAGE_USE_EMULATOR`, ...), overridden by `config`.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// `object_store` configuration keys and values (`aws_endpoint`, `azure_storage_account_key`,
    /// ...), applied over the environment.
    pub config: Vec<(String, String)>,
    /// Retries of a failed request before the operation fails.
    pub retries: usize,
    /// Longest time spent retrying one request.
    pub retry_timeout: Duration,
    /// Longest time one request may take.
    pub request_timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        RemoteOptions {
            config: Vec::new(),
            retries: 5,
            retry_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// Whether a put created the object or found it there already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// Written by this call.
    Created,
    /// The store said it existed (create-if-absent); its bytes are not known to match.
    Existed,
}

/// Checks the credentials a store would sign its requests with: asked when a request fails, to
/// tell "no credentials were found" from a store that cannot be reached.
type CredentialCheck =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, object_store::Result<()>> + Send + Sync>;

/// One remote: a store and a prefix.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    url: String,
    bucket: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
    /// Attempts of one request beyond the first, and how long they may take in all.
    retries: usize,
    retry_timeout: Duration,
    credentials: Option<(CredentialCheck, &'static str)>,
    /// How to make the requests `object_store` cannot (S3 remotes opened by URL only).
    s3: Option<S3Access>,
    /// Set on an immutable remote: every upload is locked ([`Remote::lock_uploads`]).
    locked: std::sync::OnceLock<LockedUploads>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

/// Where to set S3 credentials.
const S3_CREDENTIALS_HINT: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or \
     --remote-option aws_access_key_id=... --remote-option aws_secret_access_key=...), or \
     AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or run on an instance whose role grants access";
/// Where to set Azure credentials.
const AZURE_CREDENTIALS_HINT: &str = "set AZURE_STORAGE_ACCOUNT_NAME and \
     AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY; AZURE_STORAGE_USE_EMULATOR=true for \
     Azurite), or the same as --remote-option azure_storage_account_key=..., or run where a \
     managed identity grants access";

/// Takes `url` apart after checking every limit (scheme, bucket, length), before any request.
pub fn check_url(url: &str) -> Result<replog_format::remote::RemoteUrl<'_>> {
    replog_format::remote::parse_remote_url(url).map_err(|source| RemoteError::Url {
        url: url.chars().take(100).collect(),
        source,
    })
}

/// Backoff before retry `n` (from 1): 100 ms doubling, at most 5 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(100u64 << n.clamp(1, 7).saturating_sub(1)).min(Duration::from_secs(5))
}

/// A check of the credentials `provider` gives.
fn credential_check<T: 'static + Send + Sync>(
    provider: Arc<dyn object_store::CredentialProvider<Credential = T>>,
) -> CredentialCheck {
    Arc::new(move || {
        let provider = provider.clone();
        Box::pin(async move { provider.get_credential().await.map(drop) })
    })
}

impl Remote {
    /// Connects to `url` (`s3://BUCKET[/PREFIX]` or `az://CONTAINER[/PREFIX]`). No request is
    /// made yet.
    pub fn open(url: &str, opts: &RemoteOptions) -> Result<Remote> {
        let parts = check_url(url)?;
        let (scheme, bucket) = (parts.scheme, parts.bucket);
        // Every request is retried here, by `attempt`, whatever its method, so the store's own
        // retries are off: a final error then says how many attempts were made.
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 0,
            retry_timeout: opts.retry_timeout,
        };
        // Client settings go through the configuration keys, so that the ones the environment
        // sets (`AWS_ALLOW_HTTP`, ...) are kept.
        let config: Vec<(String, String)> = [
            (
                "timeout".to_owned(),
                format!("{}s", opts.request_timeout.as_secs().max(1)),
            ),
            ("connect_timeout".to_owned(), "10s".to_owned()),
        ]
        .into_iter()
        .chain(opts.config.iter().cloned())
        .collect();
        let refuse =
            |e: object_store::Error| Refusal::Unusable.because(format!("cannot use {url}: {e}"));
        install_tls_provider();
        let mut s3_access = None;
        let (store, check, hint): (Arc<dyn ObjectStore>, _, _) = if scheme == "s3" {
            let mut b = AmazonS3Builder::from_env();
            for (k, v) in &config {
                b = b.with_config(k.parse().map_err(refuse)?, v);
            }
            let b = b.with_bucket_name(bucket).with_retry(retry);
            let s3 = b.clone().build().map_err(refuse)?;
            let check = credential_check(s3.credentials().clone());
            let access = S3Access::new(&b, bucket, s3.credentials().clone(), opts.request_timeout);
            s3_access = Some(access);
            (Arc::new(s3), check, S3_CREDENTIALS_HINT)
        } else {
            let mut b = MicrosoftAzureBuilder::from_env();
            for (k, v) in &config {
                b = b.with_config(k.parse().map_err(refuse)?, v);
            }
            let az = b
                .with_container_name(bucket)
                .with_retry(retry)
                .build()
                .map_err(refuse)?;
            let check = credential_check(az.credentials().clone());
            (Arc::new(az), check, AZURE_CREDENTIALS_HINT)
        };
        let mut remote = Remote::with_store(store, url)?;
        remote.retries = opts.retries;
        remote.retry_timeout = opts.retry_timeout;
        remote.credentials = Some((check, hint));
        remote.s3 = s3_access;
        Ok(remote)
    }

    /// A remote over a given store (a wrapper that injects faults, in tests), which does its own
    /// retrying if any: each request is made once. `url` gives the prefix and names the remote in
    /// messages.
    pub fn with_store(store: Arc<dyn ObjectStore>, url: &str) -> Result<Remote> {
        let parts = check_url(url)?;
        let (bucket, prefix) = (parts.bucket.to_owned(), parts.prefix.to_owned());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("replog-remote")
            .enable_all()
            .build()
            .map_err(|e| Refusal::Unusable.because(format!("cannot start the I/O runtime: {e}")))?;
        Ok(Remote {
            store,
            url: url.trim_end_matches('/').to_owned(),
            bucket,
            prefix,
            runtime,
            retries: 0,
            retry_timeout: Duration::ZERO,
            credentials: None,
            s3: None,
            locked: std::sync::OnceLock::new(),
        })
    }

    /// Runs one request, `f`, again while it fails in a way another attempt may cure (the
    /// store's generic errors: transport failures, timeouts, 5xx), with backoff, until the
    /// retry budget (retries and time) is spent. A failure then says how many attempts were
    /// made; one whose credentials cannot be had says so instead.
    pub(crate) async fn attempt<T, F, Fut>(&self, key: &str, op: &'static str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        let started = std::time::Instant::now();
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            let e = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !matches!(e, object_store::Error::Generic { .. }) {
                return Err(self.store_error(key, op, attempts, e));
            }
            if let Some((check, hint)) = &self.credentials
                && check().await.is_err()
            {
                return Err(RemoteError::NoCredentials {
                    url: self.url.clone(),
                    hint,
                });
            }
            let pause = backoff(attempts);
            if attempts as usize > self.retries || started.elapsed() + pause > self.retry_timeout {
                return Err(self.store_error(key, op, attempts, e));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bucket or container.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// From now on, every object this remote writes is locked in `mode` for at least
    /// `period_s` seconds (S3 Object Lock); a second call can only lengthen the period. Refused
    /// on a remote that is not an `s3://` one opened by URL.
    pub fn lock_uploads(&self, mode: LockMode, period_s: u64) -> Result<&LockedUploads> {
        if let Some(l) = self.locked.get() {
            l.at_least(period_s);
            return Ok(l);
        }
        let Some(access) = &self.s3 else {
            return Err(Refusal::Unusable.because(format!(
                "{}: immutable remotes (--immutable) are supported on S3 (s3://) only; Azure \
                 immutability is not supported yet",
                self.url
            )));
        };
        let l = LockedUploads::new(access.clone(), mode, period_s)?;
        Ok(self.locked.get_or_init(|| l))
    }

    /// The locked uploads, when [`Remote::lock_uploads`] was called.
    pub fn locked(&self) -> Option<&LockedUploads> {
        self.locked.get()
    }

    /// The object's key in the bucket: `key` under the prefix.
    pub fn full_key(&self, key: &str) -> String {
        self.path(key).to_string()
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn store_error(
        &self,
        key: &str,
        op: &'static str,
        attempts: u32,
        source: object_store::Error,
    ) -> RemoteError {
        // A write or a listing that finds nothing at all means the bucket itself is missing
        // (an object's absence never fails those).
        if matches!(source, object_store::Error::NotFound { .. }) && matches!(op, "write" | "list")
        {
            return RemoteError::NoBucket {
                url: self.url.clone(),
                noun: if self.url.starts_with("az:") {
                    "container"
                } else {
                    "bucket"
                },
                bucket: self.bucket.clone(),
            };
        }
        RemoteError::Store {
            url: self.url.clone(),
            key: key.to_owned(),
            op,
            attempts,
            source: Box::new(source),
        }
    }

    /// Runs a future on this remote's runtime. Not from inside another runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// The whole object, or `None` when there is none.
    pub async fn get_async(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key);
        // The body is read inside the attempt, so a connection lost mid-body is retried too.
        self.attempt(key, "read", || async {
            match self.store.get(&path).await {
                Ok(got) => got.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// [`Remote::get_async`], blocking.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.block_on(self.get_async(key))
    }

    /// The object, which must exist.
    pub async fn get_required_async(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key);
        self.attempt(key, "read", || async {
            self.store.get(&path).await?.bytes().await
        })
        .await
    }

    /// Bytes `range` of an object.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key);
        self.block_on(self.attempt(key, "read a range of", || {
            self.store.get_range(&path, range.clone())
        }))
    }

    /// Writes an object that must not exist yet. Stores that enforce create-if-absent say when
    /// it does ([`Put::Existed`]); the others overwrite, which is harmless because a key always
    /// names the same bytes. A retry of a write that was carried out but not acknowledged finds
    /// the object there ([`Put::Existed`]); callers read it back either way.
    pub async fn put_create_async(&self, key: &str, bytes: Bytes) -> Result<Put> {
        let path = self.path(key);
        if let Some(locked) = self.locked.get() {
            let full = path.to_string();
            let created = self
                .attempt(key, "write", || locked.put(&full, bytes.clone(), true))
                .await?;
            return Ok(if created { Put::Created } else { Put::Existed });
        }
        self.attempt(key, "write", || async {
            let payload = PutPayload::from_bytes(bytes.clone());
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self.store.put_opts(&path, payload, opts).await {
                Ok(_) => Ok(Put::Created),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Put::Existed),
                Err(object_store::Error::NotImplemented { .. }) => self
                    .store
                    .put(&path, PutPayload::from_bytes(bytes.clone()))
                    .await
                    .map(|_| Put::Created),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// [`Remote::put_create_async`], blocking.
    pub fn put_create(&self, key: &str, bytes: Bytes) -> Result<Put> {
        self.block_on(self.put_create_async(key, bytes))
    }

    /// Every key under `dir/` (relative to the prefix) with its size, in no particular order.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        let path = self.path(dir);
        let strip = format!("{}/", self.path("").as_ref().trim_end_matches('/'));
        let metas: Vec<object_store::ObjectMeta> =
            self.block_on(
                self.attempt(dir, "list", || self.store.list(Some(&path)).try_collect()),
            )?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let full = m.location.as_ref();
                let key = if self.prefix.is_empty() {
                    full
                } else {
                    full.strip_prefix(strip.as_str()).unwrap_or(full)
                };
                (key.to_owned(), m.size)
            })
            .collect())
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        self.attempt(key, "delete", || async {
            match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// A `Damaged` error about `key`.
    pub fn damaged(&self, key: &str, detail: impl Into<String>) -> RemoteError {
        RemoteError::Damaged {
            url: self.url.clone(),
            key: key.to_owned(),
            detail: detail.into(),
        }
    }
}

/// Makes rustls over ring the process's TLS provider, which every `object_store` client needs
/// before it is built (object storage is built without aws-lc-rs, whose C build was the longest
/// step of a fresh build). Idempotent; [`Remote::open`] calls it, and so must code that builds
/// `object_store` clients of its own.
pub fn install_tls_provider() {
    // An error means a provider is installed already, which is all that is needed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
