//! Live failover: every disk of a point served over NBD at once, writable, while its image
//! `DIR/<disk>.raw` is hydrated from the vault in the background.
//!
//! Each disk's image is the one place the guest's writes go; a done map says which ranges of it
//! hold their final bytes (hydrated, or written, zeroed or trimmed by the guest). Reads of done
//! ranges come from the image, of the rest from the point, verified. Hydration copies only
//! what is not done, so it never overwrites a guest's write; a write that covers part of a block
//! marks only its own bytes done, so the rest of the block is still hydrated (nothing is lost).
//! Flush and FUA sync the image, then rewrite the hydration map, `DIR/.<disk>.hydration`
//! (FORMAT.md), which claims only bytes that were durable before it was written; hydration does
//! the same about once a second. A run killed at any moment and run again with the same point
//! and directory resumes: what the map claims is not copied again. When a disk is complete its
//! image is synced; when every disk is complete and the caller is done serving,
//! [`LiveFailover::finish`] syncs them again and removes the maps.
//!
//! The output directory is locked for the whole run (one live failover or failover at a time),
//! and the point stays leased until this value is dropped.
//!
//! Memory: per disk, the done map (one entry per disjoint done range; hydration fills the disk
//! in order, so the ranges past its cursor are the guest's scattered writes) and a copy of it
//! while the map is written; one hydration window ([`WINDOW_BYTES`]); per connection, the
//! reader's caches and one request buffer (the server's).

mod device;
mod hydrate;
mod target;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use replog_nbd::{Backend, BlockDevice, ExportInfo};
use replog_reader::{OutputDir, PointInfo, PointView};

pub use hydrate::{LiveEvent, Progress, WINDOW_BYTES};

use self::device::LiveDisk;
use self::hydrate::{Throttle, hydrate_disk};
use self::target::{Identity, Target};
use crate::error::Result;
use crate::failover::FailoverSource;

/// A live failover: the point, its disks' images and the server's backend.
#[derive(Debug)]
pub struct LiveFailover {
    view: PointView,
    point: PointInfo,
    targets: Vec<Target>,
    exports: Vec<ExportInfo>,
    /// Held for the whole run: no other run writes into the directory.
    _out: OutputDir,
    /// Held until the run ends; dropping it releases the point to compaction.
    _lease: Option<replog_reader::Lease>,
}

/// One disk of a live failover, as it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveDiskInfo {
    /// The disk's name, which is its export's name.
    pub name: String,
    /// Its image.
    pub path: PathBuf,
    /// Its size.
    pub size_bytes: u64,
    /// Bytes an earlier run had made durable (what its hydration map claimed); 0 for a new run.
    pub resumed_bytes: u64,
}

impl LiveFailover {
    /// Opens `source`'s point for a live failover into `out_dir`: new images (an existing image
    /// without a hydration map is replaced only with `force`), or a killed run's images and maps
    /// resumed. `vault` names the vault in the exports' descriptions.
    pub fn open(source: FailoverSource, out_dir: &Path, force: bool, vault: &str) -> Result<Self> {
        let FailoverSource {
            snapshot,
            point,
            lease,
            ..
        } = source;
        let view = snapshot.view(&point)?;
        let out = OutputDir::lock(view.storage(), out_dir, true)?;
        let who = Identity {
            vault_id: snapshot.header().vault_id,
            point_id: point.point_id,
            point_lsn: point.lsn,
        };
        let mut targets = Vec::new();
        for disk in view.disks() {
            targets.push(Target::open(view.storage(), out_dir, disk, &who, force)?);
        }
        let exports = view
            .disks()
            .iter()
            .map(|d| ExportInfo {
                name: d.name().to_owned(),
                description: format!(
                    "disk {} of vault {vault} at point {}, writable, failing over into {}",
                    d.name(),
                    point.point_id,
                    out_dir.join(format!("{}.raw", d.name())).display()
                ),
            })
            .collect();
        Ok(LiveFailover {
            view,
            point,
            targets,
            exports,
            _out: out,
            _lease: lease,
        })
    }

    /// The point failed over to.
    pub fn point(&self) -> &PointInfo {
        &self.point
    }

    /// The disks, in export order.
    pub fn disks(&self) -> Vec<LiveDiskInfo> {
        self.targets
            .iter()
            .map(|t| LiveDiskInfo {
                name: t.name.clone(),
                path: t.path.clone(),
                size_bytes: t.size,
                resumed_bytes: t.resumed_bytes,
            })
            .collect()
    }

    /// Every disk's progress now.
    pub fn progress(&self) -> Vec<Progress> {
        self.targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let (done_bytes, durable_bytes) = t.done_and_durable();
                Progress {
                    disk_index: i,
                    disk: t.name.clone(),
                    size_bytes: t.size,
                    done_bytes,
                    durable_bytes,
                    copied_bytes: 0,
                    cursor_bytes: 0,
                }
            })
            .collect()
    }

    /// Hydrates every disk, in order, at most `rate_bytes_per_s` read from the point per
    /// second; `Ok(true)` when all are complete, `Ok(false)` when `stop` was set first.
    pub fn hydrate(
        &self,
        rate_bytes_per_s: Option<u64>,
        stop: &AtomicBool,
        events: &mut dyn FnMut(LiveEvent),
    ) -> Result<bool> {
        let mut throttle = Throttle::new(rate_bytes_per_s);
        for (i, (disk, target)) in self.view.disks().iter().zip(&self.targets).enumerate() {
            if !hydrate_disk(i, disk, target, &mut throttle, stop, events)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Makes everything done so far durable: each image synced, then its hydration map
    /// rewritten. For a run that stops before it is complete.
    pub fn persist(&self) -> Result<()> {
        for t in &self.targets {
            t.persist()?;
        }
        Ok(())
    }

    /// Ends a complete run: each image synced (with the guest's last writes), then its
    /// hydration map removed. Call once no client is served any more.
    pub fn finish(&self) -> Result<()> {
        for t in &self.targets {
            let (done, _) = t.done_and_durable();
            assert_eq!(done, t.size, "finish before disk {} is complete", t.name);
            t.finish()?;
        }
        Ok(())
    }
}

impl Backend for LiveFailover {
    fn exports(&self) -> &[ExportInfo] {
        &self.exports
    }

    fn open(&self, index: usize) -> Box<dyn BlockDevice + '_> {
        Box::new(LiveDisk {
            reader: self.view.disks()[index].reader(),
            target: &self.targets[index],
        })
    }
}
