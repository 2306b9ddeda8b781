//! A point-in-time view as its user sees it: the disks of a vault at one LSN. How a view is
//! built is `view`'s business; reading one disk of it is `disk_reader`'s.

use std::sync::Arc;

use crate::disk_reader::DiskView;
use crate::layer::ViewMode;
use crate::points::PointInfo;
use crate::vault::VaultInner;

/// The disks of a vault at one LSN.
#[derive(Debug)]
pub struct PointView {
    pub(crate) vault: Arc<VaultInner>,
    pub(crate) lsn: u64,
    pub(crate) point: Option<PointInfo>,
    pub(crate) disks: Vec<DiskView>,
    /// The checkpoint the maps started from, if one was used.
    pub(crate) checkpoint_lsn: Option<u64>,
    pub(crate) mode: ViewMode,
}

impl PointView {
    /// The LSN the view shows.
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// The LSN of the checkpoint index the view started from, or `None` if it replayed the
    /// journal from the base.
    pub fn checkpoint_lsn(&self) -> Option<u64> {
        self.checkpoint_lsn
    }

    /// Whether the view keeps every piece in memory or lays the journal's tail over a
    /// checkpoint searched on disk.
    pub fn mode(&self) -> ViewMode {
        self.mode
    }

    /// Heap bytes the view keeps for its disks' pieces (maps and lower layers; not the read
    /// buffers, which each reader holds).
    pub fn memory_bytes(&self) -> u64 {
        self.disks.iter().map(|d| d.memory_bytes() as u64).sum()
    }

    /// The point the view was built for, if it was built for one.
    pub fn point(&self) -> Option<&PointInfo> {
        self.point.as_ref()
    }

    /// The disks that exist at the view's LSN, in id order.
    pub fn disks(&self) -> &[DiskView] {
        &self.disks
    }

    /// The disk named `name`.
    pub fn disk(&self, name: &str) -> Option<&DiskView> {
        self.disks.iter().find(|d| d.name() == name)
    }

    /// The storage the vault is read through (and images are written through).
    pub fn storage(&self) -> &Arc<dyn replog_io::Storage> {
        &self.vault.storage
    }

    /// The sum of the disks' sizes.
    pub fn total_bytes(&self) -> u64 {
        self.disks.iter().map(DiskView::size).sum()
    }
}
