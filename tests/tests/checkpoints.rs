//! Checkpoint indexes: a view that starts from a checkpoint reads exactly what a replay of the
//! whole journal reads, at every point, on every backend; a damaged checkpoint is passed over
//! (reads stay exact) and `verify` names it.

use std::path::Path;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use replog_format::layout;
use replog_io::Storage;
use replog_reader::{Vault, checkpoint, verify};
use replog_tests::{PointModel, backends, check_listed_points, noise};
use replog_writer::{PointKind, VaultSettings, Writer};

const DISK_BYTES: u64 = 256 << 10;

/// Random writes and zero ranges over two disks (one added later), a point every few
/// operations, small segments so that many seal. Returns the model.
fn workload(storage: &Arc<dyn Storage>, dir: &Path, seed: u64) -> PointModel {
    let settings = VaultSettings {
        block_bytes: 4096,
        segment_bytes: 64 << 10,
        ..VaultSettings::default()
    };
    let mut w = Writer::create(storage.clone(), dir, settings).unwrap();
    let mut model = PointModel::default();
    let a = w.add_disk("a", DISK_BYTES).unwrap();
    model.add_disk(a.disk_id, vec![0; DISK_BYTES as usize]);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut disks = vec![a.disk_id];
    for op in 0..600u64 {
        if op == 200 {
            let b = w.add_disk("b", DISK_BYTES / 2).unwrap();
            model.add_disk(b.disk_id, vec![0; (DISK_BYTES / 2) as usize]);
            disks.push(b.disk_id);
        }
        let disk = disks[rng.random_range(0..disks.len())];
        let size = model.disks[&disk].len() as u64;
        let len = rng.random_range(1..=3 * 4096u64).min(size);
        let offset = rng.random_range(0..=size - len);
        if rng.random_bool(0.15) {
            w.zero(disk, offset, len).unwrap();
            model.zero(disk, offset, len);
        } else {
            let data = noise(seed * 1000 + op, len as usize);
            w.write(disk, offset, &data).unwrap();
            model.write(disk, offset, &data);
        }
        if op % 7 == 6 {
            model.point(&mut w, "").unwrap();
        }
    }
    w.close().unwrap();
    model
}

fn checkpoints(storage: &dyn Storage, dir: &Path) -> Vec<String> {
    storage
        .read_dir(&dir.join(layout::INDEX_DIR))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".idx"))
        .collect()
}

#[test]
fn views_from_checkpoints_read_exactly_what_a_replay_reads() {
    for b in backends(7) {
        let dir = b.root.join("vault");
        let model = workload(&b.storage, &dir, 3);
        let replayed = Vault::open(b.storage.clone(), &dir).unwrap();
        assert!(check_listed_points(&replayed, &model).is_empty());
        // Maintenance writes one checkpoint at the end of the newest sealed segment, and then
        // nothing until enough new LSNs are sealed.
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let newest = *vault.sealed_segment_ends().last().unwrap();
        let info = checkpoint::maintain(&vault, 40)
            .unwrap()
            .expect("a checkpoint");
        assert_eq!(info.lsn, newest);
        assert!(info.pieces > 0, "{info:?}");
        assert_eq!(checkpoint::maintain(&vault, 40).unwrap(), None);
        assert_eq!(checkpoints(b.storage.as_ref(), &dir).len(), 1);
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let violations = check_listed_points(&vault, &model);
        assert!(violations.is_empty(), "{}: {violations:?}", b.name);
        let latest = vault.view_at_lsn(vault.last_lsn()).unwrap();
        assert_eq!(latest.checkpoint_lsn(), Some(newest), "{}", b.name);
        assert!(verify(b.storage.as_ref(), &dir).is_intact(), "{}", b.name);
    }
}

#[test]
fn every_sealed_segment_end_can_hold_a_checkpoint_and_views_stay_exact() {
    for b in backends(8).into_iter().filter(|b| b.name != "uring") {
        let dir = b.root.join("vault");
        let model = workload(&b.storage, &dir, 5);
        let ends: Vec<u64> = {
            let vault = Vault::open(b.storage.clone(), &dir).unwrap();
            vault.sealed_segment_ends()
        };
        assert!(
            ends.len() >= 5,
            "{}: only {} sealed segments",
            b.name,
            ends.len()
        );
        for &lsn in &ends {
            let vault = Vault::open(b.storage.clone(), &dir).unwrap();
            checkpoint::write(&vault, lsn).unwrap();
        }
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let violations = check_listed_points(&vault, &model);
        assert!(violations.is_empty(), "{}: {violations:?}", b.name);
        // A view at an LSN that is not a segment end, and one exactly at a checkpoint.
        for lsn in [ends[2], ends[2] + 1, vault.last_lsn()] {
            let view = vault.view_at_lsn(lsn).unwrap();
            let expected = ends.iter().copied().filter(|&e| e <= lsn).max();
            assert_eq!(view.checkpoint_lsn(), expected, "{} LSN {lsn}", b.name);
        }
    }
}

#[test]
fn a_damaged_checkpoint_is_passed_over_and_verify_names_it() {
    for b in backends(9).into_iter().filter(|b| b.name != "uring") {
        let dir = b.root.join("vault");
        let model = workload(&b.storage, &dir, 11);
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let lsn = *vault.sealed_segment_ends().last().unwrap();
        let info = checkpoint::write(&vault, lsn).unwrap();
        drop(vault);
        let file = b
            .storage
            .open(&info.path, replog_io::OpenMode::ReadWrite)
            .unwrap();
        let len = file.len().unwrap();
        // Flip a byte in the header, then (separately) in the body.
        for at in [40, len - 10] {
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at).unwrap();
            file.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
            let vault = Vault::open(b.storage.clone(), &dir).unwrap();
            let violations = check_listed_points(&vault, &model);
            assert!(
                violations.is_empty(),
                "{} byte {at}: {violations:?}",
                b.name
            );
            let latest = vault.view_at_lsn(vault.last_lsn()).unwrap();
            assert_eq!(latest.checkpoint_lsn(), None, "{} byte {at}", b.name);
            let report = verify(b.storage.as_ref(), &dir);
            assert!(!report.is_intact(), "{} byte {at}", b.name);
            let named = report
                .findings()
                .iter()
                .any(|f| f.path.to_string_lossy().contains(".idx"));
            assert!(named, "{} byte {at}: {:?}", b.name, report.findings());
            file.write_all_at(&byte, at).unwrap();
        }
        assert!(verify(b.storage.as_ref(), &dir).is_intact());
    }
}

/// A compaction after checkpoints were written: views from a checkpoint whose pieces now lie
/// partly in the new base read exactly, and maintenance removes checkpoints below the base.
#[test]
fn checkpoints_stay_exact_across_a_compaction() {
    for b in backends(10).into_iter().filter(|b| b.name != "uring") {
        let dir = b.root.join("vault");
        let model = workload(&b.storage, &dir, 13);
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let ends = vault.sealed_segment_ends();
        for &lsn in &ends {
            checkpoint::write(&vault, lsn).unwrap();
        }
        let kept = vault.points().len() / 3;
        drop(vault);
        let mut w = Writer::open(b.storage.clone(), &dir).unwrap();
        let report = w
            .prune(&replog_writer::PruneOptions {
                keep_last: Some(kept),
                ..Default::default()
            })
            .unwrap();
        assert!(report.compaction.is_some(), "{}: {report:?}", b.name);
        w.close().unwrap();
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        assert!(vault.base_lsn() > ends[0], "{}", b.name);
        assert_eq!(vault.points().len(), kept, "{}", b.name);
        let violations = check_listed_points(&vault, &model);
        assert!(violations.is_empty(), "{}: {violations:?}", b.name);
        let newest = vault.view_at_lsn(vault.last_lsn()).unwrap();
        assert!(newest.checkpoint_lsn().is_some(), "{}", b.name);
        assert!(verify(b.storage.as_ref(), &dir).is_intact(), "{}", b.name);
        checkpoint::maintain(&vault, u64::MAX).unwrap();
        let left = checkpoints(b.storage.as_ref(), &dir);
        let base = vault.base_lsn();
        for name in &left {
            let lsn = layout::parse_checkpoint_file_name(name).unwrap();
            assert!(
                lsn >= base,
                "{}: {name} is below the base LSN {base}",
                b.name
            );
        }
        assert!(left.len() < ends.len(), "{}: {left:?}", b.name);
    }
}

/// Regression (found by the independent reader's tests): a checkpoint at exactly the LSN a
/// compaction moved the base to names the segment that ended there, which compaction drops
/// (it drops every segment ending at or below the base). `verify` called it damage ("does not
/// end a sealed segment") and maintenance, which removed only checkpoints below the base, kept
/// it forever. It is now superseded like those below the base: a note, then removed.
#[test]
fn a_checkpoint_at_the_new_base_lsn_is_superseded_not_damage() {
    for b in backends(12).into_iter().filter(|b| b.name != "uring") {
        let dir = b.root.join("vault");
        let mut w = Writer::create(b.storage.clone(), &dir, VaultSettings::default()).unwrap();
        let disk = w.add_disk("os", DISK_BYTES).unwrap().disk_id;
        w.write(disk, 0, &[1u8; 4096]).unwrap();
        w.point(PointKind::CrashConsistent, "p1").unwrap();
        w.write(disk, 4096, &[2u8; 4096]).unwrap();
        let p2 = w.point(PointKind::CrashConsistent, "p2").unwrap();
        assert!(w.seal_segment().unwrap(), "{}", b.name);
        w.write(disk, 8192, &[3u8; 4096]).unwrap();
        w.point(PointKind::CrashConsistent, "p3").unwrap();
        w.close().unwrap();
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        assert_eq!(vault.sealed_segment_ends(), vec![p2.lsn], "{}", b.name);
        checkpoint::write(&vault, p2.lsn).unwrap();
        drop(vault);
        let mut w = Writer::open(b.storage.clone(), &dir).unwrap();
        w.prune(&replog_writer::PruneOptions {
            keep_last: Some(2),
            ..Default::default()
        })
        .unwrap();
        w.close().unwrap();
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        assert_eq!(vault.base_lsn(), p2.lsn, "{}", b.name);
        let report = verify(b.storage.as_ref(), &dir);
        assert!(report.is_intact(), "{}: {:?}", b.name, report.findings());
        checkpoint::maintain(&vault, u64::MAX).unwrap();
        assert!(
            checkpoints(b.storage.as_ref(), &dir).is_empty(),
            "{}: a checkpoint at the base LSN was kept",
            b.name
        );
    }
}
