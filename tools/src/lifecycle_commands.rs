//! The lifecycle commands: `retention`, `prune`, `test-failover`, `complete-migration`, and the
//! lifecycle part of `inspect` (retention state, reclaimable bytes, churn per disk, leases and
//! the migration record).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use replog_format::layout;
use replog_format::manifest::{Manifest, SegmentEntry};
use replog_format::segment::{
    Expect, ExtentEntry, FooterIndex, IndexBuilder, TRAILER_BYTES, record_in, scan,
};
use replog_format::vault_seed;
use replog_io::{OpenMode, Storage};
use replog_reader::{LeaseOptions, MaterializeOptions, PointInfo, Vault};
use replog_writer::{
    LeaseOutcome, LeaseWait, MigrationOptions, MigrationReport, PruneOptions, RetentionPolicy,
    complete_migration, migration_plan, plan_retention,
};
use serde_json::{Value, json};

use crate::cli::{CompleteMigrationArgs, PruneArgs, RetentionArgs, TestFailoverArgs};
use crate::commands::open_writer;
use crate::output::{human_bytes, print_json, rfc3339};
use crate::{CmdResult, EXIT_OK, Failure};

const NS_PER_S: i64 = 1_000_000_000;

/// Parses a duration: a number with a unit, `s`, `m`, `h`, `d` or `w` (`72h`, `30m`, `3d`), or
/// `0`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a duration: use a number and a unit, e.g. 90s, 30m, 72h, 3d");
    if s == "0" {
        return Ok(0);
    }
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(unit_at);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

fn human_duration(seconds: u64) -> String {
    match seconds {
        0 => "0".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn policy_json(p: &RetentionPolicy) -> Value {
    json!({
        "window_seconds": p.window_s,
        "recent_seconds": p.recent_s,
        "thin_seconds": p.thin_s,
        "app_window_seconds": p.app_window_s,
        "app_thin_seconds": p.app_thin_s,
    })
}

fn policy_text(p: &RetentionPolicy) -> String {
    format!(
        "window {}: every point of the last {}, {} beyond; app-consistent points kept {}{}",
        human_duration(p.window_s),
        human_duration(p.recent_s),
        if p.thin_s == 0 {
            "every point".to_owned()
        } else {
            format!("one per {}", human_duration(p.thin_s))
        },
        human_duration(p.app_window_s),
        if p.app_thin_s == 0 {
            String::new()
        } else {
            format!(", one per {}", human_duration(p.app_thin_s))
        }
    )
}

/// `replog retention`: shows or changes the policy and the pins.
pub fn retention(storage: Arc<dyn Storage>, args: &RetentionArgs) -> CmdResult {
    let mut w = open_writer(storage, &args.vault)?;
    let current = w.manifest().lifecycle.retention;
    let changes_policy = args.window.is_some()
        || args.recent.is_some()
        || args.thin.is_some()
        || args.app_window.is_some()
        || args.app_thin.is_some();
    if args.clear {
        w.set_retention(None)?;
    } else if changes_policy {
        let mut p = match (args.window, current) {
            (Some(window), _) => RetentionPolicy::with_window(window),
            (None, Some(p)) => p,
            (None, None) => {
                return Err(Failure::new(
                    "the vault has no retention policy yet: give --window (e.g. --window 72h)",
                ));
            }
        };
        if let Some(v) = args.recent {
            p.recent_s = v;
        }
        if let Some(v) = args.thin {
            p.thin_s = v;
        }
        if let Some(v) = args.app_window {
            p.app_window_s = v;
        }
        if let Some(v) = args.app_thin {
            p.app_thin_s = v;
        }
        w.set_retention(Some(p))?;
    }
    for &id in &args.pin {
        w.pin(id)?;
    }
    for &id in &args.unpin {
        w.unpin(id)?;
    }
    let lifecycle = w.manifest().lifecycle.clone();
    w.close()?;
    if args.json {
        print_json(&json!({
            "policy": lifecycle.retention.as_ref().map(policy_json),
            "pins": lifecycle.pins,
            "retired": lifecycle.retired.len(),
        }));
        return Ok(EXIT_OK);
    }
    match &lifecycle.retention {
        Some(p) => println!("retention   {}", policy_text(p)),
        None => println!("retention   none (every point is kept until `replog prune --keep-last`)"),
    }
    println!(
        "pinned      {}",
        if lifecycle.pins.is_empty() {
            "none".to_owned()
        } else {
            lifecycle
                .pins
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    Ok(EXIT_OK)
}

/// Bytes the vault's files take on disk (allocated blocks), measured with `st_blocks`.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

/// `replog prune`: applies the policy (or keeps the newest N points) and compacts.
pub fn prune(storage: Arc<dyn Storage>, args: &PruneArgs) -> CmdResult {
    let now_unix_ns = match &args.now {
        Some(t) => Some(parse_time(t)?),
        None => None,
    };
    let opts = PruneOptions {
        keep_last: args.keep_last,
        now_unix_ns,
        lease_wait: match args.wait_for_leases {
            0 => LeaseWait::Skip,
            s => LeaseWait::Wait(Duration::from_secs(s)),
        },
        dry_run: args.dry_run,
    };
    let usage_before = disk_usage(&args.vault);
    let mut w = open_writer(storage, &args.vault)?;
    let report = w.prune(&opts)?;
    let base_lsn = w.manifest().base_lsn;
    w.close()?;
    let compaction = report
        .compaction
        .clone()
        .unwrap_or_else(|| replog_writer::CompactReport {
            base_lsn_before: base_lsn,
            base_lsn_after: base_lsn,
            ..Default::default()
        });
    let outcome = PruneOutcome {
        usage: (usage_before, disk_usage(&args.vault)),
        compaction,
        report,
    };
    if args.json {
        print_json(&outcome.json(args.dry_run));
    } else {
        outcome.print(args.dry_run);
    }
    Ok(EXIT_OK)
}

/// A prune's report with the disk usage measured around it.
struct PruneOutcome {
    report: replog_writer::PruneReport,
    compaction: replog_writer::CompactReport,
    /// Allocated bytes of the vault before and after.
    usage: (u64, u64),
}

fn ids(points: &[replog_writer::PointInfo]) -> Vec<u64> {
    points.iter().map(|p| p.point_id).collect()
}

impl PruneOutcome {
    fn skipped(&self) -> Option<&str> {
        match &self.compaction.lease {
            LeaseOutcome::Skipped { blocking } => Some(blocking),
            _ => None,
        }
    }

    /// The points dropped: (below the new base, retired); empty unless the prune ran.
    fn dropped(&self, dry_run: bool) -> (Vec<u64>, Vec<u64>) {
        if dry_run || self.skipped().is_some() {
            return (Vec::new(), Vec::new());
        }
        (
            ids(&self.report.plan.removed),
            ids(&self.report.plan.retired),
        )
    }

    fn json(&self, dry_run: bool) -> Value {
        let plan = &self.report.plan;
        let c = &self.compaction;
        let (removed, retired) = self.dropped(dry_run);
        let would_drop: Vec<u64> = if removed.is_empty() && retired.is_empty() {
            ids(&plan.removed)
                .into_iter()
                .chain(ids(&plan.retired))
                .collect()
        } else {
            Vec::new()
        };
        json!({
            "dry_run": dry_run,
            "kept": ids(&plan.kept),
            "would_drop": would_drop,
            "dropped": removed.iter().chain(&retired).collect::<Vec<_>>(),
            "removed_below_base": removed,
            "retired": retired,
            "protected": plan.protected.iter().map(|(id, why)| json!({"id": id, "why": why})).collect::<Vec<_>>(),
            "base_lsn_before": c.base_lsn_before,
            "base_lsn_after": c.base_lsn_after,
            "segments_deleted": c.segments_dropped,
            "journal_bytes_deleted": c.journal_bytes_dropped,
            "journal_bytes_reclaimable": self.report.journal_bytes_reclaimable,
            "old_base_bytes": c.old_base_bytes,
            "new_base_bytes": c.new_base_bytes,
            "deferred": c.deferred.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "lease": lease_json(&c.lease),
            "disk_usage_before": self.usage.0,
            "disk_usage_after": self.usage.1,
            "bytes_reclaimed": self.usage.0.saturating_sub(self.usage.1),
        })
    }

    fn print(&self, dry_run: bool) {
        if let Some(blocking) = self.skipped() {
            println!(
                "skipped: {blocking}; nothing was changed (wait for it with --wait-for-leases SECONDS)"
            );
            return;
        }
        let plan = &self.report.plan;
        let c = &self.compaction;
        let join = |v: Vec<u64>| v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
        let dropped: Vec<u64> = ids(&plan.removed)
            .into_iter()
            .chain(ids(&plan.retired))
            .collect();
        println!(
            "kept {} points ({}); {} {}{}",
            plan.kept.len(),
            join(ids(&plan.kept)),
            if dry_run { "would drop" } else { "dropped" },
            dropped.len(),
            if dropped.is_empty() {
                String::new()
            } else {
                format!(" ({})", join(dropped))
            }
        );
        if dry_run {
            println!(
                "would free {} of journal segments",
                human_bytes(self.report.journal_bytes_reclaimable)
            );
            return;
        }
        let (before, after) = self.usage;
        println!(
            "base LSN {} -> {}; deleted {} segments ({}); disk usage {} -> {} ({} reclaimed){}",
            c.base_lsn_before,
            c.base_lsn_after,
            c.segments_dropped.len(),
            human_bytes(c.journal_bytes_dropped),
            human_bytes(before),
            human_bytes(after),
            human_bytes(before.saturating_sub(after)),
            if c.deferred.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} files left until the readers of an older snapshot finish",
                    c.deferred.len()
                )
            }
        );
    }
}

fn lease_json(l: &LeaseOutcome) -> Value {
    match l {
        LeaseOutcome::Clear => json!({"outcome": "clear"}),
        LeaseOutcome::Waited { waited_ms } => json!({"outcome": "waited", "waited_ms": waited_ms}),
        LeaseOutcome::Skipped { blocking } => json!({"outcome": "skipped", "blocking": blocking}),
    }
}

fn parse_time(t: &str) -> Result<i64, Failure> {
    let ts: jiff::Timestamp = t
        .parse()
        .map_err(|e| Failure::new(format!("{t:?} is not an RFC 3339 time: {e}")))?;
    i64::try_from(ts.as_nanosecond()).map_err(|_| Failure::new(format!("{t:?} is out of range")))
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// `replog test-failover`: materializes a point under a persistent lease, or cleans it up.
pub fn test_failover(storage: Arc<dyn Storage>, args: &TestFailoverArgs) -> CmdResult {
    if args.cleanup {
        return test_failover_cleanup(storage, args);
    }
    let Some(out) = &args.out else {
        return Err(Failure::new(
            "give --out DIR for the test failover's disks (or --cleanup to end one)",
        ));
    };
    if args.point.is_none() && !args.latest {
        return Err(Failure::new("give --point ID or --latest"));
    }
    let out = absolute(out);
    let opts = LeaseOptions {
        purpose: "test-failover".to_owned(),
        persistent: true,
        detail: out.display().to_string(),
    };
    let dir = &args.vault;
    let leased = Vault::open_leased(storage, dir, &opts, |v| {
        let p = match args.point {
            Some(id) => v.point(id),
            None => v.latest_point(),
        };
        p.cloned().ok_or_else(|| {
            Failure::new(match args.point {
                Some(id) => format!(
                    "{}: no recovery point {id}; `replog points` lists them",
                    dir.display()
                ),
                None => format!("{}: the vault has no recovery point yet", dir.display()),
            })
        })
    })
    .map_err(|mut f| {
        if f.message.contains("already held") {
            f.message = format!(
                "{}: a test failover is already active; end it with `replog test-failover {} --cleanup`",
                dir.display(),
                dir.display()
            );
        }
        f
    })?;
    let view = leased.vault.view(&leased.point)?;
    let materialized = replog_reader::materialize(
        &view,
        &out,
        &MaterializeOptions {
            force: false,
            sync: true,
        },
    );
    let stats = match materialized {
        Ok(stats) => stats,
        Err(e) => {
            leased.lease.release()?;
            return Err(e.into());
        }
    };
    let p = &leased.point;
    if args.json {
        print_json(&json!({
            "point": {"id": p.point_id, "lsn": p.lsn, "time": rfc3339(p.time_unix_ns), "kind": p.kind.name()},
            "out": out.display().to_string(),
            "disks": stats.disks.iter().map(|d| json!({"name": d.name, "path": d.path.display().to_string(), "size_bytes": d.size_bytes})).collect::<Vec<_>>(),
            "bytes_written": stats.written_bytes,
            "active": true,
        }));
    } else {
        for d in &stats.disks {
            println!("{}  {}", d.path.display(), human_bytes(d.size_bytes));
        }
        println!(
            "test failover to point {} ({}) is active: replication continues, the point is kept until `replog test-failover {} --cleanup`",
            p.point_id,
            rfc3339(p.time_unix_ns),
            dir.display()
        );
    }
    // The lease stays: it is persistent, and its file records the test failover.
    drop(leased.lease);
    Ok(EXIT_OK)
}

fn test_failover_cleanup(storage: Arc<dyn Storage>, args: &TestFailoverArgs) -> CmdResult {
    let dir = &args.vault;
    let vault = Vault::open(storage.clone(), dir)?;
    let seed = vault_seed(&vault.header().vault_id);
    let Some(record) = replog_reader::test_failover_lease(storage.as_ref(), dir, seed)? else {
        if args.json {
            print_json(&json!({"active": false, "removed": Vec::<String>::new()}));
        } else {
            println!("no test failover is active");
        }
        return Ok(EXIT_OK);
    };
    let out = PathBuf::from(&record.detail);
    let mut removed = Vec::new();
    for d in vault.disks().iter().filter(|d| d.added_lsn <= record.lsn) {
        let path = out.join(format!("{}.raw", d.name));
        match storage.remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Failure::new(format!(
                    "{}: cannot remove the test failover's image: {e}",
                    path.display()
                )));
            }
        }
    }
    // The directory goes too when nothing else is in it.
    let _ = std::fs::remove_dir(&out);
    replog_reader::release_test_failover(storage.as_ref(), dir)?;
    if args.json {
        print_json(&json!({
            "active": false,
            "point": record.point_id,
            "removed": removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        }));
    } else {
        for p in &removed {
            println!("removed {}", p.display());
        }
        println!(
            "test failover to point {} ended; the point is subject to retention again",
            record.point_id
        );
    }
    Ok(EXIT_OK)
}

/// `replog complete-migration`.
pub fn complete(storage: Arc<dyn Storage>, args: &CompleteMigrationArgs) -> CmdResult {
    let opts = MigrationOptions {
        out_dir: args.out.clone(),
        point_id: args.point,
    };
    let report = if args.dry_run {
        migration_plan(storage, &args.vault, &opts)?
    } else {
        complete_migration(storage, &args.vault, &opts)?
    };
    if args.json {
        print_json(&migration_json(&report));
        return Ok(EXIT_OK);
    }
    let r = &report.record;
    for d in &report.disks {
        println!(
            "{}  {}{}",
            d.path.display(),
            human_bytes(d.size_bytes),
            d.xxh3
                .map(|h| format!("  xxh3-128 {h:032x}"))
                .unwrap_or_default()
        );
    }
    for name in &report.omitted_disks {
        println!(
            "disk {name} was added after point {} and is not migrated",
            r.point_id
        );
    }
    let what = if report.dry_run {
        match report.resumed_from {
            Some(replog_writer::MigrationPhase::Complete) => {
                "the migration is complete; running it again changes nothing".to_owned()
            }
            Some(phase) => format!(
                "would resume the migration at phase {}, then seal the vault and remove its journal",
                phase.name()
            ),
            None => format!(
                "would migrate to point {} (LSN {}): write and verify the disks, seal the vault, remove its journal",
                r.point_id, r.lsn
            ),
        }
    } else if report.already_complete {
        format!(
            "already migrated to point {} at {}; nothing to do",
            r.point_id,
            rfc3339(r.finished_unix_ns)
        )
    } else {
        format!(
            "migrated to point {} (LSN {}){}: disks verified, vault sealed, {} journal segments removed; ingest and point are refused from now on",
            r.point_id,
            r.lsn,
            report
                .resumed_from
                .map(|p| format!(", resumed after phase {}", p.name()))
                .unwrap_or_default(),
            report.segments_removed
        )
    };
    println!("{what}");
    Ok(EXIT_OK)
}

fn migration_json(report: &MigrationReport) -> Value {
    let r = &report.record;
    json!({
        "dry_run": report.dry_run,
        "already_complete": report.already_complete,
        "resumed_from": report.resumed_from.map(|p| p.name()),
        "phase": r.phase.name(),
        "point": r.point_id,
        "lsn": r.lsn,
        "started": rfc3339(r.started_unix_ns),
        "finished": (r.finished_unix_ns != 0).then(|| rfc3339(r.finished_unix_ns)),
        "out": r.out_dir,
        "disks": report.disks.iter().map(|d| json!({
            "name": d.name,
            "path": d.path.display().to_string(),
            "size_bytes": d.size_bytes,
            "xxh3_128": d.xxh3.map(|h| format!("{h:032x}")),
        })).collect::<Vec<_>>(),
        "omitted_disks": report.omitted_disks,
        "segments_removed": report.segments_removed,
    })
}

/// The lifecycle part of `inspect`, as JSON: retention, pins, retired points, reclaimable bytes,
/// churn per disk, leases and the migration record.
pub fn inspect_lifecycle(storage: &Arc<dyn Storage>, v: &Vault) -> Value {
    let m = v.manifest();
    let now = replog_writer::now_unix_ns();
    let seed = vault_seed(&v.header().vault_id);
    let leases = replog_reader::list_leases(storage.as_ref(), v.dir(), seed).unwrap_or_default();
    let protected: Vec<u64> = leases
        .iter()
        .filter_map(|s| s.record.as_ref().filter(|r| r.persistent).map(|r| r.lsn))
        .collect();
    let points: Vec<replog_writer::PointInfo> = v.points().iter().map(writer_point).collect();
    let reclaimable = m.lifecycle.retention.as_ref().map(|policy| {
        let plan = plan_retention(&points, Some(policy), None, &m.lifecycle.pins, &protected, now);
        let base = plan.base().map_or(0, |p| p.lsn);
        let bytes = journal_bytes_upto(storage.as_ref(), v.dir(), m, base);
        json!({"bytes": bytes, "points": plan.removed.len() + plan.retired.len(), "new_base_lsn": base})
    });
    let test_failover = leases.iter().find_map(|s| {
        s.record
            .as_ref()
            .filter(|r| r.purpose == "test-failover")
            .map(|r| json!({"point": r.point_id, "lsn": r.lsn, "out": r.detail, "since": rfc3339(r.time_unix_ns)}))
    });
    let migration = m.lifecycle.migration.as_ref().map(|r| {
        json!({
            "phase": r.phase.name(),
            "point": r.point_id,
            "lsn": r.lsn,
            "started": rfc3339(r.started_unix_ns),
            "finished": (r.finished_unix_ns != 0).then(|| rfc3339(r.finished_unix_ns)),
            "out": r.out_dir,
            "disks": r.disks.iter().map(|d| json!({
                "name": m.disks.iter().find(|e| e.disk_id == d.disk_id).map(|e| e.name.clone()),
                "size_bytes": d.size_bytes,
                "xxh3_128": format!("{:032x}", d.xxh3),
            })).collect::<Vec<_>>(),
        })
    });
    json!({
        "retention": {
            "policy": m.lifecycle.retention.as_ref().map(policy_json),
            "pins": m.lifecycle.pins,
            "retired": m.lifecycle.retired.len(),
        },
        "reclaimable": reclaimable,
        "churn": churn(storage.as_ref(), v, now),
        "leases": leases.iter().filter(|s| s.live).filter_map(|s| s.record.as_ref()).map(|r| json!({
            "purpose": r.purpose, "point": r.point_id, "lsn": r.lsn, "pid": r.pid,
            "persistent": r.persistent, "since": rfc3339(r.time_unix_ns),
        })).collect::<Vec<_>>(),
        "test_failover": test_failover,
        "migration": migration,
    })
}

/// Prints the lifecycle part of `inspect` for people.
pub fn print_lifecycle(l: &Value) {
    let r = &l["retention"];
    match r["policy"].as_object() {
        Some(p) => {
            let get = |k: &str| p[k].as_u64().unwrap_or(0);
            let policy = RetentionPolicy {
                window_s: get("window_seconds"),
                recent_s: get("recent_seconds"),
                thin_s: get("thin_seconds"),
                app_window_s: get("app_window_seconds"),
                app_thin_s: get("app_thin_seconds"),
            };
            println!("retention   {}", policy_text(&policy));
        }
        None => println!("retention   none"),
    }
    println!(
        "            pinned {}, retired {}",
        r["pins"],
        r["retired"].as_u64().unwrap_or(0)
    );
    if let Some(rc) = l["reclaimable"].as_object() {
        println!(
            "reclaimable {} of journal by pruning {} points now",
            human_bytes(rc["bytes"].as_u64().unwrap_or(0)),
            rc["points"].as_u64().unwrap_or(0)
        );
    }
    if let Some(churn) = l["churn"]["disks"].as_array() {
        let span = l["churn"]["hours"].as_f64().unwrap_or(0.0);
        for d in churn {
            println!(
                "churn       {}: {}/hour over {span:.1} h",
                d["name"].as_str().unwrap_or(""),
                human_bytes(d["bytes_per_hour"].as_f64().unwrap_or(0.0) as u64)
            );
        }
    }
    if let Some(t) = l["test_failover"].as_object() {
        println!(
            "test        failover to point {} active since {} in {}",
            t["point"],
            t["since"].as_str().unwrap_or(""),
            t["out"].as_str().unwrap_or("")
        );
    }
    if let Some(m) = l["migration"].as_object() {
        println!(
            "migration   {} to point {} (LSN {}), started {}, finished {}, out {}",
            m["phase"].as_str().unwrap_or(""),
            m["point"],
            m["lsn"],
            m["started"].as_str().unwrap_or(""),
            m["finished"].as_str().unwrap_or("-"),
            m["out"].as_str().unwrap_or("")
        );
        for d in m["disks"].as_array().into_iter().flatten() {
            println!(
                "            {}  {}  xxh3-128 {}",
                d["name"].as_str().unwrap_or(""),
                human_bytes(d["size_bytes"].as_u64().unwrap_or(0)),
                d["xxh3_128"].as_str().unwrap_or("")
            );
        }
    }
}

fn writer_point(p: &PointInfo) -> replog_writer::PointInfo {
    replog_writer::PointInfo {
        point_id: p.point_id,
        lsn: p.lsn,
        time_unix_ns: p.time_unix_ns,
        kind: p.kind,
        label: p.label.clone(),
    }
}

/// File lengths of the sealed segments wholly at or below `lsn`.
fn journal_bytes_upto(storage: &dyn Storage, dir: &Path, m: &Manifest, lsn: u64) -> u64 {
    m.segments
        .iter()
        .filter(|s| s.sealed.is_some_and(|i| i.last_lsn <= lsn))
        .filter_map(|s| {
            storage
                .open(&layout::segment_path(dir, s.segment_id), OpenMode::Read)
                .and_then(|f| f.len())
                .ok()
        })
        .sum()
}

/// Bytes written and zeroed per disk per hour, over the retention window (or, without a policy,
/// since the oldest point), from the footers of sealed segments and a scan of the open one.
fn churn(storage: &dyn Storage, v: &Vault, now: i64) -> Value {
    let m = v.manifest();
    let window_ns = m.lifecycle.retention.map(|p| {
        i64::try_from(p.window_s)
            .unwrap_or(i64::MAX)
            .saturating_mul(NS_PER_S)
    });
    let from = v
        .points()
        .iter()
        .find(|p| window_ns.is_none_or(|w| p.time_unix_ns >= now.saturating_sub(w)));
    let Some(from) = from else {
        return json!({"hours": 0.0, "disks": [], "note": "no point in the window"});
    };
    let hours = ((now - from.time_unix_ns).max(1) as f64 / 3600e9).max(1.0 / 3600.0);
    let mut per_disk: Vec<(u32, u64)> = m.disks.iter().map(|d| (d.disk_id, 0)).collect();
    let expect = |s: &SegmentEntry| Expect {
        vault_id: v.header().vault_id,
        seed: vault_seed(&v.header().vault_id),
        segment_id: s.segment_id,
    };
    for s in &m.segments {
        if s.sealed.is_some_and(|i| i.last_lsn <= from.lsn) {
            continue;
        }
        let Some(extents) = segment_extents(storage, v.dir(), s, &expect(s)) else {
            return json!({"hours": hours, "disks": [], "note": "a segment could not be read; run `replog verify`"});
        };
        for e in extents.iter().filter(|e| e.lsn > from.lsn) {
            if let Some(d) = per_disk.iter_mut().find(|(id, _)| *id == e.disk_id) {
                d.1 += e.length;
            }
        }
    }
    json!({
        "since_point": from.point_id,
        "hours": hours,
        "disks": per_disk.iter().map(|(id, bytes)| json!({
            "name": m.disks.iter().find(|d| d.disk_id == *id).map(|d| d.name.clone()),
            "bytes": bytes,
            "bytes_per_hour": *bytes as f64 / hours,
        })).collect::<Vec<_>>(),
    })
}

/// A segment's write and zero records: its footer when sealed, a scan when open.
fn segment_extents(
    storage: &dyn Storage,
    dir: &Path,
    s: &SegmentEntry,
    expect: &Expect,
) -> Option<Vec<ExtentEntry>> {
    let file = storage
        .open(&layout::segment_path(dir, s.segment_id), OpenMode::Read)
        .ok()?;
    match s.sealed {
        Some(info) => {
            let len = info
                .file_bytes
                .checked_sub(TRAILER_BYTES as u64 + info.footer_offset)?;
            let mut buf = vec![0u8; usize::try_from(len).ok()?];
            file.read_exact_at(&mut buf, info.footer_offset).ok()?;
            let (_, payload) = record_in(&buf, info.footer_offset, expect).ok()?;
            Some(FooterIndex::decode(payload).ok()?.extents)
        }
        None => {
            let bytes = file.map().ok()?;
            let mut index = IndexBuilder::default();
            // A torn tail or damage ends the scan; the records before it still count.
            let _ = scan(&bytes, expect, |h, p| index.visit(h, p));
            Some(index.extents)
        }
    }
}
