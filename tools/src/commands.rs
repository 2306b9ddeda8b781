//! Dispatch, and the commands that write: `init`, `disk add`, `ingest`, `point`.

use std::path::Path;
use std::sync::Arc;

use replog_io::{OpenMode, Storage};
use replog_writer::{Compression, PointKind, VaultSettings, Writer};
use serde_json::json;

use crate::cli::{
    Backend, BenchCommand, Cli, Command, CompressionArg, DiskCommand, Pattern, RemoteCommand,
    SourceFormat,
};
use crate::output::{human_bytes, print_json, progress, rfc3339};
use crate::{CmdResult, EXIT_OK, Failure};
use replog_remote::RemoteOptions;

/// Runs one parsed command line.
pub fn run(cli: Cli) -> CmdResult {
    let storage = storage(cli.backend)?;
    let remote = crate::remote_commands::options(&cli);
    let vault = cli.command.vault().map(Path::to_path_buf);
    let journaled = match &cli.command {
        Command::Ingest { vault, .. } | Command::Point { vault, .. } => Some(vault.clone()),
        _ => None,
    };
    let result = dispatch(storage.clone(), cli.command, &remote).map_err(|mut f| {
        if let (Some(vault), true) = (&vault, f.vault_relative) {
            f.message = format!("vault {}: {}", vault.display(), f.message);
        }
        f
    });
    if let (Ok(_), Some(vault)) = (&result, journaled) {
        // Indexing reads sealed segments' footers, which a sync may have evicted.
        let storage =
            crate::remote_commands::tiered(storage.clone(), &vault, &remote).unwrap_or(storage);
        crate::checkpoints::maintain(storage, &vault);
    }
    result
}

/// Runs one command.
fn dispatch(storage: Arc<dyn Storage>, command: Command, remote: &RemoteOptions) -> CmdResult {
    // A local vault whose sync evicted files reads them from its remote.
    let tiered = |vault: &Path| crate::remote_commands::tiered(storage.clone(), vault, remote);
    match command {
        Command::Init {
            vault,
            block_size,
            segment_size,
            compression,
        } => init(storage, &vault, block_size, segment_size, compression),
        Command::Disk(DiskCommand::Add {
            vault,
            name,
            from,
            format,
            size,
            json,
        }) => {
            let format = format.unwrap_or(SourceFormat::Auto);
            let source = from.as_deref().map(|f| (f, format));
            disk_add(storage, &vault, &name, source, size, json)
        }
        Command::Ingest {
            vault,
            name,
            from,
            format,
            json,
        } => ingest(storage, &vault, &name, &from, format, json),
        Command::Point {
            vault,
            app_consistent,
            label,
            json,
        } => point(storage, &vault, app_consistent, &label, json),
        Command::Points { vault, json } => {
            let (storage, vault) = crate::remote_commands::resolve(storage, &vault, remote)?;
            crate::read_commands::points(storage, &vault, json)
        }
        Command::Inspect { vault, json } => {
            let (storage, vault) = crate::remote_commands::resolve(storage, &vault, remote)?;
            crate::read_commands::inspect(storage, &vault, json)
        }
        Command::Dump {
            vault,
            segment,
            json,
        } => {
            let (storage, vault) = crate::remote_commands::resolve(storage, &vault, remote)?;
            crate::read_commands::dump(storage, &vault, segment, json)
        }
        Command::Verify { vault, json } => {
            let (storage, vault) = crate::remote_commands::resolve(storage, &vault, remote)?;
            crate::read_commands::verify(storage, &vault, json)
        }
        Command::Failover(args) => crate::read_commands::failover(storage, &args, remote),
        Command::Remote(RemoteCommand::Add {
            vault,
            url,
            cache_limit,
            keep_manifests,
        }) => crate::remote_commands::add(&vault, &url, cache_limit, keep_manifests, remote),
        Command::Remote(RemoteCommand::Show { vault, json }) => {
            crate::remote_commands::show(&vault, json)
        }
        Command::Sync {
            vault,
            concurrency,
            seal,
            scrub,
            json,
        } => {
            if seal {
                let mut w = open_writer(storage.clone(), &vault)?;
                let sealed = w.seal_segment()?;
                w.close()?;
                if sealed && !json {
                    println!("sealed the open segment of {}", vault.display());
                }
            }
            let opts = replog_remote::SyncOptions { concurrency, scrub };
            crate::remote_commands::sync(tiered(&vault)?, &vault, &opts, json, remote)
        }
        Command::Retention(args) => crate::lifecycle_commands::retention(storage, &args),
        Command::Prune(args) => crate::lifecycle_commands::prune(tiered(&args.vault)?, &args),
        Command::TestFailover(args) => {
            crate::lifecycle_commands::test_failover(tiered(&args.vault)?, &args)
        }
        Command::CompleteMigration(args) => {
            crate::lifecycle_commands::complete(tiered(&args.vault)?, &args)
        }
        Command::ServeNbd(args) => crate::nbd::run(tiered(&args.vault)?, &args),
        Command::Demo { dir } => crate::demo::run(storage, dir),
        Command::Completions { shell } => crate::docs::completions(shell),
        Command::Man { dir } => crate::docs::man_pages(&dir),
        Command::Checkpoint {
            vault,
            at_lsn,
            json,
        } => crate::bench_resolve::checkpoint(tiered(&vault)?, &vault, at_lsn, json),
        Command::Bench(BenchCommand::Resolve { vault, json }) => {
            crate::bench_resolve::resolve(storage, &vault, json)
        }
        Command::Bench(BenchCommand::Write {
            vault,
            pattern,
            block,
            total,
            point_every,
            disk_size,
            compression,
            data,
            in_flight,
            buffer,
            direct,
            preallocate,
            points_in_flight,
            batch,
            json,
        }) => {
            let data = match data.as_str() {
                "random" => crate::bench::DataSource::Random,
                "zero" => crate::bench::DataSource::Zero,
                file => crate::bench::DataSource::File(file.into()),
            };
            let b = crate::bench::WriteBench {
                vault,
                random: matches!(pattern, Pattern::Rand),
                block_bytes: block,
                total_bytes: total,
                point_every_bytes: point_every,
                disk_bytes: disk_size,
                compression: compression_of(compression),
                data,
                options: crate::bench::writer_options(in_flight, buffer, direct, preallocate),
                points_in_flight,
                batch,
                json,
            };
            crate::bench::write(storage, &b)
        }
        Command::Torture {
            vault,
            name,
            seed,
            ops,
        } => crate::torture::run(storage, &vault, &name, seed, ops),
    }
}

/// The storage backend chosen on the command line or by `REPLOG_IO_BACKEND`.
pub fn storage(backend: Backend) -> Result<Arc<dyn Storage>, Failure> {
    let name = match backend {
        Backend::Auto => "auto",
        Backend::Uring => "uring",
        Backend::Sync => "sync",
    };
    replog_io::backend(name)
        .map_err(|e| Failure::new(format!("the {name} I/O backend is unavailable: {e}")))
}

fn init(
    storage: Arc<dyn Storage>,
    vault: &Path,
    block: u64,
    segment: u64,
    compression: CompressionArg,
) -> CmdResult {
    let settings = VaultSettings {
        block_bytes: u32::try_from(block)
            .map_err(|_| Failure::new(format!("block size {block} is too large")))?,
        segment_bytes: segment,
        compression: compression_of(compression),
    };
    Writer::create(storage, vault, settings)?.close()?;
    println!("created vault {}", vault.display());
    Ok(EXIT_OK)
}

fn compression_of(c: CompressionArg) -> Compression {
    match c {
        CompressionArg::None => Compression::None,
        CompressionArg::Lz4 => Compression::Lz4,
    }
}

fn disk_add(
    storage: Arc<dyn Storage>,
    vault: &Path,
    name: &str,
    from: Option<(&Path, SourceFormat)>,
    size: Option<u64>,
    json: bool,
) -> CmdResult {
    let mut w = open_writer(storage.clone(), vault)?;
    let mut image = None;
    let disk = match (from, size) {
        (Some((image_path, format)), _) => {
            let source = crate::import::open(storage.as_ref(), image_path, format, vault)?;
            let disk = w.add_disk_from_image(name, source.file.as_ref(), image_path)?;
            image = Some(source);
            disk
        }
        (None, Some(bytes)) => w.add_disk(name, bytes)?,
        (None, None) => return Err(Failure::new("give --from IMAGE or --size BYTES")),
    };
    w.close()?;
    if json {
        print_json(&json!({
            "disk": disk.name,
            "disk_id": disk.disk_id,
            "disk_bytes": disk.disk_bytes,
            "image_format": image.as_ref().map(|i| i.format.clone()),
            "bytes_read": image.as_ref().map_or(0, |i| i.bytes_read()),
        }));
        return Ok(EXIT_OK);
    }
    let read_as = match &image {
        Some(i) if i.format != "raw" => format!(" from a {} image", i.format),
        _ => String::new(),
    };
    println!(
        "added disk {} ({}, {} bytes) as id {}{read_as}",
        disk.name,
        human_bytes(disk.disk_bytes),
        disk.disk_bytes,
        disk.disk_id
    );
    Ok(EXIT_OK)
}

fn ingest(
    storage: Arc<dyn Storage>,
    vault: &Path,
    name: &str,
    from: &Path,
    format: SourceFormat,
    json: bool,
) -> CmdResult {
    let mut w = open_writer(storage.clone(), vault)?;
    let total = w.disk(name)?.disk_bytes;
    let image = crate::import::open(storage.as_ref(), from, format, vault)?;
    let bar = progress(total, "ingest");
    let started = std::time::Instant::now();
    let stats = w.ingest(name, image.file.as_ref(), from, &|done| {
        bar.set_position(done)
    })?;
    bar.finish_and_clear();
    w.close()?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        print_json(&json!({
            "disk": name,
            "bytes_scanned": stats.bytes_scanned,
            "bytes_read": image.bytes_read(),
            "bytes_changed": stats.bytes_changed,
            "bytes_stored": stats.bytes_stored,
            "records": stats.records,
            "digest_cache": stats.digest_cache,
            "image_format": image.format,
            "seconds": seconds,
        }));
    } else {
        println!(
            "ingested {name}: scanned {} in {seconds:.2}s ({:.0} MB/s), {} changed, {} written in {} records (digest cache {})",
            human_bytes(stats.bytes_scanned),
            stats.bytes_scanned as f64 / seconds.max(1e-9) / 1e6,
            human_bytes(stats.bytes_changed),
            human_bytes(stats.bytes_stored),
            stats.records,
            stats.digest_cache
        );
    }
    Ok(EXIT_OK)
}

fn point(storage: Arc<dyn Storage>, vault: &Path, app: bool, label: &str, json: bool) -> CmdResult {
    let kind = if app {
        PointKind::AppConsistent
    } else {
        PointKind::CrashConsistent
    };
    let p = match Writer::open(storage, vault) {
        Ok(w) => {
            let mut w = reported(w);
            let p = w.point(kind, label)?;
            w.close()?;
            p
        }
        // A capturing NBD server holds the writer: it takes the point, which then covers every
        // write it acknowledged.
        Err(e) if e.kind == replog_writer::WriteErrorKind::Locked => {
            match crate::nbd::control::request_point(vault, kind, label)? {
                Some(p) => p,
                None => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if json {
        print_json(
            &json!({"id": p.point_id, "lsn": p.lsn, "time": rfc3339(p.time_unix_ns), "kind": p.kind.name(), "label": p.label}),
        );
    } else {
        println!("{}", p.point_id);
    }
    Ok(EXIT_OK)
}

/// Opens the vault for writing and tells the operator what recovery did, if anything.
pub fn open_writer(storage: Arc<dyn Storage>, vault: &Path) -> Result<Writer, Failure> {
    Ok(reported(Writer::open(storage, vault)?))
}

/// Tells the operator what opening `w` recovered, if anything.
fn reported(w: Writer) -> Writer {
    let r = w.recovery_report();
    if let Some((path, offset, bytes, kept)) = &r.torn_tail {
        eprintln!(
            "replog: recovered from an interrupted write: cut {bytes} unacknowledged bytes at byte {offset} of {} (kept in {})",
            path.display(),
            kept.display()
        );
    }
    if r.completed_rotation {
        eprintln!("replog: completed an interrupted segment rotation");
    }
    w
}

/// Opens a source image for reading, with a message naming it when that fails.
pub fn open_image(storage: &dyn Storage, path: &Path) -> Result<Arc<dyn replog_io::File>, Failure> {
    storage
        .open(path, OpenMode::Read)
        .map_err(|e| Failure::new(format!("{}: cannot open the image: {e}", path.display())))
}
