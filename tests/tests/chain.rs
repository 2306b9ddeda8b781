//! The journal's hash chain, on real files: `verify` proves every point from the records before
//! it, across rotation, a writer reopen and a prune; and it finds what no CRC can: a record of a
//! diverged copy of the same vault put in place of the original (same LSN, segment, offset and
//! vault seed, so its CRC and position verify), and a record changed by someone who recomputed
//! its CRC. Each is reported as damage naming the segment file and the point's offset, and the
//! CLI's `verify` exits 2.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use replog_format::record::{RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use replog_format::{chain, layout, vault_seed};
use replog_io::Storage;
use replog_io::sync::SyncStorage;
use replog_reader::verify::{self, VerifyReport};
use replog_tests::{copy_dir, journal_records, noise, replog_bin, small_segments};
use replog_writer::{Compression, PointKind, PruneOptions, Writer};

fn storage() -> Arc<dyn Storage> {
    Arc::new(SyncStorage::new())
}

fn verify_dir(dir: &Path) -> VerifyReport {
    verify::verify(storage().as_ref(), dir)
}

/// A vault with disk 1 of 1 MiB, four writes and a point, made with no compression so that
/// writes of equal length take equal room.
fn create(dir: &Path) -> Writer {
    let mut w = Writer::create(storage(), dir, small_segments(Compression::None)).expect("created");
    w.add_disk("d", 1 << 20).expect("added");
    for i in 0..4u64 {
        w.write(1, i * 4096, &noise(i, 4096)).expect("written");
    }
    w.point(PointKind::CrashConsistent, "first").expect("point");
    w
}

fn cli_verify_exit(dir: &Path) -> (i32, String) {
    let out = Command::new(replog_bin())
        .arg("verify")
        .arg(dir)
        .output()
        .expect("replog runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn chain_findings(report: &VerifyReport) -> Vec<String> {
    report
        .findings()
        .iter()
        .filter(|f| f.message.contains("chain"))
        .map(|f| f.to_string())
        .collect()
}

#[test]
fn verify_proves_every_point_across_rotation_reopen_and_prune() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let mut w = create(&dir);
    let mut points = 1;
    // Several 64 KiB segments, a point every few records.
    for i in 0..60u64 {
        w.write(1, (i % 200) * 4096, &noise(100 + i, 4096)).unwrap();
        if i % 7 == 6 {
            w.point(PointKind::CrashConsistent, "").unwrap();
            points += 1;
        }
    }
    drop(w);
    let mut w = Writer::open(storage(), &dir).expect("reopened");
    for i in 0..20u64 {
        w.write(1, i * 8192, &noise(500 + i, 4096)).unwrap();
        if i % 5 == 4 {
            w.point(PointKind::AppConsistent, "after reopen").unwrap();
            points += 1;
        }
    }
    let listed = w.points();
    assert!(
        listed.iter().all(|p| p.chain.is_some()),
        "every point has a chain hash"
    );
    let report = verify_dir(&dir);
    assert!(report.is_intact(), "{:?}", report.findings());
    let c = report.chain();
    assert!(
        report.records_checked() > 80 && c.records == report.records_checked(),
        "every record is folded: {c:?}"
    );
    assert_eq!(c.points_proven, points, "{c:?}");
    assert_eq!((c.broken, c.points_unchained), (0, 0));
    assert_eq!(c.anchors, vec![(1, "segment header")]);
    let newest = listed.last().unwrap();
    assert_eq!(
        c.newest,
        Some((newest.point_id, newest.lsn, newest.chain.unwrap()))
    );
    // The chain hashes differ point to point.
    let mut hashes: Vec<_> = listed.iter().map(|p| p.chain.unwrap()).collect();
    hashes.dedup();
    assert_eq!(hashes.len(), listed.len());

    // A prune drops the oldest segments: the chain is proven from the first segment kept.
    let report = w
        .prune(&PruneOptions {
            keep_last: Some(3),
            ..PruneOptions::default()
        })
        .expect("pruned");
    assert!(report.compaction.is_some(), "{report:?}");
    w.point(PointKind::CrashConsistent, "after prune").unwrap();
    let kept = w.points();
    drop(w);
    let report = verify_dir(&dir);
    assert!(report.is_intact(), "{:?}", report.findings());
    let c = report.chain();
    assert_eq!(c.broken, 0);
    assert!(
        c.anchors[0].0 > 1,
        "the walk starts after the dropped segments: {c:?}"
    );
    // The point at the new base reads as the base images; its segment may be gone with the
    // others. Every kept point from the anchor on is proven.
    let walked = kept.iter().filter(|p| p.lsn >= c.anchors[0].0).count();
    assert!(walked >= 3, "{c:?} {kept:?}");
    assert_eq!(c.points_proven, walked as u64, "{c:?} {kept:?}");
    let newest = kept.last().unwrap();
    assert_eq!(
        c.newest,
        Some((newest.point_id, newest.lsn, newest.chain.unwrap()))
    );
}

/// Vault A and a copy of it, B, taken after the first point, each go on with one write of the
/// same length at the same place but different bytes, then a point. Returns the offset of the
/// write record, which is at the same place in both, and the second point's offset.
fn diverge(a: &Path, b: &Path) -> (u64, u64) {
    drop(create(a));
    copy_dir(a, b);
    for (dir, seed) in [(a, 1000), (b, 2000)] {
        let mut w = Writer::open(storage(), dir).unwrap();
        w.write(1, 0, &noise(seed, 4096)).unwrap();
        w.point(PointKind::CrashConsistent, "second").unwrap();
    }
    let records = journal_records(storage().as_ref(), a);
    let write = records
        .iter()
        .rev()
        .find(|r| r.kind == RecordKind::Write)
        .unwrap();
    let point = records.last().unwrap();
    assert_eq!(point.kind, RecordKind::Point);
    let other = journal_records(storage().as_ref(), b);
    let same = other.iter().find(|r| r.lsn == write.lsn).unwrap();
    assert_eq!(
        (same.offset, same.stored_len),
        (write.offset, write.stored_len)
    );
    assert_ne!(same.crc, write.crc, "the copies wrote different bytes");
    (write.offset, point.offset)
}

#[test]
fn a_record_from_a_diverged_copy_is_found_by_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (write_at, point_at) = diverge(&a, &b);
    assert!(verify_dir(&a).is_intact());
    let seg = layout::segment_path(&a, 1);
    let len = RECORD_HEADER_BYTES + 4096;
    let mut record = vec![0u8; len];
    std::fs::File::open(layout::segment_path(&b, 1))
        .unwrap()
        .read_exact_at(&mut record, write_at)
        .unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&record, write_at)
        .unwrap();

    // The record itself is valid where it now stands: only the chain tells.
    let records = journal_records(storage().as_ref(), &a);
    assert!(
        records.iter().any(|r| r.offset == write_at),
        "the swapped record still decodes"
    );
    let report = verify_dir(&a);
    assert!(report.is_damaged());
    let found = chain_findings(&report);
    assert_eq!(found.len(), 1, "{:?}", report.findings());
    let f = report
        .findings()
        .iter()
        .find(|f| f.message.contains("chain"))
        .unwrap();
    assert_eq!(f.path, Path::new("journal").join(seg.file_name().unwrap()));
    assert_eq!(f.offset, Some(point_at));
    assert!(f.message.contains("point 2"), "{f}");
    assert_eq!(report.chain().broken, 1);
    let (code, text) = cli_verify_exit(&a);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("chain hash") && text.contains("BROKEN"),
        "{text}"
    );
}

#[test]
fn a_record_changed_with_its_crc_recomputed_is_found_by_the_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    let mut w = create(&dir);
    w.write(1, 0, &noise(77, 4096)).unwrap();
    w.point(PointKind::CrashConsistent, "second").unwrap();
    drop(w);
    let records = journal_records(storage().as_ref(), &dir);
    let target = &records[1];
    assert_eq!(target.kind, RecordKind::Write);
    let seg = layout::segment_path(&dir, 1);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    let mut bytes = vec![0u8; RECORD_HEADER_BYTES + target.stored_len as usize];
    file.read_exact_at(&mut bytes, target.offset).unwrap();
    bytes[RECORD_HEADER_BYTES + 100] ^= 0xff;
    let mut h = RecordHeader::decode(&bytes[..RECORD_HEADER_BYTES]).unwrap();
    let vault_id = replog_reader::Vault::open(storage(), &dir)
        .unwrap()
        .header()
        .vault_id;
    let head = h.seal(vault_seed(&vault_id), &bytes[RECORD_HEADER_BYTES..]);
    bytes[..RECORD_HEADER_BYTES].copy_from_slice(&head);
    file.write_all_at(&bytes, target.offset).unwrap();

    let report = verify_dir(&dir);
    let found = chain_findings(&report);
    assert_eq!(found.len(), 1, "{:?}", report.findings());
    assert!(found[0].contains("point 1"), "{found:?}");
    // Every later point is still proven from the one before: one change, one finding.
    assert_eq!(report.chain().broken, 1);
    assert_eq!(report.chain().points_proven, 1);
    assert_eq!(cli_verify_exit(&dir).0, 2);
}

#[test]
fn points_json_shows_each_chain_hash_as_verify_proves_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v");
    drop(create(&dir));
    let out = Command::new(replog_bin())
        .args(["points", "--json"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let points: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shown = points[0]["chain"].as_str().unwrap().to_owned();
    let report = verify_dir(&dir);
    let (_, _, proven) = report.chain().newest.unwrap();
    assert_eq!(shown, chain::hex(&proven));
    let out = Command::new(replog_bin())
        .args(["verify", "--json"])
        .arg(&dir)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["chain"]["newest_point"]["chain"], shown.as_str());
    assert_eq!(doc["chain"]["points_proven"], 1);

    // The hash noted down checks the history later: this one passes, another is refused.
    let check = |expect: &str| {
        Command::new(replog_bin())
            .args(["verify", "--expect-point", expect])
            .arg(&dir)
            .output()
            .unwrap()
    };
    let out = check(&format!("1:{shown}"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let other = chain::hex(&[7; 32]);
    let out = check(&format!("1:{other}"));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another history") && err.contains("MANIFEST"),
        "{err}"
    );
    assert_eq!(check("2").status.code(), Some(2), "point 2 was never taken");
}

/// Runs `replog ARGS` with `env`; the exit code and stdout + stderr.
fn replog(env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let out = Command::new(replog_bin())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("replog runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// A vault made by `create` in a new temporary directory, its remote `prefix` on `server`,
/// synced once.
struct Synced {
    env: Vec<(String, String)>,
    tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    url: String,
}

impl Synced {
    fn new(server: &replog_tests::servers::S3Server, prefix: &str) -> Synced {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("v");
        drop(create(&dir));
        let s = Synced {
            env: server.env(),
            url: server.url(prefix),
            dir,
            tmp,
        };
        s.ok(&["remote", "add", s.v(), &s.url]);
        s.ok(&["sync", s.v()]);
        s
    }

    fn v(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// `replog failover URL --latest --out OUT --expect-point EXPECT`: its exit code and output.
    fn failover_expecting(&self, expect: &str, out: &Path) -> (i32, String) {
        let out = out.to_str().unwrap();
        let args = [
            "failover",
            &self.url,
            "--latest",
            "--out",
            out,
            "--expect-point",
            expect,
        ];
        replog(&self.env, &args)
    }

    /// `replog ARGS`, which must succeed; its output.
    fn ok(&self, args: &[&str]) -> String {
        let (code, text) = replog(&self.env, args);
        assert_eq!(code, 0, "replog {args:?}: {text}");
        text
    }
}

#[test]
fn a_rolled_back_remote_is_refused_by_remote_show_and_by_failover_expecting_a_point() {
    let server = replog_tests::servers::S3Server::start().expect("s3s-fs started");
    let s = Synced::new(&server, "rollback");
    let (env, dir) = (s.env.clone(), s.dir.clone());
    let (tmp, v) = (&s.tmp, s.v());
    let ok = |args: &[&str]| s.ok(args);
    let first = Writer::open(storage(), &dir).unwrap().points()[0].clone();
    let mut w = Writer::open(storage(), &dir).unwrap();
    w.write(1, 0, &noise(9, 4096)).unwrap();
    let second = w.point(PointKind::CrashConsistent, "second").unwrap();
    drop(w);
    ok(&["sync", v]);
    let shown = ok(&["remote", "show", v]);
    let head = chain::hex(&second.chain.unwrap());
    assert!(
        shown.contains(&format!("chain head      point 2, {head}")),
        "{shown}"
    );
    assert!(shown.contains("remote now      manifest"), "{shown}");

    // What a failover from the bucket alone accepts while it is whole.
    let hash1 = chain::hex(&first.chain.unwrap());
    let out = tmp.path().join("out");
    let failover = |expect: &str, out: &Path| s.failover_expecting(expect, out);
    let (code, text) = failover(&format!("1:{hash1}"), &out.join("a"));
    assert_eq!(code, 0, "{text}");
    let (code, text) = failover("2", &out.join("b"));
    assert_eq!(code, 0, "{text}");

    // Roll the bucket back: the newest manifest and its mark removed, as someone with write
    // access to the bucket could.
    let prefix = server.root().join(server.bucket()).join("rollback");
    let mut manifests: Vec<_> = std::fs::read_dir(prefix.join("manifests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    manifests.sort();
    let newest = manifests.pop().unwrap();
    let seq = u64::from_str_radix(newest.file_stem().unwrap().to_str().unwrap(), 16).unwrap();
    std::fs::remove_file(&newest).unwrap();
    let mark = prefix.join(replog_format::remote::mark_key(seq));
    if mark.exists() {
        std::fs::remove_file(mark).unwrap();
    }

    // The local vault remembers the highest manifest it confirmed.
    let (code, text) = replog(&env, &["remote", "show", v]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("ROLLED BACK"), "{text}");
    assert!(
        text.contains(&replog_format::remote::manifest_key(seq)),
        "{text}"
    );

    // From the bucket alone, the operator's note of point 2 refuses the older state, naming
    // the manifest read; no image is written.
    let (code, text) = failover("2", &out.join("c"));
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("newest point is 1, older than point 2")
            && text.contains(&replog_format::remote::manifest_key(seq - 1)),
        "{text}"
    );
    assert!(!out.join("c").join("d.raw").exists());
    // A wrong chain hash for a point that is there is refused too.
    let (code, text) = failover(&format!("1:{head}"), &out.join("d"));
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("another history"), "{text}");
    // A malformed hash is a usage error.
    let (code, _) = failover("1:abc", &out.join("e"));
    assert_eq!(code, 64);
}

#[test]
fn a_local_segment_replaced_by_an_older_copy_is_refused_by_sync_and_remote_show() {
    let server = replog_tests::servers::S3Server::start().expect("s3s-fs started");
    let s = Synced::new(&server, "local-rollback");
    let (env, dir) = (s.env.clone(), s.dir.clone());
    let (tmp, v) = (&s.tmp, s.v());
    let ok = |args: &[&str]| s.ok(args);
    let seg = layout::segment_path(&dir, 1);
    let older = std::fs::read(&seg).unwrap();
    let mut w = Writer::open(storage(), &dir).unwrap();
    w.write(1, 0, &noise(9, 4096)).unwrap();
    w.point(PointKind::CrashConsistent, "second").unwrap();
    drop(w);
    ok(&["sync", v]);

    // The open segment put back as it was before point 2: a valid, shorter journal, which
    // alone says nothing is missing.
    std::fs::write(&seg, &older).unwrap();
    let (code, text) = replog(&env, &["points", "--json", v]);
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("\"second\""), "{text}");

    // What the vault confirmed on its remote says it, naming the file.
    let (code, text) = replog(&env, &["remote", "show", v]);
    assert_eq!(code, 2, "{text}");
    let named = "journal/0000000000000001.seg is";
    assert!(text.contains("OLDER") && text.contains(named), "{text}");
    assert!(!text.contains("remote RPO"), "{text}");
    let (code, text) = replog(&env, &["sync", v]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(named) && text.contains("roll the remote back"),
        "{text}"
    );
    // The remote still holds point 2.
    let (code, text) = s.failover_expecting("2", &tmp.path().join("out"));
    assert_eq!(code, 0, "{text}");
}
