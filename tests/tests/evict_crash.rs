//! A crash at every local I/O operation of a sync that evicts, on the simulator.
//!
//! The local vault lives in the simulator and its remote in an in-memory object store. The
//! sync's local files (`remote/LATEST`, its lock, its lease, the evicted segments and bases)
//! go through the storage trait, so the simulator counts and crashes each of their operations.
//! The workload: a vault synced once with a small cache limit, then more points in new sealed
//! segments, then the sync under test, which uploads them, publishes, records `remote/LATEST`
//! and evicts. It is run once without a crash to count its local operations N (and check that it
//! evicts), then for every operation in `0..N` and several crash seeds, from the same state
//! (local and remote), with the simulated machine losing power there. After each crash and
//! `Writer::open`:
//! - the cache and the remote agree: `remote/LATEST` names a manifest the remote holds, every
//!   file it names that is not local is whole on the remote (its map and chunks are there),
//!   and every sealed file the vault's manifest names is local or named by `remote/LATEST`;
//! - a failover from the cache and the remote (`TieredStorage`) lists every acknowledged point
//!   and reads every listed point byte-exact, and `verify` finds no damage;
//! - a sync run again completes, the cache and remote agree again, and a failover from the
//!   remote alone reads every point it offers byte-exact.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use replog_format::remote::{self, RemoteConfig};
use replog_io::Storage;
use replog_io::sim::SimStorage;
use replog_reader::Vault;
use replog_remote::{LocalVault, Remote, SyncOptions, TieredStorage, file_path};
use replog_tests::crash_sweep::{crash_at_every_op, crashed_as_set};
use replog_tests::{
    PointModel, SimImage, check_listed_points, noise, small_segments, stress, vault_dirs,
};
use replog_writer::{Compression, Writer};

const DIR: &str = "/vault";
const URL: &str = "s3://bucket/vault";
const DISK_BYTES: u64 = 128 << 10;
/// Small enough that each sync evicts most sealed files.
const CACHE_LIMIT_BYTES: u64 = 16 << 10;

/// Every object of a remote, by key.
type Objects = BTreeMap<String, Bytes>;

fn new_remote(objects: &Objects) -> Arc<Remote> {
    let store = Arc::new(object_store::memory::InMemory::new());
    let remote = Remote::with_store(store, URL).expect("an in-memory remote");
    for (key, bytes) in objects {
        remote.put_create(key, bytes.clone()).expect("restored");
    }
    Arc::new(remote)
}

fn capture_remote(remote: &Remote) -> Objects {
    let mut objects = Objects::new();
    for dir in [
        remote::MANIFESTS_DIR,
        remote::MARKS_DIR,
        remote::MAPS_DIR,
        remote::CHUNKS_DIR,
    ] {
        for (key, _) in remote.list(dir).expect("listed") {
            let bytes = remote.get(&key).expect("read").expect("listed, so there");
            objects.insert(key, bytes);
        }
    }
    let vault = remote
        .get(remote::VAULT_KEY)
        .expect("read")
        .expect("claimed");
    objects.insert(remote::VAULT_KEY.to_owned(), vault);
    objects
}

/// `rounds` points over one disk, then the segment sealed.
fn write_rounds(w: &mut Writer, m: &mut PointModel, disk: u32, first: u64, rounds: u64) {
    for i in first..first + rounds {
        let len = 4000 + (i as usize * 1201) % 12_000;
        let at = (i * 10_007) % (DISK_BYTES - len as u64);
        let data = noise(500 + i, len);
        m.stage_write(w, disk, at, &data).expect("staged");
        m.point(w, &format!("p{i}")).expect("acknowledged");
    }
    w.seal_segment().expect("sealed");
}

fn sync(storage: &Arc<SimStorage>, remote: &Arc<Remote>) -> replog_remote::Result<()> {
    let local: Arc<dyn Storage> = storage.clone();
    let vault = LocalVault::open_in(local.clone(), Path::new(DIR))?;
    let tiered: Arc<dyn Storage> = Arc::new(TieredStorage::over_local_connected(
        local,
        vault,
        remote.clone(),
    ));
    replog_remote::sync(
        tiered,
        Path::new(DIR),
        remote,
        &SyncOptions::default(),
        &|_, _| {},
    )
    .map(drop)
}

/// The vault synced once, then more points: the state every case starts from.
fn prepare() -> (SimImage, Objects, PointModel) {
    let sim = SimStorage::new(11);
    let storage: Arc<dyn Storage> = sim.clone();
    let settings = small_segments(Compression::None);
    let dir = Path::new(DIR);
    let mut w = Writer::create(storage.clone(), dir, settings).expect("created");
    let mut m = PointModel::default();
    let disk = m.add_zero_disk(&mut w, "os", DISK_BYTES).expect("added");
    write_rounds(&mut w, &mut m, disk, 0, 12);
    w.close().expect("closed");
    let remote = new_remote(&Objects::new());
    let local = LocalVault::open_in(storage.clone(), dir).expect("a vault");
    replog_remote::claim(&local, &remote).expect("claimed");
    local
        .write_config(&RemoteConfig {
            vault_id: local.vault_id,
            url: URL.to_owned(),
            cache_limit_bytes: CACHE_LIMIT_BYTES,
            keep_manifests: 2,
        })
        .expect("configured");
    sync(&sim, &remote).expect("the first sync");
    let mut w = Writer::open(storage, dir).expect("opened");
    write_rounds(&mut w, &mut m, disk, 12, 30);
    w.close().expect("closed");
    let mut dirs = vault_dirs(dir);
    dirs.push(dir.join(remote::REMOTE_DIR));
    (SimImage::capture(&sim, &dirs), capture_remote(&remote), m)
}

/// Whether the cache and the remote agree; returns the violations.
fn consistent(sim: &Arc<SimStorage>, remote: &Remote) -> Vec<String> {
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new(DIR);
    let local = match LocalVault::open_in(storage.clone(), dir) {
        Ok(l) => l,
        Err(e) => return vec![format!("the local vault does not open: {e}")],
    };
    let latest = match local.latest() {
        Ok(Some(l)) => l,
        Ok(None) => return vec!["remote/LATEST is gone".to_owned()],
        Err(e) => return vec![format!("remote/LATEST does not read: {e}")],
    };
    let mut out = Vec::new();
    let on_remote = remote.get(&remote::manifest_key(latest.seq));
    if !matches!(on_remote, Ok(Some(ref b)) if **b == *latest.encode(local.seed)) {
        out.push(format!(
            "remote/LATEST names manifest {}, which the remote does not hold as recorded",
            latest.seq
        ));
    }
    let chunks: HashSet<[u8; 32]> = remote
        .list(remote::CHUNKS_DIR)
        .expect("listed")
        .iter()
        .filter_map(|(k, _)| remote::parse_chunk_key(k))
        .collect();
    for f in &latest.files {
        let path = dir.join(file_path(&f.id));
        if sim.exists(&path).unwrap_or(false) {
            continue;
        }
        let map = remote.get(&remote::map_key(&f.map)).ok().flatten();
        let whole = map
            .and_then(|b| remote::FileMap::decode(&b, local.seed).ok())
            .is_some_and(|map| {
                map.chunks
                    .iter()
                    .all(|c| *c == remote::ZERO_CHUNK || chunks.contains(c))
            });
        if !whole {
            out.push(format!(
                "{} is evicted and not whole on the remote",
                path.display()
            ));
        }
    }
    let vault = match Vault::open(storage, dir) {
        Ok(v) => v,
        Err(e) => return vec![format!("the vault does not open: {e}")],
    };
    for s in &vault.manifest().segments {
        let id = remote::FileId {
            kind: remote::FileKind::Segment,
            a: s.segment_id,
            b: 0,
        };
        let path = dir.join(file_path(&id));
        if s.sealed.is_some() && !sim.exists(&path).unwrap_or(false) && latest.file(&id).is_none() {
            out.push(format!(
                "{} is neither local nor named by remote/LATEST: lost",
                path.display()
            ));
        }
    }
    out
}

/// Fails over from the cache and the remote: every acknowledged point listed, every listed
/// point byte-exact.
fn failover_from_cache(
    sim: &Arc<SimStorage>,
    remote: &Arc<Remote>,
    model: &PointModel,
) -> Vec<String> {
    let local: Arc<dyn Storage> = sim.clone();
    let dir = Path::new(DIR);
    let vault = match LocalVault::open_in(local.clone(), dir) {
        Ok(v) => v,
        Err(e) => return vec![format!("the local vault does not open: {e}")],
    };
    let tiered: Arc<dyn Storage> = Arc::new(TieredStorage::over_local_connected(
        local,
        vault,
        remote.clone(),
    ));
    let vault = match Vault::open(tiered.clone(), dir) {
        Ok(v) => v,
        Err(e) => return vec![format!("the tiered vault does not open: {e}")],
    };
    let listed: Vec<u64> = vault.points().iter().map(|p| p.lsn).collect();
    let mut out: Vec<String> = model
        .acked_lsns()
        .into_iter()
        .filter(|lsn| !listed.contains(lsn))
        .map(|lsn| format!("the acknowledged point at LSN {lsn} is not listed"))
        .collect();
    out.extend(check_listed_points(&vault, model));
    let report = replog_reader::verify(tiered.as_ref(), dir);
    if !report.is_intact() {
        out.push(format!("verify: {:?}", report.findings()));
    }
    out
}

/// Fails over from the remote alone: every point it offers byte-exact.
fn failover_from_remote(
    sim: &Arc<SimStorage>,
    remote: &Arc<Remote>,
    model: &PointModel,
) -> Vec<String> {
    let rv = match replog_remote::open_remote(remote.clone(), sim.clone(), 8) {
        Ok(rv) => rv,
        Err(e) => return vec![format!("the remote vault does not open: {e}")],
    };
    match Vault::open(rv.storage, &rv.root) {
        Ok(v) if v.points().is_empty() => vec!["the remote offers no point".to_owned()],
        Ok(v) => check_listed_points(&v, model),
        Err(e) => vec![format!("the remote vault does not open for reading: {e}")],
    }
}

/// Recovers after the crash (the caller lost power) and checks the vault and the remote.
fn after_crash(sim: &Arc<SimStorage>, remote: &Arc<Remote>, model: &PointModel) -> Vec<String> {
    let storage: Arc<dyn Storage> = sim.clone();
    match Writer::open(storage, Path::new(DIR)) {
        Ok(w) => drop(w),
        Err(e) => return vec![format!("Writer::open after the crash failed: {e}")],
    }
    let mut out = consistent(sim, remote);
    out.extend(failover_from_cache(sim, remote, model));
    if let Err(e) = sync(sim, remote) {
        out.push(format!("the sync run again fails: {e}"));
    }
    out.extend(consistent(sim, remote));
    out.extend(failover_from_remote(sim, remote, model));
    out
}

#[test]
fn a_crash_anywhere_in_a_sync_that_evicts_leaves_cache_and_remote_consistent() {
    let started = std::time::Instant::now();
    let (image, objects, model) = prepare();
    let seeds = 4 * stress();

    // Without a crash: count the operations, and check that the sync evicts.
    let sim = image.restore(0);
    let remote = new_remote(&objects);
    let before = sim.file_paths().len();
    let start = sim.ops();
    sync(&sim, &remote).expect("the sync under test");
    let n = sim.ops() - start;
    let after: Vec<_> = sim.file_paths();
    let evicted = image
        .files
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "seg" || e == "base"))
        .filter(|p| !after.contains(p))
        .count();
    assert!(
        evicted > 0,
        "the sync under test evicts ({before} files before)"
    );
    let clean = consistent(&sim, &remote);
    assert!(clean.is_empty(), "{clean:?}");

    let swept = crash_at_every_op("", n, seeds, |op, seed, leftovers| {
        let sim = image.restore(seed);
        let remote = new_remote(&objects);
        sim.set_crash_at(Some(sim.ops() + op));
        let result = sync(&sim, &remote);
        let mut v: Vec<String> = crashed_as_set(&sim, &result).into_iter().collect();
        // The remote holds the same objects at the same operation whatever the seed: it is
        // not what the simulated machine's power loss touches.
        if leftovers.crash(&sim, op, seed) {
            v.extend(after_crash(&sim, &remote, &model));
        }
        v
    });
    eprintln!(
        "sync with eviction: {n} local operations (the clean run evicts {evicted} files) x \
         {seeds} seeds = {} crashes ({} distinct), {} violations, {:.1}s",
        swept.cases,
        swept.cases - swept.repeats,
        swept.violations.len(),
        started.elapsed().as_secs_f64()
    );
    swept.assert_no_violation();
}
