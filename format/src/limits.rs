//! Hard limits. Decoders reject any length beyond these before allocating, so a hostile length
//! field can never make a reader allocate more than a bounded amount.

/// Size of every fixed file header (vault, segment, base, digest): one page, so that data after
/// it stays page-aligned for direct I/O and reflinks.
pub const PAGE_BYTES: usize = 4096;
/// Largest logical length of one write or zero record. Larger writes are split by the writer.
pub const RECORD_DATA_BYTES_MAX: u64 = 4 << 20;
/// Largest label of a recovery point, in bytes of UTF-8.
pub const LABEL_BYTES_MAX: usize = 1024;
/// Largest disk name, in bytes. Names are `[A-Za-z0-9._-]`, not starting with `.`.
pub const DISK_NAME_BYTES_MAX: usize = 64;
/// Most disks in one vault.
pub const DISKS_MAX: u32 = 1024;
/// Largest disk, in bytes (64 TiB).
pub const DISK_BYTES_MAX: u64 = 64 << 40;
/// Smallest and largest journal segment size.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// See [`SEGMENT_BYTES_MIN`].
pub const SEGMENT_BYTES_MAX: u64 = 4 << 30;
/// Default journal segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 256 << 20;
/// Smallest, largest and default block size (the chunk of base checksums and ingest digests).
pub const BLOCK_BYTES_MIN: u32 = 4096;
/// See [`BLOCK_BYTES_MIN`].
pub const BLOCK_BYTES_MAX: u32 = 4 << 20;
/// See [`BLOCK_BYTES_MIN`].
pub const BLOCK_BYTES_DEFAULT: u32 = 64 << 10;

/// Whether `block_bytes` is a block size the format allows: a power of two from
/// [`BLOCK_BYTES_MIN`] to [`BLOCK_BYTES_MAX`].
pub const fn block_bytes_ok(block_bytes: u32) -> bool {
    block_bytes.is_power_of_two()
        && block_bytes >= BLOCK_BYTES_MIN
        && block_bytes <= BLOCK_BYTES_MAX
}
/// Most records (writes, zeroes and points) in one segment; the writer seals before this.
pub const SEGMENT_RECORDS_MAX: u32 = 1 << 20;
/// Largest footer payload: the extent and point index of one segment.
pub const FOOTER_BYTES_MAX: u64 = 160 << 20;
/// Largest manifest body.
pub const MANIFEST_BYTES_MAX: u64 = 1 << 30;
/// Most segments listed in one manifest.
pub const SEGMENTS_MAX: u32 = 1 << 24;
/// Most recovery points listed in one manifest.
pub const POINTS_MAX: u32 = 1 << 24;
/// Most dead ranges listed in one manifest.
pub const DEAD_RANGES_MAX: u32 = 1 << 24;
