//! The writer's ingest pipeline: several staging buffers in flight, group-committed points
//! (`point_async` / `wait_point`), and direct I/O with its padded, rewritten tail block.
//!
//! - A crash at every I/O operation of two pipelined workloads (through the page cache, and with
//!   the simulator's emulated direct I/O, which refuses misaligned writes as `O_DIRECT` does),
//!   with the checks of `crash_points`: every acknowledged point exact, every listed point one
//!   the workload took, recovery idempotent, and the recovered writer (pipelined again, so it
//!   reads the partial last block back) working.
//! - The same workload on every backend, direct and buffered, read back exactly.
//! - `write_many` frames a batch across segment boundaries exactly as single writes would.
//! - A write failing while buffers are in flight poisons the writer and loses no acknowledged
//!   point.
//! - Direct I/O on a filesystem that refuses it falls back with a note.

use std::path::Path;
use std::sync::Arc;

use replog_io::Storage;
use replog_io::sim::{Fault, FaultError, FaultOp, SimStorage};
use replog_tests::crash_sweep::{Sweep, crash_at_every_op, crashed_as_set};
use replog_tests::{
    PointModel, SimImage, backends, check_vault, noise, recover_and_resume, small_segments, stress,
    vault_dirs,
};
use replog_writer::{
    BUFFER_BYTES_MIN, Compression, PointKind, PointTicket, VaultSettings, WriteError,
    WriteErrorKind, Writer, WriterOptions,
};

const DIR: &str = "/vault";
const DISK_BYTES: u64 = 256 << 10;

/// Small buffers, so that a small workload keeps several in flight and rotates segments.
fn options(direct: bool) -> WriterOptions {
    WriterOptions {
        buffers_in_flight: 3,
        buffer_bytes: BUFFER_BYTES_MIN,
        direct,
        preallocate: true,
    }
}

fn settings() -> VaultSettings {
    small_segments(Compression::Lz4)
}

fn write(w: &mut Writer, m: &mut PointModel, offset: u64, data: &[u8]) -> Result<(), WriteError> {
    m.stage_write(w, 1, offset, data)
}

fn point_async(w: &mut Writer, m: &mut PointModel, label: &str) -> Result<PointTicket, WriteError> {
    m.expect_point(w.last_lsn() + 1);
    w.point_async(PointKind::CrashConsistent, label)
}

fn wait(w: &mut Writer, m: &mut PointModel, t: PointTicket) -> Result<(), WriteError> {
    let p = w.wait_point(t)?;
    m.ack(p.point_id, p.lsn);
    Ok(())
}

/// Writes of odd sizes (never block multiples) filling many small buffers, points taken
/// without waiting and waited for later, several outstanding at once, a zero range, a
/// blocking point, and enough bytes to seal a segment.
fn workload(w: &mut Writer, m: &mut PointModel, direct: bool) -> Result<(), WriteError> {
    w.set_options(options(direct))?;
    let mut tickets = Vec::new();
    for i in 0..14u64 {
        let len = 2500 + (i as usize * 1777) % 9000;
        write(
            w,
            m,
            i * 13_001 % (DISK_BYTES - 20_000),
            &noise(100 + i, len),
        )?;
        if i % 3 == 1 {
            tickets.push(point_async(w, m, &format!("p{i}"))?);
        }
        if tickets.len() == 3 {
            for t in tickets.drain(..) {
                wait(w, m, t)?;
            }
        }
        if i == 5 {
            // A batch, framed and checksummed in parallel, compressible and not.
            let a = noise(200, 7000);
            let b = vec![7u8; 9000];
            let c = noise(201, 3333);
            let batch = [(30_000, &a[..]), (50_000, &b[..]), (31_000, &c[..])];
            for (offset, data) in batch {
                m.write(1, offset, data);
            }
            w.write_many(1, &batch)?;
        }
        if i == 8 {
            m.zero(1, 4096, 10_000);
            w.zero(1, 4096, 10_000)?;
            m.point(w, "blocking")?;
        }
    }
    for t in tickets.drain(..) {
        wait(w, m, t)?;
    }
    write(w, m, 100, &noise(99, 777))?;
    w.sync()
}

/// A vault with disk 1 of `DISK_BYTES` and one point, durable.
fn prefix() -> (SimImage, PointModel) {
    let sim = SimStorage::new(1);
    let storage: Arc<dyn Storage> = sim.clone();
    let mut w = Writer::create(storage, Path::new(DIR), settings()).expect("created");
    let mut m = PointModel::default();
    m.add_zero_disk(&mut w, "d", DISK_BYTES).expect("added");
    write(&mut w, &mut m, 1000, &noise(2, 3001)).expect("staged");
    m.point(&mut w, "prefix").expect("acknowledged");
    w.close().expect("closed");
    (SimImage::capture(&sim, &vault_dirs(Path::new(DIR))), m)
}

/// Recovers and checks (see `recover_and_resume`), then writes on pipelined.
fn after_crash(sim: &Arc<SimStorage>, m: &mut PointModel, seed: u64, direct: bool) -> Vec<String> {
    let resume = |mut w: Writer, m: &mut PointModel| -> Result<(), String> {
        let run = |w: &mut Writer, m: &mut PointModel| -> Result<(), WriteError> {
            w.set_options(options(direct))?;
            write(w, m, 5000, &noise(seed, 1234))?;
            let t = point_async(w, m, "after recovery")?;
            wait(w, m, t)?;
            w.sync()
        };
        run(&mut w, m).map_err(|e| e.to_string())
    };
    let zeros = |_: &str, bytes: u64| vec![0; bytes as usize];
    recover_and_resume(sim, Path::new(DIR), m, seed, zeros, resume).violations
}

#[test]
fn a_crash_at_every_operation_of_the_pipeline_loses_no_acknowledged_point() {
    let (image, model) = prefix();
    let seeds = 6 * stress();
    let mut all = Sweep::default();
    for direct in [false, true] {
        let sim = image.restore(0);
        let mut m = model.clone();
        let mut w = Writer::open(sim.clone(), Path::new(DIR)).expect("the prefix opens");
        let start = sim.ops();
        workload(&mut w, &mut m, direct).expect("the workload runs without faults");
        drop(w);
        let n = sim.ops() - start;
        let v = check_vault(&(sim.clone() as Arc<dyn Storage>), Path::new(DIR), &m);
        assert!(v.is_empty(), "direct {direct}, without a crash: {v:?}");
        let swept = crash_at_every_op(
            &format!("direct {direct}"),
            n,
            seeds,
            |op, seed, leftovers| {
                let sim = image.restore(seed);
                let mut m = model.clone();
                let mut w = Writer::open(sim.clone(), Path::new(DIR)).expect("the prefix opens");
                sim.set_crash_at(Some(sim.ops() + op));
                let result = workload(&mut w, &mut m, direct);
                drop(w);
                let mut v: Vec<String> = crashed_as_set(&sim, &result).into_iter().collect();
                if leftovers.crash(&sim, op, seed) {
                    v.extend(after_crash(&sim, &mut m, seed, direct));
                }
                v
            },
        );
        eprintln!(
            "direct {direct}: {n} operations x {seeds} seeds = {} crashes ({} distinct)",
            swept.cases,
            swept.cases - swept.repeats
        );
        all.add(swept);
    }
    eprintln!("{} crashes, {} violations", all.cases, all.violations.len());
    all.assert_no_violation();
}

#[test]
fn pipelined_writes_and_points_read_back_exactly_on_every_backend() {
    for b in backends(3) {
        for direct in [false, true] {
            let dir = b.root.join(format!("vault-{direct}"));
            let mut w = Writer::create(b.storage.clone(), &dir, settings()).expect("created");
            let mut m = PointModel::default();
            m.add_zero_disk(&mut w, "d", DISK_BYTES).expect("added");
            workload(&mut w, &mut m, direct).expect("the workload runs");
            if direct && b.name != "sim" {
                eprintln!("{} direct: {:?}", b.name, w.io_note());
            }
            w.close().expect("closed");
            let v = check_vault(&b.storage, &dir, &m);
            assert!(v.is_empty(), "{} direct {direct}: {v:?}", b.name);
            assert!(m.acked.len() >= 5, "{}: points acknowledged", b.name);
            // Reopened, the writer reads the partial last block back and goes on.
            let mut w = Writer::open(b.storage.clone(), &dir).expect("reopened");
            workload(&mut w, &mut m, direct).expect("the workload runs again");
            w.close().expect("closed");
            let v = check_vault(&b.storage, &dir, &m);
            assert!(v.is_empty(), "{} direct {direct}, reopened: {v:?}", b.name);
        }
    }
}

#[test]
fn a_write_failing_while_buffers_are_in_flight_poisons_the_writer_and_loses_no_point() {
    for direct in [false, true] {
        let mut failed_at = 0;
        for skip in 0.. {
            let (image, model) = prefix();
            let sim = image.restore(skip);
            let storage: Arc<dyn Storage> = sim.clone();
            let mut m = model.clone();
            let mut w = Writer::open(storage.clone(), Path::new(DIR)).expect("opens");
            sim.inject(
                Fault::once(FaultOp::Write, FaultError::Eio)
                    .on_path("journal")
                    .after(skip),
            );
            let Err(err) = workload(&mut w, &mut m, direct) else {
                // Past the workload's last journal write.
                assert_eq!(sim.faults_fired(), 0);
                break;
            };
            failed_at += 1;
            assert!(
                matches!(err.kind, WriteErrorKind::Io | WriteErrorKind::Poisoned),
                "{err}"
            );
            let again = w.point(PointKind::CrashConsistent, "after").unwrap_err();
            assert_eq!(again.kind, WriteErrorKind::Poisoned, "{again}");
            drop(w);
            sim.clear_faults();
            sim.crash(skip);
            Writer::open(storage.clone(), Path::new(DIR)).expect("recovers");
            let v = check_vault(&storage, Path::new(DIR), &m);
            assert!(v.is_empty(), "direct {direct} skip {skip}: {v:?}");
        }
        eprintln!("direct {direct}: EIO at each of {failed_at} journal writes");
        assert!(failed_at >= 5, "the workload makes several journal writes");
    }
}

#[test]
fn direct_io_on_a_filesystem_that_refuses_it_falls_back_with_a_note() {
    let shm = Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("note: no /dev/shm here; skipped");
        return;
    }
    // Each real-file backend (the simulator has no tmpfs): both must notice the refusal.
    for b in backends(0).into_iter().filter(|b| b.sim.is_none()) {
        let tmp = tempfile::tempdir_in(shm).expect("a directory in /dev/shm");
        let storage = b.storage.clone();
        let dir = tmp.path().join("vault");
        let mut w = Writer::create(storage.clone(), &dir, settings()).expect("created");
        let mut m = PointModel::default();
        w.add_disk("d", DISK_BYTES).expect("added");
        m.add_disk(1, vec![0; DISK_BYTES as usize]);
        workload(&mut w, &mut m, true).expect("the workload runs");
        let note = w.io_note().map(str::to_owned);
        w.close().expect("closed");
        let note = note.unwrap_or_else(|| {
            panic!("{}: tmpfs refuses O_DIRECT, and the writer says so", b.name)
        });
        assert!(note.contains("page cache"), "{}: {note}", b.name);
        let v = check_vault(&storage, &dir, &m);
        assert!(v.is_empty(), "{}: {v:?}", b.name);
    }
}

#[test]
fn a_batch_framed_in_parallel_reads_back_like_single_writes_across_segments() {
    for b in backends(5) {
        let dir = b.root.join("batch");
        let mut w = Writer::create(b.storage.clone(), &dir, settings()).expect("created");
        let mut m = PointModel::default();
        w.add_disk("d", DISK_BYTES).expect("added");
        m.add_disk(1, vec![0; DISK_BYTES as usize]);
        // 60 writes of 1 to 9 KiB, half compressible: more than two 64 KiB segments hold.
        let data: Vec<(u64, Vec<u8>)> = (0..60u64)
            .map(|i| {
                let len = 1000 + (i as usize * 2311) % 8000;
                let bytes = if i % 2 == 0 {
                    noise(300 + i, len)
                } else {
                    vec![i as u8; len]
                };
                (i * 6007 % (DISK_BYTES - 10_000), bytes)
            })
            .collect();
        let batch: Vec<(u64, &[u8])> = data.iter().map(|(o, d)| (*o, &d[..])).collect();
        for (offset, bytes) in &batch {
            m.write(1, *offset, bytes);
        }
        let last = w.write_many(1, &batch).expect("staged");
        assert_eq!(last, w.last_lsn());
        m.point(&mut w, "after the batch").expect("acknowledged");
        let segments = w.manifest().segments.len();
        assert!(
            segments >= 3,
            "{}: the batch spans segments ({segments})",
            b.name
        );
        w.close().expect("closed");
        let v = check_vault(&b.storage, &dir, &m);
        assert!(v.is_empty(), "{}: {v:?}", b.name);
        let records = replog_tests::journal_records(b.storage.as_ref(), &dir);
        let lsns: Vec<u64> = records.iter().map(|r| r.lsn).collect();
        let mut sorted = lsns.clone();
        sorted.sort_unstable();
        assert_eq!(lsns, sorted, "records in LSN order");
        assert!(w_refused_bad_range(&b.storage, &dir));
    }
}

/// A batch with one range past the disk's end is refused whole, before anything is staged.
fn w_refused_bad_range(storage: &Arc<dyn Storage>, dir: &Path) -> bool {
    let mut w = Writer::open(storage.clone(), dir).expect("reopened");
    let before = w.last_lsn();
    let ok = [1u8; 10];
    let refused = w
        .write_many(1, &[(0, &ok[..]), (DISK_BYTES - 5, &ok[..])])
        .is_err();
    refused && w.last_lsn() == before
}
