//! The fixed VHD footer: encoding for failover output and decoding for import.
//!
//! A fixed VHD is the disk's bytes followed by one 512-byte footer (Microsoft's "Virtual Hard
//! Disk Image Format Specification", version 1.0). Azure takes uploads only in this form, and
//! only when the virtual size is a whole number of MiB, so failover pads the image with zeros
//! to [`ALIGN_BYTES`] before the footer. Every field is big-endian, unlike replog's own
//! structures.
//!
//! | offset | bytes | field | value written |
//! |---:|---:|---|---|
//! | 0 | 8 | cookie | `conectix` |
//! | 8 | 4 | features | 2 (the reserved bit, always set) |
//! | 12 | 4 | file format version | 0x0001_0000 |
//! | 16 | 8 | data offset | 0xFFFF_FFFF_FFFF_FFFF (fixed disks have no header) |
//! | 24 | 4 | time stamp | seconds since 2000-01-01 00:00:00 UTC |
//! | 28 | 4 | creator application | `win ` |
//! | 32 | 4 | creator version | 0x000A_0000 |
//! | 36 | 4 | creator host OS | `Wi2k` |
//! | 40 | 8 | original size | the virtual size in bytes |
//! | 48 | 8 | current size | the virtual size in bytes |
//! | 56 | 4 | disk geometry | cylinders (2), heads (1), sectors per track (1) |
//! | 60 | 4 | disk type | 2 (fixed) |
//! | 64 | 4 | checksum | one's complement of the sum of every other footer byte |
//! | 68 | 16 | unique id | a random (version 4) UUID |
//! | 84 | 1 | saved state | 0 |
//! | 85 | 427 | reserved | zeros |
//!
//! The creator application decides how readers size the disk. qemu's `vpc` driver, for one,
//! trusts the CHS geometry (which rounds most sizes down) unless the creator is one it knows
//! writes an exact current size: Hyper-V's `win `, among others. The footer says `win ` with
//! Hyper-V's host OS so that every reader takes the current size, which is exact.

use thiserror::Error;

/// Bytes of the footer.
pub const FOOTER_BYTES: usize = 512;
/// The virtual size of an image written for upload is a multiple of this (Azure's rule).
pub const ALIGN_BYTES: u64 = 1 << 20;
/// Bytes of a sector, the unit of the geometry.
const SECTOR_BYTES: u64 = 512;

const COOKIE: [u8; 8] = *b"conectix";
const FEATURES: u32 = 2;
const FILE_FORMAT_VERSION: u32 = 0x0001_0000;
/// The data offset of a fixed disk: there is no dynamic header to point at.
const FIXED_DATA_OFFSET: u64 = u64::MAX;
const CREATOR_APP: [u8; 4] = *b"win ";
const CREATOR_VERSION: u32 = 0x000A_0000;
const CREATOR_HOST_OS: [u8; 4] = *b"Wi2k";
/// Disk type of a fixed disk (3 is dynamic, 4 differencing).
pub const DISK_TYPE_FIXED: u32 = 2;
/// 2000-01-01 00:00:00 UTC as a Unix time: the epoch of the time stamp.
pub const VHD_EPOCH_UNIX_S: u64 = 946_684_800;

// Field offsets, each built from the one before.
const AT_FEATURES: usize = COOKIE.len();
const AT_VERSION: usize = AT_FEATURES + 4;
const AT_DATA_OFFSET: usize = AT_VERSION + 4;
const AT_TIMESTAMP: usize = AT_DATA_OFFSET + 8;
const AT_CREATOR_APP: usize = AT_TIMESTAMP + 4;
const AT_CREATOR_VERSION: usize = AT_CREATOR_APP + 4;
const AT_CREATOR_OS: usize = AT_CREATOR_VERSION + 4;
const AT_ORIGINAL_SIZE: usize = AT_CREATOR_OS + 4;
const AT_CURRENT_SIZE: usize = AT_ORIGINAL_SIZE + 8;
const AT_GEOMETRY: usize = AT_CURRENT_SIZE + 8;
const AT_DISK_TYPE: usize = AT_GEOMETRY + 4;
const AT_CHECKSUM: usize = AT_DISK_TYPE + 4;
const AT_UNIQUE_ID: usize = AT_CHECKSUM + 4;
const AT_SAVED_STATE: usize = AT_UNIQUE_ID + 16;
const AT_RESERVED: usize = AT_SAVED_STATE + 1;
const _: () = assert!(AT_RESERVED == 85 && FOOTER_BYTES - AT_RESERVED == 427);

/// Cylinders, heads and sectors per track, as the footer stores them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Cylinders.
    pub cylinders: u16,
    /// Heads.
    pub heads: u8,
    /// Sectors per track.
    pub sectors_per_track: u8,
}

/// The geometry of a disk of `size_bytes`, by the specification's algorithm (appendix "CHS
/// calculation"): the largest CHS at most the size, capped at 65535 x 16 x 255.
pub fn geometry(size_bytes: u64) -> Geometry {
    const MAX_SECTORS: u64 = 65535 * 16 * 255;
    let total = (size_bytes / SECTOR_BYTES).min(MAX_SECTORS);
    let (sectors, heads, cylinders_times_heads) = if total >= 65535 * 16 * 63 {
        (255, 16, total / 255)
    } else {
        let mut sectors = 17;
        let mut cth = total / sectors;
        let mut heads = cth.div_ceil(1024).max(4);
        if cth >= heads * 1024 || heads > 16 {
            (sectors, heads) = (31, 16);
            cth = total / sectors;
        }
        if cth >= heads * 1024 {
            (sectors, heads) = (63, 16);
            cth = total / sectors;
        }
        (sectors, heads, cth)
    };
    Geometry {
        cylinders: u16::try_from(cylinders_times_heads / heads)
            .expect("the sector cap keeps cylinders within 65535"),
        heads: u8::try_from(heads).expect("heads are at most 16"),
        sectors_per_track: u8::try_from(sectors).expect("sectors per track are at most 255"),
    }
}

/// The virtual size of the VHD written for a disk of `disk_bytes`: rounded up to a whole MiB.
pub fn padded_size(disk_bytes: u64) -> u64 {
    disk_bytes.div_ceil(ALIGN_BYTES) * ALIGN_BYTES
}

/// The footer checksum: the one's complement of the sum of every byte but the checksum's own.
pub fn checksum(footer: &[u8; FOOTER_BYTES]) -> u32 {
    let sum = footer
        .iter()
        .enumerate()
        .filter(|(i, _)| !(AT_CHECKSUM..AT_CHECKSUM + 4).contains(i))
        .fold(0u32, |acc, (_, &b)| acc.wrapping_add(u32::from(b)));
    !sum
}

/// The footer of a fixed disk of `size_bytes` (a multiple of 512; failover passes a multiple of
/// [`ALIGN_BYTES`]), stamped with `timestamp_s` (seconds since 2000) and `unique_id`.
pub fn encode_fixed_footer(
    size_bytes: u64,
    timestamp_s: u32,
    unique_id: [u8; 16],
) -> [u8; FOOTER_BYTES] {
    assert!(
        size_bytes.is_multiple_of(SECTOR_BYTES),
        "a VHD's size is whole sectors"
    );
    let mut f = [0u8; FOOTER_BYTES];
    let g = geometry(size_bytes);
    f[..AT_FEATURES].copy_from_slice(&COOKIE);
    f[AT_FEATURES..AT_VERSION].copy_from_slice(&FEATURES.to_be_bytes());
    f[AT_VERSION..AT_DATA_OFFSET].copy_from_slice(&FILE_FORMAT_VERSION.to_be_bytes());
    f[AT_DATA_OFFSET..AT_TIMESTAMP].copy_from_slice(&FIXED_DATA_OFFSET.to_be_bytes());
    f[AT_TIMESTAMP..AT_CREATOR_APP].copy_from_slice(&timestamp_s.to_be_bytes());
    f[AT_CREATOR_APP..AT_CREATOR_VERSION].copy_from_slice(&CREATOR_APP);
    f[AT_CREATOR_VERSION..AT_CREATOR_OS].copy_from_slice(&CREATOR_VERSION.to_be_bytes());
    f[AT_CREATOR_OS..AT_ORIGINAL_SIZE].copy_from_slice(&CREATOR_HOST_OS);
    f[AT_ORIGINAL_SIZE..AT_CURRENT_SIZE].copy_from_slice(&size_bytes.to_be_bytes());
    f[AT_CURRENT_SIZE..AT_GEOMETRY].copy_from_slice(&size_bytes.to_be_bytes());
    f[AT_GEOMETRY..AT_GEOMETRY + 2].copy_from_slice(&g.cylinders.to_be_bytes());
    f[AT_GEOMETRY + 2] = g.heads;
    f[AT_GEOMETRY + 3] = g.sectors_per_track;
    f[AT_DISK_TYPE..AT_CHECKSUM].copy_from_slice(&DISK_TYPE_FIXED.to_be_bytes());
    f[AT_UNIQUE_ID..AT_SAVED_STATE].copy_from_slice(&unique_id);
    let sum = checksum(&f);
    f[AT_CHECKSUM..AT_UNIQUE_ID].copy_from_slice(&sum.to_be_bytes());
    f
}

/// Seconds since 2000-01-01 UTC of a Unix time, as the footer stores them (saturating: the
/// field ends in 2136).
pub fn timestamp_of_unix(unix_s: u64) -> u32 {
    u32::try_from(unix_s.saturating_sub(VHD_EPOCH_UNIX_S)).unwrap_or(u32::MAX)
}

/// A random UUID (version 4, RFC 4122 variant) for the unique id field.
pub fn random_unique_id() -> [u8; 16] {
    let mut id: [u8; 16] = rand::random();
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// What a footer that decodes says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// The disk type: 2 fixed, 3 dynamic, 4 differencing.
    pub disk_type: u32,
    /// The current size: the disk's bytes.
    pub current_size: u64,
}

/// Why 512 bytes are not a VHD footer.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum FooterError {
    /// The cookie is not `conectix`: not a VHD footer at all.
    #[error("no VHD cookie")]
    NoCookie,
    /// The cookie is there but the checksum is wrong.
    #[error("the VHD footer checksum is {found:#010x}, its bytes sum to {computed:#010x}")]
    Checksum {
        /// The stored checksum.
        found: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
}

/// Decodes a footer: the cookie and the checksum must hold.
pub fn decode_footer(bytes: &[u8; FOOTER_BYTES]) -> Result<Footer, FooterError> {
    if bytes[..AT_FEATURES] != COOKIE {
        return Err(FooterError::NoCookie);
    }
    let found = be_u32(bytes, AT_CHECKSUM);
    let computed = checksum(bytes);
    if found != computed {
        return Err(FooterError::Checksum { found, computed });
    }
    Ok(Footer {
        disk_type: be_u32(bytes, AT_DISK_TYPE),
        current_size: u64::from_be_bytes(
            bytes[AT_CURRENT_SIZE..AT_GEOMETRY]
                .try_into()
                .expect("8 bytes"),
        ),
    })
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn chs(cylinders: u16, heads: u8, sectors_per_track: u8) -> Geometry {
        Geometry {
            cylinders,
            heads,
            sectors_per_track,
        }
    }

    /// Worked through the specification's algorithm by hand, at least one per branch.
    #[test]
    fn geometry_follows_the_specification_for_known_sizes() {
        // 17 sectors per track, the minimum of 4 heads.
        assert_eq!(geometry(MIB), chs(30, 4, 17));
        // 17 sectors, 12 heads.
        assert_eq!(geometry(100 * MIB), chs(1003, 12, 17));
        // 31 sectors, 16 heads: 200 MiB is too big for 17 x 16.
        assert_eq!(geometry(200 * MIB), chs(825, 16, 31));
        // 63 sectors, 16 heads.
        assert_eq!(geometry(GIB), chs(2080, 16, 63));
        assert_eq!(geometry(10 * GIB), chs(20805, 16, 63));
        // 255 sectors from 65535 x 16 x 63 sectors on.
        assert_eq!(geometry(65535 * 16 * 63 * 512), chs(16191, 16, 255));
        assert_eq!(geometry(127 * GIB), chs(65278, 16, 255));
        // Capped at the largest geometry.
        assert_eq!(geometry(65535 * 16 * 255 * 512), chs(65535, 16, 255));
        assert_eq!(geometry(2040 * GIB), chs(65535, 16, 255));
        assert_eq!(geometry(0), chs(0, 4, 17));
    }

    #[test]
    fn sizes_round_up_to_whole_mib() {
        assert_eq!(padded_size(1), MIB);
        assert_eq!(padded_size(MIB), MIB);
        assert_eq!(padded_size(MIB + 512), 2 * MIB);
        assert_eq!(padded_size(5 * MIB - 4096), 5 * MIB);
    }

    #[test]
    fn checksum_is_the_complement_of_the_byte_sum_without_its_own_field() {
        let mut f = [0u8; FOOTER_BYTES];
        assert_eq!(checksum(&f), u32::MAX);
        f[0] = 1;
        f[511] = 2;
        assert_eq!(checksum(&f), !3);
        // The checksum field's own bytes do not count.
        f[AT_CHECKSUM..AT_CHECKSUM + 4].copy_from_slice(&[0xff; 4]);
        assert_eq!(checksum(&f), !3);
        // A full footer of 0xff: 508 bytes of 255 counted.
        assert_eq!(checksum(&[0xff; FOOTER_BYTES]), !(508 * 255));
    }

    #[test]
    fn the_footer_has_every_field_in_place() {
        let id = [7u8; 16];
        let f = encode_fixed_footer(3 * MIB, 0x3295_3c5a, id);
        assert_eq!(&f[0..8], b"conectix");
        assert_eq!(f[8..12], [0, 0, 0, 2]);
        assert_eq!(f[12..16], [0, 1, 0, 0]);
        assert_eq!(f[16..24], [0xff; 8]);
        assert_eq!(f[24..28], [0x32, 0x95, 0x3c, 0x5a]);
        assert_eq!(&f[28..32], b"win ");
        assert_eq!(f[32..36], [0, 0x0a, 0, 0]);
        assert_eq!(&f[36..40], b"Wi2k");
        assert_eq!(f[40..48], (3 * MIB).to_be_bytes());
        assert_eq!(f[48..56], (3 * MIB).to_be_bytes());
        // 6144 sectors: 17 per track, 361 cylinder-heads, 4 heads, 90 cylinders.
        assert_eq!(f[56..60], [0, 90, 4, 17]);
        assert_eq!(f[60..64], [0, 0, 0, 2]);
        assert_eq!(f[64..68], checksum(&f).to_be_bytes());
        assert_eq!(f[68..84], id);
        assert!(f[84..].iter().all(|&b| b == 0), "saved state and reserved");
        let mut sum = 0u32;
        for (i, &b) in f.iter().enumerate() {
            if !(64..68).contains(&i) {
                sum += u32::from(b);
            }
        }
        assert_eq!(checksum(&f), !sum);
    }

    #[test]
    fn a_written_footer_decodes_and_a_changed_byte_does_not() {
        let f = encode_fixed_footer(64 * MIB, 1, random_unique_id());
        assert_eq!(
            decode_footer(&f),
            Ok(Footer {
                disk_type: DISK_TYPE_FIXED,
                current_size: 64 * MIB
            })
        );
        for at in 8..FOOTER_BYTES {
            let mut bad = f;
            bad[at] ^= 0x10;
            assert!(
                matches!(decode_footer(&bad), Err(FooterError::Checksum { .. })),
                "byte {at}"
            );
        }
        let mut other = f;
        other[0] = b'C';
        assert_eq!(decode_footer(&other), Err(FooterError::NoCookie));
    }

    #[test]
    fn unique_ids_are_version_4_uuids() {
        let a = random_unique_id();
        assert_eq!(a[6] >> 4, 4);
        assert_eq!(a[8] >> 6, 0b10);
        assert_ne!(a, random_unique_id());
    }

    #[test]
    fn timestamps_count_from_2000_and_saturate() {
        assert_eq!(timestamp_of_unix(VHD_EPOCH_UNIX_S), 0);
        assert_eq!(timestamp_of_unix(VHD_EPOCH_UNIX_S + 86_400), 86_400);
        assert_eq!(timestamp_of_unix(0), 0);
        assert_eq!(timestamp_of_unix(u64::MAX), u32::MAX);
    }
}
