//! Advisory locks in the simulator, as `flock` keeps them: by inode, held by one open (a
//! handle and its clones, not a path and not a process), shared by many or exclusive to one.
//! A lock goes when its open is dropped, and every lock goes at a crash: the processes that
//! held them died with the machine. Waiting for a lock happens outside this table (the
//! storage's condition variable), so a holder on another thread can let go.

use std::collections::{BTreeMap, BTreeSet};

use super::tree::Id;
use crate::LockMode;

/// The holders of one inode's lock.
#[derive(Debug, Default)]
struct Holders {
    exclusive: Option<u64>,
    shared: BTreeSet<u64>,
}

/// Every lock held, and the numbering of opens.
#[derive(Debug, Default)]
pub(super) struct Locks {
    by_inode: BTreeMap<Id, Holders>,
    /// The number the next open gets; never reused, so a handle from before a crash cannot
    /// release a lock taken after it.
    next_open: u64,
}

impl Locks {
    /// A number for a new open.
    pub(super) fn new_open(&mut self) -> u64 {
        self.next_open += 1;
        self.next_open
    }

    /// Gives `open` the lock of `inode` in `mode` unless another open holds a conflicting one;
    /// returns whether it did. A lock `open` already holds is converted.
    pub(super) fn try_take(&mut self, inode: Id, open: u64, mode: LockMode) -> bool {
        let holders = self.by_inode.entry(inode).or_default();
        let others_exclusive = holders.exclusive.is_some_and(|o| o != open);
        let others_shared = holders.shared.iter().any(|&o| o != open);
        let free = match mode {
            LockMode::Shared => !others_exclusive,
            LockMode::Exclusive => !others_exclusive && !others_shared,
        };
        if free {
            holders.shared.remove(&open);
            if holders.exclusive == Some(open) {
                holders.exclusive = None;
            }
            match mode {
                LockMode::Shared => {
                    holders.shared.insert(open);
                }
                LockMode::Exclusive => holders.exclusive = Some(open),
            }
        }
        free
    }

    /// Drops what `open` holds on `inode`; returns whether it held anything.
    pub(super) fn release(&mut self, inode: Id, open: u64) -> bool {
        let Some(holders) = self.by_inode.get_mut(&inode) else {
            return false;
        };
        let mut held = holders.shared.remove(&open);
        if holders.exclusive == Some(open) {
            holders.exclusive = None;
            held = true;
        }
        if holders.exclusive.is_none() && holders.shared.is_empty() {
            self.by_inode.remove(&inode);
        }
        held
    }

    /// A crash: every holder died.
    pub(super) fn clear(&mut self) {
        self.by_inode.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_an_exclusive_one_until_released() {
        let mut locks = Locks::default();
        let (a, b, c) = (locks.new_open(), locks.new_open(), locks.new_open());
        assert!(locks.try_take(7, a, LockMode::Shared));
        assert!(locks.try_take(7, b, LockMode::Shared));
        assert!(!locks.try_take(7, c, LockMode::Exclusive));
        assert!(
            locks.try_take(8, c, LockMode::Exclusive),
            "another inode is free"
        );
        assert!(locks.release(7, a));
        assert!(!locks.try_take(7, c, LockMode::Exclusive));
        assert!(locks.release(7, b));
        assert!(!locks.release(7, b), "released once");
        assert!(locks.try_take(7, c, LockMode::Exclusive));
        assert!(!locks.try_take(7, a, LockMode::Shared));
        assert!(
            locks.try_take(7, c, LockMode::Shared),
            "its holder converts it"
        );
        assert!(locks.try_take(7, a, LockMode::Shared));
        locks.clear();
        assert!(
            locks.try_take(7, b, LockMode::Exclusive),
            "a crash frees every lock"
        );
    }
}
