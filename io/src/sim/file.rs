//! A simulated file handle: reads see the live image, writes land in the live image and the
//! inode's pending changes, a sync moves the pending changes to the durable image. Each write
//! of a batch and the batch's sync are separate operations, so a crash or a fault can fall
//! between them.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use rand::RngExt;

use super::fault::{FaultError, FaultOp};
use super::state::State;
use super::tree::{Id, Inode, errno, to_usize};
use super::{FILE_BYTES_MAX, lock};
use crate::pipe::{DirectAlignment, OpenedPipe, PipeOptions, SyncPipe};
use crate::{File, FileId, LockMode, Mapped, WriteAt};

/// An open simulated file.
pub(super) struct SimFile {
    pub(super) state: Arc<Mutex<State>>,
    /// The storage's: notified when this open releases a lock.
    pub(super) released: Arc<Condvar>,
    pub(super) inode: Id,
    /// This open's number, which its advisory lock is held by.
    pub(super) open: u64,
    /// The path it was opened by, which faults match on.
    pub(super) path: PathBuf,
    pub(super) writable: bool,
    /// The crash epoch it was opened in.
    pub(super) epoch: u64,
}

impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the shared state: it holds every file's bytes.
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("inode", &self.inode)
            .field("writable", &self.writable)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// Refuses a file end past the simulator's in-memory limit.
fn check_end(offset: u64, len: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= FILE_BYTES_MAX => Ok(()),
        _ => Err(errno(libc::EFBIG)),
    }
}

impl SimFile {
    /// The state, if this handle is still valid.
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = lock(&self.state);
        state.check_handle(self.epoch)?;
        Ok(state)
    }

    /// The state, if this handle is still valid and open for writing.
    fn state_for_write(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.state()?;
        if !self.writable {
            return Err(errno(libc::EBADF));
        }
        Ok(state)
    }

    fn inode<'a>(&self, state: &'a mut State) -> &'a mut Inode {
        state.tree.inode_mut(self.inode)
    }

    /// One write of a batch. `ENOSPC` applies a random strict prefix of the write (possibly
    /// empty), as a disk that fills up midway would; `EIO` applies nothing.
    fn write_one(&self, state: &mut State, w: &WriteAt<'_>) -> io::Result<()> {
        let fault = state.begin(FaultOp::Write, &[&self.path])?;
        check_end(w.offset, w.data.len() as u64)?;
        let applied = match fault {
            None => w.data.len(),
            Some(FaultError::Enospc) if !w.data.is_empty() => {
                state.rng.random_range(0..w.data.len())
            }
            Some(_) => 0,
        };
        if applied > 0 {
            self.inode(state).write(w.offset, &w.data[..applied]);
        }
        match fault {
            Some(f) => Err(f.to_io_error()),
            None => Ok(()),
        }
    }

    /// A data sync. A failed sync loses the pending changes for good (see
    /// [`Inode::lose_pending`]).
    fn sync_locked(&self, state: &mut State) -> io::Result<()> {
        match state.begin(FaultOp::Sync, &[&self.path])? {
            Some(fault) => {
                self.inode(state).lose_pending();
                Err(fault.to_io_error())
            }
            None => {
                self.inode(state).sync();
                Ok(())
            }
        }
    }
}

impl File for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut state = self.state()?;
        let live = &self.inode(&mut state).live;
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(live.len());
        let n = buf.len().min(live.len() - start);
        buf[..n].copy_from_slice(&live[start..start + n]);
        Ok(n)
    }

    fn write_batch(&self, writes: &[WriteAt<'_>], sync: bool) -> io::Result<()> {
        let mut state = self.state_for_write()?;
        for w in writes {
            self.write_one(&mut state, w)?;
        }
        if sync {
            self.sync_locked(&mut state)?;
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.state()?;
        self.sync_locked(&mut state)
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.state()?;
        Ok(self.inode(&mut state).live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.state_for_write()?;
        state.begin_plain(FaultOp::SetLen, &[&self.path])?;
        check_end(len, 0)?;
        self.inode(&mut state).set_len(len);
        Ok(())
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut state = self.state_for_write()?;
        state.begin_plain(FaultOp::Allocate, &[&self.path])?;
        // Space is not modelled; only the failure of the call is.
        check_end(offset, len)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let mut state = self.state_for_write()?;
        state.begin_plain(FaultOp::ZeroRange, &[&self.path])?;
        check_end(offset, len)?;
        let inode = self.inode(&mut state);
        // The length does not change: only the part inside the file is zeroed.
        let end = (offset + len).min(inode.live.len() as u64);
        if offset < end {
            inode.write(offset, &vec![0; to_usize(end - offset)]);
        }
        Ok(())
    }

    /// A counted operation (`FaultOp::ZeroRange` for injected errors, which change nothing);
    /// see [`Inode::punch`](super::tree::Inode) for what a crash leaves.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        let mut state = self.state_for_write()?;
        state.begin_plain(FaultOp::ZeroRange, &[&self.path])?;
        check_end(offset, len)?;
        self.inode(&mut state).punch(offset, offset + len);
        Ok(true)
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        let mut state = self.state()?;
        Ok(self.inode(&mut state).allocated_bytes())
    }

    fn map(&self) -> io::Result<Mapped> {
        let mut state = self.state()?;
        Ok(Mapped::Owned(self.inode(&mut state).live.clone()))
    }

    fn id(&self) -> io::Result<FileId> {
        // Only a handle that is still valid (opened since the last crash) answers.
        drop(self.state()?);
        Ok(FileId {
            dev: 0,
            ino: self.inode,
        })
    }

    fn lock(&self, mode: LockMode, wait: bool) -> io::Result<bool> {
        let mut state = self.state()?;
        loop {
            if state.locks.try_take(self.inode, self.open, mode) {
                return Ok(true);
            }
            if !wait {
                return Ok(false);
            }
            state = self
                .released
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            // A crash while waiting: this handle is stale, its holder is gone.
            state.check_handle(self.epoch)?;
        }
    }

    /// Direct I/O is emulated: the pipe writes through this file like any other, each piece
    /// and sync one counted operation, and refuses submissions that are not aligned to
    /// [`SIM_DIRECT_ALIGNMENT`], as a real file opened with `O_DIRECT` would. So crash tests
    /// exercise the padded, rewritten tail blocks of direct writes.
    fn open_pipe(
        &self,
        _path: &std::path::Path,
        options: PipeOptions,
    ) -> io::Result<Option<OpenedPipe>> {
        if !options.direct {
            return Ok(None);
        }
        let open = lock(&self.state).locks.new_open();
        let twin = SimFile {
            state: Arc::clone(&self.state),
            released: Arc::clone(&self.released),
            inode: self.inode,
            open,
            path: self.path.clone(),
            writable: self.writable,
            epoch: self.epoch,
        };
        Ok(Some(OpenedPipe {
            pipe: Box::new(SyncPipe::new(Arc::new(twin), Some(SIM_DIRECT_ALIGNMENT))),
            note: None,
        }))
    }
}

impl Drop for SimFile {
    /// Closing the open releases its lock, as closing a file's last descriptor does.
    fn drop(&mut self) {
        if lock(&self.state).locks.release(self.inode, self.open) {
            self.released.notify_all();
        }
    }
}

/// The alignment the simulator's emulated direct I/O requires: one sector.
pub const SIM_DIRECT_ALIGNMENT: DirectAlignment = DirectAlignment {
    memory_bytes: 512,
    offset_bytes: 512,
};
