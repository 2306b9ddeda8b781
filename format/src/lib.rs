//! The replog vault on-disk format: every byte layout, magic number, version and limit.
//!
//! This crate is the single source of truth for bytes. It does no I/O: encoders fill byte
//! buffers and decoders validate byte slices, returning a [`DecodeError`] that names the offset
//! and what was expected. `FORMAT.md` at the repository root draws the same layouts as tables;
//! the two must change together.
//!
//! It must not know files, processes, the writer's or reader's policies, or the command line:
//! every crate above reads and writes bytes through it, and it depends on none of them.
//!
//! All integers are little-endian and fixed-width. Every header and record carries its own CRC32
//! (IEEE, via `crc32fast`), seeded per vault so that bytes copied from another vault never verify.
#![forbid(unsafe_code)]

pub mod base;
pub mod chain;
pub mod checkpoint;
pub mod codec;
pub mod digest;
pub mod error;
/// Fuzz oracles, for `fuzz/` and the corpus replay test only: behind the `fuzzing` feature, so not
/// part of the crate's API by default.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod garbage;
pub mod header;
pub mod hydration;
pub mod layout;
pub mod lease;
pub mod lifecycle;
pub mod limits;
pub mod magic;
pub mod manifest;
pub mod record;
pub mod remote;
pub mod remote_lock;
pub mod segment;

pub use error::{DecodeError, DecodeErrorKind};

/// A 16-byte vault identifier, random at creation.
pub type VaultId = [u8; 16];

/// The CRC seed of a vault: every record, table page and footer checksum starts from it, so a
/// structure copied from another vault fails its checksum even when its bytes are intact.
pub fn vault_seed(vault_id: &VaultId) -> u32 {
    crc32fast::hash(vault_id)
}

/// CRC32 of `parts`, in order, starting from `seed`.
pub fn crc32_seeded(seed: u32, parts: &[&[u8]]) -> u32 {
    let mut hasher = crc32fast::Hasher::new_with_initial(seed);
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize()
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub const fn align_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}
