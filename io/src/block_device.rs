//! A block device opened to be overwritten as a whole disk: a failover's target.
//!
//! [`BlockDevice::open_exclusive`] opens it `O_EXCL`, which the kernel refuses (`EBUSY`) while a
//! filesystem is mounted on it or another user holds it exclusively (device-mapper, RAID, a
//! swap area, another exclusive opener), and keeps that claim while the value lives. What
//! `O_EXCL` does not see, a mount of one of its partitions by a kernel that allows it, is found
//! by [`mounts_of`] in `/proc/self/mountinfo` (by `major:minor`) and [`holders_of`] in `/sys`.
//! [`BlockDevice::zero_range`] makes a range read as zeros the cheapest way the device takes:
//! `fallocate(PUNCH_HOLE)` (the device unmaps it: a discard that guarantees zeros), then
//! `fallocate(ZERO_RANGE)` (the kernel writes zeros, or asks the device to), then writes of
//! zeros from here. `unsafe` here is the `fallocate` and `posix_fadvise` calls.

use std::fs;
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The unit `fallocate` on a block device works in; ranges are aligned inward to it and the
/// edges written as zeros. 4 KiB covers every logical block size in use.
const ZERO_ALIGN_BYTES: u64 = 4096;
/// The zeros written at a time where the device takes no `fallocate`.
const ZERO_WRITE_BYTES: usize = 1 << 20;

/// How [`BlockDevice::zero_range`] made a range read as zeros, the cheapest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZeroedBy {
    /// Nothing was to be done (an empty range).
    Nothing,
    /// `fallocate(PUNCH_HOLE)`: the device unmapped the range and guarantees it reads as zeros.
    Discard,
    /// `fallocate(ZERO_RANGE)`: the kernel zeroed it (a device command, or written zeros).
    ZeroOut,
    /// Zeros written from this process.
    Writes,
}

impl ZeroedBy {
    /// The name in output: `discard`, `zeroout`, `writes`.
    pub fn name(self) -> &'static str {
        match self {
            ZeroedBy::Nothing => "nothing",
            ZeroedBy::Discard => "discard",
            ZeroedBy::ZeroOut => "zeroout",
            ZeroedBy::Writes => "writes",
        }
    }
}

/// A block device opened for reading and writing, claimed exclusively.
#[derive(Debug)]
pub struct BlockDevice {
    file: fs::File,
    size_bytes: u64,
    major: u32,
    minor: u32,
    /// Whether `fallocate` modes were refused, so later ranges skip them.
    no_discard: std::sync::atomic::AtomicBool,
    no_zeroout: std::sync::atomic::AtomicBool,
}

impl BlockDevice {
    /// Opens `path` (a symbolic link to a device is followed, as `/dev/disk/by-id/...` are) for
    /// reading and writing with `O_EXCL`. Fails with `InvalidInput` when it is not a block
    /// device and with `ResourceBusy` when the kernel says another user holds it (a mount, a
    /// device-mapper or RAID member, a swap area, another exclusive opener).
    pub fn open_exclusive(path: &Path) -> io::Result<BlockDevice> {
        let meta = fs::metadata(path)?;
        if !meta.file_type().is_block_device() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a block device",
            ));
        }
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    io::Error::new(
                        io::ErrorKind::ResourceBusy,
                        "the device is in use: the kernel refused an exclusive open (a mounted filesystem, a device-mapper, RAID or swap user, or another exclusive opener holds it)",
                    )
                } else {
                    e
                }
            })?;
        let size_bytes = file.seek(SeekFrom::End(0))?;
        let rdev = file.metadata()?.rdev();
        let (major, minor) = split_dev(rdev);
        Ok(BlockDevice {
            file,
            size_bytes,
            major,
            minor,
            no_discard: false.into(),
            no_zeroout: false.into(),
        })
    }

    /// The device's size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// The device's `(major, minor)` numbers.
    pub fn numbers(&self) -> (u32, u32) {
        (self.major, self.minor)
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes all of `data` at `offset`, without syncing.
    pub fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    /// Makes everything written durable (`fsync`, which flushes the device's write cache).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Drops the device's clean pages from the page cache (`POSIX_FADV_DONTNEED`), so that the
    /// next reads come from the device itself. Call it after [`BlockDevice::sync`]: dirty pages
    /// are not dropped.
    pub fn drop_cache(&self) -> io::Result<()> {
        // SAFETY: posix_fadvise takes no pointers; the descriptor stays open while `self` lives.
        let rc =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        match rc {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }

    /// Makes `[offset, offset + len)` read as zeros; see the module documentation. The part
    /// aligned to 4 KiB goes to `fallocate` where the device takes it; the edges, and all of
    /// it where the device takes neither mode, are written as zeros. Returns the most expensive
    /// way any part took.
    pub fn zero_range(&self, offset: u64, len: u64) -> io::Result<ZeroedBy> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.size_bytes)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "[{offset}, +{len}) is past the end of the device ({} bytes)",
                        self.size_bytes
                    ),
                )
            })?;
        if len == 0 {
            return Ok(ZeroedBy::Nothing);
        }
        let start_aligned = offset.div_ceil(ZERO_ALIGN_BYTES) * ZERO_ALIGN_BYTES;
        let end_aligned = end / ZERO_ALIGN_BYTES * ZERO_ALIGN_BYTES;
        if start_aligned >= end_aligned {
            self.write_zeros(offset, end)?;
            return Ok(ZeroedBy::Writes);
        }
        let mut how = self.zero_aligned(start_aligned, end_aligned)?;
        if offset < start_aligned || end_aligned < end {
            self.write_zeros(offset, start_aligned)?;
            self.write_zeros(end_aligned, end)?;
            how = how.max(ZeroedBy::Writes);
        }
        Ok(how)
    }

    fn zero_aligned(&self, start: u64, end: u64) -> io::Result<ZeroedBy> {
        use std::sync::atomic::Ordering::Relaxed;
        let modes = [
            (
                &self.no_discard,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                ZeroedBy::Discard,
            ),
            (
                &self.no_zeroout,
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                ZeroedBy::ZeroOut,
            ),
        ];
        for (refused, mode, how) in modes {
            if refused.load(Relaxed) {
                continue;
            }
            match self.fallocate(mode, start, end - start) {
                Ok(()) => return Ok(how),
                Err(e) if not_taken(&e) => refused.store(true, Relaxed),
                Err(e) => return Err(e),
            }
        }
        self.write_zeros(start, end)?;
        Ok(ZeroedBy::Writes)
    }

    /// `fallocate(2)`, retried on `EINTR`.
    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a range past what the kernel addresses",
            ));
        };
        loop {
            // SAFETY: fallocate takes no pointers; the descriptor stays open while `self` lives.
            let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
            if rc == 0 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn write_zeros(&self, start: u64, end: u64) -> io::Result<()> {
        if start >= end {
            return Ok(());
        }
        let zeros = vec![0u8; ((end - start) as usize).min(ZERO_WRITE_BYTES)];
        let mut at = start;
        while at < end {
            let n = ((end - at) as usize).min(zeros.len());
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        Ok(())
    }
}

/// Whether `fallocate` failed because the device does not take the mode (rather than failing).
fn not_taken(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::ENODEV | libc::EINVAL)
    )
}

/// The `(major, minor)` numbers of the block device at `path` (following a symbolic link), or
/// `None` when what is there is not a block device.
pub fn numbers_of(path: &Path) -> io::Result<Option<(u32, u32)>> {
    let meta = fs::metadata(path)?;
    Ok(meta
        .file_type()
        .is_block_device()
        .then(|| split_dev(meta.rdev())))
}

/// glibc's `major()` and `minor()` of a device number.
fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0x00ff);
    (major as u32, minor as u32)
}

/// A mounted filesystem on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The device's `major:minor`.
    pub numbers: (u32, u32),
    /// Where it is mounted, as `/proc/self/mountinfo` says (octal escapes left as they are).
    pub mount_point: PathBuf,
}

/// Every mount in this process's view of the device `(major, minor)` and of its partitions,
/// from `/proc/self/mountinfo`; the partitions are the entries of `/sys/dev/block/MAJ:MIN/`
/// that have a `partition` file.
pub fn mounts_of(numbers: (u32, u32)) -> io::Result<Vec<Mount>> {
    let mut devices = vec![numbers];
    devices.extend(partitions_of(numbers)?);
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&info)
        .filter(|m| devices.contains(&m.numbers))
        .collect())
}

/// The names of the devices stacked on the device `(major, minor)` or on one of its partitions
/// (`/sys/dev/block/MAJ:MIN/holders/`): device-mapper targets, RAID arrays, bcache.
pub fn holders_of(numbers: (u32, u32)) -> io::Result<Vec<String>> {
    let mut devices = vec![numbers];
    devices.extend(partitions_of(numbers)?);
    let mut holders = Vec::new();
    for (major, minor) in devices {
        let dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}/holders"));
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            holders.push(entry?.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(holders)
}

/// The `(major, minor)` of every partition of the device.
fn partitions_of((major, minor): (u32, u32)) -> io::Result<Vec<(u32, u32)>> {
    let dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        // No sysfs in this view: nothing more is known than the device itself.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if !path.join("partition").exists() {
            continue;
        }
        if let Some(n) = fs::read_to_string(path.join("dev"))
            .ok()
            .and_then(|s| parse_numbers(s.trim()))
        {
            found.push(n);
        }
    }
    Ok(found)
}

/// `MAJ:MIN`.
fn parse_numbers(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The mounts of a `/proc/PID/mountinfo` text: its third field is the device's `major:minor`,
/// its fifth the mount point. Lines that do not parse are skipped.
fn parse_mountinfo(info: &str) -> impl Iterator<Item = Mount> + '_ {
    info.lines().filter_map(|line| {
        let mut fields = line.split(' ');
        let numbers = parse_numbers(fields.nth(2)?)?;
        let mount_point = PathBuf::from(fields.nth(1)?);
        Some(Mount {
            numbers,
            mount_point,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_give_numbers_and_mount_points() {
        let info = "21 1 0:20 / / rw - ext4 /dev/root rw\n\
                    45 27 7:0 / /tmp/lt.mnt rw,relatime - ext4 /dev/loop0 rw\n\
                    garbage\n\
                    46 27 259:1 /sub /mnt/a\\040b rw - xfs /dev/nvme0n1p1 rw\n";
        let mounts: Vec<Mount> = parse_mountinfo(info).collect();
        assert_eq!(
            mounts,
            [
                Mount {
                    numbers: (0, 20),
                    mount_point: "/".into()
                },
                Mount {
                    numbers: (7, 0),
                    mount_point: "/tmp/lt.mnt".into()
                },
                Mount {
                    numbers: (259, 1),
                    mount_point: "/mnt/a\\040b".into()
                },
            ]
        );
    }

    #[test]
    fn device_numbers_split_as_glibc_does() {
        assert_eq!(split_dev(0x0700), (7, 0));
        assert_eq!(split_dev(0x0701), (7, 1));
        // 4097:65537 uses the high bits of both numbers (glibc's makedev).
        let (major, minor) = (4097u64, 65537u64);
        let dev = ((major & 0xfffff000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffffff00) << 12)
            | (minor & 0xff);
        assert_eq!(split_dev(dev), (4097, 65537));
    }
}
