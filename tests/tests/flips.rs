//! One flipped bit at every byte of every file of a small, complete vault.
//!
//! The fixture is written by the `Writer` on real files in a temporary directory (block size
//! 4096, 64 KiB segments): a sealed and an open segment, two disks (one empty, one seeded from an
//! image with a hole and a partial last chunk), raw and LZ4 writes, zero ranges, points in the
//! manifest and in the open segment, and the digest caches the writer keeps. Its last point is
//! vouched for by a later synced record, so no acknowledged point sits in the unprotected tail.
//!
//! For every byte of every file (the empty `LOCK` aside), one bit is flipped in place (`0x01` on
//! even offsets, `0x80` on odd ones; `REPLOG_STRESS` flips both at every byte), then:
//! - `verify` must not find the vault intact, a finding must name the flipped file, and it must
//!   not panic;
//! - for a segment or base byte, opening the vault and reading every disk at every point must
//!   either fail or return exactly the model's bytes, and an acknowledged point may be missing
//!   from the listing only while the reader reports damage in that file (`Vault::damage`).
//!
//! The bit is then flipped back. Every byte is flipped on a copy of the vault in the simulator
//! (the same bytes, read without system calls, which makes the full pass several times faster),
//! and every fourth byte on the real files through the plain-syscall backend, whose reads map
//! the files. `REPLOG_STRESS` flips every byte of the real files too, with 64 KiB disks. The
//! work is split across threads, each on its own copy.

use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::layout;
use replog_io::Storage;
use replog_io::sim::SimStorage;
use replog_reader::Vault;
use replog_tests::{
    PointModel, SimImage, copy_dir, noise, small_segments, stress, vault_dirs, write_image,
};
use replog_writer::{Compression, PointKind, Writer};

/// Bytes that compress well.
fn text(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"replog flips "[(i + seed as usize) % 13])
        .collect()
}

fn point(w: &mut Writer, model: &mut PointModel, label: &str) {
    model
        .point_of_kind(w, PointKind::AppConsistent, label)
        .expect("the point is acknowledged");
}

fn write(w: &mut Writer, model: &mut PointModel, disk: u32, offset: u64, data: &[u8]) {
    model.stage_write(w, disk, offset, data).expect("staged");
}

/// Builds the fixture in `dir` with disks of about `disk_bytes`; returns the model of its points.
fn build(storage: &Arc<dyn Storage>, root: &Path, dir: &Path, disk_bytes: u64) -> PointModel {
    let settings = small_segments(Compression::Lz4);
    let mut w = Writer::create(storage.clone(), dir, settings).expect("created");
    let mut model = PointModel::default();
    let a = model.add_zero_disk(&mut w, "a", disk_bytes).expect("added");
    // Disk b: data, a hole, compressible data, and a partial last chunk.
    let b_bytes = disk_bytes as usize - 2000;
    let mut image = noise(1, b_bytes);
    image[4096..8192].fill(0);
    image[8192..12288].copy_from_slice(&text(0, 4096));
    let img_path = root.join("b.img");
    let img = write_image(storage.as_ref(), &img_path, &image);
    let b = w
        .add_disk_from_image("b", img.as_ref(), &img_path)
        .expect("added")
        .disk_id;
    model.add_disk(b, image);
    // Just over one segment of records (raw and LZ4 writes, zero ranges, points), so there is
    // a sealed segment with points in the manifest and an open one.
    let mut i = 0u64;
    while journal_segments(dir) < 2 {
        assert!(i < 200, "the journal rotates");
        let disk = if i.is_multiple_of(2) { a } else { b };
        let data = if i.is_multiple_of(4) {
            text(i, 2500)
        } else {
            noise(i + 10, 3800)
        };
        let at = i * 3700 % (b_bytes as u64 - 4000);
        write(&mut w, &mut model, disk, at, &data);
        if i % 5 == 2 {
            model.zero(disk, i * 300, 3000);
            w.zero(disk, i * 300, 3000).expect("staged");
        }
        if i == 3 || i == 12 {
            point(&mut w, &mut model, &format!("p{i}"));
        }
        i += 1;
    }
    model.zero(a, 5000, 2000);
    w.zero(a, 5000, 2000).expect("staged");
    write(&mut w, &mut model, b, 100, &noise(5, 1000));
    point(&mut w, &mut model, "last");
    // A later synced record vouches for the last point.
    w.write(a, 100, &noise(6, 300)).expect("staged");
    w.close().expect("closed");
    model
}

fn journal_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir.join(layout::JOURNAL_DIR)).map_or(0, |d| d.count())
}

/// Every file of the vault to flip, relative to `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("listed") {
            let p = entry.expect("an entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == layout::LOCK_FILE) {
                assert_eq!(
                    std::fs::metadata(&p).expect("stat").len(),
                    0,
                    "LOCK is empty"
                );
            } else {
                out.push(p.strip_prefix(dir).expect("inside").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// What one flip led to.
#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    flips: u64,
    detected: u64,
    read_refused: u64,
    read_exact: u64,
    violations: u64,
}

impl Tally {
    fn add(&mut self, o: Tally) {
        self.flips += o.flips;
        self.detected += o.detected;
        self.read_refused += o.read_refused;
        self.read_exact += o.read_exact;
        self.violations += o.violations;
    }
}

/// A copy of the vault the flips are made in.
enum Target {
    /// Real files, through the plain-syscall backend.
    Files(PathBuf),
    /// The simulator, and the flips made in it so far.
    Sim(Arc<SimStorage>, std::cell::Cell<u64>),
}

/// Where the simulator keeps its copy.
const SIM_DIR: &str = "/vault";

impl Target {
    fn new(real: bool, dir: &Path, files: &[PathBuf], copy: &Path) -> Target {
        if real {
            copy_dir(dir, copy);
            return Target::Files(copy.to_path_buf());
        }
        let vdir = Path::new(SIM_DIR);
        let mut image = SimImage {
            dirs: vault_dirs(vdir),
            ..SimImage::default()
        };
        for f in files {
            let bytes = std::fs::read(dir.join(f)).expect("read");
            image.files.insert(vdir.join(f), bytes);
        }
        Target::Sim(image.restore(1), std::cell::Cell::new(0))
    }

    fn storage(&self) -> Arc<dyn Storage> {
        match self {
            Target::Files(_) => replog_io::backend("sync").expect("the sync backend"),
            Target::Sim(sim, _) => sim.clone(),
        }
    }

    fn dir(&self) -> &Path {
        match self {
            Target::Files(dir) => dir,
            Target::Sim(..) => Path::new(SIM_DIR),
        }
    }

    /// Flips the bits of `mask` in byte `offset` of `rel`.
    fn flip(&self, rel: &Path, offset: u64, mask: u8) {
        let mut b = [0u8];
        match self {
            Target::Files(dir) => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(dir.join(rel))
                    .expect("opened");
                f.read_exact_at(&mut b, offset).expect("read");
                b[0] ^= mask;
                f.write_all_at(&b, offset).expect("written");
            }
            Target::Sim(sim, flips) => {
                let path = Path::new(SIM_DIR).join(rel);
                let f = sim
                    .open(&path, replog_io::OpenMode::ReadWrite)
                    .expect("opened");
                f.read_exact_at(&mut b, offset).expect("read");
                b[0] ^= mask;
                f.write_all_at(&b, offset).expect("written");
                // Readers see the live bytes; keep the list of unsynced changes short.
                flips.set(flips.get() + 1);
                if flips.get() % 1024 == 0 {
                    sim.make_all_durable();
                }
            }
        }
    }
}

/// Whether `verify` flags the flipped file.
fn detected(storage: &dyn Storage, dir: &Path, rel: &Path) -> Result<(), String> {
    let report = replog_reader::verify(storage, dir);
    if report.is_intact() {
        return Err(format!(
            "verify finds the vault intact: {:?}",
            report.findings()
        ));
    }
    let named = report.findings().iter().any(|f| f.path == rel);
    if named {
        Ok(())
    } else {
        Err(format!(
            "no finding names {}: {:?}",
            rel.display(),
            report.findings()
        ))
    }
}

/// Reads every disk at every point: each read fails or returns the model's bytes, and an
/// acknowledged point may be missing only when the reader reports damage in the flipped file.
/// Returns whether everything read back exactly (`true`) or something was refused (`false`).
fn read_back(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    rel: &Path,
    model: &PointModel,
) -> Result<bool, String> {
    let Ok(vault) = Vault::open(storage.clone(), dir) else {
        return Ok(false);
    };
    let damage = vault.damage();
    if let Some(e) = &damage
        && e.path() != Some(rel)
    {
        return Err(format!("the reader reports damage in another file: {e}"));
    }
    let listed: Vec<(u64, u64)> = vault.points().iter().map(|p| (p.point_id, p.lsn)).collect();
    if let Some(lost) = model.acked.iter().find(|a| !listed.contains(a))
        && damage.is_none()
    {
        return Err(format!(
            "acknowledged point {lost:?} silently missing from {listed:?}"
        ));
    }
    let mut exact = damage.is_none();
    for p in vault.points() {
        let want = model
            .at_point
            .get(&p.lsn)
            .ok_or_else(|| format!("point at LSN {} was never taken", p.lsn))?;
        let Ok(view) = vault.view(p) else {
            exact = false;
            continue;
        };
        for d in view.disks() {
            let mut got = vec![0u8; d.size() as usize];
            match d.read_at(0, &mut got) {
                Err(_) => exact = false,
                Ok(()) if got == want[&d.disk_id()] => {}
                Ok(()) => {
                    let at = got
                        .iter()
                        .zip(&want[&d.disk_id()])
                        .position(|(x, y)| x != y);
                    return Err(format!(
                        "disk {} at point {} reads wrong bytes at {at:?}",
                        d.name(),
                        p.point_id
                    ));
                }
            }
        }
    }
    Ok(exact)
}

/// Flips every (file index, offset, mask) of `work` in `target`, checking each.
fn run_share(
    target: &Target,
    files: &[PathBuf],
    work: &[(usize, u64, u8)],
    model: &PointModel,
) -> (Tally, Vec<String>) {
    let storage = target.storage();
    let dir = target.dir();
    let mut tally = Tally::default();
    let mut problems = Vec::new();
    for &(fi, offset, mask) in work {
        let rel = &files[fi];
        target.flip(rel, offset, mask);
        let label = format!("{} byte {offset} ^ {mask:#04x}", rel.display());
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            (
                detected(storage.as_ref(), dir, rel),
                // The reader never reads digest caches, and a damaged VAULT or MANIFEST
                // stops it at open; reads are checked for the files it serves data from.
                (rel.starts_with(layout::JOURNAL_DIR) || rel.starts_with(layout::BASES_DIR))
                    .then(|| read_back(&storage, dir, rel, model)),
            )
        }));
        target.flip(rel, offset, mask);
        tally.flips += 1;
        let Ok((verified, read)) = outcome else {
            tally.violations += 1;
            problems.push(format!("{label}: panicked"));
            continue;
        };
        match verified {
            Ok(()) => tally.detected += 1,
            Err(e) => problems.push(format!("{label}: {e}")),
        }
        match read {
            None => {}
            Some(Ok(true)) => tally.read_exact += 1,
            Some(Ok(false)) => tally.read_refused += 1,
            Some(Err(e)) => {
                tally.violations += 1;
                problems.push(format!("{label}: {e}"));
            }
        }
    }
    (tally, problems)
}

/// Builds the fixture, flips every `stride`-th byte of it in copies (real files or the
/// simulator), and checks and reports the totals.
fn run(real: bool, stride: u64) {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let storage = replog_io::backend("sync").expect("the sync backend");
    let dir = tmp.path().join("vault");
    // Disks of 16 KiB keep every-byte flipping quick; `REPLOG_STRESS` uses 64 KiB disks.
    let disk_bytes = if stress() > 1 { 64 << 10 } else { 16 << 10 };
    let model = build(&storage, tmp.path(), &dir, disk_bytes);
    let report = replog_reader::verify(storage.as_ref(), &dir);
    assert!(
        report.is_intact(),
        "the fixture is intact: {:?}",
        report.findings()
    );
    assert_eq!(
        read_back(&storage, &dir, Path::new(""), &model),
        Ok(true),
        "the fixture reads back"
    );
    let files = files(&dir);
    let segments = files
        .iter()
        .filter(|f| f.starts_with(layout::JOURNAL_DIR))
        .count();
    assert!(
        segments >= 2,
        "the fixture has a sealed and an open segment: {files:?}"
    );
    let both = stress() > 1;
    let mut work = Vec::new();
    let mut bytes = 0;
    for (fi, rel) in files.iter().enumerate() {
        let len = std::fs::metadata(dir.join(rel)).expect("stat").len();
        bytes += len;
        for offset in (0..len).filter(|o| o % stride == 0) {
            if both {
                work.extend([(fi, offset, 0x01), (fi, offset, 0x80)]);
            } else {
                work.push((fi, offset, if offset % 2 == 0 { 0x01 } else { 0x80 }));
            }
        }
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8));
    let results: Vec<(Tally, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share: Vec<_> = work.iter().copied().skip(t).step_by(threads).collect();
                let target = Target::new(real, &dir, &files, &tmp.path().join(format!("copy-{t}")));
                let (files, model) = (&files, &model);
                s.spawn(move || run_share(&target, files, &share, model))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a share finishes"))
            .collect()
    });
    let mut tally = Tally::default();
    let mut problems = Vec::new();
    for (t, p) in results {
        tally.add(t);
        problems.extend(p);
    }
    eprintln!(
        "bit flips ({}): {} flips over {} files of {bytes} bytes ({}), {} detected by verify naming the file ({:.2}%); reads after {} segment/base flips: {} refused, {} byte-exact, {} violations; {:.1}s",
        if real {
            "real files, sync backend"
        } else {
            "simulator"
        },
        tally.flips,
        files.len(),
        if stride == 1 {
            "every byte".to_owned()
        } else {
            format!("every {stride}th byte")
        },
        tally.detected,
        100.0 * tally.detected as f64 / tally.flips as f64,
        tally.read_refused + tally.read_exact + tally.violations,
        tally.read_refused,
        tally.read_exact,
        tally.violations,
        started.elapsed().as_secs_f64()
    );
    assert!(
        problems.is_empty(),
        "{} problems, first ones: {:#?}",
        problems.len(),
        &problems[..problems.len().min(20)]
    );
    assert_eq!(tally.detected, tally.flips);
}

#[test]
fn a_flipped_bit_at_every_byte_is_detected_and_never_read_as_data() {
    run(false, 1);
}

#[test]
fn a_flipped_bit_in_real_files_is_detected_and_never_read_as_data() {
    run(true, if stress() > 1 { 1 } else { 4 });
}
