//! The storage seam of replog: one small trait for every byte the writer and reader move, with
//! three implementations.
//!
//! - [`uring`]: io_uring, several writes in flight, the sync ordered after them with a drain.
//! - [`sync`]: plain positional syscalls (`pwrite`, `fdatasync`), used where io_uring is not.
//! - [`sim`]: an in-memory simulator that counts operations, crashes at any of them (dropping,
//!   keeping or tearing unsynced writes), and injects I/O errors, for tests.
//!
//! Writers that want to frame the next buffer while the disk writes the last one use a write
//! pipe ([`pipe`]): owned, aligned buffers ([`IoBuf`]) submitted asynchronously, returned in
//! order, with group-committed data syncs and optional direct I/O.
//!
//! It must not know what the bytes mean: no vault layout, no records, no recovery policy. Those
//! are `replog-format`'s and the writer's; this crate only moves and syncs bytes.
//!
//! The trait speaks `std::io::Error`; callers add the path and offset. `unsafe` in this crate
//! lives only in `uring` (submission queue entries), in the mapping of files (`Mapped`), in the
//! `fallocate`, `copy_file_range`, `sync_file_range`, `statx` and `posix_fadvise` calls.
//! [`block_device`] opens a whole block device as a failover's target, outside the trait: a
//! device is overwritten in place, never created, renamed or truncated.

use std::fmt::Debug;
use std::io;
use std::path::Path;
use std::sync::Arc;

pub mod block_device;
pub mod buf;
pub mod content_sum;
pub mod dir_lock;
mod direct;
pub mod pipe;
pub mod sim;
pub mod sync;
pub mod uring;
mod zero;

pub use buf::IoBuf;
pub use content_sum::ContentSum;
pub use dir_lock::{DirLock, DirLockError};
pub use pipe::{Completion, DirectAlignment, OpenedPipe, PipeOptions, WritePipe, open_pipe};
pub use zero::is_zero;

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write a new file; fails with `AlreadyExists` if anything exists under the name,
    /// a symbolic link included (`O_CREAT | O_EXCL | O_NOFOLLOW`).
    CreateNew,
    /// Read and write, created if missing, truncated to zero if present. A symbolic link under
    /// the name is refused, never followed (`O_NOFOLLOW`): a link planted at a predictable name
    /// must not make replog truncate the file it points to.
    CreateTruncate,
}

/// What a directory entry is, without following a symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (whatever it points to, or nothing).
    Symlink,
    /// Anything else: a device, a socket, a pipe.
    Other,
}

impl EntryKind {
    /// The kind in words, for messages: "a directory".
    pub fn describe(self) -> &'static str {
        match self {
            EntryKind::File => "a regular file",
            EntryKind::Dir => "a directory",
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Other => "a device, socket or pipe",
        }
    }
}

/// How an advisory lock ([`File::lock`]) is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once, none exclusive (`LOCK_SH`).
    Shared,
    /// One holder (`LOCK_EX`).
    Exclusive,
}

/// One positional write of a batch.
#[derive(Clone, Copy, Debug)]
pub struct WriteAt<'a> {
    /// File offset.
    pub offset: u64,
    /// Bytes to write there.
    pub data: &'a [u8],
}

/// Which implementation a [`Storage`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// io_uring.
    Uring,
    /// Plain syscalls.
    Sync,
    /// The in-memory simulator.
    Sim,
}

impl BackendKind {
    /// The name used by `--backend` and `REPLOG_IO_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Uring => "uring",
            BackendKind::Sync => "sync",
            BackendKind::Sim => "sim",
        }
    }
}

/// A read-only view of a whole file: a memory map for real files, a copy for the simulator.
pub enum Mapped {
    /// A memory map of the file as it was at mapping time.
    Mmap(memmap2::Mmap),
    /// An owned copy (simulator, or an empty file, which cannot be mapped).
    Owned(Vec<u8>),
}

impl Debug for Mapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mapped({} bytes)", self.len())
    }
}

impl Mapped {
    /// Drops this process's resident pages of bytes `[start, end)` of the map (they stay in the
    /// page cache; a later read faults them back in from the file): a scan of a large mapped
    /// file releases what it has passed, so its resident memory stays a window, not the file.
    /// Best effort; nothing to do for a copy.
    pub fn release(&self, start: usize, end: usize) {
        if let Mapped::Mmap(m) = self
            && start < end
            && end <= m.len()
        {
            // SAFETY: `m` is a read-only shared map of a file (`Mmap::map`). MADV_DONTNEED on a
            // shared file map only removes this process's page table entries: the next access
            // reads the same page of the file again, so no byte any slice of it refers to
            // changes (unlike a private map, whose copied pages it would zero).
            let _ = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

impl std::ops::Deref for Mapped {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Mapped::Mmap(m) => m,
            Mapped::Owned(v) => v,
        }
    }
}

/// The identity of a file in its namespace (device and inode numbers on a real filesystem): two
/// opens, or an open and a name, refer to the same file exactly when their identities are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    /// The device (0 in the simulator).
    pub dev: u64,
    /// The inode number.
    pub ino: u64,
}

/// An open file. All offsets are absolute; nothing keeps a cursor, so a file is shared freely
/// between threads.
#[allow(
    clippy::len_without_is_empty,
    reason = "`len` is a fallible metadata call, not a collection size"
)]
pub trait File: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many (0 at end of file).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes every byte of every entry of `writes`, then, if `sync`, makes them durable with
    /// a data sync ordered after all of them. Returns only when everything is done or an error
    /// stopped it. A short write is completed, never reported as success.
    ///
    /// On error nothing is known about which writes reached the file, and if the error came
    /// from the sync, the caller must assume the written data may be lost even if a later sync
    /// succeeds (the kernel may have dropped the dirty pages).
    fn write_batch(&self, writes: &[WriteAt<'_>], sync: bool) -> io::Result<()>;

    /// Makes all written data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;

    /// The file's length.
    fn len(&self) -> io::Result<u64>;

    /// Sets the file's length, truncating or extending with zeros.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Reserves space for `[offset, offset + len)` without changing the length, where the
    /// filesystem supports it; otherwise does nothing.
    fn allocate(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Makes `[offset, offset + len)` read as zeros without changing the length, releasing the
    /// space where the filesystem can (hole punching), writing zeros where it cannot.
    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Releases the space of `[offset, offset + len)` without changing the length (hole
    /// punching: `fallocate(PUNCH_HOLE | KEEP_SIZE)`); the range reads as zeros afterwards.
    /// Returns `false`, having changed nothing, where the filesystem cannot punch holes: unlike
    /// [`File::zero_range`] it never writes zeros instead, which would cost I/O and free
    /// nothing. Not durable until the next [`File::sync_data`]; a crash before it may leave the
    /// old bytes. The default (a file served from elsewhere) punches nothing.
    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        let _ = (offset, len);
        Ok(false)
    }

    /// The bytes the file occupies on its device (`st_blocks` x 512): less than its length
    /// where it has holes, more where space is reserved past its end. The default (a file
    /// served from elsewhere) answers its length.
    fn allocated_bytes(&self) -> io::Result<u64> {
        self.len()
    }

    /// A read-only view of the whole file as it is now.
    fn map(&self) -> io::Result<Mapped>;

    /// The descriptor of a real file, so two files of one backend can be copied between in the
    /// kernel; `None` for the simulator.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    /// The next run of data at or after `offset`, as `(start, end)` with `end` the start of the
    /// hole after it, or `None` when only holes are left; holes read as zeros, so a reader of a
    /// sparse image need not read them. A real file asks the filesystem (`SEEK_DATA`,
    /// `SEEK_HOLE`); a file that cannot tell says all of it is data (`end` is `u64::MAX`).
    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        match self.raw_fd() {
            Some(fd) => sync::next_data(fd, offset),
            None => Ok(Some((offset, u64::MAX))),
        }
    }

    /// Starts writing `[offset, offset + len)` back to the device and returns without waiting
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). It makes nothing durable: it only lets the
    /// device work while the caller goes on, so that a later [`File::sync_data`] finds most of
    /// the data written. The default (the simulator, a file served from elsewhere) does
    /// nothing.
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        match self.raw_fd() {
            Some(fd) => sync::start_writeback(fd, offset, len),
            None => Ok(()),
        }
    }

    /// Copies `len` bytes at `src_offset` of `src` to `offset` of this file, without syncing.
    /// Between real files this is `copy_file_range`: the kernel copies from its page cache (or
    /// shares the blocks, on filesystems that reflink) and the bytes never pass through this
    /// process. Otherwise, or where the kernel refuses, the bytes are read and written.
    fn copy_from(&self, src: &dyn File, src_offset: u64, offset: u64, len: u64) -> io::Result<()> {
        if let (Some(from), Some(to)) = (src.raw_fd(), self.raw_fd()) {
            match sync::copy_file_range_all(from, src_offset, to, offset, len) {
                Ok(()) => return Ok(()),
                Err(e) if sync::is_copy_unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
        copy_through_buffer(src, src_offset, self, offset, len)
    }

    /// Takes an advisory lock on this open file, like `flock`: it belongs to this open (not to
    /// the path, nor to the process), so another open of the same file conflicts with it even
    /// in this process. With `wait`, waits for conflicting holders and returns `true`; without,
    /// returns `false` at once when one holds it. Taking a lock again converts it to `mode`.
    ///
    /// It lasts until the last handle of this open is dropped, or until its holder dies: the
    /// kernel drops the locks of a process that exits or is killed, and the simulator drops
    /// every lock at a simulated crash (every process died with the machine). Taking a lock is
    /// not a counted operation of the simulator: it changes nothing on disk. Real files
    /// `flock`; the default (a file served from elsewhere, such as a remote) cannot be locked.
    fn lock(&self, mode: LockMode, wait: bool) -> io::Result<bool> {
        let _ = (mode, wait);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this file cannot be locked",
        ))
    }

    /// Which file this open refers to, to compare with [`Storage::file_id`] of a name: whether
    /// the name still refers to the file that was opened. Real files answer with their device
    /// and inode numbers, the simulator with its own inode numbers; the default (a file served
    /// from elsewhere) cannot tell.
    fn id(&self) -> io::Result<FileId> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this file has no identity to compare",
        ))
    }

    /// Opens this backend's own write pipe onto the file (see [`pipe`]), which was opened from
    /// `path` (so that it can be opened again with `O_DIRECT`). `None` where the backend has
    /// none: [`open_pipe`] then writes through a [`pipe::SyncPipe`] over the file.
    fn open_pipe(&self, path: &Path, options: PipeOptions) -> io::Result<Option<OpenedPipe>> {
        let _ = (path, options);
        Ok(None)
    }

    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the file ends before byte {}", offset + buf.len() as u64),
                    ));
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes all of `data` at `offset`, without syncing.
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.write_batch(&[WriteAt { offset, data }], false)
    }
}

/// [`File::copy_from`] for files the kernel cannot copy between: 1 MiB at a time.
fn copy_through_buffer<T: File + ?Sized>(
    src: &dyn File,
    src_offset: u64,
    dst: &T,
    offset: u64,
    len: u64,
) -> io::Result<()> {
    const STEP_BYTES: u64 = 1 << 20;
    let mut buf = vec![0u8; STEP_BYTES.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = STEP_BYTES.min(len - done) as usize;
        src.read_exact_at(&mut buf[..n], src_offset + done)?;
        dst.write_all_at(&buf[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// A namespace of files: the real filesystem, or the simulator's.
pub trait Storage: Send + Sync + Debug {
    /// Which implementation this is.
    fn kind(&self) -> BackendKind;

    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>>;

    /// Creates a directory and its missing parents. Not durable until the parent is synced.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// The names of the entries of a directory, sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// What is at `path`, not following a symbolic link there; `None` if nothing is. The default
    /// looks at the real filesystem (`lstat`); the simulator answers from its own tree.
    fn entry_kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        sync::entry_kind(path)
    }

    /// The identity of the file at `path`, not following a symbolic link there (a link has its
    /// own); `None` if nothing is there. The default looks at the real filesystem (`lstat`).
    fn file_id(&self, path: &Path) -> io::Result<Option<FileId>> {
        sync::file_id(path)
    }

    /// Renames `from` to `to`, replacing `to` atomically. Durable once the parent is synced.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file. Durable once the parent is synced.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Opens the lock file at `path` for [`File::lock`]: for writing, created if missing (a
    /// creation is durable once the parent is synced), never truncated (its content, if any,
    /// is the holder's business), and never through a symbolic link planted at its name. The
    /// writer's `LOCK`, the lease registration lock and the sync lock are opened so.
    fn open_lock_file(&self, path: &Path) -> io::Result<Arc<dyn File>>;
}

/// The backend chosen by name: `uring`, `sync`, or `auto` (io_uring where it works, plain
/// syscalls otherwise).
pub fn backend(name: &str) -> io::Result<Arc<dyn Storage>> {
    match name {
        "uring" => Ok(Arc::new(uring::UringStorage::new()?)),
        "sync" => Ok(Arc::new(sync::SyncStorage::new())),
        "auto" => Ok(match uring::UringStorage::new() {
            Ok(s) => Arc::new(s),
            Err(_) => Arc::new(sync::SyncStorage::new()),
        }),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown I/O backend {other:?}: expected uring, sync or auto"),
        )),
    }
}

/// The environment variable that picks the backend for every replog process and test.
pub const BACKEND_ENV: &str = "REPLOG_IO_BACKEND";

/// The backend named by `REPLOG_IO_BACKEND`, or `auto` when it is unset.
pub fn backend_from_env() -> io::Result<Arc<dyn Storage>> {
    backend(&std::env::var(BACKEND_ENV).unwrap_or_else(|_| "auto".into()))
}
