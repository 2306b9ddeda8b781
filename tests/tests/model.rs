//! Model-based test: random sequences of writes, zero ranges, points, disk additions, syncs,
//! crashes and reopens, checked against an in-memory model of the disks. On every backend:
//! - every acknowledged point is listed after every reopen and reads back byte-exact;
//! - every point that is listed, acknowledged or not, reads back exactly as the model says the
//!   disks were at its LSN (nothing torn or partial reads as valid);
//! - recovery run twice gives the same state;
//! - `verify` finds the vault intact after a clean close.
//!
//! On the simulator, crashes strike at random I/O operations (including inside rotations, disk
//! additions and manifest replacements) and drop, keep or tear the unsynced writes.
//! On real backends, a crash drops the writer without closing it.

use std::path::Path;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use replog_io::{OpenMode, Storage, WriteAt};
use replog_reader::Vault;
use replog_tests::{Backend, backends};
use replog_writer::{Compression, PointKind, VaultSettings, WriteError, Writer};

/// One staged change, as the model replays it.
#[derive(Clone, Debug)]
enum Change {
    Write {
        disk: u32,
        offset: u64,
        data: Vec<u8>,
    },
    Zero {
        disk: u32,
        offset: u64,
        len: u64,
    },
}

struct Model {
    /// Disk sizes and seed images by id.
    disks: Vec<(u32, u64, Vec<u8>)>,
    /// Staged changes in LSN order.
    log: Vec<(u64, Change)>,
    /// Acknowledged points: (id, lsn).
    acked: Vec<(u64, u64)>,
}

impl Model {
    /// The content of disk `id` after every change with LSN <= `lsn`.
    fn disk_at(&self, id: u32, lsn: u64) -> Vec<u8> {
        let mut bytes = self
            .disks
            .iter()
            .find(|d| d.0 == id)
            .expect("known disk")
            .2
            .clone();
        for (l, c) in &self.log {
            if *l > lsn {
                break;
            }
            match c {
                Change::Write { disk, offset, data } if *disk == id => {
                    bytes[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
                }
                Change::Zero { disk, offset, len } if *disk == id => {
                    bytes[*offset as usize..(*offset + *len) as usize].fill(0)
                }
                _ => {}
            }
        }
        bytes
    }
}

fn settings(rng: &mut SmallRng) -> VaultSettings {
    VaultSettings {
        block_bytes: 4096,
        segment_bytes: 64 << 10,
        compression: if rng.random_bool(0.5) {
            Compression::Lz4
        } else {
            Compression::None
        },
    }
}

fn data(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    match rng.random_range(0..3) {
        0 => (0..len).map(|_| rng.random()).collect(),
        1 => vec![rng.random(); len],
        _ => (0..len).map(|i| (i / 7) as u8).collect(),
    }
}

/// Checks every point the reader lists against the model, and that every acked point is there.
fn check(b: &Backend, dir: &Path, model: &Model, case: &str) {
    let vault = Vault::open(b.storage.clone(), dir)
        .unwrap_or_else(|e| panic!("{case}: reopen for reading failed: {e}"));
    let listed: Vec<(u64, u64)> = vault.points().iter().map(|p| (p.point_id, p.lsn)).collect();
    for acked in &model.acked {
        assert!(
            listed.contains(acked),
            "{case}: acknowledged point {acked:?} lost; listed {listed:?}"
        );
    }
    for p in vault.points() {
        let view = vault
            .view(p)
            .unwrap_or_else(|e| panic!("{case}: view of point {} failed: {e}", p.point_id));
        for d in view.disks() {
            let mut got = vec![0u8; d.size() as usize];
            d.read_at(0, &mut got).unwrap_or_else(|e| {
                panic!(
                    "{case}: read of {} at point {} failed: {e}",
                    d.name(),
                    p.point_id
                )
            });
            let want = model.disk_at(d.disk_id(), p.lsn);
            if got != want {
                let at = got.iter().zip(&want).position(|(a, b)| a != b);
                panic!(
                    "{case}: disk {} at point {} (lsn {}) differs from the model at byte {at:?}",
                    d.name(),
                    p.point_id,
                    p.lsn
                );
            }
        }
    }
}

/// Brings the model in line with what survived: the recovered prefix of the log.
fn after_recovery(w: &Writer, model: &mut Model, pending_disk: &mut Option<(u32, u64, Vec<u8>)>) {
    let last = w.last_lsn();
    model.log.retain(|(lsn, _)| *lsn <= last);
    if let Some(d) = pending_disk.take()
        && w.disks().iter().any(|x| x.disk_id == d.0)
    {
        model.disks.push(d);
    }
}

fn reopen(
    b: &Backend,
    dir: &Path,
    model: &mut Model,
    pending_disk: &mut Option<(u32, u64, Vec<u8>)>,
    rng: &mut SmallRng,
    case: &str,
) -> Writer {
    if let Some(sim) = &b.sim {
        sim.crash(rng.random());
    }
    let w = Writer::open(b.storage.clone(), dir)
        .unwrap_or_else(|e| panic!("{case}: reopen after crash failed: {e}"));
    after_recovery(&w, model, pending_disk);
    let before = w.last_lsn();
    drop(w);
    // Recovery twice gives the same state.
    let w = Writer::open(b.storage.clone(), dir)
        .unwrap_or_else(|e| panic!("{case}: second reopen failed: {e}"));
    assert_eq!(w.last_lsn(), before, "{case}: recovery is not idempotent");
    check(b, dir, model, case);
    w
}

fn run_case(b: &Backend, seed: u64, steps: usize) {
    let case = format!("backend {} seed {seed}", b.name);
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = b.root.join(format!("vault-{seed}"));
    let mut w = Writer::create(b.storage.clone(), &dir, settings(&mut rng)).unwrap();
    let a = w.add_disk("a", 256 << 10).unwrap();
    let big = w.add_disk("big", 5 << 20).unwrap();
    let mut model = Model {
        disks: vec![
            (a.disk_id, a.disk_bytes, vec![0; a.disk_bytes as usize]),
            (
                big.disk_id,
                big.disk_bytes,
                vec![0; big.disk_bytes as usize],
            ),
        ],
        log: Vec::new(),
        acked: Vec::new(),
    };
    let mut pending_disk = None;
    let mut added_later = false;
    let mut crashes = 0;
    for step in 0..steps {
        if let Some(sim) = &b.sim
            && sim.ops() > 0
            && rng.random_bool(0.04)
        {
            sim.set_crash_at(Some(sim.ops() + rng.random_range(0..40)));
        }
        let result = step_once(
            &mut w,
            &b.storage,
            &b.root,
            &mut model,
            &mut pending_disk,
            &mut added_later,
            &mut rng,
            seed,
            step,
        );
        let crash_now = b.sim.as_ref().is_some_and(|s| s.crashed())
            || (b.sim.is_none() && rng.random_bool(0.03));
        match result {
            Ok(()) if !crash_now => {}
            Ok(()) | Err(_) => {
                if let (Err(e), None) = (&result, &b.sim) {
                    panic!("{case}: step {step} failed without a simulated crash: {e}");
                }
                if let Some(sim) = &b.sim {
                    sim.set_crash_at(None);
                }
                crashes += 1;
                drop(w);
                w = reopen(b, &dir, &mut model, &mut pending_disk, &mut rng, &case);
            }
        }
    }
    if let Some(sim) = &b.sim {
        sim.set_crash_at(None);
    }
    match w.close() {
        Ok(()) => {}
        Err(e) => panic!("{case}: close failed: {e}"),
    }
    let w = Writer::open(b.storage.clone(), &dir).unwrap();
    after_recovery(&w, &mut model, &mut pending_disk);
    w.close().unwrap();
    check(b, &dir, &model, &case);
    let report = replog_reader::verify(b.storage.as_ref(), &dir);
    assert!(
        report.is_intact(),
        "{case}: verify after a clean close: {:?}",
        report.findings()
    );
    eprintln!(
        "{case}: {steps} steps, {crashes} crashes and recoveries, {} acknowledged points, all byte-exact",
        model.acked.len()
    );
}

#[allow(clippy::too_many_arguments)]
fn step_once(
    w: &mut Writer,
    storage: &Arc<dyn Storage>,
    root: &Path,
    model: &mut Model,
    pending_disk: &mut Option<(u32, u64, Vec<u8>)>,
    added_later: &mut bool,
    rng: &mut SmallRng,
    seed: u64,
    step: usize,
) -> replog_writer::Result<()> {
    let disks = w.disks();
    let d = &disks[rng.random_range(0..disks.len())];
    match rng.random_range(0..100) {
        0..=54 => {
            let len = if rng.random_bool(0.02) {
                rng.random_range(1..=d.disk_bytes.min(4_300_000))
            } else {
                rng.random_range(1..=d.disk_bytes.min(20_000))
            };
            let offset = rng.random_range(0..=d.disk_bytes - len);
            let bytes = data(rng, len as usize);
            // The model learns of every record before the writer stages it: a crash inside the
            // call can keep a prefix of the pieces, and recovery trims the model to what survived.
            let first = w.last_lsn() + 1;
            let piece = replog_format::limits::RECORD_DATA_BYTES_MAX as usize;
            for (i, chunk) in bytes.chunks(piece).enumerate() {
                model.log.push((
                    first + i as u64,
                    Change::Write {
                        disk: d.disk_id,
                        offset: offset + (i * piece) as u64,
                        data: chunk.to_vec(),
                    },
                ));
            }
            let last = w.write(d.disk_id, offset, &bytes)?;
            assert_eq!(last, first + (bytes.len().div_ceil(piece) as u64) - 1);
        }
        55..=69 => {
            let len = rng.random_range(1..=d.disk_bytes.min(100_000));
            let offset = rng.random_range(0..=d.disk_bytes - len);
            model.log.push((
                w.last_lsn() + 1,
                Change::Zero {
                    disk: d.disk_id,
                    offset,
                    len,
                },
            ));
            w.zero(d.disk_id, offset, len)?;
        }
        70..=89 => {
            let kind = if rng.random_bool(0.3) {
                PointKind::AppConsistent
            } else {
                PointKind::CrashConsistent
            };
            let p = w.point(kind, &format!("step {step}"))?;
            model.acked.push((p.point_id, p.lsn));
        }
        90..=95 => w.sync()?,
        _ if !*added_later => {
            // A disk added mid-journal, seeded from an image.
            let size = 64 << 10;
            let image = data(rng, size as usize);
            let path = root.join(format!("image-{seed}"));
            // The image is written through the simulator too, so a scheduled crash may strike
            // here: it is returned like the writer's own, not unwrapped. (With rand 0.10's
            // sequence, seed 0 crashed in this write and the test panicked instead of
            // recovering.)
            let f = storage
                .open(&path, OpenMode::CreateTruncate)
                .map_err(|e| WriteError::io(&path, None, "creating the image", e))?;
            f.write_batch(
                &[WriteAt {
                    offset: 0,
                    data: &image,
                }],
                true,
            )
            .map_err(|e| WriteError::io(&path, Some(0), "writing the image", e))?;
            let id = disks.last().map_or(1, |x| x.disk_id + 1);
            *pending_disk = Some((id, size, image.clone()));
            *added_later = true;
            let added = w.add_disk_from_image("later", f.as_ref(), &path)?;
            assert_eq!(added.disk_id, id);
            model.disks.push(pending_disk.take().expect("set above"));
        }
        _ => w.sync()?,
    }
    Ok(())
}

fn cases() -> u64 {
    std::env::var("REPLOG_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12)
}

#[test]
fn every_acknowledged_point_reads_back_exactly_on_every_backend() {
    for seed in 0..cases() {
        for b in backends(seed) {
            let steps = if b.sim.is_some() { 300 } else { 150 };
            run_case(&b, seed, steps);
        }
    }
}
