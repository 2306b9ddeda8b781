//! Layered views (the journal's tail in memory over a checkpoint on disk) read exactly what
//! in-memory views read: the same pieces, the same bytes, the same materialized images, at every
//! point of random vaults with several checkpoints, zeroed ranges, a resize and a disk added
//! later; and a view over its budget with no checkpoint writes one and lays its tail over it.

use std::path::Path;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use replog_format::layout;
use replog_io::{ContentSum, OpenMode, Storage};
use replog_reader::{
    MaterializeOptions, PointView, ReadOrder, ReadPassOptions, Vault, ViewMode, ViewOptions,
    checkpoint, materialize, read_pass,
};
use replog_tests::{PointModel, backends, check_listed_points, noise};
use replog_writer::{VaultSettings, Writer};

const DISK_BYTES: u64 = 192 << 10;
const LAYERED: ViewOptions = ViewOptions {
    memory_limit_bytes: 0,
};

/// Random writes and zero ranges over two disks (the second added at operation 150, the first
/// grown at operation 300), a point every few operations, small segments so that many seal.
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
    for op in 0..450u64 {
        if op == 150 {
            let b = w.add_disk("b", DISK_BYTES / 2).unwrap();
            model.add_disk(b.disk_id, vec![0; (DISK_BYTES / 2) as usize]);
            disks.push(b.disk_id);
        }
        if op == 300 {
            w.resize_disk("a", 2 * DISK_BYTES).unwrap();
            let content = model.disks.get_mut(&a.disk_id).unwrap();
            content.resize(2 * DISK_BYTES as usize, 0);
        }
        let disk = disks[rng.random_range(0..disks.len())];
        let size = model.disks[&disk].len() as u64;
        let len = rng.random_range(1..=3 * 4096u64).min(size);
        let offset = rng.random_range(0..=size - len);
        if rng.random_bool(0.2) {
            w.zero(disk, offset, len).unwrap();
            model.zero(disk, offset, len);
        } else {
            let data = noise(seed * 1000 + op, len as usize);
            w.write(disk, offset, &data).unwrap();
            model.write(disk, offset, &data);
        }
        if op % 9 == 8 {
            model.point(&mut w, "").unwrap();
        }
    }
    w.close().unwrap();
    model
}

fn checkpoint_names(storage: &dyn Storage, dir: &Path) -> Vec<String> {
    storage
        .read_dir(&dir.join(layout::INDEX_DIR))
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".idx"))
        .collect()
}

/// Every disk's pieces, as `DiskView::pieces` lists them.
fn pieces(view: &PointView) -> Vec<Vec<(u64, replog_reader::extent_map::Piece)>> {
    view.disks()
        .iter()
        .map(|d| {
            d.pieces(0, d.size())
                .collect::<Result<Vec<_>, _>>()
                .unwrap()
        })
        .collect()
}

fn read_file(storage: &dyn Storage, path: &Path) -> Vec<u8> {
    let f = storage.open(path, OpenMode::Read).unwrap();
    let mut buf = vec![0; f.len().unwrap() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn layered_and_in_memory_views_list_the_same_pieces_and_materialize_the_same_images() {
    for b in backends(11) {
        let dir = b.root.join("vault");
        let model = workload(&b.storage, &dir, 5);
        // Checkpoints at a third and two thirds of the journal: points before the first replay
        // from the bases, the others lie over one of them.
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let ends = vault.sealed_segment_ends();
        assert!(ends.len() >= 6, "{} sealed segments", ends.len());
        for at in [ends[ends.len() / 3], ends[2 * ends.len() / 3]] {
            checkpoint::write(&vault, at).unwrap();
        }
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let mut layered_points = 0;
        for (i, p) in vault.points().iter().enumerate() {
            let whole = vault.view(p).unwrap();
            let layered = vault.view_with(p, &LAYERED).unwrap();
            assert_eq!(whole.mode(), ViewMode::InMemory, "point {}", p.point_id);
            if let ViewMode::Layered { checkpoint_lsn } = layered.mode() {
                assert!(checkpoint_lsn <= p.lsn);
                assert_eq!(layered.checkpoint_lsn(), Some(checkpoint_lsn));
                layered_points += 1;
            }
            assert_eq!(pieces(&whole), pieces(&layered), "point {}", p.point_id);
            let want = &model.at_point[&p.lsn];
            for (w, l) in whole.disks().iter().zip(layered.disks()) {
                assert_eq!(l.size(), want[&l.disk_id()].len() as u64);
                let mut got = vec![0u8; l.size() as usize];
                l.read_at(0, &mut got).unwrap();
                assert!(
                    got == want[&l.disk_id()],
                    "point {} disk {}",
                    p.point_id,
                    l.name()
                );
                // Small reads at scattered offsets, as a block device client makes them.
                for at in (0..l.size()).step_by(4096 * 5 + 512) {
                    let len = (l.size() - at).min(7000) as usize;
                    let (mut x, mut y) = (vec![0; len], vec![0; len]);
                    w.read_at(at, &mut x).unwrap();
                    l.read_at(at, &mut y).unwrap();
                    assert!(x == y, "point {} disk {} at {at}", p.point_id, l.name());
                }
            }
            // Every third point through materialize too: in parallel ranges, the view in memory
            // in disk order, the layered one in journal order (`ReadOrder::Auto`).
            if i % 3 == 0 {
                let out_w = b.root.join(format!("out-w-{i}"));
                let out_l = b.root.join(format!("out-l-{i}"));
                let opts = MaterializeOptions::default();
                let sw = materialize(&whole, &out_w, &opts).unwrap();
                let sl = materialize(&layered, &out_l, &opts).unwrap();
                assert_eq!(sw.written_bytes, sl.written_bytes);
                for (dw, dl) in sw.disks.iter().zip(&sl.disks) {
                    let bytes = read_file(b.storage.as_ref(), &dl.path);
                    assert!(bytes == want[&model_id(&layered, &dl.name)]);
                    assert!(bytes == read_file(b.storage.as_ref(), &dw.path));
                }
                // The read pass alone (`bench read`) walks both views in both orders to the
                // same data and sums, with nothing written; the journal-order sort writes a
                // run out every 5 pieces.
                for view in [&whole, &layered] {
                    for order in [ReadOrder::Disk, ReadOrder::Journal] {
                        let opts = ReadPassOptions {
                            order,
                            sort_run_pieces: 5,
                            ..ReadPassOptions::default()
                        };
                        let pass = read_pass(view, &opts).unwrap();
                        assert_eq!(pass.data_bytes, sw.written_bytes, "{order:?}");
                        assert_eq!(
                            pass.journal_order_pieces > 0,
                            order == ReadOrder::Journal,
                            "{order:?}"
                        );
                        for (name, sum) in &pass.sums {
                            let mut want_sum = ContentSum::new(sum.key());
                            want_sum.add(0, &want[&model_id(view, name)]);
                            assert_eq!(*sum, want_sum, "point {} disk {name}", p.point_id);
                        }
                    }
                }
            }
        }
        assert!(layered_points > 0, "some points lie over a checkpoint");
        assert!(check_listed_points(&vault, &model).is_empty());
    }
}

fn model_id(view: &PointView, name: &str) -> u32 {
    view.disk(name).unwrap().disk_id()
}

#[test]
fn a_view_over_its_budget_without_a_checkpoint_writes_one_and_lies_over_it() {
    for b in backends(12) {
        let dir = b.root.join("vault");
        let model = workload(&b.storage, &dir, 6);
        assert!(checkpoint_names(b.storage.as_ref(), &dir).is_empty());
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let p = vault.latest_point().unwrap().clone();
        // Under a budget it fits, nothing is written.
        let whole = vault.view(&p).unwrap();
        assert_eq!(whole.mode(), ViewMode::InMemory);
        assert!(checkpoint_names(b.storage.as_ref(), &dir).is_empty());
        let layered = vault.view_with(&p, &LAYERED).unwrap();
        let newest_end = *vault
            .sealed_segment_ends()
            .iter()
            .filter(|&&e| e <= p.lsn)
            .max()
            .unwrap();
        assert_eq!(
            layered.mode(),
            ViewMode::Layered {
                checkpoint_lsn: newest_end
            }
        );
        assert_eq!(
            checkpoint_names(b.storage.as_ref(), &dir),
            [format!("{newest_end:016x}.idx")]
        );
        assert_eq!(pieces(&whole), pieces(&layered));
        for d in layered.disks() {
            let mut got = vec![0u8; d.size() as usize];
            d.read_at(0, &mut got).unwrap();
            assert!(got == model.at_point[&p.lsn][&d.disk_id()]);
        }
        // The checkpoint it wrote is an ordinary one: a new snapshot starts from it, and it
        // holds what a checkpoint written from an in-memory view holds.
        let vault = Vault::open(b.storage.clone(), &dir).unwrap();
        let again = vault.view(&p).unwrap();
        assert_eq!(again.checkpoint_lsn(), Some(newest_end));
        let path = layout::checkpoint_path(&dir, newest_end);
        let written = read_file(b.storage.as_ref(), &path);
        b.storage.remove_file(&path).unwrap();
        checkpoint::write(&vault, newest_end).unwrap();
        assert!(written == read_file(b.storage.as_ref(), &path));
    }
}
