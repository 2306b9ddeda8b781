//! The capture backend: the replica's latest state, writable, with every write, trim and
//! write-zeroes appended to the journal through the vault's one [`Writer`]. Flush and FUA call
//! [`Writer::sync`] before the reply; a recovery point (over the control socket) is
//! [`Writer::point`], which covers every write acknowledged before it.
//!
//! **Reads see every acknowledged write.** Reads come from a read view of the vault (a
//! [`PointView`] at the writer's last LSN, opened after a sync) plus the writes made since that
//! view was opened, kept in memory in a [`RangeMap`] in the order they were acknowledged. That
//! memory is bounded by [`STAGED_BYTES_MAX`]: past it the map is dropped and the view marked
//! stale, and the next read or block status syncs the writer and opens a new view, which holds
//! everything. A write-only client (an image copied in) therefore never pays for a new view;
//! a client that reads what it wrote reads it from memory.
//!
//! The writer is single-threaded: one mutex serializes every write, zero, sync and point. Reads
//! take the mutex only to look up the staged ranges and the current view.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use replog_io::Storage;
use replog_reader::{PointView, Vault};
use replog_writer::{PointInfo, PointKind, Writer};

use replog_nbd::{
    Backend, BlockDevice, DATA, ExportInfo, Extents, HOLE, NbdError, NbdErrorKind, Piece, RangeMap,
};

use super::errors::{read_error, write_error};
use super::point::view_extents;

/// The most write data kept in memory for reads between two read views.
pub const STAGED_BYTES_MAX: u64 = 64 << 20;
/// What a staged zero range counts against [`STAGED_BYTES_MAX`]: its map entry.
const ZERO_ENTRY_BYTES: u64 = 64;
/// What a failed sync was doing.
const SYNCING: &str = "syncing the journal";

/// A range written since the read view was opened.
#[derive(Clone, Debug)]
enum Staged {
    /// Bytes of a write, from `at` in its buffer.
    Data(Arc<[u8]>, usize),
    /// Zeroed.
    Zero,
}

impl Piece for Staged {
    fn advanced(&self, by: u64) -> Staged {
        match self {
            Staged::Data(buf, at) => Staged::Data(buf.clone(), at + by as usize),
            Staged::Zero => Staged::Zero,
        }
    }

    fn continues_into(&self, len: u64, next: &Staged) -> bool {
        match (self, next) {
            (Staged::Zero, Staged::Zero) => true,
            (Staged::Data(a, at), Staged::Data(b, bt)) => {
                Arc::ptr_eq(a, b) && *at as u64 + len == *bt as u64
            }
            _ => false,
        }
    }
}

/// What a read of one range needs, taken under the mutex and used outside it.
#[derive(Debug)]
struct Snapshot {
    /// The read view.
    view: Arc<PointView>,
    /// The export's disk in `view.disks()`.
    disk: usize,
    /// The staged ranges over the range, as `(start, end, value)`.
    pieces: Vec<(u64, u64, Staged)>,
}

/// Everything the mutex guards.
#[derive(Debug)]
struct State {
    /// `None` once closed.
    writer: Option<Writer>,
    /// The vault as of the last refresh.
    view: Arc<PointView>,
    /// Per export: index of its disk in `view.disks()`.
    view_index: Vec<usize>,
    /// Per export: the writes since `view` was opened (empty while `stale`).
    staged: Vec<RangeMap<Staged>>,
    staged_bytes: u64,
    /// `view` plus `staged` no longer hold every write: refresh before reading.
    stale: bool,
}

/// The latest state of every disk of a vault, captured into its journal.
#[derive(Debug)]
pub struct CaptureBackend {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    exports: Vec<ExportInfo>,
    disk_ids: Vec<u32>,
    /// Per export: the disk's size in bytes.
    sizes: Vec<u64>,
    state: Mutex<State>,
}

impl CaptureBackend {
    /// Serves the latest state through `writer`, which has the vault at `dir` open. A disk
    /// added after the journal's last record is in no read view yet (a view ends at a record):
    /// then a point labelled `capture start` is taken, so that every disk is, and returned.
    pub fn new(
        storage: Arc<dyn Storage>,
        dir: &Path,
        mut writer: Writer,
    ) -> Result<(CaptureBackend, Option<PointInfo>), NbdError> {
        let disks = writer.disks();
        if disks.is_empty() {
            return Err(NbdError::new(
                NbdErrorKind::InvalidRequest,
                format!(
                    "{}: the vault has no disks; add one with `replog disk add`",
                    dir.display()
                ),
            ));
        }
        // A pass that did not finish would be half in every point this server takes.
        if let Err(e) = crate::capture::refuse_point_while_pending(storage.as_ref(), dir) {
            return Err(NbdError::new(NbdErrorKind::InvalidRequest, e.to_string()));
        }
        let vault = Vault::open(storage.clone(), dir).map_err(read_error("opening the vault"))?;
        let started = if vault
            .disks()
            .iter()
            .any(|d| d.added_lsn > writer.last_lsn())
        {
            Some(
                writer
                    .point(PointKind::CrashConsistent, "capture start")
                    .map_err(write_error("taking the capture start point"))?,
            )
        } else {
            None
        };
        let disk_ids: Vec<u32> = disks.iter().map(|d| d.disk_id).collect();
        writer.sync().map_err(write_error(SYNCING))?;
        let (view, view_index) = open_view(storage.clone(), dir, &writer, &disk_ids)?;
        let exports = disks
            .iter()
            .map(|d| ExportInfo {
                name: d.name.clone(),
                description: format!(
                    "disk {} of vault {}: its latest state, writes captured into the journal",
                    d.name,
                    dir.display()
                ),
            })
            .collect();
        let state = State {
            writer: Some(writer),
            view,
            view_index,
            staged: disks.iter().map(|_| RangeMap::default()).collect(),
            staged_bytes: 0,
            stale: false,
        };
        let backend = CaptureBackend {
            storage,
            dir: dir.to_path_buf(),
            exports,
            disk_ids,
            sizes: disks.iter().map(|d| d.disk_bytes).collect(),
            state: Mutex::new(state),
        };
        Ok((backend, started))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a recovery point covering every write acknowledged so far.
    pub fn point(&self, kind: PointKind, label: &str) -> Result<PointInfo, NbdError> {
        self.lock()
            .writer()?
            .point(kind, label)
            .map_err(write_error("taking the point"))
    }

    /// Makes everything durable and releases the vault. Later requests fail with `EIO`.
    pub fn close(&self) -> Result<(), NbdError> {
        match self.lock().writer.take() {
            Some(w) => w.close().map_err(write_error("closing the vault's writer")),
            None => Ok(()),
        }
    }

    /// The view and the staged ranges of export `index` over `[offset, end)`, refreshing the
    /// view first when it is stale.
    fn snapshot(&self, index: usize, offset: u64, end: u64) -> Result<Snapshot, NbdError> {
        let mut s = self.lock();
        if s.stale {
            let w = s.writer()?;
            w.sync().map_err(write_error(SYNCING))?;
            let (view, view_index) = open_view(self.storage.clone(), &self.dir, w, &self.disk_ids)?;
            s.view = view;
            s.view_index = view_index;
            s.stale = false;
        }
        Ok(Snapshot {
            view: s.view.clone(),
            disk: s.view_index[index],
            pieces: s.staged[index].pieces_in(offset, end),
        })
    }

    /// Records that `[offset, end)` now reads as `value`, unless the map is over its budget.
    fn stage(s: &mut State, index: usize, offset: u64, end: u64, value: Staged, cost: u64) {
        if s.stale {
            return;
        }
        s.staged_bytes += cost;
        if s.staged_bytes > STAGED_BYTES_MAX {
            s.stale = true;
            s.staged_bytes = 0;
            s.staged.iter_mut().for_each(RangeMap::clear);
            return;
        }
        s.staged[index].insert(offset, end, value);
    }
}

impl State {
    fn writer(&mut self) -> Result<&mut Writer, NbdError> {
        self.writer
            .as_mut()
            .ok_or_else(|| NbdError::new(NbdErrorKind::ShuttingDown, "the server is shutting down"))
    }
}

/// A view of the vault at the writer's last LSN, and where each export's disk is in it.
fn open_view(
    storage: Arc<dyn Storage>,
    dir: &Path,
    writer: &Writer,
    disk_ids: &[u32],
) -> Result<(Arc<PointView>, Vec<usize>), NbdError> {
    let opening = "opening a read view of the vault";
    let vault = Vault::open(storage, dir).map_err(read_error(opening))?;
    let view = vault
        .view_at_lsn(writer.last_lsn())
        .map_err(read_error(opening))?;
    let index = disk_ids
        .iter()
        .map(|id| {
            view.disks()
                .iter()
                .position(|d| d.disk_id() == *id)
                .ok_or_else(|| {
                    NbdError::new(
                        NbdErrorKind::Io,
                        format!(
                            "{}: disk {id} is not in the vault's view at LSN {}",
                            dir.display(),
                            writer.last_lsn()
                        ),
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    Ok((Arc::new(view), index))
}

impl Backend for CaptureBackend {
    fn exports(&self) -> &[ExportInfo] {
        &self.exports
    }

    fn open(&self, index: usize) -> Box<dyn BlockDevice + '_> {
        Box::new(CaptureDisk {
            backend: self,
            index,
        })
    }

    fn connection_closed(&self) {
        if let Err(e) = self
            .lock()
            .writer()
            .and_then(|w| w.sync().map_err(write_error(SYNCING)))
        {
            eprintln!("replog: nbd: syncing the journal after a client left failed: {e}");
        }
    }
}

/// One captured disk for one connection.
#[derive(Debug)]
struct CaptureDisk<'a> {
    backend: &'a CaptureBackend,
    index: usize,
}

impl BlockDevice for CaptureDisk<'_> {
    fn size(&self) -> u64 {
        self.backend.sizes[self.index]
    }

    fn read_only(&self) -> bool {
        false
    }

    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let end = offset + buf.len() as u64;
        let Snapshot { view, disk, pieces } = self.backend.snapshot(self.index, offset, end)?;
        let disk = &view.disks()[disk];
        let mut at = offset;
        for (start, stop, staged) in pieces.into_iter().chain([(end, end, Staged::Zero)]) {
            if at < start {
                let gap = &mut buf[(at - offset) as usize..(start - offset) as usize];
                disk.read_at(at, gap)
                    .map_err(read_error("reading the vault"))?;
            }
            let out = &mut buf[(start - offset) as usize..(stop - offset) as usize];
            match staged {
                Staged::Zero => out.fill(0),
                Staged::Data(data, from) => out.copy_from_slice(&data[from..from + out.len()]),
            }
            at = stop;
        }
        Ok(())
    }

    fn block_status(&mut self, offset: u64, end: u64, out: &mut Extents) -> Result<(), NbdError> {
        let Snapshot { view, disk, pieces } = self.backend.snapshot(self.index, offset, end)?;
        let mut reader = view.disks()[disk].reader();
        let mut at = offset;
        for (start, stop, staged) in pieces {
            if at < start {
                view_extents(&mut reader, at, start, out)?;
            }
            let flags = match staged {
                Staged::Data(..) => DATA,
                Staged::Zero => HOLE,
            };
            if out.is_full() || !out.push(stop - start, flags) {
                return Ok(());
            }
            at = stop;
        }
        if at < end && !out.is_full() {
            view_extents(&mut reader, at, end, out)?;
        }
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), NbdError> {
        let id = self.backend.disk_ids[self.index];
        let mut s = self.backend.lock();
        s.writer()?
            .write(id, offset, data)
            .map_err(write_error("journaling a write"))?;
        let end = offset + data.len() as u64;
        CaptureBackend::stage(
            &mut s,
            self.index,
            offset,
            end,
            Staged::Data(Arc::from(data), 0),
            data.len() as u64,
        );
        if fua {
            s.writer()?.sync().map_err(write_error(SYNCING))?;
        }
        Ok(())
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, fua: bool) -> Result<(), NbdError> {
        let id = self.backend.disk_ids[self.index];
        let mut s = self.backend.lock();
        s.writer()?
            .zero(id, offset, len)
            .map_err(write_error("journaling a zeroed range"))?;
        CaptureBackend::stage(
            &mut s,
            self.index,
            offset,
            offset + len,
            Staged::Zero,
            ZERO_ENTRY_BYTES,
        );
        if fua {
            s.writer()?.sync().map_err(write_error(SYNCING))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), NbdError> {
        self.backend
            .lock()
            .writer()?
            .sync()
            .map_err(write_error(SYNCING))
    }
}
