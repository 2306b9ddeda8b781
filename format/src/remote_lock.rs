//! `remote/IMMUTABLE`: the setting that makes every object a sync uploads to an S3 remote
//! undeletable for a while (S3 Object Lock), kept beside `remote/CONFIG`.
//!
//! ```text
//! offset size field
//!      0    8 magic "RPLG-RIM"
//!      8    4 format_version u32 (1)
//!     12   16 vault_id
//!     28    1 mode u8 (1 compliance, 2 governance)
//!     29    3 reserved, zero
//!     32    8 period_s u64 (1..=LOCK_PERIOD_S_MAX): the shortest retention of an upload
//!     40    8 locked_until_s i64: every object the last confirmed remote manifest needs is
//!             locked until at least this time (Unix seconds); 0: not known
//!     48    4 crc u32 (CRC32, vault seed, of bytes 0..48)
//! ```

use crate::codec::{Cursor, Put, check_magic_version};
use crate::magic::{self, FormatVersion};
use crate::remote::{check_trailing_crc, seal};
use crate::{DecodeError, DecodeErrorKind, VaultId};

/// The immutability setting, in [`crate::remote::REMOTE_DIR`].
pub const REMOTE_IMMUTABLE_FILE: &str = "IMMUTABLE";
/// Longest lock period: 100 years of 365 days, what S3 allows as a default retention.
pub const LOCK_PERIOD_S_MAX: u64 = 100 * 365 * 86_400;
/// Bytes of `remote/IMMUTABLE` before its CRC.
const RIM_FIXED_BYTES: usize = 48;
/// Offset of the mode byte.
const RIM_MODE_AT: usize = 12 + 16;
/// Offset of the period.
const RIM_PERIOD_AT: usize = RIM_MODE_AT + 4;
/// Offset of the lock horizon.
const RIM_LOCKED_UNTIL_AT: usize = RIM_PERIOD_AT + 8;
const _: () = assert!(RIM_LOCKED_UNTIL_AT + 8 == RIM_FIXED_BYTES);

/// How strictly an object is locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// No one, the account's root included, can delete the object or shorten its retention
    /// before the date.
    Compliance = 1,
    /// Users granted `s3:BypassGovernanceRetention` may delete it early, with a bypass header.
    Governance = 2,
}

impl LockMode {
    /// The mode as S3 spells it in `x-amz-object-lock-mode`.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }

    /// The mode an `x-amz-object-lock-mode` value names (any case), or `None`.
    pub fn from_s3(s: &str) -> Option<LockMode> {
        match s.to_ascii_uppercase().as_str() {
            "COMPLIANCE" => Some(LockMode::Compliance),
            "GOVERNANCE" => Some(LockMode::Governance),
            _ => None,
        }
    }

    fn from_u8(v: u8) -> Option<LockMode> {
        match v {
            1 => Some(LockMode::Compliance),
            2 => Some(LockMode::Governance),
            _ => None,
        }
    }
}

/// `remote/IMMUTABLE`: every object a sync uploads is locked in `mode` for at least
/// `period_s` seconds (longer when the vault's retention window is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteImmutability {
    /// The vault.
    pub vault_id: VaultId,
    /// The lock mode of uploads.
    pub mode: LockMode,
    /// The shortest retention of an upload, in seconds (1..=[`LOCK_PERIOD_S_MAX`]).
    pub period_s: u64,
    /// Every object the last confirmed remote manifest needs is locked until at least this
    /// time, in Unix seconds (0: not known, as before the first sync).
    pub locked_until_s: i64,
}

impl RemoteImmutability {
    /// Encodes the whole file. Panics on a period outside the limits: callers check it first.
    pub fn encode(&self, seed: u32) -> Vec<u8> {
        assert!((1..=LOCK_PERIOD_S_MAX).contains(&self.period_s));
        let mut out = Vec::with_capacity(RIM_FIXED_BYTES + 4);
        Put::new(&mut out)
            .bytes(&magic::REMOTE_IMMUTABLE)
            .u32(FormatVersion::CURRENT.as_u32())
            .bytes(&self.vault_id)
            .u8(self.mode as u8)
            .zeros(3)
            .u64(self.period_s)
            .i64(self.locked_until_s);
        debug_assert_eq!(out.len(), RIM_FIXED_BYTES);
        seal(out, seed)
    }

    /// Decodes and validates the whole file.
    pub fn decode(bytes: &[u8], seed: u32) -> Result<RemoteImmutability, DecodeError> {
        const WHAT: &str = "remote immutability setting";
        let mut c = Cursor::new(bytes, WHAT);
        check_magic_version(&mut c, magic::REMOTE_IMMUTABLE, WHAT)?;
        let body = check_trailing_crc(&c, bytes, RIM_FIXED_BYTES, seed)?;
        if body != RIM_FIXED_BYTES {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                body,
                format!("{body} bytes before the checksum, expected {RIM_FIXED_BYTES}"),
            ));
        }
        let vault_id = c.array()?;
        let raw = c.u8()?;
        let mode = LockMode::from_u8(raw).ok_or_else(|| {
            c.error_at(
                DecodeErrorKind::BadField,
                RIM_MODE_AT,
                format!("lock mode {raw}: 1 (compliance) or 2 (governance)"),
            )
        })?;
        c.zeros(3)?;
        let period_s = c.u64()?;
        if !(1..=LOCK_PERIOD_S_MAX).contains(&period_s) {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                RIM_PERIOD_AT,
                format!("lock period {period_s} s: 1 to {LOCK_PERIOD_S_MAX}"),
            ));
        }
        let locked_until_s = c.i64()?;
        if locked_until_s < 0 {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                RIM_LOCKED_UNTIL_AT,
                format!("locked until {locked_until_s}: a time before 1970"),
            ));
        }
        Ok(RemoteImmutability {
            vault_id,
            mode,
            period_s,
            locked_until_s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u32 = 0x1234_5678;

    #[test]
    fn the_setting_round_trips_and_every_flipped_byte_is_caught() {
        let s = RemoteImmutability {
            vault_id: [9; 16],
            mode: LockMode::Governance,
            period_s: 30 * 86_400,
            locked_until_s: 1_800_000_000,
        };
        let bytes = s.encode(SEED);
        assert_eq!(bytes.len(), RIM_FIXED_BYTES + 4);
        assert_eq!(RemoteImmutability::decode(&bytes, SEED).unwrap(), s);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(RemoteImmutability::decode(&bad, SEED).is_err(), "byte {i}");
        }
        assert!(RemoteImmutability::decode(&bytes[..bytes.len() - 1], SEED).is_err());
    }

    #[test]
    fn an_unknown_mode_a_zero_period_or_a_negative_time_is_refused_even_when_sealed() {
        let s = RemoteImmutability {
            vault_id: [1; 16],
            mode: LockMode::Compliance,
            period_s: 1,
            locked_until_s: 0,
        };
        for (at, value) in [
            (RIM_MODE_AT, 3u8),
            (RIM_PERIOD_AT, 0u8),
            (RIM_LOCKED_UNTIL_AT + 7, 0x80),
        ] {
            let mut bad = s.encode(SEED);
            bad[at] = value;
            let crc = crate::crc32_seeded(SEED, &[&bad[..RIM_FIXED_BYTES]]);
            bad[RIM_FIXED_BYTES..].copy_from_slice(&crc.to_le_bytes());
            let e = RemoteImmutability::decode(&bad, SEED).unwrap_err();
            assert_eq!(e.kind, DecodeErrorKind::BadField, "offset {at}");
        }
    }

    #[test]
    fn modes_read_as_s3_spells_them() {
        for m in [LockMode::Compliance, LockMode::Governance] {
            assert_eq!(LockMode::from_s3(m.as_s3()), Some(m));
        }
        assert_eq!(LockMode::from_s3("governance"), Some(LockMode::Governance));
        assert_eq!(LockMode::from_s3("LEGAL"), None);
    }
}
