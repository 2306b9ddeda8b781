//! Failover onto a block device: a raw disk written in place, never truncated or replaced.
//!
//! Before anything is written the device is refused if it is mounted (itself or one of its
//! partitions, by `major:minor` in `/proc/self/mountinfo`), if another device is stacked on it
//! (`/sys/.../holders`: device-mapper, RAID), if the kernel refuses to open it exclusively
//! (`O_EXCL`: a mount in another namespace, swap, another exclusive opener), or if it is
//! smaller than the disk; bytes past the disk's size are left as they were. The exclusive open
//! is held until the run ends, so nothing mounts it meanwhile. The disk is walked in order
//! ([`walk`]): data runs are written, zero runs are made to read as zeros by the device
//! ([`BlockDevice::zero_range`]: a discard that guarantees zeros, else the kernel's zero-out,
//! else written zeros), so the device ends byte-exact whatever it held before. Then `fsync`,
//! the device's pages are dropped from the page cache, and the disk's range is read back from
//! the device and its [`ContentSum`] compared with the one computed from the bytes written.
//! Memory: one window of [`WINDOW_BYTES`].

use std::io;
use std::path::{Path, PathBuf};

use replog_io::ContentSum;
use replog_io::block_device::{self, BlockDevice, ZeroedBy};
use replog_io::content_sum::ContentKey;
use replog_reader::DiskView;

use crate::error::{Result, VaultError, VaultErrorKind};
use crate::failover_target::TargetWritten;
use crate::failover_target::{Run, WINDOW_BYTES, walk};

/// A device, opened exclusively and checked, that one disk is written to.
#[derive(Debug)]
pub struct DeviceOutput {
    path: PathBuf,
    device: BlockDevice,
}

/// Checks that `path` is a block device nobody uses that can hold `disk`, and opens it
/// exclusively.
pub fn open(path: &Path, disk: &DiskView) -> Result<DeviceOutput> {
    let shown = path.display();
    let os = |what: &str, e: io::Error| io_error(path, format!("{shown}: cannot {what}: {e}"));
    let refuse = |kind, m: String| VaultError::new(kind, format!("{shown}: {m}")).in_file(path);
    let Some(numbers) = block_device::numbers_of(path).map_err(|e| os("look at it", e))? else {
        return Err(refuse(
            VaultErrorKind::InvalidRequest,
            "is not a block device; --to takes a block device or an NBD URI (image files are written with --out DIR)".to_owned(),
        ));
    };
    let (major, minor) = numbers;
    let mounts = block_device::mounts_of(numbers).map_err(|e| os("list the mounts", e))?;
    if let Some(m) = mounts.first() {
        return Err(refuse(
            VaultErrorKind::Locked,
            format!(
                "is in use: device {}:{} is mounted at {} (this device is {major}:{minor}); unmount it first",
                m.numbers.0,
                m.numbers.1,
                m.mount_point.display()
            ),
        ));
    }
    let holders = block_device::holders_of(numbers).map_err(|e| os("list its holders", e))?;
    if !holders.is_empty() {
        return Err(refuse(
            VaultErrorKind::Locked,
            format!(
                "is in use: {} is stacked on it; stop that first",
                holders.join(", ")
            ),
        ));
    }
    let device = BlockDevice::open_exclusive(path).map_err(|e| match e.kind() {
        io::ErrorKind::ResourceBusy => refuse(VaultErrorKind::Locked, e.to_string()),
        _ => os("open it exclusively", e),
    })?;
    if device.size_bytes() < disk.size() {
        return Err(refuse(
            VaultErrorKind::InvalidRequest,
            format!(
                "the device is {} bytes, smaller than disk {} ({} bytes)",
                device.size_bytes(),
                disk.name(),
                disk.size()
            ),
        ));
    }
    Ok(DeviceOutput {
        path: path.to_path_buf(),
        device,
    })
}

impl DeviceOutput {
    /// Writes `disk` onto the device, syncs, reads it back and checks it; `progress` gets the
    /// disk bytes done so far.
    pub fn write(self, disk: &DiskView, progress: &dyn Fn(u64)) -> Result<TargetWritten> {
        let (path, dev) = (self.path.as_path(), &self.device);
        let shown = path.display();
        let key = ContentKey::random();
        let mut sum = ContentSum::new(key);
        let (mut data_bytes, mut zero_bytes) = (0u64, 0u64);
        let mut zeroed_by = ZeroedBy::Nothing;
        walk(disk, &mut |run| {
            match run {
                Run::Data { offset, data } => {
                    dev.write_all_at(data, offset).map_err(|e| {
                        io_error(
                            path,
                            format!(
                                "{shown}: cannot write {} bytes at byte {offset}: {e}",
                                data.len()
                            ),
                        )
                    })?;
                    sum.add(offset, data);
                    data_bytes += data.len() as u64;
                    progress(offset + data.len() as u64);
                }
                Run::Zero { offset, len } => {
                    let how = dev.zero_range(offset, len).map_err(|e| {
                        io_error(
                            path,
                            format!("{shown}: cannot zero {len} bytes at byte {offset}: {e}"),
                        )
                    })?;
                    zeroed_by = zeroed_by.max(how);
                    zero_bytes += len;
                    progress(offset + len);
                }
            }
            Ok(())
        })?;
        dev.sync()
            .map_err(|e| io_error(path, format!("{shown}: cannot sync: {e}")))?;
        // Best effort: where the kernel keeps the pages, the read-back still checks every
        // byte's place and value as the page cache holds it.
        let _ = dev.drop_cache();
        let read = read_back(dev, path, disk.size(), key)?;
        if read != sum {
            return Err(io_error(
                path,
                format!(
                    "{shown}: the device read back after the sync is not what was written for disk {} (its {} bytes differ in content): the device lost or changed writes, or another process wrote to it; run the failover again",
                    disk.name(),
                    disk.size()
                ),
            ));
        }
        Ok(TargetWritten {
            name: disk.name().to_owned(),
            target: path.display().to_string(),
            kind: "device",
            size_bytes: disk.size(),
            target_size_bytes: dev.size_bytes(),
            data_bytes,
            zero_bytes,
            zeroed_by: zeroed_by.name(),
        })
    }
}

/// The sum of the device's bytes `[0, size)`, read a window at a time.
fn read_back(dev: &BlockDevice, path: &Path, size: u64, key: ContentKey) -> Result<ContentSum> {
    let mut sum = ContentSum::new(key);
    let mut buf = vec![0u8; WINDOW_BYTES.min(size) as usize];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(WINDOW_BYTES) as usize;
        dev.read_exact_at(&mut buf[..n], at).map_err(|e| {
            io_error(
                path,
                format!(
                    "{}: cannot read back {n} bytes at byte {at}: {e}",
                    path.display()
                ),
            )
        })?;
        sum.add(at, &buf[..n]);
        at += n as u64;
    }
    Ok(sum)
}

fn io_error(path: &Path, detail: String) -> VaultError {
    VaultError::new(VaultErrorKind::Io, detail).in_file(path)
}
