//! The io_uring backend: each write batch goes to the kernel as many submissions in flight at
//! once (up to 64), and its data sync as one more submission with a drain flag, so the kernel
//! starts it only after every write before it has completed.
//!
//! The decisions (resubmit a short write, retry `EAGAIN`/`ECANCELED`, whether a sync counts) live
//! in the kernel-free `batch` module; this module only moves entries in and out of the ring. Each
//! file gets its own ring on its first write, behind a mutex, so batches on one file run one at a
//! time and batches on different files run in parallel. Everything other than writing goes
//! through the plain-syscall backend.
//!
//! The invariant all the `unsafe` here rests on: a write submission points into the caller's
//! `WriteAt::data`, and `write_batch` never returns while the kernel may still read it. It
//! returns after every submission has completed, or, if the ring itself fails, after every
//! submission the kernel took has completed and the ring holding the rest has been closed.

mod batch;
mod pipe;
mod pipe_state;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use io_uring::{IoUring, Probe, opcode, squeue, types};

use self::batch::{BatchState, Op};
use crate::pipe::{OpenedPipe, PipeOptions};
use crate::sync::{SyncFile, SyncStorage};
use crate::{BackendKind, File, Mapped, OpenMode, Storage, WriteAt};

/// Submission queue size of each ring, and the most submissions a batch has in flight. The
/// completion queue is twice this, so it cannot overflow.
const RING_ENTRIES: u32 = 64;

/// The most bytes one write submission carries; a longer write is split. Below the kernel's own
/// limit for one read or write (2 GiB less a page).
const OP_BYTES_MAX: usize = 1 << 30;

/// How long the driver sleeps when the kernel says it is short of resources (`EAGAIN`, `EBUSY`),
/// and how many such sleeps in a row it accepts before giving up.
const STALL_SLEEP: Duration = Duration::from_millis(1);
const STALLS_MAX: u32 = 10_000;

/// The io_uring backend of the real filesystem.
#[derive(Clone, Copy, Debug)]
pub struct UringStorage {
    sync: SyncStorage,
}

impl UringStorage {
    /// The io_uring backend, or an error where io_uring does not work here: kernels without it
    /// (`ENOSYS`) or without the needed operations, `kernel.io_uring_disabled`, or a seccomp
    /// filter (`EPERM`). The probe creates a ring and runs a no-op through it.
    pub fn new() -> io::Result<Self> {
        probe().map_err(|e| io::Error::new(e.kind(), format!("io_uring is unavailable: {e}")))?;
        Ok(UringStorage {
            sync: SyncStorage::new(),
        })
    }
}

/// Creates a ring, checks that it knows the operations this backend submits, and runs a no-op.
fn probe() -> io::Result<()> {
    let mut ring = IoUring::new(2)?;
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::Write::CODE, "write"),
        (opcode::Fsync::CODE, "fsync"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the kernel's io_uring has no {name} operation"),
            ));
        }
    }
    let nop = opcode::Nop::new().build().user_data(1);
    // SAFETY: a no-op entry points at no memory.
    unsafe { ring.submission().push(&nop) }
        .map_err(|_| io::Error::other("a new io_uring has no room for one entry"))?;
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    match ring.completion().next().map(|c| c.result()) {
        Some(result) if result >= 0 => Ok(()),
        Some(result) => Err(io::Error::from_raw_os_error(result.saturating_neg())),
        None => Err(io::Error::other("io_uring did not complete a no-op")),
    }
}

impl Storage for UringStorage {
    fn kind(&self) -> BackendKind {
        BackendKind::Uring
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        Ok(Arc::new(UringFile {
            file: SyncFile::open(path, mode)?,
            ring: Mutex::new(None),
        }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.sync.create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.sync.read_dir(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.sync.exists(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.sync.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.sync.remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.sync.sync_dir(path)
    }

    fn open_lock_file(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        // A lock file is never written through the ring: the plain file locks the same.
        self.sync.open_lock_file(path)
    }
}

/// A file whose write batches go through its own io_uring.
pub struct UringFile {
    file: SyncFile,
    /// Created on the first batch; `None` again after the ring itself failed. Never holds a
    /// submission of ours between calls.
    ring: Mutex<Option<IoUring>>,
}

impl std::fmt::Debug for UringFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringFile")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl UringFile {
    fn write_batch_uring(&self, writes: &[WriteAt<'_>], sync: bool) -> io::Result<()> {
        check_ranges(writes)?;
        if !sync && writes.iter().all(|w| w.data.is_empty()) {
            return Ok(());
        }
        let mut slot = self.ring.lock().unwrap_or_else(|poisoned| {
            // A batch panicked midway: do not reuse a ring that may hold its completions.
            let mut slot = poisoned.into_inner();
            *slot = None;
            slot
        });
        let ring = match slot.as_mut() {
            Some(ring) => ring,
            None => slot.insert(IoUring::new(RING_ENTRIES)?),
        };
        let lens: Vec<usize> = writes.iter().map(|w| w.data.len()).collect();
        let mut state = BatchState::new(&lens, sync, OP_BYTES_MAX);
        match drive(ring, self.file.as_raw_fd(), writes, &mut state) {
            Ok(()) => state.finish(),
            Err(e) => {
                // Closing the ring discards the entries the kernel never took; `drive` already
                // waited for the ones it did.
                *slot = None;
                Err(e)
            }
        }
    }
}

/// Refuses writes that reach past the largest file offset before anything is submitted.
fn check_ranges(writes: &[WriteAt<'_>]) -> io::Result<()> {
    for w in writes {
        let end = w.offset.checked_add(w.data.len() as u64);
        if end.is_none_or(|end| end > i64::MAX as u64) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a write of {} bytes at offset {} reaches past the largest file offset",
                    w.data.len(),
                    w.offset
                ),
            ));
        }
    }
    Ok(())
}

/// Runs the batch to its end. `Ok` means `state` is done (its outcome may still be an error);
/// `Err` means the ring failed, every submission the kernel took has completed, and the ring
/// must be dropped before the caller's buffers are released.
fn drive(
    ring: &mut IoUring,
    fd: RawFd,
    writes: &[WriteAt<'_>],
    state: &mut BatchState,
) -> io::Result<()> {
    let mut stalls = 0;
    loop {
        fill(ring, fd, writes, state);
        if state.is_done() {
            return Ok(());
        }
        if state.in_flight() == 0 {
            // Nothing is in flight, so returning cannot leave a buffer with the kernel.
            return Err(io::Error::other(
                "an io_uring batch stalled with nothing in flight",
            ));
        }
        match ring.submit_and_wait(1) {
            Ok(_) => stalls = 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_stall(&e) && stalls < STALLS_MAX => {
                stalls += 1;
                std::thread::sleep(STALL_SLEEP);
            }
            Err(e) => {
                wait_without_enter(ring, state);
                return Err(e);
            }
        }
        reap(ring, state);
    }
}

/// `io_uring_enter` errors that mean "try again shortly".
fn is_stall(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY))
}

/// Queues every submission the batch allows and the ring has room for.
fn fill(ring: &mut IoUring, fd: RawFd, writes: &[WriteAt<'_>], state: &mut BatchState) {
    let mut sq = ring.submission();
    while state.in_flight() < RING_ENTRIES as usize && !sq.is_full() {
        let Some(op) = state.next_op() else { break };
        let entry = entry_for(fd, writes, op);
        // SAFETY: a write entry points at `writes[index].data[start..start + len]`, which the
        // caller's borrow keeps alive and unchanged until `write_batch` returns, and
        // `write_batch` returns only once every submission of the batch has completed and been
        // reaped, or has been discarded with the ring unseen by the kernel (see `drive` and
        // `wait_without_enter`). A sync entry points at no memory. The descriptor belongs to the
        // `UringFile` whose method is running, so it stays open throughout.
        let pushed = unsafe { sq.push(&entry) };
        pushed.expect("the submission queue was checked for room");
    }
}

/// The submission queue entry for `op`.
fn entry_for(fd: RawFd, writes: &[WriteAt<'_>], op: Op) -> squeue::Entry {
    let entry = match op {
        Op::Write { index, start, len } => {
            let w = &writes[index];
            let data = &w.data[start..start + len];
            let len = u32::try_from(len).expect("a submission carries at most OP_BYTES_MAX");
            opcode::Write::new(types::Fd(fd), data.as_ptr(), len)
                .offset(w.offset + start as u64)
                .build()
        }
        Op::Sync => opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .flags(squeue::Flags::IO_DRAIN),
    };
    entry.user_data(op.user_data())
}

/// Hands every completion waiting in the ring to the batch.
fn reap(ring: &mut IoUring, state: &mut BatchState) {
    for cqe in ring.completion() {
        state.complete(cqe.user_data(), cqe.result());
    }
}

/// After `io_uring_enter` itself failed: waits, by polling the completion queue, until every
/// submission the kernel took has completed, so the caller's buffers can be released. Entries
/// still in the submission queue were never seen by the kernel and die with the ring. If the
/// kernel does not finish within a minute, aborts the process: returning would let it read
/// freed memory.
fn wait_without_enter(ring: &mut IoUring, state: &mut BatchState) {
    const POLLS_MAX: u32 = 60_000;
    for _ in 0..POLLS_MAX {
        reap(ring, state);
        if state.in_flight() <= ring.submission().len() {
            return;
        }
        std::thread::sleep(STALL_SLEEP);
    }
    eprintln!("replog-io: io_uring failed with writes in flight that never completed; aborting");
    std::process::abort();
}

impl File for UringFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_batch(&self, writes: &[WriteAt<'_>], sync: bool) -> io::Result<()> {
        self.write_batch_uring(writes, sync)
    }

    fn sync_data(&self) -> io::Result<()> {
        // Every batch has completed before its call returned, so a plain fdatasync is ordered
        // after all of them.
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        self.file.len()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.file.allocate(offset, len)
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        self.file.zero_range(offset, len)
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        self.file.punch_hole(offset, len)
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        self.file.allocated_bytes()
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.file.raw_fd()
    }

    fn lock(&self, mode: crate::LockMode, wait: bool) -> io::Result<bool> {
        self.file.lock(mode, wait)
    }

    fn id(&self) -> io::Result<crate::FileId> {
        self.file.id()
    }

    fn map(&self) -> io::Result<Mapped> {
        self.file.map()
    }

    fn open_pipe(&self, path: &Path, options: PipeOptions) -> io::Result<Option<OpenedPipe>> {
        let (fd, direct, note) =
            crate::direct::pipe_descriptor(self.file.std_file(), path, options)?;
        Ok(Some(OpenedPipe {
            pipe: Box::new(pipe::UringPipe::new(fd, direct)?),
            note,
        }))
    }
}
