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

use crate::error::{RemoteError, Result};

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

/// One remote: a store and a prefix.
pub struct Remote {
    store: Arc<dyn ObjectStore>,
    url: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

/// Splits `s3://bucket/a/b` into (`s3`, `bucket`, `a/b`).
fn split_url(url: &str) -> Result<(&str, &str, String)> {
    if !replog_format::remote::is_remote_url(url) {
        return Err(RemoteError::Refused(format!(
            "{url} is not a remote replog knows: give s3://BUCKET[/PREFIX] or \
             az://CONTAINER[/PREFIX]"
        )));
    }
    let (scheme, rest) = url.split_once("://").expect("checked above");
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Ok((scheme, bucket, prefix.trim_matches('/').to_owned()))
}

impl Remote {
    /// Connects to `url` (`s3://BUCKET[/PREFIX]` or `az://CONTAINER[/PREFIX]`). No request is
    /// made yet.
    pub fn open(url: &str, opts: &RemoteOptions) -> Result<Remote> {
        let (scheme, bucket, _) = split_url(url)?;
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: opts.retries,
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
            |e: object_store::Error| RemoteError::Refused(format!("cannot use {url}: {e}"));
        let store: Arc<dyn ObjectStore> = if scheme == "s3" {
            let mut b = AmazonS3Builder::from_env();
            for (k, v) in &config {
                b = b.with_config(k.parse().map_err(refuse)?, v);
            }
            Arc::new(
                b.with_bucket_name(bucket)
                    .with_retry(retry)
                    .build()
                    .map_err(refuse)?,
            )
        } else {
            let mut b = MicrosoftAzureBuilder::from_env();
            for (k, v) in &config {
                b = b.with_config(k.parse().map_err(refuse)?, v);
            }
            Arc::new(
                b.with_container_name(bucket)
                    .with_retry(retry)
                    .build()
                    .map_err(refuse)?,
            )
        };
        Remote::with_store(store, url)
    }

    /// A remote over a given store (a wrapper that injects faults, in tests); `url` gives the
    /// prefix and names the remote in messages.
    pub fn with_store(store: Arc<dyn ObjectStore>, url: &str) -> Result<Remote> {
        let (_, _, prefix) = split_url(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("replog-remote")
            .enable_all()
            .build()
            .map_err(|e| RemoteError::Refused(format!("cannot start the I/O runtime: {e}")))?;
        Ok(Remote {
            store,
            url: url.trim_end_matches('/').to_owned(),
            prefix,
            runtime,
        })
    }

    /// The URL, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn store_error(&self, key: &str, op: &'static str, source: object_store::Error) -> RemoteError {
        RemoteError::Store {
            url: self.url.clone(),
            key: key.to_owned(),
            op,
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
        let got = match self.store.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.store_error(key, "read", e)),
        };
        got.bytes()
            .await
            .map(Some)
            .map_err(|e| self.store_error(key, "read", e))
    }

    /// [`Remote::get_async`], blocking.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.block_on(self.get_async(key))
    }

    /// The object, which must exist.
    pub async fn get_required_async(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key);
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.store_error(key, "read", e))?;
        got.bytes()
            .await
            .map_err(|e| self.store_error(key, "read", e))
    }

    /// Bytes `range` of an object.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.block_on(async {
            self.store
                .get_range(&self.path(key), range)
                .await
                .map_err(|e| self.store_error(key, "read a range of", e))
        })
    }

    /// Writes an object that must not exist yet. Stores that enforce create-if-absent say when
    /// it does ([`Put::Existed`]); the others overwrite, which is harmless because a key always
    /// names the same bytes.
    pub async fn put_create_async(&self, key: &str, bytes: Bytes) -> Result<Put> {
        let path = self.path(key);
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
                .put(&path, PutPayload::from_bytes(bytes))
                .await
                .map(|_| Put::Created)
                .map_err(|e| self.store_error(key, "write", e)),
            Err(e) => Err(self.store_error(key, "write", e)),
        }
    }

    /// [`Remote::put_create_async`], blocking.
    pub fn put_create(&self, key: &str, bytes: Bytes) -> Result<Put> {
        self.block_on(self.put_create_async(key, bytes))
    }

    /// Every key under `dir/` (relative to the prefix) with its size, in no particular order.
    pub fn list(&self, dir: &str) -> Result<Vec<(String, u64)>> {
        let path = self.path(dir);
        let strip = format!("{}/", self.path("").as_ref().trim_end_matches('/'));
        self.block_on(async {
            let metas: Vec<_> = self
                .store
                .list(Some(&path))
                .try_collect()
                .await
                .map_err(|e| self.store_error(dir, "list", e))?;
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
        })
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error(key, "delete", e)),
        }
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
