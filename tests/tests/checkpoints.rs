//! Checkpoint indexes: a view that starts from a checkpoint reads exactly what a replay of the
//! whole journal reads, at every point, on every backend; a damaged checkpoint is passed over
//! (reads stay exact) and `verify` names it.

use std::path::Path;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use replog_format::checkpoint::{CheckpointPiece, PieceSource, RecordPiece};
use replog_format::layout;
use replog_io::Storage;
use replog_reader::checkpoint::CheckpointIndex;
use replog_reader::extent_map::Source;
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

/// The pieces of `view`'s disk at `position` that do not read the base, as a checkpoint holds
/// them (segment ids, not indices), adjacent pieces that read on from each other joined.
fn view_pieces(
    vault: &Vault,
    view: &replog_reader::PointView,
    position: usize,
) -> Vec<CheckpointPiece> {
    let ids: Vec<u64> = vault
        .manifest()
        .segments
        .iter()
        .map(|s| s.segment_id)
        .collect();
    let pieces = view.disks()[position]
        .extent_map()
        .iter()
        .filter_map(|(start, p)| {
            let source = match p.source {
                Source::Base => return None,
                Source::Zero => PieceSource::Zero,
                Source::Record(r) => PieceSource::Record(RecordPiece {
                    segment_id: ids[r.segment_index as usize],
                    record_offset: r.record_offset,
                    lsn: r.lsn,
                    length: r.length,
                    stored_len: r.stored_len,
                    record_crc: r.record_crc,
                    flags: r.flags,
                    data_offset: r.data_offset,
                }),
            };
            Some(CheckpointPiece {
                start,
                len: p.end - start,
                source,
            })
        });
    joined(pieces)
}

/// `pieces` with each that reads on from the one before (zeros after zeros, the same record's
/// next bytes) joined to it.
fn joined(pieces: impl IntoIterator<Item = CheckpointPiece>) -> Vec<CheckpointPiece> {
    let mut out: Vec<CheckpointPiece> = Vec::new();
    for p in pieces {
        if let Some(last) = out.last_mut()
            && last.start + last.len == p.start
        {
            let reads_on = match (last.source, p.source) {
                (PieceSource::Zero, PieceSource::Zero) => true,
                (PieceSource::Record(a), PieceSource::Record(b)) => {
                    RecordPiece {
                        data_offset: b.data_offset,
                        ..a
                    } == b
                        && u64::from(a.data_offset) + last.len == u64::from(b.data_offset)
                }
                _ => false,
            };
            if reads_on {
                last.len += p.len;
                continue;
            }
        }
        out.push(p);
    }
    out
}

/// Checks checkpoint `lsn` against `view` (a replay of the journal to the same LSN): every
/// disk's pieces, lookups at random offsets and iterations over random ranges agree.
fn check_index_against_view(
    vault: &Vault,
    view: &replog_reader::PointView,
    lsn: u64,
    rng: &mut SmallRng,
) {
    let index = CheckpointIndex::open(
        vault.storage().as_ref(),
        vault.dir(),
        vault.header().vault_id,
        replog_format::vault_seed(&vault.header().vault_id),
        lsn,
    )
    .unwrap();
    assert_eq!(index.disks().len(), view.disks().len(), "LSN {lsn}");
    for (position, disk) in view.disks().iter().enumerate() {
        let disk_id = disk.entry().disk_id;
        let want = view_pieces(vault, view, position);
        let all: Vec<_> = index
            .pieces(disk_id, 0..u64::MAX)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            joined(all.iter().copied()),
            want,
            "LSN {lsn} disk {disk_id}"
        );
        assert_eq!(index.disk(disk_id).unwrap().disk_bytes, disk.size());
        for _ in 0..200 {
            let offset = rng.random_range(0..disk.size() + 4096);
            let found = index.lookup(disk_id, offset).unwrap();
            let expected = all.iter().find(|p| p.start + p.len > offset).copied();
            assert_eq!(found, expected, "LSN {lsn} disk {disk_id} offset {offset}");
            if let Some(p) = found
                && p.start <= offset
            {
                // The piece covering `offset` reads what the view reads there.
                let covering = want
                    .iter()
                    .find(|w| w.start <= offset && offset < w.start + w.len);
                assert!(
                    covering.is_some(),
                    "LSN {lsn} offset {offset}: {p:?} not in the view"
                );
            }
            let end = offset + rng.random_range(1..64 << 10);
            let range: Vec<_> = index
                .pieces(disk_id, offset..end)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let expected: Vec<_> = all
                .iter()
                .filter(|p| p.start + p.len > offset && p.start < end)
                .copied()
                .collect();
            assert_eq!(
                range, expected,
                "LSN {lsn} disk {disk_id} range {offset}..{end}"
            );
        }
    }
}

/// For several random vaults: checkpoints written incrementally (each from the one before, and
/// in small steps with intermediate checkpoints) hold exactly the maps of a replay of the
/// journal, and their in-place lookups and range iterations agree with those maps.
#[test]
fn incremental_checkpoints_and_their_lookups_agree_with_a_replay() {
    for seed in [21, 22, 23] {
        let b = backends(seed).pop().expect("the simulated backend");
        let dir = b.root.join("vault");
        let model = workload(&b.storage, &dir, seed);
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let ends = vault.sealed_segment_ends();
        assert!(
            ends.len() >= 5,
            "seed {seed}: {} sealed segments",
            ends.len()
        );
        // Replays, before any checkpoint exists.
        let replays: Vec<_> = ends
            .iter()
            .map(|&e| vault.view_at_lsn(e).unwrap())
            .collect();
        let mut rng = SmallRng::seed_from_u64(seed);
        // One from the base, one incremental from it, then the rest in steps of ~2 segments.
        let first = checkpoint::write(&vault, ends[1]).unwrap();
        assert_eq!(first.lsn, ends[1]);
        checkpoint::write(&vault, ends[2]).unwrap();
        let step = (ends[4] - ends[2]) / 2;
        let last = *ends.last().unwrap();
        let written = checkpoint::write_in_steps(&vault, last, step).unwrap();
        assert!(written.len() >= 2, "seed {seed}: {written:?}");
        assert_eq!(written.last().unwrap().lsn, last);
        for (i, &e) in ends.iter().enumerate() {
            if checkpoints(b.storage.as_ref(), &dir).contains(&format!("{e:016x}.idx")) {
                check_index_against_view(&vault, &replays[i], e, &mut rng);
            }
        }
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let violations = check_listed_points(&vault, &model);
        assert!(violations.is_empty(), "seed {seed}: {violations:?}");
        assert!(verify(b.storage.as_ref(), &dir).is_intact(), "seed {seed}");
    }
}

/// Maintenance keeps the index directory from growing: after many checkpoints, the thinned
/// set stays, the newest two among them, and views still read exactly.
#[test]
fn maintenance_thins_the_index_directory() {
    let b = backends(31).pop().expect("the simulated backend");
    let dir = b.root.join("vault");
    let model = workload(&b.storage, &dir, 31);
    let vault = Vault::open(b.storage.clone(), &dir).unwrap();
    let ends = vault.sealed_segment_ends();
    for &e in &ends {
        checkpoint::write(&vault, e).unwrap();
    }
    assert_eq!(checkpoints(b.storage.as_ref(), &dir).len(), ends.len());
    assert_eq!(checkpoint::maintain(&vault, u64::MAX).unwrap(), None);
    let left: Vec<u64> = {
        let mut l: Vec<u64> = checkpoints(b.storage.as_ref(), &dir)
            .iter()
            .filter_map(|n| layout::parse_checkpoint_file_name(n))
            .collect();
        l.sort_unstable();
        l
    };
    assert_eq!(checkpoint::thinned(&left), Vec::<u64>::new());
    assert!(left.len() < ends.len(), "{left:?} of {ends:?}");
    assert_eq!(&left[left.len() - 2..], &ends[ends.len() - 2..]);
    let vault = Vault::open(b.storage.clone(), &dir).unwrap();
    assert!(check_listed_points(&vault, &model).is_empty());
}

/// A version 1 checkpoint (the format before blocks) is ignored by views, noted (not damage)
/// by `verify`, and removed and rewritten by maintenance.
#[test]
fn an_older_format_checkpoint_is_ignored_noted_and_rewritten() {
    let b = backends(32).pop().expect("the simulated backend");
    let dir = b.root.join("vault");
    let model = workload(&b.storage, &dir, 32);
    let vault = Vault::open(b.storage.clone(), &dir).unwrap();
    let newest = *vault.sealed_segment_ends().last().unwrap();
    let info = checkpoint::write(&vault, newest).unwrap();
    let file = b
        .storage
        .open(&info.path, replog_io::OpenMode::ReadWrite)
        .unwrap();
    // Version 1 at byte 8, and its header CRC made right again.
    let mut page = vec![0u8; 4096];
    file.read_exact_at(&mut page, 0).unwrap();
    page[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = replog_format::crc32_seeded(
        replog_format::vault_seed(&vault.header().vault_id),
        &[&page[..4092]],
    );
    page[4092..].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(&page, 0).unwrap();
    drop(file);
    let vault = Vault::open(b.storage.clone(), &dir).unwrap();
    assert_eq!(
        vault
            .view_at_lsn(vault.last_lsn())
            .unwrap()
            .checkpoint_lsn(),
        None
    );
    let report = verify(b.storage.as_ref(), &dir);
    assert!(report.is_intact(), "{:?}", report.findings());
    assert!(
        report
            .findings()
            .iter()
            .any(|f| f.message.contains("older checkpoint format")),
        "{:?}",
        report.findings()
    );
    let rewritten = checkpoint::maintain(&vault, 1).unwrap().expect("rewritten");
    assert_eq!(rewritten.lsn, newest);
    let vault = Vault::open(b.storage.clone(), &dir).unwrap();
    assert_eq!(
        vault
            .view_at_lsn(vault.last_lsn())
            .unwrap()
            .checkpoint_lsn(),
        Some(newest)
    );
    assert!(check_listed_points(&vault, &model).is_empty());
}

/// A damaged newest checkpoint is passed over for the one before it, not for a replay of the
/// whole journal.
#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_one_before() {
    let b = backends(33).pop().expect("the simulated backend");
    let dir = b.root.join("vault");
    let model = workload(&b.storage, &dir, 33);
    let vault = Vault::open(b.storage.clone(), &dir).unwrap();
    let ends = vault.sealed_segment_ends();
    let (older, newest) = (ends[ends.len() - 3], ends[ends.len() - 1]);
    checkpoint::write(&vault, older).unwrap();
    let info = checkpoint::write(&vault, newest).unwrap();
    let file = b
        .storage
        .open(&info.path, replog_io::OpenMode::ReadWrite)
        .unwrap();
    let at = file.len().unwrap() - 100;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 1], at).unwrap();
    let vault = Vault::open(b.storage.clone(), &dir).unwrap();
    let view = vault.view_at_lsn(vault.last_lsn()).unwrap();
    assert_eq!(view.checkpoint_lsn(), Some(older));
    assert!(check_listed_points(&vault, &model).is_empty());
}
