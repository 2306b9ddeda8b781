//! The same reads and images on every storage backend (plain syscalls, io_uring where the kernel
//! allows it, the simulator), and the simulator's faults while writing images.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use replog_io::Storage;
use replog_io::sim::{Fault, FaultError, FaultOp, SimStorage};
use replog_reader::{MaterializeOptions, ReadErrorKind, ReadOrder, materialize};

/// A backend under test: its name, storage, a fresh root directory, and the temporary
/// directory that holds the root on real backends.
type Backend = (
    &'static str,
    Arc<dyn Storage>,
    PathBuf,
    Option<tempfile::TempDir>,
);

/// Every backend available here, each with a fresh root directory.
fn backends() -> Vec<Backend> {
    let mut out = Vec::new();
    for name in ["sync", "uring"] {
        match replog_io::backend(name) {
            Ok(storage) => {
                let tmp = tempfile::tempdir().unwrap();
                out.push((name, storage, tmp.path().to_path_buf(), Some(tmp)));
            }
            Err(e) => eprintln!("note: the {name} backend is unavailable here ({e}); skipped"),
        }
    }
    let sim: Arc<dyn Storage> = sim_storage();
    out.push(("sim", sim, PathBuf::from("/sim"), None));
    out
}

fn sim_storage() -> Arc<SimStorage> {
    let sim = SimStorage::new(7);
    sim.create_dir_all(Path::new("/sim")).unwrap();
    sim.make_all_durable();
    sim
}

fn sim_vault(sim: &Arc<SimStorage>) -> Standard {
    let storage: Arc<dyn Storage> = sim.clone();
    let s = standard_vault_in(VaultBuilder::on(
        storage,
        PathBuf::from("/sim/vault"),
        None,
        4096,
    ));
    sim.make_all_durable();
    s
}

#[test]
fn every_backend_reads_and_materializes_the_same_bytes() {
    for (name, storage, root, tmp) in backends() {
        let s = standard_vault_in(VaultBuilder::on(
            storage.clone(),
            root.join("vault"),
            tmp,
            4096,
        ));
        let vault = open(&s.builder);
        assert_eq!(vault.points().len(), 4, "{name}");
        for point in vault.points() {
            let view = vault.view(point).unwrap();
            let expected = s.builder.expected(point.lsn);
            for disk in view.disks() {
                assert!(
                    read_disk(disk, 1000) == expected[&disk.disk_id()],
                    "{name}: read of {}",
                    disk.name()
                );
            }
            let out = root.join(format!("out-{}", point.point_id));
            // Both ways of checking the placed images (by identity, and by reading back), and
            // both orders of reading the journal, the sort's runs written out every 3 pieces.
            let opts = MaterializeOptions {
                force: false,
                sync: true,
                read_back: point.point_id % 2 == 0,
                order: match point.point_id / 2 % 2 {
                    0 => ReadOrder::Journal,
                    _ => ReadOrder::Disk,
                },
                sort_run_pieces: 3,
            };
            let stats = materialize(&view, &out, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
            for d in &stats.disks {
                assert_eq!(d.sum.is_some(), opts.read_back, "{name}: {}", d.name);
            }
            for d in &stats.disks {
                let want = &expected[&view.disk(&d.name).unwrap().disk_id()];
                assert!(
                    read_file(storage.as_ref(), &d.path) == *want,
                    "{name}: image of {}",
                    d.name
                );
            }
        }
    }
}

#[test]
fn a_synced_image_survives_a_crash_of_the_simulator() {
    let sim = sim_storage();
    let s = sim_vault(&sim);
    let vault = open(&s.builder);
    let view = vault.view(vault.latest_point().unwrap()).unwrap();
    let out = Path::new("/sim/out");
    materialize(
        &view,
        out,
        &MaterializeOptions {
            force: false,
            sync: true,
            ..MaterializeOptions::default()
        },
    )
    .unwrap();
    sim.crash(3);
    for (id, want) in s.builder.expected(12) {
        let name = if id == 1 { "os" } else { "data" };
        let durable = sim.durable_bytes(out.join(format!("{name}.raw")));
        assert!(
            durable.as_ref() == Some(&want),
            "{name}.raw is not durable and exact after a crash"
        );
    }
}

/// Materializing with `fault` injected fails with `kind`, naming a file, and leaves no image
/// or partial file behind.
fn fails_cleanly(fault: Fault, kind: ReadErrorKind) {
    let sim = sim_storage();
    let s = sim_vault(&sim);
    let vault = open(&s.builder);
    let view = vault.view(vault.latest_point().unwrap()).unwrap();
    let out = Path::new("/sim/out");
    sim.inject(fault.clone());
    let e = materialize(
        &view,
        out,
        &MaterializeOptions {
            force: false,
            sync: true,
            ..MaterializeOptions::default()
        },
    )
    .unwrap_err();
    sim.clear_faults();
    assert_eq!(e.kind(), kind, "{fault:?}: {e}");
    assert!(
        e.path().is_some_and(|p| p.starts_with(out)),
        "{fault:?}: {e}"
    );
    let left = sim.read_dir(out).unwrap();
    assert!(left.is_empty(), "{fault:?} left {left:?}");
}

#[test]
fn an_io_error_while_writing_an_image_is_reported_and_cleaned_up() {
    fails_cleanly(
        Fault::once(FaultOp::Write, FaultError::Eio).on_path("os.raw"),
        ReadErrorKind::Io,
    );
    fails_cleanly(
        Fault::once(FaultOp::Write, FaultError::Enospc).on_path("data.raw"),
        ReadErrorKind::Io,
    );
    fails_cleanly(
        Fault::once(FaultOp::SetLen, FaultError::Enospc),
        ReadErrorKind::Io,
    );
}

#[test]
fn a_failed_sync_or_rename_is_reported_and_cleaned_up() {
    fails_cleanly(
        Fault::once(FaultOp::Sync, FaultError::Eio).on_path("data.raw"),
        ReadErrorKind::Io,
    );
    fails_cleanly(
        Fault::once(FaultOp::Rename, FaultError::Eio).on_path("os.raw"),
        ReadErrorKind::Io,
    );
}

#[test]
fn a_crash_at_any_operation_of_materialize_leaves_exact_images_or_none() {
    let count_ops = || {
        let sim = sim_storage();
        let s = sim_vault(&sim);
        let vault = open(&s.builder);
        let view = vault.view(vault.latest_point().unwrap()).unwrap();
        let before = sim.ops();
        materialize(
            &view,
            Path::new("/sim/out"),
            &MaterializeOptions {
                force: false,
                sync: true,
                ..MaterializeOptions::default()
            },
        )
        .unwrap();
        sim.ops() - before
    };
    let ops = count_ops();
    assert!(ops > 5);
    let mut survived = 0;
    for crash_at in 0..=ops {
        for seed in 0..3 {
            let sim = sim_storage();
            let s = sim_vault(&sim);
            let vault = open(&s.builder);
            let view = vault.view(vault.latest_point().unwrap()).unwrap();
            sim.set_crash_at(Some(sim.ops() + crash_at));
            let result = materialize(
                &view,
                Path::new("/sim/out"),
                &MaterializeOptions {
                    force: false,
                    sync: true,
                    ..MaterializeOptions::default()
                },
            );
            // The last operation removes the output directory's lock file, after every image
            // is durable and in place; its failure is not the run's (a lock file left behind
            // is taken over by the next run).
            assert_eq!(
                result.is_ok(),
                crash_at >= ops - 1,
                "crash at operation {crash_at} of {ops}"
            );
            sim.crash(seed);
            for (id, want) in s.builder.expected(12) {
                let name = if id == 1 { "os" } else { "data" };
                if let Some(found) = sim.durable_bytes(format!("/sim/out/{name}.raw")) {
                    assert!(
                        found == want,
                        "{name}.raw survived a crash at operation {crash_at} with wrong bytes"
                    );
                    survived += 1;
                }
            }
        }
    }
    assert!(survived >= 2 * 3, "the images of the completed run survive");
}
