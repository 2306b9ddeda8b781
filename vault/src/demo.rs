//! The demo: the whole lifecycle on generated disks. Two source disks are seeded into a vault,
//! changed over several cycles, ingested, and pointed; then the vault is verified and every point
//! is failed over and compared byte for byte with a copy of the sources taken at that point. Each
//! step is reported as a [`DemoStep`]; whoever runs it decides how to show them.
//!
//! Memory: one MiB of generated data at a time, and the two images of one disk while comparing a
//! failover with its expected copy (64 MiB at most).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use replog_io::{OpenMode, Storage};
use replog_reader::MaterializeOptions;
use replog_writer::{Compression, PointKind, VaultSettings, Writer};

use crate::error::{Result, VaultError, VaultErrorKind};

const MIB: u64 = 1 << 20;
/// The generated disks: name, size, bytes of data at the start.
pub const DEMO_DISKS: [(&str, u64, u64); 2] =
    [("os", 48 * MIB, 28 * MIB), ("data", 16 * MIB, 6 * MIB)];
const CYCLES: u64 = 4;

/// A step of the demo, as it happens.
#[derive(Clone, Debug)]
pub enum DemoStep {
    /// The demo runs in `dir` on the I/O backend `backend`.
    Started { dir: PathBuf, backend: &'static str },
    /// The source disks were generated.
    Generated,
    /// The vault was created and both disks seeded; `point` is the first point.
    Seeded { vault: PathBuf, point: u64 },
    /// A change cycle: per disk its name, bytes changed and bytes stored; then the point taken.
    Cycle {
        cycle: u64,
        disks: Vec<(&'static str, u64, u64)>,
        point: u64,
        kind: PointKind,
    },
    /// The vault verified intact.
    Verified { files: u64 },
    /// A point was failed over and both disks matched the sources.
    FailedOver {
        point: u64,
        label: String,
        seconds: f64,
    },
}

/// How the demo ended.
#[derive(Clone, Debug)]
pub enum DemoOutcome {
    /// Every point failed over to the bytes of the sources.
    Done {
        seconds: f64,
        points: usize,
        source_bytes: u64,
        vault_bytes: u64,
        vault: PathBuf,
    },
    /// `verify` found damage: each finding.
    Damaged { findings: Vec<String> },
}

fn fail(what: &str, path: &Path, e: impl std::fmt::Display) -> VaultError {
    VaultError::new(
        VaultErrorKind::Io,
        format!("{}: {what}: {e}", path.display()),
    )
    .in_file(path)
}

/// The demo's directories under its root.
struct Dirs {
    source: PathBuf,
    vault: PathBuf,
    expected: PathBuf,
    out: PathBuf,
}

/// Runs the demo in `dir` (a fresh temporary directory if `None`), reporting each step to `step`.
pub fn run_demo(
    storage: Arc<dyn Storage>,
    dir: Option<PathBuf>,
    step: &mut dyn FnMut(DemoStep),
) -> Result<DemoOutcome> {
    let started = Instant::now();
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("replog-demo-{}", std::process::id()))
    });
    let dirs = prepare(&dir)?;
    step(DemoStep::Started {
        dir: dir.clone(),
        backend: storage.kind().name(),
    });
    let mut rng = SmallRng::seed_from_u64(0x5EED);
    for (name, size, data) in DEMO_DISKS {
        write_source(
            &dirs.source.join(format!("{name}.raw")),
            size,
            data,
            &mut rng,
        )?;
    }
    step(DemoStep::Generated);
    replicate(&storage, &dirs, &mut rng, step)?;
    let report = replog_reader::verify(storage.as_ref(), &dirs.vault);
    if !report.is_intact() {
        let findings = report.findings().iter().map(ToString::to_string).collect();
        return Ok(DemoOutcome::Damaged { findings });
    }
    step(DemoStep::Verified {
        files: report.files_checked(),
    });
    let points = fail_over_every_point(&storage, &dirs, step)?;
    for d in [&dirs.expected, &dirs.out] {
        std::fs::remove_dir_all(d).map_err(|e| fail("removing", d, e))?;
    }
    Ok(DemoOutcome::Done {
        seconds: started.elapsed().as_secs_f64(),
        points,
        source_bytes: DEMO_DISKS.iter().map(|d| d.1).sum(),
        vault_bytes: allocated_bytes(&dirs.vault)?,
        vault: dirs.vault,
    })
}

/// Refuses a directory in use, and makes the demo's directories.
fn prepare(dir: &Path) -> Result<Dirs> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map_err(|e| fail("reading", dir, e))?
            .next()
            .is_some()
    {
        return Err(VaultError::new(
            VaultErrorKind::AlreadyExists,
            format!(
                "{}: not empty; the demo needs a new or empty directory",
                dir.display()
            ),
        ));
    }
    let dirs = Dirs {
        source: dir.join("source"),
        vault: dir.join("vault"),
        expected: dir.join("expected"),
        out: dir.join("failover"),
    };
    for d in [&dirs.source, &dirs.expected, &dirs.out] {
        std::fs::create_dir_all(d).map_err(|e| fail("creating", d, e))?;
    }
    Ok(dirs)
}

/// Seeds the vault, then changes, ingests and points the sources for every cycle, keeping a copy
/// of the sources at each point.
fn replicate(
    storage: &Arc<dyn Storage>,
    dirs: &Dirs,
    rng: &mut SmallRng,
    step: &mut dyn FnMut(DemoStep),
) -> Result<()> {
    let settings = VaultSettings {
        segment_bytes: 8 * MIB,
        compression: Compression::Lz4,
        ..VaultSettings::default()
    };
    let open = |path: &Path| {
        storage
            .open(path, OpenMode::Read)
            .map_err(|e| fail("opening", path, e))
    };
    let mut w = Writer::create(storage.clone(), &dirs.vault, settings)?;
    for (name, _, _) in DEMO_DISKS {
        let path = dirs.source.join(format!("{name}.raw"));
        w.add_disk_from_image(name, open(&path)?.as_ref(), &path)?;
    }
    let first = w.point(PointKind::AppConsistent, "seeded")?;
    snapshot(
        &dirs.source,
        &dirs.expected.join(first.point_id.to_string()),
    )?;
    step(DemoStep::Seeded {
        vault: dirs.vault.clone(),
        point: first.point_id,
    });
    for cycle in 1..=CYCLES {
        let mut disks = Vec::new();
        for (name, size, _) in DEMO_DISKS {
            let path = dirs.source.join(format!("{name}.raw"));
            mutate_source(&path, size, rng)?;
            let stats = w.ingest(name, open(&path)?.as_ref(), &path, &|_| {})?;
            disks.push((name, stats.bytes_changed, stats.bytes_stored));
        }
        let kind = PointKind::quiesced(cycle % 2 == 0);
        let p = w.point(kind, &format!("cycle {cycle}"))?;
        snapshot(&dirs.source, &dirs.expected.join(p.point_id.to_string()))?;
        step(DemoStep::Cycle {
            cycle,
            disks,
            point: p.point_id,
            kind,
        });
    }
    w.close()?;
    Ok(())
}

/// Fails over to every point and compares both disks with the sources' copy at that point.
fn fail_over_every_point(
    storage: &Arc<dyn Storage>,
    dirs: &Dirs,
    step: &mut dyn FnMut(DemoStep),
) -> Result<usize> {
    let reader = replog_reader::Vault::open(storage.clone(), &dirs.vault)?;
    let opts = MaterializeOptions {
        force: false,
        sync: false,
        ..MaterializeOptions::default()
    };
    for p in reader.points() {
        let target = dirs.out.join(p.point_id.to_string());
        let view = reader.view(p)?;
        let t = Instant::now();
        replog_reader::materialize(&view, &target, &opts)?;
        let seconds = t.elapsed().as_secs_f64();
        for (name, _, _) in DEMO_DISKS {
            let want = dirs.expected.join(p.point_id.to_string());
            compare(
                &target.join(format!("{name}.raw")),
                &want.join(format!("{name}.raw")),
            )?;
        }
        step(DemoStep::FailedOver {
            point: p.point_id,
            label: p.label.clone(),
            seconds,
        });
    }
    Ok(reader.points().len())
}
/// A sparse raw image: `data` bytes of disk-like content (runs of text, structured records and
/// random bytes) at the start, zeros after.
fn write_source(path: &Path, size: u64, data: u64, rng: &mut SmallRng) -> Result<()> {
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
        let run = rng.random_range(512..16384).min(len - out.len());
        match rng.random_range(0..4) {
            0 => out.extend((0..run).map(|_| rng.random::<u8>())),
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
fn mutate_source(path: &Path, size: u64, rng: &mut SmallRng) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| fail("opening", path, e))?;
    for _ in 0..rng.random_range(20..60) {
        let len = rng.random_range(1..64) * 4096;
        let at = rng.random_range(0..(size - len) / 4096) * 4096;
        f.write_all_at(&disk_like_block(rng, len as usize), at)
            .map_err(|e| fail("writing", path, e))?;
    }
    let zero_len = rng.random_range(1..16) * 65536;
    let at = rng.random_range(0..(size - zero_len) / 65536) * 65536;
    f.write_all_at(&vec![0; zero_len as usize], at)
        .map_err(|e| fail("writing", path, e))
}

/// Copies every source image into `to`.
fn snapshot(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| fail("creating", to, e))?;
    for (name, _, _) in DEMO_DISKS {
        let (src, dst) = (
            from.join(format!("{name}.raw")),
            to.join(format!("{name}.raw")),
        );
        std::fs::copy(&src, &dst).map_err(|e| fail("copying", &src, e))?;
    }
    Ok(())
}

/// Fails unless the two files hold the same bytes.
fn compare(got: &Path, want: &Path) -> Result<()> {
    let a = std::fs::read(got).map_err(|e| fail("reading", got, e))?;
    let b = std::fs::read(want).map_err(|e| fail("reading", want, e))?;
    match a.iter().zip(&b).position(|(x, y)| x != y) {
        None if a.len() == b.len() => Ok(()),
        None => Err(VaultError::new(
            VaultErrorKind::Damaged,
            format!("{}: {} bytes, expected {}", got.display(), a.len(), b.len()),
        )),
        Some(i) => Err(VaultError::new(
            VaultErrorKind::Damaged,
            format!(
                "{}: byte {i} differs from {}",
                got.display(),
                want.display()
            ),
        )),
    }
}

/// Bytes the files under `dir` occupy on disk (holes excluded).
fn allocated_bytes(dir: &Path) -> Result<u64> {
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
