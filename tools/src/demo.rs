//! `replog demo`: the whole lifecycle on generated disks. Two source disks are seeded into a
//! vault, changed over several cycles, ingested, and pointed; then the vault is verified and every
//! point is failed over and compared byte for byte with a copy of the sources taken at that point.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use replog_io::{OpenMode, Storage};
use replog_reader::{MaterializeOptions, Vault};
use replog_writer::{Compression, PointKind, VaultSettings, Writer};

use crate::output::human_bytes;
use crate::{CmdResult, EXIT_DAMAGED, EXIT_OK, Failure};

const MIB: u64 = 1 << 20;
/// The generated disks: name, size, bytes of data at the start.
const DISKS: [(&str, u64, u64); 2] = [("os", 48 * MIB, 28 * MIB), ("data", 16 * MIB, 6 * MIB)];
const CYCLES: u64 = 4;

fn fail(what: &str, path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure::new(format!("{}: {what}: {e}", path.display()))
}

/// Runs the demo in `dir` (a fresh temporary directory if `None`).
pub fn run(storage: Arc<dyn Storage>, dir: Option<PathBuf>) -> CmdResult {
    let started = Instant::now();
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("replog-demo-{}", std::process::id()))
    });
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map_err(|e| fail("reading", &dir, e))?
            .next()
            .is_some()
    {
        return Err(Failure::new(format!(
            "{}: not empty; the demo needs a new or empty directory",
            dir.display()
        )));
    }
    let (source, vault, expected, out) = (
        dir.join("source"),
        dir.join("vault"),
        dir.join("expected"),
        dir.join("failover"),
    );
    for d in [&source, &expected, &out] {
        std::fs::create_dir_all(d).map_err(|e| fail("creating", d, e))?;
    }
    println!(
        "demo in {} (I/O backend: {})",
        dir.display(),
        storage.kind().name()
    );
    let mut rng = SmallRng::seed_from_u64(0x5EED);
    for (name, size, data) in DISKS {
        write_source(&source.join(format!("{name}.raw")), size, data, &mut rng)?;
    }
    println!(
        "1. generated source disks: {}",
        DISKS
            .map(|(n, s, _)| format!("{n} ({})", human_bytes(s)))
            .join(", ")
    );

    let settings = VaultSettings {
        segment_bytes: 8 * MIB,
        compression: Compression::Lz4,
        ..VaultSettings::default()
    };
    let mut w = Writer::create(storage.clone(), &vault, settings)?;
    for (name, _, _) in DISKS {
        let path = source.join(format!("{name}.raw"));
        let image = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| fail("opening", &path, e))?;
        w.add_disk_from_image(name, image.as_ref(), &path)?;
    }
    let first = w.point(PointKind::AppConsistent, "seeded")?;
    snapshot(&source, &expected.join(first.point_id.to_string()))?;
    println!(
        "2. created vault {} and seeded both disks; point {} (app-consistent, \"seeded\")",
        vault.display(),
        first.point_id
    );

    for cycle in 1..=CYCLES {
        let mut line = format!("3.{cycle} changed the sources and ingested:");
        for (name, size, _) in DISKS {
            let path = source.join(format!("{name}.raw"));
            mutate_source(&path, size, &mut rng)?;
            let image = storage
                .open(&path, OpenMode::Read)
                .map_err(|e| fail("opening", &path, e))?;
            let stats = w.ingest(name, image.as_ref(), &path, &|_| {})?;
            line += &format!(
                " {name} {} changed ({} stored);",
                human_bytes(stats.bytes_changed),
                human_bytes(stats.bytes_stored)
            );
        }
        let kind = if cycle % 2 == 0 {
            PointKind::AppConsistent
        } else {
            PointKind::CrashConsistent
        };
        let p = w.point(kind, &format!("cycle {cycle}"))?;
        snapshot(&source, &expected.join(p.point_id.to_string()))?;
        println!("{line} point {} ({})", p.point_id, kind.name());
    }
    w.close()?;

    let report = replog_reader::verify(storage.as_ref(), &vault);
    if !report.is_intact() {
        for finding in report.findings() {
            println!("   damaged: {finding}");
        }
        return Ok(EXIT_DAMAGED);
    }
    println!(
        "4. verify: every checksum and cross-reference of the vault is intact ({} files)",
        report.files_checked()
    );

    let reader = Vault::open(storage.clone(), &vault)?;
    let points = reader.points();
    for p in points {
        let target = out.join(p.point_id.to_string());
        let view = reader.view(p)?;
        let t = Instant::now();
        replog_reader::materialize(
            &view,
            &target,
            &MaterializeOptions {
                force: false,
                sync: false,
            },
        )?;
        let secs = t.elapsed().as_secs_f64();
        for (name, _, _) in DISKS {
            let got = target.join(format!("{name}.raw"));
            let want = expected
                .join(p.point_id.to_string())
                .join(format!("{name}.raw"));
            compare(&got, &want)?;
        }
        println!(
            "5.{} failover to point {} ({}) in {secs:.2}s: both disks match the sources byte for byte",
            p.point_id, p.point_id, p.label
        );
    }
    for d in [&expected, &out] {
        std::fs::remove_dir_all(d).map_err(|e| fail("removing", d, e))?;
    }
    let vault_bytes = allocated_bytes(&vault)?;
    let source_bytes: u64 = DISKS.iter().map(|d| d.1).sum();
    println!(
        "done in {:.1}s: {} points over {} of disks; the vault takes {} on disk ({})",
        started.elapsed().as_secs_f64(),
        points.len(),
        human_bytes(source_bytes),
        human_bytes(vault_bytes),
        vault.display()
    );
    Ok(EXIT_OK)
}

/// A sparse raw image: `data` bytes of disk-like content (runs of text, structured records and
/// random bytes) at the start, zeros after.
fn write_source(path: &Path, size: u64, data: u64, rng: &mut SmallRng) -> Result<(), Failure> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::create(path).map_err(|e| fail("creating", path, e))?;
    f.set_len(size).map_err(|e| fail("sizing", path, e))?;
    let mut at = 0;
    while at < data {
        let block = disk_like_block(rng, MIB as usize);
        f.write_all_at(&block, at)
            .map_err(|e| fail("writing", path, e))?;
        at += MIB;
    }
    Ok(())
}

fn disk_like_block(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let run = rng.gen_range(512..16384).min(len - out.len());
        match rng.gen_range(0..4) {
            0 => out.extend((0..run).map(|_| rng.r#gen::<u8>())),
            1 => out.extend(
                b"replog demo: the quick brown fox jumps over the lazy dog. "
                    .iter()
                    .cycle()
                    .take(run),
            ),
            2 => out.extend((0..run).map(|i| (i % 251) as u8)),
            _ => out.extend(std::iter::repeat_n(0u8, run)),
        }
    }
    out
}

/// Random writes and a zeroed range, like a running machine's churn.
fn mutate_source(path: &Path, size: u64, rng: &mut SmallRng) -> Result<(), Failure> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| fail("opening", path, e))?;
    for _ in 0..rng.gen_range(20..60) {
        let len = rng.gen_range(1..64) * 4096;
        let at = rng.gen_range(0..(size - len) / 4096) * 4096;
        f.write_all_at(&disk_like_block(rng, len as usize), at)
            .map_err(|e| fail("writing", path, e))?;
    }
    let zero_len = rng.gen_range(1..16) * 65536;
    let at = rng.gen_range(0..(size - zero_len) / 65536) * 65536;
    f.write_all_at(&vec![0; zero_len as usize], at)
        .map_err(|e| fail("writing", path, e))
}

/// Copies every source image into `to`.
fn snapshot(from: &Path, to: &Path) -> Result<(), Failure> {
    std::fs::create_dir_all(to).map_err(|e| fail("creating", to, e))?;
    for (name, _, _) in DISKS {
        let (src, dst) = (
            from.join(format!("{name}.raw")),
            to.join(format!("{name}.raw")),
        );
        std::fs::copy(&src, &dst).map_err(|e| fail("copying", &src, e))?;
    }
    Ok(())
}

/// Fails unless the two files hold the same bytes.
fn compare(got: &Path, want: &Path) -> Result<(), Failure> {
    let a = std::fs::read(got).map_err(|e| fail("reading", got, e))?;
    let b = std::fs::read(want).map_err(|e| fail("reading", want, e))?;
    match a.iter().zip(&b).position(|(x, y)| x != y) {
        None if a.len() == b.len() => Ok(()),
        None => Err(Failure::damage(format!(
            "{}: {} bytes, expected {}",
            got.display(),
            a.len(),
            b.len()
        ))),
        Some(i) => Err(Failure::damage(format!(
            "{}: byte {i} differs from {}",
            got.display(),
            want.display()
        ))),
    }
}

/// Bytes the files under `dir` occupy on disk (holes excluded).
fn allocated_bytes(dir: &Path) -> Result<u64, Failure> {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| fail("listing", dir, e))? {
        let entry = entry.map_err(|e| fail("listing", dir, e))?;
        let meta = entry
            .metadata()
            .map_err(|e| fail("reading", &entry.path(), e))?;
        total += if meta.is_dir() {
            allocated_bytes(&entry.path())?
        } else {
            meta.blocks() * 512
        };
    }
    Ok(total)
}
