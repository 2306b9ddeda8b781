//! The in-memory simulator: a filesystem with a page cache and a disk, for crash and fault
//! tests.
//!
//! Each file is an inode with a durable image (on disk), a live image (what reads see), and the
//! writes and length changes made since its last sync. Directory entries have a live view,
//! changed by create, rename, remove and `create_dir_all`, and a durable view, which
//! `sync_dir(dir)` sets to the directory's live entries. The root always exists.
//!
//! Every mutating or syncing call is one numbered operation: `open` with a create mode, each
//! `WriteAt` of a batch, the batch's sync, `sync_data`, `set_len`, `allocate`, `zero_range`, `punch_hole`,
//! `rename`, `remove_file`, `create_dir_all`, `sync_dir`, and `open_lock_file` when it creates
//! the file. [`SimStorage::set_crash_at`] makes one
//! of them, and every call after it, fail as if the machine lost power there;
//! [`SimStorage::crash`] then decides what survived (see the `crash` module) and brings the
//! machine back. Handles opened before a crash fail with `ESTALE` afterwards.
//!
//! Advisory locks ([`File::lock`]) are kept as `flock` keeps them, per open, and a crash
//! releases them all: every process died with the machine. So the writer's lock, the leases
//! and the sync lock are held, and crash, in the simulator as on a real filesystem.
//!
//! Injected errors ([`Fault`]) count as operations too. Their effects:
//!
//! - on a write: `EIO` writes nothing; `ENOSPC` writes a random strict prefix (maybe empty);
//! - on a sync: the sync fails and the file's unsynced changes are dropped from what will ever
//!   become durable, though reads still see them (the kernel marked the pages clean); a later
//!   sync that succeeds does not bring them back;
//! - on anything else: the call fails without effect.
//!
//! Paths are taken as given: `..` is refused, `.` and repeated separators are ignored, and a
//! relative path means the same as the absolute one.

mod crash;
mod fault;
mod file;
mod locks;
mod namespace;
mod state;
mod tree;

use std::error::Error;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

pub use self::fault::{Fault, FaultError, FaultOp};
pub use self::file::SIM_DIRECT_ALIGNMENT;
use self::file::SimFile;
use self::state::State;
use self::tree::{Node, View, components, errno};
use crate::{File, OpenMode};

/// The largest file the simulator keeps in memory, in bytes; writes past it fail with `EFBIG`.
pub const FILE_BYTES_MAX: u64 = 1 << 30;

/// The error every call returns from a simulated crash until [`SimStorage::crash`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("simulated crash at operation {op}")]
pub struct SimCrash {
    /// The index of the operation that did not happen.
    pub op: u64,
}

/// The simulated storage. Share it as `Arc<dyn Storage>` and keep the `Arc<SimStorage>` to
/// crash it, inject faults and look at the bytes.
///
/// A directory created by `create_dir_all` survives a crash only once each parent on its path
/// has been synced with `sync_dir`; a test's setup can call [`SimStorage::make_all_durable`]
/// instead.
pub struct SimStorage {
    state: Arc<Mutex<State>>,
    /// Notified when a lock is released (an open dropped, a crash), for opens waiting on one.
    released: Arc<Condvar>,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("SimStorage")
            .field("ops", &state.ops())
            .field("crashed", &state.crashed())
            .field("epoch", &state.epoch)
            .finish_non_exhaustive()
    }
}

/// Locks the state. A panic while it was held left it consistent: every change under the lock
/// is made in one step after the checks that can fail.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimStorage {
    /// An empty simulated filesystem. `seed` drives the choices it makes on its own (how much
    /// of a write a full disk takes); what survives a crash is chosen by the seed given to
    /// [`SimStorage::crash`].
    pub fn new(seed: u64) -> Arc<SimStorage> {
        Arc::new(SimStorage {
            state: Arc::new(Mutex::new(State::new(seed))),
            released: Arc::new(Condvar::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The number of operations counted so far; the next one has this index.
    pub fn ops(&self) -> u64 {
        self.lock().ops()
    }

    /// Crashes at operation index `op` (or at the next operation, if it has passed): that
    /// operation does not happen, and it and every call after it fail with [`SimCrash`] until
    /// [`SimStorage::crash`]. `None` disarms.
    pub fn set_crash_at(&self, op: Option<u64>) {
        self.lock().set_crash_at(op);
    }

    /// Whether the crash point was reached and [`SimStorage::crash`] has not run since.
    pub fn crashed(&self) -> bool {
        self.lock().crashed()
    }

    /// Power loss now: the namespace reverts to its durable entries and each file to its
    /// durable image plus a random survival of its unsynced changes, chosen by `seed` alone.
    /// Disarms the crash point and makes the storage usable again; armed faults stay armed.
    /// Earlier handles fail with `ESTALE`, and every advisory lock is released (its holder
    /// died).
    pub fn crash(&self, seed: u64) {
        self.lock().crash(seed);
        self.released.notify_all();
    }

    /// Every process dies and the machine stays up, as when a process is killed and started
    /// again: every advisory lock is released (the kernel drops a dead process's locks), while
    /// the files, their unsynced changes and open handles stay as they are. Not an operation.
    pub fn restart_processes(&self) {
        self.lock().locks.clear();
        self.released.notify_all();
    }

    /// Arms a fault.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.inject(fault);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// How many injected errors have been returned so far.
    pub fn faults_fired(&self) -> u64 {
        self.lock().faults.fired
    }

    /// Whether `err` is the error of a simulated crash.
    pub fn is_crash_error(err: &io::Error) -> bool {
        err.get_ref().is_some_and(|inner| inner.is::<SimCrash>())
    }

    /// Whether `err` or any error in its `source` chain is the error of a simulated crash, for
    /// callers that wrap I/O errors in their own types.
    pub fn is_crash(err: &(dyn Error + 'static)) -> bool {
        let mut next = Some(err);
        while let Some(e) = next {
            let io_crash = e
                .downcast_ref::<io::Error>()
                .is_some_and(Self::is_crash_error);
            if io_crash || e.is::<SimCrash>() {
                return true;
            }
            next = e.source();
        }
        false
    }

    /// The durable bytes of the file durably linked at `path`: what a crash that drops every
    /// unsynced change would leave. `None` if no file is durably there.
    pub fn durable_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let state = self.lock();
        let names = components(path.as_ref()).ok()?;
        match state.tree.resolve(&names, View::Durable).ok()? {
            Node::File(id) => Some(state.tree.inodes[&id].durable.clone()),
            Node::Dir(_) => None,
        }
    }

    /// The bytes reads of the file at `path` see now. `None` if there is no file there.
    pub fn live_bytes(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let state = self.lock();
        let names = components(path.as_ref()).ok()?;
        match state.tree.resolve(&names, View::Live).ok()? {
            Node::File(id) => Some(state.tree.inodes[&id].live.clone()),
            Node::Dir(_) => None,
        }
    }

    /// Feeds `out` a description of everything that exists now, in one canonical order: every
    /// path, whether it is a directory or which file (hard links show), and each file's bytes
    /// and released pages. Two states feed the same bytes exactly when a process would find the
    /// same names, links, contents and holes; a test hashes it to tell two crashes' leftovers
    /// apart. Not an operation.
    pub fn describe(&self, out: &mut dyn FnMut(&[u8])) {
        self.lock().tree.describe_live(out);
    }

    /// The paths of every file that exists now, absolute, sorted.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.lock().tree.file_paths()
    }

    /// Corrupts the byte at `offset` of the file at `path` (every bit inverted) in both its
    /// live and durable images, wherever each is long enough. Unsynced writes that cover the
    /// byte are left alone, so corrupt synced files. `EINVAL` if neither image reaches it.
    pub fn flip_byte(&self, path: impl AsRef<Path>, offset: u64) -> io::Result<()> {
        let mut state = self.lock();
        let names = components(path.as_ref())?;
        let Node::File(id) = state.tree.resolve(&names, View::Live)? else {
            return Err(errno(libc::EISDIR));
        };
        let inode = state.tree.inode_mut(id);
        let mut flipped = false;
        for image in [&mut inode.live, &mut inode.durable] {
            if let Some(byte) = usize::try_from(offset).ok().and_then(|i| image.get_mut(i)) {
                *byte ^= 0xff;
                flipped = true;
            }
        }
        if flipped {
            Ok(())
        } else {
            Err(errno(libc::EINVAL))
        }
    }

    /// Makes everything durable as it is now, as a test's setup would after a clean shutdown:
    /// every directory's entries and every file's live image. Not an operation.
    pub fn make_all_durable(&self) {
        let mut state = self.lock();
        for dir in state.tree.dirs.values_mut() {
            dir.durable.clone_from(&dir.live);
        }
        for inode in state.tree.inodes.values_mut() {
            inode.durable.clone_from(&inode.live);
            inode.pending.clear();
        }
    }
}

impl SimStorage {
    fn open_existing(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let mut state = self.lock();
        state.alive()?;
        match state.tree.resolve(&components(path)?, View::Live)? {
            Node::File(id) => Ok(self.handle(&mut state, id, path, mode != OpenMode::Read)),
            Node::Dir(_) => Err(errno(libc::EISDIR)),
        }
    }

    fn open_create(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let mut state = self.lock();
        state.begin_plain(FaultOp::Create, &[path])?;
        let (dir, name) = state.tree.parent(path)?;
        let id = match state.tree.dir(dir).live.get(&name).copied() {
            Some(Node::Dir(_)) => return Err(errno(libc::EISDIR)),
            Some(Node::File(_)) if mode == OpenMode::CreateNew => return Err(errno(libc::EEXIST)),
            Some(Node::File(id)) => {
                // O_TRUNC: an unsynced length change like any other.
                state.tree.inode_mut(id).set_len(0);
                id
            }
            None => state.tree.create_file(dir, name),
        };
        Ok(self.handle(&mut state, id, path, true))
    }

    /// Opens the lock file at `path`, creating it (one counted operation) if it is missing.
    fn open_lock(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        let mut state = self.lock();
        state.alive()?;
        let (dir, name) = state.tree.parent(path)?;
        let id = match state.tree.dir(dir).live.get(&name).copied() {
            Some(Node::Dir(_)) => return Err(errno(libc::EISDIR)),
            Some(Node::File(id)) => id,
            None => {
                state.begin_plain(FaultOp::Create, &[path])?;
                state.tree.create_file(dir, name)
            }
        };
        Ok(self.handle(&mut state, id, path, true))
    }

    fn handle(&self, state: &mut State, inode: u64, path: &Path, writable: bool) -> Arc<dyn File> {
        Arc::new(SimFile {
            state: Arc::clone(&self.state),
            released: Arc::clone(&self.released),
            inode,
            open: state.locks.new_open(),
            path: path.to_path_buf(),
            writable,
            epoch: state.epoch,
        })
    }
}
