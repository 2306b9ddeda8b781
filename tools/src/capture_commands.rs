//! `ingest` and `disk add` from sources that say what changed: an NBD export (with
//! `--dirty-bitmap`, or a full pass without), or an image with `--changed-ranges`. The work is
//! `replog_vault::capture`'s; this file checks the flags that go together and renders.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use replog_io::Storage;
use replog_vault::{Captured, NbdUri};
use replog_writer::{PointInfo, PointKind, Writer};
use serde_json::json;

use crate::cli::{DiskAddArgs, FromSource, IngestArgs, SourceFormat};
use crate::context::open_writer;
use crate::output::{human_bytes, point_json, print_json};
use crate::{CmdResult, EXIT_OK, Failure};

/// `ingest --from nbd://...` or `ingest --from IMAGE --changed-ranges FILE`.
pub fn ingest(storage: Arc<dyn Storage>, args: &IngestArgs) -> CmdResult {
    let (vault, name) = (&args.vault, &args.name);
    let started = std::time::Instant::now();
    let (done, point) = match (&args.from, &args.dirty_bitmap, &args.changed_ranges) {
        (FromSource::Nbd(uri), bitmap, None) => {
            no_format(args.format, uri)?;
            let mut w = open_writer(storage.clone(), vault)?;
            let source = replog_vault::NbdSource {
                uri,
                bitmap: bitmap.as_deref(),
                grow: args.grow,
            };
            let done =
                replog_vault::ingest_nbd(&mut w, storage.as_ref(), vault, name, source, &|_| {})?;
            let point = point_after_ingest(&mut w, storage.as_ref(), args)?;
            w.close()?;
            (done, point)
        }
        (FromSource::Image(image), None, Some(list)) => {
            let mut w = open_writer(storage.clone(), vault)?;
            let disk_bytes = w.disk(name)?.disk_bytes;
            let (text, list_name) = read_list(list)?;
            let ranges = replog_vault::parse_changed_ranges(&text, &list_name, disk_bytes)?;
            let image = (image.as_path(), args.format);
            let list = (ranges.as_slice(), list_name.as_str());
            let done = replog_vault::ingest_changed_ranges(
                &mut w,
                storage.as_ref(),
                vault,
                name,
                image,
                list,
                &|_| {},
            )?;
            let point = point_after_ingest(&mut w, storage.as_ref(), args)?;
            w.close()?;
            (done, point)
        }
        (FromSource::Image(_), Some(_), _) => {
            return Err(Failure::new(
                "--dirty-bitmap reads a bitmap an NBD server offers: give --from nbd://... or \
                 nbd+unix://...",
            ));
        }
        (FromSource::Nbd(_), _, Some(_)) => {
            return Err(Failure::new(
                "--changed-ranges reads an image or device; an NBD export says what changed \
                 with --dirty-bitmap",
            ));
        }
        (FromSource::Image(_), None, None) => unreachable!("an image ingest is not a capture"),
    };
    render(
        &done,
        point.as_ref(),
        started.elapsed().as_secs_f64(),
        args.json,
    );
    Ok(EXIT_OK)
}

/// `disk add --from nbd://...`.
pub fn disk_add_nbd(storage: Arc<dyn Storage>, args: &DiskAddArgs, uri: &NbdUri) -> CmdResult {
    if let Some(format) = args.format {
        no_format(format, uri)?;
    }
    let mut w = open_writer(storage.clone(), &args.vault)?;
    let (disk, _) =
        replog_vault::add_disk_from_nbd(&mut w, storage.as_ref(), &args.vault, &args.name, uri)?;
    w.close()?;
    if args.json {
        print_json(&disk);
        return Ok(EXIT_OK);
    }
    println!(
        "added disk {} ({}, {} bytes) as id {} from {uri}",
        disk.name,
        human_bytes(disk.disk_bytes),
        disk.disk_bytes,
        disk.disk_id
    );
    Ok(EXIT_OK)
}

/// An NBD export is raw bytes: `--format` names an image's format, so any but auto is refused.
fn no_format(format: SourceFormat, uri: &NbdUri) -> Result<(), Failure> {
    if format == SourceFormat::Auto {
        return Ok(());
    }
    Err(Failure::new(format!(
        "--format is for images; {uri} is an NBD export, read as raw bytes"
    )))
}

/// The list's text and its name for messages; `-` is standard input.
fn read_list(path: &Path) -> Result<(String, String), Failure> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure::new(format!("reading the changed ranges from stdin: {e}")))?;
        return Ok((text, "<stdin>".into()));
    }
    let name = path.display().to_string();
    text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(format!("reading the changed ranges {name}: {e}")))?;
    Ok((text, name))
}

fn render(done: &Captured, point: Option<&PointInfo>, seconds: f64, as_json: bool) {
    if as_json {
        let mut v = json!(done);
        v["seconds"] = json!(seconds);
        if let Some(p) = point {
            v["point"] = point_json(p);
        }
        print_json(&v);
        return;
    }
    println!(
        "ingested {} from {} ({}): {} marked, {} read in {seconds:.2}s, {} written and {} zeroed in {} records",
        done.disk,
        done.source,
        done.mode,
        human_bytes(done.bytes_marked),
        human_bytes(done.bytes_read),
        human_bytes(done.bytes_written),
        human_bytes(done.bytes_zeroed),
        done.records
    );
    if done.bytes_unfinished > 0 {
        println!(
            "  and {} an earlier pass left unfinished",
            human_bytes(done.bytes_unfinished)
        );
    }
    print_point_after_ingest(point);
}

/// `ingest --point`: the point, taken with the writer the ingest used once its records are
/// durable. It saves the second process, open of the vault and sync of `replog point`.
pub fn point_after_ingest(
    w: &mut Writer,
    storage: &dyn Storage,
    args: &IngestArgs,
) -> Result<Option<PointInfo>, Failure> {
    if !args.point {
        return Ok(None);
    }
    let kind = PointKind::quiesced(args.app_consistent);
    let p = replog_vault::capture::point_unless_pending(w, storage, kind, &args.label)?;
    Ok(Some(p))
}

/// The text line for `ingest --point`'s point.
pub fn print_point_after_ingest(point: Option<&PointInfo>) {
    if let Some(p) = point {
        println!("point {} ({})", p.point_id, p.kind.name());
    }
}
