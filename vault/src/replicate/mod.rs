//! Continuous replication of live disks: a loop of cut, capture and point under a [`Policy`],
//! with the status an operator watches ([`status`]) and the hooks that bracket a point
//! ([`hooks`]).

mod hooks;
mod policy;
mod run;
pub mod status;

pub use hooks::{HookContext, Hooks};
pub use policy::{Health, Policy, backoff, parse_duration};
pub use replog_qemu::DiskSource;
pub use run::{Event, LiveSource, Outputs, replicate};
pub use status::CycleRecord;
