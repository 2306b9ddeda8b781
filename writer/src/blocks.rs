//! What each block of a window of a disk is: all zero or not, its CRC (for a base's checksum
//! table) and its digest (for the digest cache), computed in parallel. Seeding a base and ingest
//! read images the same way: in windows, holes never read.

use std::path::Path;

use rayon::prelude::*;
use replog_io::File;

use crate::digest::block_digest;
use crate::error::{Result, WriteError};
use crate::sparse::{Window, read_window};

/// Bytes of a disk or image read, checked and written at a time (seeding and rolling a base,
/// ingest).
pub(crate) const WINDOW_BYTES: u64 = 8 << 20;

/// What one block of a window turned out to be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BlockFacts {
    pub(crate) zero: bool,
    pub(crate) crc: u32,
    pub(crate) digest: u128,
}

/// Classifies every block of `window` in parallel.
pub(crate) fn block_facts(window: &[u8], block_bytes: usize) -> Vec<BlockFacts> {
    window
        .par_chunks(block_bytes)
        .map(|b| BlockFacts {
            zero: is_zero(b),
            crc: crc32fast::hash(b),
            digest: block_digest(b),
        })
        .collect()
}

pub(crate) use replog_io::is_zero;

/// The facts of the window of `image` at `at`, read into `buf` except where the image has holes
/// (seeding a base and ingest both read images this way). A window that is all hole leaves
/// `buf` as it was: its blocks are all zero, and zero blocks are written or journaled from
/// their lengths alone.
pub(crate) fn window_facts(
    image: &dyn File,
    image_path: &Path,
    buf: &mut [u8],
    at: u64,
    block: usize,
) -> Result<Vec<BlockFacts>> {
    let window = read_window(image, buf, at)
        .map_err(|e| WriteError::io(image_path, Some(at), "reading", e))?;
    Ok(match window {
        Window::Hole => zero_facts(buf.len(), block),
        Window::Data => block_facts(buf, block),
    })
}

/// The facts of `len` bytes of zero blocks, computed once per distinct block length.
pub(crate) fn zero_facts(len: usize, block_bytes: usize) -> Vec<BlockFacts> {
    let facts = |n: usize| {
        let zeros = vec![0u8; n];
        BlockFacts {
            zero: true,
            crc: crc32fast::hash(&zeros),
            digest: block_digest(&zeros),
        }
    };
    let full = facts(block_bytes);
    let mut out = vec![full; len / block_bytes];
    if !len.is_multiple_of(block_bytes) {
        out.push(facts(len % block_bytes));
    }
    out
}
