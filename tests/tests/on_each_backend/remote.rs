//! Object storage tiering against real servers on loopback (s3s-fs for S3, Azurite for Azure
//! Blob, started by the tests themselves; `scripts/setup.sh` installs both): upload, eviction,
//! failover from the bucket with the local vault deleted, a server that disappears mid-upload,
//! and damaged remote objects. The helpers are shared with `remote_crash.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use replog_format::remote::{self, RemoteConfig};
use replog_reader::Vault;
use replog_remote::{LocalVault, Remote, RemoteOptions, SyncOptions, SyncReport};
use replog_tests::noise;
use replog_tests::servers::{AzuriteServer, S3Server};
use replog_writer::{Compression, PointKind, VaultSettings, Writer};

const DISK_BYTES: u64 = 12 << 20;

/// Every offered point's disks, by point id, read byte for byte.
pub(super) type Contents = BTreeMap<u64, Vec<Vec<u8>>>;

fn settings() -> VaultSettings {
    VaultSettings {
        block_bytes: 64 << 10,
        segment_bytes: 1 << 20,
        compression: Compression::Lz4,
    }
}

/// `object_store` configuration keys from a server's environment variables.
pub(super) fn options(env: Vec<(String, String)>) -> RemoteOptions {
    RemoteOptions {
        config: env
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        retries: 2,
        retry_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
    }
}

/// The writes of each round of [`write_rounds_of`]: how many, and their lengths in bytes,
/// `len_min..len_min + len_spread`.
#[derive(Clone, Copy)]
pub(super) struct Rounds {
    pub writes: u64,
    pub len_min: u64,
    pub len_spread: u64,
}

/// Writes `rounds` rounds of changes to two disks (six writes each), a point after each, and
/// seals the segment so every point is in a sealed segment. Creates the vault when `dir` has none.
pub(super) fn write_rounds(dir: &Path, first_round: u64, rounds: u64, disk_bytes: u64) {
    write_rounds_then(dir, first_round, rounds, disk_bytes, None);
}

/// The writes of [`write_rounds`]: six per round, of 40 000 to 340 000 bytes.
const SIX_WRITES: Rounds = Rounds {
    writes: 6,
    len_min: 40_000,
    len_spread: 300_000,
};

/// [`write_rounds`], but with `open_segment_bytes` set the segment is not sealed after, and a
/// vault created here has segments of that size: the newest points stay in the open segment.
pub(super) fn write_rounds_then(
    dir: &Path,
    first_round: u64,
    rounds: u64,
    disk_bytes: u64,
    open_segment_bytes: Option<u64>,
) {
    write_rounds_of(
        SIX_WRITES,
        dir,
        (first_round, rounds),
        disk_bytes,
        open_segment_bytes,
    );
}

/// [`write_rounds_then`] with `shape`'s writes in each round.
pub(super) fn write_rounds_of(
    shape: Rounds,
    dir: &Path,
    (first_round, rounds): (u64, u64),
    disk_bytes: u64,
    open_segment_bytes: Option<u64>,
) {
    let storage = super::storage();
    let mut w = if dir.join("VAULT").exists() {
        Writer::open(storage, dir).expect("opened")
    } else {
        let settings = VaultSettings {
            segment_bytes: open_segment_bytes.unwrap_or(settings().segment_bytes),
            ..settings()
        };
        let mut w = Writer::create(storage, dir, settings).expect("created");
        w.add_disk("os", disk_bytes).expect("added");
        w.add_disk("data", disk_bytes / 2).expect("added");
        w
    };
    for round in first_round..first_round + rounds {
        for i in 0..shape.writes {
            let disk = 1 + (i % 2) as u32;
            let size = if disk == 1 {
                disk_bytes
            } else {
                disk_bytes / 2
            };
            let len = shape.len_min + ((round * 7 + i) * 9_973) % shape.len_spread;
            let at = ((round * 31 + i) * 1_048_573) % (size - len);
            w.write(disk, at, &noise(round * 100 + i, len as usize))
                .expect("staged");
        }
        w.point(PointKind::CrashConsistent, &format!("round {round}"))
            .expect("acknowledged");
    }
    if open_segment_bytes.is_none() {
        w.seal_segment().expect("sealed");
    }
    w.close().expect("closed");
}

/// Every offered point of the vault in `dir`, read through `storage`.
pub(super) fn contents(storage: Arc<dyn replog_io::Storage>, dir: &Path) -> Contents {
    let v = Vault::open(storage, dir).expect("opened");
    v.points()
        .iter()
        .map(|p| {
            let view = v.view(p).expect("resolved");
            let disks = view
                .disks()
                .iter()
                .map(|d| {
                    let mut buf = vec![0u8; d.size() as usize];
                    d.read_at(0, &mut buf).expect("read and verified");
                    buf
                })
                .collect();
            (p.point_id, disks)
        })
        .collect()
}

/// The local vault's points, read from local files and, where evicted, from its remote.
pub(super) fn local_contents(dir: &Path, opts: &RemoteOptions) -> Contents {
    let storage = replog_remote::storage_for_vault(super::storage(), dir, opts).expect("storage");
    contents(storage, dir)
}

/// The points of the vault at `url`, read from the remote alone.
pub(super) fn remote_contents(remote: Arc<Remote>) -> Contents {
    let rv = replog_remote::open_remote(remote, super::storage(), 8).expect("remote vault opened");
    contents(rv.storage, &rv.root)
}

pub(super) fn add_remote(dir: &Path, url: &str, remote: &Remote, cache_limit_bytes: u64) {
    add_remote_keeping(dir, url, remote, cache_limit_bytes, 2);
}

/// [`add_remote`], keeping `keep_manifests` remote manifests.
pub(super) fn add_remote_keeping(
    dir: &Path,
    url: &str,
    remote: &Remote,
    cache_limit_bytes: u64,
    keep_manifests: u32,
) {
    let local = LocalVault::open(dir).expect("local vault");
    replog_remote::claim(&local, remote).expect("claimed");
    local
        .write_config(&RemoteConfig {
            vault_id: local.vault_id,
            url: url.to_owned(),
            cache_limit_bytes,
            keep_manifests,
        })
        .expect("configured");
}

pub(super) fn sync(dir: &Path, remote: &Remote) -> replog_remote::Result<SyncReport> {
    sync_with(dir, remote, false)
}

pub(super) fn sync_with(
    dir: &Path,
    remote: &Remote,
    scrub: bool,
) -> replog_remote::Result<SyncReport> {
    let storage =
        replog_remote::storage_for_vault(super::storage(), dir, &RemoteOptions::default())?;
    replog_remote::sync(
        storage,
        dir,
        remote,
        &SyncOptions {
            concurrency: 4,
            scrub,
        },
        &|_, _| {},
    )
}

/// Every key under the remote's prefix.
pub(super) fn keys(remote: &Remote) -> BTreeSet<String> {
    let vault = remote
        .get(remote::VAULT_KEY)
        .expect("read")
        .map(|_| remote::VAULT_KEY.to_owned());
    [remote::MANIFESTS_DIR, remote::MAPS_DIR, remote::CHUNKS_DIR]
        .iter()
        .flat_map(|d| remote.list(d).expect("listed"))
        .map(|(k, _)| k)
        .chain(vault)
        .collect()
}

/// The keys the kept manifests need: nothing else may be left on the remote.
pub(super) fn needed_keys(remote: &Remote, seed: u32, vault_id: [u8; 16]) -> BTreeSet<String> {
    let mut out = BTreeSet::from(["VAULT".to_owned()]);
    for (key, _) in remote.list(remote::MANIFESTS_DIR).expect("listed") {
        let m = remote::RemoteManifest::decode(&remote.get(&key).unwrap().unwrap(), seed)
            .expect("a manifest left on the remote decodes");
        assert_eq!(m.vault_id, vault_id);
        out.insert(key);
        for f in &m.files {
            out.insert(remote::map_key(&f.map));
            let map = remote::FileMap::decode(
                &remote.get(&remote::map_key(&f.map)).unwrap().unwrap(),
                seed,
            )
            .expect("a map a manifest names is there and decodes");
            out.extend(
                map.chunks
                    .iter()
                    .filter(|c| **c != remote::ZERO_CHUNK)
                    .map(remote::chunk_key),
            );
        }
    }
    out
}

pub(super) fn s3_remote(server: &S3Server, prefix: &str) -> (String, Arc<Remote>, RemoteOptions) {
    let url = server.url(prefix);
    let opts = options(server.env());
    let remote = Arc::new(Remote::open(&url, &opts).expect("remote"));
    (url, remote, opts)
}

#[test]
fn s3_upload_evict_and_fail_over_from_the_bucket_with_the_local_vault_deleted() {
    let server = S3Server::start().expect("s3s-fs started");
    let (url, remote, opts) = s3_remote(&server, "vaults/one");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    write_rounds(&dir, 0, 4, DISK_BYTES);
    let expected = local_contents(&dir, &opts);
    assert_eq!(expected.len(), 4);

    // Upload, with a cache limit that evicts every sealed file.
    add_remote(&dir, &url, &remote, 1);
    // A long-running process (a capturing NBD server, say) opened its storage before the sync.
    let opened_before =
        replog_remote::storage_for_vault(super::storage(), &dir, &opts).expect("storage");
    let report = sync(&dir, &remote).expect("synced");
    assert!(report.published && report.chunks_written > 0, "{report:?}");
    assert_eq!(
        contents(opened_before, &dir),
        expected,
        "files evicted after the storage was made are found on the remote"
    );
    assert!(
        report.evicted_files > 0 && report.local_bytes <= 1,
        "{report:?}"
    );
    let local = LocalVault::open(&dir).unwrap();
    let latest = local.latest().unwrap().expect("LATEST recorded");
    assert_eq!(latest.seq, report.manifest_seq);
    for f in &latest.files {
        if f.id.kind != remote::FileKind::Checkpoint {
            assert!(!dir.join(replog_remote::file_path(&f.id)).exists());
        }
    }
    // Evicted files are read from the remote, and every point reads as before.
    assert_eq!(local_contents(&dir, &opts), expected);
    // A second sync changes nothing and rewrites nothing.
    let again = sync(&dir, &remote).expect("synced again");
    assert!(!again.published && again.chunks_written == 0, "{again:?}");

    // More changes, retention locally, then sync: the remote follows, and what only the
    // dropped manifests needed is deleted.
    write_rounds(&dir, 4, 2, DISK_BYTES);
    sync(&dir, &remote).expect("synced");
    let storage = replog_remote::storage_for_vault(super::storage(), &dir, &opts).expect("storage");
    let mut w = Writer::open(storage, &dir).expect("opened");
    w.prune(&replog_writer::PruneOptions {
        keep_last: Some(3),
        ..Default::default()
    })
    .expect("pruned");
    w.close().unwrap();
    let expected = local_contents(&dir, &opts);
    assert_eq!(expected.len(), 3);
    sync(&dir, &remote).expect("synced after prune");
    sync(&dir, &remote).expect("synced again after prune");
    assert_eq!(
        keys(&remote),
        needed_keys(&remote, local.seed, local.vault_id),
        "nothing left on the remote that no kept manifest needs"
    );

    // The machine is gone: fail over from the bucket alone.
    drop(tmp);
    assert_eq!(remote_contents(remote), expected);
}

#[test]
fn azure_upload_and_fail_over_from_the_container_with_the_local_vault_deleted() {
    let server = AzuriteServer::start().expect("Azurite started");
    let url = server.url("vaults/az");
    let opts = options(server.env());
    let remote = Arc::new(Remote::open(&url, &opts).expect("remote"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    write_rounds(&dir, 0, 3, DISK_BYTES);
    let expected = local_contents(&dir, &opts);
    add_remote(&dir, &url, &remote, 0);
    let report = sync(&dir, &remote).expect("synced");
    assert!(report.published && report.evicted_files == 0, "{report:?}");
    // A key is written once: a second create of it is refused by Azure, and sync copes.
    let again = sync(&dir, &remote).expect("synced again");
    assert!(!again.published && again.chunks_written == 0, "{again:?}");
    drop(tmp);
    assert_eq!(remote_contents(remote), expected);
}

#[test]
fn a_server_that_disappears_mid_upload_fails_the_sync_cleanly_and_a_rerun_completes() {
    let mut server = S3Server::start().expect("s3s-fs started");
    let (url, remote, opts) = s3_remote(&server, "gone");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    write_rounds(&dir, 0, 12, DISK_BYTES);
    let expected = local_contents(&dir, &opts);
    add_remote(&dir, &url, &remote, 1);

    let syncing = {
        let dir = dir.clone();
        let remote = remote.clone();
        std::thread::spawn(move || sync(&dir, &remote))
    };
    // Wait until chunks are arriving, then take the server away.
    let chunks = server.root().join(server.bucket());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline && count_files(&chunks) < 4 {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill();
    let result = syncing.join().unwrap();
    let e = result.expect_err("the sync cannot finish without its server");
    assert!(
        e.to_string().contains(&url),
        "the error names the remote: {e}"
    );
    // Nothing was evicted, nothing recorded as confirmed: the local vault is whole.
    let local = LocalVault::open(&dir).unwrap();
    assert!(local.latest().unwrap().is_none());
    assert_eq!(local_contents(&dir, &opts), expected);

    server.restart().expect("s3s-fs restarted");
    let report = sync(&dir, &remote).expect("the rerun completes");
    assert!(report.published, "{report:?}");
    assert_eq!(local_contents(&dir, &opts), expected);
    drop(tmp);
    assert_eq!(remote_contents(remote), expected);
}

#[test]
fn a_damaged_or_missing_remote_object_is_an_error_naming_it_never_wrong_bytes() {
    let server = S3Server::start().expect("s3s-fs started");
    let (url, remote, opts) = s3_remote(&server, "damaged");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    // Segments of 2 MiB: their chunks are large enough for small reads to be ranged GETs.
    write_rounds_then(&dir, 0, 3, DISK_BYTES, Some(2 << 20));
    add_remote(&dir, &url, &remote, 0);
    sync(&dir, &remote).expect("synced");
    let store = plain_store(&server);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let object = |chunk: &str| object_store::path::Path::from(format!("damaged/{chunk}"));
    let read_all = || {
        let rv = replog_remote::open_remote(remote.clone(), super::storage(), 8)?;
        let v = Vault::open(rv.storage.clone(), &rv.root)?;
        for p in v.points() {
            let view = v.view(p)?;
            for d in view.disks() {
                let mut buf = vec![0u8; d.size() as usize];
                d.read_at(0, &mut buf)?;
            }
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    };

    // A base chunk is read whole and checked against its key; a journal segment's records are
    // read by ranged GETs and checked by their CRCs, so damage there is named by the segment.
    for (kind, names) in [
        (remote::FileKind::Base, None),
        (remote::FileKind::Segment, Some("journal/")),
    ] {
        let (chunk, file) = chunk_of(&remote, kind);
        let key = object(&chunk);
        let original = rt.block_on(async { store.get(&key).await.unwrap().bytes().await.unwrap() });
        if kind == remote::FileKind::Segment {
            assert!(
                original.len() as u64 > replog_remote::RANGED_CHUNK_BYTES_MIN,
                "the segment's chunk ({} bytes) is read by ranged GETs",
                original.len()
            );
        }
        // Every byte is changed, so whatever part of the object a read needs is wrong.
        let flipped: Vec<u8> = original.iter().map(|b| b ^ 0x5a).collect();
        rt.block_on(store.put(&key, PutPayload::from(flipped)))
            .unwrap();
        let e = read_all().expect_err("a damaged chunk is refused");
        let names = names.unwrap_or(&chunk);
        assert!(
            e.to_string().contains(names),
            "the error names {names} ({} in {file}): {e}",
            chunk
        );

        // A plain sync trusts what it confirmed before; a scrub reads every chunk back, finds
        // the damaged one and replaces it from the local copy: reads are whole again.
        let plain = sync(&dir, &remote).expect("synced");
        assert_eq!(plain.chunks_written, 0, "{plain:?}");
        let scrub = sync_with(&dir, &remote, true).expect("scrubbed");
        assert_eq!(scrub.chunks_written, 1, "{scrub:?}");
        read_all().expect("repaired by the scrub");

        rt.block_on(store.delete(&key)).unwrap();
        let e = read_all().expect_err("a missing chunk is refused");
        assert!(
            e.to_string().contains(&chunk),
            "the error names the object {chunk} of {file}: {e}"
        );
        let scrub = sync_with(&dir, &remote, true).expect("scrubbed");
        assert_eq!(scrub.chunks_written, 1, "{scrub:?}");
        read_all().expect("repaired by the scrub");
    }
    let _ = opts;
}

/// The key of a chunk of a file of `kind` in the newest remote manifest, and the file's path.
fn chunk_of(remote: &Remote, kind: remote::FileKind) -> (String, String) {
    let header = replog_format::header::VaultHeader::decode(
        &remote.get(remote::VAULT_KEY).unwrap().unwrap(),
    )
    .unwrap();
    let seed = replog_format::vault_seed(&header.vault_id);
    let (manifest, _) = replog_remote::newest_manifest(remote, &header.vault_id, seed).unwrap();
    let manifest = manifest.expect("a remote manifest");
    for f in manifest.files.iter().filter(|f| f.id.kind == kind) {
        let map = remote::FileMap::decode(
            &remote.get(&remote::map_key(&f.map)).unwrap().unwrap(),
            seed,
        )
        .unwrap();
        if let Some(c) = map.chunks.iter().find(|c| **c != remote::ZERO_CHUNK) {
            let path = replog_remote::file_path(&f.id).display().to_string();
            return (remote::chunk_key(c), path);
        }
    }
    panic!("no stored chunk of a {kind:?} file");
}

/// A client for the server's bucket, without replog's prefix handling.
pub(super) fn plain_store(server: &S3Server) -> Arc<dyn ObjectStore> {
    replog_remote::install_tls_provider();
    let mut b = object_store::aws::AmazonS3Builder::new().with_bucket_name(server.bucket());
    for (k, v) in server.env() {
        b = b.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
    }
    Arc::new(b.build().unwrap())
}

fn count_files(dir: &Path) -> usize {
    walk(dir).len()
}

pub(super) fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}
