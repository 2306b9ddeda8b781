//! Prune gives space back while the journal is one segment: a 64 MiB disk, 8 points of random
//! churn (about 20 MiB of random data each, so the journal, in one default 256 MiB segment, is
//! about 165 MiB), then `replog prune --keep-last 2`. The base moves to point 7; the records of
//! points 1 to 7 are dead, and the prune must release them (seal the open segment around the
//! base and punch a hole over its dead prefix). Measured from allocated blocks (`st_blocks`),
//! at least 60% of the journal must be freed, and both kept points must fail over byte-exact.
//! On a filesystem that cannot punch holes the test says so and checks only the points.
//!
//! Garbage: a small disk whose every point follows several ingests that rewrite most blocks,
//! so most records are overwritten before the point that follows them. A prune that keeps every
//! point frees those records (the open segment is sealed and their whole pages punched), and
//! with `--garbage-ratio 1` it frees none; every point still fails over byte-exact.

mod support;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use support::{json_of, replog_ok};

const DISK_BYTES: u64 = 64 << 20;
const BLOCK_BYTES: u64 = 64 << 10;
const BLOCKS_PER_ROUND: u64 = 320;

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// A small deterministic generator (xorshift64*), so the churn is random but repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// One round of churn: random 64 KiB blocks of the image rewritten with random bytes.
fn churn(image: &Path, rng: &mut Rng) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .expect("the image opens");
    let mut block = vec![0u8; BLOCK_BYTES as usize];
    for _ in 0..BLOCKS_PER_ROUND {
        let at = rng.next() % (DISK_BYTES / BLOCK_BYTES) * BLOCK_BYTES;
        rng.fill(&mut block);
        f.write_all_at(&block, at).expect("written");
    }
    f.sync_all().expect("synced");
}

fn allocated(v: &serde_json::Value, kind: &str) -> u64 {
    v[kind]
        .as_u64()
        .unwrap_or_else(|| panic!("no {kind} in {v}"))
}

/// The vault of the scenario, its point ids and a copy of the image at each of the last two.
fn churned_vault(root: &Path) -> (PathBuf, Vec<(u64, PathBuf)>) {
    let (vault, image) = (root.join("vault"), root.join("disk.raw"));
    fs::File::create(&image)
        .and_then(|f| f.set_len(DISK_BYTES))
        .expect("image created");
    replog_ok(&["init", s(&vault)]);
    replog_ok(&["disk", "add", s(&vault), "d", "--from", s(&image)]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut kept = Vec::new();
    for round in 1..=8u64 {
        churn(&image, &mut rng);
        replog_ok(&["ingest", s(&vault), "d", "--from", s(&image)]);
        let id = json_of(&["point", s(&vault), "--json"])["id"]
            .as_u64()
            .expect("an id");
        if round >= 7 {
            let copy = root.join(format!("expected-{id}.raw"));
            fs::copy(&image, &copy).expect("copied");
            kept.push((id, copy));
        }
    }
    (vault, kept)
}

/// Fails over to point `id` and compares the image with `want`, byte for byte.
fn fails_over_exact(root: &Path, vault: &Path, id: u64, want: &Path) {
    let out = root.join(format!("fo-{id}"));
    replog_ok(&[
        "failover",
        s(vault),
        "--point",
        &id.to_string(),
        "--out",
        s(&out),
    ]);
    let got = fs::read(out.join("d.raw")).expect("the failover image reads");
    assert!(
        got == fs::read(want).expect("the kept copy reads"),
        "point {id} does not fail over byte-exact"
    );
    fs::remove_dir_all(&out).expect("removed");
}

#[test]
fn prune_keep_last_2_frees_most_of_a_one_segment_journal_and_keeps_both_points_exact() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, kept) = churned_vault(tmp.path());
    let r = json_of(&["prune", s(&vault), "--keep-last", "2", "--json"]);
    let kept_ids: Vec<u64> = kept.iter().map(|(id, _)| *id).collect();
    assert_eq!(r["kept"], serde_json::json!(kept_ids), "{r}");
    let (before, after) = (&r["allocated_before"], &r["allocated_after"]);
    let (journal_before, journal_after) =
        (allocated(before, "journal"), allocated(after, "journal"));
    eprintln!(
        "journal allocated {journal_before} -> {journal_after} bytes ({:.1}% freed); released the prefix of segments {} ({} bytes); garbage freed {} bytes in segments {}; total {} -> {}",
        journal_before.saturating_sub(journal_after) as f64 * 100.0 / journal_before as f64,
        r["prefixes_released"],
        r["prefix_bytes_released"],
        r["garbage"]["bytes_freed"],
        r["garbage"]["segments"],
        r["disk_usage_before"],
        r["disk_usage_after"]
    );
    assert!(journal_before > 120 << 20, "the journal is too small: {r}");
    if r["release_unsupported"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        eprintln!("note: this filesystem cannot punch holes; nothing could be released: {r}");
    } else {
        let freed = journal_before.saturating_sub(journal_after);
        assert!(
            freed * 100 >= journal_before * 60,
            "only {freed} of {journal_before} journal bytes freed: {r}"
        );
        assert!(r["prefix_bytes_released"].as_u64().unwrap() > 0, "{r}");
        assert_eq!(
            r["bytes_reclaimed"].as_u64().unwrap(),
            allocated(before, "total") - allocated(after, "total")
        );
    }
    for (id, want) in &kept {
        fails_over_exact(tmp.path(), &vault, *id, want);
    }
    replog_ok(&["verify", s(&vault)]);
    // A second prune with nothing to drop changes nothing and still verifies.
    json_of(&["prune", s(&vault), "--keep-last", "2", "--json"]);
    replog_ok(&["verify", s(&vault)]);
    for (id, want) in &kept {
        fails_over_exact(tmp.path(), &vault, *id, want);
    }
}

const SMALL_DISK_BYTES: u64 = 4 << 20;
/// Ingests before each point, each rewriting every other block (so no two changed blocks are
/// adjacent and ingest journals each as a record of its own): the records of all but the last
/// ingest are overwritten before their point, three quarters of the journal.
const INGESTS_PER_POINT: usize = 4;

/// Every even 64 KiB block of the image rewritten with random bytes.
fn churn_even_blocks(image: &Path, rng: &mut Rng) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .expect("the image opens");
    let mut block = vec![0u8; BLOCK_BYTES as usize];
    for at in (0..SMALL_DISK_BYTES).step_by(2 * BLOCK_BYTES as usize) {
        rng.fill(&mut block);
        f.write_all_at(&block, at).expect("written");
    }
    f.sync_all().expect("synced");
}

/// A vault of one 4 MiB disk with 3 points, each after 4 ingests rewriting every other block,
/// and a copy of the image at every point.
fn garbage_vault(root: &Path) -> (PathBuf, Vec<(u64, PathBuf)>) {
    let (vault, image) = (root.join("vault"), root.join("disk.raw"));
    fs::File::create(&image)
        .and_then(|f| f.set_len(SMALL_DISK_BYTES))
        .expect("image created");
    replog_ok(&["init", s(&vault)]);
    replog_ok(&["disk", "add", s(&vault), "d", "--from", s(&image)]);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut points = Vec::new();
    for _ in 0..3 {
        for _ in 0..INGESTS_PER_POINT {
            churn_even_blocks(&image, &mut rng);
            replog_ok(&["ingest", s(&vault), "d", "--from", s(&image)]);
        }
        let id = json_of(&["point", s(&vault), "--json"])["id"]
            .as_u64()
            .expect("an id");
        let copy = root.join(format!("expected-{id}.raw"));
        fs::copy(&image, &copy).expect("copied");
        points.push((id, copy));
    }
    (vault, points)
}

fn unsupported(r: &serde_json::Value) -> bool {
    r["garbage"]["unsupported"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
}

#[test]
fn a_prune_keeping_every_point_frees_only_overwritten_records_unless_the_ratio_is_1() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let (vault, points) = garbage_vault(tmp.path());
    let ids: Vec<u64> = points.iter().map(|(id, _)| *id).collect();
    let keep_all = ["prune", s(&vault), "--keep-last", "100", "--json"];

    // The first prune moves the base to the oldest point (its dead prefix is released); with
    // --garbage-ratio 1 it reclaims no garbage, and neither does a second one, which changes
    // nothing at all.
    let mut disabled = keep_all.to_vec();
    disabled.extend(["--garbage-ratio", "1"]);
    for run in 0..2 {
        let r = json_of(&disabled);
        assert_eq!(r["kept"], serde_json::json!(ids), "{r}");
        assert_eq!(r["garbage"]["segments"], serde_json::json!([]), "{r}");
        assert_eq!(r["garbage"]["bytes_freed"], 0, "{r}");
        if run == 1 {
            let (before, after) = (&r["allocated_before"], &r["allocated_after"]);
            assert_eq!(
                allocated(before, "journal"),
                allocated(after, "journal"),
                "{r}"
            );
        }
        replog_ok(&["verify", s(&vault)]);
    }

    // The default ratio: the overwritten records are punched, every point stays.
    let r = json_of(&keep_all);
    assert_eq!(r["kept"], serde_json::json!(ids), "{r}");
    assert_eq!(r["dropped"], serde_json::json!([]), "{r}");
    assert_eq!(r["base_lsn_before"], r["base_lsn_after"], "{r}");
    let (before, after) = (&r["allocated_before"], &r["allocated_after"]);
    let (journal_before, journal_after) =
        (allocated(before, "journal"), allocated(after, "journal"));
    let freed = journal_before.saturating_sub(journal_after);
    eprintln!(
        "every point kept: journal allocated {journal_before} -> {journal_after} bytes ({:.1}% freed); garbage listed {} bytes in segments {}, freed {} bytes; prefix freed {} bytes",
        freed as f64 * 100.0 / journal_before as f64,
        r["garbage"]["dead_bytes_listed"],
        r["garbage"]["segments"],
        r["garbage"]["bytes_freed"],
        r["prefix_bytes_released"],
    );
    assert!(
        r["garbage"]["segments"]
            .as_array()
            .is_some_and(|a| !a.is_empty()),
        "no segment reclaimed: {r}"
    );
    assert_eq!(r["prefix_bytes_released"], 0, "{r}");
    if unsupported(&r) {
        eprintln!("note: this filesystem cannot punch holes; nothing could be freed: {r}");
    } else {
        let garbage_freed = r["garbage"]["bytes_freed"].as_u64().expect("a number");
        assert!(garbage_freed > 0, "{r}");
        assert!(
            freed * 100 >= journal_before * 40,
            "only {freed} of {journal_before} journal bytes freed: {r}"
        );
    }
    for (id, want) in &points {
        fails_over_exact(tmp.path(), &vault, *id, want);
    }
    replog_ok(&["verify", s(&vault)]);
    // Run again: nothing more is dead, nothing changes, and it still verifies.
    let r = json_of(&keep_all);
    assert_eq!(r["garbage"]["segments"], serde_json::json!([]), "{r}");
    replog_ok(&["verify", s(&vault)]);
    for (id, want) in &points {
        fails_over_exact(tmp.path(), &vault, *id, want);
    }
}
