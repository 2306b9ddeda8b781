//! The plain-syscall backend: `pread`/`pwrite` through `std::os::unix::fs::FileExt`,
//! `fdatasync`, `fallocate`, and read-only memory maps.
//!
//! It is the fallback where io_uring is disabled, and the io_uring backend reuses it for every
//! operation other than writes ([`SyncFile`] exposes its descriptor through [`AsRawFd`]).

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use crate::pipe::{OpenedPipe, PipeOptions, ThreadPipe};
use crate::{BackendKind, EntryKind, File, FileId, Mapped, OpenMode, Storage, WriteAt};

/// The zero-writing fallback of [`File::zero_range`] writes this much per call.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// The real filesystem, through plain positional syscalls.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncStorage {
    _private: (),
}

impl SyncStorage {
    /// The plain-syscall backend. It has no state, so this cannot fail.
    pub fn new() -> Self {
        SyncStorage { _private: () }
    }
}

impl Storage for SyncStorage {
    fn kind(&self) -> BackendKind {
        BackendKind::Sync
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        Ok(Arc::new(SyncFile::open(path, mode)?))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            let name = entry?.file_name().into_string().map_err(|name| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the directory entry {name:?} is not valid UTF-8"),
                )
            })?;
            names.push(name);
        }
        names.sort_unstable();
        Ok(names)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // A directory opened read-only can be fsynced on Linux; that persists its entries.
        fs::File::open(path)?.sync_all()
    }

    fn open_lock_file(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        Ok(Arc::new(SyncFile {
            file: open_lock_file(path)?,
        }))
    }
}

/// `flock` on `file`: [`File::lock`] of the real backends. The kernel drops the lock when the
/// last descriptor of the open is closed or the process dies.
pub(crate) fn flock(file: &fs::File, mode: crate::LockMode, wait: bool) -> io::Result<bool> {
    use crate::LockMode::{Exclusive, Shared};
    let tried = match (mode, wait) {
        (Shared, true) => return file.lock_shared().map(|()| true),
        (Exclusive, true) => return file.lock().map(|()| true),
        (Shared, false) => file.try_lock_shared(),
        (Exclusive, false) => file.try_lock(),
    };
    match tried {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// What is at `path` on the real filesystem, not following a symbolic link there.
pub(crate) fn entry_kind(path: &Path) -> io::Result<Option<EntryKind>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let t = meta.file_type();
    Ok(Some(if t.is_symlink() {
        EntryKind::Symlink
    } else if t.is_dir() {
        EntryKind::Dir
    } else if t.is_file() {
        EntryKind::File
    } else {
        debug_assert!(t.is_block_device() || t.is_char_device() || t.is_fifo() || t.is_socket());
        EntryKind::Other
    }))
}

/// The identity of what is at `path` on the real filesystem, not following a symbolic link.
pub(crate) fn file_id(path: &Path) -> io::Result<Option<FileId>> {
    match fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The error of an `O_NOFOLLOW` open, with a refused link said plainly: the kernel reports it
/// as ELOOP, "too many levels of symbolic links", which tells an operator nothing.
fn name_refused_link(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a symbolic link is in its place, and replog never creates or truncates a file \
             through a link (remove the link)",
        )
    } else {
        e
    }
}

/// Opens the lock file at `path` for `flock`: for writing, created if missing, never truncated
/// (its content, if any, is the holder's business), and never through a symbolic link planted
/// at its name. The writer's `LOCK`, the lease registration lock and the sync lock use it.
///
/// It is opened for reading too (a holder's pid is read from it), and only for reading where
/// another user's file cannot be opened for writing: a lock needs no write access.
pub fn open_lock_file(path: &Path) -> io::Result<fs::File> {
    let open = |write: bool| {
        fs::OpenOptions::new()
            .read(true)
            .write(write)
            .create(write)
            .truncate(false)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    };
    match open(true) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => open(false),
        other => other,
    }
    .map_err(name_refused_link)
}

/// A file of the real filesystem, accessed with plain positional syscalls.
#[derive(Debug)]
pub struct SyncFile {
    file: fs::File,
}

impl SyncFile {
    /// Opens `path` as `mode` says. The modes that create never follow a symbolic link at
    /// `path` (`O_NOFOLLOW`; `CreateNew` is `O_EXCL` as well): a link there is refused.
    pub fn open(path: &Path, mode: OpenMode) -> io::Result<Self> {
        let mut options = fs::OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
            OpenMode::CreateTruncate => options.read(true).write(true).create(true).truncate(true),
        };
        let creates = matches!(mode, OpenMode::CreateNew | OpenMode::CreateTruncate);
        if creates {
            options.custom_flags(libc::O_NOFOLLOW);
        }
        match options.open(path) {
            Ok(file) => Ok(SyncFile { file }),
            Err(e) if creates => Err(name_refused_link(e)),
            Err(e) => Err(e),
        }
    }

    /// The underlying standard library file.
    pub fn std_file(&self) -> &fs::File {
        &self.file
    }

    /// `fallocate(2)` over `[offset, offset + len)`, retried on `EINTR`.
    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (offset, len) = to_off_range(offset, len)?;
        loop {
            // SAFETY: fallocate takes no pointers; the descriptor stays open while `self` lives.
            let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
            if rc == 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// The fallback of `zero_range` where holes cannot be punched: writes zeros over the part of
    /// the range inside the file, so the length does not change.
    fn write_zeros(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset.saturating_add(len).min(self.file.metadata()?.len());
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut at = offset;
        while at < end {
            let n = (end - at).min(ZERO_CHUNK_BYTES as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

/// Converts a byte range to `off_t`s, refusing ranges the kernel cannot address.
fn to_off_range(offset: u64, len: u64) -> io::Result<(libc::off_t, libc::off_t)> {
    let end = offset.checked_add(len);
    match (
        libc::off_t::try_from(offset),
        libc::off_t::try_from(len),
        end,
    ) {
        (Ok(o), Ok(l), Some(end)) if libc::off_t::try_from(end).is_ok() => Ok((o, l)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the byte range at {offset} of length {len} is past the largest file offset"),
        )),
    }
}

/// Copies `len` bytes from `from` at `from_offset` to `to` at `to_offset` with
/// `copy_file_range`, looping over short copies. An error of the first call that means the
/// kernel cannot copy between these files is returned as is; see [`is_copy_unsupported`].
/// `sync_file_range(fd, offset, len, SYNC_FILE_RANGE_WRITE)`; see [`File::start_writeback`].
pub(crate) fn start_writeback(fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = to_off_range(offset, len)?;
    // SAFETY: the descriptor is open for the call (the caller holds the file that owns it); no
    // memory of this process is passed.
    let rc = unsafe { libc::sync_file_range(fd, offset, len, libc::SYNC_FILE_RANGE_WRITE) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub(crate) fn copy_file_range_all(
    from: RawFd,
    from_offset: u64,
    to: RawFd,
    to_offset: u64,
    len: u64,
) -> io::Result<()> {
    let (mut src, _) = to_off_range(from_offset, len)?;
    let (mut dst, _) = to_off_range(to_offset, len)?;
    let mut left = len;
    while left > 0 {
        let step = left.min(1 << 30) as usize;
        // SAFETY: both descriptors are open for the call (the callers hold the files that own
        // them), and the offsets are plain integers the kernel reads and advances; no memory
        // of this process is passed.
        let n = unsafe { libc::copy_file_range(from, &mut src, to, &mut dst, step, 0) };
        match n {
            n if n > 0 => left -= n as u64,
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the source ends before byte {}", src as u64 + left),
                ));
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// [`crate::File::next_data`] of a real file: `lseek(SEEK_DATA)` from `offset`, then
/// `lseek(SEEK_HOLE)` from what it found. A filesystem without them reports everything up to
/// the end of the file as data, which is always right. Moving the descriptor's position harms
/// nothing: every read and write here names its offset.
pub(crate) fn next_data(fd: RawFd, offset: u64) -> io::Result<Option<(u64, u64)>> {
    let Ok(at) = libc::off_t::try_from(offset) else {
        return Ok(None);
    };
    // SAFETY: lseek takes only integers and touches no memory of this process; the caller
    // holds the file that owns the descriptor for the call.
    let start = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
    if start < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            // No data at or after `offset`.
            Some(libc::ENXIO) => Ok(None),
            Some(libc::EINVAL | libc::EOPNOTSUPP) => Ok(Some((offset, u64::MAX))),
            _ => Err(e),
        };
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
    if end < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((start as u64, end as u64)))
}

/// Whether a `copy_file_range` error means "not between these files" (another filesystem, an
/// old kernel, a filesystem without the operation), so a read-and-write copy should be used.
pub(crate) fn is_copy_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL)
    )
}

/// Whether an error means the filesystem does not implement the requested `fallocate` mode.
fn is_unsupported(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS))
}

impl AsRawFd for SyncFile {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for SyncFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl File for SyncFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }

    fn write_batch(&self, writes: &[WriteAt<'_>], sync: bool) -> io::Result<()> {
        for w in writes {
            // `write_all_at` loops over short writes and EINTR.
            self.file.write_all_at(w.data, w.offset)?;
        }
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        match self.fallocate(libc::FALLOC_FL_KEEP_SIZE, offset, len) {
            Err(e) if is_unsupported(&e) => Ok(()),
            other => other,
        }
    }

    fn zero_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        match self.fallocate(mode, offset, len) {
            Err(e) if is_unsupported(&e) => self.write_zeros(offset, len),
            other => other,
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        if len == 0 {
            return Ok(true);
        }
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        match self.fallocate(mode, offset, len) {
            Err(e) if is_unsupported(&e) => Ok(false),
            Err(e) => Err(e),
            Ok(()) => Ok(true),
        }
    }

    fn allocated_bytes(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.blocks() * 512)
    }

    fn raw_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn lock(&self, mode: crate::LockMode, wait: bool) -> io::Result<bool> {
        flock(&self.file, mode, wait)
    }

    fn id(&self) -> io::Result<FileId> {
        let meta = self.file.metadata()?;
        Ok(FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    fn map(&self) -> io::Result<Mapped> {
        if self.file.metadata()?.len() == 0 {
            // mmap refuses zero-length mappings.
            return Ok(Mapped::Owned(Vec::new()));
        }
        // SAFETY: a file mapping is unsound only if the mapped range stops being backed by the
        // file (SIGBUS on access) while the map lives. replog never truncates a file below a
        // length a reader mapped while that reader holds the map; files may grow by appends,
        // which lie past the mapped range and do not touch it.
        let map = unsafe { memmap2::Mmap::map(&self.file)? };
        Ok(Mapped::Mmap(map))
    }

    fn open_pipe(&self, path: &Path, options: PipeOptions) -> io::Result<Option<OpenedPipe>> {
        let (fd, direct, note) = crate::direct::pipe_descriptor(&self.file, path, options)?;
        Ok(Some(OpenedPipe {
            pipe: Box::new(ThreadPipe::new(fd, direct)?),
            note,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(len: usize) -> (tempfile::TempDir, SyncFile) {
        let dir = tempfile::tempdir().unwrap();
        let file = SyncFile::open(&dir.path().join("f"), OpenMode::CreateNew).unwrap();
        file.write_batch(
            &[WriteAt {
                offset: 0,
                data: &vec![0x5a; len],
            }],
            false,
        )
        .unwrap();
        (dir, file)
    }

    /// The fallback for filesystems that cannot punch holes, called directly since the test
    /// filesystem can.
    #[test]
    fn zero_writing_fallback_zeroes_inside_the_file_only() {
        let len = ZERO_CHUNK_BYTES * 2 + 300;
        let (_dir, file) = scratch(len);
        file.write_zeros(100, ZERO_CHUNK_BYTES as u64 + 50).unwrap();
        file.write_zeros(len as u64 - 10, 1 << 30).unwrap();
        assert_eq!(file.len().unwrap(), len as u64);
        let map = file.map().unwrap();
        let zeroed = |i: usize| (100..ZERO_CHUNK_BYTES + 150).contains(&i) || i >= len - 10;
        for (i, &b) in map.iter().enumerate() {
            assert_eq!(b, if zeroed(i) { 0 } else { 0x5a }, "byte {i}");
        }
    }

    /// A directory with a file `victim`, a link `name` to it, and a link `dangling` to the
    /// missing `nothing`: what an attacker plants at a name replog is about to create.
    fn planted_links(
        name: &str,
    ) -> (
        tempfile::TempDir,
        std::path::PathBuf,
        [std::path::PathBuf; 2],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"victim").unwrap();
        let link = dir.path().join(name);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        (dir, victim, [link, dangling])
    }

    /// Bug: `CreateTruncate` opened with `O_TRUNC` through a symbolic link, so a link planted at
    /// a predictable name (a failover's partial image, a digest cache's `.dig.tmp`) made replog
    /// truncate and overwrite the file it pointed to. Both create modes of both real backends
    /// now refuse a link, dangling or not, and leave its target alone.
    #[test]
    fn finding_4_create_modes_never_follow_a_symbolic_link() {
        let (dir, victim, [link, dangling]) = planted_links("link");
        let mut backends: Vec<Box<dyn Storage>> = vec![Box::new(SyncStorage::new())];
        if let Ok(uring) = crate::uring::UringStorage::new() {
            backends.push(Box::new(uring));
        }
        for storage in &backends {
            for mode in [OpenMode::CreateNew, OpenMode::CreateTruncate] {
                for path in [&link, &dangling] {
                    let opened = storage.open(path, mode);
                    assert!(
                        opened.is_err(),
                        "{:?} {mode:?} opened {path:?}",
                        storage.kind()
                    );
                }
            }
        }
        assert_eq!(fs::read(&victim).unwrap(), b"victim");
        assert!(!dir.path().join("nothing").exists());
        assert!(
            SyncStorage::new()
                .open(&link, OpenMode::CreateTruncate)
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
    }

    /// The writer's `LOCK`, the lease registration lock and the sync lock were opened with
    /// `O_CREAT` through whatever stood at their names; a link planted there is now refused and
    /// its target (or the dangling name it points to) left alone.
    #[test]
    fn finding_4_lock_files_are_never_opened_through_a_symbolic_link() {
        let (dir, victim, [link, dangling]) = planted_links("LOCK");
        for path in [&link, &dangling] {
            let e = open_lock_file(path).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{path:?}: {e}");
        }
        assert_eq!(fs::read(&victim).unwrap(), b"victim");
        assert!(!dir.path().join("nothing").exists());
        let plain = dir.path().join("plain");
        open_lock_file(&plain).unwrap();
        open_lock_file(&plain).unwrap();
    }

    #[test]
    fn ranges_past_the_largest_offset_are_refused() {
        let (_dir, file) = scratch(10);
        for (offset, len) in [(u64::MAX, 1), (i64::MAX as u64, 1), (0, u64::MAX)] {
            let err = file.zero_range(offset, len).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            assert!(file.allocate(offset, len).is_err());
        }
        assert_eq!(to_off_range(5, 10).unwrap(), (5, 10));
    }
}
