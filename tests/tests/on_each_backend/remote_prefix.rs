//! The open segment's prefix on a real s3s-fs: a plain `sync` ships the newest point without
//! sealing, a longer prefix replaces the shorter one, sealing replaces both; a crash at every
//! request of a sync that ships a prefix; a prefix object replaced or damaged behind replog's
//! back; two syncs at once; and the remote RPO as `sync` and `remote show` print it. Run on the
//! default backend only, as `remote_crash.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;
use replog_format::remote::{self, FileId, FileKind, FileMap, RemoteManifest};
use replog_remote::fault::{FaultMode, FaultPlan, FaultStore};
use replog_remote::{LocalVault, Refusal, Remote, RemoteErrorKind};
use replog_tests::servers::S3Server;
use replog_writer::Writer;

use super::remote::{
    add_remote_keeping, keys, local_contents, needed_keys, options, plain_store, remote_contents,
    s3_remote, sync, write_rounds_then,
};
use super::remote_crash::every_crash;
use super::review_remote::{expect_exit, replog, stdout};
use replog_tests::copy_dir;

const DISK_BYTES: u64 = 4 << 20;
/// Segments large enough that every round of these tests stays in the open segment.
const OPEN: Option<u64> = Some(64 << 20);

/// The newest remote manifest of the vault at `remote`.
fn newest(remote: &Remote, local: &LocalVault) -> RemoteManifest {
    let (m, _) = replog_remote::newest_manifest(remote, &local.vault_id, local.seed).unwrap();
    m.expect("a remote manifest")
}

/// The file entry of the open segment's prefix in `m`, if it names one.
fn prefix_entry(m: &RemoteManifest) -> Option<remote::RemoteFile> {
    let segment_id = replog_remote::prefix_segment(m)?;
    let id = FileId {
        kind: FileKind::Segment,
        a: segment_id,
        b: 0,
    };
    m.file(&id).copied()
}

/// The keys of the map and the stored chunks of the file `f` names.
fn objects_of(remote: &Remote, seed: u32, f: &remote::RemoteFile) -> BTreeSet<String> {
    let key = remote::map_key(&f.map);
    let map = FileMap::decode(&remote.get(&key).unwrap().unwrap(), seed).unwrap();
    map.chunks
        .iter()
        .filter(|c| **c != remote::ZERO_CHUNK)
        .map(remote::chunk_key)
        .chain([key])
        .collect()
}

/// A vault in `tmp/vault` with three points in its open segment and a remote at `prefix`
/// keeping one remote manifest and `cache_limit_bytes` locally, not synced yet.
fn three_points(
    server: &S3Server,
    prefix: &str,
    cache_limit_bytes: u64,
) -> (tempfile::TempDir, Arc<Remote>, replog_remote::RemoteOptions) {
    let (url, remote, opts) = s3_remote(server, prefix);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    write_rounds_then(&dir, 0, 3, DISK_BYTES, OPEN);
    add_remote_keeping(&dir, &url, &remote, cache_limit_bytes, 1);
    (tmp, remote, opts)
}

fn seal(dir: &Path) {
    let mut w = Writer::open(super::storage(), dir).expect("opened");
    assert!(w.seal_segment().expect("sealed"));
    w.close().unwrap();
}

#[test]
fn a_plain_sync_ships_the_newest_point_and_longer_prefixes_and_sealing_replace_the_old() {
    let server = S3Server::start().expect("s3s-fs started");
    let (tmp, remote, opts) = three_points(&server, "prefix/one", 0);
    let dir = tmp.path().join("vault");
    let local = LocalVault::open(&dir).unwrap();

    // A fresh vault, three points, none sealed: the bucket holds the third after one sync.
    let report = sync(&dir, &remote).expect("synced");
    assert_eq!(report.newest_point.as_ref().map(|p| p.point_id), Some(3));
    let first = newest(&remote, &local);
    let p1 = prefix_entry(&first).expect("the open segment's prefix is named");
    let p1_objects = objects_of(&remote, local.seed, &p1);
    eprintln!("after sync 1: {:?}", keys(&remote));
    let expected = local_contents(&dir, &opts);
    assert_eq!(expected.len(), 3);
    assert_eq!(remote_contents(remote.clone()), expected, "byte-exact");
    // The segment was not sealed: the writer appends to it as before.
    let m = replog_format::manifest::Manifest::decode(&first.manifest).unwrap();
    assert!(m.segments.last().unwrap().sealed.is_none());

    // Two more points, another sync: a longer prefix under new keys, the old one deleted.
    write_rounds_then(&dir, 3, 2, DISK_BYTES, OPEN);
    let report = sync(&dir, &remote).expect("synced");
    assert_eq!(report.newest_point.as_ref().map(|p| p.point_id), Some(5));
    let second = newest(&remote, &local);
    let p2 = prefix_entry(&second).expect("a longer prefix");
    assert_eq!(p2.id, p1.id);
    assert!(p2.file_bytes > p1.file_bytes && p2.map != p1.map);
    let now = keys(&remote);
    eprintln!("after sync 2: {now:?}");
    assert!(!now.contains(&remote::map_key(&p1.map)), "old prefix map");
    let p2_objects = objects_of(&remote, local.seed, &p2);
    for gone in p1_objects.difference(&p2_objects) {
        assert!(!now.contains(gone), "{gone} of the old prefix is left");
    }
    assert_eq!(now, needed_keys(&remote, local.seed, local.vault_id));
    let expected = local_contents(&dir, &opts);
    assert_eq!(expected.len(), 5);
    assert_eq!(remote_contents(remote.clone()), expected);

    // Sealed later: the sealed file replaces the prefix, whose objects go.
    seal(&dir);
    sync(&dir, &remote).expect("synced");
    let third = newest(&remote, &local);
    assert_eq!(prefix_entry(&third), None);
    let sealed = third.file(&p2.id).expect("the sealed segment");
    assert!(sealed.file_bytes > p2.file_bytes);
    let now = keys(&remote);
    eprintln!("after seal and sync 3: {now:?}");
    assert!(!now.contains(&remote::map_key(&p2.map)));
    assert_eq!(now, needed_keys(&remote, local.seed, local.vault_id));

    // The machine is gone: fail over from the bucket alone.
    drop(tmp);
    assert_eq!(remote_contents(remote), expected);
}

#[test]
fn eviction_never_removes_the_open_segment_whose_prefix_the_remote_holds() {
    let server = S3Server::start().expect("s3s-fs started");
    let (tmp, remote, opts) = three_points(&server, "prefix/evict", 1);
    let dir = tmp.path().join("vault");
    let local = LocalVault::open(&dir).unwrap();
    let report = sync(&dir, &remote).expect("synced");
    let prefix = prefix_entry(&newest(&remote, &local)).expect("a prefix");
    // The cache limit (1 byte) evicts every sealed file, but the open segment stays: the
    // writer appends to it, and the local vault reads every point.
    assert!(report.evicted_files > 0, "{report:?}");
    assert!(dir.join(replog_remote::file_path(&prefix.id)).exists());
    write_rounds_then(&dir, 3, 1, DISK_BYTES, OPEN);
    assert_eq!(local_contents(&dir, &opts).len(), 4);
}

#[test]
fn a_crash_at_every_request_of_a_sync_shipping_a_prefix_leaves_the_old_or_the_new_state() {
    let server = S3Server::start().expect("s3s-fs started");
    let opts = options(server.env());
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    write_rounds_then(&template, 0, 3, DISK_BYTES, OPEN);
    let expected = {
        let dir = tmp.path().join("expected");
        copy_dir(&template, &dir);
        write_rounds_then(&dir, 3, 2, DISK_BYTES, OPEN);
        local_contents(&dir, &opts)
    };
    assert_eq!(expected.len(), 5);

    let run = |n: u64, mode: FaultMode| -> Option<u64> {
        let dir = tmp.path().join(format!("v-{n}-{mode:?}"));
        copy_dir(&template, &dir);
        let url = server.url(&format!("pcrash/{n}-{mode:?}"));
        let plain = Remote::open(&url, &opts).expect("remote");
        add_remote_keeping(&dir, &url, &plain, 0, 1);
        sync(&dir, &plain).expect("first sync");
        write_rounds_then(&dir, 3, 2, DISK_BYTES, OPEN);

        let plan = FaultPlan::new(n, mode);
        let store = Arc::new(FaultStore::new(plain_store(&server), plan.clone()));
        let faulty = Remote::with_store(store as Arc<dyn ObjectStore>, &url).unwrap();
        let crashed = sync(&dir, &faulty);
        assert_eq!(crashed.is_err(), plan.crashed(), "request {n}: {crashed:?}");
        // The bucket alone: its newest manifest names only whole objects, and offers the
        // three points of the first sync or the five of the second, byte for byte.
        let local = LocalVault::open(&dir).unwrap();
        let needed = needed_keys(&plain, local.seed, local.vault_id);
        let present = keys(&plain);
        let missing: Vec<_> = needed.difference(&present).collect();
        assert!(missing.is_empty(), "request {n} {mode:?}: {missing:?}");
        let seen = remote_contents(Arc::new(Remote::open(&url, &opts).unwrap()));
        assert!(
            seen.len() == 3 || seen.len() == 5,
            "request {n} {mode:?}: {} points",
            seen.len()
        );
        for (id, disks) in &seen {
            assert_eq!(Some(disks), expected.get(id), "request {n} {mode:?}: {id}");
        }
        // Resume with the store back: the new state, and nothing left over.
        sync(&dir, &plain).unwrap_or_else(|e| panic!("resume after request {n}: {e}"));
        assert_eq!(
            keys(&plain),
            needed_keys(&plain, local.seed, local.vault_id)
        );
        assert_eq!(remote_contents(Arc::new(plain)), expected, "request {n}");
        std::fs::remove_dir_all(&dir).unwrap();
        (!plan.crashed()).then(|| plan.requests())
    };
    let points = every_crash(run);
    eprintln!("crash points: {points} (every request of the sync x before and after it applies)");
}

/// Every point of the bucket at `remote`, read from it alone.
fn read_bucket(remote: &Arc<Remote>) -> Result<usize, Box<dyn std::error::Error>> {
    let rv = replog_remote::open_remote(remote.clone(), super::storage(), 8)?;
    let v = replog_reader::Vault::open(rv.storage.clone(), &rv.root)?;
    for p in v.points() {
        for d in v.view(p)?.disks() {
            let mut buf = vec![0u8; d.size() as usize];
            d.read_at(0, &mut buf)?;
        }
    }
    Ok(v.points().len())
}

/// Replaces object `key` of `remote` with `bytes`, behind replog's back.
fn overwrite(remote: &Remote, key: &str, bytes: Bytes) {
    remote.block_on(remote.delete_async(key)).unwrap();
    remote.put_create(key, bytes).unwrap();
}

#[test]
fn a_prefix_object_replaced_by_an_older_copy_or_damaged_is_refused_naming_its_key() {
    let server = S3Server::start().expect("s3s-fs started");
    let (tmp, remote, _) = three_points(&server, "prefix/hostile", 0);
    let dir = tmp.path().join("vault");
    let local = LocalVault::open(&dir).unwrap();
    sync(&dir, &remote).expect("synced");
    let old = prefix_entry(&newest(&remote, &local)).unwrap();
    let old_map = remote.get(&remote::map_key(&old.map)).unwrap().unwrap();
    let old_last = {
        let map = FileMap::decode(&old_map, local.seed).unwrap();
        let key = remote::chunk_key(map.chunks.last().unwrap());
        remote.get(&key).unwrap().unwrap()
    };
    write_rounds_then(&dir, 3, 2, DISK_BYTES, OPEN);
    sync(&dir, &remote).expect("synced");
    let new = prefix_entry(&newest(&remote, &local)).unwrap();
    let map_key = remote::map_key(&new.map);
    let map_bytes = remote.get(&map_key).unwrap().unwrap();
    let map = FileMap::decode(&map_bytes, local.seed).unwrap();
    let last_key = remote::chunk_key(map.chunks.last().unwrap());
    let last_bytes = remote.get(&last_key).unwrap().unwrap();
    assert_eq!(read_bucket(&remote).expect("whole"), 5);

    let flipped: Bytes = last_bytes.iter().map(|b| b ^ 0x5a).collect();
    let foreign = {
        // A map for another vault: the same file, another vault id, its own seed's CRC.
        let mut m = map.clone();
        m.vault_id = [7; 16];
        Bytes::from(m.encode(replog_format::vault_seed(&m.vault_id)))
    };
    let cases = [
        ("the older prefix's map", map_key.clone(), old_map),
        ("the older, shorter last chunk", last_key.clone(), old_last),
        ("a last chunk with flipped bits", last_key.clone(), flipped),
        ("another vault's map", map_key.clone(), foreign),
    ];
    for (what, key, bytes) in cases {
        overwrite(&remote, &key, bytes);
        let e = read_bucket(&remote).expect_err(what);
        assert!(
            e.to_string().contains(&key),
            "{what}: the error names {key}: {e}"
        );
        let restore = if key == map_key {
            &map_bytes
        } else {
            &last_bytes
        };
        overwrite(&remote, &key, restore.clone());
        assert_eq!(read_bucket(&remote).expect("whole again"), 5, "{what}");
    }
}

#[test]
fn two_syncs_at_once_of_one_vault_leave_the_remote_whole() {
    let server = S3Server::start().expect("s3s-fs started");
    let (tmp, remote, opts) = three_points(&server, "prefix/twice", 0);
    let dir = tmp.path().join("vault");
    sync(&dir, &remote).expect("synced");
    write_rounds_then(&dir, 3, 3, DISK_BYTES, OPEN);
    let start = std::sync::Barrier::new(2);
    let results: Vec<_> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..2)
            .map(|_| {
                scope.spawn(|| {
                    start.wait();
                    sync(&dir, &remote)
                })
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for r in &results {
        if let Err(e) = r {
            assert_eq!(
                e.kind(),
                RemoteErrorKind::Refused(Refusal::SyncRunning),
                "{e}"
            );
        }
    }
    assert!(results.iter().any(Result::is_ok), "{results:?}");
    let local = LocalVault::open(&dir).unwrap();
    assert_eq!(
        keys(&remote),
        needed_keys(&remote, local.seed, local.vault_id)
    );
    let expected = local_contents(&dir, &opts);
    assert_eq!(expected.len(), 6);
    assert_eq!(remote_contents(remote), expected);
}

#[test]
fn sync_and_remote_show_report_the_remote_rpo_and_warn_when_the_bucket_is_behind() {
    let server = S3Server::start().expect("s3s-fs started");
    let url = server.url("prefix/cli");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vault");
    let vault = dir.to_str().unwrap();
    write_rounds_then(&dir, 0, 3, DISK_BYTES, OPEN);
    expect_exit(&replog(&server, &["remote", "add", vault, &url]), 0, "add");

    let show = replog(&server, &["remote", "show", vault]);
    let err = expect_exit(&show, 0, "show before any sync");
    assert!(
        stdout(&show).contains("remote RPO      no point yet"),
        "{}",
        stdout(&show)
    );
    assert!(
        err.contains("the remote is behind the local vault"),
        "{err}"
    );

    let out = replog(&server, &["sync", vault]);
    let err = expect_exit(&out, 0, "sync");
    let text = stdout(&out);
    assert!(text.contains("remote point    point 3 of "), "{text}");
    assert!(text.contains("local point     point 3 of "), "{text}");
    assert!(text.contains("remote RPO      "), "{text}");
    assert!(!err.contains("behind"), "{err}");

    // Two more points, not synced: the bucket is behind, and says by how much.
    write_rounds_then(&dir, 3, 2, DISK_BYTES, OPEN);
    let show = replog(&server, &["remote", "show", vault, "--json"]);
    let err = expect_exit(&show, 0, "show when behind");
    let doc: serde_json::Value = serde_json::from_str(&stdout(&show)).unwrap();
    let rpo = &doc["remote_rpo"];
    assert_eq!(rpo["newest_remote_point"]["id"], 3, "{doc}");
    assert_eq!(rpo["newest_local_point"]["id"], 5, "{doc}");
    assert_eq!(rpo["behind"], true, "{doc}");
    assert!(rpo["rpo_seconds"].as_f64().is_some(), "{doc}");
    assert!(err.contains("its newest is point 3"), "{err}");

    let out = replog(&server, &["sync", vault, "--json"]);
    expect_exit(&out, 0, "sync --json");
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["remote_rpo"]["newest_remote_point"]["id"], 5, "{doc}");
    assert_eq!(doc["remote_rpo"]["behind"], false, "{doc}");
}
