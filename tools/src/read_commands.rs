//! The commands that only read: `points`, `inspect`, `dump`, `verify`, `failover`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use replog_format::header::Compression;
use replog_format::segment::SegmentEnd;
use replog_io::Storage;
use replog_reader::{
    DumpEnd, MaterializeOptions, PointInfo, PointView, Severity, Vault, VaultStats, VerifyReport,
    ViewOptions, verify::ChainSummary,
};
use serde_json::{Value, json};

use crate::cli::{FailoverArgs, VerifyArgs};
use crate::context::parse_time;
use crate::output::{
    human_age, human_bytes, point_json, print_json, printable, progress, rfc3339, table, view_json,
};
use crate::{CmdResult, EXIT_DAMAGED, EXIT_OK, Failure};
use replog_vault::{Exported, PointChoice, TargetsWritten, Tier, VaultErrorKind};

/// Opens a vault for reading, warning on stderr about damage that hides later points.
fn open_vault(storage: Arc<dyn Storage>, vault: &Path) -> Result<Vault, Failure> {
    let v = Vault::open(storage, vault)?;
    warn_of_damage(&v, vault);
    Ok(v)
}

/// Warns on stderr about damage that hides the points after it.
fn warn_of_damage(v: &Vault, vault: &Path) {
    if let Some(damage) = v.damage() {
        eprintln!(
            "replog: warning: {}: {damage}; the points before it are intact and listed, any after it cannot be read; run `replog verify`",
            vault.display()
        );
    }
}

pub fn points(storage: Arc<dyn Storage>, vault: &Path, json: bool) -> CmdResult {
    let v = open_vault(storage, vault)?;
    if json {
        print_json(&Value::Array(v.points().iter().map(point_json).collect()));
        return Ok(EXIT_OK);
    }
    let mut t = table(&["id", "lsn", "time", "kind", "chain", "label"]);
    for p in v.points() {
        // The first 16 digits tell points apart at a glance; `--json` has all 64.
        let chain = p.chain.as_ref().map(replog_format::chain::hex);
        t.add_row(vec![
            p.point_id.to_string(),
            p.lsn.to_string(),
            rfc3339(p.time_unix_ns),
            p.kind.name().to_owned(),
            chain.map_or("-".to_owned(), |c| c[..16].to_owned()),
            printable(&p.label),
        ]);
    }
    if v.points().is_empty() {
        println!(
            "no recovery points yet; take one with `replog point {}`",
            vault.display()
        );
    } else {
        println!("{t}");
    }
    Ok(EXIT_OK)
}

pub fn inspect(opened: &replog_vault::Vault, json: bool) -> CmdResult {
    let v = open_vault(opened.storage().clone(), opened.dir())?;
    let stats = v.stats()?;
    let lifecycle = opened.lifecycle_state(&v, replog_writer::now_unix_ns());
    let now = replog_writer::now_unix_ns();
    let rpo_seconds = v
        .latest_point()
        .map(|p| (now - p.time_unix_ns).max(0) as f64 / 1e9);
    let replication = crate::replicate_commands::recorded(opened, v.header())?;
    if json {
        let mut doc = inspect_json(&v, &stats, rpo_seconds);
        doc["lifecycle"] = crate::lifecycle_commands::lifecycle_json(&lifecycle, &v);
        if let Some(r) = &replication {
            doc["replication"] = json!(r);
        }
        print_json(&doc);
        return Ok(EXIT_OK);
    }
    print_inspect(&v, &stats, rpo_seconds);
    if let Some(r) = &replication {
        crate::replicate_commands::print_record(r);
    }
    crate::lifecycle_commands::print_lifecycle(&lifecycle, &v);
    Ok(EXIT_OK)
}

fn inspect_json(v: &Vault, stats: &VaultStats, rpo_seconds: Option<f64>) -> Value {
    let h = v.header();
    let disks: Vec<Value> = v.disks().iter().map(|d| json!({"id": d.disk_id, "name": d.name, "size_bytes": d.disk_bytes, "added_lsn": d.added_lsn})).collect();
    let tail = stats
        .open_segment
        .as_ref()
        .map(|s| segment_end_json(&s.end));
    json!({
        "vault": v.dir().display().to_string(),
        "format_version": h.version.as_u32(),
        "created": rfc3339(h.created_unix_ns),
        "block_bytes": h.block_bytes,
        "segment_bytes": h.segment_bytes,
        "compression": compression_name(h.compression),
        "disks": disks,
        "segments": stats.segments,
        "sealed_segments": stats.sealed_segments,
        "journal_bytes": stats.journal_bytes,
        "base_bytes": stats.base_bytes,
        "base_lsn": stats.base_lsn,
        "last_lsn": stats.last_lsn,
        "points": stats.points,
        "latest_point": v.latest_point().map(point_json),
        "rpo_seconds": rpo_seconds,
        "open_segment_end": tail,
        "manifest_version": v.manifest().version(),
    })
}

fn print_inspect(v: &Vault, stats: &VaultStats, rpo_seconds: Option<f64>) {
    let h = v.header();
    println!("vault       {}", v.dir().display());
    println!(
        "created     {} (format {}, block {}, segment {}, compression {})",
        rfc3339(h.created_unix_ns),
        h.version.as_u32(),
        human_bytes(u64::from(h.block_bytes)),
        human_bytes(h.segment_bytes),
        compression_name(h.compression)
    );
    let mut t = table(&["disk", "id", "size", "added at LSN"]);
    for d in v.disks() {
        t.add_row(vec![
            d.name.clone(),
            d.disk_id.to_string(),
            human_bytes(d.disk_bytes),
            d.added_lsn.to_string(),
        ]);
    }
    println!("{t}");
    println!(
        "journal     {} in {} segments ({} sealed), LSN {}..{}",
        human_bytes(stats.journal_bytes),
        stats.segments,
        stats.sealed_segments,
        stats.base_lsn + 1,
        stats.last_lsn
    );
    println!(
        "bases       {} (apparent size)",
        human_bytes(stats.base_bytes)
    );
    match (v.latest_point(), rpo_seconds) {
        (Some(p), Some(age)) => println!(
            "points      {}; newest {} at {} (RPO {})",
            stats.points,
            p.point_id,
            rfc3339(p.time_unix_ns),
            human_age(age)
        ),
        _ => println!("points      none yet"),
    }
    if let Some(s) = &stats.open_segment {
        println!(
            "open        segment {} with {} records, {}",
            s.segment_id,
            s.records,
            segment_end_text(&s.end)
        );
    }
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Lz4 => "lz4",
    }
}

/// How the open segment's records end, for people.
fn segment_end_text(end: &SegmentEnd) -> String {
    match end {
        SegmentEnd::Clean { offset } => format!("records end cleanly at byte {offset}"),
        SegmentEnd::Torn { offset, reason } => format!(
            "records end at byte {offset}, followed by a torn tail ({reason}); the next writer cuts it"
        ),
        SegmentEnd::Sealed { footer_offset, .. } => {
            format!("sealed meanwhile (footer at byte {footer_offset})")
        }
    }
}

/// How the open segment's records end, for programs.
fn segment_end_json(end: &SegmentEnd) -> Value {
    match end {
        SegmentEnd::Clean { offset } => json!({"state": "clean", "offset": offset}),
        SegmentEnd::Torn { offset, reason } => {
            json!({"state": "torn", "offset": offset, "reason": reason.to_string()})
        }
        SegmentEnd::Sealed { footer_offset, .. } => {
            json!({"state": "sealed", "footer_offset": footer_offset})
        }
    }
}

pub fn dump(
    storage: Arc<dyn Storage>,
    vault: &Path,
    segment: Option<u64>,
    json: bool,
) -> CmdResult {
    let mut damaged = false;
    replog_reader::dump(
        storage.as_ref(),
        vault,
        segment,
        |r| {
            if json {
                let point = r.point.as_ref().map(|p| json!({"id": p.point_id, "time": rfc3339(p.time_unix_ns), "kind": p.kind.name(), "label": p.label}));
                let mut line = json!({"segment": r.segment_id, "offset": r.offset, "lsn": r.lsn, "kind": r.kind.name(), "disk": r.disk_id, "disk_offset": r.disk_offset, "length": r.length, "stored": r.stored_len, "lz4": r.lz4, "crc": format!("{:#010x}", r.crc), "checksum": "ok", "point": point});
                if let Some((old, new)) = r.resize_bytes {
                    line["resize"] = json!({"old_bytes": old, "new_bytes": new});
                }
                println!("{line}");
            } else {
                let what = match (&r.point, r.resize_bytes) {
                    (Some(p), _) => {
                        format!("point id={} {} {:?}", p.point_id, p.kind.name(), p.label)
                    }
                    (None, Some((old, new))) => {
                        format!("disk={} from={old} to={new}", r.disk_id)
                    }
                    (None, None) => format!(
                        "disk={} offset={} length={}",
                        r.disk_id, r.disk_offset, r.length
                    ),
                };
                println!(
                    "seg={} off={} lsn={} {:<5} {what} stored={}{} crc={:#010x} ok",
                    r.segment_id,
                    r.offset,
                    r.lsn,
                    r.kind.name(),
                    r.stored_len,
                    if r.lz4 { " lz4" } else { "" },
                    r.crc
                );
            }
        },
        |id, path, end| {
            let (state, offset, detail) = match end {
                DumpEnd::Clean(o) => ("end", Some(*o), String::new()),
                DumpEnd::Sealed(o) => ("sealed", Some(*o), String::new()),
                DumpEnd::Torn(o, why) => ("torn-tail", Some(*o), why.clone()),
                DumpEnd::Damaged(why) => {
                    damaged = true;
                    ("damaged", None, why.clone())
                }
            };
            if json {
                println!(
                    "{}",
                    json!({"segment": id, "end": state, "offset": offset, "detail": detail})
                );
            } else {
                println!(
                    "seg={id} {state}{} {} {detail}",
                    offset.map(|o| format!(" at {o}")).unwrap_or_default(),
                    path.display()
                );
            }
        },
    )?;
    Ok(if damaged { EXIT_DAMAGED } else { EXIT_OK })
}

pub fn verify(opened: &replog_vault::Vault, args: &VerifyArgs) -> CmdResult {
    let started = Instant::now();
    let vault = opened.dir();
    let report = opened.verify();
    print_verify(&report, vault, args.json, started.elapsed().as_secs_f64());
    if let Some(expected) = &args.expect_point {
        opened.check_expected(&opened.snapshot()?, expected)?;
    }
    // A file verify may not read is no finding about the bytes: a failure (exit 1), unless
    // damage was found in what could be read.
    if !report.is_damaged() && !report.unreadable().is_empty() {
        let lines: Vec<String> = report
            .unreadable()
            .iter()
            .map(|f| {
                format!(
                    "cannot read {}: {}",
                    vault.join(&f.path).display(),
                    f.message
                )
            })
            .collect();
        return Err(Failure::new(lines.join("\nreplog: ")));
    }
    Ok(if report.is_intact() {
        EXIT_OK
    } else {
        EXIT_DAMAGED
    })
}

fn print_verify(report: &VerifyReport, vault: &Path, json: bool, seconds: f64) {
    let intact = report.is_intact();
    if json {
        let findings: Vec<Value> = report
            .findings()
            .iter()
            .map(|f| json!({"severity": format!("{:?}", f.severity).to_lowercase(), "file": f.path.display().to_string(), "offset": f.offset, "message": f.message}))
            .collect();
        print_json(
            &json!({"intact": intact, "files": report.files_checked(), "bytes": report.bytes_checked(), "records": report.records_checked(), "chunks": report.chunks_checked(), "chain": chain_json(report.chain()), "findings": findings}),
        );
    } else {
        for f in report.findings() {
            let label = match f.severity {
                Severity::Damage => "DAMAGED",
                Severity::TornTail => "TORN TAIL",
                Severity::Notice => "note",
            };
            println!("{label}: {f}");
        }
        println!(
            "{}: {}: checked {} files, {} records, {} base chunks, {} in {:.2}s",
            if intact {
                "intact"
            } else if report.is_damaged() {
                "DAMAGED"
            } else {
                "INCOMPLETE"
            },
            vault.display(),
            report.files_checked(),
            report.records_checked(),
            report.chunks_checked(),
            human_bytes(report.bytes_checked()),
            seconds
        );
        println!("{}", chain_line(report.chain()));
    }
}

/// What the journal's hash chain proved, as `verify --json` reports it.
fn chain_json(c: &ChainSummary) -> Value {
    let anchors: Vec<Value> = c
        .anchors
        .iter()
        .map(|(lsn, at)| json!({"lsn": lsn, "from": at}))
        .collect();
    let newest = c.newest.as_ref().map(
        |(id, lsn, hash)| json!({"id": id, "lsn": lsn, "chain": replog_format::chain::hex(hash)}),
    );
    json!({"records": c.records, "points_proven": c.points_proven, "points_unchained": c.points_unchained, "broken": c.broken, "anchors": anchors, "newest_point": newest})
}

/// What the journal's hash chain proved, in a sentence.
fn chain_line(c: &ChainSummary) -> String {
    let mut line = match &c.newest {
        Some((id, _, hash)) => format!(
            "chain: {} points proven over {} records{}; newest point {id}, chain hash {}",
            c.points_proven,
            c.records,
            c.anchors
                .first()
                .map(|(lsn, at)| format!(" from LSN {lsn} ({at})"))
                .unwrap_or_default(),
            replog_format::chain::hex(hash)
        ),
        None => "chain: no point with a chain hash".to_owned(),
    };
    if c.broken > 0 {
        line += &format!("; BROKEN in {} places (see above)", c.broken);
    }
    let restarts: Vec<String> = c
        .anchors
        .iter()
        .skip(1)
        .map(|(lsn, at)| format!("LSN {lsn} ({at})"))
        .collect();
    if !restarts.is_empty() {
        line += &format!(
            "; started again where earlier records were not kept: {}",
            restarts.join(", ")
        );
    }
    if c.points_unchained > 0 {
        line += &format!(
            "; {} points written before the chain existed",
            c.points_unchained
        );
    }
    line
}

pub fn failover(ctx: &crate::context::Ctx, args: &FailoverArgs) -> CmdResult {
    let started = Instant::now();
    let parallel = args.parallel.max(1);
    let vault = ctx.open_with_cache(&args.vault, 2 * parallel + 4)?;
    if let Tier::Remote {
        manifest_seq,
        manifest_time_unix_ns,
    } = vault.tier()
    {
        eprintln!(
            "replog: reading {} as of its remote manifest {manifest_seq} ({})",
            args.vault.display(),
            rfc3339(*manifest_time_unix_ns)
        );
    }
    let source = vault.failover_source(&point_choice(args)?)?;
    if let Some(expected) = &args.expect_point {
        vault.check_expected(&source.snapshot, expected)?;
    }
    if let Some(e) = &source.unprotected {
        eprintln!(
            "replog: warning: {}: cannot take a lease ({e}); failing over without one, so the point is not protected from a concurrent prune (run as a user who can write {}, or do not prune meanwhile)",
            args.vault.display(),
            args.vault.join("leases").display()
        );
    }
    let (v, point) = (&source.snapshot, &source.point);
    warn_of_damage(v, &args.vault);
    let view = v.view_with(
        point,
        &ViewOptions {
            memory_limit_bytes: args.memory_limit,
        },
    )?;
    let bar = progress(view.total_bytes(), "failover");
    if !args.to.is_empty() {
        let written = replog_vault::failover_to_targets(&view, &args.to, &|n| bar.set_position(n))?;
        bar.finish_and_clear();
        print_targets(args, point, &written, started.elapsed().as_secs_f64());
        return Ok(EXIT_OK);
    }
    let out = args
        .out
        .as_deref()
        .expect("clap requires --out without --to");
    let opts = MaterializeOptions {
        force: args.force,
        sync: !args.no_sync,
        read_back: args.read_back,
        ..MaterializeOptions::default()
    };
    let stats = vault
        .export(&view, out, args.format, &opts, parallel, &|n| {
            bar.set_position(n)
        })
        .map_err(|e| {
            // An image that exists already is refused; `--force` is what would replace it.
            let exists = e.kind() == VaultErrorKind::AlreadyExists;
            let mut f = Failure::from(e);
            if exists {
                f.message += "; pass --force to overwrite";
            }
            f
        })?;
    bar.finish_and_clear();
    print_failover(args, point, &view, &stats, started.elapsed().as_secs_f64());
    Ok(EXIT_OK)
}

fn print_failover(
    args: &FailoverArgs,
    point: &PointInfo,
    view: &PointView,
    stats: &Exported,
    seconds: f64,
) {
    if args.json {
        let disks: Vec<Value> = stats.disks.iter().map(|d| json!({"name": d.name, "path": d.path.display().to_string(), "format": args.format.name(), "size_bytes": d.size_bytes, "virtual_size_bytes": d.virtual_bytes})).collect();
        print_json(
            &json!({"point": point_json(point), "format": args.format.name(), "disks": disks, "bytes_written": stats.written_bytes, "seconds": seconds, "synced": !args.no_sync, "peak_rss_bytes": replog_vault::peak_rss_bytes(), "view": view_json(view)}),
        );
        return;
    }
    for d in &stats.disks {
        println!("{}  {}", d.path.display(), human_bytes(d.virtual_bytes));
    }
    let label = if point.label.is_empty() {
        String::new()
    } else {
        format!(", {:?}", point.label)
    };
    println!(
        "failed over to point {} ({}, {}{label}) in {seconds:.2}s: {} written{}",
        point.point_id,
        rfc3339(point.time_unix_ns),
        point.kind.name(),
        human_bytes(stats.written_bytes),
        if args.no_sync {
            ", not synced"
        } else {
            ", synced"
        }
    );
}

/// The result of a failover into targets (`--to`).
fn print_targets(args: &FailoverArgs, point: &PointInfo, written: &TargetsWritten, seconds: f64) {
    if args.json {
        let disks: Vec<Value> = written.disks.iter().map(|d| json!({"name": d.name, "target": d.target, "kind": d.kind, "size_bytes": d.size_bytes, "target_size_bytes": d.target_size_bytes, "data_bytes": d.data_bytes, "zero_bytes": d.zero_bytes, "zeroed_by": d.zeroed_by, "verified": true})).collect();
        print_json(
            &json!({"point": point_json(point), "disks": disks, "bytes_written": written.written_bytes, "seconds": seconds, "synced": true, "peak_rss_bytes": replog_vault::peak_rss_bytes()}),
        );
        return;
    }
    for d in &written.disks {
        println!(
            "{} -> {}  {} ({} data, {} zeroed by {})",
            d.name,
            d.target,
            human_bytes(d.size_bytes),
            human_bytes(d.data_bytes),
            human_bytes(d.zero_bytes),
            d.zeroed_by
        );
    }
    println!(
        "failed over to point {} ({}, {}) in {seconds:.2}s: {} written, synced and read back",
        point.point_id,
        rfc3339(point.time_unix_ns),
        point.kind.name(),
        human_bytes(written.written_bytes),
    );
}

/// The point `--point`, `--at` or `--latest` names.
pub(crate) fn point_choice(args: &FailoverArgs) -> Result<PointChoice, Failure> {
    if let Some(id) = args.point {
        return Ok(PointChoice::Id(id));
    }
    let Some(at) = &args.at else {
        return Ok(PointChoice::Latest);
    };
    let unix_ns = parse_time("--at ", at)?;
    Ok(PointChoice::At {
        unix_ns,
        given: at.clone(),
    })
}
