//! `replog bench resolve`: how long opening a vault and resolving recovery points take, the
//! time to the first byte of a failover. Reported per point: the newest, the middle and the
//! oldest, each with the checkpoint index it started from and the pieces of its extent maps.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use replog_io::Storage;
use replog_reader::Vault;
use serde_json::{Value, json};

use crate::bench::peak_rss_bytes;
use crate::output::print_json;
use crate::{CmdResult, EXIT_OK, Failure};

/// Opens `vault`, resolves its newest, middle and oldest point, and reports the times.
pub fn resolve(storage: Arc<dyn Storage>, vault: &Path, json: bool) -> CmdResult {
    let started = Instant::now();
    let v = Vault::open(storage, vault)?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let points = v.points();
    if points.is_empty() {
        return Err(Failure::new(format!(
            "{}: the vault has no recovery point to resolve",
            vault.display()
        )));
    }
    let picks = [
        ("newest", points.len() - 1),
        ("middle", points.len() / 2),
        ("oldest", 0),
    ];
    let mut rows = Vec::new();
    for (name, index) in picks {
        let p = &points[index];
        let started = Instant::now();
        let view = v.view(p)?;
        let resolve_ms = started.elapsed().as_secs_f64() * 1e3;
        let pieces: usize = view.disks().iter().map(|d| d.extent_map().len()).sum();
        rows.push(json!({
            "point": name,
            "point_id": p.point_id,
            "lsn": p.lsn,
            "resolve_ms": resolve_ms,
            "checkpoint_lsn": view.checkpoint_lsn(),
            "pieces": pieces,
        }));
    }
    let out = json!({
        "records": v.last_lsn(),
        "points": points.len(),
        "open_ms": open_ms,
        "resolve": rows,
        "peak_rss_bytes": peak_rss_bytes(),
    });
    if json {
        print_json(&out);
    } else {
        println!(
            "open {:.1} ms; {} LSNs, {} points",
            open_ms,
            v.last_lsn(),
            points.len()
        );
        for r in rows {
            println!(
                "{:>6} point {:>8} (LSN {:>9}): resolved in {:>9.1} ms, {:>9} pieces, checkpoint {}",
                r["point"].as_str().unwrap_or(""),
                r["point_id"],
                r["lsn"],
                r["resolve_ms"].as_f64().unwrap_or(0.0),
                r["pieces"],
                match &r["checkpoint_lsn"] {
                    Value::Null => "none".to_owned(),
                    l => format!("at LSN {l}"),
                }
            );
        }
        println!("peak memory {} MiB", peak_rss_bytes() >> 20);
    }
    Ok(EXIT_OK)
}

/// `replog checkpoint`: writes a checkpoint index now, at the end of the newest sealed segment
/// that ends at or before `at_lsn` (the newest sealed segment without it).
pub fn checkpoint(
    storage: Arc<dyn Storage>,
    vault: &Path,
    at_lsn: Option<u64>,
    json: bool,
) -> CmdResult {
    let v = Vault::open(storage, vault)?;
    let ends = v.sealed_segment_ends();
    let Some(lsn) = ends
        .iter()
        .copied()
        .filter(|&e| at_lsn.is_none_or(|at| e <= at))
        .max()
    else {
        return Err(Failure::new(format!(
            "{}: no sealed journal segment ends{} at or after the base; nothing to index",
            vault.display(),
            at_lsn.map_or(String::new(), |at| format!(" at or before LSN {at}"))
        )));
    };
    let started = Instant::now();
    let info = replog_reader::checkpoint::write(&v, lsn)?;
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
