//! The loop every crash enumeration shares: a workload is run once per operation index
//! `0..ops` and crash seed, with the simulated machine losing power at that operation, and each
//! case's violations are gathered under a label naming the case, so a failure can be rerun.
//!
//! A seed decides only what survives of the changes not yet synced when power is lost. So at
//! an operation where nothing is pending, or where two seeds happen to choose alike, several
//! seeds leave the very same files; the checks after the crash read those files, and are run
//! once for each state a crash left at each operation ([`Leftovers`]).

use std::collections::HashSet;

use replog_io::sim::SimStorage;
use sha2::{Digest, Sha256};

/// What a sweep ran and found.
#[derive(Debug, Default)]
pub struct Sweep {
    /// Crash cases run.
    pub cases: u64,
    /// Cases whose crash left the same files as an earlier case at the same operation, so
    /// that the checks after it were not run again.
    pub repeats: u64,
    /// Cases with at least one violation.
    pub violating: u64,
    /// Every violation, labelled `<label> op <op> seed <seed>: ...`.
    pub violations: Vec<String>,
}

/// Runs `case(op, seed, leftovers)` for every operation index in `0..ops` and `seeds` seeds
/// each; the seed handed to a case is `s * 7919 + op` for the s-th seed, so no two cases share
/// one. The case loses power with [`Leftovers::crash`], and checks what is left only when that
/// says it is new. `case` returns the violations it found, empty when the case kept every
/// promise; each is labelled with `label` (a workload's name, or empty), the operation and the
/// seed.
pub fn crash_at_every_op(
    label: &str,
    ops: u64,
    seeds: u64,
    mut case: impl FnMut(u64, u64, &mut Leftovers) -> Vec<String>,
) -> Sweep {
    let mut out = Sweep::default();
    let mut leftovers = Leftovers::default();
    for op in 0..ops {
        for s in 0..seeds {
            let seed = s * 7919 + op;
            let v = case(op, seed, &mut leftovers);
            out.cases += 1;
            if !v.is_empty() {
                out.violating += 1;
                let at = format!("{label} op {op} seed {seed}");
                out.violations
                    .extend(v.into_iter().map(|v| format!("{}: {v}", at.trim_start())));
            }
        }
    }
    out.repeats = leftovers.repeats;
    out
}

/// The states crashes have left, by operation (a SHA-256 of everything the simulated
/// filesystem holds after the crash).
#[derive(Debug, Default)]
pub struct Leftovers {
    seen: HashSet<(u64, [u8; 32])>,
    repeats: u64,
}

impl Leftovers {
    /// Loses power on `sim` with `seed`, and tells whether the files left are new for operation
    /// `op`. When they are not, an earlier case at `op` checked these very files; the checks
    /// after a crash differ by seed only in the writes they add and in a second crash, which
    /// that case covered.
    pub fn crash(&mut self, sim: &SimStorage, op: u64, seed: u64) -> bool {
        sim.crash(seed);
        let mut hash = Sha256::new();
        sim.describe(&mut |bytes| hash.update(bytes));
        let new = self.seen.insert((op, hash.finalize().into()));
        self.repeats += u64::from(!new);
        new
    }
}

impl Sweep {
    /// Adds another sweep's cases and violations to these.
    pub fn add(&mut self, other: Sweep) {
        self.cases += other.cases;
        self.repeats += other.repeats;
        self.violating += other.violating;
        self.violations.extend(other.violations);
    }

    /// Fails the test if any case found a violation, showing the first ten.
    pub fn assert_no_violation(&self) {
        assert!(
            self.violations.is_empty(),
            "{} violations, first ones: {:#?}",
            self.violations.len(),
            &self.violations[..self.violations.len().min(10)]
        );
    }
}

/// The violation, if any, of a run that was set to crash: it must have failed, and only
/// because the simulated machine lost power.
pub fn crashed_as_set<T, E: std::fmt::Display>(
    sim: &SimStorage,
    result: &Result<T, E>,
) -> Option<String> {
    match result {
        Err(e) if !sim.crashed() => Some(format!("failed without a crash: {e}")),
        Ok(_) => Some("the crash point was never reached".to_owned()),
        Err(_) => None,
    }
}
