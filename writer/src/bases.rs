//! [`Bases`]: the one writer of base images, used when a disk is added (seeded from an image or
//! all zero) and when compaction rolls a base forward.
//!
//! A base generation `bases/<disk>.<generation>.base` is written as: the disk's bytes at the
//! data offset (all-zero blocks left as holes), window by window; then the checksum table,
//! page by page; then the header, with one data sync that covers all of it. No manifest names
//! the file yet, so a crash anywhere leaves a leftover that recovery removes. Syncing `bases/`
//! is the caller's: once per file when seeding, once for all disks when compacting.
//!
//! Where the bytes come from is a [`BaseSource`]: an image (and the digest cache written in the
//! same pass, see [`ImageSource`]) or a reader's view of the disk at the new base (compaction).
//! Memory: one window of [`WINDOW_BYTES`] and one table page, whatever the disk size.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::VaultId;
use replog_format::base::{
    BASE_HEADER_BYTES, BaseHeader, ChunkSum, TABLE_ENTRIES_PER_PAGE, encode_table_page,
    table_crc_update,
};
use replog_format::digest::DigestHeader;
use replog_format::layout;
use replog_io::{File, OpenMode, Storage, WriteAt};

use crate::blocks::{BlockFacts, WINDOW_BYTES, window_facts, zero_facts};
use crate::digest::DigestWriter;
use crate::error::{Result, WriteError};

/// Where a base generation's bytes come from.
pub(crate) trait BaseSource {
    /// The checksum entries of the blocks of the window at disk offset `at`, one per block,
    /// with the window's bytes in `buf`. Blocks it reports zero are not written, so their bytes
    /// in `buf` need not be read.
    fn fill(&mut self, at: u64, buf: &mut [u8]) -> Result<Vec<ChunkSum>>;

    /// Called once the window's data was handed to the base file.
    fn written(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Which base generation to write.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BaseSpec {
    pub(crate) disk_id: u32,
    pub(crate) generation: u64,
    pub(crate) disk_bytes: u64,
    /// The LSN whose state of the disk the base holds.
    pub(crate) base_lsn: u64,
}

/// A base generation written and synced, not yet named by a manifest.
#[derive(Clone, Debug)]
pub(crate) struct WrittenBase {
    pub(crate) disk_id: u32,
    pub(crate) generation: u64,
    /// The CRC stored in its header, for the manifest.
    pub(crate) header_crc: u32,
    /// Its length (holes included).
    pub(crate) file_bytes: u64,
    pub(crate) path: PathBuf,
}

/// The base images of a vault; see the module documentation.
#[derive(Debug, Clone)]
pub(crate) struct Bases {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    vault_id: VaultId,
    block_bytes: u32,
    seed: u32,
}

impl Bases {
    /// The bases of the vault at `dir`, with `block_bytes` per checksum entry.
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        dir: &Path,
        vault_id: VaultId,
        block_bytes: u32,
        seed: u32,
    ) -> Bases {
        Bases {
            storage,
            dir: dir.to_path_buf(),
            vault_id,
            block_bytes,
            seed,
        }
    }

    /// Writes generation `spec.generation` of a new disk, seeded from `image` or all zero, and
    /// its digest cache valid at `valid_lsn`; `bases/` is synced before the cache is put in
    /// place. Returns the CRC stored in the base header, for the manifest.
    pub(crate) fn seed(
        &self,
        spec: BaseSpec,
        image: Option<(&dyn File, &Path)>,
        valid_lsn: u64,
    ) -> Result<u32> {
        let s = self.storage.as_ref();
        let mut digests = DigestWriter::create(s, &self.dir, spec.disk_id, self.seed)?;
        let mut source = ImageSource {
            image,
            block: self.block_bytes as usize,
            digests: &mut digests,
            window: Vec::new(),
        };
        let written = self.write(spec, &mut source)?;
        self.sync_dir()?;
        let digest_header = DigestHeader {
            vault_id: self.vault_id,
            disk_id: spec.disk_id,
            block_bytes: self.block_bytes,
            disk_bytes: spec.disk_bytes,
            valid_lsn,
            body_crc: 0,
        };
        digests.finish(s, digest_header, self.seed)?;
        Ok(written.header_crc)
    }

    /// Writes the base generation `spec` from `source`: data, table, header, one data sync.
    pub(crate) fn write(&self, spec: BaseSpec, source: &mut dyn BaseSource) -> Result<WrittenBase> {
        let path = layout::base_path(&self.dir, spec.disk_id, spec.generation);
        let file = self
            .storage
            .open(&path, OpenMode::CreateTruncate)
            .map_err(|e| WriteError::io(&path, None, "creating", e))?;
        let mut header = BaseHeader {
            vault_id: self.vault_id,
            disk_id: spec.disk_id,
            block_bytes: self.block_bytes,
            generation: spec.generation,
            disk_bytes: spec.disk_bytes,
            base_lsn: spec.base_lsn,
            table_crc: self.seed,
        };
        file.set_len(header.file_bytes())
            .map_err(|e| WriteError::io(&path, None, "sizing", e))?;
        let mut table = TableWriter {
            file: file.as_ref(),
            path: &path,
            entries: Vec::with_capacity(TABLE_ENTRIES_PER_PAGE),
            page_index: 0,
            seed: self.seed,
        };
        self.write_data(file.as_ref(), &path, &mut header, &mut table, source)?;
        table.finish(&mut header)?;
        let head = header.encode(self.seed);
        file.write_batch(
            &[WriteAt {
                offset: 0,
                data: &head,
            }],
            true,
        )
        .map_err(|e| WriteError::io(&path, Some(0), "writing and syncing", e))?;
        Ok(WrittenBase {
            disk_id: spec.disk_id,
            generation: spec.generation,
            header_crc: u32::from_le_bytes(
                head[BASE_HEADER_BYTES - 4..].try_into().expect("4 bytes"),
            ),
            file_bytes: header.file_bytes(),
            path,
        })
    }

    /// Writes the disk's non-zero blocks window by window and collects their checksum entries.
    fn write_data(
        &self,
        file: &dyn File,
        path: &Path,
        header: &mut BaseHeader,
        table: &mut TableWriter<'_>,
        source: &mut dyn BaseSource,
    ) -> Result<()> {
        let block = self.block_bytes as usize;
        let disk_bytes = header.disk_bytes;
        let mut window = vec![0u8; WINDOW_BYTES as usize];
        let mut at = 0u64;
        while at < disk_bytes {
            let len = (disk_bytes - at).min(WINDOW_BYTES) as usize;
            let buf = &mut window[..len];
            let sums = source.fill(at, buf)?;
            let mut writes: Vec<WriteAt<'_>> = Vec::new();
            let file_at = header.data_offset() + at;
            for (i, _) in sums.iter().enumerate().filter(|(_, sum)| !sum.zero) {
                let chunk = i * block..(i * block + block).min(len);
                nonzero_pages(file_at, &buf[chunk.clone()], chunk.start, &mut writes);
            }
            file.write_batch(&writes, false)
                .map_err(|e| WriteError::io(path, Some(header.data_offset() + at), "writing", e))?;
            for sum in sums {
                table.push(sum, header)?;
            }
            source.written()?;
            at += len as u64;
        }
        Ok(())
    }

    /// Syncs `bases/`, making the names of the files written durable.
    pub(crate) fn sync_dir(&self) -> Result<()> {
        let bases = self.dir.join(layout::BASES_DIR);
        self.storage
            .sync_dir(&bases)
            .map_err(|e| WriteError::io(&bases, None, "syncing the directory", e))
    }
}

/// A new disk's bytes: an image, read where it holds data, or all zero; the digests of its
/// blocks go to the disk's digest cache in the same pass.
struct ImageSource<'a> {
    image: Option<(&'a dyn File, &'a Path)>,
    block: usize,
    digests: &'a mut DigestWriter,
    /// The facts of the window last filled, whose digests go out once its data is written.
    window: Vec<BlockFacts>,
}

impl BaseSource for ImageSource<'_> {
    fn fill(&mut self, at: u64, buf: &mut [u8]) -> Result<Vec<ChunkSum>> {
        self.window = match self.image {
            // Holes are not read: their blocks are zero, and zero blocks are not written.
            Some((image, image_path)) => window_facts(image, image_path, buf, at, self.block)?,
            None => zero_facts(buf.len(), self.block),
        };
        Ok(self
            .window
            .iter()
            .map(|f| ChunkSum {
                crc: f.crc,
                zero: f.zero,
            })
            .collect())
    }

    fn written(&mut self) -> Result<()> {
        for f in &self.window {
            self.digests.push(f.digest)?;
        }
        Ok(())
    }
}

/// Collects table entries and writes each page when full.
struct TableWriter<'a> {
    file: &'a dyn File,
    path: &'a Path,
    entries: Vec<ChunkSum>,
    page_index: u32,
    seed: u32,
}

impl TableWriter<'_> {
    fn push(&mut self, sum: ChunkSum, header: &mut BaseHeader) -> Result<()> {
        self.entries.push(sum);
        if self.entries.len() == TABLE_ENTRIES_PER_PAGE {
            self.write_page(header)?;
        }
        Ok(())
    }

    fn finish(&mut self, header: &mut BaseHeader) -> Result<()> {
        if !self.entries.is_empty() {
            self.write_page(header)?;
        }
        Ok(())
    }

    fn write_page(&mut self, header: &mut BaseHeader) -> Result<()> {
        let page = encode_table_page(self.page_index, &self.entries, self.seed);
        let offset = header.table_offset() + u64::from(self.page_index) * page.len() as u64;
        self.file.write_all_at(&page, offset).map_err(|e| {
            WriteError::io(self.path, Some(offset), "writing the checksum table", e)
        })?;
        header.table_crc = table_crc_update(header.table_crc, &page);
        self.page_index += 1;
        self.entries.clear();
        Ok(())
    }
}

/// The file's page size for sparse writes: an all-zero page of a chunk is left a hole.
const PAGE_BYTES: usize = 4096;

/// Adds to `writes` the runs of `chunk` (which starts at byte `from` of a window written at file
/// offset `file_at`) that are not all zero, page by page, aligned to the file's pages: a chunk of
/// 64 KiB holding one small write costs one page of the base file, not 64 KiB. Holes read as
/// zeros, so the chunk's checksum holds either way.
fn nonzero_pages<'a>(file_at: u64, chunk: &'a [u8], from: usize, writes: &mut Vec<WriteAt<'a>>) {
    let mut at = 0;
    let mut run: Option<usize> = None;
    while at < chunk.len() {
        let offset = file_at + (from + at) as u64;
        let page_end = (offset / PAGE_BYTES as u64 + 1) * PAGE_BYTES as u64;
        let end = (at + (page_end - offset) as usize).min(chunk.len());
        let zero = replog_io::is_zero(&chunk[at..end]);
        match (zero, run) {
            (true, Some(start)) => {
                writes.push(WriteAt {
                    offset: file_at + (from + start) as u64,
                    data: &chunk[start..at],
                });
                run = None;
            }
            (false, None) => run = Some(at),
            _ => {}
        }
        at = end;
    }
    if let Some(start) = run {
        writes.push(WriteAt {
            offset: file_at + (from + start) as u64,
            data: &chunk[start..],
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(file_at: u64, chunk: &[u8], from: usize) -> Vec<(u64, usize)> {
        let mut writes = Vec::new();
        nonzero_pages(file_at, chunk, from, &mut writes);
        writes.iter().map(|w| (w.offset, w.data.len())).collect()
    }

    #[test]
    fn only_the_pages_of_a_chunk_that_hold_data_are_written() {
        let mut chunk = vec![0u8; 16 * PAGE_BYTES];
        assert!(runs(8192, &chunk, 0).is_empty());
        chunk[5] = 1; // page 0
        chunk[3 * PAGE_BYTES + 100] = 2; // page 3
        chunk[4 * PAGE_BYTES] = 3; // page 4, joined to page 3
        chunk[16 * PAGE_BYTES - 1] = 4; // the last page
        let p = PAGE_BYTES as u64;
        assert_eq!(
            runs(8192, &chunk, 2 * PAGE_BYTES),
            [
                (8192 + 2 * p, PAGE_BYTES),
                (8192 + 5 * p, 2 * PAGE_BYTES),
                (8192 + 17 * p, PAGE_BYTES)
            ]
        );
        // A chunk that starts inside a page: page boundaries are the file's.
        let mut odd = vec![0u8; 3 * PAGE_BYTES];
        odd[10] = 1;
        odd[PAGE_BYTES + 200] = 1;
        assert_eq!(runs(100, &odd, 0), [(100, PAGE_BYTES - 100 + PAGE_BYTES)]);
    }
}
