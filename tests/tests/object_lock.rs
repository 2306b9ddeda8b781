//! Immutable remotes (`replog remote add --immutable`) against moto's S3 server, which has
//! S3 Object Lock: every object a sync uploads carries the lock (mode and retain-until date,
//! read back with HEAD), the server refuses to delete a locked version, an overwrite makes a
//! new version and the old one stays readable, garbage collection keeps what is locked and
//! says so, then deletes it once its date has passed, and the bucket still fails over
//! byte-exact. A bucket without Object Lock, and an Azure remote, are refused.
//!
//! The CLI behaviour runs the real `replog` binary (`cargo build -p replog` first). Without
//! moto these tests skip, saying so, unless `CI` is set: then a missing moto fails them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jiff::{SignedDuration, Timestamp};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore};
use replog_remote::lock::LockMode;
use replog_remote::{Remote, RemoteOptions};
use replog_tests::servers::{BUCKET, MotoServer, PLAIN_BUCKET};
use replog_tests::{noise, replog_bin};
use serde_json::Value;

/// How far a retain-until date may fall short of now + the period: the time between the
/// upload and the check, and rounding.
const SLACK: SignedDuration = SignedDuration::from_secs(120);

/// Runs `replog ARGS` with the server's settings.
fn replog(moto: Option<&MotoServer>, args: &[&str]) -> Output {
    let mut cmd = Command::new(replog_bin());
    cmd.args(args).env("REPLOG_IO_BACKEND", "sync");
    for (k, v) in moto.map(MotoServer::env).unwrap_or_default() {
        cmd.env(k, v);
    }
    cmd.output().expect("replog runs")
}

/// Runs `replog ARGS`, which must succeed, and returns its stdout.
fn ok(moto: &MotoServer, args: &[&str]) -> String {
    let out = replog(Some(moto), args);
    assert!(
        out.status.success(),
        "replog {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn json(moto: &MotoServer, args: &[&str]) -> Value {
    serde_json::from_str(&ok(moto, args)).expect("JSON output")
}

/// A vault in `dir/v` with one disk `os` seeded from an image, and a point. Returns the vault
/// and the image.
fn vault(moto: &MotoServer, dir: &Path) -> (PathBuf, Vec<u8>) {
    let v = dir.join("v");
    let raw = dir.join("os.raw");
    let bytes = noise(1, 1 << 20);
    std::fs::write(&raw, &bytes).unwrap();
    ok(moto, &["init", s(&v)]);
    ok(moto, &["disk", "add", s(&v), "os", "--from", s(&raw)]);
    ok(moto, &["point", s(&v)]);
    (v, bytes)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Fails over the bucket's newest point into `dir/NAME` and returns the disk.
fn failover_from_bucket(moto: &MotoServer, url: &str, dir: &Path, name: &str) -> Vec<u8> {
    let out = dir.join(name);
    ok(moto, &["failover", url, "--latest", "--out", s(&out)]);
    std::fs::read(out.join("os.raw")).unwrap()
}

/// The server's remote at `url`, its uploads locked as `mode` (for HEAD, DELETE and PUT).
fn remote(moto: &MotoServer, url: &str) -> Remote {
    let opts = RemoteOptions {
        config: (moto.env().into_iter())
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        retries: 1,
        ..RemoteOptions::default()
    };
    Remote::open(url, &opts).expect("a remote")
}

/// An `object_store` client of the bucket with Object Lock.
fn store(moto: &MotoServer) -> impl ObjectStore {
    replog_remote::install_tls_provider();
    let mut b = AmazonS3Builder::new().with_bucket_name(BUCKET);
    for (k, v) in moto.env() {
        b = b.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
    }
    b.build().expect("an S3 client")
}

fn until(v: &Value) -> Timestamp {
    v.as_str()
        .expect("a date")
        .parse()
        .expect("an RFC 3339 date")
}

#[test]
fn every_upload_is_locked_for_the_longer_of_the_period_and_the_retention_window() {
    let Some(moto) = MotoServer::start_or_skip("object_lock") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (v, disk) = vault(&moto, dir.path());
    let url = moto.url("every");
    // The retention window (2 days) is longer than the period (1 day): it wins.
    ok(&moto, &["retention", s(&v), "--window", "2d"]);
    ok(&moto, &["remote", "add", s(&v), &url, "--immutable", "1d"]);
    let synced = json(&moto, &["sync", s(&v), "--seal", "--json"]);
    assert_eq!(synced["lock"]["mode"], "compliance");
    assert_eq!(synced["lock"]["period_seconds"], 2 * 86_400);

    let r = remote(&moto, &url);
    let locked = r.lock_uploads(LockMode::Compliance, 86_400).unwrap();
    let keys = r.list("").unwrap();
    assert!(
        keys.len() >= 5,
        "VAULT, a manifest, its mark, maps, chunks: {keys:?}"
    );
    let horizon = Timestamp::now() + SignedDuration::from_hours(48) - SLACK;
    let mut versions = Vec::new();
    for (key, _) in &keys {
        let full = r.full_key(key);
        let lock = r.block_on(locked.head(&full)).unwrap().expect("listed");
        assert_eq!(lock.mode, Some(LockMode::Compliance), "{key}");
        let date = lock.retain_until.expect("a retain-until date");
        assert!(
            date >= horizon,
            "{key} locked until {date}, before {horizon}"
        );
        versions.push((full, lock.version_id.expect("a versioned bucket")));
    }

    // The store refuses to delete any locked version, and the object stays.
    let (full, version) = versions
        .iter()
        .find(|(k, _)| k.contains("chunks/"))
        .unwrap();
    assert!(!r.block_on(locked.delete(full, Some(version))).unwrap());
    assert!(r.block_on(locked.head(full)).unwrap().is_some());

    // `remote show` gives the horizon: the mode, the period, and the newest object's date.
    let shown = json(&moto, &["remote", "show", s(&v), "--json"]);
    assert_eq!(shown["lock"]["mode"], "compliance");
    assert_eq!(shown["lock"]["period_seconds"], 86_400);
    assert!(until(&shown["lock"]["latest_retain_until"]) >= horizon);
    assert!(until(&shown["lock"]["all_locked_until"]) >= horizon);

    assert!(failover_from_bucket(&moto, &url, dir.path(), "out") == disk);
}

#[test]
fn objects_uploaded_before_the_remote_was_made_immutable_are_locked_by_the_next_sync() {
    let Some(moto) = MotoServer::start_or_skip("object_lock") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (v, disk) = vault(&moto, dir.path());
    let url = moto.url("before");
    ok(&moto, &["remote", "add", s(&v), &url]);
    ok(&moto, &["sync", s(&v), "--seal"]);
    let r = remote(&moto, &url);
    let locked = r.lock_uploads(LockMode::Compliance, 86_400).unwrap();
    let chunk = r.full_key(&r.list("chunks").unwrap()[0].0);
    let before = r.block_on(locked.head(&chunk)).unwrap().unwrap();
    assert_eq!(before.retain_until, None, "uploaded unlocked");

    ok(&moto, &["remote", "add", s(&v), &url, "--immutable", "1d"]);
    // Nothing new to upload: the sync only locks what the remote manifest needs.
    let synced = json(&moto, &["sync", s(&v), "--json"]);
    assert_eq!(synced["files_uploaded"], 0, "{synced}");
    let horizon = Timestamp::now() + SignedDuration::from_hours(24) - SLACK;
    for (key, _) in r.list("").unwrap() {
        let lock = r.block_on(locked.head(&r.full_key(&key))).unwrap().unwrap();
        let date = lock.retain_until.expect("locked by the sync");
        assert!(date >= horizon, "{key} locked until {date}");
        assert_eq!(lock.mode, Some(LockMode::Compliance), "{key}");
    }
    let (full, version) = (&chunk, before.version_id.as_deref());
    assert!(!r.block_on(locked.delete(full, version)).unwrap());
    assert!(failover_from_bucket(&moto, &url, dir.path(), "out") == disk);
}

#[test]
fn an_overwrite_makes_a_new_version_and_the_locked_one_stays_readable() {
    let Some(moto) = MotoServer::start_or_skip("object_lock") else {
        return;
    };
    let r = remote(&moto, &moto.url("overwrite"));
    let locked = r.lock_uploads(LockMode::Compliance, 3600).unwrap();
    let full = r.full_key("probe");
    r.block_on(locked.put(&full, "first".into(), true)).unwrap();
    let first = r.block_on(locked.head(&full)).unwrap().unwrap();
    // A create-if-absent write finds it there.
    let created = r.block_on(locked.put(&full, "second".into(), true));
    assert!(!created.unwrap());
    r.block_on(locked.put(&full, "second".into(), false))
        .unwrap();
    let second = r.block_on(locked.head(&full)).unwrap().unwrap();
    assert_ne!(first.version_id, second.version_id);

    let store = store(&moto);
    let path = ObjectPath::from(full.as_str());
    let read = |version: Option<String>| {
        let opts = GetOptions {
            version,
            ..GetOptions::default()
        };
        r.block_on(async { store.get_opts(&path, opts).await?.bytes().await })
            .unwrap()
    };
    assert_eq!(&read(None)[..], b"second");
    assert_eq!(&read(first.version_id.clone())[..], b"first");
    assert!(
        !r.block_on(locked.delete(&full, first.version_id.as_deref()))
            .unwrap()
    );
}

#[test]
fn garbage_collection_keeps_locked_objects_then_deletes_them_once_their_date_passed() {
    let Some(moto) = MotoServer::start_or_skip("object_lock") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(&moto, dir.path());
    let url = moto.url("gc");
    let add = ["remote", "add", s(&v), &url, "--keep-manifests", "1"];
    let lock = ["--immutable", "8s", "--lock-mode", "governance"];
    ok(&moto, &[&add[..], &lock[..]].concat());
    ok(&moto, &["sync", s(&v), "--seal"]);

    // Governance: without the bypass header, a locked version cannot be deleted either.
    let r = remote(&moto, &url);
    let locked = r.lock_uploads(LockMode::Governance, 8).unwrap();
    let full = r.full_key(replog_format::remote::VAULT_KEY);
    let head = r.block_on(locked.head(&full)).unwrap().unwrap();
    assert_eq!(head.mode, Some(LockMode::Governance));
    let first_until = head.retain_until.unwrap();
    assert!(
        !r.block_on(locked.delete(&full, head.version_id.as_deref()))
            .unwrap()
    );

    // New data, and a prune that drops the first point: the first sync's manifest and the
    // objects only it needs are garbage, but still locked.
    let raw = dir.path().join("os2.raw");
    let disk = noise(2, 1 << 20);
    std::fs::write(&raw, &disk).unwrap();
    ok(&moto, &["ingest", s(&v), "os", "--from", s(&raw)]);
    ok(&moto, &["point", s(&v)]);
    ok(&moto, &["prune", s(&v), "--keep-last", "1"]);
    let synced = json(&moto, &["sync", s(&v), "--seal", "--json"]);
    assert!(
        Timestamp::now() < first_until,
        "the machine is too slow for this test: the first sync's locks ran out ({first_until}) \
         before the second sync ended"
    );
    let kept = synced["lock"]["kept_locked"].as_u64().unwrap();
    assert!(
        kept >= 2,
        "the first manifest and what only it names: {synced}"
    );
    let kept_until = until(&synced["lock"]["kept_locked_until"]);
    assert!(kept_until <= first_until + SignedDuration::from_secs(2));
    let text = ok(&moto, &["sync", s(&v)]);
    assert!(text.contains("because they are locked"), "{text}");
    assert!(failover_from_bucket(&moto, &url, dir.path(), "out1") == disk);

    // Once the date has passed, the next sync deletes them.
    let wait = kept_until.duration_since(Timestamp::now()) + SignedDuration::from_secs(1);
    std::thread::sleep(wait.try_into().unwrap_or_default());
    let later = json(&moto, &["sync", s(&v), "--json"]);
    assert_eq!(later["lock"]["kept_locked"], 0, "{later}");
    assert!(
        later["deleted_objects"].as_u64().unwrap() >= kept,
        "{later}"
    );
    assert!(failover_from_bucket(&moto, &url, dir.path(), "out2") == disk);
}

#[test]
fn a_bucket_without_object_lock_is_refused_and_no_remote_is_added() {
    let Some(moto) = MotoServer::start_or_skip("object_lock") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (v, _) = vault(&moto, dir.path());
    let out = replog(
        Some(&moto),
        &[
            "remote",
            "add",
            s(&v),
            &moto.plain_url("p"),
            "--immutable",
            "30d",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "bucket {PLAIN_BUCKET} does not have S3 Object Lock enabled"
        )),
        "{err}"
    );
    assert!(!v.join("remote").join("CONFIG").exists());
}

#[test]
fn immutable_is_refused_on_azure_and_a_bad_period_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let v = dir.path().join("v");
    assert!(replog(None, &["init", s(&v)]).status.success());
    let out = replog(
        None,
        &["remote", "add", s(&v), "az://c/p", "--immutable", "1d"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not supported yet on Azure"), "{err}");
    for bad in ["0d", "soon", "12"] {
        let out = replog(
            None,
            &["remote", "add", s(&v), "s3://b/p", "--immutable", bad],
        );
        assert_eq!(out.status.code(), Some(64), "--immutable {bad}");
    }
    let out = replog(
        None,
        &[
            "remote",
            "add",
            s(&v),
            "s3://b/p",
            "--lock-mode",
            "governance",
        ],
    );
    assert_eq!(out.status.code(), Some(64), "--lock-mode needs --immutable");
    assert!(!v.join("remote").join("CONFIG").exists());
}

/// moto checks no signature; s3s-fs checks SigV4 on every request. The lock requests, signed by
/// `aws-sigv4`, pass it (a HEAD, and a PUT whose body, lock headers and `If-None-Match` are
/// signed), and the same requests signed with a wrong secret are refused.
#[test]
fn lock_requests_are_signed_as_s3_checks_them() {
    use replog_tests::servers::S3Server;
    let server = S3Server::start().expect("s3s-fs starts (scripts/setup.sh installs it)");
    let options = |secret: Option<&str>| RemoteOptions {
        config: (server.env().into_iter())
            .map(|(k, v)| match (k.as_str(), secret) {
                ("AWS_SECRET_ACCESS_KEY", Some(s)) => (k.to_ascii_lowercase(), s.to_owned()),
                _ => (k.to_ascii_lowercase(), v),
            })
            .collect(),
        retries: 0,
        ..RemoteOptions::default()
    };
    let url = server.url("signed");
    let r = Remote::open(&url, &options(None)).unwrap();
    r.put_create("plain", "unlocked".into()).unwrap();
    let locked = r.lock_uploads(LockMode::Compliance, 60).unwrap();
    let head = r.block_on(locked.head(&r.full_key("plain"))).unwrap();
    assert!(head.is_some(), "a signed HEAD finds the object");
    let full = r.full_key("locked");
    assert!(r.block_on(locked.put(&full, "bytes".into(), true)).unwrap());
    assert!(r.block_on(locked.head(&full)).unwrap().is_some());

    let wrong = Remote::open(&url, &options(Some("not-the-secret"))).unwrap();
    let locked = wrong.lock_uploads(LockMode::Compliance, 60).unwrap();
    let refused = wrong.block_on(locked.head(&wrong.full_key("plain")));
    assert!(
        refused.is_err(),
        "a HEAD signed with a wrong secret: {refused:?}"
    );
    let refused = wrong.block_on(locked.put(&full, "other".into(), false));
    assert!(
        refused.is_err(),
        "a PUT signed with a wrong secret: {refused:?}"
    );
}
