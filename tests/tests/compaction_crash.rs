//! A crash at every I/O operation of compaction, on the simulator.
//!
//! Each workload starts from a durable vault with two disks, several sealed segments and many
//! points, and runs one prune (which rolls the base images forward, deletes segments and retires
//! points). It is run once without a crash to learn its operation count N and the points it keeps;
//! then, for every operation index in `0..N` and several crash seeds, it is run again with the
//! simulated machine losing power there. After each crash:
//! - `Writer::open` succeeds, and a second open changes no byte;
//! - every point the prune keeps is listed and reads byte-exact (no point still in the window
//!   changed a byte); every listed point matches the model at its LSN;
//! - no leftover: `bases/` holds exactly the manifest's generations and `journal/` exactly its
//!   segments (deletions a crash interrupted were redone);
//! - `verify` finds no damage;
//! - the dead prefix the manifest marks as released reads as zeros and is a hole (the punch is
//!   redone by the writer open after the crash if it was lost), so the space is freed either by
//!   the prune itself or by the next open or prune;
//! - running the prune again completes it: the points offered are exactly the ones kept.
//!
//! The workloads whose new base lies past the first page of a segment that stays (keep the last
//! 4, keep the last 2 with the base in the open segment) cover the dead-prefix release: the
//! seal of the open segment around the base, the manifest that marks the prefix, the punch, the
//! length set again and the sync.
//!
//! Two workloads run with `--garbage-ratio 0`: the policy with a pin (whatever records of the
//! retired points the next kept point overwrote whole), and a vault where each
//! point follows three writes of the same range, pruned keeping every point (the base moves to
//! the first point, then the overwritten records of every later one are listed as dead ranges,
//! the open segment sealed to hold them, the manifest committed and the holes punched). After
//! each crash, every dead range the manifest lists must read as zeros and be a hole as well.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::layout;
use replog_format::manifest::Manifest;
use replog_io::Storage;
use replog_io::sim::SimStorage;
use replog_tests::crash_sweep::{Sweep, crash_at_every_op, crashed_as_set};
use replog_tests::{
    PointModel, SimImage, check_listed_points, live_files, noise, small_segments, stress,
    unnamed_files, vault_dirs,
};
use replog_writer::{
    Compression, GarbageRatio, PointKind, PruneOptions, PruneReport, RetentionPolicy, Writer,
};

const DIR: &str = "/vault";
const H_NS: i64 = 3_600_000_000_000;

/// A prune to run, from a prepared vault.
struct Workload {
    name: &'static str,
    image: SimImage,
    model: PointModel,
    opts: PruneOptions,
    /// Whether the prune must list and punch dead ranges.
    garbage: bool,
}

/// Builds the vault: disk `a` from an image, empty disk `b`, 64 KiB segments, about 30 points
/// over writes, zero ranges and both disks; `policy` set if given, `pins` pinned.
fn prepare(
    policy: Option<RetentionPolicy>,
    pins: &[u64],
    compression: Compression,
) -> (SimImage, PointModel) {
    let sim = SimStorage::new(3);
    let storage: Arc<dyn Storage> = sim.clone();
    let settings = small_segments(compression);
    let mut w = Writer::create(storage.clone(), Path::new(DIR), settings).expect("created");
    sim.create_dir_all(Path::new("/images")).expect("created");
    let mut m = PointModel::default();
    let a = m
        .add_image_disk(&mut w, &*storage, "/images/a", noise(1, 48 << 10))
        .expect("added");
    let b = m.add_zero_disk(&mut w, "b", 96 << 10).expect("added");
    for i in 0..30u64 {
        let (disk, size) = if i % 3 == 0 {
            (b, 96 << 10)
        } else {
            (a, 48 << 10)
        };
        let len = 2000 + (i as usize * 397) % 9000;
        let at = (i * 7919) % (size - len as u64);
        let data = noise(100 + i, len);
        m.stage_write(&mut w, disk, at, &data).expect("staged");
        if i % 7 == 3 {
            m.stage_zero(&mut w, disk, at / 2, 3000).expect("staged");
        }
        let kind = if i % 5 == 0 {
            PointKind::AppConsistent
        } else {
            PointKind::CrashConsistent
        };
        m.point_of_kind(&mut w, kind, &format!("p{i}"))
            .expect("acknowledged");
    }
    w.set_retention(policy).expect("policy set");
    for &id in pins {
        w.pin(id).expect("pinned");
    }
    w.close().expect("closed");
    let mut dirs = vault_dirs(Path::new(DIR));
    dirs.push(PathBuf::from("/images"));
    (SimImage::capture(&sim, &dirs), m)
}

/// Builds a vault like [`prepare`] whose 12 points each follow three writes of the same 6000
/// bytes of disk `a` (the first two overwritten before the point) and one write of disk `b`.
fn prepare_overwrites() -> (SimImage, PointModel) {
    let sim = SimStorage::new(3);
    let storage: Arc<dyn Storage> = sim.clone();
    let settings = small_segments(Compression::None);
    let mut w = Writer::create(storage.clone(), Path::new(DIR), settings).expect("created");
    sim.create_dir_all(Path::new("/images")).expect("created");
    let mut m = PointModel::default();
    let a = m
        .add_image_disk(&mut w, &*storage, "/images/a", noise(1, 48 << 10))
        .expect("added");
    let b = m.add_zero_disk(&mut w, "b", 96 << 10).expect("added");
    for i in 0..12u64 {
        let at = (i * 7919) % (40 << 10);
        for round in 0..3 {
            let data = noise(200 + i * 3 + round, 6000);
            m.stage_write(&mut w, a, at, &data).expect("staged");
        }
        let data = noise(300 + i, 1000 + i as usize * 100);
        m.stage_write(&mut w, b, i * 4096, &data).expect("staged");
        m.point_of_kind(&mut w, PointKind::CrashConsistent, &format!("o{i}"))
            .expect("acknowledged");
    }
    w.close().expect("closed");
    let mut dirs = vault_dirs(Path::new(DIR));
    dirs.push(PathBuf::from("/images"));
    (SimImage::capture(&sim, &dirs), m)
}

fn workloads() -> Vec<Workload> {
    let (image, model) = prepare(None, &[], Compression::None);
    let keep_last = Workload {
        name: "keep the last 4 points",
        image,
        model,
        opts: PruneOptions {
            keep_last: Some(4),
            ..PruneOptions::default()
        },
        garbage: false,
    };
    // The policy keeps app-consistent points for the whole window and one point per hour; run
    // as if a day had passed, every point is past the window but the pinned and the newest, so
    // the base moves to the pinned point and the points between it and the newest are retired.
    let (image, model) = prepare(
        Some(RetentionPolicy::with_window(3600)),
        &[20],
        Compression::Lz4,
    );
    let policy = Workload {
        name: "policy with a pin",
        image,
        model,
        opts: PruneOptions {
            now_unix_ns: Some(replog_writer::now_unix_ns() + 24 * H_NS),
            garbage_ratio: GarbageRatio::from_fraction(0.0).expect("a ratio"),
            ..PruneOptions::default()
        },
        garbage: false,
    };
    let (image, model) = prepare(None, &[], Compression::None);
    let into_open = Workload {
        name: "base into the open segment",
        image,
        model,
        opts: PruneOptions {
            keep_last: Some(1),
            ..PruneOptions::default()
        },
        garbage: false,
    };
    let (image, model) = prepare(None, &[], Compression::None);
    let release_open = Workload {
        name: "base into the open segment, its prefix released",
        image,
        model,
        opts: PruneOptions {
            keep_last: Some(2),
            ..PruneOptions::default()
        },
        garbage: false,
    };
    let (image, model) = prepare_overwrites();
    let overwrites = Workload {
        name: "every point kept, overwritten records reclaimed",
        image,
        model,
        opts: PruneOptions {
            keep_last: Some(100),
            garbage_ratio: GarbageRatio::from_fraction(0.0).expect("a ratio"),
            ..PruneOptions::default()
        },
        garbage: true,
    };
    vec![keep_last, policy, into_open, release_open, overwrites]
}

/// The dead prefixes the manifest marks as released, and the dead ranges it lists, that are not
/// a hole reading as zeros.
fn unreleased_prefixes(sim: &Arc<SimStorage>) -> Vec<String> {
    let dir = Path::new(DIR);
    let read = |path: &Path| -> Result<(Vec<u8>, u64), String> {
        let f = sim
            .open(path, replog_io::OpenMode::Read)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let bytes = f.map().map_err(|e| e.to_string())?.to_vec();
        Ok((bytes, f.allocated_bytes().map_err(|e| e.to_string())?))
    };
    let manifest = match read(&dir.join("MANIFEST"))
        .and_then(|(b, _)| Manifest::decode(&b).map_err(|e| e.to_string()))
    {
        Ok(m) => m,
        Err(e) => return vec![format!("the manifest does not read: {e}")],
    };
    let mut violations = Vec::new();
    for s in &manifest.segments {
        let prefix = manifest
            .released_prefix(s.segment_id)
            .map(|end| (4096, end - 4096));
        let dead = manifest.dead_ranges_of(s.segment_id).iter();
        let holes: Vec<(u64, u64)> = prefix
            .into_iter()
            .chain(dead.filter_map(|d| d.hole()))
            .collect();
        if holes.is_empty() {
            continue;
        }
        let path = layout::segment_path(dir, s.segment_id);
        match read(&path) {
            Ok((bytes, allocated)) => {
                let whole_pages = (bytes.len() as u64).div_ceil(4096) * 4096;
                let freed: u64 = holes.iter().map(|(_, len)| len).sum();
                for &(at, len) in &holes {
                    let hole = &bytes[at as usize..(at + len) as usize];
                    if hole.iter().any(|&b| b != 0) {
                        violations.push(format!(
                            "{}: the released range [{at}, {}) does not read as zeros",
                            path.display(),
                            at + len
                        ));
                    }
                }
                if allocated > whole_pages - freed {
                    violations.push(format!(
                        "{}: {freed} bytes of it are released, yet {allocated} bytes of {} are allocated",
                        path.display(),
                        bytes.len()
                    ));
                }
            }
            Err(e) => violations.push(e),
        }
    }
    violations
}

/// Runs the prune on a fresh copy; returns the report and the simulator.
fn run_prune(
    wl: &Workload,
    seed: u64,
    crash_at: Option<u64>,
) -> (Result<PruneReport, String>, Arc<SimStorage>, u64) {
    let sim = wl.image.restore(seed);
    let storage: Arc<dyn Storage> = sim.clone();
    let mut w = Writer::open(storage, Path::new(DIR)).expect("the prepared vault opens");
    let start = sim.ops();
    if let Some(op) = crash_at {
        sim.set_crash_at(Some(start + op));
    }
    let result = w.prune(&wl.opts).map_err(|e| e.to_string());
    let used = sim.ops() - start;
    drop(w);
    (result, sim, used)
}

/// Files of the vault that the manifest does not name (bases and segments), and the reverse.
fn leftovers(sim: &Arc<SimStorage>) -> Vec<String> {
    let storage: Arc<dyn Storage> = sim.clone();
    unnamed_files(&storage, Path::new(DIR))
}

/// Recovers after the crash (the caller lost power) and checks everything; returns the
/// violations.
fn after_crash(sim: &Arc<SimStorage>, wl: &Workload, kept: &[(u64, u64)]) -> Vec<String> {
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new(DIR);
    let mut violations = Vec::new();
    match Writer::open(storage.clone(), dir) {
        Ok(w) => drop(w),
        Err(e) => return vec![format!("Writer::open after the crash failed: {e}")],
    }
    violations.extend(unreleased_prefixes(sim));
    let before = live_files(sim);
    match Writer::open(storage.clone(), dir) {
        Ok(w) => drop(w),
        Err(e) => return vec![format!("the second Writer::open failed: {e}")],
    }
    if live_files(sim) != before {
        violations.push("a second recovery changed files".to_owned());
    }
    violations.extend(leftovers(sim));
    let vault = match replog_reader::Vault::open(storage.clone(), dir) {
        Ok(v) => v,
        Err(e) => return vec![format!("the vault does not open for reading: {e}")],
    };
    let listed: Vec<(u64, u64)> = vault.points().iter().map(|p| (p.point_id, p.lsn)).collect();
    for k in kept {
        if !listed.contains(k) {
            violations.push(format!(
                "kept point {k:?} (id, lsn) is not listed: {listed:?}"
            ));
        }
    }
    violations.extend(check_listed_points(&vault, &wl.model));
    let report = replog_reader::verify(storage.as_ref(), dir);
    if !report.is_intact() {
        violations.push(format!("verify: {:?}", report.findings()));
    }
    // Running the prune again completes it.
    let mut w = match Writer::open(storage.clone(), dir) {
        Ok(w) => w,
        Err(e) => return vec![format!("reopening for the second prune failed: {e}")],
    };
    if let Err(e) = w.prune(&wl.opts) {
        violations.push(format!("the prune run again fails: {e}"));
    }
    let offered: Vec<(u64, u64)> = w.points().iter().map(|p| (p.point_id, p.lsn)).collect();
    if offered != kept {
        violations.push(format!(
            "after the prune ran again, the points are {offered:?}, the prune keeps {kept:?}"
        ));
    }
    drop(w);
    violations.extend(leftovers(sim));
    violations.extend(unreleased_prefixes(sim));
    match replog_reader::Vault::open(storage, dir) {
        Ok(v) => violations.extend(check_listed_points(&v, &wl.model)),
        Err(e) => violations.push(format!("the vault does not open after the prune: {e}")),
    }
    violations
}

#[test]
fn a_crash_at_every_operation_of_compaction_changes_no_kept_point() {
    let started = std::time::Instant::now();
    let seeds = 4 * stress();
    let mut all = Sweep::default();
    for wl in workloads() {
        let (clean, sim, n) = run_prune(&wl, 0, None);
        let report = clean.unwrap_or_else(|e| panic!("{}: the prune fails: {e}", wl.name));
        let kept: Vec<(u64, u64)> = report
            .plan
            .kept
            .iter()
            .map(|p| (p.point_id, p.lsn))
            .collect();
        let c = report.compaction.as_ref().expect("the prune compacts");
        assert!(
            c.committed && c.base_lsn_after > c.base_lsn_before,
            "{}: {c:?}",
            wl.name
        );
        let g = &report.garbage;
        if wl.garbage {
            assert!(
                g.committed && g.dead_bytes_listed > 0 && g.bytes_freed > 0,
                "{}: no garbage reclaimed: {g:?}",
                wl.name
            );
        } else {
            assert!(!c.segments_dropped.is_empty(), "{}: {c:?}", wl.name);
        }
        if wl.opts.keep_last == Some(2) {
            assert!(
                !c.prefixes_released.is_empty() && c.prefix_bytes_released > 0,
                "{}: no dead prefix released: {c:?}",
                wl.name
            );
        }
        let unreleased = unreleased_prefixes(&sim);
        assert!(unreleased.is_empty(), "{}: {unreleased:?}", wl.name);
        let clean_violations = leftovers(&sim);
        assert!(
            clean_violations.is_empty(),
            "{}: {clean_violations:?}",
            wl.name
        );
        let t = std::time::Instant::now();
        let swept = crash_at_every_op(wl.name, n, seeds, |op, seed, leftovers| {
            let (result, sim, _) = run_prune(&wl, seed, Some(op));
            let mut v: Vec<String> = crashed_as_set(&sim, &result).into_iter().collect();
            if leftovers.crash(&sim, op, seed) {
                v.extend(after_crash(&sim, &wl, &kept));
            }
            v
        });
        eprintln!(
            "compaction crashes, {}: {n} operations x {seeds} seeds = {} crashes ({} distinct), {} with violations, {:.1}s; the prune keeps {} points, drops {} segments, releases the prefix of segments {:?} ({} bytes), lists dead ranges in segments {:?} ({} bytes freed)",
            wl.name,
            swept.cases,
            swept.cases - swept.repeats,
            swept.violating,
            t.elapsed().as_secs_f64(),
            kept.len(),
            c.segments_dropped.len(),
            c.prefixes_released,
            c.prefix_bytes_released,
            g.segments,
            g.bytes_freed
        );
        all.add(swept);
    }
    eprintln!(
        "compaction crashes: {} crashes over 5 workloads, {} with violations, {:.1}s",
        all.cases,
        all.violating,
        started.elapsed().as_secs_f64()
    );
    all.assert_no_violation();
}

/// Writes `bytes` over `path` at `offset` on the simulator, durably.
fn overwrite(sim: &Arc<SimStorage>, path: &Path, offset: u64, bytes: &[u8]) {
    let f = sim
        .open(path, replog_io::OpenMode::ReadWrite)
        .expect("the file opens");
    let write = replog_io::WriteAt {
        offset,
        data: bytes,
    };
    f.write_batch(&[write], false).expect("written");
    sim.make_all_durable();
}

/// `verify` skips exactly the dead ranges the manifest lists: after a prune that reclaims
/// garbage it is clean; a listed range whose records a kept point reads, and a hole punched
/// outside the listed ranges, are both reported as damage.
#[test]
fn verify_skips_exactly_the_listed_dead_ranges_and_checks_that_no_kept_point_reads_them() {
    let (image, model) = prepare_overwrites();
    let sim = image.restore(1);
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = Path::new(DIR);
    let mut w = Writer::open(storage.clone(), dir).expect("opens");
    let opts = PruneOptions {
        keep_last: Some(100),
        garbage_ratio: GarbageRatio::from_fraction(0.0).expect("a ratio"),
        ..PruneOptions::default()
    };
    let report = w.prune(&opts).expect("prunes");
    assert!(report.garbage.committed, "{:?}", report.garbage);
    let manifest = w.manifest().clone();
    drop(w);
    let verified = replog_reader::verify(storage.as_ref(), dir);
    assert!(verified.is_intact(), "{:?}", verified.findings());
    let vault = replog_reader::Vault::open(storage.clone(), dir).expect("opens");
    let violations = check_listed_points(&vault, &model);
    assert!(violations.is_empty(), "{violations:?}");

    // A hole outside the listed ranges: the page after the first range's last whole page,
    // when it is still before the footer and outside every range, zeroed.
    let first = manifest.dead_ranges[0];
    let seg = layout::segment_path(dir, first.segment_id);
    let footer = manifest
        .segments
        .iter()
        .find(|s| s.segment_id == first.segment_id)
        .and_then(|s| s.sealed)
        .expect("sealed")
        .footer_offset;
    let (at, len) = first.hole().expect("a hole");
    let outside = at + len + 4096;
    assert!(
        outside + 4096 <= footer,
        "the segment is too short for the check"
    );
    assert!(
        manifest.dead_ranges.iter().all(|d| d
            .hole()
            .is_none_or(|(a, l)| outside + 4096 <= a || a + l <= outside)),
        "the page after the first range is listed"
    );
    let pruned_seg = sim
        .open(&seg, replog_io::OpenMode::Read)
        .and_then(|f| f.map())
        .expect("reads")
        .to_vec();
    let mut zeroed = pruned_seg.clone();
    zeroed[outside as usize..(outside + 4096) as usize].fill(0);
    overwrite(&sim, &seg, 0, &zeroed);
    let found = replog_reader::verify(storage.as_ref(), dir);
    assert!(
        found
            .findings()
            .iter()
            .any(|f| f.severity == replog_reader::Severity::Damage
                && f.path.ends_with(seg.file_name().unwrap())),
        "a hole outside the listed ranges was not reported: {:?}",
        found.findings()
    );
    overwrite(&sim, &seg, 0, &pruned_seg);
    assert!(replog_reader::verify(storage.as_ref(), dir).is_intact());

    // A listed range grown over the record right after it, which a kept point reads (each
    // run is two overwritten writes, followed by the write that stays).
    let extents = vault
        .journal_extents_after(manifest.base_lsn)
        .expect("extents");
    let mut forged = manifest.clone();
    forged.generation += 1;
    let (i, live) = forged
        .dead_ranges
        .iter()
        .enumerate()
        .find_map(|(i, d)| {
            let next = extents
                .iter()
                .find(|e| e.record_offset == d.end && e.lsn == d.last_lsn + 1);
            next.filter(|e| e.kind == replog_format::record::RecordKind::Write)
                .map(|e| (i, *e))
        })
        .expect("a run followed by a live write");
    forged.dead_ranges[i].end = live.record_offset + 64 + u64::from(live.stored_len);
    forged.dead_ranges[i].last_lsn = live.lsn;
    overwrite(&sim, &dir.join("MANIFEST"), 0, &forged.encode());
    let found = replog_reader::verify(storage.as_ref(), dir);
    assert!(
        found
            .findings()
            .iter()
            .any(|f| f.message.contains("reads the write record")),
        "a kept point reading a listed record was not reported: {:?}",
        found.findings()
    );
}
