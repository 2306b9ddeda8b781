//! Running a command line: the one table from commands to the code that runs them.

use std::path::Path;

use crate::CmdResult;
use crate::cli::{BenchCommand, Cli, Command, DiskCommand, KeyCommand, RemoteCommand};
use crate::context::Ctx;
use crate::write_commands::{disk_add, disk_resize, ingest, init, point};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> CmdResult {
    let ctx = Ctx::from_cli(&cli)?;
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
        if let Err(e) = replog_vault::maintain_checkpoint(storage, &vault) {
            // The command's own work is durable; views replay the journal instead.
            eprintln!("replog: warning: the checkpoint index was not updated: {e}");
        }
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
        Command::Disk(DiskCommand::Resize(a)) => disk_resize(storage(), &a),
        Command::Ingest(a) => ingest(storage(), &a),
        Command::Point(a) => point(storage(), &a),
        Command::Points(a) => opened(&a.vault).and_then(|(s, d)| read::points(s, &d, a.json)),
        Command::Inspect(a) => read::inspect(&ctx.open(&a.vault)?, a.json),
        Command::Dump(a) => {
            opened(&a.vault).and_then(|(s, d)| read::dump(s, &d, a.segment, a.json))
        }
        Command::Verify(a) => read::verify(&ctx.open(&a.vault)?, &a),
        Command::Failover(a) if a.live => crate::nbd::live::run(ctx, &a),
        Command::Failover(a) => read::failover(ctx, &a),
        Command::Remote(RemoteCommand::Add(a)) => remote::add(&a, ctx.remote()),
        Command::Remote(RemoteCommand::Show(a)) => remote::show(&a.vault, a.json, ctx.remote()),
        Command::Sync(a) => remote::sync(ctx, &a),
        Command::Key(KeyCommand::Generate(a)) => crate::key_commands::generate(&a),
        Command::Replicate(a) => crate::replicate_commands::run(ctx, &a),
        Command::Retention(a) => life::retention(&ctx.open(&a.vault)?, &a),
        Command::Prune(a) => life::prune(&ctx.open(&a.vault)?, &a),
        Command::TestFailover(a) => life::test_failover(&ctx.open(&a.vault)?, &a),
        Command::CompleteMigration(a) => life::complete(&ctx.open(&a.vault)?, &a),
        Command::ServeNbd(a) => crate::nbd::run(ctx.open(&a.vault)?.storage().clone(), &a),
        Command::Demo(a) => crate::demo::run(storage(), a.dir),
        Command::Completions(a) => docs::completions(a.shell),
        Command::Man(a) => docs::man_pages(&a.dir),
        Command::Checkpoint(a) => bench_resolve::checkpoint(&ctx.open(&a.vault)?, a.at_lsn, a.json),
        Command::Bench(BenchCommand::Resolve(a)) => {
            bench_resolve::resolve(storage(), &a.vault, a.memory_limit, a.json)
        }
        Command::Bench(BenchCommand::Read(a)) => bench_resolve::read(storage(), &a),
        Command::Bench(BenchCommand::Write(a)) => bench::write_command(storage(), a),
        Command::Torture(a) => crate::torture::run(storage(), &a.vault, &a.name, a.seed, a.ops),
    }
}
