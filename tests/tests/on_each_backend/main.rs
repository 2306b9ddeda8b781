//! The end-to-end tests whose vaults live on real files, run once per storage backend in one
//! test binary and one process per test: the modules of `auto` open their storage with
//! `replog_io::backend("auto")` (io_uring where the kernel allows it, else plain syscalls), those
//! of `sync` with the plain-syscall backend. Each file here is compiled into both and opens its
//! storage with `super::storage()`. The simulator cannot hold these vaults (they are read by
//! the Python reader, the `replog` binary and the object-store code's own file access); the
//! tests that run in it list it themselves, with `replog_tests::backends()`.
//!
//! The crash enumeration of a sync (`remote_crash.rs`) runs in `auto` only: what crashes there
//! is the object store, and the local vault's I/O on each backend is covered by `remote.rs`.

// Each test file is compiled once per backend, on purpose: that is what this binary is.
#![allow(clippy::duplicate_mod)]

use std::sync::Arc;

use replog_io::Storage;

mod auto;
mod sync;

/// The storage backend named `backend`.
fn storage(backend: &str) -> Arc<dyn Storage> {
    replog_io::backend(backend)
        .unwrap_or_else(|e| panic!("the {backend} backend is unavailable here: {e}"))
}
