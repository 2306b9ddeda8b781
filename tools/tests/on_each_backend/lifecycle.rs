//! End-to-end tests of retention, prune, test failover and Complete Migration, through the
//! `replog` binary on real raw images made with `qemu-img` and changed with `qemu-io`. After
//! each point the image is copied aside; every point that survives a prune is failed over and
//! compared with `qemu-img compare`. The child runs on its module's backend (`main.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::common::{expect, init_small, s};

const EXIT_OK: i32 = 0;
const EXIT_FAILED: i32 = 1;

fn json(args: &[&str]) -> Value {
    let out = expect(EXIT_OK, args).stdout;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("invalid JSON ({e}): {out}"))
}

fn tool(name: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name} cannot be run ({e}); run scripts/setup.sh to install qemu-utils")
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_some_and(|c| c <= 1)
            && !stdout.contains("failed")
            && !stderr.contains("failed"),
        "`{name} {}` failed: {stdout}{stderr}",
        args.join(" ")
    );
    out
}

fn qemu_io(image: &Path, commands: &[String]) {
    let mut args = vec!["-f", "raw"];
    for c in commands {
        args.extend(["-c", c.as_str()]);
    }
    args.push(s(image));
    tool("qemu-io", &args);
}

fn identical(a: &Path, b: &Path) -> bool {
    let out = tool(
        "qemu-img",
        &["compare", "-q", "-f", "raw", "-F", "raw", s(a), s(b)],
    );
    out.status.code() == Some(0)
}

/// A vault with disks `os` (4 MiB) and `data` (2 MiB), 64 KiB segments and 4 KiB blocks, and
/// `points` rounds: each rewrites the same region of `os` with a new pattern (churn), writes a
/// new place of `data`, ingests both and takes a point (every third one app-consistent). The
/// images at each point are kept in `expected/<id>/`.
struct Scenario {
    root: PathBuf,
    vault: PathBuf,
    images: [PathBuf; 2],
    round: u64,
}

impl Scenario {
    fn new(root: &Path, points: u64) -> Scenario {
        let vault = root.join("vault");
        let images = [root.join("os.raw"), root.join("data.raw")];
        for (img, size) in images.iter().zip(["4M", "2M"]) {
            tool("qemu-img", &["create", "-q", "-f", "raw", s(img), size]);
        }
        init_small(&vault);
        for (img, name) in images.iter().zip(["os", "data"]) {
            expect(EXIT_OK, &["disk", "add", s(&vault), name, "--from", s(img)]);
        }
        let mut sc = Scenario {
            root: root.to_path_buf(),
            vault,
            images,
            round: 0,
        };
        for _ in 0..points {
            sc.point();
        }
        sc
    }

    /// One round of changes, ingest, point; returns the point's id.
    fn point(&mut self) -> u64 {
        self.round += 1;
        let r = self.round;
        qemu_io(
            &self.images[0],
            &[
                format!("write -P {} 512k 384k", r % 250 + 1),
                format!("write -z {}k 8k", r * 24),
            ],
        );
        qemu_io(
            &self.images[1],
            &[format!("write -P {} {}k 96k", r % 200 + 3, r * 100 % 1800)],
        );
        for (img, name) in self.images.iter().zip(["os", "data"]) {
            expect(EXIT_OK, &["ingest", s(&self.vault), name, "--from", s(img)]);
        }
        let mut args = vec!["point", s(&self.vault), "--json"];
        if r.is_multiple_of(3) {
            args.push("--app-consistent");
        }
        let id = json(&args)["id"].as_u64().expect("an id");
        let keep = self.root.join("expected").join(id.to_string());
        fs::create_dir_all(&keep).expect("created");
        for (img, name) in self.images.iter().zip(["os", "data"]) {
            fs::copy(img, keep.join(format!("{name}.raw"))).expect("copied");
        }
        id
    }

    fn point_ids(&self) -> Vec<u64> {
        json(&["points", s(&self.vault), "--json"])
            .as_array()
            .expect("an array")
            .iter()
            .map(|p| p["id"].as_u64().expect("an id"))
            .collect()
    }

    /// Fails over to every listed point and compares with the kept images.
    fn check_every_point(&self) {
        for id in self.point_ids() {
            let out = self.root.join(format!("fo-{id}-{}", self.round));
            expect(
                EXIT_OK,
                &[
                    "failover",
                    s(&self.vault),
                    "--point",
                    &id.to_string(),
                    "--out",
                    s(&out),
                ],
            );
            for name in ["os", "data"] {
                let want = self
                    .root
                    .join("expected")
                    .join(id.to_string())
                    .join(format!("{name}.raw"));
                assert!(
                    identical(&out.join(format!("{name}.raw")), &want),
                    "point {id} disk {name}"
                );
            }
            fs::remove_dir_all(&out).expect("removed");
        }
    }
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_u64().expect("an id"))
        .collect()
}

#[test]
fn prune_keep_last_drops_old_points_reclaims_space_and_keeps_the_rest_exact() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let mut sc = Scenario::new(tmp.path(), 9);
    let dry = json(&[
        "prune",
        s(&sc.vault),
        "--keep-last",
        "3",
        "--dry-run",
        "--json",
    ]);
    assert_eq!(ids(&dry["would_drop"]), (1..=6).collect::<Vec<_>>());
    assert!(dry["journal_bytes_reclaimable"].as_u64().unwrap() > 0);
    assert_eq!(sc.point_ids().len(), 9, "a dry run changes nothing");

    let r = json(&["prune", s(&sc.vault), "--keep-last", "3", "--json"]);
    assert_eq!(ids(&r["kept"]), vec![7, 8, 9]);
    assert_eq!(ids(&r["removed_below_base"]), (1..=6).collect::<Vec<_>>());
    assert!(!r["segments_deleted"].as_array().unwrap().is_empty(), "{r}");
    let (before, after) = (
        r["disk_usage_before"].as_u64().unwrap(),
        r["disk_usage_after"].as_u64().unwrap(),
    );
    assert!(
        after < before,
        "disk usage {before} -> {after} does not shrink"
    );
    assert_eq!(r["bytes_reclaimed"].as_u64().unwrap(), before - after);
    assert_eq!(r["lease"]["outcome"], "clear");
    assert_eq!(sc.point_ids(), vec![7, 8, 9]);
    sc.check_every_point();
    expect(EXIT_OK, &["verify", s(&sc.vault)]);

    // Replication goes on after a prune, and the new point fails over exactly.
    let id = sc.point();
    assert_eq!(id, 10);
    sc.check_every_point();
    let inspect = json(&["inspect", s(&sc.vault), "--json"]);
    assert_eq!(inspect["points"], 4);
    assert!(inspect["base_lsn"].as_u64().unwrap() > 0);
    let churn = inspect["lifecycle"]["churn"]["disks"]
        .as_array()
        .expect("churn per disk");
    assert_eq!(churn.len(), 2);
    assert!(
        churn
            .iter()
            .all(|d| d["bytes_per_hour"].as_f64().unwrap() > 0.0),
        "{churn:?}"
    );

    let again = json(&["prune", s(&sc.vault), "--keep-last", "4", "--json"]);
    assert!(
        ids(&again["dropped"]).is_empty(),
        "nothing more to drop: {again}"
    );
    let none = expect(EXIT_FAILED, &["prune", s(&sc.vault)]);
    assert!(
        none.stderr.contains("no retention policy"),
        "{}",
        none.stderr
    );
}

#[test]
fn retention_policy_thins_old_points_and_keeps_pins_and_app_consistent_points() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let sc = Scenario::new(tmp.path(), 8);
    let set = json(&[
        "retention",
        s(&sc.vault),
        "--window",
        "1h",
        "--app-window",
        "48h",
        "--pin",
        "2",
        "--json",
    ]);
    assert_eq!(set["policy"]["window_seconds"], 3600);
    assert_eq!(set["policy"]["recent_seconds"], 7200);
    assert_eq!(set["policy"]["thin_seconds"], 3600);
    assert_eq!(ids(&set["pins"]), vec![2]);
    let shown = json(&["retention", s(&sc.vault), "--json"]);
    assert_eq!(shown, set, "showing the policy changes nothing");

    // Now: every point is recent, nothing to prune.
    let now = json(&["prune", s(&sc.vault), "--json"]);
    assert!(ids(&now["dropped"]).is_empty(), "{now}");
    let inspect = json(&["inspect", s(&sc.vault), "--json"]);
    assert_eq!(
        inspect["lifecycle"]["retention"]["policy"]["window_seconds"],
        3600
    );
    assert_eq!(inspect["lifecycle"]["reclaimable"]["bytes"], 0);

    // Three hours later: past the window; kept are the pin, the app-consistent points (3, 6)
    // and the newest. The base moves to the pin; the others are retired.
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(3);
    let later = later.to_string();
    let dry = json(&[
        "prune",
        s(&sc.vault),
        "--now",
        &later,
        "--dry-run",
        "--json",
    ]);
    assert_eq!(ids(&dry["kept"]), vec![2, 3, 6, 8]);
    let r = json(&["prune", s(&sc.vault), "--now", &later, "--json"]);
    assert_eq!(ids(&r["kept"]), vec![2, 3, 6, 8]);
    assert_eq!(ids(&r["removed_below_base"]), vec![1]);
    assert_eq!(ids(&r["retired"]), vec![4, 5, 7]);
    assert_eq!(sc.point_ids(), vec![2, 3, 6, 8]);
    sc.check_every_point();
    expect(EXIT_OK, &["verify", s(&sc.vault)]);
    assert_eq!(
        json(&["inspect", s(&sc.vault), "--json"])["lifecycle"]["retention"]["retired"],
        3
    );

    // Unpinned, the pin goes at the next prune.
    expect(EXIT_OK, &["retention", s(&sc.vault), "--unpin", "2"]);
    let r = json(&["prune", s(&sc.vault), "--now", &later, "--json"]);
    assert_eq!(ids(&r["kept"]), vec![3, 6, 8]);
    assert_eq!(sc.point_ids(), vec![3, 6, 8]);
    sc.check_every_point();
    let bad = expect(EXIT_FAILED, &["retention", s(&sc.vault), "--pin", "99"]);
    assert!(
        bad.stderr.contains("no recovery point 99"),
        "{}",
        bad.stderr
    );
    let bad = expect(64, &["retention", s(&sc.vault), "--window", "soon"]);
    assert!(bad.stderr.contains("not a duration"), "{}", bad.stderr);
}

#[test]
fn test_failover_leaves_replication_running_and_protects_its_point_until_cleanup() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let mut sc = Scenario::new(tmp.path(), 4);
    let out = tmp.path().join("test");
    let t = json(&[
        "test-failover",
        s(&sc.vault),
        "--point",
        "2",
        "--out",
        s(&out),
        "--json",
    ]);
    assert_eq!(t["point"]["id"], 2);
    for name in ["os", "data"] {
        let want = tmp.path().join("expected/2").join(format!("{name}.raw"));
        assert!(identical(&out.join(format!("{name}.raw")), &want), "{name}");
    }
    let active = json(&["inspect", s(&sc.vault), "--json"]);
    assert_eq!(active["lifecycle"]["test_failover"]["point"], 2);
    let second = expect(
        EXIT_FAILED,
        &[
            "test-failover",
            s(&sc.vault),
            "--latest",
            "--out",
            s(&tmp.path().join("t2")),
        ],
    );
    assert!(
        second.stderr.contains("already active"),
        "{}",
        second.stderr
    );

    // Ingest and points go on; a prune keeps the test's point.
    let newest = sc.point();
    let r = json(&["prune", s(&sc.vault), "--keep-last", "1", "--json"]);
    assert_eq!(ids(&r["kept"]), vec![2, newest]);
    assert_eq!(sc.point_ids(), vec![2, newest]);
    sc.check_every_point();

    let c = json(&["test-failover", s(&sc.vault), "--cleanup", "--json"]);
    assert_eq!(c["point"], 2);
    assert!(!out.join("os.raw").exists() && !out.join("data.raw").exists());
    assert!(json(&["inspect", s(&sc.vault), "--json"])["lifecycle"]["test_failover"].is_null());
    let r = json(&["prune", s(&sc.vault), "--keep-last", "1", "--json"]);
    assert_eq!(ids(&r["kept"]), vec![newest]);
    assert_eq!(sc.point_ids(), vec![newest]);
    let nothing = expect(EXIT_OK, &["test-failover", s(&sc.vault), "--cleanup"]);
    assert!(nothing.stdout.contains("no test failover is active"));
}

#[test]
fn complete_migration_writes_verified_disks_seals_the_vault_and_reruns_as_a_no_op() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let mut sc = Scenario::new(tmp.path(), 5);
    let last = sc.point();
    let out = tmp.path().join("migrated");
    let plan = json(&[
        "complete-migration",
        s(&sc.vault),
        "--out",
        s(&out),
        "--dry-run",
        "--json",
    ]);
    assert_eq!(plan["point"], last);
    assert!(plan["dry_run"].as_bool().unwrap());
    assert!(!out.exists(), "a dry run writes nothing");
    expect(EXIT_OK, &["point", s(&sc.vault)]);
    let taken = sc.point_ids();
    let newest = *taken.last().unwrap();

    let done = json(&[
        "complete-migration",
        s(&sc.vault),
        "--out",
        s(&out),
        "--json",
    ]);
    assert_eq!(done["phase"], "complete");
    assert_eq!(done["point"], newest, "the default is the newest point");
    assert!(done["segments_removed"].as_u64().unwrap() > 0);
    for d in done["disks"].as_array().expect("disks") {
        let path = PathBuf::from(d["path"].as_str().unwrap());
        let name = d["name"].as_str().unwrap();
        let want = tmp.path().join(format!("expected/{last}/{name}.raw"));
        assert!(identical(&path, &want), "{name}");
        let hash = xxhash_rust::xxh3::xxh3_128(&fs::read(&path).expect("read"));
        assert_eq!(
            d["xxh3_128"].as_str().unwrap(),
            format!("{hash:032x}"),
            "{name}"
        );
    }
    let again = json(&[
        "complete-migration",
        s(&sc.vault),
        "--out",
        s(&out),
        "--json",
    ]);
    assert!(again["already_complete"].as_bool().unwrap());
    assert_eq!(again["disks"], done["disks"]);

    for args in [
        vec!["ingest", s(&sc.vault), "os", "--from", s(&sc.images[0])],
        vec!["point", s(&sc.vault)],
        vec!["prune", s(&sc.vault), "--keep-last", "1"],
    ] {
        let refused = expect(EXIT_FAILED, &args);
        assert!(
            refused.stderr.contains("was migrated to point"),
            "{}",
            refused.stderr
        );
    }
    let other = expect(
        EXIT_FAILED,
        &[
            "complete-migration",
            s(&sc.vault),
            "--out",
            s(&tmp.path().join("x")),
        ],
    );
    assert!(
        other.stderr.contains("completed already"),
        "{}",
        other.stderr
    );
    let inspect = json(&["inspect", s(&sc.vault), "--json"]);
    let m = &inspect["lifecycle"]["migration"];
    assert_eq!(m["phase"], "complete");
    assert_eq!(m["point"], newest);
    assert!(m["finished"].is_string());
    assert_eq!(m["disks"].as_array().unwrap().len(), 2);
    assert_eq!(m["disks"][0]["xxh3_128"], done["disks"][0]["xxh3_128"]);
    assert_eq!(fs::read_dir(sc.vault.join("journal")).unwrap().count(), 0);
    expect(EXIT_OK, &["verify", s(&sc.vault)]);
    let human = expect(EXIT_OK, &["inspect", s(&sc.vault)]).stdout;
    assert!(human.contains("migration   complete to point"), "{human}");
}

#[test]
fn complete_migration_to_an_earlier_point_refuses_existing_outputs() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let sc = Scenario::new(tmp.path(), 3);
    let out = tmp.path().join("m");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("os.raw"), b"mine").unwrap();
    let refused = expect(
        EXIT_FAILED,
        &[
            "complete-migration",
            s(&sc.vault),
            "--out",
            s(&out),
            "--point",
            "2",
        ],
    );
    assert!(
        refused.stderr.contains("exists already"),
        "{}",
        refused.stderr
    );
    assert_eq!(fs::read(out.join("os.raw")).unwrap(), b"mine");
    expect(EXIT_OK, &["point", s(&sc.vault)]);
    fs::remove_file(out.join("os.raw")).unwrap();
    let done = json(&[
        "complete-migration",
        s(&sc.vault),
        "--out",
        s(&out),
        "--point",
        "2",
        "--json",
    ]);
    assert_eq!(done["point"], 2);
    for name in ["os", "data"] {
        let want = tmp.path().join("expected/2").join(format!("{name}.raw"));
        assert!(identical(&out.join(format!("{name}.raw")), &want), "{name}");
    }
}
