//! The commands that write: `init`, `disk add`, `disk resize`, `ingest`, `point`.

use std::sync::Arc;

use replog_io::Storage;
use replog_vault::NewDisk;
use replog_writer::{PointKind, VaultSettings, Writer};
use serde_json::json;

use crate::cli::{
    DiskAddArgs, DiskResizeArgs, FromSource, IngestArgs, InitArgs, PointArgs, SourceFormat,
};
use crate::context::{compression_of, open_writer, reported};
use crate::output::{human_bytes, point_json, print_json, progress};
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
    let from = match (&args.from, args.size) {
        (Some(FromSource::Nbd(uri)), _) => {
            return crate::capture_commands::disk_add_nbd(storage, args, uri);
        }
        (Some(FromSource::Image(image)), _) => {
            NewDisk::Image(image, args.format.unwrap_or(SourceFormat::Auto))
        }
        (None, Some(bytes)) => NewDisk::Empty(bytes),
        (None, None) => return Err(Failure::new("give --from IMAGE or --size BYTES")),
    };
    let mut w = open_writer(storage.clone(), &args.vault)?;
    let disk = replog_vault::add_disk(&mut w, storage.as_ref(), &args.vault, &args.name, from)?;
    w.close()?;
    if args.json {
        print_json(&disk);
        return Ok(EXIT_OK);
    }
    let read_as = match &disk.image_format {
        Some(f) if f != "raw" => format!(" from a {f} image"),
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

pub fn disk_resize(storage: Arc<dyn Storage>, args: &DiskResizeArgs) -> CmdResult {
    let mut w = open_writer(storage, &args.vault)?;
    let resized = replog_vault::resize_disk(&mut w, &args.name, args.size)?;
    w.close()?;
    if args.json {
        print_json(&resized);
        return Ok(EXIT_OK);
    }
    match resized.lsn {
        Some(lsn) => println!(
            "resized disk {} from {} to {} ({} bytes) at LSN {lsn}",
            resized.name,
            human_bytes(resized.old_bytes),
            human_bytes(resized.disk_bytes),
            resized.disk_bytes
        ),
        None => println!(
            "disk {} is already {} ({} bytes)",
            resized.name,
            human_bytes(resized.disk_bytes),
            resized.disk_bytes
        ),
    }
    Ok(EXIT_OK)
}

pub fn ingest(storage: Arc<dyn Storage>, args: &IngestArgs) -> CmdResult {
    let image = match (&args.from, &args.dirty_bitmap, &args.changed_ranges) {
        (FromSource::Image(image), None, None) => image,
        _ => return crate::capture_commands::ingest(storage, args),
    };
    let (vault, name) = (&args.vault, &args.name);
    let mut w = open_writer(storage.clone(), vault)?;
    let bar = progress(w.disk(name)?.disk_bytes, "ingest");
    let started = std::time::Instant::now();
    let image = (image.as_path(), args.format);
    let opts = replog_vault::IngestOptions { grow: args.grow };
    let done =
        replog_vault::ingest_with(&mut w, storage.as_ref(), vault, name, image, opts, &|n| {
            bar.set_position(n)
        })?;
    if let (Some(r), false) = (&done.resized, args.json) {
        println!(
            "grew disk {name} from {} to {} ({} bytes)",
            human_bytes(r.old_bytes),
            human_bytes(r.disk_bytes),
            r.disk_bytes
        );
    }
    bar.finish_and_clear();
    // The whole image was compared and every difference journaled: a capture pass of the disk
    // that did not finish is covered now.
    replog_vault::capture::finish_after_full_ingest(&w, storage.as_ref(), vault, name)?;
    let point = crate::capture_commands::point_after_ingest(&mut w, storage.as_ref(), args)?;
    w.close()?;
    let (seconds, stats) = (started.elapsed().as_secs_f64(), &done.stats);
    if args.json {
        let mut doc = json!({
            "disk": name,
            "bytes_scanned": stats.bytes_scanned,
            "bytes_read": done.bytes_read,
            "bytes_changed": stats.bytes_changed,
            "bytes_stored": stats.bytes_stored,
            "records": stats.records,
            "digest_cache": stats.digest_cache,
            "image_format": done.image_format,
            "seconds": seconds,
        });
        // Only an ingest that grew the disk says so, so other ingests print what they did.
        if let Some(r) = &done.resized {
            doc["resized"] = json!(r);
        }
        if let Some(p) = &point {
            doc["point"] = point_json(p);
        }
        print_json(&doc);
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
        crate::capture_commands::print_point_after_ingest(point.as_ref());
    }
    Ok(EXIT_OK)
}

pub fn point(storage: Arc<dyn Storage>, args: &PointArgs) -> CmdResult {
    let (vault, label, json) = (&args.vault, &args.label, args.json);
    let kind = PointKind::quiesced(args.app_consistent);
    let p = match Writer::open(storage.clone(), vault) {
        Ok(w) => {
            let mut w = reported(w);
            // A capture pass that did not finish would be half in the point.
            let p =
                replog_vault::capture::point_unless_pending(&mut w, storage.as_ref(), kind, label)?;
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
        print_json(&point_json(&p));
    } else {
        println!("{}", p.point_id);
    }
    Ok(EXIT_OK)
}
