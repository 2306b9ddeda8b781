//! Prune gives space back while the journal is one segment: a 64 MiB disk, 8 points of random
//! churn (about 20 MiB of random data each, so the journal, in one default 256 MiB segment, is
//! about 165 MiB), then `replog prune --keep-last 2`. The base moves to point 7; the records of
//! points 1 to 7 are dead, and the prune must release them (seal the open segment around the
//! base and punch a hole over its dead prefix). Measured from allocated blocks (`st_blocks`),
//! at least 60% of the journal must be freed, and both kept points must fail over byte-exact.
//! On a filesystem that cannot punch holes the test says so and checks only the points.

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
        "journal allocated {journal_before} -> {journal_after} bytes; released segments {} ({} bytes); total {} -> {}",
        r["prefixes_released"],
        r["prefix_bytes_released"],
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
