//! One flipped bit at every byte of every file of a small, complete vault on real files.
//!
//! The fixture (block size 4096, 64 KiB segments) has a sealed and an open segment, two disks of
//! about 64 KiB (one empty, one seeded from an image with holes and a partial last chunk), writes
//! (raw and LZ4), zero ranges, points in the manifest and in the open segment, an ingest, and the
//! digest caches the writer keeps. Its last point is vouched for by a later synced record, so no
//! acknowledged point sits in the unprotected tail.
//!
//! For every byte of every file (the empty `LOCK` aside), one bit is flipped in place (`0x01` on
//! even offsets, `0x80` on odd ones; `REPLOG_STRESS` adds the other mask), then:
//! - `verify` must not find the vault intact, and a finding must name the file (or `MANIFEST` /
//!   `VAULT` when the damage keeps the vault from being read at all); it must not panic;
//! - opening the vault and reading every disk at every point must either fail or return exactly
//!   the model's bytes, and must never drop an acknowledged point silently.
//!
//! The bit is then flipped back. The work is split across threads, each on its own copy.

use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::layout;
use replog_io::Storage;
use replog_reader::Vault;
use replog_tests::{PointModel, stress, write_image};
use replog_writer::{Compression, PointKind, VaultSettings, Writer};

/// Deterministic bytes that do not compress.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Bytes that compress well.
fn text(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| b"replog flips "[(i + seed as usize) % 13])
        .collect()
}

fn point(w: &mut Writer, model: &mut PointModel, label: &str) {
    model.expect_point(w.last_lsn() + 1);
    let p = w
        .point(PointKind::AppConsistent, label)
        .expect("the point is acknowledged");
    model.ack(p.point_id, p.lsn);
}

fn write(w: &mut Writer, model: &mut PointModel, disk: u32, offset: u64, data: &[u8]) {
    model.write(disk, offset, data);
    w.write(disk, offset, data).expect("staged");
}

/// Builds the fixture in `dir`; returns the model of its points.
fn build(storage: &Arc<dyn Storage>, root: &Path, dir: &Path) -> PointModel {
    let settings = VaultSettings {
        block_bytes: 4096,
        segment_bytes: 64 << 10,
        compression: Compression::Lz4,
    };
    let mut w = Writer::create(storage.clone(), dir, settings).expect("created");
    let mut model = PointModel::default();
    let a_bytes = 32 << 10;
    let a = w.add_disk("a", a_bytes).expect("added").disk_id;
    model.add_disk(a, vec![0; a_bytes as usize]);
    // Disk b: data, a hole, compressible data, and a partial last chunk.
    let mut image = noise(1, 30_000);
    image[8192..16384].fill(0);
    image[20480..24576].copy_from_slice(&text(0, 4096));
    let img_path = root.join("b.img");
    let img = write_image(storage.as_ref(), &img_path, &image);
    let b = w
        .add_disk_from_image("b", img.as_ref(), &img_path)
        .expect("added")
        .disk_id;
    model.add_disk(b, image);
    // Just over one segment of records: a sealed segment with points, and an open one.
    for i in 0..12u64 {
        let disk = if i % 2 == 0 { a } else { b };
        let data = if i % 4 == 0 {
            text(i, 2500)
        } else {
            noise(i + 10, 6000)
        };
        write(&mut w, &mut model, disk, i * 3700 % 24_000, &data);
        if i % 5 == 2 {
            model.zero(disk, i * 1000, 3000);
            w.zero(disk, i * 1000, 3000).expect("staged");
        }
        if i % 4 == 3 {
            point(&mut w, &mut model, &format!("p{i}"));
        }
    }
    // An ingest of disk a, which rewrites its digest cache.
    let mut next = model.disks[&a].clone();
    next[20_000..23_000].copy_from_slice(&noise(77, 3000));
    next[0..4096].fill(0);
    let next_path = root.join("a.img");
    let img = write_image(storage.as_ref(), &next_path, &next);
    w.ingest("a", img.as_ref(), &next_path, &|_| {})
        .expect("ingested");
    model.add_disk(a, next);
    write(&mut w, &mut model, b, 29_000, &noise(5, 1000));
    point(&mut w, &mut model, "last");
    // A later synced record vouches for the last point.
    w.write(a, 100, &noise(6, 300)).expect("staged");
    w.close().expect("closed");
    model
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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("created");
    for entry in std::fs::read_dir(from).expect("listed") {
        let p = entry.expect("an entry").path();
        let target = to.join(p.file_name().expect("named"));
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).expect("copied");
        }
    }
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

fn flip(path: &Path, offset: u64, mask: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("opened");
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).expect("read");
    b[0] ^= mask;
    f.write_all_at(&b, offset).expect("written");
}

/// Whether `verify` flags the flipped file (or the manifest or vault header that keeps the rest
/// from being read).
fn detected(storage: &dyn Storage, dir: &Path, rel: &Path) -> Result<(), String> {
    let report = replog_reader::verify(storage, dir);
    if report.is_intact() {
        return Err(format!(
            "verify finds the vault intact: {:?}",
            report.findings()
        ));
    }
    let named = report.findings().iter().any(|f| {
        f.path == rel
            || (f.path == Path::new(layout::MANIFEST_FILE)
                || f.path == Path::new(layout::VAULT_FILE))
                && report.findings().len() == 1
    });
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

/// Reads every disk at every point: each read fails or returns the model's bytes. Returns
/// whether everything read back exactly (`true`) or something was refused (`false`).
fn read_back(storage: &Arc<dyn Storage>, dir: &Path, model: &PointModel) -> Result<bool, String> {
    let Ok(vault) = Vault::open(storage.clone(), dir) else {
        return Ok(false);
    };
    let listed: Vec<(u64, u64)> = vault.points().iter().map(|p| (p.point_id, p.lsn)).collect();
    if let Some(lost) = model.acked.iter().find(|a| !listed.contains(a)) {
        return Err(format!(
            "acknowledged point {lost:?} silently missing from {listed:?}"
        ));
    }
    let mut exact = true;
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

/// Flips every byte of `work` (file index, offset) in the copy at `dir`.
fn run_share(
    dir: &Path,
    files: &[PathBuf],
    work: &[(usize, u64, u8)],
    model: &PointModel,
) -> (Tally, Vec<String>) {
    let storage = replog_io::backend("sync").expect("the sync backend");
    let mut tally = Tally::default();
    let mut problems = Vec::new();
    for &(fi, offset, mask) in work {
        let rel = &files[fi];
        let path = dir.join(rel);
        flip(&path, offset, mask);
        let label = format!("{} byte {offset} ^ {mask:#04x}", rel.display());
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            (
                detected(storage.as_ref(), dir, rel),
                read_back(&storage, dir, model),
            )
        }));
        flip(&path, offset, mask);
        tally.flips += 1;
        match outcome {
            Err(_) => {
                tally.violations += 1;
                problems.push(format!("{label}: panicked"));
            }
            Ok((verified, read)) => {
                match verified {
                    Ok(()) => tally.detected += 1,
                    Err(e) => problems.push(format!("{label}: {e}")),
                }
                match read {
                    Ok(true) => tally.read_exact += 1,
                    Ok(false) => tally.read_refused += 1,
                    Err(e) => {
                        tally.violations += 1;
                        problems.push(format!("{label}: {e}"));
                    }
                }
            }
        }
    }
    (tally, problems)
}

#[test]
fn a_flipped_bit_anywhere_in_the_vault_is_detected_and_never_read_as_data() {
    let started = std::time::Instant::now();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let storage = replog_io::backend("sync").expect("the sync backend");
    let dir = tmp.path().join("vault");
    let model = build(&storage, tmp.path(), &dir);
    let report = replog_reader::verify(storage.as_ref(), &dir);
    assert!(
        report.is_intact(),
        "the fixture is intact: {:?}",
        report.findings()
    );
    assert_eq!(
        read_back(&storage, &dir, &model),
        Ok(true),
        "the fixture reads back"
    );
    let files = files(&dir);
    let sizes: Vec<String> = files
        .iter()
        .map(|f| {
            format!(
                "{} {}",
                f.display(),
                std::fs::metadata(dir.join(f)).map_or(0, |m| m.len())
            )
        })
        .collect();
    eprintln!("fixture: {sizes:?}");
    let segments = files
        .iter()
        .filter(|f| f.starts_with(layout::JOURNAL_DIR))
        .count();
    assert!(
        segments >= 2,
        "the fixture has a sealed and an open segment: {files:?}"
    );
    let masks: &[u8] = if stress() > 1 { &[0x01, 0x80] } else { &[] };
    let mut work = Vec::new();
    for (fi, rel) in files.iter().enumerate() {
        let len = std::fs::metadata(dir.join(rel)).expect("stat").len();
        for offset in 0..len {
            if masks.is_empty() {
                work.push((fi, offset, if offset % 2 == 0 { 0x01 } else { 0x80 }));
            } else {
                work.extend(masks.iter().map(|&m| (fi, offset, m)));
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let shares: Vec<Vec<_>> = (0..threads)
        .map(|t| work.iter().copied().skip(t).step_by(threads).collect())
        .collect();
    let results: Vec<(Tally, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(t, share)| {
                let copy = tmp.path().join(format!("copy-{t}"));
                copy_dir(&dir, &copy);
                let (files, model) = (&files, &model);
                s.spawn(move || run_share(&copy, files, share, model))
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
        "bit flips: {} flips over {} files ({} bytes), {} detected by verify ({:.2}%), reads: {} refused, {} byte-exact, {} violations, {:.1}s",
        tally.flips,
        files.len(),
        work.len(),
        tally.detected,
        100.0 * tally.detected as f64 / tally.flips as f64,
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
