//! The tests on the default backend: io_uring where the kernel allows it.

use std::sync::Arc;

use replog_io::Storage;

/// The backend of every vault these tests open.
const BACKEND: &str = "auto";

/// The storage of [`BACKEND`].
fn storage() -> Arc<dyn Storage> {
    super::storage(BACKEND)
}

#[path = "independent_reader.rs"]
mod independent_reader;
#[path = "leases.rs"]
mod leases;
#[path = "remote.rs"]
mod remote;
#[path = "remote_crash.rs"]
mod remote_crash;
#[path = "remote_prefix.rs"]
mod remote_prefix;
#[path = "review_remote.rs"]
mod review_remote;
