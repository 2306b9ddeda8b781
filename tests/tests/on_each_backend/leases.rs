//! Leases against compaction, on real files, with readers on threads (the simulator's crashes
//! of a prune racing a lease are in `lease_prune_crash.rs`): a reader that leased a point reads it exactly while prunes run; compaction skips or
//! waits for a lease below its target; a lease whose holder is gone is stale and removed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use replog_reader::{LeaseOptions, Registrations, Vault};
use replog_tests::noise;
use replog_writer::{
    Compression, LeaseOutcome, LeaseWait, PointKind, PruneOptions, VaultSettings, Writer,
};

const DISK_BYTES: usize = 256 << 10;

fn settings() -> VaultSettings {
    VaultSettings {
        block_bytes: 4096,
        segment_bytes: 64 << 10,
        compression: Compression::None,
    }
}

/// A vault with one disk and `points` points; returns the content at each point's LSN.
fn vault(dir: &Path, points: u64) -> (Writer, BTreeMap<u64, Vec<u8>>, Vec<u8>) {
    let storage = super::storage();
    let mut w = Writer::create(storage, dir, settings()).expect("created");
    let disk = w.add_disk("os", DISK_BYTES as u64).expect("added").disk_id;
    let mut content = vec![0u8; DISK_BYTES];
    let at_lsn = Mutex::new(BTreeMap::new());
    for i in 0..points {
        step(&mut w, disk, &mut content, &at_lsn, i);
    }
    (w, at_lsn.into_inner().unwrap(), content)
}

/// One write and one point; the expected content is recorded before the point is taken, since
/// a concurrent reader may see the point as soon as it is durable.
fn step(
    w: &mut Writer,
    disk: u32,
    content: &mut [u8],
    at_lsn: &Mutex<BTreeMap<u64, Vec<u8>>>,
    i: u64,
) {
    let len = 6000 + (i as usize * 733) % 20_000;
    let at = (i as usize * 40_503) % (DISK_BYTES - len);
    let data = noise(i + 7, len);
    content[at..at + len].copy_from_slice(&data);
    w.write(disk, at as u64, &data).expect("staged");
    let lsn = w.last_lsn() + 1;
    at_lsn.lock().unwrap().insert(lsn, content.to_vec());
    let p = w
        .point(PointKind::CrashConsistent, "")
        .expect("acknowledged");
    assert_eq!(p.lsn, lsn);
}

fn read_all(vault: &Vault, point: &replog_reader::PointInfo) -> Result<Vec<u8>, String> {
    let view = vault.view(point).map_err(|e| e.to_string())?;
    let mut got = vec![0u8; DISK_BYTES];
    view.disks()[0]
        .read_at(0, &mut got)
        .map_err(|e| e.to_string())?;
    Ok(got)
}

#[test]
fn compaction_skips_or_waits_for_a_lease_below_its_target() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("v");
    let (mut w, at_lsn, _) = vault(&dir, 12);
    let storage = super::storage();
    let leased = Vault::open_leased(storage.clone(), &dir, &LeaseOptions::new("failover"), |v| {
        Ok::<_, replog_reader::ReadError>(v.points()[1].clone())
    })
    .expect("leased");
    let held = leased
        .lease
        .record()
        .expect("real files keep leases")
        .clone();
    assert_eq!((held.point_id, held.purpose.as_str()), (2, "failover"));

    let keep_one = PruneOptions {
        keep_last: Some(1),
        ..PruneOptions::default()
    };
    let report = w.prune(&keep_one).expect("prune runs");
    let c = report.compaction.expect("a compaction was tried");
    assert!(
        matches!(&c.lease, LeaseOutcome::Skipped { blocking } if blocking.contains("point 2")),
        "{c:?}"
    );
    assert!(!c.committed);
    assert_eq!(w.points().len(), 12, "a skipped prune changes nothing");
    // The leased point still reads exactly.
    assert_eq!(
        read_all(&leased.vault, &leased.point).unwrap(),
        at_lsn[&leased.point.lsn]
    );

    // Released while the prune waits: the prune then goes ahead.
    let lease = leased.lease;
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(lease);
    });
    let waiting = PruneOptions {
        lease_wait: LeaseWait::Wait(Duration::from_secs(60)),
        ..keep_one
    };
    let report = w.prune(&waiting).expect("prune runs");
    release.join().expect("the releasing thread ends");
    let c = report.compaction.expect("a compaction ran");
    assert!(
        matches!(c.lease, LeaseOutcome::Waited { .. } | LeaseOutcome::Clear),
        "{c:?}"
    );
    assert!(c.committed && !c.segments_dropped.is_empty(), "{c:?}");
    assert_eq!(w.points().len(), 1);
}

#[test]
fn a_lease_whose_holder_is_gone_is_stale_and_removed_and_a_persistent_one_stays() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("v");
    let (w, _, _) = vault(&dir, 3);
    drop(w);
    let storage = super::storage();
    let seed = {
        let v = Vault::open(storage.clone(), &dir).expect("opens");
        replog_format::vault_seed(&v.header().vault_id)
    };
    // A lease file nobody locks: what a holder killed with -9 leaves.
    let leased = Vault::open_leased(storage.clone(), &dir, &LeaseOptions::new("failover"), |v| {
        Ok::<_, replog_reader::ReadError>(v.points()[0].clone())
    })
    .expect("leased");
    let path = leased.lease.path().expect("a lease file").to_path_buf();
    let bytes = std::fs::read(&path).expect("the lease file reads");
    drop(leased);
    assert!(!path.exists(), "a released lease is removed");
    std::fs::write(&path, &bytes).expect("a stale lease file written");
    let persistent = LeaseOptions {
        purpose: "test-failover".into(),
        persistent: true,
        detail: "/out".into(),
    };
    let tf = Vault::open_leased(storage.clone(), &dir, &persistent, |v| {
        Ok::<_, replog_reader::ReadError>(v.points()[1].clone())
    })
    .expect("leased");
    drop(tf);
    let registrations = Registrations::lock(storage.as_ref(), &dir, seed).expect("locked");
    let live = registrations.live().expect("listed");
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(
        live[0]
            .record
            .as_ref()
            .is_some_and(|r| r.persistent && r.point_id == 2)
    );
    assert!(!path.exists(), "the stale lease was removed");
    drop(registrations);
    assert!(replog_reader::release_test_failover(storage.as_ref(), &dir).expect("released"));
    assert!(
        replog_reader::test_failover_lease(storage.as_ref(), &dir, seed)
            .expect("listed")
            .is_none()
    );
}

/// Readers lease a point (the newest, or a random older one still offered), read the whole disk
/// and compare, while the writer keeps adding points and pruning to the newest few. Without
/// leases a prune could delete a base or segment under a reader (the reader opens files lazily).
#[test]
fn a_leased_reader_reads_its_point_exactly_while_prunes_run() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("v");
    let (mut w, at_lsn, mut content) = vault(&dir, 6);
    let disk = w.disks()[0].disk_id;
    let at_lsn = Arc::new(Mutex::new(at_lsn));
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for r in 0..2u64 {
        let (dir, at_lsn, stop, reads) = (dir.clone(), at_lsn.clone(), stop.clone(), reads.clone());
        readers.push(std::thread::spawn(move || -> Vec<String> {
            let storage = super::storage();
            let mut violations = Vec::new();
            let mut i = r;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let opened = Vault::open_leased(
                    storage.clone(),
                    &dir,
                    &LeaseOptions::new("failover"),
                    |v| {
                        let pts = v.points();
                        Ok::<_, replog_reader::ReadError>(pts[(i as usize * 7) % pts.len()].clone())
                    },
                );
                let leased = match opened {
                    Ok(l) => l,
                    Err(e) => {
                        violations.push(format!("open_leased failed: {e}"));
                        continue;
                    }
                };
                // Give the writer time to prune past the snapshot meanwhile.
                std::thread::sleep(Duration::from_millis(5));
                match read_all(&leased.vault, &leased.point) {
                    Ok(got) => {
                        let want = at_lsn.lock().unwrap()[&leased.point.lsn].clone();
                        if got != want {
                            violations
                                .push(format!("point {} read wrong bytes", leased.point.point_id));
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => violations.push(format!(
                        "point {} failed to read: {e}",
                        leased.point.point_id
                    )),
                }
                drop(leased);
                // Leave gaps in which a compaction held up by this reader's lease can commit.
                std::thread::sleep(Duration::from_millis(3));
            }
            violations
        }));
    }
    let mut pruned = (0u64, 0u64);
    for i in 6..45u64 {
        step(&mut w, disk, &mut content, &at_lsn, i);
        if i % 3 == 0 {
            let report = w
                .prune(&PruneOptions {
                    keep_last: Some(3),
                    lease_wait: LeaseWait::Wait(Duration::from_secs(30)),
                    ..PruneOptions::default()
                })
                .expect("prune runs");
            if let Some(c) = report.compaction {
                pruned.0 += u64::from(c.committed);
                pruned.1 += c.deferred.len() as u64;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let violations: Vec<String> = readers
        .into_iter()
        .flat_map(|h| h.join().expect("a reader thread ends"))
        .collect();
    eprintln!(
        "leased readers: {} exact reads over {} committed prunes ({} files deferred for older snapshots), {} violations",
        reads.load(Ordering::Relaxed),
        pruned.0,
        pruned.1,
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{:#?}",
        &violations[..violations.len().min(10)]
    );
    assert!(pruned.0 > 0);
    drop(w);
    // Deferred deletions are done by the next writer open once the readers are gone.
    let w = Writer::open(super::storage(), &dir).expect("reopens");
    let m = w.manifest();
    let segments = std::fs::read_dir(dir.join("journal"))
        .expect("listed")
        .count();
    let bases = std::fs::read_dir(dir.join("bases"))
        .expect("listed")
        .count();
    assert_eq!(segments, m.segments.len());
    assert_eq!(bases, m.disks.len());
}
