//! Injected I/O errors: which operations they hit, after how many matching ones, once or
//! forever. What an injected error does to the data is up to the operation (see
//! [`SimStorage`](super::SimStorage)).

use std::io;
use std::path::Path;

/// The kind of operation a [`Fault`] hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultOp {
    /// One `WriteAt` of a batch.
    Write,
    /// The sync of a batch, or `sync_data`.
    Sync,
    /// `sync_dir`.
    SyncDir,
    /// `rename`.
    Rename,
    /// `remove_file`.
    Remove,
    /// `open` with `CreateNew` or `CreateTruncate`.
    Create,
    /// `create_dir_all`.
    CreateDir,
    /// `set_len`.
    SetLen,
    /// `allocate`.
    Allocate,
    /// `zero_range`.
    ZeroRange,
    /// Any of the above.
    Any,
}

/// The error a [`Fault`] returns.
///
/// This is a kind to choose, not an error that travels: an operation it hits fails with
/// [`FaultError::to_io_error`], the bare `io::Error` (errno, no path) the real filesystem
/// returns. So the code under test meets exactly what it meets in production, and its own error
/// type adds the file, the offset and the kind, as it does there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultError {
    /// `EIO`: the device failed.
    Eio,
    /// `ENOSPC`: the filesystem is full.
    Enospc,
}

impl FaultError {
    /// The error as the real filesystem would report it.
    pub fn to_io_error(self) -> io::Error {
        io::Error::from_raw_os_error(match self {
            FaultError::Eio => libc::EIO,
            FaultError::Enospc => libc::ENOSPC,
        })
    }
}

/// An error to inject into matching operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The operations it hits.
    pub op: FaultOp,
    /// Only operations on a path containing this string (a rename matches on either path).
    pub path_contains: Option<String>,
    /// Matching operations to let pass before the first failure.
    pub skip: u64,
    /// The error returned.
    pub error: FaultError,
    /// Fail every matching operation from then on, not just one.
    pub persistent: bool,
}

impl Fault {
    /// A fault that fails the next `op` on any path, once.
    pub fn once(op: FaultOp, error: FaultError) -> Self {
        Fault {
            op,
            path_contains: None,
            skip: 0,
            error,
            persistent: false,
        }
    }

    /// A fault that fails every `op` on any path, from now on.
    pub fn always(op: FaultOp, error: FaultError) -> Self {
        Fault {
            persistent: true,
            ..Fault::once(op, error)
        }
    }

    /// The same fault, limited to paths containing `fragment`.
    pub fn on_path(mut self, fragment: impl Into<String>) -> Self {
        self.path_contains = Some(fragment.into());
        self
    }

    /// The same fault, after letting `skip` matching operations pass.
    pub fn after(mut self, skip: u64) -> Self {
        self.skip = skip;
        self
    }

    fn matches(&self, op: FaultOp, paths: &[&Path]) -> bool {
        let op_matches = self.op == FaultOp::Any || self.op == op;
        let path_matches = match &self.path_contains {
            None => true,
            Some(fragment) => paths
                .iter()
                .any(|p| p.to_string_lossy().contains(fragment.as_str())),
        };
        op_matches && path_matches
    }
}

/// The faults armed, and how many have fired.
#[derive(Debug, Default)]
pub(super) struct FaultSet {
    /// Each fault with the number of matching operations it has let pass.
    armed: Vec<(Fault, u64)>,
    pub(super) fired: u64,
}

impl FaultSet {
    pub(super) fn inject(&mut self, fault: Fault) {
        self.armed.push((fault, 0));
    }

    pub(super) fn clear(&mut self) {
        self.armed.clear();
    }

    /// The error the first armed fault that matches and has no passes left injects into this
    /// operation, if any. A fault that fires once is disarmed.
    pub(super) fn check(&mut self, op: FaultOp, paths: &[&Path]) -> Option<FaultError> {
        for i in 0..self.armed.len() {
            let (fault, passed) = &mut self.armed[i];
            if !fault.matches(op, paths) {
                continue;
            }
            if *passed < fault.skip {
                *passed += 1;
                continue;
            }
            let error = fault.error;
            if !fault.persistent {
                self.armed.remove(i);
            }
            self.fired += 1;
            return Some(error);
        }
        None
    }
}
