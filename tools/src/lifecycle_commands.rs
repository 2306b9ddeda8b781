//! The lifecycle commands: `retention`, `prune`, `test-failover`, `complete-migration`, and the
//! lifecycle part of `inspect`. The work is `replog-vault`'s; this renders its typed results as
//! text or JSON.

use std::time::Duration;

use replog_format::lifecycle::Lifecycle;
use replog_vault::{Churn, DiskUsage, LifecycleState, PointChoice, Pruned, RetentionChange, Vault};
use replog_writer::{
    GarbageRatio, GarbageReport, LeaseOutcome, LeaseWait, MigrationOptions, MigrationPhase,
    MigrationRecord, MigrationReport, PruneOptions, RetentionPolicy,
};
use serde_json::{Value, json};

use crate::cli::{CompleteMigrationArgs, PruneArgs, RetentionArgs, TestFailoverArgs};
use crate::context::parse_time;
use crate::output::{human_bytes, print_json, rfc3339};
use crate::{CmdResult, EXIT_OK, Failure};

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
pub fn retention(vault: &Vault, args: &RetentionArgs) -> CmdResult {
    let change = RetentionChange {
        window_s: args.window,
        recent_s: args.recent,
        thin_s: args.thin,
        app_window_s: args.app_window,
        app_thin_s: args.app_thin,
        clear: args.clear,
        pin: args.pin.clone(),
        unpin: args.unpin.clone(),
    };
    let lifecycle = vault.change_retention(&change)?;
    if args.json {
        print_json(&retention_json(&lifecycle));
        return Ok(EXIT_OK);
    }
    match &lifecycle.retention {
        Some(p) => println!("retention   {}", policy_text(p)),
        None => println!("retention   none (every point is kept until `replog prune --keep-last`)"),
    }
    let pins = if lifecycle.pins.is_empty() {
        "none".to_owned()
    } else {
        join(&lifecycle.pins)
    };
    println!("pinned      {pins}");
    Ok(EXIT_OK)
}

/// The policy, the pins and the number of retired points.
fn retention_json(l: &Lifecycle) -> Value {
    json!({
        "policy": l.retention.as_ref().map(policy_json),
        "pins": l.pins,
        "retired": l.retired.len(),
    })
}

fn join(ids: &[u64]) -> String {
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `replog prune`: applies the policy (or keeps the newest N points) and compacts.
pub fn prune(vault: &Vault, args: &PruneArgs) -> CmdResult {
    let now_unix_ns = match &args.now {
        Some(t) => Some(parse_time("", t)?),
        None => None,
    };
    let garbage_ratio = GarbageRatio::from_fraction(args.garbage_ratio).ok_or_else(|| {
        Failure::new(format!(
            "--garbage-ratio {} is not a share from 0 to 1 (0: punch any dead range, 1: never)",
            args.garbage_ratio
        ))
    })?;
    let opts = PruneOptions {
        garbage_ratio,
        keep_last: args.keep_last,
        now_unix_ns,
        lease_wait: match args.wait_for_leases {
            0 => LeaseWait::Skip,
            s => LeaseWait::Wait(Duration::from_secs(s)),
        },
        dry_run: args.dry_run,
        view: replog_reader::ViewOptions {
            memory_limit_bytes: args.memory_limit,
        },
    };
    let pruned = vault.prune(&opts)?;
    if args.json {
        print_json(&prune_json(&pruned, args.dry_run));
    } else {
        print_prune(&pruned, args.dry_run);
    }
    Ok(EXIT_OK)
}

fn ids(points: &[replog_writer::PointInfo]) -> Vec<u64> {
    points.iter().map(|p| p.point_id).collect()
}

fn prune_json(pruned: &Pruned, dry_run: bool) -> Value {
    let plan = &pruned.report.plan;
    let c = &pruned.compaction;
    let (removed, retired) = (ids(&plan.removed), ids(&plan.retired));
    let all: Vec<u64> = removed.iter().chain(&retired).copied().collect();
    // What was dropped is empty unless the prune ran; what would be, unless it did.
    let ran = !dry_run && pruned.skipped().is_none();
    let if_ran = |ids: &[u64]| if ran { ids.to_vec() } else { Vec::new() };
    let (before, after) = (pruned.usage_before, pruned.usage_after);
    json!({
        "dry_run": dry_run,
        "kept": ids(&plan.kept),
        "would_drop": if ran { Vec::new() } else { all.clone() },
        "dropped": if_ran(&all),
        "removed_below_base": if_ran(&removed),
        "retired": if_ran(&retired),
        "protected": plan.protected.iter().map(|(id, why)| json!({"id": id, "why": why})).collect::<Vec<_>>(),
        "base_lsn_before": c.base_lsn_before,
        "base_lsn_after": c.base_lsn_after,
        "segments_deleted": c.segments_dropped,
        "journal_bytes_deleted": c.journal_bytes_dropped,
        "journal_bytes_reclaimable": pruned.report.journal_bytes_reclaimable,
        "old_base_bytes": c.old_base_bytes,
        "new_base_bytes": c.new_base_bytes,
        "deferred": c.deferred.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "lease": lease_json(&c.lease),
        "disk_usage_before": before,
        "disk_usage_after": after,
        "bytes_reclaimed": before.saturating_sub(after),
        "allocated_before": usage_json(&pruned.kinds_before),
        "allocated_after": usage_json(&pruned.kinds_after),
        "prefixes_released": c.prefixes_released,
        "prefix_bytes_released": c.prefix_bytes_released,
        "release_unsupported": c.release_unsupported.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "garbage": garbage_json(&pruned.report.garbage),
    })
}

/// What reclaiming the records every kept point overwrote did.
fn garbage_json(g: &GarbageReport) -> Value {
    json!({
        "segments": g.segments,
        "dead_bytes_listed": g.dead_bytes_listed,
        "bytes_freed": g.bytes_freed,
        "ranges_listed": g.ranges_listed,
        "below_ratio": g.below_ratio,
        "sealed_open": g.sealed_open,
        "skipped": g.skipped,
        "unsupported": g.unsupported.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    })
}

/// Allocated bytes per kind of file, as measured (`st_blocks`).
fn usage_json(u: &DiskUsage) -> Value {
    json!({
        "journal": u.journal,
        "bases": u.bases,
        "index": u.index,
        "other": u.other,
        "total": u.total(),
    })
}

/// The allocated bytes of each kind of file before and after, and what the release of dead
/// prefixes did.
fn print_usage_kinds(pruned: &Pruned) {
    let (b, a) = (&pruned.kinds_before, &pruned.kinds_after);
    let kind = |name: &str, before: u64, after: u64| {
        format!("{name} {} -> {}", human_bytes(before), human_bytes(after))
    };
    println!(
        "allocated: {}, {}, {}, {}",
        kind("journal", b.journal, a.journal),
        kind("bases", b.bases, a.bases),
        kind("index", b.index, a.index),
        kind("other", b.other, a.other),
    );
    let c = &pruned.compaction;
    if !c.prefixes_released.is_empty() {
        println!(
            "released the dead prefix of segment {} ({} freed)",
            join(&c.prefixes_released),
            human_bytes(c.prefix_bytes_released)
        );
    }
    if !c.prefixes_deferred.is_empty() {
        println!(
            "the dead prefix of segment {} is released once the readers of an older snapshot finish (by the next prune or writer open)",
            join(&c.prefixes_deferred)
        );
    }
    for path in &c.release_unsupported {
        println!(
            "note: {} is on a filesystem that cannot punch holes; its dead prefix stays allocated until the segment is deleted",
            path.display()
        );
    }
    print_garbage(&pruned.report.garbage);
}

/// What reclaiming the records every kept point overwrote did, in a line or two.
fn print_garbage(g: &GarbageReport) {
    if !g.segments.is_empty() {
        println!(
            "garbage: punched the dead records of segment {} ({} newly listed, {} freed){}",
            join(&g.segments),
            human_bytes(g.dead_bytes_listed),
            human_bytes(g.bytes_freed),
            g.sealed_open
                .map(|id| format!("; sealed the open segment {id} first"))
                .unwrap_or_default()
        );
    } else if g.bytes_freed > 0 {
        println!(
            "garbage: punched dead ranges listed before ({} freed)",
            human_bytes(g.bytes_freed)
        );
    }
    if !g.below_ratio.is_empty() {
        println!(
            "garbage: segment {} holds dead records below --garbage-ratio; left as they are",
            join(&g.below_ratio)
        );
    }
    if let Some(blocking) = &g.skipped {
        println!(
            "garbage: skipped: {blocking} may read the dead records; the next prune decides again"
        );
    }
    for path in &g.unsupported {
        println!(
            "note: {} is on a filesystem that cannot punch holes; its dead records stay allocated until the segment is deleted",
            path.display()
        );
    }
}

fn print_prune(pruned: &Pruned, dry_run: bool) {
    if let Some(blocking) = pruned.skipped() {
        println!(
            "skipped: {blocking}; nothing was changed (wait for it with --wait-for-leases SECONDS)"
        );
        return;
    }
    let plan = &pruned.report.plan;
    let c = &pruned.compaction;
    let mut dropped = ids(&plan.removed);
    dropped.extend(ids(&plan.retired));
    println!(
        "kept {} points ({}); {} {}{}",
        plan.kept.len(),
        join(&ids(&plan.kept)),
        if dry_run { "would drop" } else { "dropped" },
        dropped.len(),
        if dropped.is_empty() {
            String::new()
        } else {
            format!(" ({})", join(&dropped))
        }
    );
    if dry_run {
        println!(
            "would free {} of journal segments",
            human_bytes(pruned.report.journal_bytes_reclaimable)
        );
        return;
    }
    let (before, after) = (pruned.usage_before, pruned.usage_after);
    let deferred = if c.deferred.is_empty() {
        String::new()
    } else {
        format!(
            "; {} files left until the readers of an older snapshot finish",
            c.deferred.len()
        )
    };
    println!(
        "base LSN {} -> {}; deleted {} segments ({}); disk usage {} -> {} ({} reclaimed){deferred}",
        c.base_lsn_before,
        c.base_lsn_after,
        c.segments_dropped.len(),
        human_bytes(c.journal_bytes_dropped),
        human_bytes(before),
        human_bytes(after),
        human_bytes(before.saturating_sub(after)),
    );
    print_usage_kinds(pruned);
}

fn lease_json(l: &LeaseOutcome) -> Value {
    match l {
        LeaseOutcome::Clear => json!({"outcome": "clear"}),
        LeaseOutcome::Waited { waited_ms } => json!({"outcome": "waited", "waited_ms": waited_ms}),
        LeaseOutcome::Skipped { blocking } => json!({"outcome": "skipped", "blocking": blocking}),
    }
}

/// `replog test-failover`: materializes a point under a persistent lease, or cleans it up.
pub fn test_failover(vault: &Vault, args: &TestFailoverArgs) -> CmdResult {
    if args.cleanup {
        return test_failover_cleanup(vault, args);
    }
    let Some(out) = &args.out else {
        return Err(Failure::new(
            "give --out DIR for the test failover's disks (or --cleanup to end one)",
        ));
    };
    let choice = match (args.point, args.latest) {
        (Some(id), _) => PointChoice::Id(id),
        (None, true) => PointChoice::Latest,
        (None, false) => return Err(Failure::new("give --point ID or --latest")),
    };
    let view = replog_reader::ViewOptions {
        memory_limit_bytes: args.memory_limit,
    };
    let started = vault.start_test_failover_with(&choice, out, &view)?;
    let p = &started.point;
    if args.json {
        print_json(&json!({
            "point": {"id": p.point_id, "lsn": p.lsn, "time": rfc3339(p.time_unix_ns), "kind": p.kind.name()},
            "out": started.out.display().to_string(),
            "disks": started.stats.disks.iter().map(|d| json!({"name": d.name, "path": d.path.display().to_string(), "size_bytes": d.size_bytes})).collect::<Vec<_>>(),
            "bytes_written": started.stats.written_bytes,
            "view": {"mode": started.view_mode.name(), "memory_bytes": started.view_memory_bytes},
            "active": true,
        }));
        return Ok(EXIT_OK);
    }
    for d in &started.stats.disks {
        println!("{}  {}", d.path.display(), human_bytes(d.size_bytes));
    }
    println!(
        "test failover to point {} ({}) is active: replication continues, the point is kept until `replog test-failover {} --cleanup`",
        p.point_id,
        rfc3339(p.time_unix_ns),
        vault.dir().display()
    );
    Ok(EXIT_OK)
}

fn test_failover_cleanup(vault: &Vault, args: &TestFailoverArgs) -> CmdResult {
    let Some(ended) = vault.end_test_failover()? else {
        if args.json {
            print_json(&json!({"active": false, "removed": Vec::<String>::new()}));
        } else {
            println!("no test failover is active");
        }
        return Ok(EXIT_OK);
    };
    if args.json {
        print_json(&json!({
            "active": false,
            "point": ended.point_id,
            "removed": ended.removed.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        }));
        return Ok(EXIT_OK);
    }
    for p in &ended.removed {
        println!("removed {}", p.display());
    }
    println!(
        "test failover to point {} ended; the point is subject to retention again",
        ended.point_id
    );
    Ok(EXIT_OK)
}

/// `replog complete-migration`.
pub fn complete(vault: &Vault, args: &CompleteMigrationArgs) -> CmdResult {
    let opts = MigrationOptions {
        out_dir: args.out.clone(),
        point_id: args.point,
        view: replog_reader::ViewOptions {
            memory_limit_bytes: args.memory_limit,
        },
    };
    let report = vault.complete_migration(&opts, args.dry_run)?;
    if args.json {
        print_json(&migration_json(&report));
        return Ok(EXIT_OK);
    }
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
            report.record.point_id
        );
    }
    println!("{}", migration_text(&report));
    Ok(EXIT_OK)
}

/// The sentence that ends `complete-migration`'s output.
fn migration_text(report: &MigrationReport) -> String {
    let r = &report.record;
    if report.dry_run {
        return match report.resumed_from {
            Some(MigrationPhase::Complete) => {
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
        };
    }
    if report.already_complete {
        return format!(
            "already migrated to point {} at {}; nothing to do",
            r.point_id,
            rfc3339(r.finished_unix_ns)
        );
    }
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
}

fn migration_json(report: &MigrationReport) -> Value {
    let disks = report.disks.iter().map(|d| {
        json!({
            "name": d.name,
            "path": d.path.display().to_string(),
            "size_bytes": d.size_bytes,
            "xxh3_128": d.xxh3.map(|h| format!("{h:032x}")),
        })
    });
    let mut doc = migration_record_json(&report.record, disks.collect());
    doc["dry_run"] = json!(report.dry_run);
    doc["already_complete"] = json!(report.already_complete);
    doc["resumed_from"] = json!(report.resumed_from.map(|p| p.name()));
    doc["omitted_disks"] = json!(report.omitted_disks);
    doc["segments_removed"] = json!(report.segments_removed);
    doc
}

/// A migration record as JSON, with its disks as given.
fn migration_record_json(r: &MigrationRecord, disks: Vec<Value>) -> Value {
    json!({
        "phase": r.phase.name(),
        "point": r.point_id,
        "lsn": r.lsn,
        "started": rfc3339(r.started_unix_ns),
        "finished": finished(r),
        "out": r.out_dir,
        "disks": disks,
    })
}

/// When the migration finished, if it did.
fn finished(r: &MigrationRecord) -> Option<String> {
    (r.finished_unix_ns != 0).then(|| rfc3339(r.finished_unix_ns))
}

/// The lifecycle part of `inspect`, as JSON: retention, pins, retired points, reclaimable bytes,
/// churn per disk, leases and the migration record.
pub fn lifecycle_json(state: &LifecycleState, snapshot: &replog_reader::Vault) -> Value {
    let l = &state.lifecycle;
    let migration = state.migration().map(|r| {
        let disks = r.disks.iter().map(|d| {
            json!({
                "name": disk_name(snapshot, d.disk_id),
                "size_bytes": d.size_bytes,
                "xxh3_128": format!("{:032x}", d.xxh3),
            })
        });
        migration_record_json(r, disks.collect())
    });
    json!({
        "retention": retention_json(l),
        "reclaimable": state.reclaimable.map(|r| json!({"bytes": r.bytes, "points": r.points, "new_base_lsn": r.new_base_lsn})),
        "churn": churn_json(state),
        "leases": state.leases.iter().map(|r| json!({
            "purpose": r.purpose, "point": r.point_id, "lsn": r.lsn, "pid": r.pid,
            "persistent": r.persistent, "since": rfc3339(r.time_unix_ns),
        })).collect::<Vec<_>>(),
        "test_failover": state.test_failover.as_ref().map(|r| json!({"point": r.point_id, "lsn": r.lsn, "out": r.detail, "since": rfc3339(r.time_unix_ns)})),
        "migration": migration,
    })
}

/// The name of disk `id`, if the manifest still has it.
fn disk_name(snapshot: &replog_reader::Vault, id: u32) -> Option<String> {
    let disks = &snapshot.manifest().disks;
    disks
        .iter()
        .find(|d| d.disk_id == id)
        .map(|d| d.name.clone())
}

fn churn_json(state: &LifecycleState) -> Value {
    match &state.churn {
        Churn::NoPointInWindow => {
            json!({"hours": 0.0, "disks": [], "note": "no point in the window"})
        }
        Churn::Unreadable { hours } => {
            json!({"hours": hours, "disks": [], "note": "a segment could not be read; run `replog verify`"})
        }
        Churn::Measured {
            since_point,
            hours,
            disks,
        } => json!({
            "since_point": since_point,
            "hours": hours,
            "disks": disks.iter().map(|(name, bytes)| json!({
                "name": name,
                "bytes": bytes,
                "bytes_per_hour": *bytes as f64 / hours,
            })).collect::<Vec<_>>(),
        }),
    }
}

/// Prints the lifecycle part of `inspect` for people.
pub fn print_lifecycle(state: &LifecycleState, snapshot: &replog_reader::Vault) {
    let l = &state.lifecycle;
    match &l.retention {
        Some(p) => println!("retention   {}", policy_text(p)),
        None => println!("retention   none"),
    }
    let pins = json!(l.pins);
    println!("            pinned {pins}, retired {}", l.retired.len());
    if let Some(r) = &state.reclaimable {
        println!(
            "reclaimable {} of journal by pruning {} points now",
            human_bytes(r.bytes),
            r.points
        );
    }
    if let Churn::Measured { hours, disks, .. } = &state.churn {
        for (name, bytes) in disks {
            let per_hour = human_bytes((*bytes as f64 / hours) as u64);
            println!("churn       {name}: {per_hour}/hour over {hours:.1} h");
        }
    }
    if let Some(t) = &state.test_failover {
        println!(
            "test        failover to point {} active since {} in {}",
            t.point_id,
            rfc3339(t.time_unix_ns),
            t.detail
        );
    }
    if let Some(m) = state.migration() {
        println!(
            "migration   {} to point {} (LSN {}), started {}, finished {}, out {}",
            m.phase.name(),
            m.point_id,
            m.lsn,
            rfc3339(m.started_unix_ns),
            finished(m).as_deref().unwrap_or("-"),
            m.out_dir
        );
        for d in &m.disks {
            println!(
                "            {}  {}  xxh3-128 {:032x}",
                disk_name(snapshot, d.disk_id).unwrap_or_default(),
                human_bytes(d.size_bytes),
                d.xxh3
            );
        }
    }
}
