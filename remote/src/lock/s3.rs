//! The requests of immutable S3 remotes that `object_store` cannot make: a PUT with the
//! `x-amz-object-lock-*` headers and a `Content-MD5` (S3 requires a checksum when retention is
//! set), a HEAD that reads an object's lock and version from its response headers, a DELETE of
//! one version, and the bucket's `?object-lock` configuration. Made over reqwest and signed
//! with SigV4 by `aws-sigv4` (S3 wants every `x-amz-*` header signed).
//!
//! Each returns an `object_store::Error` of the kind the rest of the crate handles, so one
//! retry loop serves all requests: transport failures, 429 and 5xx are `Generic` (retried);
//! 404, 409/412, 401 and 403 are `NotFound`, `Precondition`, `Unauthenticated` and
//! `PermissionDenied`; any other status is `NotSupported`, quoting S3's answer.

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
use replog_format::remote_lock::{LOCK_PERIOD_S_MAX, LockMode};

use crate::error::{Refusal, Result};

/// The store name in the `object_store` errors made here.
const STORE: &str = "S3";
/// Longest error body quoted in a message.
const BODY_QUOTED_BYTES_MAX: usize = 300;

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
    /// Uploads locked in `mode` for `period_s` seconds, through `access`. The TLS provider is
    /// installed already: `access` comes from `Remote::open`, which installs it.
    pub(crate) fn new(access: S3Access, mode: LockMode, period_s: u64) -> Result<LockedUploads> {
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
    /// `create`, only if no object is there (`If-None-Match: *`). Returns whether it wrote: false
    /// when `create` found an object there.
    pub async fn put(
        &self,
        full_key: &str,
        bytes: Bytes,
        create: bool,
    ) -> object_store::Result<bool> {
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
            200 | 201 | 204 => Ok(true),
            412 if create => Ok(false),
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

    /// Locks the object at `full_key` (its current version) until `until`, in this mode
    /// (`PUT ?retention`, with `Content-MD5`). Returns `false` when the store refuses (403): a
    /// lock of that object cannot be shortened, so it may already be locked longer.
    pub async fn retain(&self, full_key: &str, until: Timestamp) -> object_store::Result<bool> {
        let body = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
             <RetainUntilDate>{}</RetainUntilDate></Retention>",
            self.mode.as_s3(),
            s3_date(until)
        );
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(body.as_bytes()));
        let headers = vec![("content-md5", md5)];
        let r = self
            .send("PUT", full_key, "retention=", headers, Bytes::from(body))
            .await?;
        match r.status().as_u16() {
            200 | 204 => Ok(true),
            403 => Ok(false),
            status => {
                let body = r.text().await.unwrap_or_default();
                Err(status_error(status, "PUT ?retention", full_key, body))
            }
        }
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
