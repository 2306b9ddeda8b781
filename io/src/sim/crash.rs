//! What a power loss leaves of a file: its durable image plus, for each change made since its
//! last sync and in the order made, a random fate.
//!
//! - A write is dropped, kept whole, or torn: each 512-byte-aligned sector of it (by file
//!   offset) kept or not, independently. Sectors are the unit because a sector-sized write is
//!   the most a disk might apply atomically, and even that is not promised.
//! - When a write had grown the file and not all of it was kept, the file either ends after
//!   the last kept byte, or keeps the new length with zeros or with garbage (random bytes) where
//!   the lost data was past the old end (metadata reached the disk before the data).
//! - A length change persists or not.
//!
//! Changes that are kept out of order are how reordering shows: a later write can survive while
//! an earlier one is lost.

use rand::RngExt;
use rand::rngs::SmallRng;

use super::tree::{Pending, splice, to_usize};

/// The sector size tearing works in.
pub(super) const SECTOR_BYTES: u64 = 512;

/// The image after a crash, from `durable` and the unsynced `pending` changes.
pub(super) fn survivor(durable: &[u8], pending: &[Pending], rng: &mut SmallRng) -> Vec<u8> {
    let mut image = durable.to_vec();
    for change in pending {
        match change {
            Pending::Write { offset, data } => apply_unsynced_write(&mut image, *offset, data, rng),
            Pending::SetLen(len) => {
                if rng.random_bool(0.5) {
                    image.resize(to_usize(*len), 0);
                }
            }
        }
    }
    image
}

/// The pieces of `[offset, offset + len)` cut at sector boundaries, as `(start, end)` offsets.
fn sectors(offset: u64, len: u64) -> Vec<(u64, u64)> {
    let end = offset + len;
    let mut pieces = Vec::new();
    let mut at = offset;
    while at < end {
        let next = ((at / SECTOR_BYTES) + 1) * SECTOR_BYTES;
        pieces.push((at, next.min(end)));
        at = next.min(end);
    }
    pieces
}

/// Applies what survives of one unsynced write.
fn apply_unsynced_write(image: &mut Vec<u8>, offset: u64, data: &[u8], rng: &mut SmallRng) {
    let pieces = sectors(offset, data.len() as u64);
    let kept: Vec<bool> = match rng.random_range(0..4) {
        0 => vec![false; pieces.len()],
        1 => vec![true; pieces.len()],
        _ => pieces.iter().map(|_| rng.random_bool(0.5)).collect(),
    };
    let old_len = image.len() as u64;
    for (&(start, end), &keep) in pieces.iter().zip(&kept) {
        if keep {
            let from = to_usize(start - offset);
            splice(image, start, &data[from..to_usize(end - offset)]);
        }
    }
    let end = offset + data.len() as u64;
    if end <= old_len || kept.iter().all(|&k| k) {
        return;
    }
    match rng.random_range(0..3) {
        // The file ends after the last kept byte.
        0 => {}
        // The new length reached the disk; the lost bytes read as zeros.
        1 => image.resize(to_usize(end), 0),
        // The new length reached the disk; the lost bytes read as whatever the blocks held.
        _ => {
            image.resize(to_usize(end), 0);
            for (&(start, end), &keep) in pieces.iter().zip(&kept) {
                let start = start.max(old_len);
                if !keep && start < end {
                    rng.fill(&mut image[to_usize(start)..to_usize(end)]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn sectors_cut_at_512_byte_boundaries() {
        assert_eq!(sectors(0, 0), []);
        assert_eq!(sectors(10, 5), [(10, 15)]);
        assert_eq!(sectors(500, 1000), [(500, 512), (512, 1024), (1024, 1500)]);
        assert_eq!(sectors(512, 512), [(512, 1024)]);
    }

    #[test]
    fn every_byte_of_a_crashed_write_is_old_new_zero_or_past_the_end() {
        let durable = vec![1u8; 1000];
        let data = vec![2u8; 3000];
        let pending = [Pending::Write { offset: 700, data }];
        for seed in 0..200 {
            let image = survivor(&durable, &pending, &mut SmallRng::seed_from_u64(seed));
            assert!(image.len() >= 1000 && image.len() <= 3700);
            assert!(image[..700].iter().all(|&b| b == 1));
            assert!(image[700..1000].iter().all(|&b| b == 1 || b == 2));
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_image() {
        let pending = [
            Pending::Write {
                offset: 0,
                data: vec![7; 5000],
            },
            Pending::SetLen(100),
            Pending::Write {
                offset: 4000,
                data: vec![9; 2000],
            },
        ];
        for seed in 0..50 {
            let a = survivor(&[], &pending, &mut SmallRng::seed_from_u64(seed));
            let b = survivor(&[], &pending, &mut SmallRng::seed_from_u64(seed));
            assert_eq!(a, b);
        }
    }
}
