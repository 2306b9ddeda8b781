//! The simulator's mutable state behind its one mutex: the tree, the operation counter and crash
//! point, the armed faults, and the crash epoch that invalidates file handles.

use std::io;
use std::path::Path;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::SimCrash;
use super::crash::survivor;
use super::fault::{FaultError, FaultOp, FaultSet};
use super::locks::Locks;
use super::tree::{Tree, errno};

/// Everything the simulator knows.
#[derive(Debug)]
pub(super) struct State {
    pub(super) tree: Tree,
    /// Counted operations so far.
    ops: u64,
    /// The operation index at which to crash.
    crash_at: Option<u64>,
    /// The operation index at which the simulated machine went down, until `crash` runs.
    crashed_at: Option<u64>,
    /// Incremented by every `crash`; handles from an earlier epoch are stale.
    pub(super) epoch: u64,
    pub(super) faults: FaultSet,
    /// Advisory locks and the numbering of opens.
    pub(super) locks: Locks,
    /// Chooses how much of a write a full disk takes.
    pub(super) rng: SmallRng,
}

impl State {
    pub(super) fn new(seed: u64) -> Self {
        State {
            tree: Tree::new(),
            ops: 0,
            crash_at: None,
            crashed_at: None,
            epoch: 0,
            faults: FaultSet::default(),
            locks: Locks::default(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub(super) fn ops(&self) -> u64 {
        self.ops
    }

    pub(super) fn crashed(&self) -> bool {
        self.crashed_at.is_some()
    }

    pub(super) fn set_crash_at(&mut self, op: Option<u64>) {
        self.crash_at = op;
    }

    /// Fails if the simulated machine is down.
    pub(super) fn alive(&self) -> io::Result<()> {
        match self.crashed_at {
            Some(op) => Err(io::Error::other(SimCrash { op })),
            None => Ok(()),
        }
    }

    /// Fails unless a handle from `epoch` is still valid.
    pub(super) fn check_handle(&self, epoch: u64) -> io::Result<()> {
        self.alive()?;
        if epoch != self.epoch {
            // The handle was opened before a simulated power loss.
            return Err(errno(libc::ESTALE));
        }
        Ok(())
    }

    /// Counts one mutating or syncing operation. Fails if the machine is down or goes down at
    /// this operation; otherwise returns the fault to inject, if any. The caller applies the
    /// fault's effect on the data.
    pub(super) fn begin(&mut self, op: FaultOp, paths: &[&Path]) -> io::Result<Option<FaultError>> {
        self.alive()?;
        let index = self.ops;
        self.ops += 1;
        if self.crash_at.is_some_and(|at| index >= at) {
            self.crashed_at = Some(index);
            return Err(io::Error::other(SimCrash { op: index }));
        }
        Ok(self.faults.check(op, paths))
    }

    /// Like [`State::begin`], for operations an injected error fails without any effect.
    pub(super) fn begin_plain(&mut self, op: FaultOp, paths: &[&Path]) -> io::Result<()> {
        match self.begin(op, paths)? {
            Some(fault) => Err(fault.to_io_error()),
            None => Ok(()),
        }
    }

    /// Power loss: the namespace reverts to its durable entries, every file to what survives
    /// of its unsynced changes, chosen by `seed`, and every lock is gone with its holder. The
    /// machine is up again afterwards.
    pub(super) fn crash(&mut self, seed: u64) {
        self.tree.revert_entries();
        self.locks.clear();
        let mut rng = SmallRng::seed_from_u64(seed);
        for inode in self.tree.inodes.values_mut() {
            let image = survivor(&inode.durable, &inode.pending, &mut rng);
            inode.live.clone_from(&image);
            inode.durable = image;
            inode.pending.clear();
            inode.settle_holes();
        }
        self.crash_at = None;
        self.crashed_at = None;
        self.epoch += 1;
    }
}
