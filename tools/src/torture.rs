//! `replog torture` (hidden): a deterministic write load for crash tests. It opens VAULT (which
//! must have disk NAME), then applies an endless sequence of writes, zero ranges and points drawn
//! from SEED, one record per operation, and prints `start LSN` once, then `ack POINT_ID LSN` after
//! each point is acknowledged (stdout flushed), so a test that kills it with SIGKILL knows exactly
//! what was promised and can replay the same sequence to know what the disk held at every LSN.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use replog::load::{TortureOp, op};
use replog_io::Storage;
use replog_writer::PointKind;

use crate::{CmdResult, EXIT_OK, Failure};

/// Runs the load until killed (or `ops_max` operations).
pub fn run(
    storage: Arc<dyn Storage>,
    vault: &Path,
    name: &str,
    seed: u64,
    ops_max: u64,
) -> CmdResult {
    let mut w = crate::context::open_writer(storage, vault)?;
    let disk = w.disk(name)?;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = std::io::stdout().lock();
    let say = |out: &mut std::io::StdoutLock<'_>, line: String| -> Result<(), Failure> {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| Failure::new(format!("stdout: {e}")))
    };
    say(&mut out, format!("start {}", w.last_lsn() + 1))?;
    for _ in 0..ops_max {
        match op(&mut rng, disk.disk_bytes) {
            TortureOp::Write(at, data) => {
                w.write(disk.disk_id, at, &data)?;
            }
            TortureOp::Zero(at, len) => {
                w.zero(disk.disk_id, at, len)?;
            }
            TortureOp::Point => {
                let p = w.point(PointKind::CrashConsistent, "")?;
                say(&mut out, format!("ack {} {}", p.point_id, p.lsn))?;
            }
        }
    }
    w.close()?;
    Ok(EXIT_OK)
}
