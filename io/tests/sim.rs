//! The simulator's crash and fault model: what survives a power loss, what an injected error
//! does, and how the operation counter places a crash.

use std::path::Path;
use std::sync::Arc;

use replog_io::sim::{Fault, FaultError, FaultOp, SimStorage};
use replog_io::{File, LockMode, OpenMode, Storage, WriteAt};

const DIR: &str = "/sim/d";
const FILE: &str = "/sim/d/f";

/// A simulator with `/sim/d` created and durable.
fn sim() -> Arc<SimStorage> {
    let sim = SimStorage::new(1);
    sim.create_dir_all(Path::new(DIR)).unwrap();
    sim.make_all_durable();
    sim
}

/// Creates `path` and makes both the file and its directory entry durable, with `data`.
fn durable_file(sim: &SimStorage, path: &str, data: &[u8]) -> Arc<dyn File> {
    let f = sim.open(Path::new(path), OpenMode::CreateNew).unwrap();
    f.write_batch(&[WriteAt { offset: 0, data }], true).unwrap();
    sim.sync_dir(Path::new(path).parent().unwrap()).unwrap();
    f
}

fn read(sim: &SimStorage, path: &str) -> Vec<u8> {
    let f = sim.open(Path::new(path), OpenMode::Read).unwrap();
    f.map().unwrap().to_vec()
}

#[test]
fn crash_drops_unsynced_writes_for_some_seeds_and_keeps_them_for_others() {
    let (mut dropped, mut kept) = (0, 0);
    for seed in 0..64 {
        let sim = sim();
        let f = durable_file(&sim, FILE, b"synced|");
        f.write_all_at(b"unsynced", 7).unwrap();
        assert_eq!(sim.live_bytes(FILE).unwrap(), b"synced|unsynced");
        assert_eq!(sim.durable_bytes(FILE).unwrap(), b"synced|");
        sim.crash(seed);
        let after = read(&sim, FILE);
        assert!(after.starts_with(b"synced|"));
        match &after[7..] {
            b"" => dropped += 1,
            b"unsynced" => kept += 1,
            _ => {}
        }
    }
    assert!(dropped > 0 && kept > 0, "dropped {dropped}, kept {kept}");
}

#[test]
fn synced_data_survives_every_crash_seed() {
    let synced: Vec<u8> = (0..5000u32).map(|i| (i % 241) as u8).collect();
    for seed in 0..200 {
        let sim = sim();
        let f = durable_file(&sim, FILE, &synced);
        f.write_all_at(&[0xaa; 3000], synced.len() as u64).unwrap();
        f.write_all_at(&[0xbb; 700], synced.len() as u64 + 1000)
            .unwrap();
        durable_file(&sim, "/sim/d/other", b"x")
            .write_all_at(b"yz", 1)
            .unwrap();
        sim.crash(seed);
        let after = read(&sim, FILE);
        assert_eq!(&after[..synced.len()], &synced[..], "seed {seed}");
        assert!(read(&sim, "/sim/d/other").starts_with(b"x"));
    }
}

#[test]
fn a_new_file_without_sync_dir_disappears() {
    let sim = sim();
    let f = sim.open(Path::new(FILE), OpenMode::CreateNew).unwrap();
    f.write_batch(
        &[WriteAt {
            offset: 0,
            data: b"data",
        }],
        true,
    )
    .unwrap();
    assert_eq!(sim.durable_bytes(FILE), None, "the entry is not durable");
    sim.crash(0);
    assert!(!sim.exists(Path::new(FILE)).unwrap());
    assert!(sim.file_paths().is_empty());
}

#[test]
fn a_directory_is_durable_only_once_its_parent_is_synced() {
    let sim = SimStorage::new(1);
    sim.create_dir_all(Path::new("/sim/a/b")).unwrap();
    sim.sync_dir(Path::new("/sim/a")).unwrap();
    sim.crash(0);
    assert!(!sim.exists(Path::new("/sim")).unwrap());

    sim.create_dir_all(Path::new("/sim/a/b")).unwrap();
    for dir in ["/", "/sim", "/sim/a"] {
        sim.sync_dir(Path::new(dir)).unwrap();
    }
    sim.crash(0);
    assert!(sim.exists(Path::new("/sim/a/b")).unwrap());
}

#[test]
fn a_rename_without_sync_dir_can_revert() {
    let sim = sim();
    durable_file(&sim, FILE, b"old");
    let tmp = "/sim/d/f.tmp";
    let t = sim.open(Path::new(tmp), OpenMode::CreateNew).unwrap();
    t.write_batch(
        &[WriteAt {
            offset: 0,
            data: b"new",
        }],
        true,
    )
    .unwrap();
    sim.rename(Path::new(tmp), Path::new(FILE)).unwrap();
    assert_eq!(read(&sim, FILE), b"new");
    sim.crash(3);
    assert_eq!(read(&sim, FILE), b"old", "the rename was not durable");
    assert!(!sim.exists(Path::new(tmp)).unwrap(), "nor was the creation");

    let t = sim.open(Path::new(tmp), OpenMode::CreateNew).unwrap();
    t.write_batch(
        &[WriteAt {
            offset: 0,
            data: b"new",
        }],
        true,
    )
    .unwrap();
    sim.rename(Path::new(tmp), Path::new(FILE)).unwrap();
    sim.sync_dir(Path::new(DIR)).unwrap();
    sim.crash(3);
    assert_eq!(read(&sim, FILE), b"new");
    assert_eq!(sim.file_paths(), [Path::new(FILE)]);
}

#[test]
fn eio_on_sync_loses_the_writes_even_after_a_successful_sync() {
    let sim = sim();
    let f = durable_file(&sim, FILE, b"base");
    sim.inject(Fault::once(FaultOp::Sync, FaultError::Eio));
    let err = f
        .write_batch(
            &[WriteAt {
                offset: 4,
                data: b"lost",
            }],
            true,
        )
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert_eq!(sim.faults_fired(), 1);
    assert_eq!(
        read(&sim, FILE),
        b"baselost",
        "reads still see the dropped pages"
    );
    f.sync_data().unwrap();
    assert_eq!(sim.durable_bytes(FILE).unwrap(), b"base");
    // A later write is durable once synced; the lost bytes under it stay lost.
    f.write_batch(
        &[WriteAt {
            offset: 8,
            data: b"!",
        }],
        true,
    )
    .unwrap();
    let durable = sim.durable_bytes(FILE).unwrap();
    assert_eq!(durable, b"base\0\0\0\0!");
    for seed in 0..20 {
        sim.crash(seed);
        assert_eq!(read(&sim, FILE), durable);
    }
}

#[test]
fn torn_writes_show_up_at_sector_granularity() {
    let mut torn = 0;
    for seed in 0..64 {
        let sim = sim();
        let f = durable_file(&sim, FILE, &[0u8; 4096]);
        f.write_all_at(&[0xab; 4096], 0).unwrap();
        sim.crash(seed);
        let after = read(&sim, FILE);
        assert_eq!(after.len(), 4096);
        let sectors: Vec<u8> = after
            .chunks(512)
            .map(|s| {
                assert!(s.iter().all(|&b| b == s[0]), "a sector is torn inside");
                s[0]
            })
            .collect();
        if sectors.contains(&0) && sectors.contains(&0xab) {
            torn += 1;
        }
    }
    assert!(torn > 0, "no seed tore the write");
}

#[test]
fn a_growing_write_can_leave_zeros_or_garbage_past_the_old_end() {
    let (mut zeros, mut garbage, mut short) = (0, 0, 0);
    for seed in 0..200 {
        let sim = sim();
        let f = durable_file(&sim, FILE, &[1u8; 100]);
        f.write_all_at(&[2u8; 2000], 100).unwrap();
        sim.crash(seed);
        let after = read(&sim, FILE);
        assert!(after[..100].iter().all(|&b| b == 1));
        if after.len() < 2100 {
            short += 1;
        } else if after[100..].iter().any(|&b| b != 0 && b != 2) {
            garbage += 1;
        } else if after[100..].contains(&0) {
            zeros += 1;
        }
    }
    assert!(
        zeros > 0 && garbage > 0 && short > 0,
        "{zeros} {garbage} {short}"
    );
}

#[test]
fn an_unsynced_set_len_may_or_may_not_persist() {
    let (mut truncated, mut whole) = (0, 0);
    for seed in 0..32 {
        let sim = sim();
        let f = durable_file(&sim, FILE, b"0123456789");
        f.set_len(4).unwrap();
        sim.crash(seed);
        match read(&sim, FILE).len() {
            4 => truncated += 1,
            10 => whole += 1,
            n => panic!("unexpected length {n}"),
        }
    }
    assert!(truncated > 0 && whole > 0);
}

#[test]
fn the_same_seed_gives_the_same_crash() {
    let run = |seed| {
        let sim = sim();
        let f = durable_file(&sim, FILE, b"start");
        for i in 0..20u64 {
            f.write_all_at(&[i as u8; 300], i * 250).unwrap();
        }
        sim.crash(seed);
        read(&sim, FILE)
    };
    for seed in 0..10 {
        assert_eq!(run(seed), run(seed));
    }
}

/// A crash kills every process, so every advisory lock goes with it, even one whose handle is
/// still held; the stale handle dropping later releases nothing of the new holder's.
#[test]
fn a_crash_releases_every_lock_and_a_stale_handle_releases_nothing_later() {
    let sim = sim();
    let path = Path::new("/sim/d/LOCK");
    let before = sim.open_lock_file(path).unwrap();
    sim.sync_dir(Path::new(DIR)).unwrap();
    assert!(before.lock(LockMode::Exclusive, false).unwrap());
    let other = sim.open_lock_file(path).unwrap();
    assert!(!other.lock(LockMode::Shared, false).unwrap());
    sim.crash(0);
    assert_eq!(
        other
            .lock(LockMode::Shared, false)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ESTALE)
    );
    let after = sim.open_lock_file(path).unwrap();
    assert!(
        after.lock(LockMode::Exclusive, false).unwrap(),
        "the crash freed it"
    );
    drop(before);
    let third = sim.open_lock_file(path).unwrap();
    assert!(
        !third.lock(LockMode::Shared, false).unwrap(),
        "the stale handle released nothing"
    );
}

/// Creating a lock file is one counted operation (a crash can fall on it); opening an existing
/// one and locking are not.
#[test]
fn only_creating_a_lock_file_is_a_counted_operation() {
    let sim = sim();
    let path = Path::new("/sim/d/LOCK");
    let ops = sim.ops();
    let f = sim.open_lock_file(path).unwrap();
    assert_eq!(sim.ops(), ops + 1);
    assert!(f.lock(LockMode::Exclusive, true).unwrap());
    let g = sim.open_lock_file(path).unwrap();
    assert!(!g.lock(LockMode::Shared, false).unwrap());
    assert_eq!(sim.ops(), ops + 1);
    sim.set_crash_at(Some(sim.ops()));
    let err = sim.open_lock_file(Path::new("/sim/d/OTHER")).unwrap_err();
    assert!(SimStorage::is_crash_error(&err));
    assert!(
        g.lock(LockMode::Shared, false).is_err(),
        "the machine is down"
    );
}

/// A process restart (the machine stays up) releases every lock and keeps every file and its
/// unsynced changes.
#[test]
fn restarting_processes_releases_the_locks_and_keeps_the_files() {
    let sim = sim();
    let path = Path::new("/sim/d/LOCK");
    let held = sim.open_lock_file(path).unwrap();
    assert!(held.lock(LockMode::Exclusive, false).unwrap());
    held.write_all_at(b"unsynced", 0).unwrap();
    sim.restart_processes();
    let next = sim.open_lock_file(path).unwrap();
    assert!(next.lock(LockMode::Exclusive, false).unwrap());
    assert_eq!(read(&sim, "/sim/d/LOCK"), b"unsynced");
}
