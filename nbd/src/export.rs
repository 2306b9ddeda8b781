//! What the server serves, whatever holds the bytes. A [`BlockDevice`] is the one description
//! of an export: its size, whether it is read-only, and the commands (read, write, trim,
//! write-zeroes, flush, block status). A [`Backend`] names the exports and opens a device per
//! connection, so a device may keep caches of its own. The server checks every range against
//! the device's size and refuses writes to a read-only device before the device sees them.

use super::error::NbdError;
use super::proto;

/// How an export is listed (`NBD_OPT_LIST`, `NBD_INFO_NAME`, `NBD_INFO_DESCRIPTION`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportInfo {
    /// The export's name: the disk's name.
    pub name: String,
    /// Shown by `nbdinfo`: which vault, point and mode.
    pub description: String,
}

/// The exports of a running server, shared by every connection.
pub trait Backend: Send + Sync {
    /// The exports, in disk id order.
    fn exports(&self) -> &[ExportInfo];
    /// A device for export `index`, for one connection. Opening must be cheap: the handshake
    /// also opens one to learn an export's size and whether it is read-only.
    fn open(&self, index: usize) -> Box<dyn BlockDevice + '_>;
    /// A connection ended, cleanly or not. Capture makes every write it acknowledged durable,
    /// so a client that vanishes without a flush loses nothing it was told was done.
    fn connection_closed(&self) {}
}

/// One export as one connection uses it. Ranges are checked against [`BlockDevice::size`] by
/// the caller, and writes, trims and write-zeroes reach only a device that is not read-only.
pub trait BlockDevice {
    /// Bytes.
    fn size(&self) -> u64;
    /// Whether writes, trims and write-zeroes are refused (and no flush is offered).
    fn read_only(&self) -> bool;
    /// Fills `buf` with the bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError>;
    /// Pushes the allocation (`base:allocation`) of `[offset, end)` into `out`, in order, until
    /// `out` is full.
    fn block_status(&mut self, offset: u64, end: u64, out: &mut Extents) -> Result<(), NbdError>;
    /// Writes `data` at `offset`; with `fua`, durable before it returns.
    fn write(&mut self, _offset: u64, _data: &[u8], _fua: bool) -> Result<(), NbdError> {
        Err(NbdError::read_only("the export is read-only"))
    }
    /// Sets `[offset, offset + len)` to zeros; `fua` as for writes.
    fn write_zeroes(&mut self, _offset: u64, _len: u64, _fua: bool) -> Result<(), NbdError> {
        Err(NbdError::read_only("the export is read-only"))
    }
    /// Discards `[offset, offset + len)`. What a trimmed range reads as is unspecified, so by
    /// default it is zeroed, which is also what its block status then says.
    fn trim(&mut self, offset: u64, len: u64, fua: bool) -> Result<(), NbdError> {
        self.write_zeroes(offset, len, fua)
    }
    /// Makes every write acknowledged so far durable.
    fn flush(&mut self) -> Result<(), NbdError> {
        Ok(())
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
