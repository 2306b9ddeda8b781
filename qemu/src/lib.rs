//! A running QEMU (or `qemu-storage-daemon`) as a source of recovery points. This crate owns
//! the QMP session ([`Qmp`]: JSON over a Unix socket, commands matched to their answers,
//! events skipped) and the pull-mode capture cycle on top of it ([`Capture`]): each cut adds
//! the next dirty bitmap, freezes the previous one and opens a fleecing view of every disk in
//! one QMP `transaction`, so that all the disks are seen as they were at one instant while the
//! guest keeps writing; the view is exported over NBD with the bitmap that says what changed.
//! Ending the cut removes what it made; a failed cut merges its bitmap back, so the next cut
//! still covers everything that changed since the last point.
//!
//! It must not know what reads the view or where the bytes go: no NBD reads, vaults, journals
//! or points (the caller reads the export with `replog-nbd`'s client and journals it), and no
//! command line or output. Memory: one QMP answer at a time, at most [`qmp::ANSWER_BYTES_MAX`].
#![forbid(unsafe_code)]

mod capture;
mod error;
pub mod qmp;

pub use capture::{Capture, CaptureConfig, Cut, DiskCut, DiskSource, Lineage};
pub use error::{QmpError, QmpErrorKind};
pub use qmp::Qmp;
