//! Lease files, `leases/<name>.lease`: a reader's promise to compaction that it is using one
//! recovery point, so compaction never rolls the base images past it and never deletes a file
//! the reader's snapshot still names.
//!
//! A live lease is held with an advisory lock on its file for as long as its holder runs; a lease
//! whose file nobody locks is stale (its holder died) and is removed by compaction, unless it is
//! persistent (a test failover), which lasts until it is released explicitly.
//!
//! ```text
//! offset size field
//!      0    8 magic "RPLG-LSE"
//!      8    4 format_version u32 (1)
//!     12    4 flags u32: bit 0 persistent; other bits zero
//!     16   16 vault_id
//!     32    8 point_id u64
//!     40    8 lsn u64: the point's LSN; compaction never moves the base past it
//!     48    8 snapshot_base_lsn u64: base LSN of the manifest the holder read
//!     56    8 time_unix_ns i64: when the lease was taken
//!     64    4 pid u32: the holder's process id (for people; liveness is the lock)
//!     68    1 purpose_len u8: 1..=32
//!     69    1 reserved, zero
//!     70    2 detail_len u16: at most 4096
//!     72   32 purpose: [a-z0-9-], zero padded
//!    104    . detail: UTF-8 (a test failover's output directory)
//!      .    4 crc32 (vault seed) of every byte before it
//! ```

use crate::codec::{Cursor, Put, check_magic_version};
use crate::magic::{self, FormatVersion};
use crate::{DecodeError, DecodeErrorKind, VaultId};

/// Directory of lease files, in the vault.
pub const LEASES_DIR: &str = "leases";
/// The registration lock: readers hold it shared while they read the manifest and register,
/// compaction holds it exclusive while it lists leases and commits.
pub const LEASE_LOCK_FILE: &str = ".lock";
/// Suffix of lease files.
pub const LEASE_SUFFIX: &str = ".lease";
/// The lease of the vault's one test failover.
pub const TEST_FAILOVER_LEASE_FILE: &str = "test-failover.lease";

/// Bytes before the detail.
pub const LEASE_FIXED_BYTES: usize = 104;
/// Longest purpose.
pub const LEASE_PURPOSE_BYTES_MAX: usize = 32;
/// Longest detail.
pub const LEASE_DETAIL_BYTES_MAX: usize = 4096;
/// Flag: the lease outlives its process and is released explicitly.
pub const LEASE_PERSISTENT: u32 = 1;

/// The content of a lease file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The vault it belongs to.
    pub vault_id: VaultId,
    /// Whether it outlives its holder (released explicitly).
    pub persistent: bool,
    /// The point in use.
    pub point_id: u64,
    /// That point's LSN.
    pub lsn: u64,
    /// The base LSN of the manifest the holder read: files that manifest names stay until the
    /// lease goes.
    pub snapshot_base_lsn: u64,
    /// When it was taken.
    pub time_unix_ns: i64,
    /// The holder's process id.
    pub pid: u32,
    /// What the point is used for: `failover`, `test-failover`, `migration`, ...
    pub purpose: String,
    /// Free text for people and for the purpose (a test failover's output directory).
    pub detail: String,
}

/// Whether `purpose` is a valid lease purpose: 1 to 32 of `[a-z0-9-]`.
pub fn valid_purpose(purpose: &str) -> bool {
    (1..=LEASE_PURPOSE_BYTES_MAX).contains(&purpose.len())
        && purpose
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl LeaseRecord {
    /// Encodes the whole file. Panics on a purpose or detail outside the limits: callers check.
    pub fn encode(&self, seed: u32) -> Vec<u8> {
        assert!(valid_purpose(&self.purpose), "invalid lease purpose");
        assert!(
            self.detail.len() <= LEASE_DETAIL_BYTES_MAX,
            "lease detail too long"
        );
        let mut out = Vec::with_capacity(LEASE_FIXED_BYTES + self.detail.len() + 4);
        let mut purpose = [0u8; LEASE_PURPOSE_BYTES_MAX];
        purpose[..self.purpose.len()].copy_from_slice(self.purpose.as_bytes());
        Put::new(&mut out)
            .bytes(&magic::LEASE)
            .u32(FormatVersion::CURRENT.as_u32())
            .u32(if self.persistent { LEASE_PERSISTENT } else { 0 })
            .bytes(&self.vault_id)
            .u64(self.point_id)
            .u64(self.lsn)
            .u64(self.snapshot_base_lsn)
            .i64(self.time_unix_ns)
            .u32(self.pid)
            .u8(self.purpose.len() as u8)
            .u8(0)
            .u16(self.detail.len() as u16)
            .bytes(&purpose)
            .bytes(self.detail.as_bytes());
        let crc = crate::crc32_seeded(seed, &[&out]);
        Put::new(&mut out).u32(crc);
        out
    }

    /// Decodes and validates a whole lease file.
    pub fn decode(bytes: &[u8], seed: u32) -> Result<LeaseRecord, DecodeError> {
        let mut c = Cursor::new(bytes, LEASE);
        let body = check_frame(&mut c, bytes, seed)?;
        let flags = c.u32()?;
        if flags & !LEASE_PERSISTENT != 0 {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                12,
                format!("lease flags {flags:#x}"),
            ));
        }
        let vault_id = c.array()?;
        let (point_id, lsn, snapshot_base_lsn) = (c.u64()?, c.u64()?, c.u64()?);
        let time_unix_ns = c.i64()?;
        let pid = c.u32()?;
        let purpose_len = c.u8()? as usize;
        c.zeros(1)?;
        let detail_len = c.u16()? as usize;
        let purpose = decode_purpose(&mut c, purpose_len)?;
        if detail_len > LEASE_DETAIL_BYTES_MAX || LEASE_FIXED_BYTES + detail_len != body {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                70,
                format!(
                    "detail of {detail_len} bytes does not fit the limit {LEASE_DETAIL_BYTES_MAX} or the file"
                ),
            ));
        }
        let detail = std::str::from_utf8(c.take(detail_len)?)
            .map_err(|_| {
                c.error_at(
                    DecodeErrorKind::BadField,
                    LEASE_FIXED_BYTES,
                    "detail is not UTF-8",
                )
            })?
            .to_owned();
        Ok(LeaseRecord {
            vault_id,
            persistent: flags & LEASE_PERSISTENT != 0,
            point_id,
            lsn,
            snapshot_base_lsn,
            time_unix_ns,
            pid,
            purpose,
            detail,
        })
    }
}

const LEASE: &str = "lease";

/// Checks the lease's magic, version, minimum length and checksum, leaving `c` after the
/// version. Returns the length of the body, the bytes before the checksum.
fn check_frame(c: &mut Cursor<'_>, bytes: &[u8], seed: u32) -> Result<usize, DecodeError> {
    check_magic_version(c, magic::LEASE, LEASE)?;
    if bytes.len() < LEASE_FIXED_BYTES + 4 {
        return Err(c.error_at(
            DecodeErrorKind::Truncated,
            bytes.len(),
            format!("a lease is at least {} bytes", LEASE_FIXED_BYTES + 4),
        ));
    }
    let body = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[body..].try_into().expect("four bytes"));
    if crate::crc32_seeded(seed, &[&bytes[..body]]) != stored {
        return Err(c.error_at(
            DecodeErrorKind::Checksum,
            body,
            "lease checksum does not match",
        ));
    }
    Ok(body)
}

/// Reads the fixed purpose field: `purpose_len` bytes of a valid purpose, then zeros.
fn decode_purpose(c: &mut Cursor<'_>, purpose_len: usize) -> Result<String, DecodeError> {
    let raw_purpose = c.take(LEASE_PURPOSE_BYTES_MAX)?;
    let purpose = std::str::from_utf8(&raw_purpose[..purpose_len.min(LEASE_PURPOSE_BYTES_MAX)])
        .ok()
        .filter(|p| p.len() == purpose_len && valid_purpose(p))
        .filter(|_| raw_purpose[purpose_len..].iter().all(|&b| b == 0))
        .ok_or_else(|| {
            c.error_at(
                DecodeErrorKind::BadField,
                72,
                "lease purpose is not 1 to 32 of [a-z0-9-] followed by zeros",
            )
        })?
        .to_owned();
    Ok(purpose)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LeaseRecord {
        LeaseRecord {
            vault_id: [7; 16],
            persistent: true,
            point_id: 12,
            lsn: 345,
            snapshot_base_lsn: 100,
            time_unix_ns: 1_700_000_000_000_000_000,
            pid: 4242,
            purpose: "test-failover".into(),
            detail: "/srv/out".into(),
        }
    }

    #[test]
    fn lease_round_trips() {
        let l = sample();
        assert_eq!(LeaseRecord::decode(&l.encode(9), 9).unwrap(), l);
    }

    #[test]
    fn every_flipped_byte_and_every_cut_of_a_lease_is_rejected() {
        let bytes = sample().encode(9);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x04;
            assert!(LeaseRecord::decode(&b, 9).is_err(), "flip at {i} accepted");
            assert!(LeaseRecord::decode(&bytes[..i], 9).is_err(), "cut at {i}");
        }
        assert!(
            LeaseRecord::decode(&bytes, 10).is_err(),
            "another vault's seed"
        );
    }

    #[test]
    fn purposes_are_confined() {
        assert!(valid_purpose("nbd-export"));
        for bad in ["", "Failover", "a b", "x/y", &"x".repeat(33)] {
            assert!(!valid_purpose(bad), "{bad:?}");
        }
    }
}
