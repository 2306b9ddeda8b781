//! Block digest caches (`digests/<disk>.dig`): written sequentially while a disk is seeded or
//! ingested, read sequentially by the next ingest. Advisory: a missing or damaged cache costs
//! work, never correctness.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::digest::{DIGEST_BYTES, DIGEST_HEADER_BYTES, DigestHeader};
use replog_format::layout;
use replog_io::{File, OpenMode, Storage, WriteAt};
use xxhash_rust::xxh3::xxh3_128;

use crate::error::{Result, WriteError};

/// The digest of one block.
pub(crate) fn block_digest(block: &[u8]) -> u128 {
    xxh3_128(block)
}

const BUFFER_BYTES: usize = 1 << 20;

/// Suffix of a digest cache being written: `digests/<disk>.dig.tmp`.
pub(crate) const DIGEST_TMP_SUFFIX: &str = ".dig.tmp";

/// Streams digests to `digests/<disk>.dig.tmp`, then renames it into place.
#[derive(Debug)]
pub(crate) struct DigestWriter {
    file: Arc<dyn File>,
    tmp: PathBuf,
    offset: u64,
    buf: Vec<u8>,
    crc: crc32fast::Hasher,
}

impl DigestWriter {
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        disk_id: u32,
        seed: u32,
    ) -> Result<DigestWriter> {
        let tmp = layout::digest_path(dir, disk_id).with_extension(&DIGEST_TMP_SUFFIX[1..]);
        // A stale one (a run stopped before its rename; the writer lock keeps out any live one)
        // is removed and a new file created exclusively: whatever stands at the name, a
        // symbolic link included, is never opened, so no other file is ever written through it.
        match storage.remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(WriteError::io(&tmp, None, "removing the stale", e)),
        }
        let file = storage
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| WriteError::io(&tmp, None, "creating", e))?;
        Ok(DigestWriter {
            file,
            tmp,
            offset: DIGEST_HEADER_BYTES as u64,
            buf: Vec::with_capacity(BUFFER_BYTES),
            crc: crc32fast::Hasher::new_with_initial(seed),
        })
    }

    pub(crate) fn push(&mut self, digest: u128) -> Result<()> {
        let bytes = digest.to_le_bytes();
        self.crc.update(&bytes);
        self.buf.extend_from_slice(&bytes);
        if self.buf.len() >= BUFFER_BYTES {
            self.drain()
        } else {
            Ok(())
        }
    }

    fn drain(&mut self) -> Result<()> {
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| WriteError::io(&self.tmp, Some(self.offset), "writing", e))?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the header, syncs, and renames the cache into place (directory synced).
    pub(crate) fn finish(
        mut self,
        storage: &dyn Storage,
        mut header: DigestHeader,
        seed: u32,
    ) -> Result<()> {
        self.drain()?;
        let expected = DIGEST_HEADER_BYTES as u64 + header.block_count() * DIGEST_BYTES as u64;
        assert_eq!(self.offset, expected, "one digest per block");
        header.body_crc = self.crc.clone().finalize();
        self.file
            .write_batch(
                &[WriteAt {
                    offset: 0,
                    data: &header.encode(seed),
                }],
                true,
            )
            .map_err(|e| WriteError::io(&self.tmp, Some(0), "writing and syncing", e))?;
        let dir = self
            .tmp
            .parent()
            .expect("digests live in a directory")
            .to_path_buf();
        let target = self.tmp.with_extension("");
        storage
            .rename(&self.tmp, &target)
            .map_err(|e| WriteError::io(&target, None, "renaming into place", e))?;
        storage
            .sync_dir(&dir)
            .map_err(|e| WriteError::io(&dir, None, "syncing the directory", e))
    }
}

/// Reads a digest cache sequentially, checking its body CRC at the end.
#[derive(Debug)]
pub(crate) struct DigestReader {
    file: Arc<dyn File>,
    pub(crate) header: DigestHeader,
    offset: u64,
    crc: crc32fast::Hasher,
}

impl DigestReader {
    /// The cache of `disk_id` if it exists and its header is valid for this disk; `None`
    /// otherwise (the caller then treats every block as changed). A cache of a smaller size
    /// (the disk grew since) is valid for the blocks it has: past them, and in its last block if
    /// that was partial, [`DigestReader::next`] runs short, and the caller treats those blocks
    /// as changed.
    pub(crate) fn open(
        storage: &dyn Storage,
        dir: &Path,
        disk_id: u32,
        seed: u32,
        disk_bytes: u64,
        block_bytes: u32,
    ) -> Option<DigestReader> {
        let path = layout::digest_path(dir, disk_id);
        let file = storage.open(&path, OpenMode::Read).ok()?;
        let mut head = vec![0u8; DIGEST_HEADER_BYTES];
        file.read_exact_at(&mut head, 0).ok()?;
        let header = DigestHeader::decode(&head, seed).ok()?;
        let fits = header.disk_id == disk_id
            && header.disk_bytes <= disk_bytes
            && header.block_bytes == block_bytes;
        fits.then(|| DigestReader {
            file,
            header,
            offset: DIGEST_HEADER_BYTES as u64,
            crc: crc32fast::Hasher::new_with_initial(seed),
        })
    }

    /// The next `count` digests, fewer past the end of the cache's blocks; a read failure
    /// yields `None` (treated as changed).
    pub(crate) fn next(&mut self, count: usize) -> Option<Vec<u128>> {
        let end = DIGEST_HEADER_BYTES as u64 + self.header.block_count() * DIGEST_BYTES as u64;
        let left = (end.saturating_sub(self.offset) / DIGEST_BYTES as u64) as usize;
        let mut bytes = vec![0u8; count.min(left) * DIGEST_BYTES];
        self.file.read_exact_at(&mut bytes, self.offset).ok()?;
        self.offset += bytes.len() as u64;
        self.crc.update(&bytes);
        Some(
            bytes
                .chunks_exact(DIGEST_BYTES)
                .map(|c| u128::from_le_bytes(c.try_into().expect("16 bytes")))
                .collect(),
        )
    }

    /// Whether every digest read matched the body CRC.
    pub(crate) fn body_intact(&self) -> bool {
        self.crc.clone().finalize() == self.header.body_crc
    }
}
