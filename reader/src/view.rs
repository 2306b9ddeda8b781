//! Point-in-time views: the disks of a vault as they were at one LSN.
//!
//! Building a view applies, in LSN order, every write, zero and resize record with
//! `base_lsn < lsn <= target` to one [`ExtentMap`] per disk, which starts at its base's size
//! and grows at each resize record, so a view before a resize has the old size: sealed segments contribute the
//! extents of their footers (read once per vault and kept), the open segment the records of the
//! vault's scan. No data is read while building; the cost is proportional to the records
//! involved. Reading a [`DiskView`] then fetches each byte from the piece that holds it
//! (`disk_reader`); the view itself is a [`PointView`] (`point_view`).

use replog_format::record::RecordKind;

use crate::checkpoint;
pub use crate::disk_reader::{DiskView, Extent, ExtentKind};
use crate::error::{ReadError, ReadErrorKind, Result};
use crate::extent_map::ExtentMap;
pub use crate::layer::{ViewMode, ViewOptions};
pub use crate::point_view::PointView;
use crate::points::PointInfo;
use crate::vault::Vault;
use crate::view_build::{MapBuilder, Start};

impl Vault {
    /// The disks at recovery point `point`, one of [`Vault::points`], with the default
    /// [`ViewOptions`].
    pub fn view(&self, point: &PointInfo) -> Result<PointView> {
        self.view_with(point, &ViewOptions::default())
    }

    /// The disks at recovery point `point`, one of [`Vault::points`], built as `opts` says.
    pub fn view_with(&self, point: &PointInfo, opts: &ViewOptions) -> Result<PointView> {
        if !self
            .points()
            .iter()
            .any(|p| p.lsn == point.lsn && p.point_id == point.point_id)
        {
            return Err(ReadError::new(
                ReadErrorKind::InvalidRequest,
                format!(
                    "point {} (LSN {}) is not a point of this vault",
                    point.point_id, point.lsn
                ),
            ));
        }
        let mut view = self.view_at_lsn_with(point.lsn, opts)?;
        view.point = Some(point.clone());
        Ok(view)
    }

    /// The size of disk `disk_id` after every durable record up to and including `lsn`: its
    /// base's, grown by each resize record of the disk after the base and up to `lsn`. `None`
    /// when the vault has no such disk at `lsn` (not listed, or added later). Reads the footers
    /// of the segments involved, not the bases' data.
    pub fn disk_bytes_at(&self, disk_id: u32, lsn: u64) -> Result<Option<u64>> {
        let inner = &self.inner;
        self.check_lsn(lsn)?;
        let disks = &inner.manifest.disks;
        let Ok(index) = disks.binary_search_by_key(&disk_id, |d| d.disk_id) else {
            return Ok(None);
        };
        if disks[index].added_lsn > lsn {
            return Ok(None);
        }
        let base_lsn = inner.manifest.base_lsn;
        let mut size = inner.base(index)?.header.disk_bytes;
        let ctx = inner.segment_ctx();
        for slot in &inner.segments {
            if slot.first_lsn > lsn {
                break;
            }
            if slot.last_lsn() <= base_lsn {
                continue;
            }
            let mut resizes = slot.extents(&ctx)?.iter().filter(|e| {
                e.kind == RecordKind::Resize
                    && e.disk_id == disk_id
                    && e.lsn > base_lsn
                    && e.lsn <= lsn
            });
            if let Some(last) = resizes.next_back() {
                size = last.length;
            }
        }
        Ok(Some(size))
    }

    /// Refuses an LSN before the base images or past the last durable record.
    fn check_lsn(&self, lsn: u64) -> Result<()> {
        let inner = &self.inner;
        let base_lsn = inner.manifest.base_lsn;
        if lsn < base_lsn {
            return Err(ReadError::new(
                ReadErrorKind::InvalidRequest,
                format!(
                    "LSN {lsn} is older than the base images, which already hold every record up to LSN {base_lsn}"
                ),
            ));
        }
        if lsn > inner.last_lsn {
            return Err(ReadError::new(
                ReadErrorKind::InvalidRequest,
                format!(
                    "LSN {lsn} is past the last durable record of the vault (LSN {})",
                    inner.last_lsn
                ),
            ));
        }
        Ok(())
    }

    /// The disks after every durable record up to and including `lsn`, with the default
    /// [`ViewOptions`]. Disks added after `lsn` are not part of the view.
    pub fn view_at_lsn(&self, lsn: u64) -> Result<PointView> {
        self.view_at_lsn_with(lsn, &ViewOptions::default())
    }

    /// The disks after every durable record up to and including `lsn`, built in memory when the
    /// estimate of their maps fits `opts.memory_limit_bytes`, layered over a checkpoint
    /// otherwise (`layered`). Disks added after `lsn` are not part of the view.
    pub fn view_at_lsn_with(&self, lsn: u64, opts: &ViewOptions) -> Result<PointView> {
        self.check_lsn(lsn)?;
        let start = Start::of(&self.inner, lsn)?;
        if start.in_memory_bytes_estimate(&self.inner, lsn) <= opts.memory_limit_bytes {
            self.view_in_memory(lsn, start)
        } else {
            crate::layered::view(self, lsn, start, opts)
        }
    }

    /// One map per disk holding every piece: the checkpoint's loaded, the journal after it
    /// applied.
    fn view_in_memory(&self, lsn: u64, start: Start) -> Result<PointView> {
        let inner = &self.inner;
        let base_lsn = inner.manifest.base_lsn;
        // Start from the newest checkpoint at or before `lsn`, if one loads; the journal is the
        // authority, so a checkpoint that does not load is passed over (verify reports it).
        let loaded = checkpoint::start_maps(inner, lsn, &start.included, &start.base_bytes)?;
        let (start_lsn, maps) = loaded.unwrap_or_else(|| {
            let maps = start
                .base_bytes
                .iter()
                .map(|&b| ExtentMap::new(b))
                .collect();
            (base_lsn, maps)
        });
        let mut builder = MapBuilder {
            inner,
            lsn,
            start_lsn,
            maps,
            included: &start.included,
        };
        builder.apply_journal()?;
        let MapBuilder { mut maps, .. } = builder;
        maps.iter_mut().for_each(ExtentMap::compact);
        let mut disks = Vec::with_capacity(start.included.len());
        for (&index, map) in start.included.iter().zip(maps) {
            disks.push(DiskView::new(
                self.inner.clone(),
                inner.manifest.disks[index].clone(),
                inner.base(index)?,
                map,
                None,
            ));
        }
        Ok(PointView {
            vault: self.inner.clone(),
            lsn,
            point: None,
            disks,
            checkpoint_lsn: (start_lsn != base_lsn).then_some(start_lsn),
            mode: ViewMode::InMemory,
        })
    }
}
