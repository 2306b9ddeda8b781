//! A crash at every I/O operation of each workload, on the simulator.
//!
//! Each workload starts from a vault created (and made durable) beforehand: creation itself is
//! not enumerated, because a vault that never finished being created has nothing to recover.
//! The workload is run once to count its operations N; then for every operation index
//! `0..N` and several crash seeds, it is run again with the simulated machine losing power at
//! that operation, which keeps synced data and drops, keeps or tears (at 512 bytes) each unsynced
//! write, as the seed decides. After each crash:
//! - `Writer::open` succeeds;
//! - every point acknowledged before the crash is listed and reads back byte-exact, and every
//!   listed point (acknowledged or not) is one the workload took and matches the model at its
//!   LSN: nothing torn reads as valid;
//! - a second `Writer::open` changes no byte of any file and finds the same LSN and points;
//! - the recovered writer works: a write and a point are acknowledged, survive another crash,
//!   and read back.
//!
//! Workloads: appends and points; segment rotation (64 KiB segments); adding disks (from an
//! image and empty); ingest of images (digest cache missing, stale and valid).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_io::Storage;
use replog_io::sim::SimStorage;
use replog_tests::crash_sweep::{Leftovers, Sweep, crash_at_every_op, crashed_as_set};
use replog_tests::{
    PointModel, SimImage, check_vault, noise, recover_and_resume, stress, vault_dirs, write_image,
};
use replog_writer::{Compression, VaultSettings, WriteError, Writer};

const DIR: &str = "/vault";
const IMAGES: &str = "/images";

fn image_path(name: &str) -> PathBuf {
    Path::new(IMAGES).join(name)
}

/// The disk contents images hold, by disk name, for disks that have no record yet.
type Bases = BTreeMap<&'static str, Vec<u8>>;

/// A vault ready for a workload: its files, its model, and the base content of every disk the
/// workload may add.
struct Prefix {
    image: SimImage,
    model: PointModel,
    bases: Bases,
}

/// Creates the vault with disk `a` (64 KiB, from an image), an empty disk `big` of `big_bytes`
/// if asked, and one acknowledged point, writes the images the workload needs, and makes
/// everything durable.
fn prefix(segment_bytes: u64, big_bytes: u64, images: &[(&'static str, Vec<u8>)]) -> Prefix {
    let sim = SimStorage::new(1);
    let storage: Arc<dyn Storage> = sim.clone();
    let settings = VaultSettings {
        block_bytes: 4096,
        segment_bytes,
        compression: Compression::Lz4,
    };
    let mut w = Writer::create(storage.clone(), Path::new(DIR), settings).expect("created");
    sim.create_dir_all(Path::new(IMAGES)).expect("created");
    let mut model = PointModel::default();
    let mut bases = Bases::new();
    let a_image = noise(1, 64 << 10);
    let img = write_image(storage.as_ref(), &image_path("a"), &a_image);
    let a = w
        .add_disk_from_image("a", img.as_ref(), &image_path("a"))
        .expect("added")
        .disk_id;
    model.add_disk(a, a_image.clone());
    bases.insert("a", a_image);
    if big_bytes > 0 {
        model
            .add_zero_disk(&mut w, "big", big_bytes)
            .expect("added");
    }
    model
        .stage_write(&mut w, a, 1000, &noise(2, 3000))
        .expect("staged");
    model.point(&mut w, "prefix").expect("acknowledged");
    w.close().expect("closed");
    for (name, bytes) in images {
        write_image(storage.as_ref(), &image_path(name), bytes);
        bases.insert(name, bytes.clone());
    }
    let mut dirs = vault_dirs(Path::new(DIR));
    dirs.push(PathBuf::from(IMAGES));
    Prefix {
        image: SimImage::capture(&sim, &dirs),
        model,
        bases,
    }
}

type Run = fn(&mut Writer, &mut PointModel, &Arc<dyn Storage>) -> Result<(), WriteError>;

/// (a) Writes, zero ranges and points in one segment, one record large enough to take two
/// writes to the file.
fn appends(w: &mut Writer, m: &mut PointModel, _: &Arc<dyn Storage>) -> Result<(), WriteError> {
    m.stage_write(w, 2, 100_000, &noise(9, 1_300_000))?;
    m.point(w, "big")?;
    m.stage_zero(w, 2, 0, 600_000)?;
    m.stage_write(w, 2, 50, &noise(8, 700))?;
    w.sync()?;
    for i in 0..8u64 {
        m.stage_write(
            w,
            1,
            i * 7000 % 50_000,
            &noise(10 + i, 1500 + i as usize * 700),
        )?;
        if i % 3 == 1 {
            m.stage_zero(w, 1, i * 3000, 5000)?;
        }
        if i % 2 == 1 {
            m.point(w, &format!("a{i}"))?;
        }
    }
    w.sync()?;
    m.stage_write(w, 1, 60_000, &[9; 2000])?;
    m.point(w, "last")?;
    // `close` is `sync` and a drop; the caller drops the writer.
    w.sync()
}

/// (b) Enough records to seal and rotate segments three times, points on each side.
fn rotation(w: &mut Writer, m: &mut PointModel, _: &Arc<dyn Storage>) -> Result<(), WriteError> {
    for i in 0..26u64 {
        m.stage_write(w, 1, i * 5300 % 52_000, &noise(20 + i, 9000))?;
        if i % 5 == 2 {
            m.stage_zero(w, 1, i * 1000, 4096)?;
        }
        if i % 4 == 3 {
            m.point(w, &format!("r{i}"))?;
        }
    }
    m.point(w, "last")?;
    // `close` is `sync` and a drop; the caller drops the writer.
    w.sync()
}

/// (c) A disk added from an image and an empty one, written to, with points around them.
fn add_disks(
    w: &mut Writer,
    m: &mut PointModel,
    storage: &Arc<dyn Storage>,
) -> Result<(), WriteError> {
    m.stage_write(w, 1, 0, &noise(30, 4000))?;
    let img = storage
        .open(&image_path("c"), replog_io::OpenMode::Read)
        .expect("the image opens");
    let c = w.add_disk_from_image("c", img.as_ref(), &image_path("c"))?;
    m.add_disk(c.disk_id, noise(3, 40_000));
    m.stage_write(w, c.disk_id, 100, &noise(31, 5000))?;
    m.point(w, "after c")?;
    let d = m.add_zero_disk(w, "d", 16 << 10)?;
    m.stage_write(w, d, 8192, &noise(32, 3000))?;
    m.stage_zero(w, c.disk_id, 0, 4096)?;
    m.point(w, "after d")?;
    // `close` is `sync` and a drop; the caller drops the writer.
    w.sync()
}

/// (d) Ingests: with a stale digest cache (records newer than it), then with a valid one.
fn ingests(
    w: &mut Writer,
    m: &mut PointModel,
    storage: &Arc<dyn Storage>,
) -> Result<(), WriteError> {
    m.stage_write(w, 1, 20_000, &noise(40, 3000))?;
    m.point(w, "before")?;
    for name in ["a2", "a3"] {
        let img = storage
            .open(&image_path(name), replog_io::OpenMode::Read)
            .expect("the image opens");
        m.add_disk(1, ingest_image(name));
        w.ingest("a", img.as_ref(), &image_path(name), &|_| {})?;
        m.point(w, &format!("after {name}"))?;
    }
    // `close` is `sync` and a drop; the caller drops the writer.
    w.sync()
}

/// The images ingested into disk a.
fn ingest_image(name: &str) -> Vec<u8> {
    let mut a = noise(1, 64 << 10);
    a[0..8192].fill(0);
    a[30_000..36_000].copy_from_slice(&noise(50, 6000));
    if name == "a3" {
        a[50_000..51_000].copy_from_slice(&noise(51, 1000));
        a[12_288..16_384].fill(0);
    }
    a
}

/// A workload and the vault it starts from.
struct Workload {
    name: &'static str,
    prefix: Prefix,
    run: Run,
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "appends and points",
            prefix: prefix(4 << 20, 1536 << 10, &[]),
            run: appends,
        },
        Workload {
            name: "segment rotation",
            prefix: prefix(64 << 10, 0, &[]),
            run: rotation,
        },
        Workload {
            name: "add disks",
            prefix: prefix(1 << 20, 0, &[("c", noise(3, 40_000))]),
            run: add_disks,
        },
        Workload {
            name: "ingest",
            prefix: prefix(
                1 << 20,
                0,
                &[("a2", ingest_image("a2")), ("a3", ingest_image("a3"))],
            ),
            run: ingests,
        },
    ]
}

/// What the recoveries did, for the summary.
#[derive(Default, Clone, Copy)]
struct Recoveries {
    torn_tails_cut: u64,
    rotations_completed: u64,
    leftovers_removed: u64,
}

impl Recoveries {
    fn add(&mut self, r: &replog_writer::RecoveryReport) {
        self.torn_tails_cut += u64::from(r.torn_tail.is_some());
        self.rotations_completed += u64::from(r.completed_rotation);
        self.leftovers_removed += u64::from(!r.removed.is_empty());
    }
}

/// Recovers after the crash and checks everything (see `recover_and_resume`); returns the
/// violations.
fn after_crash(
    sim: &Arc<SimStorage>,
    wl: &Workload,
    model: &mut PointModel,
    seed: u64,
    recoveries: &mut Recoveries,
) -> Vec<String> {
    let bases = &wl.prefix.bases;
    let base_of = |name: &str, bytes: u64| {
        bases
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![0; bytes as usize])
    };
    let resume = |mut w: Writer, model: &mut PointModel| -> Result<(), String> {
        let d = w.disks()[0].disk_id;
        model
            .stage_write(&mut w, d, 4096, &noise(seed, 900))
            .map_err(|e| e.to_string())?;
        model
            .point(&mut w, "after recovery")
            .map_err(|e| e.to_string())?;
        w.close().map_err(|e| e.to_string())
    };
    let after = recover_and_resume(sim, Path::new(DIR), model, seed, base_of, resume);
    if let Some(r) = &after.recovery {
        recoveries.add(r);
    }
    after.violations
}

/// Runs the workload with a crash at operation `op` (relative to its start).
fn crash_case(
    wl: &Workload,
    op: u64,
    seed: u64,
    leftovers: &mut Leftovers,
    recoveries: &mut Recoveries,
) -> Vec<String> {
    let sim = wl.prefix.image.restore(seed);
    let storage: Arc<dyn Storage> = sim.clone();
    let mut model = wl.prefix.model.clone();
    let mut w = Writer::open(storage.clone(), Path::new(DIR)).expect("the prefix opens");
    sim.set_crash_at(Some(sim.ops() + op));
    let result = (wl.run)(&mut w, &mut model, &storage);
    drop(w);
    let mut violations: Vec<String> = crashed_as_set(&sim, &result).into_iter().collect();
    if leftovers.crash(&sim, op, seed) {
        violations.extend(after_crash(&sim, wl, &mut model, seed, recoveries));
    }
    violations
}

/// The number of operations the workload makes from its start.
fn count_ops(wl: &Workload) -> u64 {
    let sim = wl.prefix.image.restore(0);
    let storage: Arc<dyn Storage> = sim.clone();
    let mut model = wl.prefix.model.clone();
    let mut w = Writer::open(storage.clone(), Path::new(DIR)).expect("the prefix opens");
    let start = sim.ops();
    (wl.run)(&mut w, &mut model, &storage).expect("the workload runs without faults");
    let n = sim.ops() - start;
    let violations = check_vault(&storage, Path::new(DIR), &model);
    assert!(
        violations.is_empty(),
        "{}: without a crash: {violations:?}",
        wl.name
    );
    n
}

#[test]
fn a_crash_at_every_operation_of_every_workload_loses_no_acknowledged_point() {
    let started = std::time::Instant::now();
    let seeds = 16 * stress();
    let mut recoveries = Recoveries::default();
    let mut all = Sweep::default();
    for wl in workloads() {
        let n = count_ops(&wl);
        let t = std::time::Instant::now();
        let swept = crash_at_every_op(wl.name, n, seeds, |op, seed, leftovers| {
            crash_case(&wl, op, seed, leftovers, &mut recoveries)
        });
        eprintln!(
            "crash points, {}: {n} operations x {seeds} seeds = {} crashes ({} left files an earlier seed had), {} with violations, {:.1}s",
            wl.name,
            swept.cases,
            swept.repeats,
            swept.violating,
            t.elapsed().as_secs_f64()
        );
        all.add(swept);
    }
    eprintln!(
        "crash points: {} crashes over 4 workloads (every operation x {seeds} seeds, {} distinct), {} with violations; recoveries cut {} torn tails, completed {} rotations, removed leftovers {} times; {:.1}s",
        all.cases,
        all.cases - all.repeats,
        all.violating,
        recoveries.torn_tails_cut,
        recoveries.rotations_completed,
        recoveries.leftovers_removed,
        started.elapsed().as_secs_f64()
    );
    all.assert_no_violation();
}
