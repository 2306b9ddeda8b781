//! Hydration maps, `DIR/.<disk>.hydration`: which byte ranges of a live failover's output image
//! `DIR/<disk>.raw` already hold their final bytes (copied from the point, or written by the
//! guest), so that a live failover run again after a crash copies only the rest and never
//! copies over a guest's write.
//!
//! The file is rewritten whole (temporary name, data sync, rename, directory sync); it claims
//! only ranges whose bytes were made durable in the image before the file was written.
//!
//! ```text
//! offset size field
//!      0    8 magic "RPLG-HYD"
//!      8    4 format_version u32 (1)
//!     12    4 flags u32: zero
//!     16   16 vault_id: the vault the point belongs to
//!     32    8 point_id u64
//!     40    8 point_lsn u64
//!     48    8 disk_bytes u64: the disk's size, which is the image's length
//!     56    4 disk_id u32
//!     60    4 range_count u32: at most HYDRATION_RANGES_MAX
//!     64 16*n ranges: start u64, end u64; start < end <= disk_bytes, in increasing order,
//!             neither overlapping nor touching (end < next start)
//!      .    4 crc32 (unseeded) of every byte before it; the file ends here
//! ```
//!
//! The checksum is not seeded with the vault id: the map lives outside the vault, and a map of
//! another vault or point must be reported as such (from the identity fields), not as damage.

use crate::codec::{Cursor, Put, check_magic_version};
use crate::magic::{self, FormatVersion};
use crate::{DecodeError, DecodeErrorKind, VaultId};

/// Prefix of a hydration map's name in the output directory: `.<disk>.hydration`.
pub const HYDRATION_PREFIX: &str = ".";
/// Suffix of a hydration map's name.
pub const HYDRATION_SUFFIX: &str = ".hydration";
/// Bytes before the ranges.
pub const HYDRATION_FIXED_BYTES: usize = 64;
/// Bytes of one range.
pub const HYDRATION_RANGE_BYTES: usize = 16;
/// Most ranges in one map (a 64 MiB file): one per disjoint run of done bytes. Hydration fills
/// the disk in order, so the ranges past its cursor are the guest's scattered writes.
pub const HYDRATION_RANGES_MAX: u32 = 1 << 22;

/// The name of disk `disk`'s hydration map in the output directory.
pub fn hydration_file_name(disk: &str) -> String {
    format!("{HYDRATION_PREFIX}{disk}{HYDRATION_SUFFIX}")
}

/// The content of a hydration map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HydrationMap {
    /// The vault the point belongs to.
    pub vault_id: VaultId,
    /// The point being failed over to.
    pub point_id: u64,
    /// That point's LSN.
    pub point_lsn: u64,
    /// The disk's id.
    pub disk_id: u32,
    /// The disk's size in bytes.
    pub disk_bytes: u64,
    /// The done ranges `[start, end)`, in order, disjoint and not touching.
    pub ranges: Vec<(u64, u64)>,
}

impl HydrationMap {
    /// Bytes the ranges cover.
    pub fn done_bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Encodes the whole file. Panics on ranges that break the rules: callers build them from
    /// a range map, which cannot.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.ranges.len() <= HYDRATION_RANGES_MAX as usize,
            "too many hydration ranges"
        );
        assert!(
            canonical(&self.ranges, self.disk_bytes).is_none(),
            "hydration ranges out of order"
        );
        let mut out = Vec::with_capacity(
            HYDRATION_FIXED_BYTES + HYDRATION_RANGE_BYTES * self.ranges.len() + 4,
        );
        let mut put = Put::new(&mut out);
        put.bytes(&magic::HYDRATION)
            .u32(FormatVersion::CURRENT.as_u32())
            .u32(0)
            .bytes(&self.vault_id)
            .u64(self.point_id)
            .u64(self.point_lsn)
            .u64(self.disk_bytes)
            .u32(self.disk_id)
            .u32(self.ranges.len() as u32);
        for &(start, end) in &self.ranges {
            put.u64(start).u64(end);
        }
        let crc = crate::crc32_seeded(0, &[&out]);
        Put::new(&mut out).u32(crc);
        out
    }

    /// Decodes and validates a whole hydration map.
    pub fn decode(bytes: &[u8]) -> Result<HydrationMap, DecodeError> {
        let mut c = Cursor::new(bytes, WHAT);
        check_magic_version(&mut c, magic::HYDRATION, WHAT)?;
        if bytes.len() < HYDRATION_FIXED_BYTES + 4 {
            return Err(c.error_at(
                DecodeErrorKind::Truncated,
                bytes.len(),
                format!(
                    "a hydration map is at least {} bytes",
                    HYDRATION_FIXED_BYTES + 4
                ),
            ));
        }
        let body = bytes.len() - 4;
        let stored = u32::from_le_bytes(bytes[body..].try_into().expect("four bytes"));
        if crate::crc32_seeded(0, &[&bytes[..body]]) != stored {
            return Err(c.error_at(
                DecodeErrorKind::Checksum,
                body,
                "hydration map checksum does not match",
            ));
        }
        let flags = c.u32()?;
        if flags != 0 {
            return Err(c.error_at(DecodeErrorKind::BadField, 12, format!("flags {flags:#x}")));
        }
        let vault_id = c.array()?;
        let (point_id, point_lsn, disk_bytes) = (c.u64()?, c.u64()?, c.u64()?);
        let disk_id = c.u32()?;
        let count = c.u32()?;
        if count > HYDRATION_RANGES_MAX
            || HYDRATION_FIXED_BYTES + HYDRATION_RANGE_BYTES * count as usize != body
        {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                60,
                format!(
                    "{count} ranges do not fit the limit {HYDRATION_RANGES_MAX} or the file's {body} bytes"
                ),
            ));
        }
        let mut ranges = Vec::with_capacity(count as usize);
        for _ in 0..count {
            ranges.push((c.u64()?, c.u64()?));
        }
        if let Some(i) = canonical(&ranges, disk_bytes) {
            let (s, e) = ranges[i];
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                HYDRATION_FIXED_BYTES + HYDRATION_RANGE_BYTES * i,
                format!(
                    "range {s}..{e} is empty, past the disk's {disk_bytes} bytes, or not after the one before it"
                ),
            ));
        }
        Ok(HydrationMap {
            vault_id,
            point_id,
            point_lsn,
            disk_id,
            disk_bytes,
            ranges,
        })
    }
}

const WHAT: &str = "hydration map";

/// The index of the first range that breaks the rules (empty, past the end, overlapping or
/// touching the one before), or `None`.
fn canonical(ranges: &[(u64, u64)], disk_bytes: u64) -> Option<usize> {
    let mut after = None;
    for (i, &(s, e)) in ranges.iter().enumerate() {
        if s >= e || e > disk_bytes || after.is_some_and(|a| s <= a) {
            return Some(i);
        }
        after = Some(e);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HydrationMap {
        HydrationMap {
            vault_id: [3; 16],
            point_id: 4,
            point_lsn: 99,
            disk_id: 1,
            disk_bytes: 1 << 20,
            ranges: vec![(0, 4096), (8192, 65536), (100_000, 1 << 20)],
        }
    }

    #[test]
    fn hydration_map_round_trips() {
        let m = sample();
        assert_eq!(HydrationMap::decode(&m.encode()).unwrap(), m);
        let empty = HydrationMap {
            ranges: vec![],
            ..sample()
        };
        assert_eq!(HydrationMap::decode(&empty.encode()).unwrap(), empty);
        assert_eq!(m.done_bytes(), 4096 + 57344 + (1 << 20) - 100_000);
    }

    #[test]
    fn every_flipped_byte_and_every_cut_of_a_map_is_rejected() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(HydrationMap::decode(&b).is_err(), "flip at {i} accepted");
            assert!(HydrationMap::decode(&bytes[..i]).is_err(), "cut at {i}");
        }
    }

    /// Re-encodes `m` with a valid checksum over whatever its ranges are.
    fn forged(m: &HydrationMap) -> Vec<u8> {
        let mut out = m.encode_unchecked();
        let body = out.len() - 4;
        let crc = crate::crc32_seeded(0, &[&out[..body]]);
        out[body..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    impl HydrationMap {
        fn encode_unchecked(&self) -> Vec<u8> {
            let mut ok = self.clone();
            let ranges = std::mem::take(&mut ok.ranges);
            let mut out = ok.encode();
            out.truncate(out.len() - 4);
            // The count field, then the ranges as given.
            out[60..64].copy_from_slice(&(ranges.len() as u32).to_le_bytes());
            for (s, e) in ranges {
                out.extend_from_slice(&s.to_le_bytes());
                out.extend_from_slice(&e.to_le_bytes());
            }
            out.extend_from_slice(&[0; 4]);
            out
        }
    }

    #[test]
    fn ranges_out_of_order_overlapping_touching_empty_or_past_the_end_are_refused() {
        for bad in [
            vec![(10, 10)],
            vec![(0, (1 << 20) + 1)],
            vec![(0, 100), (50, 200)],
            vec![(0, 100), (100, 200)],
            vec![(200, 300), (0, 100)],
        ] {
            let m = HydrationMap {
                ranges: bad.clone(),
                ..sample()
            };
            let e = HydrationMap::decode(&forged(&m)).unwrap_err();
            assert_eq!(e.kind, DecodeErrorKind::BadField, "{bad:?}: {e}");
        }
    }
}
