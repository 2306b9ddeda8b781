//! Dispatch, and the commands that write: `init`, `disk add`, `ingest`, `point`.

use std::path::Path;
use std::sync::Arc;

use replog_io::Storage;
use replog_writer::{Compression, PointKind, VaultSettings, Writer};
use serde_json::json;

use crate::cli::{
    Backend, BenchCommand, Cli, Command, CompressionArg, DiskAddArgs, DiskCommand, IngestArgs,
    InitArgs, PointArgs, RemoteCommand, SourceFormat,
};
use crate::output::{human_bytes, print_json, progress, rfc3339};
use crate::{CmdResult, EXIT_OK, Failure};
use replog_remote::{CACHE_CHUNKS_DEFAULT, RemoteOptions};
use replog_vault::{Access, Location, Vault};

/// What every command shares: the I/O backend and how to reach a remote.
pub struct Ctx {
    pub storage: Arc<dyn Storage>,
    remote: RemoteOptions,
    allow_older: bool,
}

impl Ctx {
    fn access(&self) -> Access {
        Access {
            storage: self.storage.clone(),
            remote: self.remote.clone(),
            allow_older: self.allow_older,
        }
    }

    /// Opens the vault `given` names (a directory, or a remote copy's URL), warning on stderr
    /// when a remote copy is read as of an older manifest.
    pub fn open(&self, given: &Path) -> Result<Vault, Failure> {
        self.open_with_cache(given, CACHE_CHUNKS_DEFAULT)
    }

    /// [`Ctx::open`], holding at most `cache_chunks` remote chunks in memory.
    pub fn open_with_cache(&self, given: &Path, cache_chunks: usize) -> Result<Vault, Failure> {
        let vault = Vault::open_with_cache(&Location::of(given), &self.access(), cache_chunks)?;
        if let Some(warning) = vault.older_manifest_warning() {
            eprintln!("replog: warning: {warning}");
        }
        Ok(vault)
    }

    /// The remote options from the command line.
    pub fn remote(&self) -> &RemoteOptions {
        &self.remote
    }
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> CmdResult {
    let ctx = Ctx {
        storage: storage(cli.backend)?,
        remote: crate::remote_commands::options(&cli),
        allow_older: cli.allow_older,
    };
    let vault = cli.command.vault().map(Path::to_path_buf);
    let journaled = matches!(cli.command, Command::Ingest(_) | Command::Point(_));
    let result = dispatch(&ctx, cli.command).map_err(|mut f| {
        if let (Some(vault), true) = (&vault, f.vault_relative) {
            f.message = format!("vault {}: {}", vault.display(), f.message);
        }
        f
    });
    if let (Ok(_), Some(vault), true) = (&result, vault, journaled) {
        // Indexing reads sealed segments' footers, which a sync may have evicted.
        let storage = ctx
            .open(&vault)
            .map_or_else(|_| ctx.storage.clone(), |v| v.storage().clone());
        crate::checkpoints::maintain(storage, &vault);
    }
    result
}

/// Runs one command: the one table from commands to the code that runs them.
fn dispatch(ctx: &Ctx, command: Command) -> CmdResult {
    use crate::{bench, bench_resolve, docs, lifecycle_commands as life};
    use crate::{read_commands as read, remote_commands as remote};
    let storage = || ctx.storage.clone();
    // The storage a vault's files are read through (its remote's, for evicted files) and its
    // directory.
    let opened = |p: &Path| {
        ctx.open(p)
            .map(|v| (v.storage().clone(), v.dir().to_path_buf()))
    };
    match command {
        Command::Init(a) => init(storage(), &a),
        Command::Disk(DiskCommand::Add(a)) => disk_add(storage(), &a),
        Command::Ingest(a) => ingest(storage(), &a),
        Command::Point(a) => point(storage(), &a),
        Command::Points(a) => opened(&a.vault).and_then(|(s, d)| read::points(s, &d, a.json)),
        Command::Inspect(a) => read::inspect(&ctx.open(&a.vault)?, a.json),
        Command::Dump(a) => {
            opened(&a.vault).and_then(|(s, d)| read::dump(s, &d, a.segment, a.json))
        }
        Command::Verify(a) => opened(&a.vault).and_then(|(s, d)| read::verify(s, &d, a.json)),
        Command::Failover(a) => read::failover(ctx, &a),
        Command::Remote(RemoteCommand::Add(a)) => remote::add(&a, ctx.remote()),
        Command::Remote(RemoteCommand::Show(a)) => remote::show(&a.vault, a.json),
        Command::Sync(a) => remote::sync(ctx, &a),
        Command::Retention(a) => life::retention(&ctx.open(&a.vault)?, &a),
        Command::Prune(a) => life::prune(&ctx.open(&a.vault)?, &a),
        Command::TestFailover(a) => life::test_failover(&ctx.open(&a.vault)?, &a),
        Command::CompleteMigration(a) => life::complete(&ctx.open(&a.vault)?, &a),
        Command::ServeNbd(a) => crate::nbd::run(ctx.open(&a.vault)?.storage().clone(), &a),
        Command::Demo(a) => crate::demo::run(storage(), a.dir),
        Command::Completions(a) => docs::completions(a.shell),
        Command::Man(a) => docs::man_pages(&a.dir),
        Command::Checkpoint(a) => {
            let storage = ctx.open(&a.vault)?.storage().clone();
            bench_resolve::checkpoint(storage, &a.vault, a.at_lsn, a.json)
        }
        Command::Bench(BenchCommand::Resolve(a)) => {
            bench_resolve::resolve(storage(), &a.vault, a.json)
        }
        Command::Bench(BenchCommand::Write(a)) => bench::write_command(storage(), a),
        Command::Torture(a) => crate::torture::run(storage(), &a.vault, &a.name, a.seed, a.ops),
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

fn init(storage: Arc<dyn Storage>, args: &InitArgs) -> CmdResult {
    let (vault, block) = (&args.vault, args.block_size);
    let settings = VaultSettings {
        block_bytes: u32::try_from(block)
            .map_err(|_| Failure::new(format!("block size {block} is too large")))?,
        segment_bytes: args.segment_size,
        compression: compression_of(args.compression),
    };
    Writer::create(storage, vault, settings)?.close()?;
    println!("created vault {}", vault.display());
    Ok(EXIT_OK)
}

pub fn compression_of(c: CompressionArg) -> Compression {
    match c {
        CompressionArg::None => Compression::None,
        CompressionArg::Lz4 => Compression::Lz4,
    }
}

fn disk_add(storage: Arc<dyn Storage>, args: &DiskAddArgs) -> CmdResult {
    let (vault, name, size, json) = (&args.vault, &args.name, args.size, args.json);
    let format = args.format.unwrap_or(SourceFormat::Auto);
    let from = args.from.as_deref().map(|f| (f, format));
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

fn ingest(storage: Arc<dyn Storage>, args: &IngestArgs) -> CmdResult {
    let (vault, name, from, format, json) =
        (&args.vault, &args.name, &args.from, args.format, args.json);
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

fn point(storage: Arc<dyn Storage>, args: &PointArgs) -> CmdResult {
    let (vault, label, json) = (&args.vault, &args.label, args.json);
    let kind = if args.app_consistent {
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
