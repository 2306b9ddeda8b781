//! A crash at every I/O operation of a prune racing a reader's lease, on the simulator.
//!
//! Leases, their registration lock and the writer's lock go through the storage trait, so the
//! simulator keeps them (a crash drops every lock, as the kernel does for dead processes) and
//! counts their file operations. Each workload starts from a durable vault with many points and
//! runs, as one sequence: a reader leases point L ([`Vault::open_leased`]); a prune runs (keep
//! the newest 3); the reader reads L through its snapshot; the lease is released; the prune runs
//! again. It is run once without a crash to count its operations N, then for every operation in
//! `0..N` and several crash seeds, again with the simulated machine losing power there. After
//! each crash and `Writer::open`:
//! - if the crash came before the lease was released, L is still listed and reads byte-exact;
//! - every listed point matches the model at its LSN, and `verify` finds no damage;
//! - the prune run again completes: the points offered are the newest 3, the vault holds
//!   exactly the files its manifest names, and no lease is left (the dead reader's is stale).
//!
//! Without a crash, the reader's read of L after the first prune is byte-exact too, and once the
//! writer opens again, the files the lease kept from deletion are gone.

use std::path::Path;
use std::sync::Arc;

use replog_format::lease::{LEASE_SUFFIX, LEASES_DIR};
use replog_io::Storage;
use replog_io::sim::SimStorage;
use replog_reader::{LeaseOptions, ReadError, Vault};
use replog_tests::crash_sweep::{Sweep, crash_at_every_op};
use replog_tests::{
    PointModel, SimImage, check_listed_points, noise, small_segments, stress, unnamed_files,
    vault_dirs,
};
use replog_writer::{Compression, PruneOptions, Writer};

const DIR: &str = "/vault";
const DISK_BYTES: u64 = 64 << 10;
const KEEP: usize = 3;

/// A race to run: which point the reader leases, counted from the newest.
struct Workload {
    name: &'static str,
    /// 1 is the newest point.
    leased_from_newest: usize,
}

const WORKLOADS: [Workload; 2] = [
    // A kept point: compaction commits, and leaves the files the reader's older snapshot names.
    Workload {
        name: "lease on a kept point",
        leased_from_newest: 2,
    },
    // Below the new base: the first prune skips and changes nothing.
    Workload {
        name: "lease below the new base",
        leased_from_newest: 8,
    },
];

/// A durable vault with one disk, 64 KiB segments and 20 points.
fn prepare() -> (SimImage, PointModel) {
    let sim = SimStorage::new(5);
    let storage: Arc<dyn Storage> = sim.clone();
    let settings = small_segments(Compression::None);
    let mut w = Writer::create(storage, Path::new(DIR), settings).expect("created");
    let mut m = PointModel::default();
    let disk = m.add_zero_disk(&mut w, "os", DISK_BYTES).expect("added");
    for i in 0..20u64 {
        let len = 3000 + (i as usize * 811) % 9000;
        let at = (i * 7919) % (DISK_BYTES - len as u64);
        let data = noise(300 + i, len);
        m.stage_write(&mut w, disk, at, &data).expect("staged");
        m.point(&mut w, &format!("p{i}")).expect("acknowledged");
    }
    w.close().expect("closed");
    (SimImage::capture(&sim, &vault_dirs(Path::new(DIR))), m)
}

fn keep_newest() -> PruneOptions {
    PruneOptions {
        keep_last: Some(KEEP),
        ..PruneOptions::default()
    }
}

/// What one run of the race did before it ended (or crashed).
#[derive(Default)]
struct Run {
    /// The leased point, `(id, lsn)`, once the lease was registered.
    leased: Option<(u64, u64)>,
    /// The operation count (from the start) at which the release began; `None` if not reached.
    release_at: Option<u64>,
    /// A violation seen during the run (not a crash).
    violation: Option<String>,
}

/// The race on a fresh copy, crashing at `crash_at` operations from its start.
fn run_race(
    image: &SimImage,
    model: &PointModel,
    wl: &Workload,
    seed: u64,
    crash_at: Option<u64>,
) -> (Run, Arc<SimStorage>, u64) {
    let sim = image.restore(seed);
    let storage: Arc<dyn Storage> = sim.clone();
    let mut w = Writer::open(storage.clone(), Path::new(DIR)).expect("the prepared vault opens");
    let start = sim.ops();
    if let Some(op) = crash_at {
        sim.set_crash_at(Some(start + op));
    }
    let mut run = Run::default();
    let leased = Vault::open_leased(
        storage.clone(),
        Path::new(DIR),
        &LeaseOptions::new("failover"),
        |v| {
            let points = v.points();
            Ok::<_, ReadError>(points[points.len() - wl.leased_from_newest].clone())
        },
    );
    let result = leased.map_err(|e| e.to_string()).and_then(|leased| {
        run.leased = Some((leased.point.point_id, leased.point.lsn));
        w.prune(&keep_newest()).map_err(|e| e.to_string())?;
        read_point(&leased.vault, &leased.point, model)?;
        run.release_at = Some(sim.ops() - start);
        leased.lease.release().map_err(|e| e.to_string())?;
        w.prune(&keep_newest()).map_err(|e| e.to_string())?;
        Ok(())
    });
    if let Err(e) = result
        && !sim.crashed()
    {
        run.violation = Some(format!("failed without a crash: {e}"));
    }
    let used = sim.ops() - start;
    drop(w);
    (run, sim, used)
}

/// Reads every disk of `point` through `vault` and compares with the model.
fn read_point(
    vault: &Vault,
    point: &replog_reader::PointInfo,
    model: &PointModel,
) -> Result<(), String> {
    let want = &model.at_point[&point.lsn];
    let view = vault.view(point).map_err(|e| e.to_string())?;
    for d in view.disks() {
        let mut got = vec![0u8; d.size() as usize];
        d.read_at(0, &mut got).map_err(|e| e.to_string())?;
        if got != want[&d.disk_id()] {
            return Err(format!(
                "the leased point {} reads other bytes than it holds",
                point.point_id
            ));
        }
    }
    Ok(())
}

/// Files of the vault that its manifest does not name (bases and segments), and lease files.
fn leftovers(storage: &Arc<dyn Storage>) -> Vec<String> {
    let mut out = unnamed_files(storage, Path::new(DIR));
    let leases: Vec<String> = storage
        .read_dir(&Path::new(DIR).join(LEASES_DIR))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(LEASE_SUFFIX))
        .collect();
    if !leases.is_empty() {
        out.push(format!("lease files are left: {leases:?}"));
    }
    out
}

/// Recovers after the crash and checks everything; returns the violations.
fn after_crash(sim: &Arc<SimStorage>, model: &PointModel, run: &Run) -> Vec<String> {
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new(DIR);
    let mut w = match Writer::open(storage.clone(), dir) {
        Ok(w) => w,
        Err(e) => return vec![format!("Writer::open after the crash failed: {e}")],
    };
    let mut violations = Vec::new();
    let vault = match Vault::open(storage.clone(), dir) {
        Ok(v) => v,
        Err(e) => return vec![format!("the vault does not open for reading: {e}")],
    };
    if let (Some(leased), None) = (run.leased, run.release_at)
        && !vault.points().iter().any(|p| (p.point_id, p.lsn) == leased)
    {
        violations.push(format!(
            "the leased point {leased:?} (id, lsn) is lost though the lease was held"
        ));
    }
    violations.extend(check_listed_points(&vault, model));
    let report = replog_reader::verify(storage.as_ref(), dir);
    if !report.is_intact() {
        violations.push(format!("verify: {:?}", report.findings()));
    }
    if let Err(e) = w.prune(&keep_newest()) {
        violations.push(format!("the prune run again fails: {e}"));
    }
    let newest: Vec<u64> = model.acked_lsns().into_iter().rev().take(KEEP).collect();
    let mut offered: Vec<u64> = w.points().iter().map(|p| p.lsn).collect();
    offered.reverse();
    if offered != newest {
        violations.push(format!(
            "after the prune ran again, the points are at LSNs {offered:?}, not the newest {KEEP}"
        ));
    }
    drop(w);
    violations.extend(leftovers(&storage));
    match Vault::open(storage, dir) {
        Ok(v) => violations.extend(check_listed_points(&v, model)),
        Err(e) => violations.push(format!("the vault does not open after the prune: {e}")),
    }
    violations
}

#[test]
fn a_crash_anywhere_in_a_prune_racing_a_lease_loses_no_leased_point() {
    let started = std::time::Instant::now();
    let (image, model) = prepare();
    let seeds = 2 * stress();
    let mut all = Sweep::default();
    for wl in &WORKLOADS {
        let (clean, sim, n) = run_race(&image, &model, wl, 0, None);
        assert!(
            clean.violation.is_none(),
            "{}: {:?}",
            wl.name,
            clean.violation
        );
        assert!(
            clean.release_at.is_some(),
            "{}: the race ran to its end",
            wl.name
        );
        let storage: Arc<dyn Storage> = sim.clone();
        // Files a lease's older snapshot named are deleted when the writer next opens.
        drop(Writer::open(storage.clone(), Path::new(DIR)).expect("reopened"));
        let clean_leftovers = leftovers(&storage);
        assert!(
            clean_leftovers.is_empty(),
            "{}: {clean_leftovers:?}",
            wl.name
        );
        let t = std::time::Instant::now();
        let swept = crash_at_every_op(wl.name, n, seeds, |op, seed, leftovers| {
            let (run, sim, _) = run_race(&image, &model, wl, seed, Some(op));
            let mut v: Vec<String> = run.violation.iter().cloned().collect();
            if !sim.crashed() {
                v.push("the crash point was never reached".to_owned());
            }
            if leftovers.crash(&sim, op, seed) {
                v.extend(after_crash(&sim, &model, &run));
            }
            v
        });
        eprintln!(
            "prune racing a lease, {}: {n} operations (the lease released at operation {}) x \
             {seeds} seeds = {} crashes ({} distinct), {} with violations, {:.1}s",
            wl.name,
            clean.release_at.unwrap_or(0),
            swept.cases,
            swept.cases - swept.repeats,
            swept.violating,
            t.elapsed().as_secs_f64()
        );
        all.add(swept);
    }
    eprintln!(
        "prune racing a lease: {} crashes over {} workloads, {:.1}s",
        all.cases,
        WORKLOADS.len(),
        started.elapsed().as_secs_f64()
    );
    all.assert_no_violation();
}
