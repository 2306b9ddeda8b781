//! The commands that write: `init`, `disk add`, `ingest`, `point`.

use std::sync::Arc;

use replog_io::Storage;
use replog_writer::{PointKind, VaultSettings, Writer};
use serde_json::json;

use crate::cli::{DiskAddArgs, IngestArgs, InitArgs, PointArgs, SourceFormat};
use crate::context::{compression_of, open_writer, reported};
use crate::output::{human_bytes, print_json, progress, rfc3339};
use crate::{CmdResult, EXIT_OK, Failure};

pub fn init(storage: Arc<dyn Storage>, args: &InitArgs) -> CmdResult {
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

pub fn disk_add(storage: Arc<dyn Storage>, args: &DiskAddArgs) -> CmdResult {
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

pub fn ingest(storage: Arc<dyn Storage>, args: &IngestArgs) -> CmdResult {
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

pub fn point(storage: Arc<dyn Storage>, args: &PointArgs) -> CmdResult {
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
