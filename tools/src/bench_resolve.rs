//! `replog bench resolve` and `replog checkpoint`: the time to the first byte of a failover,
//! and the checkpoint index that shortens it. The work is `replog-vault`'s; this shows it.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use replog_io::Storage;
use replog_reader::{ReadOrder, ViewOptions};
use replog_vault::Vault;
use serde_json::json;

use crate::output::print_json;
use crate::{CmdResult, EXIT_OK};

/// Opens `vault`, resolves its newest, middle and oldest point with views whose extent maps
/// may take `memory_limit_bytes`, and reports the times.
pub fn resolve(
    storage: Arc<dyn Storage>,
    vault: &Path,
    memory_limit_bytes: u64,
    json: bool,
) -> CmdResult {
    let opts = ViewOptions { memory_limit_bytes };
    let r = replog_vault::resolve_bench(storage, vault, &opts)?;
    if json {
        print_json(&r);
        return Ok(EXIT_OK);
    }
    println!(
        "open {:.1} ms; {} LSNs, {} points",
        r.open_ms, r.records, r.points
    );
    for p in &r.resolve {
        println!(
            "{:>6} point {} (LSN {}): resolved in {:>9.1} ms, {} pieces, checkpoint {}, {} ({} MiB)",
            p.point,
            p.point_id,
            p.lsn,
            p.resolve_ms,
            p.pieces,
            p.checkpoint_lsn
                .map_or("none".to_owned(), |l| format!("at LSN {l}")),
            p.mode,
            p.memory_bytes >> 20
        );
    }
    if let Some(l) = &r.lookup {
        println!(
            "checkpoint at LSN {} in place ({} pieces): opened in {:.2} ms, first lookup {:.0} us, {} lookups {:.1} us each ({} block reads, {} cache hits, cache {} KiB)",
            l.checkpoint_lsn,
            l.pieces,
            l.open_ms,
            l.first_lookup_us,
            l.lookups,
            l.mean_lookup_us,
            l.block_reads,
            l.cache_hits,
            l.cache_bytes >> 10
        );
    }
    println!("peak memory {} MiB", r.peak_rss_bytes >> 20);
    Ok(EXIT_OK)
}

/// `replog checkpoint`: writes a checkpoint index now, at the end of the newest sealed segment
/// that ends at or before `at_lsn` (the newest sealed segment without it).
pub fn checkpoint(vault: &Vault, at_lsn: Option<u64>, json: bool) -> CmdResult {
    let started = Instant::now();
    let info = vault.write_checkpoint(at_lsn)?;
    let seconds = started.elapsed().as_secs_f64();
    if json {
        print_json(&json!({
            "lsn": info.lsn,
            "path": info.path,
            "pieces": info.pieces,
            "file_bytes": info.file_bytes,
            "seconds": seconds,
        }));
    } else {
        println!(
            "checkpoint at LSN {}: {} pieces, {} bytes, {} ({seconds:.2} s)",
            info.lsn,
            info.pieces,
            info.file_bytes,
            info.path.display()
        );
    }
    Ok(EXIT_OK)
}

/// `replog bench read`: a failover's read pass of one point, timed, nothing written.
pub fn read(storage: Arc<dyn Storage>, args: &crate::cli::BenchReadArgs) -> CmdResult {
    let choice = match args.point {
        Some(id) => replog_vault::PointChoice::Id(id),
        None => replog_vault::PointChoice::Latest,
    };
    let opts = ViewOptions {
        memory_limit_bytes: args.memory_limit,
    };
    let read = replog_reader::ReadPassOptions {
        order: match args.order {
            crate::cli::Order::Auto => ReadOrder::Auto,
            crate::cli::Order::Disk => ReadOrder::Disk,
            crate::cli::Order::Journal => ReadOrder::Journal,
        },
        scratch: args.scratch.clone(),
        sort_run_pieces: 0,
    };
    let r = replog_vault::read_bench(storage, &args.vault, &choice, &opts, &read)?;
    if args.json {
        print_json(&r);
        return Ok(EXIT_OK);
    }
    println!(
        "point {} (LSN {}): resolved in {:.1} ms ({}, {} MiB of maps); read {} MiB of data \
         ({} MiB of disks) in {:.2} s, {} pieces in journal order; peak memory {} MiB",
        r.point_id,
        r.lsn,
        r.resolve_ms,
        r.mode,
        r.memory_bytes >> 20,
        r.data_bytes >> 20,
        r.disk_bytes >> 20,
        r.read_seconds,
        r.journal_order_pieces,
        r.peak_rss_bytes >> 20
    );
    Ok(EXIT_OK)
}
