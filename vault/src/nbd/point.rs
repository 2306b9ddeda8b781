//! The read-only backend: every disk of one recovery point, read through the reader's verified
//! `DiskReader`s, under a lease that keeps compaction from rolling the bases past the point
//! while the server runs.
//!
//! Allocation comes from the point's extent map: zero records are holes, journal records are
//! data, and base ranges are holes where the base's checksum table marks a chunk all zero.

use replog_reader::extent_map::Source;
use replog_reader::{DiskReader, DiskView, Lease, PointInfo, PointView};

use replog_nbd::{Backend, BlockDevice, DATA, ExportInfo, Extents, HOLE, NbdError};

use super::errors::read_error;

/// One point's disks, read-only.
#[derive(Debug)]
pub struct PointBackend {
    view: PointView,
    exports: Vec<ExportInfo>,
    /// Held for the server's lifetime; dropping it releases the point to compaction.
    _lease: Lease,
}

impl PointBackend {
    /// Serves `view` (built for `point`) while holding `lease`.
    pub fn new(view: PointView, point: &PointInfo, lease: Lease, vault: &str) -> PointBackend {
        let exports = view
            .disks()
            .iter()
            .map(|d| ExportInfo {
                name: d.name().to_owned(),
                description: format!(
                    "disk {} of vault {vault} at point {} ({}{})",
                    d.name(),
                    point.point_id,
                    point.kind.name(),
                    if point.label.is_empty() {
                        String::new()
                    } else {
                        format!(", {}", point.label)
                    }
                ),
            })
            .collect();
        PointBackend {
            view,
            exports,
            _lease: lease,
        }
    }

    /// A connection's reader of disk `index`, for the overlay to put itself over.
    pub fn disk(&self, index: usize) -> PointDisk<'_> {
        PointDisk {
            reader: self.view.disks()[index].reader(),
        }
    }
}

impl Backend for PointBackend {
    fn exports(&self) -> &[ExportInfo] {
        &self.exports
    }

    fn open(&self, index: usize) -> Box<dyn BlockDevice + '_> {
        Box::new(self.disk(index))
    }
}

/// One disk of the point for one connection: its own reader, so the record and chunk it last
/// verified are reused by the connection's next sequential request.
#[derive(Debug)]
pub struct PointDisk<'a> {
    reader: DiskReader<'a>,
}

impl BlockDevice for PointDisk<'_> {
    fn size(&self) -> u64 {
        self.reader.disk().size()
    }

    fn read_only(&self) -> bool {
        true
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        self.reader
            .read_at(offset, buf)
            .map_err(read_error("reading the point"))
    }

    fn block_status(&mut self, offset: u64, end: u64, out: &mut Extents) -> Result<(), NbdError> {
        view_extents(&mut self.reader, offset, end, out)
    }
}

/// Pushes the allocation of `[offset, end)` of the reader's disk into `out`.
pub fn view_extents(
    reader: &mut DiskReader<'_>,
    offset: u64,
    end: u64,
    out: &mut Extents,
) -> Result<(), NbdError> {
    let disk: &DiskView = reader.disk();
    for piece in disk.pieces(offset, end) {
        let (start, piece) = piece.map_err(read_error("reading the point's extents"))?;
        let pushed = match piece.source {
            Source::Zero => out.push(piece.end - start, HOLE),
            Source::Record(_) => out.push(piece.end - start, DATA),
            Source::Base => base_extents(reader, start, piece.end, out)?,
        };
        if !pushed {
            break;
        }
    }
    Ok(())
}

/// Base chunks the checksum table marks all zero are holes; one lookup per chunk.
fn base_extents(
    reader: &mut DiskReader<'_>,
    start: u64,
    end: u64,
    out: &mut Extents,
) -> Result<bool, NbdError> {
    let mut at = start;
    while at < end {
        if !out.charge() {
            return Ok(false);
        }
        let (hole, chunk_end) = reader
            .base_hole_at(at)
            .map_err(read_error("reading the base's checksum table"))?;
        let upto = chunk_end.min(end);
        if !out.push(upto - at, if hole { HOLE } else { DATA }) {
            return Ok(false);
        }
        at = upto;
    }
    Ok(true)
}
