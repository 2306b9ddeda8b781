//! A replog vault as an operator sees it. This crate owns the operations that span the crates
//! below: opening a vault wherever it is ([`Vault::open`] with a [`Location`]: a directory, a
//! directory whose sync evicted files to its remote, or a remote copy's URL), choosing a point
//! ([`PointChoice`]) and opening it for failover under a lease ([`Vault::failover_source`]),
//! writing its disks in an image format ([`Vault::export`]) or into NBD exports and block
//! devices ([`failover_to_targets`]), adding and ingesting disks from
//! source images ([`add_disk`], [`ingest`]), checkpoint indexes, the lifecycle (retention and
//! prune, test failover, complete migration, and the lifecycle state `inspect` shows), the demo
//! and the benchmarks' loads. Each returns a typed result or a [`VaultError`] whose
//! [`VaultErrorKind`] callers match.
//!
//! It must not know how it is shown: no command-line parsing, no tables, no JSON documents built
//! by hand (a result type may derive `Serialize`), no exit codes (those are `tools/`'s), and no
//! byte layout (that is `replog-format`'s, read through the reader and written through the
//! writer). Its `clap` feature only derives `ValueEnum` for [`OutputFormat`].
#![forbid(unsafe_code)]

mod bench;
pub mod capture;
mod checkpoints;
mod choose;
mod demo;
mod error;
mod expect;
mod export;
mod failover;
mod failover_device;
mod failover_nbd;
mod failover_target;
mod import;
mod location;
mod migration;
pub mod nbd;
mod remote;
pub mod replicate;
mod retention;
mod state;
mod test_failover;
mod verify;

pub use bench::{
    DataSource, Payload, WriteBenchReport, WriteLoad, open_bench_disk, run_write_bench,
};
pub use capture::{
    Captured, ChangedRange, NbdSource, NbdUri, add_disk_from_nbd, ingest_changed_ranges,
    ingest_nbd, parse_changed_ranges,
};
pub use checkpoints::{
    LookupReport, ReadBenchReport, ResolveReport, ResolvedPoint, maintain_checkpoint,
    peak_rss_bytes, read_bench, resolve_bench,
};
pub use choose::{PointChoice, choose};
pub use demo::{DEMO_DISKS, DemoOutcome, DemoStep, run_demo};
pub use error::{Result, VaultError, VaultErrorKind};
pub use expect::ExpectedPoint;
pub use export::{Exported, ExportedDisk, OutputFormat, export};
pub use failover::{FailoverSource, TargetsWritten, failover_to_targets};
pub use failover_target::{DiskTarget, Target, TargetWritten};
pub use import::{
    AddedDisk, IngestOptions, Ingested, NewDisk, ResizedDisk, add_disk, ingest, ingest_with,
    resize_disk,
};
pub use location::{Access, Location, Tier, Vault};
pub use remote::{
    RemoteNow, RemoteRpo, RemoteStatus, Synced, add_remote, remote_now, remote_status, sync,
};
pub use retention::{DiskUsage, Pruned, RetentionChange, disk_usage};
pub use state::{Churn, LifecycleState, Reclaimable};
pub use test_failover::{EndedTestFailover, TestFailover};
