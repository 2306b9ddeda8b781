//! Base images: a disk's content at the vault's base point, plus a checksum table covering every
//! chunk of it, holes included.
//!
//! ```text
//! file: [header 4096][data: disk bytes at data_offset + disk offset, sparse][table pages]
//!
//! header
//! offset size field
//!      0    8 magic "RPLG-BAS"
//!      8    4 format_version u32
//!     12    4 header_bytes u32 (4096)
//!     16   16 vault_id
//!     32    4 disk_id u32
//!     36    4 block_bytes u32: chunk size of the table
//!     40    8 generation u64: bumped each time retention rolls the base forward
//!     48    8 disk_bytes u64
//!     56    8 base_lsn u64: the journal LSN the base reflects (0 = before any record)
//!     64    8 data_offset u64 (4096)
//!     72    8 table_offset u64 = data_offset + (disk_bytes rounded up to block_bytes); data_offset
//!               is 4096, so this differs from rounding the sum once block_bytes is over 4096
//!     80    8 chunk_count u64 = ceil(disk_bytes / block_bytes)
//!     88    4 table_crc: crc32 (vault seed) over every table page's stored CRC, in order
//!     92 4000 reserved, zero
//!   4092    4 crc32 (vault seed) of bytes 0..4092
//!
//! table page (4096 bytes), TABLE_ENTRIES_PER_PAGE entries each:
//!      0 8*511 entries: chunk_crc u32 (crc32, unseeded, of the chunk's bytes within the disk),
//!                       flags u32 (bit 0: the chunk is all zero and stored as a hole)
//!   4088    4 page_index u32
//!   4092    4 crc32 (vault seed) of bytes 0..4092
//! ```
//! Entries past `chunk_count` in the last page are zero.

use crate::codec::{
    Cursor, Put, check_header_page, check_magic_version, check_page_crc, seal_page,
};
use crate::limits::*;
use crate::magic::{self, FormatVersion};
use crate::{DecodeError, DecodeErrorKind, VaultId, align_up};

/// Size of a base header.
pub const BASE_HEADER_BYTES: usize = PAGE_BYTES;
/// Size of a checksum table page.
pub const TABLE_PAGE_BYTES: usize = PAGE_BYTES;
/// Entries per table page.
pub const TABLE_ENTRIES_PER_PAGE: usize = 511;
const _: () = assert!(TABLE_ENTRIES_PER_PAGE * 8 + 4 + 4 == TABLE_PAGE_BYTES);

/// Table entry flag: the chunk is all zero.
pub const CHUNK_ZERO: u32 = 1;

/// The header of a base file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseHeader {
    /// The vault it belongs to.
    pub vault_id: VaultId,
    /// The disk it is the base of.
    pub disk_id: u32,
    /// Chunk size of the checksum table.
    pub block_bytes: u32,
    /// Bumped each time the base is rolled forward.
    pub generation: u64,
    /// Size of the disk.
    pub disk_bytes: u64,
    /// The LSN the base reflects.
    pub base_lsn: u64,
    /// CRC over the table pages' CRCs.
    pub table_crc: u32,
}

/// One checksum table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSum {
    /// CRC32 of the chunk's bytes.
    pub crc: u32,
    /// Whether the chunk is all zero (a hole).
    pub zero: bool,
}

impl BaseHeader {
    /// Offset of the disk's byte 0 in the file.
    pub fn data_offset(&self) -> u64 {
        BASE_HEADER_BYTES as u64
    }
    /// Number of chunks.
    pub fn chunk_count(&self) -> u64 {
        self.disk_bytes.div_ceil(u64::from(self.block_bytes))
    }
    /// Offset of the first table page.
    pub fn table_offset(&self) -> u64 {
        self.data_offset() + align_up(self.disk_bytes, u64::from(self.block_bytes))
    }
    /// Number of table pages.
    pub fn table_pages(&self) -> u64 {
        self.chunk_count().div_ceil(TABLE_ENTRIES_PER_PAGE as u64)
    }
    /// The whole file's length.
    pub fn file_bytes(&self) -> u64 {
        self.table_offset() + self.table_pages() * TABLE_PAGE_BYTES as u64
    }

    /// Encodes the header page.
    pub fn encode(&self, seed: u32) -> Vec<u8> {
        let mut buf = Vec::with_capacity(BASE_HEADER_BYTES);
        Put::new(&mut buf)
            .bytes(&magic::BASE)
            .u32(FormatVersion::CURRENT.as_u32())
            .u32(BASE_HEADER_BYTES as u32)
            .bytes(&self.vault_id)
            .u32(self.disk_id)
            .u32(self.block_bytes)
            .u64(self.generation)
            .u64(self.disk_bytes)
            .u64(self.base_lsn)
            .u64(self.data_offset())
            .u64(self.table_offset())
            .u64(self.chunk_count())
            .u32(self.table_crc);
        seal_page(&mut buf, BASE_HEADER_BYTES, seed);
        buf
    }

    /// Decodes and validates the header page.
    pub fn decode(bytes: &[u8], seed: u32) -> Result<BaseHeader, DecodeError> {
        let mut c = Cursor::new(bytes, BASE_HEADER);
        check_magic_version(&mut c, magic::BASE, "base image")?;
        check_header_page(&mut c, bytes, BASE_HEADER_BYTES, BASE_HEADER, seed)?;
        let vault_id = c.array()?;
        let disk_id = c.u32()?;
        let block_bytes = c.u32()?;
        let generation = c.u64()?;
        let disk_bytes = c.u64()?;
        let base_lsn = c.u64()?;
        let (data_offset, table_offset, chunk_count) = (c.u64()?, c.u64()?, c.u64()?);
        let table_crc = c.u32()?;
        c.zeros(BASE_HEADER_BYTES - 4 - c.position())?;
        let h = BaseHeader {
            vault_id,
            disk_id,
            block_bytes,
            generation,
            disk_bytes,
            base_lsn,
            table_crc,
        };
        if !block_bytes_ok(block_bytes) {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                36,
                format!("block size {block_bytes}"),
            ));
        }
        if disk_bytes > DISK_BYTES_MAX {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                48,
                format!("disk size {disk_bytes} over the limit"),
            ));
        }
        if data_offset != h.data_offset()
            || table_offset != h.table_offset()
            || chunk_count != h.chunk_count()
        {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                64,
                "layout fields disagree with the disk and block size",
            ));
        }
        Ok(h)
    }
}

const BASE_HEADER: &str = "base header";

/// Encodes one table page from up to [`TABLE_ENTRIES_PER_PAGE`] entries.
pub fn encode_table_page(page_index: u32, entries: &[ChunkSum], seed: u32) -> Vec<u8> {
    assert!(entries.len() <= TABLE_ENTRIES_PER_PAGE);
    let mut buf = Vec::with_capacity(TABLE_PAGE_BYTES);
    let mut p = Put::new(&mut buf);
    for e in entries {
        p.u32(e.crc).u32(if e.zero { CHUNK_ZERO } else { 0 });
    }
    p.zeros((TABLE_ENTRIES_PER_PAGE - entries.len()) * 8)
        .u32(page_index);
    seal_page(&mut buf, TABLE_PAGE_BYTES, seed);
    buf
}

/// Decodes one table page, which must hold `entry_count` entries and be page `page_index`.
pub fn decode_table_page(
    bytes: &[u8],
    page_index: u32,
    entry_count: usize,
    seed: u32,
) -> Result<Vec<ChunkSum>, DecodeError> {
    const WHAT: &str = "base checksum table page";
    if bytes.len() != TABLE_PAGE_BYTES || entry_count > TABLE_ENTRIES_PER_PAGE {
        return Err(DecodeError::new(
            DecodeErrorKind::Truncated,
            WHAT,
            0,
            "table page is not 4096 bytes",
        ));
    }
    check_page_crc(bytes, WHAT, seed)?;
    let mut c = Cursor::new(bytes, WHAT);
    let mut out = Vec::with_capacity(entry_count);
    for _ in 0..entry_count {
        let crc = c.u32()?;
        let flags = c.u32()?;
        if flags & !CHUNK_ZERO != 0 {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                c.position() - 4,
                format!("chunk flags {flags:#x}"),
            ));
        }
        out.push(ChunkSum {
            crc,
            zero: flags & CHUNK_ZERO != 0,
        });
    }
    c.zeros((TABLE_ENTRIES_PER_PAGE - entry_count) * 8)?;
    let stored_index = c.u32()?;
    if stored_index != page_index {
        return Err(c.error_at(
            DecodeErrorKind::Misplaced,
            4088,
            format!("table page {stored_index} found where page {page_index} belongs"),
        ));
    }
    Ok(out)
}

/// Folds one page's stored CRC into the running table CRC (start from the vault seed).
pub fn table_crc_update(running: u32, page: &[u8]) -> u32 {
    crate::crc32_seeded(running, &[&page[TABLE_PAGE_BYTES - 4..]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_header_round_trips_and_lays_out_the_file() {
        let h = BaseHeader {
            vault_id: [1; 16],
            disk_id: 2,
            block_bytes: 65536,
            generation: 1,
            disk_bytes: 10 * 65536 + 100,
            base_lsn: 0,
            table_crc: 77,
        };
        assert_eq!(BaseHeader::decode(&h.encode(5), 5).unwrap(), h);
        assert_eq!(h.chunk_count(), 11);
        assert_eq!(h.table_offset(), 4096 + 11 * 65536);
        assert_eq!(h.file_bytes(), h.table_offset() + 4096);
    }

    #[test]
    fn table_page_round_trips_and_rejects_a_page_in_the_wrong_place() {
        let entries: Vec<_> = (0..300)
            .map(|i| ChunkSum {
                crc: i * 3,
                zero: i % 2 == 0,
            })
            .collect();
        let page = encode_table_page(4, &entries, 9);
        assert_eq!(decode_table_page(&page, 4, 300, 9).unwrap(), entries);
        assert_eq!(
            decode_table_page(&page, 5, 300, 9).unwrap_err().kind,
            DecodeErrorKind::Misplaced
        );
        for i in 0..page.len() {
            let mut b = page.clone();
            b[i] ^= 4;
            assert!(
                decode_table_page(&b, 4, 300, 9).is_err(),
                "flip at {i} accepted"
            );
        }
    }
}
