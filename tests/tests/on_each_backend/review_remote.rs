//! Regression tests of the object storage path, driving the built `replog` binary as a child
//! process against a real S3 server on loopback (s3s-fs, started by [`S3Server`]): URL limits,
//! a damaged or missing newest remote manifest, a store that lost its data, a closed stdout, and
//! the exit codes and messages of remote failures.
//!
//! The binary is the one `cargo build -p replog` leaves next to this test's executable
//! (`target/<profile>/replog`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use replog_format::remote;
use replog_remote::{Remote, RemoteOptions};
use replog_tests::replog_bin;
use replog_tests::servers::{AzuriteServer, S3Server};
use replog_writer::{Compression, PointKind, VaultSettings, Writer};

const DISK_BYTES: u64 = 8 << 20;

/// `replog ARGS` with the server's environment (and nothing else of the test's credentials).
pub(super) fn replog(server: &S3Server, args: &[&str]) -> Output {
    let mut cmd = Command::new(replog_bin());
    cmd.args(args).env("REPLOG_IO_BACKEND", "sync");
    for (k, v) in server.env() {
        cmd.env(k, v);
    }
    cmd.output().expect("replog ran")
}

pub(super) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub(super) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the exit code and that nothing panicked; returns stderr.
pub(super) fn expect_exit(out: &Output, code: i32, what: &str) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: status {:?}, stderr: {err}, stdout: {}",
        out.status,
        stdout(out)
    );
    assert!(!err.contains("panicked"), "{what}: {err}");
    err
}

/// A vault with two disks and `rounds` points from round `first` (four writes each), the
/// segment sealed after.
fn write_rounds(dir: &Path, first: u64, rounds: u64) {
    let shape = super::remote::Rounds {
        writes: 4,
        len_min: 30_000,
        len_spread: 200_000,
    };
    super::remote::write_rounds_of(shape, dir, (first, rounds), DISK_BYTES, None);
}

/// A handle on the server's bucket under `prefix`, for changing objects behind replog's back.
fn handle(server: &S3Server, prefix: &str) -> Remote {
    let opts = RemoteOptions {
        retries: 1,
        ..super::remote::options(server.env())
    };
    Remote::open(&server.url(prefix), &opts).expect("remote")
}

/// Replaces object `key` with `bytes`.
fn overwrite(remote: &Remote, key: &str, bytes: Vec<u8>) {
    remote.block_on(remote.delete_async(key)).expect("deleted");
    remote.put_create(key, Bytes::from(bytes)).expect("written");
}

fn delete(remote: &Remote, key: &str) {
    remote.block_on(remote.delete_async(key)).expect("deleted");
}

/// A vault in `tmp/vault` with a remote at `prefix`, synced after 4 rounds and again after 4
/// more: remote manifests 1 and 2. Returns the vault directory and the URL.
fn synced_twice(server: &S3Server, tmp: &Path, prefix: &str) -> (PathBuf, String) {
    let dir = tmp.join("vault");
    let url = server.url(prefix);
    write_rounds(&dir, 0, 4);
    let v = dir.to_str().unwrap();
    expect_exit(
        &replog(server, &["remote", "add", v, &url]),
        0,
        "remote add",
    );
    expect_exit(&replog(server, &["sync", v]), 0, "first sync");
    write_rounds(&dir, 4, 4);
    expect_exit(&replog(server, &["sync", v]), 0, "second sync");
    (dir, url)
}

/// Point ids `replog points --json` lists.
fn listed_points(out: &Output) -> Vec<u64> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let points = v.get("points").unwrap_or(&v);
    points
        .as_array()
        .expect("an array of points")
        .iter()
        .map(|p| p["id"].as_u64().or(p["point_id"].as_u64()).expect("an id"))
        .collect()
}

/// Finding 5: `remote add` of a URL over the 2048-byte limit of the remote configuration
/// panicked (exit 101) on an assert in the encoder, after it had already written `VAULT` to
/// the bucket. Every limit is now checked before any request.
#[test]
fn finding_5_remote_add_of_a_url_over_the_limit_exits_1_and_writes_nothing() {
    let server = S3Server::start().expect("s3s-fs started");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    write_rounds(&dir, 0, 1);
    let url = format!("{}{}", server.url("p"), "/".repeat(2100));
    let out = replog(&server, &["remote", "add", dir.to_str().unwrap(), &url]);
    let err = expect_exit(&out, 1, "remote add of a long URL");
    assert!(
        err.contains("2048") && err.contains("unsupported URL"),
        "the error names the limit: {err}"
    );
    let written: Vec<_> = super::remote::walk(&server.root().join(server.bucket()));
    assert!(written.is_empty(), "nothing is written: {written:?}");
    assert!(!dir.join("remote/CONFIG").exists());
}

/// Finding 8: with remote manifests 1 and 2, a flipped bit in manifest 2 made `points` list the
/// points of manifest 1 and `failover --latest` fail over to an older point, exit 0, silently.
/// A damaged newest manifest is damage (exit 2, naming it); reading the older one needs
/// `--allow-older` and is warned of.
#[test]
fn finding_8_a_damaged_newest_remote_manifest_is_damage_and_needs_allow_older() {
    let server = S3Server::start().expect("s3s-fs started");
    let tmp = tempfile::tempdir().unwrap();
    let (dir, url) = synced_twice(&server, tmp.path(), "rb");
    let all = listed_points(&replog(&server, &["points", &url, "--json"]));
    let local = listed_points(&replog(
        &server,
        &["points", dir.to_str().unwrap(), "--json"],
    ));
    assert_eq!(all, local, "the bucket offers every point");

    let remote = handle(&server, "rb");
    let key = remote::manifest_key(2);
    let mut bytes = remote.get(&key).unwrap().expect("manifest 2").to_vec();
    bytes[100] ^= 0x10;
    overwrite(&remote, &key, bytes);

    let err = expect_exit(&replog(&server, &["points", &url]), 2, "points");
    assert!(err.contains(&key), "the error names {key}: {err}");
    let out_dir = tmp.path().join("out");
    let out = replog(
        &server,
        &[
            "failover",
            &url,
            "--latest",
            "--out",
            out_dir.to_str().unwrap(),
        ],
    );
    expect_exit(&out, 2, "failover --latest");
    assert!(!out_dir.join("os.raw").exists());

    let out = replog(&server, &["points", &url, "--json", "--allow-older"]);
    let err = expect_exit(&out, 0, "points --allow-older");
    assert!(err.contains("warning") && err.contains(&key), "{err}");
    let older = listed_points(&out);
    assert!(older.len() < all.len(), "{older:?} of {all:?}");
}

/// Finding 8: a deleted newest remote manifest rolled the bucket back silently, just as a
/// damaged one did. Its mark (`marks/<seq>`) still shows its number, so reading the older one
/// is refused without `--allow-older`, and warned of with it.
#[test]
fn finding_8_a_deleted_newest_remote_manifest_needs_allow_older() {
    let server = S3Server::start().expect("s3s-fs started");
    let tmp = tempfile::tempdir().unwrap();
    let (_dir, url) = synced_twice(&server, tmp.path(), "gone");
    let all = listed_points(&replog(&server, &["points", &url, "--json"]));
    let remote = handle(&server, "gone");
    delete(&remote, &remote::manifest_key(2));

    let out_dir = tmp.path().join("out");
    let out_arg = out_dir.to_str().unwrap();
    let err = expect_exit(
        &replog(&server, &["failover", &url, "--latest", "--out", out_arg]),
        1,
        "failover --latest",
    );
    assert!(
        err.contains(&remote::manifest_key(2)) && err.contains("--allow-older"),
        "the error says what is missing and how to go on: {err}"
    );
    assert!(!out_dir.join("os.raw").exists());
    expect_exit(&replog(&server, &["points", &url]), 1, "points");

    let out = replog(
        &server,
        &[
            "failover",
            &url,
            "--latest",
            "--out",
            out_arg,
            "--allow-older",
        ],
    );
    let err = expect_exit(&out, 0, "failover --latest --allow-older");
    assert!(err.contains("warning") && err.contains("missing"), "{err}");
    assert!(out_dir.join("os.raw").exists());
    let older = listed_points(&replog(
        &server,
        &["points", &url, "--json", "--allow-older"],
    ));
    assert!(older.len() < all.len(), "{older:?} of {all:?}");
}

/// Finding 9: after the store lost everything (a wiped bucket), `sync` trusted `remote/LATEST`,
/// published a manifest naming objects that were gone and then failed in garbage collection.
/// It now refuses and says what is missing, publishing and evicting nothing; `sync --scrub`
/// uploads again from the local files, and the bucket then serves every point byte for byte.
#[test]
fn finding_9_sync_refuses_after_the_store_lost_data_and_a_scrub_uploads_again() {
    let server = S3Server::start().expect("s3s-fs started");
    let tmp = tempfile::tempdir().unwrap();
    let (dir, url) = synced_twice(&server, tmp.path(), "lost");
    let v = dir.to_str().unwrap();
    let remote = handle(&server, "lost");
    let expected = super::remote::contents(super::storage(), &dir);
    for (key, _) in remote.list("").expect("listed") {
        delete(&remote, &key);
    }

    let err = expect_exit(&replog(&server, &["sync", v]), 1, "sync after the loss");
    assert!(
        err.contains("lost") && err.contains("--scrub") && err.contains("remote/LATEST"),
        "the error says what is missing and what to do: {err}"
    );
    let manifests = remote.list(remote::MANIFESTS_DIR).expect("listed");
    assert!(manifests.is_empty(), "nothing is published: {manifests:?}");

    expect_exit(&replog(&server, &["sync", v, "--scrub"]), 0, "sync --scrub");
    let rv = replog_remote::open_remote(Arc::new(remote), super::storage(), 8)
        .expect("the bucket holds the vault again");
    assert_eq!(super::remote::contents(rv.storage, &rv.root), expected);
    expect_exit(&replog(&server, &["sync", v]), 0, "a plain sync after");
    let _ = url;
}

/// Finding 10: `main` set SIGPIPE to its default, so `replog points V | head -1` (or a write to
/// a socket whose server died) killed the process with signal 13. A closed stdout is now a
/// quiet exit 0, with no panic message.
#[test]
fn finding_10_points_into_a_closed_pipe_exits_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let storage = super::storage();
    let settings = VaultSettings {
        block_bytes: 4096,
        segment_bytes: 64 << 20,
        compression: Compression::None,
    };
    let mut w = Writer::create(storage, &dir, settings).expect("created");
    w.add_disk("os", 1 << 20).expect("added");
    // Enough points that the listing is larger than a pipe's buffer.
    for i in 0..2000u64 {
        w.write(1, (i % 256) * 4096, &[i as u8; 4096]).unwrap();
        w.point(
            PointKind::CrashConsistent,
            "a label long enough to fill the pipe",
        )
        .unwrap();
    }
    w.close().unwrap();
    let mut child = Command::new(replog_bin())
        .args(["points", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawned");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .expect("a line");
    // The reader is dropped here, like `head -1` exiting.
    let out = child.wait_with_output().expect("waited");
    assert!(!first.is_empty());
    let err = expect_exit(&out, 0, "points into a closed pipe");
    assert!(!err.contains("failed printing"), "{err}");
}

/// Finding 10: `sync` died of SIGPIPE (exit 141, nothing printed) in some runs where the
/// server went away mid-upload. It must fail with exit 1 and a message naming the remote.
#[test]
fn finding_10_sync_against_a_server_killed_mid_upload_exits_1_with_a_message() {
    let mut server = S3Server::start().expect("s3s-fs started");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    write_rounds(&dir, 0, 16);
    let url = server.url("kill");
    let v = dir.to_str().unwrap().to_owned();
    expect_exit(&replog(&server, &["remote", "add", &v, &url]), 0, "add");
    let mut cmd = Command::new(replog_bin());
    cmd.args(["sync", &v, "--remote-retries", "1", "--concurrency", "2"])
        .env("REPLOG_IO_BACKEND", "sync");
    for (k, val) in server.env() {
        cmd.env(k, val);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawned");
    let chunks = server.root().join(server.bucket());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline && super::remote::walk(&chunks).len() < 3 {
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill();
    let out = child.wait_with_output().expect("waited");
    if out.status.success() {
        // The upload was quicker than the kill: nothing to check on this machine.
        return;
    }
    let err = expect_exit(&out, 1, "sync with its server killed");
    assert!(err.contains(&url), "the error names the remote: {err}");
}

/// Finding 11: a chunk whose bytes do not hash to its key, and a chunk cut short, exited 1
/// (a failure) rather than 2 (damage), as the README says.
#[test]
fn finding_11_a_damaged_or_truncated_chunk_exits_2() {
    let server = S3Server::start().expect("s3s-fs started");
    let tmp = tempfile::tempdir().unwrap();
    let (_dir, url) = synced_twice(&server, tmp.path(), "chunks");
    let remote = handle(&server, "chunks");
    let newest = replog_remote::newest_manifest(&remote, &vault_id(&remote), seed(&remote))
        .unwrap()
        .0
        .unwrap();
    let out_dir = tmp.path().join("out");
    let out_arg = out_dir.to_str().unwrap();
    for (kind, truncate) in [
        (remote::FileKind::Base, false),
        (remote::FileKind::Segment, true),
        (remote::FileKind::Base, true),
    ] {
        let file = newest.files.iter().find(|f| f.id.kind == kind).unwrap();
        let map = remote::FileMap::decode(
            &remote.get(&remote::map_key(&file.map)).unwrap().unwrap(),
            seed(&remote),
        )
        .unwrap();
        let hash = map
            .chunks
            .iter()
            .find(|c| **c != remote::ZERO_CHUNK)
            .unwrap();
        let key = remote::chunk_key(hash);
        let original = remote.get(&key).unwrap().unwrap().to_vec();
        let damaged = if truncate {
            original[..original.len() / 3].to_vec()
        } else {
            original.iter().map(|b| b ^ 0x5a).collect()
        };
        overwrite(&remote, &key, damaged);
        let out = replog(
            &server,
            &["failover", &url, "--latest", "--out", out_arg, "--force"],
        );
        expect_exit(&out, 2, &format!("{kind:?} chunk, truncated: {truncate}"));
        overwrite(&remote, &key, original);
    }
    // A file map whose bytes do not hash to its key.
    let file = newest
        .files
        .iter()
        .find(|f| f.id.kind == remote::FileKind::Base);
    let key = remote::map_key(&file.unwrap().map);
    let mut bytes = remote.get(&key).unwrap().unwrap().to_vec();
    bytes[80] ^= 1;
    overwrite(&remote, &key, bytes);
    let out = replog(
        &server,
        &["failover", &url, "--latest", "--out", out_arg, "--force"],
    );
    let err = expect_exit(&out, 2, "a damaged file map");
    assert!(err.contains(&key), "{err}");
}

fn vault_id(remote: &Remote) -> [u8; 16] {
    let bytes = remote.get(remote::VAULT_KEY).unwrap().unwrap();
    replog_format::header::VaultHeader::decode(&bytes)
        .unwrap()
        .vault_id
}

fn seed(remote: &Remote) -> u32 {
    replog_format::vault_seed(&vault_id(remote))
}

/// Finding 11: with every remote manifest damaged, `points` said the remote "has no remote
/// manifest yet: run `replog sync`" (exit 1). It is damage, naming them.
#[test]
fn finding_11_every_manifest_damaged_is_damage_naming_them() {
    let server = S3Server::start().expect("s3s-fs started");
    let tmp = tempfile::tempdir().unwrap();
    let (_dir, url) = synced_twice(&server, tmp.path(), "allbad");
    let remote = handle(&server, "allbad");
    for seq in [1, 2] {
        let key = remote::manifest_key(seq);
        let mut bytes = remote.get(&key).unwrap().unwrap().to_vec();
        bytes[70] ^= 4;
        overwrite(&remote, &key, bytes);
    }
    for args in [
        vec!["points", url.as_str()],
        vec!["points", &url, "--allow-older"],
    ] {
        let err = expect_exit(&replog(&server, &args), 2, "points");
        assert!(
            err.contains(&remote::manifest_key(2)) && !err.contains("no remote manifest yet"),
            "{err}"
        );
    }
}

/// Finding 11: a damaged `VAULT` object read as "format version 65537 is not one this replog
/// knows" (exit 1). It is damage naming the object.
#[test]
fn finding_11_a_damaged_vault_object_is_damage() {
    let server = S3Server::start().expect("s3s-fs started");
    let tmp = tempfile::tempdir().unwrap();
    let (_dir, url) = synced_twice(&server, tmp.path(), "hdr");
    let remote = handle(&server, "hdr");
    let mut bytes = remote.get(remote::VAULT_KEY).unwrap().unwrap().to_vec();
    bytes[10] ^= 1;
    overwrite(&remote, remote::VAULT_KEY, bytes);
    let err = expect_exit(&replog(&server, &["points", &url]), 2, "points");
    assert!(
        err.contains("VAULT") && !err.contains("format version"),
        "{err}"
    );
}

/// Finding 11: with no credentials at all, the error quoted the cloud metadata endpoint
/// (`http://169.254.169.254/latest/api/token ... 403`). It says that no credentials were
/// found and which variables to set. The metadata endpoint is pointed at a closed loopback
/// port, so the test does not depend on the machine's network.
#[test]
fn finding_11_no_credentials_says_so_and_names_the_variables() {
    let server = S3Server::start().expect("s3s-fs started");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metadata = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let out = Command::new(replog_bin())
        .args(["points", &server.url("nocreds"), "--remote-retries", "1"])
        .env_clear()
        .env("AWS_ENDPOINT", server.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_METADATA_ENDPOINT", &metadata)
        .output()
        .expect("ran");
    let err = expect_exit(&out, 1, "points without credentials");
    assert!(
        err.contains("no credentials were found") && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(
        !err.contains(&metadata) && !err.contains("169.254"),
        "{err}"
    );
}

/// Finding 11: a missing bucket said "Object ... not found" for a write, and URLs of other
/// schemes (`gs://...`, `s3:/x`) said "is not a replog vault". s3s-fs creates a bucket on the
/// first write to it, so the missing container is Azurite's.
#[test]
fn finding_11_a_missing_bucket_and_an_unsupported_url_say_so() {
    let server = S3Server::start().expect("s3s-fs started");
    let azurite = AzuriteServer::start().expect("Azurite started");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    write_rounds(&dir, 0, 1);
    let v = dir.to_str().unwrap();
    let run_az = |args: &[&str]| {
        let mut cmd = Command::new(replog_bin());
        cmd.args(args).env("REPLOG_IO_BACKEND", "sync");
        for (k, val) in azurite.env() {
            cmd.env(k, val);
        }
        cmd.output().expect("replog ran")
    };
    let missing = "az://no-such-container/p";
    let err = expect_exit(&run_az(&["remote", "add", v, missing]), 1, "remote add");
    assert!(
        err.contains("container no-such-container does not exist"),
        "{err}"
    );
    assert!(!dir.join("remote/CONFIG").exists());
    // Azure's listing of a missing container is not told apart from other failures by the
    // client library; the message still says what to check.
    let err = expect_exit(&run_az(&["points", missing]), 1, "points");
    assert!(
        err.contains("no-such-container") && err.contains("does the bucket or container exist"),
        "{err}"
    );
    for url in ["gs://b/p", "s3:/x"] {
        for cmd in ["points", "inspect"] {
            let err = expect_exit(&replog(&server, &[cmd, url]), 1, url);
            assert!(err.contains("unsupported URL"), "{cmd} {url}: {err}");
        }
        let err = expect_exit(&replog(&server, &["remote", "add", v, url]), 1, url);
        assert!(err.contains("unsupported URL"), "remote add {url}: {err}");
    }
}

/// Finding 11: some failures said "error sending request" with no sign of a retry (writes were
/// never retried). Every request goes through the retry budget, and a final failure says how
/// many attempts were made.
#[test]
fn finding_11_a_final_failure_says_how_many_attempts_were_made() {
    let mut server = S3Server::start().expect("s3s-fs started");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    write_rounds(&dir, 0, 1);
    let v = dir.to_str().unwrap();
    let url = server.url("retry");
    server.kill();
    let out = replog(
        &server,
        &["remote", "add", v, &url, "--remote-retries", "2"],
    );
    let err = expect_exit(&out, 1, "remote add with the server gone");
    assert!(err.contains("after 3 attempts"), "{err}");
    let out = replog(&server, &["points", &url, "--remote-retries", "0"]);
    let err = expect_exit(&out, 1, "points with the server gone");
    assert!(err.contains("after 1 attempt"), "{err}");
}
