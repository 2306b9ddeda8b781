//! The commands of object storage: `remote add`, `remote show`, `sync`, and opening a vault
//! named by a remote URL for `points`, `inspect` and `failover`.

use std::path::Path;
use std::time::Instant;

use replog_format::remote::{KEEP_MANIFESTS_MAX, RemoteConfig};
use replog_remote::{LocalVault, Remote, RemoteOptions, SyncOptions, SyncReport};
use serde_json::json;

use crate::cli::{RemoteAddArgs, SyncArgs};
use crate::context::{Ctx, open_writer};
use crate::output::{human_bytes, print_json, progress, rfc3339};
use crate::{CmdResult, EXIT_OK, Failure};

/// `replog remote add`.
pub fn add(args: &RemoteAddArgs, opts: &RemoteOptions) -> CmdResult {
    let (vault, url) = (&args.vault, &args.url);
    let (cache_limit, keep_manifests) = (args.cache_limit, args.keep_manifests);
    // Every limit is checked before anything is read or written, here or on the remote.
    replog_remote::check_url(url)?;
    if !(1..=KEEP_MANIFESTS_MAX).contains(&keep_manifests) {
        return Err(Failure::new(format!(
            "--keep-manifests must be 1 to {KEEP_MANIFESTS_MAX}"
        )));
    }
    let local = LocalVault::open(vault)?;
    if let Some(old) = local.config()?
        && old.url.trim_end_matches('/') != url.trim_end_matches('/')
    {
        return Err(Failure::new(format!(
            "{} already syncs to {}; a vault has one remote",
            vault.display(),
            old.url
        )));
    }
    let remote = Remote::open(url, opts)?;
    replog_remote::claim(&local, &remote)?;
    local.write_config(&RemoteConfig {
        vault_id: local.vault_id,
        url: remote.url().to_owned(),
        cache_limit_bytes: cache_limit,
        keep_manifests,
    })?;
    println!(
        "{} syncs to {} (local cache limit {}, {keep_manifests} remote manifests kept); run `replog sync {}`",
        vault.display(),
        remote.url(),
        if cache_limit == 0 {
            "none".to_owned()
        } else {
            human_bytes(cache_limit)
        },
        vault.display()
    );
    Ok(EXIT_OK)
}

/// `replog remote show`.
pub fn show(vault: &Path, json: bool) -> CmdResult {
    let local = LocalVault::open(vault)?;
    let config = local.required_config()?;
    let latest = local.latest()?;
    let (mut local_files, mut remote_only) = (0, 0);
    if let Some(l) = &latest {
        for f in &l.files {
            if vault.join(replog_remote::file_path(&f.id)).exists() {
                local_files += 1;
            } else {
                remote_only += 1;
            }
        }
    }
    if json {
        print_json(&json!({
            "url": config.url,
            "cache_limit_bytes": config.cache_limit_bytes,
            "keep_manifests": config.keep_manifests,
            "latest_manifest": latest.as_ref().map(|l| json!({"seq": l.seq, "time": rfc3339(l.time_unix_ns), "files": l.files.len()})),
            "files_local": local_files,
            "files_remote_only": remote_only,
        }));
        return Ok(EXIT_OK);
    }
    println!("remote          {}", config.url);
    println!(
        "cache limit     {}",
        if config.cache_limit_bytes == 0 {
            "none".to_owned()
        } else {
            human_bytes(config.cache_limit_bytes)
        }
    );
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
    Ok(EXIT_OK)
}

/// `replog sync`.
pub fn sync(ctx: &Ctx, args: &SyncArgs) -> CmdResult {
    let (vault, json, opts) = (&args.vault, args.json, ctx.remote());
    if args.seal {
        let mut w = open_writer(ctx.storage.clone(), vault)?;
        let sealed = w.seal_segment()?;
        w.close()?;
        if sealed && !json {
            println!("sealed the open segment of {}", vault.display());
        }
    }
    let storage = ctx.open(vault)?.storage().clone();
    let sync_opts = SyncOptions {
        concurrency: args.concurrency,
        scrub: args.scrub,
    };
    let local = LocalVault::open(vault)?;
    let config = local.required_config()?;
    let remote = Remote::open(&config.url, opts)?;
    let bar = progress(0, "sync");
    let started = Instant::now();
    let report = replog_remote::sync(storage, vault, &remote, &sync_opts, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    print_sync(&report, vault, &config.url, json, seconds);
    Ok(EXIT_OK)
}

fn print_sync(report: &SyncReport, vault: &Path, url: &str, json: bool, seconds: f64) {
    let mb_per_s = report.bytes_written as f64 / 1e6 / seconds.max(1e-9);
    if json {
        print_json(&json!({
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
            "peak_rss_bytes": crate::bench::peak_rss_bytes(),
        }));
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
}
