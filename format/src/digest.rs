//! Block digest caches, `digests/<disk_id>.dig`: a 128-bit digest of every block of a disk's
//! latest replicated state, so `ingest` finds changed blocks without reading the replica.
//!
//! The cache is advisory: a missing, stale or damaged cache only costs extra work (blocks are
//! treated as changed or the digests are rebuilt from the replica), never wrong data.
//!
//! ```text
//! header
//! offset size field
//!      0    8 magic "RPLG-DIG"
//!      8    4 format_version u32
//!     12    4 header_bytes u32 (4096)
//!     16   16 vault_id
//!     32    4 disk_id u32
//!     36    4 block_bytes u32
//!     40    8 disk_bytes u64
//!     48    8 valid_lsn u64: the digests describe the disk after every record up to this LSN
//!     56    8 block_count u64
//!     64    4 body_crc: crc32 (vault seed) of the body
//!     68 4024 reserved, zero
//!   4092    4 crc32 (vault seed) of bytes 0..4092
//! body: block_count digests of 16 bytes (xxh3-128, little-endian)
//! ```

use crate::codec::{Cursor, Put, check_header_page, seal_page};
use crate::limits::*;
use crate::magic::{self, FormatVersion};
use crate::{DecodeError, DecodeErrorKind, VaultId};

/// Size of the digest cache header.
pub const DIGEST_HEADER_BYTES: usize = PAGE_BYTES;
/// Size of one digest.
pub const DIGEST_BYTES: usize = 16;

/// The header of a digest cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestHeader {
    /// The vault.
    pub vault_id: VaultId,
    /// The disk.
    pub disk_id: u32,
    /// Block size of the digests.
    pub block_bytes: u32,
    /// The disk's size.
    pub disk_bytes: u64,
    /// The LSN the digests are valid at.
    pub valid_lsn: u64,
    /// CRC of the body.
    pub body_crc: u32,
}

impl DigestHeader {
    /// Number of digests in the body.
    pub fn block_count(&self) -> u64 {
        self.disk_bytes.div_ceil(u64::from(self.block_bytes))
    }

    /// Encodes the header page.
    pub fn encode(&self, seed: u32) -> Vec<u8> {
        let mut buf = Vec::with_capacity(DIGEST_HEADER_BYTES);
        Put::new(&mut buf)
            .bytes(&magic::DIGEST)
            .u32(FormatVersion::CURRENT.as_u32())
            .u32(DIGEST_HEADER_BYTES as u32)
            .bytes(&self.vault_id)
            .u32(self.disk_id)
            .u32(self.block_bytes)
            .u64(self.disk_bytes)
            .u64(self.valid_lsn)
            .u64(self.block_count())
            .u32(self.body_crc);
        seal_page(&mut buf, DIGEST_HEADER_BYTES, seed);
        buf
    }

    /// Decodes and validates the header page.
    pub fn decode(bytes: &[u8], seed: u32) -> Result<DigestHeader, DecodeError> {
        const WHAT: &str = "digest cache header";
        let mut c = Cursor::new(bytes, WHAT);
        if c.array::<8>()? != magic::DIGEST {
            return Err(c.error_at(DecodeErrorKind::BadMagic, 0, "not a replog digest cache"));
        }
        if FormatVersion::from_u32(c.u32()?).is_none() {
            return Err(c.error_at(
                DecodeErrorKind::UnsupportedVersion,
                8,
                "unknown format version",
            ));
        }
        check_header_page(&mut c, bytes, DIGEST_HEADER_BYTES, "digest header", seed)?;
        let vault_id = c.array()?;
        let disk_id = c.u32()?;
        let block_bytes = c.u32()?;
        let disk_bytes = c.u64()?;
        let valid_lsn = c.u64()?;
        let block_count = c.u64()?;
        let body_crc = c.u32()?;
        c.zeros(DIGEST_HEADER_BYTES - 4 - c.position())?;
        let h = DigestHeader {
            vault_id,
            disk_id,
            block_bytes,
            disk_bytes,
            valid_lsn,
            body_crc,
        };
        if !block_bytes_ok(block_bytes)
            || disk_bytes > DISK_BYTES_MAX
            || block_count != h.block_count()
        {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                36,
                "block size, disk size and block count disagree",
            ));
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_header_round_trips() {
        let h = DigestHeader {
            vault_id: [9; 16],
            disk_id: 1,
            block_bytes: 65536,
            disk_bytes: 1 << 30,
            valid_lsn: 77,
            body_crc: 1,
        };
        assert_eq!(DigestHeader::decode(&h.encode(3), 3).unwrap(), h);
    }
}
