//! The deterministic load of `replog torture`: an operation sequence drawn from a seed, one
//! journal record per operation, so a crash test can replay it and know what the disk held at
//! every LSN.

use rand::RngExt;
use rand::rngs::SmallRng;

/// One operation of the sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TortureOp {
    /// Write these bytes at this offset.
    Write(u64, Vec<u8>),
    /// Zero this range.
    Zero(u64, u64),
    /// Take a point.
    Point,
}

/// The next operation of the sequence drawn from `rng`, for a disk of `disk_bytes`.
pub fn op(rng: &mut SmallRng, disk_bytes: u64) -> TortureOp {
    match rng.random_range(0..10) {
        0..=5 => {
            let len = rng.random_range(1..=(256 << 10).min(disk_bytes));
            let at = rng.random_range(0..=disk_bytes - len);
            let fill: u8 = rng.random();
            let data = (0..len)
                .map(|i| fill.wrapping_add((i / 512) as u8))
                .collect();
            TortureOp::Write(at, data)
        }
        6 => {
            let len = rng.random_range(1..=(1 << 20).min(disk_bytes));
            TortureOp::Zero(rng.random_range(0..=disk_bytes - len), len)
        }
        _ => TortureOp::Point,
    }
}
