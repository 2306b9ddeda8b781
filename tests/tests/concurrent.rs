//! Readers running while the writer appends, seals segments and takes points: a reader that
//! opens the vault at any moment and reads any point it lists sees exactly that point's bytes.
//! Real files, every backend; `REPLOG_STRESS` multiplies the iterations.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use replog_reader::Vault;
use replog_tests::backends;
use replog_writer::{PointKind, VaultSettings, Writer};
use xxhash_rust::xxh3::xxh3_128;

const DISK_BYTES: usize = 1 << 20;

fn stress() -> u64 {
    std::env::var("REPLOG_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[test]
fn a_reader_at_point_p_sees_exactly_p_while_the_writer_appends_and_seals() {
    for b in backends(1).into_iter().filter(|b| b.sim.is_none()) {
        let dir = b.root.join("vault");
        let settings = VaultSettings {
            block_bytes: 4096,
            segment_bytes: 128 << 10,
            ..VaultSettings::default()
        };
        let mut w = Writer::create(b.storage.clone(), &dir, settings).unwrap();
        let disk = w.add_disk("d", DISK_BYTES as u64).unwrap();
        w.point(PointKind::CrashConsistent, "empty").unwrap();
        // (point id, hash of the disk at it), published after the point is acknowledged.
        let published = Arc::new(Mutex::new(vec![(1u64, xxh3_128(&vec![0u8; DISK_BYTES]))]));
        let done = Arc::new(AtomicBool::new(false));
        let points_target = 150 * stress();

        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (storage, dir, published, done) = (
                    b.storage.clone(),
                    dir.clone(),
                    published.clone(),
                    done.clone(),
                );
                std::thread::spawn(move || {
                    let mut rng = SmallRng::seed_from_u64(r);
                    let (mut opens, mut checked) = (0u64, 0u64);
                    while !done.load(Ordering::Relaxed) {
                        let vault = Vault::open(storage.clone(), &dir)
                            .expect("a reader opens the vault while it is written");
                        opens += 1;
                        let known = published.lock().unwrap().clone();
                        let listed = vault.points();
                        let p = &listed[rng.random_range(0..listed.len())];
                        let Some((_, want)) = known.iter().find(|(id, _)| *id == p.point_id) else {
                            continue;
                        };
                        let view = vault.view(p).expect("view of a listed point");
                        let mut buf = vec![0u8; DISK_BYTES];
                        view.disks()[0]
                            .read_at(0, &mut buf)
                            .expect("read of a listed point");
                        assert_eq!(
                            xxh3_128(&buf),
                            *want,
                            "point {} read back different bytes",
                            p.point_id
                        );
                        checked += 1;
                    }
                    (opens, checked)
                })
            })
            .collect();

        let mut model = vec![0u8; DISK_BYTES];
        let mut rng = SmallRng::seed_from_u64(99);
        for _ in 0..points_target {
            for _ in 0..rng.random_range(1..8) {
                let len = rng.random_range(1..32 << 10);
                let at = rng.random_range(0..DISK_BYTES - len);
                let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                w.write(disk.disk_id, at as u64, &data).unwrap();
                model[at..at + len].copy_from_slice(&data);
            }
            let p = w.point(PointKind::CrashConsistent, "").unwrap();
            published
                .lock()
                .unwrap()
                .push((p.point_id, xxh3_128(&model)));
        }
        done.store(true, Ordering::Relaxed);
        let (mut opens, mut checked) = (0, 0);
        for r in readers {
            let (o, c) = r.join().expect("a reader thread panicked");
            opens += o;
            checked += c;
        }
        w.close().unwrap();
        let segments = Vault::open(b.storage.clone(), &dir)
            .unwrap()
            .stats()
            .unwrap()
            .segments;
        assert!(segments > 3, "the writer sealed segments during the run");
        assert!(checked > 0, "the readers checked points");
        eprintln!(
            "concurrent ({}): {points_target} points written over {segments} segments; readers opened the vault {opens} times and read {checked} points exactly, 0 violations",
            b.name
        );
    }
}
