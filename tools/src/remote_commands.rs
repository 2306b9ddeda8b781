//! The commands of object storage: `remote add`, `remote show`, `sync`, and opening a vault
//! named by a remote URL for `points`, `inspect` and `failover`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use replog_format::remote::{KEEP_MANIFESTS_MAX, RemoteConfig, is_remote_url, looks_like_url};
use replog_io::Storage;
use replog_reader::Vault;
use replog_remote::{
    CACHE_CHUNKS_DEFAULT, LocalVault, Remote, RemoteOptions, RemoteVault, SyncOptions,
};
use serde_json::json;

use crate::cli::Cli;
use crate::output::{human_bytes, print_json, progress, rfc3339};
use crate::{CmdResult, EXIT_OK, Failure};

/// `--allow-older`: read an older remote manifest when newer ones are missing or damaged. Set
/// once, from the command line, by [`options`].
static ALLOW_OLDER: AtomicBool = AtomicBool::new(false);

/// Remote options from the command line.
pub fn options(cli: &Cli) -> RemoteOptions {
    ALLOW_OLDER.store(cli.allow_older, Ordering::Relaxed);
    RemoteOptions {
        config: cli.remote_options.clone(),
        retries: cli.remote_retries,
        retry_timeout: Duration::from_secs(60),
        ..RemoteOptions::default()
    }
}

/// The URL `vault` is, when it names a remote rather than a directory.
pub fn remote_url(vault: &Path) -> Option<&str> {
    vault.to_str().filter(|s| is_remote_url(s))
}

/// Opens the vault at a remote URL, read-only, holding `cache_chunks` chunks in memory.
pub fn open(
    storage: Arc<dyn Storage>,
    url: &str,
    opts: &RemoteOptions,
    cache_chunks: usize,
) -> Result<(Vault, RemoteVault), Failure> {
    let rv = open_remote(storage, url, opts, cache_chunks)?;
    let vault = Vault::open(rv.storage.clone(), &rv.root)?;
    Ok((vault, rv))
}

/// Opens the remote vault at `url`, reading an older manifest only with `--allow-older`, and
/// then saying so.
fn open_remote(
    storage: Arc<dyn Storage>,
    url: &str,
    opts: &RemoteOptions,
    cache_chunks: usize,
) -> Result<RemoteVault, Failure> {
    let remote = Arc::new(Remote::open(url, opts)?);
    let allow_older = ALLOW_OLDER.load(Ordering::Relaxed);
    let rv = replog_remote::open_remote_with(remote, storage, cache_chunks, allow_older)?;
    if let Some(warning) = &rv.older_warning {
        eprintln!("replog: warning: {warning}");
    }
    Ok(rv)
}

/// The storage and directory to read the vault `vault` names through: a remote URL opens the
/// remote vault alone; a local vault whose sync evicted files reads them from its remote.
pub fn resolve(
    storage: Arc<dyn Storage>,
    vault: &Path,
    opts: &RemoteOptions,
) -> Result<(Arc<dyn Storage>, PathBuf), Failure> {
    match remote_url(vault) {
        Some(url) => {
            let rv = open_remote(storage, url, opts, CACHE_CHUNKS_DEFAULT)?;
            Ok((rv.storage, rv.root))
        }
        None => Ok((tiered(storage, vault, opts)?, vault.to_path_buf())),
    }
}

/// `storage`, or a tiered storage over it when the local vault has evicted files. A vault
/// named by a URL of a scheme replog does not know (`gs://b`, `s3:/x`) is refused as such,
/// rather than looked for as a directory.
pub fn tiered(
    storage: Arc<dyn Storage>,
    vault: &Path,
    opts: &RemoteOptions,
) -> Result<Arc<dyn Storage>, Failure> {
    if let Some(s) = vault.to_str()
        && looks_like_url(s)
        && !vault.exists()
    {
        replog_remote::check_url(s)?;
    }
    Ok(replog_remote::storage_for_vault(storage, vault, opts)?)
}

/// `replog remote add`.
pub fn add(
    vault: &Path,
    url: &str,
    cache_limit: u64,
    keep_manifests: u32,
    opts: &RemoteOptions,
) -> CmdResult {
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
pub fn sync(
    storage: Arc<dyn Storage>,
    vault: &Path,
    sync_opts: &SyncOptions,
    json: bool,
    opts: &RemoteOptions,
) -> CmdResult {
    let local = LocalVault::open(vault)?;
    let config = local.required_config()?;
    let remote = Remote::open(&config.url, opts)?;
    let bar = progress(0, "sync");
    let started = Instant::now();
    let report = replog_remote::sync(storage, vault, &remote, sync_opts, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let mb_per_s = report.bytes_written as f64 / 1e6 / seconds.max(1e-9);
    if json {
        print_json(&json!({
            "url": config.url,
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
        return Ok(EXIT_OK);
    }
    println!(
        "synced {} to {}: manifest {}{} names {} files; {} files read, {} chunks written ({}, {mb_per_s:.0} MB/s), {} already there, {} of zeros",
        vault.display(),
        config.url,
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
    Ok(EXIT_OK)
}
