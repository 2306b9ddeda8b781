//! Injected I/O errors on the simulator: EIO on journal writes and syncs (once and forever), EIO
//! on every file and directory sync of a workload, and ENOSPC at every operation of a workload.
//!
//! The workload runs on a vault that already holds acknowledged points: writes, zero ranges,
//! points, a disk added from an image, enough records to rotate segments, an ingest. A fault is
//! armed to strike the k-th matching operation, for every k until it no longer fires, with
//! several crash seeds. Then:
//! - the call it strikes returns an error of the right kind whose message names a vault file;
//!   no fault is swallowed (a fault that fired always surfaces as an error);
//! - after a journal error, every later call (write, zero, point, sync, add_disk, ingest, close)
//!   returns `Poisoned`: a point taken after the error is never acknowledged, even though the
//!   storage would now sync fine (a once-only fault);
//! - the vault reopens after a power loss (`crash(seed)`); every acknowledged point reads back
//!   byte-exact, every listed point matches the model, and a second recovery finds the same
//!   state;
//! - the reopened writer works: new writes and a point are acknowledged and survive a crash.
//!
//! After a failed write, create, rename, length change or other operation that is not a sync,
//! the vault is also reopened with the machine still up (faults cleared, the same storage, no
//! crash: the process restarted, the machine did not), with the same checks. After a failed
//! file or directory sync that reopen must not trust what the failed sync may have dropped;
//! that case is `reopening_in_the_same_boot_after_a_failed_sync_trusts_nothing_unsynced`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_io::Storage;
use replog_io::sim::{Fault, FaultError, FaultOp, SimStorage};
use replog_tests::{
    PointModel, SimImage, check_vault, noise, small_segments, stress, vault_dirs, write_image,
};
use replog_writer::{Compression, PointKind, WriteError, WriteErrorKind, Writer};

const DIR: &str = "/vault";
const DISK_BYTES: u64 = 64 << 10;
const IMAGE_C: &str = "/images/c.img";
const IMAGE_B2: &str = "/images/b2.img";

/// The vault before the workload, and what it holds.
struct Setup {
    image: SimImage,
    model: PointModel,
    /// Contents of the images the workload adds or ingests, by path.
    images: BTreeMap<&'static str, Vec<u8>>,
}

fn setup() -> Setup {
    let sim = SimStorage::new(1);
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new(DIR);
    let settings = small_segments(Compression::Lz4);
    let mut w = Writer::create(storage.clone(), dir, settings).expect("created");
    let mut model = PointModel::default();
    let a = model.add_zero_disk(&mut w, "a", DISK_BYTES).expect("added");
    sim.create_dir_all(Path::new("/images")).expect("created");
    let b_image = noise(2, DISK_BYTES as usize);
    let img = write_image(storage.as_ref(), Path::new("/images/b.img"), &b_image);
    let b = w
        .add_disk_from_image("b", img.as_ref(), Path::new("/images/b.img"))
        .expect("added")
        .disk_id;
    model.add_disk(b, b_image.clone());
    model
        .stage_write(&mut w, a, 0, &noise(3, 9000))
        .expect("staged");
    model.point(&mut w, "setup-1").expect("acknowledged");
    model.zero(b, 4096, 8192);
    w.zero(b, 4096, 8192).expect("staged");
    model
        .stage_write(&mut w, b, 30_000, &[7; 3000])
        .expect("staged");
    model.point(&mut w, "setup-2").expect("acknowledged");
    w.close().expect("closed");
    let mut images = BTreeMap::new();
    images.insert(IMAGE_C, noise(4, 48 << 10));
    let mut b2 = model.disks[&b].clone();
    b2[10_000..20_000].copy_from_slice(&noise(5, 10_000));
    b2[40_000..44_000].fill(0);
    images.insert(IMAGE_B2, b2);
    for (path, bytes) in &images {
        write_image(storage.as_ref(), Path::new(path), bytes);
    }
    let mut dirs = vault_dirs(dir);
    dirs.push(PathBuf::from("/images"));
    Setup {
        image: SimImage::capture(&sim, &dirs),
        model,
        images,
    }
}

/// Runs the workload until a call fails; returns the failing call's name and error.
fn workload(
    w: &mut Writer,
    model: &mut PointModel,
    storage: &Arc<dyn Storage>,
    images: &BTreeMap<&'static str, Vec<u8>>,
) -> Result<(), (String, WriteError)> {
    let at = |what: &str| {
        let what = what.to_owned();
        move |e| (what, e)
    };
    model
        .stage_write(w, 1, 1000, &noise(10, 5000))
        .map_err(at("write"))?;
    model.stage_zero(w, 2, 0, 4096).map_err(at("zero"))?;
    model.point(w, "w-1").map_err(at("point"))?;
    model
        .stage_write(w, 2, 5000, &noise(11, 3000))
        .map_err(at("write"))?;
    w.sync().map_err(at("sync"))?;
    model.point(w, "w-2").map_err(at("point"))?;
    let img = storage
        .open(Path::new(IMAGE_C), replog_io::OpenMode::Read)
        .expect("the image opens");
    let c = w
        .add_disk_from_image("c", img.as_ref(), Path::new(IMAGE_C))
        .map_err(at("add_disk_from_image"))?
        .disk_id;
    model.add_disk(c, images[IMAGE_C].clone());
    model
        .stage_write(w, c, 100, &noise(12, 2000))
        .map_err(at("write"))?;
    model.point(w, "w-3").map_err(at("point"))?;
    // More than a segment of records: at least one rotation, with points on both sides.
    for i in 0..18u64 {
        let disk = 1 + (i % 3) as u32;
        let len = if disk == 3 { 40_000 } else { DISK_BYTES - 5000 };
        model
            .stage_write(w, disk, (i * 4100) % len, &noise(20 + i, 4500))
            .map_err(at("write"))?;
        if i % 6 == 5 {
            model.point(w, &format!("r-{i}")).map_err(at("point"))?;
        }
    }
    let img = storage
        .open(Path::new(IMAGE_B2), replog_io::OpenMode::Read)
        .expect("the image opens");
    model.add_disk(2, images[IMAGE_B2].clone());
    w.ingest("b", img.as_ref(), Path::new(IMAGE_B2), &|_| {})
        .map_err(at("ingest"))?;
    model.point(w, "after ingest").map_err(at("point"))?;
    model
        .stage_write(w, 1, 60_000, &noise(13, 1000))
        .map_err(at("write"))?;
    w.sync().map_err(at("sync"))
}

/// Every kind of call on a writer poisoned by an earlier failure must return `Poisoned`.
fn poisoned_everywhere(mut w: Writer, storage: &Arc<dyn Storage>) -> Result<(), String> {
    let img = storage
        .open(Path::new(IMAGE_B2), replog_io::OpenMode::Read)
        .expect("the image opens");
    let results: Vec<(&str, Result<(), WriteError>)> = vec![
        ("write", w.write(1, 0, &[1; 512]).map(|_| ())),
        ("zero", w.zero(1, 0, 512).map(|_| ())),
        (
            "point",
            w.point(PointKind::CrashConsistent, "after the error")
                .map(|_| ()),
        ),
        ("sync", w.sync()),
        ("add_disk", w.add_disk("z", 4096).map(|_| ())),
        (
            "ingest",
            w.ingest("b", img.as_ref(), Path::new(IMAGE_B2), &|_| {})
                .map(|_| ()),
        ),
        ("close", w.close()),
    ];
    for (what, r) in results {
        match r {
            Err(e) if e.kind == WriteErrorKind::Poisoned => {}
            Err(e) => return Err(format!("{what} after the error returned {:?}: {e}", e.kind)),
            Ok(()) => return Err(format!("{what} after the error succeeded")),
        }
    }
    Ok(())
}

/// How the vault is reopened after the error.
#[derive(Clone, Copy, Debug)]
enum Reopen {
    /// Power loss, then reopen.
    Crash,
    /// Faults cleared, the same (live) storage reopened: the process restarted, the machine
    /// did not.
    Live,
}

/// What one case found.
#[derive(Default)]
struct Outcome {
    fired: bool,
    violations: Vec<String>,
}

/// Learns what survived of the unacknowledged records, then writes a little to every disk and
/// takes a point.
fn fresh_point(
    w: &mut Writer,
    model: &mut PointModel,
    storage: &Arc<dyn Storage>,
    images: &BTreeMap<&'static str, Vec<u8>>,
    tag: u64,
) -> Result<(), String> {
    model.resync(storage, Path::new(DIR), w, |name, bytes| match name {
        "a" => vec![0; bytes as usize],
        "b" => noise(2, bytes as usize),
        _ => images[IMAGE_C].clone(),
    })?;
    for d in w.disks() {
        let at = (tag * 977 + u64::from(d.disk_id) * 5000) % (d.disk_bytes - 700);
        model
            .stage_write(w, d.disk_id, at, &noise(tag + u64::from(d.disk_id), 700))
            .map_err(|e| e.to_string())?;
    }
    model
        .point(w, "after recovery")
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Reopens after the error, checks, works again, crashes, checks again.
fn recover_and_check(
    sim: &Arc<SimStorage>,
    model: &mut PointModel,
    images: &BTreeMap<&'static str, Vec<u8>>,
    reopen: Reopen,
    seed: u64,
) -> Vec<String> {
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new(DIR);
    sim.clear_faults();
    match reopen {
        Reopen::Crash => sim.crash(seed),
        // The process that failed is gone, and its lock on the vault with it.
        Reopen::Live => sim.restart_processes(),
    }
    let mut w = match Writer::open(storage.clone(), dir) {
        Ok(w) => w,
        Err(e) => return vec![format!("reopen after the error failed: {e}")],
    };
    let (last, points) = (w.last_lsn(), w.points());
    drop(w);
    let mut violations = check_vault(&storage, dir, model);
    w = match Writer::open(storage.clone(), dir) {
        Ok(w) => w,
        Err(e) => return vec![format!("second reopen failed: {e}")],
    };
    if (w.last_lsn(), w.points()) != (last, points) {
        violations.push("a second recovery found another state".to_owned());
    }
    let done = fresh_point(&mut w, model, &storage, images, seed)
        .and_then(|()| w.close().map_err(|e| e.to_string()));
    if let Err(e) = done {
        violations.push(format!("the reopened writer fails: {e}"));
        return violations;
    }
    sim.crash(seed ^ 0x5555);
    if let Err(e) = Writer::open(storage.clone(), dir) {
        violations.push(format!("reopen after the new point failed: {e}"));
        return violations;
    }
    violations.extend(check_vault(&storage, dir, model));
    violations
}

/// One case: the workload with `fault` armed, then the checks.
fn run_case(
    setup: &Setup,
    fault: &Fault,
    journal_only: bool,
    reopen: Reopen,
    seed: u64,
) -> Outcome {
    let sim = setup.image.restore(seed);
    let storage: Arc<dyn Storage> = sim.clone();
    let mut model = setup.model.clone();
    let mut w = Writer::open(storage.clone(), Path::new(DIR)).expect("the vault opens");
    sim.inject(fault.clone());
    let result = workload(&mut w, &mut model, &storage, &setup.images);
    let mut out = Outcome {
        fired: sim.faults_fired() > 0,
        violations: Vec::new(),
    };
    match result {
        Ok(()) if out.fired => out
            .violations
            .push("a fault fired and no call failed".to_owned()),
        Ok(()) => return out,
        Err((what, e)) => {
            let kinds: &[WriteErrorKind] = match fault.error {
                FaultError::Eio => &[WriteErrorKind::Io],
                FaultError::Enospc => &[WriteErrorKind::NoSpace, WriteErrorKind::Io],
            };
            if !out.fired {
                out.violations
                    .push(format!("{what} failed with no fault fired: {e}"));
            } else if !kinds.contains(&e.kind) || !e.to_string().contains(DIR) {
                out.violations.push(format!(
                    "{what} failed with {:?}, not naming a vault file: {e}",
                    e.kind
                ));
            }
            if journal_only && let Err(v) = poisoned_everywhere(w, &storage) {
                out.violations.push(v);
            }
        }
    }
    out.violations.extend(recover_and_check(
        &sim,
        &mut model,
        &setup.images,
        reopen,
        seed,
    ));
    out
}

/// Strikes the k-th matching operation for every k until the fault no longer fires, with three
/// crash seeds (times `REPLOG_STRESS`) for each; returns the totals.
fn sweep(
    setup: &Setup,
    name: &str,
    make: impl Fn(u64) -> Fault,
    journal_only: bool,
    reopens: &[Reopen],
) -> Totals {
    let mut t = Totals::default();
    for &reopen in reopens {
        for seed in 0..3 * stress() {
            for k in 0.. {
                let fault = make(k);
                let out = run_case(setup, &fault, journal_only, reopen, seed * 1000 + k);
                if !out.fired && out.violations.is_empty() {
                    break;
                }
                t.cases += 1;
                t.fired += u64::from(out.fired);
                t.violating += u64::from(!out.violations.is_empty());
                t.violations.extend(
                    out.violations
                        .into_iter()
                        .map(|v| format!("{name} k={k} {reopen:?} seed {seed}: {v}")),
                );
                assert!(k < 10_000, "{name}: the fault keeps firing");
            }
        }
    }
    t
}

/// Cases run, faults fired, cases with a violation, and the violations.
#[derive(Default)]
struct Totals {
    cases: u64,
    fired: u64,
    violating: u64,
    violations: Vec<String>,
}

fn report(title: &str, results: Vec<Totals>, started: std::time::Instant) {
    let cases: u64 = results.iter().map(|r| r.cases).sum();
    let fired: u64 = results.iter().map(|r| r.fired).sum();
    let violating: u64 = results.iter().map(|r| r.violating).sum();
    let violations: Vec<String> = results.into_iter().flat_map(|r| r.violations).collect();
    eprintln!(
        "{title}: {cases} cases, {fired} faults injected, {violating} cases with violations, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        violations.is_empty(),
        "{} violations, first ones: {:#?}",
        violations.len(),
        &violations[..violations.len().min(10)]
    );
}

/// Operations whose failure leaves nothing behind that the kernel might have dropped: the
/// vault may be reopened with the machine still up. A failed file or directory sync is in
/// `reopening_in_the_same_boot_after_a_failed_sync_trusts_nothing_unsynced`.
const LIVE_SAFE_OPS: [FaultOp; 8] = [
    FaultOp::Write,
    FaultOp::SetLen,
    FaultOp::Rename,
    FaultOp::Create,
    FaultOp::CreateDir,
    FaultOp::Remove,
    FaultOp::Allocate,
    FaultOp::ZeroRange,
];

#[test]
fn eio_on_a_journal_write_or_sync_poisons_the_writer_and_reopen_recovers() {
    let started = std::time::Instant::now();
    let setup = setup();
    let mut results = Vec::new();
    for op in [FaultOp::Write, FaultOp::Sync] {
        for persistent in [false, true] {
            let make = |k| Fault {
                persistent,
                ..Fault::once(op, FaultError::Eio).on_path("journal").after(k)
            };
            let name = format!("EIO on journal {op:?} (persistent: {persistent})");
            let reopens: &[Reopen] = if op == FaultOp::Write {
                &[Reopen::Crash, Reopen::Live]
            } else {
                &[Reopen::Crash]
            };
            results.push(sweep(&setup, &name, make, true, reopens));
        }
    }
    report(
        "EIO on every journal write and sync, once and forever (reopened after a crash; after a write error also live)",
        results,
        started,
    );
}

#[test]
fn eio_on_any_sync_is_a_clean_error_and_loses_no_acknowledged_point() {
    let started = std::time::Instant::now();
    let setup = setup();
    let mut results = Vec::new();
    for op in [FaultOp::Sync, FaultOp::SyncDir] {
        for persistent in [false, true] {
            let make = |k| Fault {
                persistent,
                ..Fault::once(op, FaultError::Eio).after(k)
            };
            let name = format!("EIO on any {op:?} (persistent: {persistent})");
            results.push(sweep(&setup, &name, make, false, &[Reopen::Crash]));
        }
    }
    report(
        "EIO at every file and directory sync of the workload (segment, manifest, base, digest), once and forever",
        results,
        started,
    );
}

#[test]
fn enospc_at_every_operation_is_a_clean_error_and_the_vault_works_once_space_is_freed() {
    let started = std::time::Instant::now();
    let setup = setup();
    let make = |k| Fault::once(FaultOp::Any, FaultError::Enospc).after(k);
    let mut results = vec![sweep(&setup, "ENOSPC", make, false, &[Reopen::Crash])];
    for op in LIVE_SAFE_OPS {
        let make = |k| Fault::once(op, FaultError::Enospc).after(k);
        let name = format!("ENOSPC on {op:?}");
        results.push(sweep(&setup, &name, make, false, &[Reopen::Live]));
    }
    report(
        "ENOSPC at every operation of the workload (reopened after a crash; at every non-sync operation also live)",
        results,
        started,
    );
}

/// Regression: the process restarts after a failed sync but the machine does not. The page cache
/// still shows what the failed sync may have dropped (fsyncgate), and `Writer::open` used to build
/// on it: it acknowledged new points on top of journal bytes, or a renamed MANIFEST, that a later
/// power loss took away. Now recovery syncs the vault's directories and writes again, then
/// syncs, every byte of the open segment that no record vouches was durable.
#[test]
fn reopening_in_the_same_boot_after_a_failed_sync_trusts_nothing_unsynced() {
    let started = std::time::Instant::now();
    let setup = setup();
    let mut results = Vec::new();
    for error in [FaultError::Eio, FaultError::Enospc] {
        for op in [FaultOp::Sync, FaultOp::SyncDir] {
            let make = |k| Fault::once(op, error).after(k);
            let name = format!("{error:?} on {op:?}, reopened live");
            results.push(sweep(&setup, &name, make, false, &[Reopen::Live]));
        }
    }
    report(
        "a failed file or directory sync, then a reopen with the machine still up",
        results,
        started,
    );
}
