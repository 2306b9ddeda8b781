//! One disk's output during a live failover: the image `DIR/<disk>.raw`, the ranges of it that
//! hold their final bytes (the done map), and that map's durable copy, the hydration map
//! `DIR/.<disk>.hydration`.
//!
//! Invariants:
//! - A range is marked done only after its bytes were written to the image, under the state
//!   lock, so the map never claims bytes the image does not hold; hydration writes only ranges
//!   not done, under the same lock, so it never writes over a guest's write.
//! - The hydration map claims only durable bytes: [`Target::persist`] takes a copy of the done
//!   map, then syncs the image, then writes the copy (temporary name, data sync, rename,
//!   directory sync). Whatever the copy names was written before the sync.
//! - After a failed sync nothing more is made durable (the kernel may have dropped the pages):
//!   the target is poisoned and every later persist fails with the first error.
//!
//! Memory: the done map, one entry per disjoint run of done bytes, and at persist time one copy
//! of it (16 bytes per run).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use replog_format::hydration::{
    HYDRATION_FIXED_BYTES, HYDRATION_RANGE_BYTES, HYDRATION_RANGES_MAX, HydrationMap,
    hydration_file_name,
};
use replog_io::{File, OpenMode, Storage, WriteAt};
use replog_nbd::{Piece, RangeMap};
use replog_reader::DiskView;

use crate::error::{Result, VaultError, VaultErrorKind};

/// A done range: its bytes are final in the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Done;

impl Piece for Done {
    fn advanced(&self, _by: u64) -> Done {
        Done
    }

    fn continues_into(&self, _len: u64, _next: &Done) -> bool {
        true
    }
}

/// What is done, in memory.
#[derive(Debug, Default)]
pub(super) struct State {
    done: RangeMap<Done>,
    done_bytes: u64,
    /// Counts changes, so a persist with nothing new to say is skipped.
    generation: u64,
}

impl State {
    /// Marks `[start, end)` done.
    fn mark(&mut self, start: u64, end: u64) {
        if start == end {
            return;
        }
        let covered: u64 = self
            .done
            .pieces_in(start, end)
            .iter()
            .map(|(s, e, _)| e - s)
            .sum();
        self.done.insert(start, end, Done);
        self.done_bytes += (end - start) - covered;
        self.generation += 1;
    }

    /// The ranges of `[start, end)` not done, in order.
    pub(super) fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        for (s, e, _) in self.done.pieces_in(start, end) {
            if at < s {
                out.push((at, s));
            }
            at = e;
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// The done ranges within `[start, end)`.
    pub(super) fn done_in(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let pieces = self.done.pieces_in(start, end);
        pieces.into_iter().map(|(s, e, _)| (s, e)).collect()
    }
}

/// What was last made durable.
#[derive(Debug, Default)]
struct Persisted {
    generation: u64,
    durable_bytes: u64,
    /// The first failed sync or map write: nothing is made durable after it.
    poisoned: Option<String>,
}

/// One disk's image and maps.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) size: u64,
    /// Not-done ranges of the image may hold stale bytes (from a run that was killed): zero
    /// ranges must then be zeroed, not skipped.
    pub(super) resumed: bool,
    /// Bytes the hydration map claimed when the run started.
    pub(super) resumed_bytes: u64,
    map_file: MapFile,
    storage: Arc<dyn Storage>,
    file: Arc<dyn File>,
    identity: HydrationMap,
    state: Mutex<State>,
    persisted: Mutex<Persisted>,
}

/// Who the map is for: vault, point and disk, with no ranges.
pub(super) struct Identity {
    pub vault_id: replog_format::VaultId,
    pub point_id: u64,
    pub point_lsn: u64,
}

impl Target {
    /// Opens disk `disk`'s output in `dir`: resumes from its hydration map if there is one,
    /// starts afresh otherwise (an existing image without a map is replaced only with `force`).
    pub(super) fn open(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        disk: &DiskView,
        who: &Identity,
        force: bool,
    ) -> Result<Target> {
        let path = dir.join(format!("{}.raw", disk.name()));
        let map_file = MapFile {
            path: dir.join(hydration_file_name(disk.name())),
            tmp: dir.join(format!("{}.tmp", hydration_file_name(disk.name()))),
            dir: dir.to_path_buf(),
        };
        let identity = HydrationMap {
            vault_id: who.vault_id,
            point_id: who.point_id,
            point_lsn: who.point_lsn,
            disk_id: disk.disk_id(),
            disk_bytes: disk.size(),
            ranges: Vec::new(),
        };
        let exists = |p: &Path| storage.exists(p).map_err(|e| io_error(p, "look for", &e));
        let map = match exists(&map_file.path)? {
            true => Some(map_file.load(storage.as_ref(), &identity)?),
            false => None,
        };
        let image = exists(&path)?;
        let (file, map, resumed) = match map {
            Some(map) if image => {
                let file = open_resumed(storage.as_ref(), &path, &map_file, disk.size())?;
                (file, map, true)
            }
            Some(map) if !map.ranges.is_empty() => {
                return Err(VaultError::new(
                    VaultErrorKind::NotFound,
                    format!(
                        "{}: the image is missing, but its hydration map {} says {} bytes of it were done; remove the map to start over",
                        path.display(),
                        map_file.path.display(),
                        map.done_bytes()
                    ),
                )
                .in_file(&path));
            }
            _ => {
                let file =
                    start_fresh(storage.as_ref(), &path, image, force, &map_file, &identity)?;
                (file, identity.clone(), false)
            }
        };
        let mut state = State::default();
        for &(s, e) in &map.ranges {
            state.mark(s, e);
        }
        let persisted = Persisted {
            generation: state.generation,
            durable_bytes: map.done_bytes(),
            poisoned: None,
        };
        Ok(Target {
            name: disk.name().to_owned(),
            path,
            size: disk.size(),
            resumed,
            resumed_bytes: map.done_bytes(),
            map_file,
            storage: storage.clone(),
            file,
            identity,
            state: Mutex::new(state),
            persisted: Mutex::new(persisted),
        })
    }

    /// The in-memory state, locked.
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes done (in memory) and bytes the hydration map claims.
    pub(super) fn done_and_durable(&self) -> (u64, u64) {
        let done = self.lock().done_bytes;
        let durable = self.persisted().durable_bytes;
        (done, durable)
    }

    fn persisted(&self) -> MutexGuard<'_, Persisted> {
        self.persisted.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A guest's write: into the image, then marked done.
    pub(super) fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        self.file.write_all_at(data, offset)?;
        state.mark(offset, offset + data.len() as u64);
        Ok(())
    }

    /// A guest's write-zeroes or trim: the range zeroed in the image (a hole where the
    /// filesystem can), then marked done.
    pub(super) fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        self.file.zero_range(offset, len)?;
        state.mark(offset, offset + len);
        Ok(())
    }

    /// Reads `buf.len()` bytes of the image at `offset` (a done range).
    pub(super) fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// The next run of data in the image at or after `offset`, as the filesystem says.
    pub(super) fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        self.file.next_data(offset)
    }

    /// Hydration's write of one window: under the lock, the parts of `runs` that are still not
    /// done are written (data) or, in a resumed image, zeroed (zero runs; a fresh image holds
    /// zeros there already), then the window `[start, end)` is marked done. Returns the bytes
    /// written.
    pub(super) fn fill(&self, start: u64, end: u64, runs: &[Run<'_>]) -> io::Result<u64> {
        let mut state = self.lock();
        let gaps = state.gaps(start, end);
        let mut writes = Vec::new();
        let mut zeros = Vec::new();
        for &(gs, ge) in &gaps {
            for run in runs {
                let (s, e) = (run.start.max(gs), run.end.min(ge));
                if s >= e {
                    continue;
                }
                match run.data {
                    Some(d) => writes.push(WriteAt {
                        offset: s,
                        data: &d[(s - run.start) as usize..(e - run.start) as usize],
                    }),
                    None if self.resumed => zeros.push((s, e)),
                    None => {}
                }
            }
        }
        self.file.write_batch(&writes, false)?;
        for (s, e) in zeros {
            self.file.zero_range(s, e - s)?;
        }
        for (s, e) in gaps {
            state.mark(s, e);
        }
        Ok(writes.iter().map(|w| w.data.len() as u64).sum())
    }

    /// Makes everything done so far durable: the image synced, then the hydration map
    /// rewritten to claim it. Returns the bytes the map claims.
    pub(super) fn persist(&self) -> Result<u64> {
        let mut persisted = self.persisted();
        if let Some(first) = &persisted.poisoned {
            return Err(VaultError::new(
                VaultErrorKind::Io,
                format!(
                    "{}: nothing more can be made durable after an earlier failure: {first}",
                    self.path.display()
                ),
            )
            .in_file(&self.path));
        }
        let (map, generation, done_bytes) = {
            let state = self.lock();
            if state.generation == persisted.generation {
                return Ok(persisted.durable_bytes);
            }
            let ranges = state.done_in(0, self.size);
            let map = HydrationMap {
                ranges,
                ..self.identity.clone()
            };
            (map, state.generation, state.done_bytes)
        };
        let made = self
            .sync()
            .and_then(|()| self.map_file.write(self.storage.as_ref(), &map));
        if let Err(e) = made {
            persisted.poisoned = Some(e.to_string());
            return Err(e);
        }
        persisted.generation = generation;
        persisted.durable_bytes = done_bytes;
        Ok(done_bytes)
    }

    /// Syncs the image's data.
    pub(super) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| io_error(&self.path, "sync", &e))
    }

    /// The end of a complete disk: the image synced, then the map removed and the directory
    /// synced.
    pub(super) fn finish(&self) -> Result<()> {
        self.sync()?;
        let (storage, map) = (self.storage.as_ref(), &self.map_file);
        storage
            .remove_file(&map.path)
            .map_err(|e| io_error(&map.path, "remove", &e))?;
        storage
            .sync_dir(&map.dir)
            .map_err(|e| io_error(&map.dir, "sync", &e))
    }
}

/// Where a disk's hydration map lives.
#[derive(Debug)]
struct MapFile {
    path: PathBuf,
    /// The name a new map is written under before it is renamed into place.
    tmp: PathBuf,
    dir: PathBuf,
}

impl MapFile {
    /// Reads and checks the map: it must be `identity`'s point and disk.
    fn load(&self, storage: &dyn Storage, identity: &HydrationMap) -> Result<HydrationMap> {
        let p = &self.path;
        let f = storage
            .open(p, OpenMode::Read)
            .map_err(|e| io_error(p, "open", &e))?;
        let len = f.len().map_err(|e| io_error(p, "measure", &e))?;
        let limit = (HYDRATION_FIXED_BYTES
            + HYDRATION_RANGE_BYTES * HYDRATION_RANGES_MAX as usize
            + 4) as u64;
        if len > limit {
            return Err(damaged(
                p,
                format!("is {len} bytes, more than a map can be ({limit})"),
            ));
        }
        let mut bytes = vec![0; len as usize];
        f.read_exact_at(&mut bytes, 0)
            .map_err(|e| io_error(p, "read", &e))?;
        let map = HydrationMap::decode(&bytes).map_err(|e| damaged(p, e.to_string()))?;
        let want = identity;
        let same = map.vault_id == want.vault_id
            && map.point_id == want.point_id
            && map.point_lsn == want.point_lsn
            && map.disk_id == want.disk_id
            && map.disk_bytes == want.disk_bytes;
        if !same {
            return Err(VaultError::new(
                VaultErrorKind::InvalidRequest,
                format!(
                    "{}: this hydration map is of point {} (disk id {}, {} bytes){}, not of point {} of this vault (disk id {}, {} bytes); resume with the point it names, or remove the directory's images and maps to start over",
                    p.display(),
                    map.point_id,
                    map.disk_id,
                    map.disk_bytes,
                    if map.vault_id == want.vault_id { "" } else { " of another vault" },
                    want.point_id,
                    want.disk_id,
                    want.disk_bytes,
                ),
            )
            .in_file(p));
        }
        Ok(map)
    }

    /// Writes `map`: temporary name, data sync, rename, directory sync.
    fn write(&self, storage: &dyn Storage, map: &HydrationMap) -> Result<()> {
        if map.ranges.len() > HYDRATION_RANGES_MAX as usize {
            return Err(VaultError::new(
                VaultErrorKind::InvalidRequest,
                format!(
                    "{}: the image's done bytes are in {} separate ranges, more than a hydration map holds ({HYDRATION_RANGES_MAX})",
                    self.path.display(),
                    map.ranges.len()
                ),
            )
            .in_file(&self.path));
        }
        let bytes = map.encode();
        let tmp = &self.tmp;
        let f = storage
            .open(tmp, OpenMode::CreateTruncate)
            .map_err(|e| io_error(tmp, "create", &e))?;
        let write = WriteAt {
            offset: 0,
            data: &bytes,
        };
        f.write_batch(&[write], true)
            .map_err(|e| io_error(tmp, "write", &e))?;
        drop(f);
        storage
            .rename(tmp, &self.path)
            .map_err(|e| io_error(&self.path, "rename into place", &e))?;
        storage
            .sync_dir(&self.dir)
            .map_err(|e| io_error(&self.dir, "sync", &e))
    }
}

/// Opens the image of a resumed run: it must have the disk's length.
fn open_resumed(
    storage: &dyn Storage,
    path: &Path,
    map: &MapFile,
    size: u64,
) -> Result<Arc<dyn File>> {
    let file = storage
        .open(path, OpenMode::ReadWrite)
        .map_err(|e| io_error(path, "open", &e))?;
    let len = file.len().map_err(|e| io_error(path, "measure", &e))?;
    if len != size {
        return Err(damaged(
            path,
            format!(
                "is {len} bytes, but the disk and its hydration map {} say {size}",
                map.path.display()
            ),
        ));
    }
    Ok(file)
}

/// Starts afresh: the empty map first (so that a crash leaves a map that lets the next run
/// start again, never an image without one), then a new sparse image of the disk's size.
fn start_fresh(
    storage: &dyn Storage,
    path: &Path,
    image_exists: bool,
    force: bool,
    map: &MapFile,
    empty: &HydrationMap,
) -> Result<Arc<dyn File>> {
    if image_exists {
        if !force {
            return Err(VaultError::new(
                VaultErrorKind::AlreadyExists,
                format!(
                    "{}: exists, with no hydration map beside it, so it is no live failover's to resume; pass --force to replace it",
                    path.display()
                ),
            )
            .in_file(path));
        }
        storage
            .remove_file(path)
            .map_err(|e| io_error(path, "remove", &e))?;
    }
    map.write(storage, empty)?;
    let file = storage
        .open(path, OpenMode::CreateNew)
        .map_err(|e| io_error(path, "create", &e))?;
    file.set_len(empty.disk_bytes)
        .map_err(|e| io_error(path, "size", &e))?;
    Ok(file)
}

/// A run of one hydration window: the point's bytes (`Some`) or zeros (`None`).
#[derive(Debug)]
pub(super) struct Run<'a> {
    pub start: u64,
    pub end: u64,
    pub data: Option<&'a [u8]>,
}

/// An I/O error on an output file, naming it.
pub(super) fn io_error(path: &Path, op: &str, e: &io::Error) -> VaultError {
    let kind = if e.kind() == io::ErrorKind::StorageFull {
        VaultErrorKind::NoSpace
    } else {
        VaultErrorKind::Io
    };
    VaultError::new(kind, format!("{}: cannot {op}: {e}", path.display())).in_file(path)
}

fn damaged(path: &Path, detail: String) -> VaultError {
    VaultError::new(
        VaultErrorKind::Damaged,
        format!("{}: {detail}", path.display()),
    )
    .in_file(path)
}
