//! A crash at every I/O operation of Complete Migration, on the simulator.
//!
//! The vault (two disks, several sealed segments, many points) is migrated to its newest point
//! once without a crash, to learn the operation count N; then, for every operation index in
//! `0..N` and several crash seeds, the machine loses power there. After each crash:
//! - if no migration was recorded, the vault is untouched: the writer opens and every point reads
//!   back byte-exact;
//! - running Complete Migration again resumes and completes: the output images equal the model
//!   at the point, byte for byte, and their recorded xxh3-128 matches;
//! - a third run is a no-op that reports the same record;
//! - the writer refuses to open (the vault is migrated), the journal directory is empty, the
//!   vault still opens for reading, and `verify` finds no damage.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::layout;
use replog_io::Storage;
use replog_io::sim::SimStorage;
use replog_tests::crash_sweep::{crash_at_every_op, crashed_as_set};
use replog_tests::{
    PointModel, SimImage, check_listed_points, noise, small_segments, stress, vault_dirs,
};
use replog_writer::{
    Compression, MigrationOptions, MigrationPhase, WriteErrorKind, Writer, complete_migration,
};

const DIR: &str = "/vault";
const OUT: &str = "/out/migrated";

fn prepare() -> (SimImage, PointModel, u64) {
    let sim = SimStorage::new(5);
    let storage: Arc<dyn Storage> = sim.clone();
    let settings = small_segments(Compression::Lz4);
    let mut w = Writer::create(storage.clone(), Path::new(DIR), settings).expect("created");
    sim.create_dir_all(Path::new("/images")).expect("created");
    sim.create_dir_all(Path::new("/out")).expect("created");
    let mut m = PointModel::default();
    let a = m
        .add_image_disk(&mut w, &*storage, "/images/a", noise(1, 40 << 10))
        .expect("added");
    let b = m.add_zero_disk(&mut w, "b", 64 << 10).expect("added");
    let mut last = 0;
    for i in 0..20u64 {
        let (disk, size) = if i % 2 == 0 {
            (b, 64 << 10)
        } else {
            (a, 40 << 10)
        };
        let len = 1500 + (i as usize * 911) % 7000;
        let at = (i * 6151) % (size - len as u64);
        let data = noise(200 + i, len);
        m.stage_write(&mut w, disk, at, &data).expect("staged");
        if i % 6 == 5 {
            m.stage_zero(&mut w, disk, at / 3, 2500).expect("staged");
        }
        last = m.point(&mut w, "").expect("acknowledged").lsn;
    }
    w.close().expect("closed");
    let mut dirs = vault_dirs(Path::new(DIR));
    dirs.push(PathBuf::from("/images"));
    dirs.push(PathBuf::from("/out"));
    (SimImage::capture(&sim, &dirs), m, last)
}

fn opts() -> MigrationOptions {
    MigrationOptions {
        out_dir: PathBuf::from(OUT),
        point_id: None,
        view: Default::default(),
    }
}

/// Runs the migration on a fresh copy, crashing at `crash_at` operations after its start.
fn run(
    image: &SimImage,
    seed: u64,
    crash_at: Option<u64>,
) -> (Result<(), String>, Arc<SimStorage>, u64) {
    let sim = image.restore(seed);
    let storage: Arc<dyn Storage> = sim.clone();
    let start = sim.ops();
    if let Some(op) = crash_at {
        sim.set_crash_at(Some(start + op));
    }
    let result = complete_migration(storage, Path::new(DIR), &opts())
        .map(|_| ())
        .map_err(|e| e.to_string());
    let used = sim.ops() - start;
    (result, sim, used)
}

/// Checks the completed migration: outputs, record, refusal, empty journal, verify.
fn check_complete(sim: &Arc<SimStorage>, model: &PointModel, lsn: u64) -> Vec<String> {
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new(DIR);
    let mut v = Vec::new();
    let again = match complete_migration(storage.clone(), dir, &opts()) {
        Ok(r) => r,
        Err(e) => return vec![format!("running it again after completion fails: {e}")],
    };
    if !again.already_complete || again.record.phase != MigrationPhase::Complete {
        v.push(format!("a rerun is not a no-op: {again:?}"));
    }
    if again.record.lsn != lsn {
        v.push(format!(
            "migrated to LSN {}, the newest point is {lsn}",
            again.record.lsn
        ));
    }
    let want = &model.at_point[&lsn];
    for d in &again.disks {
        let got = sim.live_bytes(&d.path).unwrap_or_default();
        if &got != want.get(&d.disk_id).expect("a disk of the model") {
            v.push(format!(
                "{} differs from the model at the point",
                d.path.display()
            ));
        }
        let hash = xxhash_rust::xxh3::xxh3_128(&got);
        if d.xxh3 != Some(hash) {
            v.push(format!(
                "{}: recorded hash {:?}, image hashes to {hash:#x}",
                d.path.display(),
                d.xxh3
            ));
        }
        if sim.durable_bytes(&d.path) != Some(got) {
            v.push(format!("{} is not durable", d.path.display()));
        }
    }
    if again.disks.len() != want.len() {
        v.push(format!(
            "{} disks migrated, the model has {}",
            again.disks.len(),
            want.len()
        ));
    }
    match Writer::open(storage.clone(), dir) {
        Err(e) if e.kind == WriteErrorKind::Migrated => {}
        Err(e) => v.push(format!("the writer is refused for another reason: {e}")),
        Ok(_) => v.push("the writer opens a migrated vault".to_owned()),
    }
    let journal = storage
        .read_dir(&dir.join(layout::JOURNAL_DIR))
        .unwrap_or_default();
    if !journal.is_empty() {
        v.push(format!("journal/ still holds {journal:?}"));
    }
    match replog_reader::Vault::open(storage.clone(), dir) {
        Ok(vault) if vault.points().is_empty() => {}
        Ok(vault) => v.push(format!(
            "a migrated vault lists {} points",
            vault.points().len()
        )),
        Err(e) => v.push(format!("the migrated vault does not open for reading: {e}")),
    }
    let report = replog_reader::verify(storage.as_ref(), dir);
    if !report.is_intact() {
        v.push(format!("verify: {:?}", report.findings()));
    }
    v
}

fn after_crash(sim: &Arc<SimStorage>, model: &PointModel, lsn: u64) -> Vec<String> {
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new(DIR);
    let mut v = Vec::new();
    let started = match replog_reader::Vault::open(storage.clone(), dir) {
        Ok(vault) => {
            let started = vault.manifest().lifecycle.migration.is_some();
            if !started {
                v.extend(check_listed_points(&vault, model));
                if vault.points().len() != model.acked.len() {
                    v.push("points were lost before the migration started".to_owned());
                }
            }
            started
        }
        Err(e) => {
            return vec![format!(
                "the vault does not open for reading after the crash: {e}"
            )];
        }
    };
    if !started && let Err(e) = Writer::open(storage.clone(), dir) {
        v.push(format!(
            "no migration was recorded, but the writer does not open: {e}"
        ));
    }
    if let Err(e) = complete_migration(storage, dir, &opts()) {
        v.push(format!("resuming the migration fails: {e}"));
        return v;
    }
    v.extend(check_complete(sim, model, lsn));
    v
}

#[test]
fn a_crash_at_every_operation_of_complete_migration_resumes_to_the_same_result() {
    let started = std::time::Instant::now();
    let (image, model, lsn) = prepare();
    let (clean, sim, n) = run(&image, 0, None);
    clean.expect("the migration runs without faults");
    let clean_violations = check_complete(&sim, &model, lsn);
    assert!(clean_violations.is_empty(), "{clean_violations:?}");
    let seeds = 8 * stress();
    let swept = crash_at_every_op("", n, seeds, |op, seed, leftovers| {
        let (result, sim, _) = run(&image, seed, Some(op));
        let mut v: Vec<String> = crashed_as_set(&sim, &result).into_iter().collect();
        if leftovers.crash(&sim, op, seed) {
            v.extend(after_crash(&sim, &model, lsn));
        }
        v
    });
    eprintln!(
        "migration crashes: {n} operations x {seeds} seeds = {} crashes ({} distinct), {} with violations, {:.1}s",
        swept.cases,
        swept.cases - swept.repeats,
        swept.violating,
        started.elapsed().as_secs_f64()
    );
    swept.assert_no_violation();
}
