//! Writing base images: the disk's bytes at offset 4096 + i (holes where zero), then the
//! checksum table, then the header, then one data sync. The digest cache is written in the same
//! pass. Memory is one window of blocks, whatever the disk size.

use std::path::Path;

use rayon::prelude::*;
use replog_format::base::{
    BASE_HEADER_BYTES, BaseHeader, ChunkSum, TABLE_ENTRIES_PER_PAGE, encode_table_page,
    table_crc_update,
};
use replog_format::digest::DigestHeader;
use replog_format::layout;
use replog_io::{File, OpenMode, WriteAt};

use crate::digest::{DigestWriter, block_digest};
use crate::error::{Result, WriteError};
use crate::sparse::{Window, read_window};
use crate::writer::Writer;

/// Bytes read from the source image at a time.
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

/// Whether every byte is zero.
pub(crate) fn is_zero(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(16);
    words
        .by_ref()
        .all(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")) == 0)
        && words.remainder().iter().all(|&b| b == 0)
}

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
fn zero_facts(len: usize, block_bytes: usize) -> Vec<BlockFacts> {
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

/// Writes `bases/<disk>.<generation>.base` and the digest cache for a disk of `disk_bytes`,
/// seeded from `image` or all zero. Returns the CRC stored in the base header, for the manifest.
pub(crate) fn write_base(
    w: &Writer,
    disk_id: u32,
    generation: u64,
    disk_bytes: u64,
    image: Option<(&dyn File, &Path)>,
) -> Result<u32> {
    let s = w.storage.as_ref();
    let block = w.header.block_bytes as usize;
    let path = layout::base_path(&w.dir, disk_id, generation);
    let file = s
        .open(&path, OpenMode::CreateTruncate)
        .map_err(|e| WriteError::io(&path, None, "creating", e))?;
    let mut header = BaseHeader {
        vault_id: w.header.vault_id,
        disk_id,
        block_bytes: w.header.block_bytes,
        generation,
        disk_bytes,
        base_lsn: w.manifest.base_lsn,
        table_crc: w.seed,
    };
    file.set_len(header.file_bytes())
        .map_err(|e| WriteError::io(&path, None, "sizing", e))?;
    let mut digests = DigestWriter::create(s, &w.dir, disk_id, w.seed)?;
    let mut table = Vec::with_capacity(TABLE_ENTRIES_PER_PAGE);
    let mut page_index = 0u32;
    let mut window = vec![0u8; WINDOW_BYTES as usize];
    let mut at = 0u64;
    while at < disk_bytes {
        let len = (disk_bytes - at).min(WINDOW_BYTES) as usize;
        let buf = &mut window[..len];
        let facts = match image {
            // Holes are not read: their blocks are zero, and zero blocks are not written.
            Some((img, img_path)) => window_facts(img, img_path, buf, at, block)?,
            None => zero_facts(len, block),
        };
        let writes: Vec<WriteAt<'_>> = facts
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.zero)
            .map(|(i, _)| {
                let start = i * block;
                WriteAt {
                    offset: header.data_offset() + at + start as u64,
                    data: &buf[start..(start + block).min(len)],
                }
            })
            .collect();
        file.write_batch(&writes, false)
            .map_err(|e| WriteError::io(&path, Some(header.data_offset() + at), "writing", e))?;
        for f in &facts {
            digests.push(f.digest)?;
            table.push(ChunkSum {
                crc: f.crc,
                zero: f.zero,
            });
            if table.len() == TABLE_ENTRIES_PER_PAGE {
                write_table_page(
                    &file,
                    &path,
                    &mut header,
                    &mut page_index,
                    &mut table,
                    w.seed,
                )?;
            }
        }
        at += len as u64;
    }
    if !table.is_empty() {
        write_table_page(
            &file,
            &path,
            &mut header,
            &mut page_index,
            &mut table,
            w.seed,
        )?;
    }
    let head = header.encode(w.seed);
    file.write_batch(
        &[WriteAt {
            offset: 0,
            data: &head,
        }],
        true,
    )
    .map_err(|e| WriteError::io(&path, Some(0), "writing and syncing", e))?;
    let bases = w.dir.join(layout::BASES_DIR);
    s.sync_dir(&bases)
        .map_err(|e| WriteError::io(&bases, None, "syncing the directory", e))?;
    let digest_header = DigestHeader {
        vault_id: w.header.vault_id,
        disk_id,
        block_bytes: w.header.block_bytes,
        disk_bytes,
        valid_lsn: w.next_lsn - 1,
        body_crc: 0,
    };
    digests.finish(s, digest_header, w.seed)?;
    Ok(u32::from_le_bytes(
        head[BASE_HEADER_BYTES - 4..].try_into().expect("4 bytes"),
    ))
}

fn write_table_page(
    file: &std::sync::Arc<dyn File>,
    path: &Path,
    header: &mut BaseHeader,
    page_index: &mut u32,
    table: &mut Vec<ChunkSum>,
    seed: u32,
) -> Result<()> {
    let page = encode_table_page(*page_index, table, seed);
    let offset = header.table_offset() + u64::from(*page_index) * page.len() as u64;
    file.write_all_at(&page, offset)
        .map_err(|e| WriteError::io(path, Some(offset), "writing the checksum table", e))?;
    header.table_crc = table_crc_update(header.table_crc, &page);
    *page_index += 1;
    table.clear();
    Ok(())
}
