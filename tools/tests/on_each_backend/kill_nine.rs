//! `kill -9` of a real `replog` process under load, hundreds of times: every point the process
//! acknowledged (printed after `Writer::point` returned) survives, every listed point reads back
//! exactly as the deterministic load says the disk was at its LSN, and the next command opens the
//! vault with no manual repair. `REPLOG_KILL_CYCLES` sets the number of cycles (default 200).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use replog::load::{TortureOp, op};
use xxhash_rust::xxh3::xxh3_128;

const DISK_BYTES: u64 = 4 << 20;

fn replog(args: &[&str]) {
    let out = super::replog_command()
        .args(args)
        .output()
        .expect("replog runs");
    assert!(
        out.status.success(),
        "replog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Applies the operations of `seed` from `start_lsn` up to `last_lsn` to `disk`, recording the
/// disk's hash at each point.
fn replay(
    disk: &mut [u8],
    seed: u64,
    start_lsn: u64,
    last_lsn: u64,
    points: &mut Vec<(u64, u128)>,
) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut lsn = start_lsn;
    while lsn <= last_lsn {
        match op(&mut rng, DISK_BYTES) {
            TortureOp::Write(at, data) => {
                disk[at as usize..at as usize + data.len()].copy_from_slice(&data)
            }
            TortureOp::Zero(at, len) => disk[at as usize..(at + len) as usize].fill(0),
            TortureOp::Point => points.push((lsn, xxh3_128(disk))),
        }
        lsn += 1;
    }
}

fn disk_hash_at(vault: &replog_reader::Vault, lsn: u64) -> u128 {
    let p = vault
        .points()
        .iter()
        .find(|p| p.lsn == lsn)
        .unwrap_or_else(|| panic!("no point at LSN {lsn}"));
    let view = vault.view(p).expect("view");
    let mut buf = vec![0u8; DISK_BYTES as usize];
    view.disks()[0].read_at(0, &mut buf).expect("read");
    xxh3_128(&buf)
}

#[test]
fn acknowledged_points_survive_kill_9_of_a_real_process_under_load() {
    let cycles: u64 = std::env::var("REPLOG_KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let tmp = tempfile::tempdir().unwrap();
    let vault_dir = tmp.path().join("vault");
    let v = vault_dir.to_str().unwrap();
    replog(&[
        "init",
        v,
        "--segment-size",
        "256KiB",
        "--block-size",
        "4KiB",
    ]);
    replog(&["disk", "add", v, "d", "--size", "4MiB"]);
    let mut disk = vec![0u8; DISK_BYTES as usize];
    let mut point_hashes: Vec<(u64, u128)> = Vec::new();
    let mut acked_total = 0;
    let mut rng = SmallRng::seed_from_u64(9);
    for cycle in 0..cycles {
        let seed = 1000 + cycle;
        let mut child = super::replog_command()
            .args(["torture", v, "d", "--seed", &seed.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("replog torture starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().map(|l| l.unwrap()).unwrap_or_default();
        let Some(start) = first
            .strip_prefix("start ")
            .map(|s| s.parse::<u64>().unwrap())
        else {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("cycle {cycle}: the next command needed repair: {err}");
        };
        std::thread::sleep(Duration::from_millis(rng.random_range(0..60)));
        child.kill().expect("SIGKILL");
        let acked: Vec<u64> = lines
            .map_while(Result::ok)
            .filter_map(|l| l.split(' ').nth(2).map(|s| s.parse().unwrap()))
            .collect();
        child.wait().unwrap();
        acked_total += acked.len();

        let vault = replog_reader::Vault::open(replog_io::backend("sync").unwrap(), Path::new(v))
            .unwrap_or_else(|e| {
                panic!("cycle {cycle}: the vault does not open after kill -9: {e}")
            });
        let last = vault.last_lsn();
        for lsn in &acked {
            assert!(
                *lsn <= last,
                "cycle {cycle}: acknowledged point at LSN {lsn} lost (journal ends at {last})"
            );
        }
        let before = point_hashes.len();
        replay(&mut disk, seed, start, last, &mut point_hashes);
        let listed: Vec<u64> = vault.points().iter().map(|p| p.lsn).collect();
        assert_eq!(
            listed,
            point_hashes.iter().map(|p| p.0).collect::<Vec<_>>(),
            "cycle {cycle}: listed points differ from the load's"
        );
        for (lsn, hash) in &point_hashes[before..] {
            assert_eq!(
                disk_hash_at(&vault, *lsn),
                *hash,
                "cycle {cycle}: point at LSN {lsn} reads back wrong"
            );
        }
        if let Some((lsn, hash)) = point_hashes.get(rng.random_range(0..point_hashes.len().max(1)))
        {
            assert_eq!(
                disk_hash_at(&vault, *lsn),
                *hash,
                "cycle {cycle}: older point at LSN {lsn} reads back wrong"
            );
        }
    }
    // The next writing command recovers on its own; the vault is then intact.
    replog(&["point", v, "--label", "after the last kill"]);
    replog(&["verify", v]);
    eprintln!(
        "kill -9: {cycles} cycles, {acked_total} acknowledged points, {} points listed and checked, 0 violations",
        point_hashes.len()
    );
}
