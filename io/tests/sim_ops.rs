//! The simulator's operation counter, crash point, injected faults and test helpers.

use std::io;
use std::path::Path;
use std::sync::Arc;

use replog_io::sim::{Fault, FaultError, FaultOp, SimCrash, SimStorage};
use replog_io::{OpenMode, Storage, WriteAt};

const DIR: &str = "/sim/d";

fn sim() -> Arc<SimStorage> {
    let sim = SimStorage::new(1);
    sim.create_dir_all(Path::new(DIR)).unwrap();
    sim.make_all_durable();
    sim
}

/// A small workload that acknowledges each record once its batch (with sync) returned, in a
/// file whose creation was made durable first. Appends to `acked` each file and its
/// acknowledged contents as it goes, so a crash midway leaves what was acknowledged.
fn workload(sim: &SimStorage, acked: &mut Vec<(String, Vec<u8>)>) -> io::Result<()> {
    for file in 0..2 {
        let path = format!("{DIR}/seg{file}");
        let f = sim.open(Path::new(&path), OpenMode::CreateNew)?;
        sim.sync_dir(Path::new(DIR))?;
        acked.push((path, Vec::new()));
        for record in 0..3u8 {
            let content = &mut acked.last_mut().unwrap().1;
            let data = vec![file * 16 + record; 700];
            let offset = content.len() as u64;
            let extra = [record; 10];
            let writes = [
                WriteAt {
                    offset,
                    data: &data,
                },
                WriteAt {
                    offset: offset + 700,
                    data: &extra,
                },
            ];
            f.write_batch(&writes, true)?;
            content.extend_from_slice(&data);
            content.extend_from_slice(&extra);
        }
    }
    Ok(())
}

#[test]
fn set_crash_at_fails_that_operation_and_every_later_call() {
    let sim = sim();
    let start = sim.ops();
    let f = sim
        .open(Path::new("/sim/d/f"), OpenMode::CreateNew)
        .unwrap();
    assert_eq!(sim.ops(), start + 1);
    sim.set_crash_at(Some(start + 2));
    f.write_all_at(b"first", 0).unwrap();
    let err = f.write_all_at(b"second", 5).unwrap_err();
    assert!(SimStorage::is_crash_error(&err), "{err}");
    assert_eq!(
        err.to_string(),
        format!("simulated crash at operation {}", start + 2)
    );
    assert!(sim.crashed());
    assert_eq!(
        sim.live_bytes("/sim/d/f").unwrap(),
        b"first",
        "op n did not happen"
    );
    assert!(SimStorage::is_crash_error(&f.sync_data().unwrap_err()));
    let mut buf = [0u8; 1];
    assert!(SimStorage::is_crash_error(
        &f.read_at(&mut buf, 0).unwrap_err()
    ));
    let err = sim.sync_dir(Path::new(DIR)).unwrap_err();
    assert!(SimStorage::is_crash_error(&err));
    assert_eq!(
        sim.ops(),
        start + 3,
        "calls after the crash are not counted"
    );

    sim.crash(0);
    assert!(!sim.crashed());
    let err = f.write_all_at(b"x", 0).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ESTALE),
        "old handles are stale"
    );
    assert!(!sim.exists(Path::new("/sim/d/f")).unwrap());
    sim.open(Path::new("/sim/d/g"), OpenMode::CreateNew)
        .unwrap();
}

#[test]
fn acknowledged_data_survives_a_crash_at_every_operation() {
    let total_ops = {
        let sim = sim();
        let start = sim.ops();
        workload(&sim, &mut Vec::new()).unwrap();
        sim.ops() - start
    };
    assert_eq!(total_ops, 2 * (2 + 3 * 3));
    for crash_op in 0..=total_ops {
        for seed in 0..8 {
            let sim = sim();
            sim.set_crash_at(Some(sim.ops() + crash_op));
            let mut acked = Vec::new();
            if let Err(e) = workload(&sim, &mut acked) {
                assert!(SimStorage::is_crash_error(&e), "{e}");
            }
            sim.crash(seed);
            for (path, content) in acked {
                let after = sim
                    .live_bytes(&path)
                    .expect("an acknowledged file vanished");
                assert!(
                    after.starts_with(&content),
                    "op {crash_op} seed {seed} {path}"
                );
            }
        }
    }
}

#[test]
fn enospc_on_a_write_applies_at_most_a_strict_prefix() {
    let mut partial = 0;
    for seed in 0..32 {
        let sim = SimStorage::new(seed);
        sim.create_dir_all(Path::new(DIR)).unwrap();
        let f = sim
            .open(Path::new("/sim/d/f"), OpenMode::CreateNew)
            .unwrap();
        sim.inject(Fault::once(FaultOp::Write, FaultError::Enospc));
        let err = f.write_all_at(&[7u8; 1000], 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        let live = sim.live_bytes("/sim/d/f").unwrap();
        assert!(live.len() < 1000 && live.iter().all(|&b| b == 7));
        partial += usize::from(!live.is_empty());
        f.write_all_at(&[7u8; 1000], 0).unwrap();
    }
    assert!(partial > 0);
}

#[test]
fn faults_skip_match_paths_and_persist() {
    let sim = sim();
    let a = sim
        .open(Path::new("/sim/d/a.log"), OpenMode::CreateNew)
        .unwrap();
    let b = sim
        .open(Path::new("/sim/d/b.idx"), OpenMode::CreateNew)
        .unwrap();
    sim.inject(
        Fault::always(FaultOp::Write, FaultError::Eio)
            .on_path(".log")
            .after(2),
    );
    let ops_before = sim.ops();
    a.write_all_at(b"1", 0).unwrap();
    a.write_all_at(b"2", 1).unwrap();
    for _ in 0..3 {
        let err = a.write_all_at(b"3", 2).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
    }
    b.write_all_at(b"fine", 0).unwrap();
    a.sync_data().unwrap();
    assert_eq!(sim.ops(), ops_before + 7, "faulted operations are counted");
    assert_eq!(sim.faults_fired(), 3);
    assert_eq!(sim.live_bytes("/sim/d/a.log").unwrap(), b"12");
    sim.clear_faults();
    a.write_all_at(b"3", 2).unwrap();
}

#[test]
fn a_failed_write_stops_the_batch_before_its_sync() {
    let sim = sim();
    let f = sim
        .open(Path::new("/sim/d/f"), OpenMode::CreateNew)
        .unwrap();
    sim.inject(Fault::once(FaultOp::Write, FaultError::Eio).after(1));
    let writes = [
        WriteAt {
            offset: 0,
            data: b"aa",
        },
        WriteAt {
            offset: 2,
            data: b"bb",
        },
        WriteAt {
            offset: 4,
            data: b"cc",
        },
    ];
    assert!(f.write_batch(&writes, true).is_err());
    assert_eq!(sim.live_bytes("/sim/d/f").unwrap(), b"aa");
    assert_eq!(sim.durable_bytes("/sim/d/f"), None);
}

#[test]
fn namespace_faults_fail_without_effect() {
    let sim = sim();
    sim.open(Path::new("/sim/d/a"), OpenMode::CreateNew)
        .unwrap();
    for op in [FaultOp::Rename, FaultOp::Any] {
        sim.inject(Fault::once(op, FaultError::Eio));
        assert!(
            sim.rename(Path::new("/sim/d/a"), Path::new("/sim/d/b"))
                .is_err()
        );
        assert_eq!(sim.read_dir(Path::new(DIR)).unwrap(), ["a"]);
    }
    sim.inject(Fault::once(FaultOp::SyncDir, FaultError::Eio));
    assert!(sim.sync_dir(Path::new(DIR)).is_err());
    assert_eq!(sim.durable_bytes("/sim/d/a"), None);
    sim.inject(Fault::once(FaultOp::Create, FaultError::Enospc));
    assert!(
        sim.open(Path::new("/sim/d/c"), OpenMode::CreateNew)
            .is_err()
    );
    sim.inject(Fault::once(FaultOp::Remove, FaultError::Eio));
    assert!(sim.remove_file(Path::new("/sim/d/a")).is_err());
    sim.inject(Fault::once(FaultOp::CreateDir, FaultError::Enospc));
    assert!(sim.create_dir_all(Path::new("/sim/e")).is_err());
    assert_eq!(sim.file_paths(), [Path::new("/sim/d/a")]);
    assert!(!sim.exists(Path::new("/sim/e")).unwrap());
}

#[test]
fn file_faults_fail_without_effect() {
    let sim = sim();
    let f = sim
        .open(Path::new("/sim/d/a"), OpenMode::CreateNew)
        .unwrap();
    f.write_all_at(&[5u8; 100], 0).unwrap();
    for op in [FaultOp::SetLen, FaultOp::Allocate, FaultOp::ZeroRange] {
        sim.inject(Fault::once(op, FaultError::Eio));
    }
    assert!(f.set_len(10).is_err());
    assert!(f.allocate(0, 4096).is_err());
    assert!(f.zero_range(0, 50).is_err());
    assert_eq!(sim.live_bytes("/sim/d/a").unwrap(), [5u8; 100]);
    assert_eq!(sim.faults_fired(), 3);
}

#[derive(Debug, thiserror::Error)]
#[error("writing the journal failed")]
struct Wrapped(#[source] io::Error);

#[test]
fn crash_errors_are_recognised_through_wrappers() {
    let sim = sim();
    sim.set_crash_at(Some(sim.ops()));
    let err = sim.sync_dir(Path::new(DIR)).unwrap_err();
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<SimCrash>())
        .copied();
    assert!(inner.is_some());
    assert!(SimStorage::is_crash(&Wrapped(err)));
    assert!(!SimStorage::is_crash(&Wrapped(io::Error::other("no"))));
    assert!(!SimStorage::is_crash_error(&io::Error::from_raw_os_error(
        libc::EIO
    )));
}

#[test]
fn flip_byte_corrupts_live_and_durable_images() {
    let sim = sim();
    let f = sim
        .open(Path::new("/sim/d/a"), OpenMode::CreateNew)
        .unwrap();
    f.write_batch(
        &[WriteAt {
            offset: 0,
            data: b"abc",
        }],
        true,
    )
    .unwrap();
    sim.flip_byte("/sim/d/a", 1).unwrap();
    let expected = [b'a', b'b' ^ 0xff, b'c'];
    assert_eq!(sim.live_bytes("/sim/d/a").unwrap(), expected);
    let mut buf = [0u8; 3];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, expected);
    sim.sync_dir(Path::new(DIR)).unwrap();
    assert_eq!(sim.durable_bytes("/sim/d/a").unwrap(), expected);
    assert!(sim.flip_byte("/sim/d/a", 3).is_err());
    assert!(sim.flip_byte("/sim/d/missing", 0).is_err());
}

#[test]
fn paths_are_checked_like_a_filesystem() {
    let sim = sim();
    sim.open(Path::new("/sim/d/file"), OpenMode::CreateNew)
        .unwrap();
    let below_file = sim.open(Path::new("/sim/d/file/x"), OpenMode::CreateNew);
    assert_eq!(below_file.unwrap_err().raw_os_error(), Some(libc::ENOTDIR));
    let dotdot = sim.open(Path::new("/sim/d/../d/file"), OpenMode::Read);
    assert_eq!(dotdot.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    let dir = sim.open(Path::new(DIR), OpenMode::Read);
    assert_eq!(dir.unwrap_err().raw_os_error(), Some(libc::EISDIR));
    assert!(
        sim.open(Path::new("/sim//d/./file"), OpenMode::Read)
            .is_ok()
    );
    assert!(
        sim.rename(Path::new("/sim/d"), Path::new("/sim/d/inside"))
            .is_err()
    );
    sim.create_dir_all(Path::new("/sim/moved")).unwrap();
    // A directory replaces an empty directory, and takes its entries along.
    sim.rename(Path::new("/sim/d"), Path::new("/sim/moved"))
        .unwrap();
    assert_eq!(sim.file_paths(), [Path::new("/sim/moved/file")]);
    sim.create_dir_all(Path::new("/sim/d/sub")).unwrap();
    let not_empty = sim.rename(Path::new("/sim/moved"), Path::new("/sim/d"));
    assert_eq!(not_empty.unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    let dir = sim.remove_file(Path::new("/sim/moved"));
    assert_eq!(dir.unwrap_err().raw_os_error(), Some(libc::EISDIR));
}
