//! A replog vault as an operator sees it. This crate owns the operations that span the crates
//! below: opening a vault wherever it is ([`Vault::open`] with a [`Location`]: a directory, a
//! directory whose sync evicted files to its remote, or a remote copy's URL), choosing a point
//! ([`PointChoice`]) and opening it for failover under a lease ([`Vault::failover_source`]), and the lifecycle: retention and prune, test failover, complete migration,
//! and the lifecycle state `inspect` shows. Each returns a typed result or a [`VaultError`] whose
//! [`VaultErrorKind`] callers match.
//!
//! It must not know how it is shown: no command-line parsing, no tables, no JSON, no exit codes
//! (those are `tools/`'s), and no byte layout (that is `replog-format`'s, read through the
//! reader and written through the writer).
#![forbid(unsafe_code)]

mod bench;
mod choose;
mod demo;
mod error;
mod failover;
mod location;
mod migration;
pub mod nbd;
mod retention;
mod state;
mod test_failover;
mod verify;

pub use bench::{DataSource, Payload, WriteBenchReport, WriteLoad, run_write_bench};
pub use choose::{PointChoice, choose};
pub use demo::{DEMO_DISKS, DemoOutcome, DemoStep, run_demo};
pub use error::{Result, VaultError, VaultErrorKind};
pub use failover::FailoverSource;
pub use location::{Access, Location, Tier, Vault};
pub use retention::{Pruned, RetentionChange, disk_usage};
pub use state::{Churn, LifecycleState, Reclaimable};
pub use test_failover::{EndedTestFailover, TestFailover};
