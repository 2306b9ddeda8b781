//! The same behaviour checks run against every backend: plain syscalls and io_uring on a
//! temporary directory, and the simulator under `/sim`. The io_uring variants print a note and
//! pass where io_uring is unavailable.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_io::sim::SimStorage;
use replog_io::sync::SyncStorage;
use replog_io::uring::UringStorage;
use replog_io::{BackendKind, File, LockMode, OpenMode, Storage, WriteAt};

/// A backend and a directory to work in.
struct Env {
    storage: Arc<dyn Storage>,
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Env {
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    fn create(&self, name: &str) -> Arc<dyn File> {
        self.storage
            .open(&self.path(name), OpenMode::CreateNew)
            .unwrap()
    }

    fn on_disk(storage: Arc<dyn Storage>) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        Env {
            storage,
            root: tmp.path().to_path_buf(),
            _tmp: Some(tmp),
        }
    }
}

fn sync_env() -> Option<Env> {
    Some(Env::on_disk(Arc::new(SyncStorage::new())))
}

fn uring_env() -> Option<Env> {
    match UringStorage::new() {
        Ok(storage) => Some(Env::on_disk(Arc::new(storage))),
        Err(e) => {
            eprintln!("note: skipping the io_uring variant: {e}");
            None
        }
    }
}

fn sim_env() -> Option<Env> {
    let sim = SimStorage::new(7);
    let root = PathBuf::from("/sim/work");
    sim.create_dir_all(&root).unwrap();
    Some(Env {
        storage: sim,
        root,
        _tmp: None,
    })
}

/// Defines one test per check and backend, in a module per backend.
macro_rules! each_backend {
    ($($check:ident),* $(,)?) => {
        mod sync_backend {
            $(#[test] fn $check() { if let Some(env) = super::sync_env() { super::$check(&env) } })*
        }
        mod uring_backend {
            $(#[test] fn $check() { if let Some(env) = super::uring_env() { super::$check(&env) } })*
        }
        mod sim_backend {
            $(#[test] fn $check() { if let Some(env) = super::sim_env() { super::$check(&env) } })*
        }
    };
}

each_backend!(
    kind_names_the_backend,
    write_read_round_trip,
    many_writes_in_one_synced_batch,
    large_write_in_a_batch,
    concurrent_batches_on_one_file,
    reads_at_the_end_are_short,
    set_len_truncates_and_extends_with_zeros,
    zero_range_reads_zeros_and_keeps_the_length,
    punch_hole_frees_whole_pages_and_keeps_the_length,
    allocate_keeps_the_length,
    rename_replaces_the_target,
    read_dir_is_sorted,
    create_new_on_an_existing_file_fails,
    create_truncate_empties_an_existing_file,
    open_missing_fails_with_not_found,
    read_only_files_refuse_writes,
    map_sees_the_data,
    remove_file_and_exists,
    sync_dir_and_sync_data_succeed,
    lock_files_are_created_once_and_never_truncated,
    locks_conflict_between_opens_and_go_with_the_open,
    a_waiting_lock_is_granted_when_the_holder_lets_go,
);

#[test]
fn backends_are_chosen_by_name() {
    assert_eq!(
        replog_io::backend("sync").unwrap().kind(),
        BackendKind::Sync
    );
    let auto = replog_io::backend("auto").unwrap().kind();
    match UringStorage::new() {
        Ok(_) => {
            assert_eq!(auto, BackendKind::Uring);
            assert_eq!(
                replog_io::backend("uring").unwrap().kind(),
                BackendKind::Uring
            );
        }
        Err(_) => assert_eq!(auto, BackendKind::Sync),
    }
    let err = replog_io::backend("floppy").unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

fn kind_names_the_backend(env: &Env) {
    let kind = env.storage.kind();
    assert!([BackendKind::Sync, BackendKind::Uring, BackendKind::Sim].contains(&kind));
}

fn write_read_round_trip(env: &Env) {
    let f = env.create("a");
    f.write_all_at(b"hello, world", 0).unwrap();
    f.write_batch(
        &[WriteAt {
            offset: 7,
            data: b"there",
        }],
        true,
    )
    .unwrap();
    let mut buf = [0u8; 12];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"hello, there");
    assert_eq!(f.len().unwrap(), 12);

    let again = env.storage.open(&env.path("a"), OpenMode::Read).unwrap();
    let mut buf = [0u8; 5];
    again.read_exact_at(&mut buf, 7).unwrap();
    assert_eq!(&buf, b"there");
}

/// More writes than the io_uring backend keeps in flight, of uneven sizes, with a sync.
fn many_writes_in_one_synced_batch(env: &Env) {
    let f = env.create("batch");
    let chunks: Vec<Vec<u8>> = (0..300u32)
        .map(|i| vec![(i % 251) as u8; 1 + (i as usize * 37) % 700])
        .collect();
    let mut writes = Vec::new();
    let mut offset = 0u64;
    for chunk in &chunks {
        writes.push(WriteAt {
            offset,
            data: chunk,
        });
        offset += chunk.len() as u64;
    }
    // Submit them out of file order; the result must not depend on it.
    writes.reverse();
    f.write_batch(&writes, true).unwrap();
    assert_eq!(f.len().unwrap(), offset);
    let expected: Vec<u8> = chunks.concat();
    let mut buf = vec![0u8; expected.len()];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, expected);
}

fn large_write_in_a_batch(env: &Env) {
    let f = env.create("large");
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 17).map(|i| (i % 253) as u8).collect();
    f.write_batch(
        &[
            WriteAt {
                offset: 4096,
                data: &data,
            },
            WriteAt {
                offset: 0,
                data: &[],
            },
        ],
        true,
    )
    .unwrap();
    assert_eq!(f.len().unwrap(), 4096 + data.len() as u64);
    let mut buf = vec![0u8; data.len()];
    f.read_exact_at(&mut buf, 4096).unwrap();
    assert!(buf == data);
    let mut head = [1u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert!(head.iter().all(|&b| b == 0));
}

fn concurrent_batches_on_one_file(env: &Env) {
    let f = env.create("shared");
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let f = Arc::clone(&f);
            s.spawn(move || {
                for round in 0..20u64 {
                    let data = [t; 100];
                    let offset = (round * 4 + u64::from(t)) * 100;
                    f.write_batch(
                        &[WriteAt {
                            offset,
                            data: &data,
                        }],
                        round % 5 == 0,
                    )
                    .unwrap();
                }
            });
        }
    });
    let map = f.map().unwrap();
    assert_eq!(map.len(), 8000);
    for (i, chunk) in map.chunks(100).enumerate() {
        assert!(chunk.iter().all(|&b| b == (i % 4) as u8), "chunk {i}");
    }
}

fn reads_at_the_end_are_short(env: &Env) {
    let f = env.create("short");
    f.write_all_at(b"0123456789", 0).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(f.read_at(&mut buf, 6).unwrap(), 4);
    assert_eq!(&buf[..4], b"6789");
    assert_eq!(f.read_at(&mut buf, 10).unwrap(), 0);
    assert_eq!(f.read_at(&mut buf, 1000).unwrap(), 0);
    let err = f.read_exact_at(&mut buf, 5).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

fn set_len_truncates_and_extends_with_zeros(env: &Env) {
    let f = env.create("len");
    f.write_all_at(&[9u8; 100], 0).unwrap();
    f.set_len(40).unwrap();
    assert_eq!(f.len().unwrap(), 40);
    f.set_len(120).unwrap();
    assert_eq!(f.len().unwrap(), 120);
    let mut buf = [1u8; 120];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert!(buf[..40].iter().all(|&b| b == 9));
    assert!(buf[40..].iter().all(|&b| b == 0));
}

fn zero_range_reads_zeros_and_keeps_the_length(env: &Env) {
    let f = env.create("zero");
    let len = 3 * 4096 + 100;
    f.write_batch(
        &[WriteAt {
            offset: 0,
            data: &vec![0xee; len],
        }],
        true,
    )
    .unwrap();
    f.zero_range(4096, 4096).unwrap();
    f.zero_range(3 * 4096, 10_000).unwrap();
    f.zero_range(5, 0).unwrap();
    assert_eq!(f.len().unwrap(), len as u64);
    let map = f.map().unwrap();
    assert!(map[..4096].iter().all(|&b| b == 0xee));
    assert!(map[4096..2 * 4096].iter().all(|&b| b == 0));
    assert!(map[2 * 4096..3 * 4096].iter().all(|&b| b == 0xee));
    assert!(map[3 * 4096..].iter().all(|&b| b == 0));
}

fn punch_hole_frees_whole_pages_and_keeps_the_length(env: &Env) {
    let f = env.create("punch");
    let len = 64 * 4096 + 100;
    f.write_batch(
        &[WriteAt {
            offset: 0,
            data: &vec![0xab; len],
        }],
        true,
    )
    .unwrap();
    let before = f.allocated_bytes().unwrap();
    assert!(before >= len as u64 - 4096, "{before} allocated of {len}");
    if !f.punch_hole(4096, 48 * 4096).unwrap() {
        eprintln!("note: this filesystem cannot punch holes; nothing was changed");
        assert!(read_all(env, "punch").iter().all(|&b| b == 0xab));
        return;
    }
    f.sync_data().unwrap();
    assert_eq!(f.len().unwrap(), len as u64);
    let map = f.map().unwrap();
    assert!(map[..4096].iter().all(|&b| b == 0xab));
    assert!(map[4096..49 * 4096].iter().all(|&b| b == 0));
    assert!(map[49 * 4096..].iter().all(|&b| b == 0xab));
    let after = f.allocated_bytes().unwrap();
    assert_eq!(before - after, 48 * 4096, "{before} -> {after}");
    // Writing into the hole allocates that page again.
    f.write_batch(
        &[WriteAt {
            offset: 8192,
            data: &[1],
        }],
        true,
    )
    .unwrap();
    assert_eq!(f.allocated_bytes().unwrap(), after + 4096);
}

fn allocate_keeps_the_length(env: &Env) {
    let f = env.create("alloc");
    f.write_all_at(b"abc", 0).unwrap();
    f.allocate(0, 1 << 20).unwrap();
    f.allocate(0, 0).unwrap();
    assert_eq!(f.len().unwrap(), 3);
}

fn read_all(env: &Env, name: &str) -> Vec<u8> {
    let f = env.storage.open(&env.path(name), OpenMode::Read).unwrap();
    f.map().unwrap().to_vec()
}

fn rename_replaces_the_target(env: &Env) {
    env.create("old").write_all_at(b"old", 0).unwrap();
    env.create("new.tmp").write_all_at(b"new", 0).unwrap();
    env.storage
        .rename(&env.path("new.tmp"), &env.path("old"))
        .unwrap();
    env.storage.sync_dir(&env.root).unwrap();
    assert_eq!(read_all(env, "old"), b"new");
    assert!(!env.storage.exists(&env.path("new.tmp")).unwrap());
    let err = env
        .storage
        .rename(&env.path("new.tmp"), &env.path("x"))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

fn read_dir_is_sorted(env: &Env) {
    for name in ["b", "a", "c10", "c2", "Z"] {
        env.create(name);
    }
    env.storage.create_dir_all(&env.path("dir/inner")).unwrap();
    let names = env.storage.read_dir(&env.root).unwrap();
    assert_eq!(names, ["Z", "a", "b", "c10", "c2", "dir"]);
    assert_eq!(env.storage.read_dir(&env.path("dir")).unwrap(), ["inner"]);
    let err = env.storage.read_dir(&env.path("missing")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

fn create_new_on_an_existing_file_fails(env: &Env) {
    env.create("once");
    let err = env
        .storage
        .open(&env.path("once"), OpenMode::CreateNew)
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
}

fn create_truncate_empties_an_existing_file(env: &Env) {
    env.create("t").write_all_at(b"contents", 0).unwrap();
    let f = env
        .storage
        .open(&env.path("t"), OpenMode::CreateTruncate)
        .unwrap();
    assert_eq!(f.len().unwrap(), 0);
    let g = env
        .storage
        .open(&env.path("fresh"), OpenMode::CreateTruncate)
        .unwrap();
    g.write_all_at(b"x", 0).unwrap();
    assert_eq!(read_all(env, "fresh"), b"x");
}

fn open_missing_fails_with_not_found(env: &Env) {
    for mode in [OpenMode::Read, OpenMode::ReadWrite] {
        let err = env.storage.open(&env.path("nope"), mode).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
    let in_missing_dir = env.path("no/such/dir/file");
    for mode in [OpenMode::CreateNew, OpenMode::CreateTruncate] {
        let err = env.storage.open(&in_missing_dir, mode).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}

fn read_only_files_refuse_writes(env: &Env) {
    env.create("ro").write_all_at(b"data", 0).unwrap();
    let f = env.storage.open(&env.path("ro"), OpenMode::Read).unwrap();
    assert!(f.write_all_at(b"more", 0).is_err());
    assert!(
        f.write_batch(
            &[WriteAt {
                offset: 4,
                data: b"x"
            }],
            true
        )
        .is_err()
    );
    assert_eq!(read_all(env, "ro"), b"data");
}

fn map_sees_the_data(env: &Env) {
    let f = env.create("m");
    assert!(f.map().unwrap().is_empty());
    f.write_all_at(b"mapped bytes", 0).unwrap();
    let map = f.map().unwrap();
    assert_eq!(&map[..], b"mapped bytes");
    assert!(format!("{map:?}").contains("12 bytes"));
}

fn remove_file_and_exists(env: &Env) {
    env.create("gone");
    assert!(env.storage.exists(&env.path("gone")).unwrap());
    assert!(env.storage.exists(&env.root).unwrap());
    env.storage.remove_file(&env.path("gone")).unwrap();
    assert!(!env.storage.exists(&env.path("gone")).unwrap());
    assert!(!env.storage.exists(&env.path("missing/below")).unwrap());
    let err = env.storage.remove_file(&env.path("gone")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

fn sync_dir_and_sync_data_succeed(env: &Env) {
    let f = env.create("s");
    f.write_all_at(b"abc", 0).unwrap();
    f.sync_data().unwrap();
    f.write_batch(&[], true).unwrap();
    f.write_batch(&[], false).unwrap();
    env.storage.sync_dir(&env.root).unwrap();
    let err = env
        .storage
        .sync_dir(Path::new(&env.path("absent")))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

fn lock_files_are_created_once_and_never_truncated(env: &Env) {
    let path = env.path("LOCK");
    let first = env.storage.open_lock_file(&path).unwrap();
    first.write_all_at(b"1234\n", 0).unwrap();
    let again = env.storage.open_lock_file(&path).unwrap();
    assert_eq!(
        again.len().unwrap(),
        5,
        "opening it again keeps its content"
    );
    assert_eq!(read_all(env, "LOCK"), b"1234\n");
    let err = env
        .storage
        .open_lock_file(&env.path("missing/LOCK"))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

fn locks_conflict_between_opens_and_go_with_the_open(env: &Env) {
    let path = env.path("lock");
    let a = env.storage.open_lock_file(&path).unwrap();
    let b = env.storage.open_lock_file(&path).unwrap();
    let reader = env.storage.open(&path, OpenMode::Read).unwrap();
    assert!(a.lock(LockMode::Shared, false).unwrap());
    assert!(
        reader.lock(LockMode::Shared, false).unwrap(),
        "shared locks coexist"
    );
    assert!(
        !b.lock(LockMode::Exclusive, false).unwrap(),
        "in this process too"
    );
    drop(reader);
    assert!(!b.lock(LockMode::Exclusive, false).unwrap());
    drop(a);
    assert!(
        b.lock(LockMode::Exclusive, false).unwrap(),
        "dropping the open released it"
    );
    let c = env.storage.open_lock_file(&path).unwrap();
    assert!(!c.lock(LockMode::Shared, false).unwrap());
    assert!(
        b.lock(LockMode::Shared, true).unwrap(),
        "its holder converts it"
    );
    assert!(c.lock(LockMode::Shared, false).unwrap());
}

fn a_waiting_lock_is_granted_when_the_holder_lets_go(env: &Env) {
    let path = env.path("wait");
    let holder = env.storage.open_lock_file(&path).unwrap();
    assert!(holder.lock(LockMode::Exclusive, false).unwrap());
    let waiter = env.storage.open_lock_file(&path).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let got = waiter.lock(LockMode::Exclusive, true).unwrap();
        tx.send(got).unwrap();
        waiter
    });
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(rx.try_recv().is_err(), "it waits while the lock is held");
    drop(holder);
    assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap());
    t.join().unwrap();
}
