//! What the server serves, whatever holds the bytes: a [`Backend`] lists the exports and
//! opens a [`BlockDevice`] per connection; a `BlockDevice` reads, writes, zeroes, flushes and
//! describes its allocation. The server checks every range against the export's size and
//! refuses writes to a read-only backend before a device sees them.

use super::proto;

/// One export: a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportInfo {
    /// The export's name: the disk's name.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Shown by `nbdinfo`: which vault, point and mode.
    pub description: String,
}

/// The backend of a running server, shared by every connection.
pub trait Backend: Send + Sync {
    /// The exports, in disk id order.
    fn exports(&self) -> &[ExportInfo];
    /// Whether writes are accepted.
    fn writable(&self) -> bool;
    /// A handle on export `index` for one connection (it may keep caches of its own).
    fn open(&self, index: usize) -> Box<dyn BlockDevice + '_>;
    /// A connection ended, cleanly or not. Capture makes every write it acknowledged durable,
    /// so a client that vanishes without a flush loses nothing it was told was done.
    fn connection_closed(&self) {}
}

/// One export as one connection uses it. Ranges are checked against the size by the caller.
pub trait BlockDevice {
    /// Fills `buf` with the bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ExportError>;
    /// Pushes the allocation of `[offset, end)` into `out`, in order, until `out` is full.
    fn extents(&mut self, offset: u64, end: u64, out: &mut Extents) -> Result<(), ExportError>;
    /// Writes `data` at `offset`; with `fua`, durable before it returns.
    fn write(&mut self, _offset: u64, _data: &[u8], _fua: bool) -> Result<(), ExportError> {
        Err(ExportError::read_only())
    }
    /// Sets `[offset, offset + len)` to zeros (trim and write-zeroes both); `fua` as for writes.
    fn zero(&mut self, _offset: u64, _len: u64, _fua: bool) -> Result<(), ExportError> {
        Err(ExportError::read_only())
    }
    /// Makes every write acknowledged so far durable.
    fn flush(&mut self) -> Result<(), ExportError> {
        Ok(())
    }
}

/// A failed request: the NBD error value and a message for the client and the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportError {
    /// `EIO`, `EPERM`, `EINVAL`, `ENOSPC`, ...
    pub errno: u32,
    /// What failed, naming the vault file and offset when there is one.
    pub message: String,
}

impl ExportError {
    /// `errno` with `message`.
    pub fn new(errno: u32, message: impl Into<String>) -> ExportError {
        ExportError {
            errno,
            message: message.into(),
        }
    }

    /// `EPERM`: the export does not accept writes.
    pub fn read_only() -> ExportError {
        ExportError::new(proto::EPERM, "the export is read-only")
    }

    /// An I/O error on a file the device owns (an overlay's, say).
    pub fn io(what: &str, e: std::io::Error) -> ExportError {
        let errno = if e.kind() == std::io::ErrorKind::StorageFull {
            proto::ENOSPC
        } else {
            proto::EIO
        };
        ExportError::new(errno, format!("{what}: {e}"))
    }
}

/// Allocation descriptors `(length, base:allocation flags)` for one request, built from the
/// start of the range forward. Bounded twice: in descriptors (a reply's size) and in work (base
/// checksum-table lookups), so one request never costs in proportion to the disk. The reply
/// may then cover less than was asked, which the protocol allows.
#[derive(Debug)]
pub struct Extents {
    list: Vec<(u64, u32)>,
    max_extents: usize,
    work_left: u64,
    full: bool,
}

impl Extents {
    /// At most `max_extents` descriptors (at least 1) and `work` lookups.
    pub fn new(max_extents: usize, work: u64) -> Extents {
        Extents {
            list: Vec::new(),
            max_extents: max_extents.max(1),
            work_left: work,
            full: false,
        }
    }

    /// Appends `len` bytes with `flags`, merged into the last descriptor when the flags match.
    /// Returns false, and stays full, when no more can be appended.
    pub fn push(&mut self, len: u64, flags: u32) -> bool {
        if self.full {
            return false;
        }
        if len == 0 {
            return true;
        }
        if let Some(last) = self.list.last_mut()
            && last.1 == flags
        {
            last.0 += len;
        } else if self.list.len() == self.max_extents {
            self.full = true;
            return false;
        } else {
            self.list.push((len, flags));
        }
        true
    }

    /// Spends one unit of work; false (and full) when none is left. The first descriptor is
    /// always allowed, so a reply is never empty.
    pub fn charge(&mut self) -> bool {
        if self.list.is_empty() {
            return !self.full;
        }
        if self.work_left == 0 {
            self.full = true;
        }
        self.work_left = self.work_left.saturating_sub(1);
        !self.full
    }

    /// Whether no more can be appended.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The descriptors.
    pub fn list(&self) -> &[(u64, u32)] {
        &self.list
    }

    /// Bytes described.
    pub fn covered(&self) -> u64 {
        self.list.iter().map(|e| e.0).sum()
    }
}

/// Flags of a range that reads as zeros and holds no data.
pub const HOLE: u32 = proto::STATE_HOLE | proto::STATE_ZERO;
/// Flags of a range that holds data.
pub const DATA: u32 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_merge_equal_neighbours_and_stop_at_the_limit() {
        let mut e = Extents::new(2, 100);
        assert!(e.push(10, HOLE));
        assert!(e.push(5, HOLE));
        assert!(e.push(7, DATA));
        assert!(!e.push(1, HOLE), "a third descriptor is over the limit");
        assert!(e.is_full());
        assert!(!e.push(1, DATA), "a full list stays full");
        assert_eq!(e.list(), &[(15, HOLE), (7, DATA)]);
        assert_eq!(e.covered(), 22);
    }

    #[test]
    fn work_runs_out_but_never_before_the_first_descriptor() {
        let mut e = Extents::new(10, 0);
        assert!(e.charge());
        assert!(e.push(1, DATA));
        assert!(!e.charge());
        assert!(e.is_full());
    }
}
