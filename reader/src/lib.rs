//! The replog point-in-time reader: lists the recovery points of a vault, shows the disks as they
//! were at any of them, and materializes those disks as raw images.
//!
//! [`Vault::open`] takes a snapshot of the vault (header, manifest, one scan of the open journal
//! segment); [`Vault::view`] builds a [`PointView`] whose [`DiskView`]s read exactly the bytes
//! each disk held at that point, verifying every journal record and base chunk they touch;
//! [`materialize`] writes a view out as sparse raw images. Every failure is a [`ReadError`]
//! naming the file and byte offset involved.
//!
//! It never writes a vault's journal, manifest or bases (only its own leases and derived
//! checkpoint indexes), and must not know where a vault lives: a remote vault reaches it through
//! the `Storage` seam, the command line not at all.
#![forbid(unsafe_code)]

mod base_image;
mod chain_walk;
pub mod checkpoint;
mod disk_reader;
pub mod dump;
pub mod error;
pub mod extent_map;
pub mod journal_order;
mod layer;
mod layered;
pub mod lease;
pub mod liveness;
pub mod materialize;
mod point_view;
mod points;
mod records;
mod segments;
mod vault;
pub mod verify;
mod view;
mod view_build;

pub use disk_reader::DiskReader;
pub use dump::{DumpEnd, DumpRecord, dump};
pub use error::{ReadError, ReadErrorKind, Result};
pub use journal_order::ReadOrder;
pub use layer::{MEMORY_LIMIT_BYTES_DEFAULT, ViewMode, ViewOptions};
pub use lease::{
    Lease, LeaseOptions, LeaseStatus, LeasedVault, LiveLease, Registrations, lease_not_permitted,
    list_leases, release_test_failover, test_failover_lease,
};
pub use materialize::{
    DiskStats, MaterializeOptions, MaterializeStats, OUTPUT_LOCK_FILE, OutputDir, PlacedCheck,
    ReadPassOptions, ReadPassStats, Staged, check_targets, materialize, materialize_into,
    materialize_with_progress, place_images, read_pass,
};
pub use points::PointInfo;
pub use vault::{OpenSegmentInfo, Vault, VaultStats};
pub use verify::{Finding, Severity, VerifyReport, verify};
pub use view::{DiskView, Extent, ExtentKind, PointView};
