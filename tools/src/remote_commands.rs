//! The commands of object storage: `remote add`, `remote show`, `sync`, and opening a vault
//! named by a remote URL for `points`, `inspect` and `failover`.

use std::path::Path;
use std::time::Instant;

use replog_remote::lock::{self, LockHorizon, LockMode};
use replog_remote::{RemoteOptions, SyncOptions, SyncReport};
use replog_vault::RemoteNow;
use replog_vault::RemoteRpo;
use serde_json::{Value, json};

use crate::cli::{RemoteAddArgs, SyncArgs};
use crate::context::{Ctx, open_writer};
use crate::output::{human_age, human_bytes, point_json, print_json, progress, rfc3339};
use crate::{CmdResult, EXIT_DAMAGED, EXIT_OK};

/// `replog remote add`.
pub fn add(args: &RemoteAddArgs, opts: &RemoteOptions) -> CmdResult {
    let (vault, cache_limit, keep) = (&args.vault, args.cache_limit, args.keep_manifests);
    let mode = LockMode::from(args.lock_mode);
    // Checked before anything is written, so a bucket without Object Lock leaves no remote.
    if let Some(period_s) = args.immutable {
        lock::check_url_immutable(&args.url, mode, period_s, opts)?;
    }
    let url = replog_vault::add_remote(vault, &args.url, cache_limit, keep, opts)?;
    println!(
        "{} syncs to {url} (local cache limit {}, {keep} remote manifests kept); run `replog sync {}`",
        vault.display(),
        limit_text(cache_limit),
        vault.display()
    );
    if let Some(period_s) = args.immutable {
        let s = lock::make_immutable(vault, mode, period_s, opts)?;
        println!(
            "{url} is immutable: every object a sync uploads is locked ({}) for {} at least",
            s.mode.as_s3().to_lowercase(),
            human_age(s.period_s as f64)
        );
    }
    Ok(EXIT_OK)
}

/// A cache limit for people: 0 is none.
fn limit_text(bytes: u64) -> String {
    match bytes {
        0 => "none".to_owned(),
        b => human_bytes(b),
    }
}

/// `replog remote show`.
pub fn show(vault: &Path, json: bool, opts: &RemoteOptions) -> CmdResult {
    let status = replog_vault::remote_status(vault)?;
    let horizon = lock::vault_horizon(vault, opts)?;
    let now = replog_vault::remote_now(vault, opts)?;
    let local_older = status.local_older.clone();
    let code = match (&now, &local_older) {
        (RemoteNow::RolledBack(_), _) | (_, Some(_)) => EXIT_DAMAGED,
        _ => EXIT_OK,
    };
    let chain_head = status.rpo.newest_remote_point.as_ref().and_then(|p| {
        p.chain
            .as_ref()
            .map(|c| (p.point_id, replog_format::chain::hex(c)))
    });
    let (config, latest) = (&status.config, &status.latest);
    let (local_files, remote_only) = (status.files_local, status.files_remote_only);
    if json {
        let mut out = json!({
            "url": config.url,
            "cache_limit_bytes": config.cache_limit_bytes,
            "keep_manifests": config.keep_manifests,
            "latest_manifest": latest.as_ref().map(|l| json!({"seq": l.seq, "time": rfc3339(l.time_unix_ns), "files": l.files.len()})),
            "files_local": local_files,
            "files_remote_only": remote_only,
            "remote_rpo": rpo_json(&status.rpo),
            "chain_head": chain_head.as_ref().map(|(id, hash)| json!({"point": id, "chain": hash})),
            "remote_now": remote_now_json(&now),
            "local_rolled_back": local_older,
        });
        // Only an immutable remote's status has the key.
        if let Some(h) = &horizon {
            out["lock"] = horizon_json(h);
        }
        print_json(&out);
        if local_older.is_none() {
            warn_behind(&status.rpo);
        }
        warn_rolled_back(&now, local_older.as_deref());
        return Ok(code);
    }
    println!("remote          {}", config.url);
    println!("cache limit     {}", limit_text(config.cache_limit_bytes));
    println!("manifests kept  {}", config.keep_manifests);
    match latest {
        None => println!("last sync       never confirmed"),
        Some(l) => {
            println!(
                "last sync       manifest {} of {}, {} files ({local_files} also local, {remote_only} evicted)",
                l.seq,
                rfc3339(l.time_unix_ns),
                l.files.len()
            );
        }
    }
    if let Some((id, hash)) = &chain_head {
        println!("chain head      point {id}, {hash}");
    }
    match &now {
        RemoteNow::Current { newest_seq } => {
            println!("remote now      manifest {newest_seq}, not older than the last confirmed")
        }
        RemoteNow::RolledBack(_) => println!("remote now      ROLLED BACK (see below)"),
        RemoteNow::Unknown(why) => println!("remote now      not known: {why}"),
    }
    if local_older.is_some() {
        println!("local vault     OLDER than its remote (see below)");
    }
    print_horizon(horizon.as_ref());
    // Against a local vault rolled back, the remote RPO means nothing.
    if local_older.is_none() {
        print_rpo(&status.rpo);
    }
    warn_rolled_back(&now, local_older.as_deref());
    Ok(code)
}

/// What the remote holds now, as JSON.
fn remote_now_json(now: &RemoteNow) -> Value {
    match now {
        RemoteNow::Current { newest_seq } => json!({"state": "current", "newest_seq": newest_seq}),
        RemoteNow::RolledBack(why) => json!({"state": "rolled_back", "detail": why}),
        RemoteNow::Unknown(why) => json!({"state": "unknown", "detail": why}),
    }
}

/// Says on stderr that the remote was rolled back, naming the object, or the local vault.
fn warn_rolled_back(now: &RemoteNow, local_older: Option<&str>) {
    if let RemoteNow::RolledBack(why) = now {
        eprintln!("replog: the remote is older than this vault confirmed, or was rewritten: {why}");
    }
    if let Some(why) = local_older {
        eprintln!("replog: {why}; do not sync until this is understood");
    }
}

/// The lock horizon of an immutable remote, as JSON.
fn horizon_json(h: &LockHorizon) -> Value {
    json!({
        "mode": h.mode.as_s3().to_lowercase(),
        "period_seconds": h.period_s,
        "latest_retain_until": h.latest_until.map(|t| t.to_string()),
        "unknown_because": h.unknown_because,
        "all_locked_until": h.all_until.map(|t| t.to_string()),
    })
}

/// The lock horizon as text; nothing for a remote that is not immutable.
fn print_horizon(h: Option<&LockHorizon>) {
    let Some(h) = h else {
        return;
    };
    let until = match (&h.latest_until, &h.unknown_because) {
        (Some(t), _) => format!("newest object locked until {t}"),
        (None, Some(why)) => format!("lock date of the newest object unknown: {why}"),
        (None, None) => "the newest object carries no lock".to_owned(),
    };
    let all = match h.all_until {
        Some(t) => format!("; everything the last manifest needs locked until {t} at least"),
        None => String::new(),
    };
    println!(
        "object lock     {}, {} at least; {until}{all}",
        h.mode.as_s3().to_lowercase(),
        human_age(h.period_s as f64)
    );
}

/// The remote RPO as JSON, as `sync` and `remote show` print it.
fn rpo_json(rpo: &RemoteRpo) -> Value {
    json!({
        "newest_remote_point": rpo.newest_remote_point.as_ref().map(point_json),
        "newest_local_point": rpo.newest_local_point.as_ref().map(point_json),
        "rpo_seconds": rpo.remote_rpo.map(|d| d.as_secs_f64()),
        "behind": rpo.behind,
    })
}

/// The remote RPO as text; then the warning, if behind.
fn print_rpo(rpo: &RemoteRpo) {
    let point = |p: Option<&replog_reader::PointInfo>| match p {
        Some(p) => format!("point {} of {}", p.point_id, rfc3339(p.time_unix_ns)),
        None => "none yet".to_owned(),
    };
    println!(
        "remote point    {}",
        point(rpo.newest_remote_point.as_ref())
    );
    println!("local point     {}", point(rpo.newest_local_point.as_ref()));
    match rpo.remote_rpo {
        Some(age) => println!("remote RPO      {}", human_age(age.as_secs_f64())),
        None => println!("remote RPO      no point yet"),
    }
    warn_behind(rpo);
}

/// A warning on stderr when the remote is behind the local vault.
fn warn_behind(rpo: &RemoteRpo) {
    if !rpo.behind {
        return;
    }
    let remote = rpo
        .newest_remote_point
        .as_ref()
        .map_or("none".to_owned(), |p| format!("point {}", p.point_id));
    let local = rpo.newest_local_point.as_ref().map_or(0, |p| p.point_id);
    eprintln!(
        "replog: warning: the remote is behind the local vault: its newest is {remote}, the \
         local vault's is point {local}; a site loss now loses the points after it (run `replog sync`)"
    );
}

/// `replog sync`.
pub fn sync(ctx: &Ctx, args: &SyncArgs) -> CmdResult {
    let (vault, json) = (&args.vault, args.json);
    if args.seal {
        let mut w = open_writer(ctx.storage.clone(), vault)?;
        let sealed = w.seal_segment()?;
        w.close()?;
        if sealed && !json {
            println!("sealed the open segment of {}", vault.display());
        }
    }
    let storage = ctx.open(vault)?.storage().clone();
    let opts = SyncOptions {
        concurrency: args.concurrency,
        scrub: args.scrub,
    };
    let bar = progress(0, "sync");
    let started = Instant::now();
    let progress = |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    };
    let synced = replog_vault::sync(storage, vault, ctx.remote(), &opts, &progress)?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    print_sync(
        &synced.report,
        vault,
        &synced.url,
        json,
        seconds,
        &synced.rpo,
    );
    Ok(EXIT_OK)
}

fn print_sync(
    report: &SyncReport,
    vault: &Path,
    url: &str,
    json: bool,
    seconds: f64,
    rpo: &RemoteRpo,
) {
    let mb_per_s = report.bytes_written as f64 / 1e6 / seconds.max(1e-9);
    if json {
        let mut out = json!({
            "url": url,
            "manifest_seq": report.manifest_seq,
            "published": report.published,
            "files": report.files,
            "files_uploaded": report.files_uploaded,
            "chunks_written": report.chunks_written,
            "bytes_written": report.bytes_written,
            "chunks_present": report.chunks_present,
            "zero_chunks": report.zero_chunks,
            "evicted_files": report.evicted_files,
            "evicted_bytes": report.evicted_bytes,
            "local_bytes": report.local_bytes,
            "deleted_objects": report.deleted_objects,
            "seconds": seconds,
            "mb_per_s": mb_per_s,
            "peak_rss_bytes": replog_vault::peak_rss_bytes(),
            "remote_rpo": rpo_json(rpo),
        });
        // Only an immutable remote's report has the key.
        if let Some(l) = &report.lock {
            out["lock"] = json!({
                "mode": l.mode.as_s3().to_lowercase(),
                "period_seconds": l.period_s,
                "kept_locked": l.kept.objects,
                "kept_locked_until": l.kept.earliest_until.map(|t| t.to_string()),
            });
        }
        print_json(&out);
        warn_behind(rpo);
        return;
    }
    println!(
        "synced {} to {}: manifest {}{} names {} files; {} files read, {} chunks written ({}, {mb_per_s:.0} MB/s), {} already there, {} of zeros",
        vault.display(),
        url,
        report.manifest_seq,
        if report.published {
            ""
        } else {
            " (already published)"
        },
        report.files,
        report.files_uploaded,
        report.chunks_written,
        human_bytes(report.bytes_written),
        report.chunks_present,
        report.zero_chunks
    );
    if report.evicted_files > 0 {
        println!(
            "evicted {} local files ({}); {} of sealed files stay local",
            report.evicted_files,
            human_bytes(report.evicted_bytes),
            human_bytes(report.local_bytes)
        );
    }
    if report.deleted_objects > 0 {
        println!(
            "deleted {} remote objects no kept manifest needs",
            report.deleted_objects
        );
    }
    if let Some(l) = report.lock.as_ref().filter(|l| l.kept.objects > 0) {
        let until = (l.kept.earliest_until).map_or("an unknown date".to_owned(), |t| t.to_string());
        println!(
            "kept {} remote objects no kept manifest needs because they are locked; the first \
             can be deleted after {until}",
            l.kept.objects
        );
    }
    print_rpo(rpo);
}
