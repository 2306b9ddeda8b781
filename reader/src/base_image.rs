//! One disk's base image as the reader uses it: the header checked against the manifest, then
//! chunks read whole and checked against the checksum table, whose pages are read one at a time
//! when needed (a table is proportional to the disk; the reader never holds all of it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::base::{
    self, BASE_HEADER_BYTES, BaseHeader, ChunkSum, TABLE_ENTRIES_PER_PAGE, TABLE_PAGE_BYTES,
};
use replog_format::layout;
use replog_format::manifest::DiskEntry;
use replog_io::{File, OpenMode, Storage};

use crate::error::{ReadError, Result};

/// An open, checked base image.
#[derive(Debug)]
pub(crate) struct BaseImage {
    /// `bases/<disk>.<gen>.base`, relative to the vault, for messages.
    pub rel_path: PathBuf,
    file: Arc<dyn File>,
    /// The decoded header.
    pub header: BaseHeader,
    seed: u32,
}

/// The last table page a reader decoded.
#[derive(Debug, Default)]
pub(crate) struct TablePageCache {
    page: Option<(u64, Vec<ChunkSum>)>,
}

/// How the base header in `page`, decoded as `header`, differs from the one the manifest
/// names for `disk`: its CRC, its vault, or its disk, size and generation. The base holds the
/// disk as of the base LSN (or as added), so once a disk was resized (`resized`) its base may be
/// smaller than the manifest's current size; the resize records after it say by how much.
fn manifest_mismatch(
    page: &[u8],
    header: &BaseHeader,
    disk: &DiskEntry,
    vault_id: &replog_format::VaultId,
    resized: bool,
) -> Option<String> {
    let size_ok = if resized {
        header.disk_bytes <= disk.disk_bytes
    } else {
        header.disk_bytes == disk.disk_bytes
    };
    let stored_crc = u32::from_le_bytes(
        page[BASE_HEADER_BYTES - 4..]
            .try_into()
            .expect("four bytes"),
    );
    if stored_crc != disk.base_header_crc {
        Some(format!(
            "header CRC {stored_crc:#010x}, the manifest expects {:#010x}",
            disk.base_header_crc
        ))
    } else if header.vault_id != *vault_id {
        Some("a base image of another vault".to_owned())
    } else if (header.disk_id, header.generation) != (disk.disk_id, disk.base_generation)
        || !size_ok
    {
        Some(format!(
            "disk {} of {} bytes, generation {}; the manifest expects disk {} of {} bytes, generation {}",
            header.disk_id,
            header.disk_bytes,
            header.generation,
            disk.disk_id,
            disk.disk_bytes,
            disk.base_generation
        ))
    } else {
        None
    }
}

/// The size of `disk`'s base as its header says, for checks that walk the journal from it
/// (`verify`, a checkpoint's check). A base that does not open is reported by the check of the
/// bases; here the manifest's size stands in for it, so that damage is not reported twice.
pub(crate) fn base_bytes_or_manifest(
    storage: &dyn Storage,
    dir: &Path,
    manifest: &replog_format::manifest::Manifest,
    disk: &DiskEntry,
    seed: u32,
) -> u64 {
    BaseImage::open(
        storage,
        dir,
        disk,
        &manifest.vault_id,
        seed,
        manifest.resized,
    )
    .map_or(disk.disk_bytes, |b| b.header.disk_bytes)
}

impl BaseImage {
    /// Opens the base of `disk` and checks that its header is the one the manifest names.
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        disk: &DiskEntry,
        vault_id: &replog_format::VaultId,
        seed: u32,
        resized: bool,
    ) -> Result<BaseImage> {
        let path = layout::base_path(dir, disk.disk_id, disk.base_generation);
        let rel_path = path
            .strip_prefix(dir)
            .map_or_else(|_| path.clone(), Path::to_path_buf);
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| ReadError::io(&rel_path, "open the base image", e))?;
        let mut page = vec![0u8; BASE_HEADER_BYTES];
        file.read_exact_at(&mut page, 0)
            .map_err(|e| ReadError::read(&rel_path, 0, BASE_HEADER_BYTES as u64, e))?;
        let header =
            BaseHeader::decode(&page, seed).map_err(|e| ReadError::decode(&rel_path, 0, e))?;
        let mismatch = manifest_mismatch(&page, &header, disk, vault_id, resized);
        if let Some(found) = mismatch {
            return Err(ReadError::damaged(
                &rel_path,
                0,
                format!("the base header does not match the manifest: {found}"),
            ));
        }
        let file_bytes = file
            .len()
            .map_err(|e| ReadError::io(&rel_path, "stat", e))?;
        if file_bytes < header.file_bytes() {
            return Err(ReadError::damaged(
                &rel_path,
                file_bytes,
                format!(
                    "the base image is {file_bytes} bytes, its header needs {}",
                    header.file_bytes()
                ),
            ));
        }
        Ok(BaseImage {
            rel_path,
            file,
            header,
            seed,
        })
    }

    /// The base file, for kernel copies of verified ranges.
    pub fn file(&self) -> &dyn File {
        self.file.as_ref()
    }

    /// The chunk size.
    pub fn block_bytes(&self) -> u64 {
        u64::from(self.header.block_bytes)
    }

    /// The disk bytes `[start, end)` chunk `k` covers.
    pub fn chunk_range(&self, k: u64) -> (u64, u64) {
        let start = k * self.block_bytes();
        (
            start,
            (start + self.block_bytes()).min(self.header.disk_bytes),
        )
    }

    /// The checksum table entry of chunk `k`, from the cached page or by reading its page.
    pub fn chunk_sum(&self, k: u64, cache: &mut TablePageCache) -> Result<ChunkSum> {
        assert!(k < self.header.chunk_count(), "chunk {k} past the disk");
        let per_page = TABLE_ENTRIES_PER_PAGE as u64;
        let page_index = k / per_page;
        if !matches!(&cache.page, Some((p, _)) if *p == page_index) {
            cache.page = None;
            let entries =
                (self.header.chunk_count() - page_index * per_page).min(per_page) as usize;
            let offset = self.header.table_offset() + page_index * TABLE_PAGE_BYTES as u64;
            let mut page = vec![0u8; TABLE_PAGE_BYTES];
            self.file
                .read_exact_at(&mut page, offset)
                .map_err(|e| ReadError::read(&self.rel_path, offset, TABLE_PAGE_BYTES as u64, e))?;
            let sums = base::decode_table_page(&page, page_index as u32, entries, self.seed)
                .map_err(|e| ReadError::decode(&self.rel_path, offset, e))?;
            cache.page = Some((page_index, sums));
        }
        let (_, sums) = cache.page.as_ref().expect("the page was just loaded");
        Ok(sums[(k - page_index * per_page) as usize])
    }

    /// Reads chunk `k` whole into `buf` and checks it against `sum`.
    pub fn read_chunk(&self, k: u64, sum: ChunkSum, buf: &mut Vec<u8>) -> Result<()> {
        self.read_chunks(k, &[sum], buf)
    }

    /// Reads the consecutive chunks `first..first + sums.len()`, none of them stored as a hole,
    /// with one read into `buf` (they lie one after another in the file), and checks each
    /// against its sum.
    pub fn read_chunks(&self, first: u64, sums: &[ChunkSum], buf: &mut Vec<u8>) -> Result<()> {
        let (start, _) = self.chunk_range(first);
        let (_, end) = self.chunk_range(first + sums.len() as u64 - 1);
        let offset = self.header.data_offset() + start;
        buf.resize((end - start) as usize, 0);
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| ReadError::read(&self.rel_path, offset, end - start, e))?;
        let block = self.block_bytes() as usize;
        for ((k, sum), data) in (first..).zip(sums).zip(buf.chunks(block)) {
            let actual = crc32fast::hash(data);
            if actual != sum.crc {
                let (start, end) = self.chunk_range(k);
                let offset = self.header.data_offset() + start;
                return Err(ReadError::damaged(
                    &self.rel_path,
                    offset,
                    format!(
                        "chunk {k} (disk bytes {start}..{end}) at byte {offset} fails its \
                         checksum (stored {:#010x}, computed {actual:#010x})",
                        sum.crc
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The length of the base file, for statistics.
    pub fn file_bytes(&self) -> Result<u64> {
        self.file
            .len()
            .map_err(|e| ReadError::io(&self.rel_path, "stat", e))
    }
}
