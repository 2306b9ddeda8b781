//! A crash at every I/O operation of growing a disk, on the simulator.
//!
//! The workload is "write, point, resize, write past the old end, point", once in a vault whose
//! segments are large (the resize record stays in the open segment) and once with 64 KiB
//! segments (it is sealed and rotated past). It is run once to count its operations N; then for
//! every operation index `0..N` and several crash seeds the simulated machine loses power there.
//! After each crash (see `recover_and_resume`):
//! - `Writer::open` succeeds, and a second open changes nothing;
//! - every acknowledged point is listed and every listed point reads back byte-exact at the size
//!   the disk had at its LSN: the old size before the resize, the new one after it, the grown
//!   range zero except where written;
//! - the recovered writer's size of the disk is the size the journal has at its last LSN (a
//!   resize record that became durable before its manifest did is committed by recovery), and
//!   it writes and takes a point that survive another crash.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_io::Storage;
use replog_io::sim::SimStorage;
use replog_tests::crash_sweep::{Leftovers, Sweep, crash_at_every_op};
use replog_tests::{
    PointModel, SimImage, check_vault, noise, recover_and_resume, small_segments, stress,
    vault_dirs, write_image,
};
use replog_writer::{Compression, VaultSettings, WriteError, Writer};

const DIR: &str = "/vault";
const OLD_BYTES: u64 = 48 << 10;
const NEW_BYTES: u64 = 112 << 10;

/// Creates the vault with disk `a` of `OLD_BYTES` from an image, writes and takes one point, and
/// makes everything durable.
fn prefix(segment_bytes: u64) -> (SimImage, PointModel) {
    let sim = SimStorage::new(1);
    let storage: Arc<dyn Storage> = sim.clone();
    let settings = VaultSettings {
        segment_bytes,
        ..small_segments(Compression::Lz4)
    };
    let mut w = Writer::create(storage.clone(), Path::new(DIR), settings).expect("created");
    sim.create_dir_all(Path::new("/images")).expect("created");
    let image = noise(1, OLD_BYTES as usize);
    let img = write_image(storage.as_ref(), Path::new("/images/a"), &image);
    let a = w
        .add_disk_from_image("a", img.as_ref(), Path::new("/images/a"))
        .expect("added")
        .disk_id;
    let mut model = PointModel::default();
    model.add_disk(a, image);
    model.point(&mut w, "prefix").expect("acknowledged");
    w.close().expect("closed");
    let mut dirs = vault_dirs(Path::new(DIR));
    dirs.push(PathBuf::from("/images"));
    (SimImage::capture(&sim, &dirs), model)
}

fn write(w: &mut Writer, m: &mut PointModel, offset: u64, data: &[u8]) -> Result<(), WriteError> {
    m.write(1, offset, data);
    w.write(1, offset, data).map(|_| ())
}

/// Write, point, resize, write past the old end, point. With 64 KiB segments, enough is written
/// on both sides of the resize to rotate segments.
fn workload(w: &mut Writer, m: &mut PointModel, rounds: u64) -> Result<(), WriteError> {
    for i in 0..rounds {
        write(w, m, i * 9000 % (OLD_BYTES - 9000), &noise(10 + i, 9000))?;
    }
    m.point(w, "small")?;
    m.disks
        .get_mut(&1)
        .expect("disk a")
        .resize(NEW_BYTES as usize, 0);
    let grown = w.resize_disk("a", NEW_BYTES)?;
    assert_eq!(
        grown.disk_bytes, NEW_BYTES,
        "the writer reports the new size"
    );
    write(w, m, OLD_BYTES - 1000, &noise(20, 5000))?;
    for i in 0..rounds {
        write(w, m, OLD_BYTES + 4096 + i * 7000, &noise(30 + i, 6000))?;
    }
    m.point(w, "grown")?;
    // `close` is `sync` and a drop; the caller drops the writer.
    w.sync()
}

/// A workload and the vault it starts from.
struct Case {
    name: &'static str,
    image: SimImage,
    model: PointModel,
    rounds: u64,
}

fn cases() -> Vec<Case> {
    let (open_image, open_model) = prefix(4 << 20);
    let (rot_image, rot_model) = prefix(64 << 10);
    vec![
        Case {
            name: "resize in the open segment",
            image: open_image,
            model: open_model,
            rounds: 1,
        },
        Case {
            name: "resize across rotations",
            image: rot_image,
            model: rot_model,
            rounds: 8,
        },
    ]
}

/// Recovers after the crash and checks everything; the resumed writer must hold the disk at the
/// size the journal gives it and write across the whole of it.
fn after_crash(sim: &Arc<SimStorage>, model: &mut PointModel, seed: u64) -> Vec<String> {
    let base_of = |_: &str, bytes: u64| vec![0; bytes as usize];
    let resume = |mut w: Writer, model: &mut PointModel| -> Result<(), String> {
        let journal_bytes = model.disks[&1].len() as u64;
        let writer_bytes = w.disk("a").map_err(|e| e.to_string())?.disk_bytes;
        if writer_bytes != journal_bytes {
            return Err(format!(
                "the writer says disk a is {writer_bytes} bytes, the journal {journal_bytes}"
            ));
        }
        let end = journal_bytes - 900;
        write(&mut w, model, end, &noise(seed, 900)).map_err(|e| e.to_string())?;
        model
            .point(&mut w, "after recovery")
            .map_err(|e| e.to_string())?;
        w.close().map_err(|e| e.to_string())
    };
    recover_and_resume(sim, Path::new(DIR), model, seed, base_of, resume).violations
}

/// Runs the workload with a crash at operation `op` (relative to its start).
fn crash_case(case: &Case, op: u64, seed: u64, leftovers: &mut Leftovers) -> Vec<String> {
    let sim = case.image.restore(seed);
    let storage: Arc<dyn Storage> = sim.clone();
    let mut model = case.model.clone();
    let mut w = Writer::open(storage, Path::new(DIR)).expect("the prefix opens");
    sim.set_crash_at(Some(sim.ops() + op));
    let result = workload(&mut w, &mut model, case.rounds);
    drop(w);
    let mut violations = Vec::new();
    match result {
        Err(e) if !sim.crashed() => violations.push(format!("failed without a crash: {e}")),
        Ok(()) => violations.push("the crash point was never reached".to_owned()),
        Err(_) => {}
    }
    if leftovers.crash(&sim, op, seed) {
        violations.extend(after_crash(&sim, &mut model, seed));
    }
    violations
}

/// The number of operations the workload makes from its start, checking the clean run.
fn count_ops(case: &Case) -> u64 {
    let sim = case.image.restore(0);
    let storage: Arc<dyn Storage> = sim.clone();
    let mut model = case.model.clone();
    let mut w = Writer::open(storage.clone(), Path::new(DIR)).expect("the prefix opens");
    let start = sim.ops();
    workload(&mut w, &mut model, case.rounds).expect("the workload runs without faults");
    let n = sim.ops() - start;
    drop(w);
    let violations = check_vault(&storage, Path::new(DIR), &model);
    assert!(violations.is_empty(), "{}: {violations:?}", case.name);
    let vault = replog_reader::Vault::open(storage, Path::new(DIR)).expect("opens");
    let sizes: Vec<u64> = vault
        .points()
        .iter()
        .map(|p| vault.view(p).expect("a view").disks()[0].size())
        .collect();
    assert_eq!(sizes, [OLD_BYTES, OLD_BYTES, NEW_BYTES], "{}", case.name);
    n
}

#[test]
fn a_crash_at_every_operation_of_a_resize_keeps_each_point_at_its_size() {
    let started = std::time::Instant::now();
    let seeds = 8 * stress();
    let mut all = Sweep::default();
    for case in cases() {
        let n = count_ops(&case);
        let swept = crash_at_every_op(case.name, n, seeds, |op, seed, leftovers| {
            crash_case(&case, op, seed, leftovers)
        });
        eprintln!(
            "resize crashes, {}: {n} operations x {seeds} seeds = {} crashes ({} left files an earlier seed had), {} with violations",
            case.name, swept.cases, swept.repeats, swept.violating
        );
        all.add(swept);
    }
    eprintln!(
        "resize crashes: {} crashes ({} distinct), {} with violations, {:.1}s",
        all.cases,
        all.cases - all.repeats,
        all.violating,
        started.elapsed().as_secs_f64()
    );
    all.assert_no_violation();
}
