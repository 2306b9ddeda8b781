//! The replog journal writer.
//!
//! A [`Writer`] owns a vault directory for writing: it creates vaults, adds disks (empty or seeded
//! from an image), appends writes and zero ranges to any disk in one LSN order across all disks,
//! and takes recovery points that cover every disk at once.
//!
//! It must not know the command line, how results are shown, or object storage: callers above
//! (`replog-vault`, the CLI) open it and render what it returns.
//!
//! # Durability contract
//!
//! - [`Writer::write`] and [`Writer::zero`] only stage records: they are not durable, and a
//!   crash may lose them, until a later [`Writer::point`], [`Writer::sync`] or
//!   [`Writer::close`] returns `Ok`.
//! - [`Writer::point`] returns `Ok` only after its marker and every record before it are
//!   durable: the segment was written and data-synced after the last byte of the marker, and
//!   every file created on the way (a new segment, the manifest) was synced along with its
//!   directory. An acknowledged point is never lost and always reads back byte-exact.
//! - [`Writer::point_async`] frames a point and hands it to the disk without waiting; the point
//!   is acknowledged only when [`Writer::wait_point`] returns it, with the same guarantee.
//!   Points requested while a sync runs share the next one (group commit).
//! - If a write or sync fails, the writer is poisoned: nothing more is acknowledged, every call
//!   returns [`WriteErrorKind::Poisoned`] (naming the first failure's file and offset, and
//!   carrying that failure, with its own kind, as the source), and the vault must be reopened,
//!   which recovers the durable state. A retried sync is never taken as proof (the kernel may have dropped the
//!   pages it failed to write).
//! - [`Writer::open`] recovers after a crash with the `TolerateTornTail` policy: an invalid tail
//!   that no later record vouches for is copied to `quarantine/` and cut; damage before the tail
//!   is an error naming the file and offset, never a silent truncation.
//!
//! Memory is bounded by the staging buffers ([`WriterOptions`]: by default five of about 9 MiB,
//! one being filled and four in flight) and the index of the open segment (at most
//! `SEGMENT_RECORDS_MAX` entries), whatever the disk and journal sizes.

// Imports between these modules flow one way (see ARCHITECTURE.md, "The writer"): `migration`
// uses the `writer` façade; the façade uses its owners (`ingest`, `retention`, `compact`,
// `resize`, `journal`, `bases`, `recover`), lending each the `state` of the vault, the journal and the
// bases for one call; the owners use each other only downward in that list (retention runs a
// compaction; ingest, retention and compaction append through or poison the journal) and the
// helpers below them. No owner knows the `Writer`.
mod bases;
mod batch;
mod blocks;
mod compact;
mod compress;
mod digest;
mod error;
mod files;
mod ingest;
mod journal;
mod lock;
mod manifest_io;
mod migration;
mod pipeline;
mod reclaim;
mod recover;
mod resize;
mod retention;
mod sparse;
mod state;
mod writer;

pub use compact::{CompactReport, LeaseOutcome, LeaseWait};
pub use compress::{encode_payload, probe_compresses};
pub use error::{Result, WriteError, WriteErrorKind};
pub use ingest::IngestStats;
pub use journal::PointTicket;
pub use migration::{
    MigratedDisk, MigrationOptions, MigrationReport, complete_migration, migration_plan,
};
pub use pipeline::{BUFFER_BYTES_MIN, FLUSH_BYTES, WriterOptions};
pub use reclaim::{GarbageRatio, GarbageReport};
pub use recover::RecoveryReport;
pub use replog_format::header::Compression;
pub use replog_format::lifecycle::{
    MigrationDisk, MigrationPhase, MigrationRecord, RetentionPolicy,
};
pub use replog_format::record::PointKind;
pub use replog_reader::PointInfo;
pub use retention::{PruneOptions, PruneReport, RetentionPlan, plan_retention};
pub use writer::{DiskInfo, VaultSettings, Writer};

/// Nanoseconds since the Unix epoch, now.
pub fn now_unix_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
