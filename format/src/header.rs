//! The vault header, file `VAULT`: identity and settings, fixed at creation.
//!
//! ```text
//! offset size field
//!      0    8 magic "RPLG-VLT"
//!      8    4 format_version u32
//!     12    4 header_bytes u32 (4096)
//!     16   16 vault_id
//!     32    8 created_unix_ns i64
//!     40    4 block_bytes u32 (power of two, 4 KiB..=4 MiB)
//!     44    1 compression u8 (0 none, 1 lz4)
//!     45    3 reserved, zero
//!     48    8 segment_bytes u64
//!     56 4036 reserved, zero
//!   4092    4 crc32 of bytes 0..4092 (unseeded)
//! ```

use crate::codec::{Cursor, Put, check_page_crc, seal_page};
use crate::limits::*;
use crate::magic::{self, FormatVersion};
use crate::{DecodeError, DecodeErrorKind, VaultId};

/// Size of the vault header file.
pub const VAULT_HEADER_BYTES: usize = PAGE_BYTES;
const _: () = assert!(VAULT_HEADER_BYTES == 4096);

/// How write payloads are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Payloads are stored as written.
    None = 0,
    /// Payloads are LZ4 block-compressed when that saves space, stored raw otherwise.
    Lz4 = 1,
}

impl Compression {
    /// Parses the stored byte.
    pub fn from_u8(value: u8) -> Option<Compression> {
        match value {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            _ => None,
        }
    }
}

/// The contents of `VAULT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultHeader {
    /// Format version the vault was created with.
    pub version: FormatVersion,
    /// Random identity; seeds every checksum in the vault.
    pub vault_id: VaultId,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_unix_ns: i64,
    /// Granularity of base checksums and ingest digests.
    pub block_bytes: u32,
    /// Payload compression.
    pub compression: Compression,
    /// Size at which a journal segment is sealed and a new one started.
    pub segment_bytes: u64,
}

impl VaultHeader {
    /// Checks the settings against the format's limits; the message says which one is off.
    pub fn validate_settings(&self) -> Result<(), String> {
        if !block_bytes_ok(self.block_bytes) {
            return Err(format!(
                "block size {} is not a power of two between {BLOCK_BYTES_MIN} and {BLOCK_BYTES_MAX}",
                self.block_bytes
            ));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err(format!(
                "segment size {} is not between {SEGMENT_BYTES_MIN} and {SEGMENT_BYTES_MAX}",
                self.segment_bytes
            ));
        }
        Ok(())
    }

    /// Encodes the header page.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(VAULT_HEADER_BYTES);
        Put::new(&mut buf)
            .bytes(&magic::VAULT)
            .u32(self.version.as_u32())
            .u32(VAULT_HEADER_BYTES as u32)
            .bytes(&self.vault_id)
            .i64(self.created_unix_ns)
            .u32(self.block_bytes)
            .u8(self.compression as u8)
            .zeros(3)
            .u64(self.segment_bytes);
        seal_page(&mut buf, VAULT_HEADER_BYTES, 0);
        buf
    }

    /// Decodes and validates the header page.
    pub fn decode(bytes: &[u8]) -> Result<VaultHeader, DecodeError> {
        const WHAT: &str = "vault header";
        let mut c = Cursor::new(bytes, WHAT);
        let magic = c.array::<8>()?;
        if magic != magic::VAULT {
            return Err(c.error_at(DecodeErrorKind::BadMagic, 0, "not a replog vault header"));
        }
        let version_raw = c.u32()?;
        let version = FormatVersion::from_u32(version_raw).ok_or_else(|| {
            c.error_at(
                DecodeErrorKind::UnsupportedVersion,
                8,
                format!("format version {version_raw} is not one this replog knows (1)"),
            )
        })?;
        if bytes.len() != VAULT_HEADER_BYTES {
            return Err(c.error_at(
                DecodeErrorKind::Truncated,
                bytes.len().min(VAULT_HEADER_BYTES),
                format!("expected {VAULT_HEADER_BYTES} bytes, found {}", bytes.len()),
            ));
        }
        check_page_crc(bytes, WHAT, 0)?;
        let header_bytes = c.u32()?;
        if header_bytes as usize != VAULT_HEADER_BYTES {
            return Err(c.error_at(DecodeErrorKind::BadField, 12, "header size is not 4096"));
        }
        let vault_id = c.array::<16>()?;
        let created_unix_ns = c.i64()?;
        let block_bytes = c.u32()?;
        let compression_raw = c.u8()?;
        let compression = Compression::from_u8(compression_raw).ok_or_else(|| {
            c.error_at(
                DecodeErrorKind::BadField,
                44,
                format!("unknown compression {compression_raw}"),
            )
        })?;
        c.zeros(3)?;
        let segment_bytes = c.u64()?;
        c.zeros(VAULT_HEADER_BYTES - 4 - c.position())?;
        let header = VaultHeader {
            version,
            vault_id,
            created_unix_ns,
            block_bytes,
            compression,
            segment_bytes,
        };
        header
            .validate_settings()
            .map_err(|e| DecodeError::new(DecodeErrorKind::BadField, WHAT, 40, e))?;
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VaultHeader {
        VaultHeader {
            version: FormatVersion::V1,
            vault_id: [7; 16],
            created_unix_ns: 1_700_000_000_000_000_000,
            block_bytes: 65536,
            compression: Compression::Lz4,
            segment_bytes: 1 << 20,
        }
    }

    #[test]
    fn vault_header_round_trips() {
        let h = sample();
        let bytes = h.encode();
        assert_eq!(bytes.len(), VAULT_HEADER_BYTES);
        assert_eq!(VaultHeader::decode(&bytes).unwrap(), h);
    }

    #[test]
    fn every_flipped_byte_of_the_vault_header_is_rejected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(VaultHeader::decode(&b).is_err(), "flip at {i} accepted");
        }
    }
}
