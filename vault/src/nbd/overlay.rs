//! The test-failover backend: a point made writable by a copy-on-write overlay that is thrown
//! away when the server exits. The vault is never written.
//!
//! Each disk has an unlinked, sparse temporary file of the disk's size, written at the same
//! offsets as the disk, and a [`RangeMap`] of what the overlay holds: ranges written (read
//! from the file) and ranges zeroed (read as zeros, no data kept). Everything else reads from
//! the point. Memory is the range map, proportional to the number of distinct ranges written;
//! disk space is at most the bytes written, bounded by the disk's size.
//!
//! Writes and zeroes take the disk's lock for the file write and the map update together, so
//! the map never names bytes the file does not hold. Reads look the ranges up under the lock
//! and read outside it. Flush and FUA have nothing to make durable: the overlay lives only as
//! long as the server.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use replog_nbd::{
    Backend, BlockDevice, DATA, ExportInfo, Extents, HOLE, NbdError, Piece, RangeMap,
};

use super::point::{PointBackend, PointDisk};

/// What the overlay holds for a range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cow {
    /// Written: the bytes are in the overlay file at the same offset.
    Written,
    /// Zeroed.
    Zero,
}

impl Piece for Cow {
    fn advanced(&self, _by: u64) -> Cow {
        *self
    }

    fn continues_into(&self, _len: u64, next: &Cow) -> bool {
        self == next
    }
}

/// One disk's overlay.
#[derive(Debug)]
struct Layer {
    file: File,
    map: Mutex<RangeMap<Cow>>,
}

/// A point under copy-on-write overlays, one per disk.
#[derive(Debug)]
pub struct OverlayBackend {
    point: PointBackend,
    layers: Vec<Layer>,
    exports: Vec<ExportInfo>,
}

impl OverlayBackend {
    /// Puts an overlay over every disk of `point`, its files created (unlinked) in `dir`.
    pub fn new(point: PointBackend, dir: &Path) -> Result<OverlayBackend, NbdError> {
        let mut layers = Vec::new();
        let mut exports = Vec::new();
        for (index, e) in point.exports().iter().enumerate() {
            let size = point.disk(index).size();
            let file = tempfile::tempfile_in(dir).map_err(|err| {
                let what = format!(
                    "{}: cannot create the overlay file of disk {}",
                    dir.display(),
                    e.name
                );
                NbdError::io(what, err)
            })?;
            file.set_len(size).map_err(|err| {
                let what = format!(
                    "{}: cannot size the overlay file of disk {} to {size} bytes",
                    dir.display(),
                    e.name,
                );
                NbdError::io(what, err)
            })?;
            layers.push(Layer {
                file,
                map: Mutex::new(RangeMap::default()),
            });
            exports.push(ExportInfo {
                description: format!(
                    "{}, under a copy-on-write overlay discarded on exit",
                    e.description
                ),
                ..e.clone()
            });
        }
        Ok(OverlayBackend {
            point,
            layers,
            exports,
        })
    }
}

impl Backend for OverlayBackend {
    fn exports(&self) -> &[ExportInfo] {
        &self.exports
    }

    fn open(&self, index: usize) -> Box<dyn BlockDevice + '_> {
        Box::new(OverlayDisk {
            lower: self.point.disk(index),
            layer: &self.layers[index],
        })
    }
}

/// One overlaid disk for one connection.
#[derive(Debug)]
struct OverlayDisk<'a> {
    lower: PointDisk<'a>,
    layer: &'a Layer,
}

impl OverlayDisk<'_> {
    fn pieces(&self, offset: u64, end: u64) -> Vec<(u64, u64, Cow)> {
        self.layer
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pieces_in(offset, end)
    }
}

impl BlockDevice for OverlayDisk<'_> {
    fn size(&self) -> u64 {
        self.lower.size()
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let end = offset + buf.len() as u64;
        let mut at = offset;
        for (start, stop, cow) in
            self.pieces(offset, end)
                .into_iter()
                .chain([(end, end, Cow::Zero)])
        {
            if at < start {
                let gap = &mut buf[(at - offset) as usize..(start - offset) as usize];
                self.lower.read(at, gap)?;
            }
            let out = &mut buf[(start - offset) as usize..(stop - offset) as usize];
            match cow {
                Cow::Zero => out.fill(0),
                Cow::Written => self
                    .layer
                    .file
                    .read_exact_at(out, start)
                    .map_err(|e| NbdError::io("reading the overlay", e))?,
            }
            at = stop;
        }
        Ok(())
    }

    fn block_status(&mut self, offset: u64, end: u64, out: &mut Extents) -> Result<(), NbdError> {
        let mut at = offset;
        for (start, stop, cow) in self.pieces(offset, end) {
            if at < start {
                self.lower.block_status(at, start, out)?;
            }
            let flags = match cow {
                Cow::Written => DATA,
                Cow::Zero => HOLE,
            };
            if out.is_full() || !out.push(stop - start, flags) {
                return Ok(());
            }
            at = stop;
        }
        if at < end && !out.is_full() {
            self.lower.block_status(at, end, out)?;
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8], _fua: bool) -> Result<(), NbdError> {
        let mut map = self.layer.map.lock().unwrap_or_else(|p| p.into_inner());
        self.layer
            .file
            .write_all_at(data, offset)
            .map_err(|e| NbdError::io("writing the overlay", e))?;
        map.insert(offset, offset + data.len() as u64, Cow::Written);
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, _fua: bool) -> Result<(), NbdError> {
        let mut map = self.layer.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(offset, offset + len, Cow::Zero);
        Ok(())
    }
}
