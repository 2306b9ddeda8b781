//! [`CheckpointIndex`]: a checkpoint searched in place. Opening one reads and checks its header
//! page and its directory (at most 32 KiB: 1024 disks); every piece block is read only when a
//! lookup or an iteration reaches it, with positional reads, and is checksum-verified then.
//!
//! Memory: the directory (32 bytes a disk), a block cache of at most [`CACHE_BYTES_MAX`]
//! (decoded blocks, least recently used evicted first), and for each [`Pieces`] iterator one
//! read-ahead buffer of [`READ_AHEAD_BLOCKS`] blocks (64 KiB) plus one decoded block. Nothing
//! grows with the number of pieces.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use replog_format::VaultId;
use replog_format::checkpoint::{
    BLOCK_BYTES, BlockTrailer, CHECKPOINT_HEADER_BYTES, CheckpointHeader, CheckpointPiece,
    DirectoryEntry, PIECES_PER_BLOCK, blocks_for, decode_block, decode_directory,
};
use replog_format::layout;
use replog_io::{File, OpenMode, Storage};

use crate::error::{ReadError, Result};

/// Most bytes the block cache of one index holds.
pub const CACHE_BYTES_MAX: usize = 4 << 20;
/// Blocks an iterator reads at a time.
pub const READ_AHEAD_BLOCKS: usize = 16;

/// The bytes one cached block costs: its decoded pieces and the map entry.
const CACHED_BLOCK_BYTES: usize = PIECES_PER_BLOCK * std::mem::size_of::<CheckpointPiece>() + 64;
/// Blocks the cache holds at most.
const CACHE_BLOCKS_MAX: usize = CACHE_BYTES_MAX / CACHED_BLOCK_BYTES;

/// A checkpoint file, opened for lookups and ordered iteration without loading it.
#[derive(Debug)]
pub struct CheckpointIndex {
    file: Arc<dyn File>,
    rel: PathBuf,
    seed: u32,
    header: CheckpointHeader,
    disks: Vec<DirectoryEntry>,
    cache: Mutex<BlockCache>,
}

/// What the cache holds and has done, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blocks held.
    pub blocks: usize,
    /// Bytes they cost, at most [`CACHE_BYTES_MAX`].
    pub bytes: usize,
    /// Blocks read from the file (and verified) by lookups.
    pub reads: u64,
    /// Lookups' block accesses the cache served.
    pub hits: u64,
}

#[derive(Debug, Default)]
struct BlockCache {
    blocks: HashMap<u64, (Arc<[CheckpointPiece]>, u64)>,
    tick: u64,
    reads: u64,
    hits: u64,
}

impl BlockCache {
    fn get(&mut self, block: u64) -> Option<Arc<[CheckpointPiece]>> {
        self.tick += 1;
        let tick = self.tick;
        let (pieces, used) = self.blocks.get_mut(&block)?;
        *used = tick;
        self.hits += 1;
        Some(pieces.clone())
    }

    fn put(&mut self, block: u64, pieces: Arc<[CheckpointPiece]>) {
        if self.blocks.len() >= CACHE_BLOCKS_MAX {
            // A scan of at most ~900 entries per miss, small beside the read it follows.
            let oldest = self.blocks.iter().min_by_key(|(_, (_, used))| *used);
            if let Some((&oldest, _)) = oldest {
                self.blocks.remove(&oldest);
            }
        }
        self.reads += 1;
        self.blocks.insert(block, (pieces, self.tick));
    }
}

impl CheckpointIndex {
    /// Opens checkpoint `lsn` of the vault in `dir` (whose id is `vault_id` and CRC seed
    /// `seed`): reads and checks its header page and directory. Blocks are checked as they are
    /// read.
    pub fn open(
        storage: &dyn Storage,
        dir: &Path,
        vault_id: VaultId,
        seed: u32,
        lsn: u64,
    ) -> Result<CheckpointIndex> {
        let path = layout::checkpoint_path(dir, lsn);
        let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| ReadError::io(&rel, "open the checkpoint", e))?;
        let mut page = vec![0u8; CHECKPOINT_HEADER_BYTES];
        file.read_exact_at(&mut page, 0)
            .map_err(|e| ReadError::read(&rel, 0, page.len() as u64, e))?;
        let header =
            CheckpointHeader::decode(&page, seed).map_err(|e| ReadError::decode(&rel, 0, e))?;
        if header.vault_id != vault_id {
            return Err(ReadError::damaged(&rel, 16, "it belongs to another vault"));
        }
        if header.lsn != lsn {
            return Err(ReadError::damaged(
                &rel,
                32,
                format!("it is for LSN {}, its name says LSN {lsn}", header.lsn),
            ));
        }
        let len = file
            .len()
            .map_err(|e| ReadError::io(&rel, "find the length of", e))?;
        if len != header.file_bytes() {
            return Err(ReadError::damaged(
                &rel,
                len.min(header.file_bytes()),
                format!(
                    "the file is {len} bytes, its header promises {}",
                    header.file_bytes()
                ),
            ));
        }
        let at = CHECKPOINT_HEADER_BYTES as u64;
        let mut directory = vec![0u8; (header.block_offset(0) - at) as usize];
        file.read_exact_at(&mut directory, at)
            .map_err(|e| ReadError::read(&rel, at, directory.len() as u64, e))?;
        let disks = decode_directory(&directory, &header, seed)
            .map_err(|e| ReadError::decode(&rel, at, e))?;
        Ok(CheckpointIndex {
            file,
            rel,
            seed,
            header,
            disks,
            cache: Mutex::new(BlockCache::default()),
        })
    }

    /// Opens checkpoint `lsn` of `vault`; see [`CheckpointIndex::open`].
    pub fn open_in(vault: &crate::Vault, lsn: u64) -> Result<CheckpointIndex> {
        let inner = &vault.inner;
        CheckpointIndex::open(
            inner.storage.as_ref(),
            &inner.dir,
            inner.header.vault_id,
            inner.seed,
            lsn,
        )
    }

    /// The header.
    pub fn header(&self) -> &CheckpointHeader {
        &self.header
    }

    /// Every record with an LSN up to this one is in the index.
    pub fn lsn(&self) -> u64 {
        self.header.lsn
    }

    /// The file's path, relative to the vault directory.
    pub fn path(&self) -> &Path {
        &self.rel
    }

    /// The disks, in increasing id: size at the checkpoint's LSN and piece count of each.
    pub fn disks(&self) -> &[DirectoryEntry] {
        &self.disks
    }

    /// The directory entry of disk `disk_id`; `None` if the checkpoint does not hold it (it
    /// was added later: it reads from its base).
    pub fn disk(&self, disk_id: u32) -> Option<&DirectoryEntry> {
        self.disks
            .binary_search_by_key(&disk_id, |d| d.disk_id)
            .ok()
            .map(|i| &self.disks[i])
    }

    /// The piece of disk `disk_id` that covers byte `offset`, or else the first one after it;
    /// `None` if no piece ends after `offset` (or the disk is not in the checkpoint). A binary
    /// search over the disk's blocks, then within one block: at most `log2(blocks) + 1` block
    /// accesses, each served by the cache or one verified 4096-byte read.
    pub fn lookup(&self, disk_id: u32, offset: u64) -> Result<Option<CheckpointPiece>> {
        let Some(entry) = self.disk(disk_id) else {
            return Ok(None);
        };
        let Some((_, pieces)) = self.block_ending_after(entry, offset)? else {
            return Ok(None);
        };
        let i = pieces.partition_point(|p| p.start + p.len <= offset);
        Ok(pieces.get(i).copied())
    }

    /// The pieces of disk `disk_id` that overlap `range`, in disk order, whole (not clipped to
    /// the range). Each block is read and verified once, [`READ_AHEAD_BLOCKS`] at a time.
    pub fn pieces(&self, disk_id: u32, range: Range<u64>) -> Result<Pieces<'_>> {
        let mut it = Pieces {
            index: self,
            entry: None,
            next_block: 0,
            buf: Vec::new(),
            buf_block: 0,
            decoded: Vec::new(),
            pos: 0,
            end: range.end,
            prev_end: 0,
            done: true,
        };
        let Some(entry) = self.disk(disk_id).copied() else {
            return Ok(it);
        };
        if range.start >= range.end {
            return Ok(it);
        }
        if let Some((block, pieces)) = self.block_ending_after(&entry, range.start)? {
            it.pos = pieces.partition_point(|p| p.start + p.len <= range.start);
            it.decoded.extend_from_slice(&pieces);
            it.next_block = block + 1;
            it.entry = Some(entry);
            it.done = false;
        }
        Ok(it)
    }

    /// What the block cache holds and did.
    pub fn cache_stats(&self) -> CacheStats {
        let cache = self.cache.lock().expect("the cache lock is never poisoned");
        CacheStats {
            blocks: cache.blocks.len(),
            bytes: cache.blocks.len() * CACHED_BLOCK_BYTES,
            reads: cache.reads,
            hits: cache.hits,
        }
    }

    /// The first block of `entry` whose last piece ends after `offset`, by binary search.
    fn block_ending_after(
        &self,
        entry: &DirectoryEntry,
        offset: u64,
    ) -> Result<Option<(u64, Arc<[CheckpointPiece]>)>> {
        let blocks = blocks_for(entry.piece_count);
        let (mut lo, mut hi) = (0, blocks);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let pieces = self.block(entry, mid)?;
            let last = pieces.last().expect("a block holds at least one piece");
            if last.start + last.len <= offset {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == blocks {
            return Ok(None);
        }
        Ok(Some((lo, self.block(entry, lo)?)))
    }

    /// Block `block` of disk `entry`, from the cache or read and verified.
    fn block(&self, entry: &DirectoryEntry, block: u64) -> Result<Arc<[CheckpointPiece]>> {
        let trailer = BlockTrailer::of(entry, self.header.lsn, block);
        let mut cache = self.cache.lock().expect("the cache lock is never poisoned");
        if let Some(pieces) = cache.get(trailer.block_index) {
            return Ok(pieces);
        }
        let mut bytes = vec![0u8; BLOCK_BYTES];
        let at = self.header.block_offset(trailer.block_index);
        self.file
            .read_exact_at(&mut bytes, at)
            .map_err(|e| ReadError::read(&self.rel, at, BLOCK_BYTES as u64, e))?;
        let mut pieces = Vec::with_capacity(PIECES_PER_BLOCK);
        self.decode(&bytes, &trailer, entry, at, &mut pieces)?;
        let pieces: Arc<[CheckpointPiece]> = pieces.into();
        cache.put(trailer.block_index, pieces.clone());
        Ok(pieces)
    }

    fn decode(
        &self,
        bytes: &[u8],
        trailer: &BlockTrailer,
        entry: &DirectoryEntry,
        at: u64,
        out: &mut Vec<CheckpointPiece>,
    ) -> Result<()> {
        decode_block(
            bytes,
            &self.header,
            trailer,
            entry.disk_bytes,
            self.seed,
            out,
        )
        .map_err(|e| ReadError::decode(&self.rel, at, e))
    }
}

/// The pieces of one disk overlapping a range, in disk order; see [`CheckpointIndex::pieces`].
/// After an error it ends.
#[derive(Debug)]
pub struct Pieces<'a> {
    index: &'a CheckpointIndex,
    entry: Option<DirectoryEntry>,
    /// The disk's next block to decode, counted from its first.
    next_block: u64,
    /// Blocks read ahead, the first being `buf_block`.
    buf: Vec<u8>,
    buf_block: u64,
    decoded: Vec<CheckpointPiece>,
    pos: usize,
    end: u64,
    /// Where the last piece returned ends: the next must not start before it.
    prev_end: u64,
    done: bool,
}

impl Pieces<'_> {
    /// The file offset of the unit of the piece returned last: where damage it shows is.
    pub fn last_offset(&self) -> u64 {
        let Some(entry) = self.entry else {
            return 0;
        };
        let block = entry.first_block + self.next_block.saturating_sub(1);
        let slot = self.pos.saturating_sub(1) * replog_format::checkpoint::UNIT_BYTES;
        self.index.header.block_offset(block) + slot as u64
    }

    /// Decodes the next block into `decoded`, reading ahead when the buffer is used up; false
    /// at the disk's last block.
    fn next_block(&mut self) -> Result<bool> {
        let entry = self.entry.expect("an iterator with blocks has a disk");
        let blocks = blocks_for(entry.piece_count);
        if self.next_block >= blocks {
            return Ok(false);
        }
        let header = &self.index.header;
        let in_buf = self.next_block - self.buf_block;
        if self.buf.is_empty() || in_buf >= (self.buf.len() / BLOCK_BYTES) as u64 {
            let count = (blocks - self.next_block).min(READ_AHEAD_BLOCKS as u64) as usize;
            self.buf.resize(count * BLOCK_BYTES, 0);
            let at = header.block_offset(entry.first_block + self.next_block);
            self.index
                .file
                .read_exact_at(&mut self.buf, at)
                .map_err(|e| ReadError::read(&self.index.rel, at, self.buf.len() as u64, e))?;
            self.buf_block = self.next_block;
        }
        let i = (self.next_block - self.buf_block) as usize * BLOCK_BYTES;
        let trailer = BlockTrailer::of(&entry, header.lsn, self.next_block);
        let at = header.block_offset(trailer.block_index);
        let bytes = &self.buf[i..i + BLOCK_BYTES];
        self.index
            .decode(bytes, &trailer, &entry, at, &mut self.decoded)?;
        self.next_block += 1;
        self.pos = 0;
        Ok(true)
    }

    fn advance(&mut self) -> Result<Option<CheckpointPiece>> {
        if self.pos == self.decoded.len() && !self.next_block()? {
            return Ok(None);
        }
        let piece = self.decoded[self.pos];
        self.pos += 1;
        if piece.start < self.prev_end {
            let entry = self.entry.expect("an iterator with blocks has a disk");
            let block = entry.first_block + self.next_block - 1;
            return Err(ReadError::damaged(
                &self.index.rel,
                self.index.header.block_offset(block),
                format!(
                    "the piece at byte {} of disk {} starts before the piece before it ends (byte {})",
                    piece.start, entry.disk_id, self.prev_end
                ),
            ));
        }
        if piece.start >= self.end {
            return Ok(None);
        }
        self.prev_end = piece.start + piece.len;
        Ok(Some(piece))
    }
}

impl Iterator for Pieces<'_> {
    type Item = Result<CheckpointPiece>;

    fn next(&mut self) -> Option<Result<CheckpointPiece>> {
        if self.done {
            return None;
        }
        let next = self.advance();
        if !matches!(next, Ok(Some(_))) {
            self.done = true;
        }
        next.transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_format::checkpoint::{CheckpointDisk, PieceSource, RecordPiece, encode_file};
    use replog_format::layout::INDEX_DIR;

    const VAULT: VaultId = [3; 16];
    const SEED: u32 = 77;
    const LSN: u64 = 1 << 20;

    /// A disk of `count` pieces with gaps between them, zero and record pieces alternating
    /// irregularly; deterministic in `salt`.
    fn disk(disk_id: u32, count: u64, salt: u64) -> CheckpointDisk {
        let mut pieces = Vec::new();
        let mut at = 0u64;
        for i in 0..count {
            let h = (i ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            at += h % 3 * 512;
            let len = 512 * (1 + h % 4);
            let source = if h.is_multiple_of(5) {
                PieceSource::Zero
            } else {
                PieceSource::Record(RecordPiece {
                    segment_id: 1 + i % 7,
                    record_offset: 4096 + i * 8192,
                    lsn: 1 + i,
                    length: 8192,
                    stored_len: 8192,
                    record_crc: h as u32,
                    flags: 0,
                    data_offset: (h % 2 * 512) as u32,
                })
            };
            pieces.push(CheckpointPiece {
                start: at + 512,
                len,
                source,
            });
            at += 512 + len;
        }
        CheckpointDisk {
            disk_id,
            disk_bytes: at + 4096,
            pieces,
        }
    }

    fn stored(disks: &[CheckpointDisk]) -> (tempfile::TempDir, Arc<dyn Storage>) {
        let tmp = tempfile::tempdir().unwrap();
        let storage = replog_io::backend("sync").unwrap();
        storage.create_dir_all(&tmp.path().join(INDEX_DIR)).unwrap();
        let bytes = encode_file(VAULT, LSN, 9, disks, SEED);
        let f = storage
            .open(
                &layout::checkpoint_path(tmp.path(), LSN),
                OpenMode::CreateNew,
            )
            .unwrap();
        f.write_all_at(&bytes, 0).unwrap();
        (tmp, storage)
    }

    fn expected_lookup(pieces: &[CheckpointPiece], offset: u64) -> Option<CheckpointPiece> {
        pieces.iter().find(|p| p.start + p.len > offset).copied()
    }

    #[test]
    fn lookups_and_ranges_agree_with_the_pieces_and_the_cache_stays_bounded() {
        // About 1.4 times as many blocks as the cache holds.
        let count = (CACHE_BLOCKS_MAX * PIECES_PER_BLOCK) as u64 * 7 / 5;
        let disks = [disk(1, 5, 1), disk(4, count, 2), disk(9, 0, 3)];
        let (tmp, storage) = stored(&disks);
        let index = CheckpointIndex::open(storage.as_ref(), tmp.path(), VAULT, SEED, LSN).unwrap();
        assert_eq!(index.disks().len(), 3);
        let big = &disks[1];
        let mut rng = 0x1234_5678u64;
        let mut next = |n: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % n
        };
        for _ in 0..4000 {
            let offset = next(big.disk_bytes + 1024);
            assert_eq!(
                index.lookup(4, offset).unwrap(),
                expected_lookup(&big.pieces, offset),
                "offset {offset}"
            );
            let stats = index.cache_stats();
            assert!(stats.bytes <= CACHE_BYTES_MAX, "{stats:?}");
        }
        let stats = index.cache_stats();
        assert!(
            stats.blocks == CACHE_BLOCKS_MAX && stats.hits > 0,
            "{stats:?}"
        );
        for _ in 0..50 {
            let a = next(big.disk_bytes);
            let b = a + next(200_000);
            let got: Vec<_> = index.pieces(4, a..b).unwrap().map(|p| p.unwrap()).collect();
            let want: Vec<_> = big
                .pieces
                .iter()
                .filter(|p| p.start + p.len > a && p.start < b)
                .copied()
                .collect();
            assert_eq!(got, want, "range {a}..{b}");
        }
        let all: Vec<_> = index
            .pieces(4, 0..u64::MAX)
            .unwrap()
            .map(|p| p.unwrap())
            .collect();
        assert_eq!(all, big.pieces);
        assert_eq!(index.lookup(9, 0).unwrap(), None);
        assert_eq!(index.lookup(2, 0).unwrap(), None);
        assert_eq!(index.pieces(9, 0..u64::MAX).unwrap().count(), 0);
        let small: Vec<_> = index
            .pieces(1, 0..u64::MAX)
            .unwrap()
            .map(|p| p.unwrap())
            .collect();
        assert_eq!(small, disks[0].pieces);
    }

    /// Flips one byte in each block (a different position each time) and checks that the
    /// lookup of that block's first piece fails naming the file and an offset in the block.
    #[test]
    fn a_flipped_byte_in_any_block_fails_the_lookup_that_reads_it() {
        let disks = [disk(2, 700, 5), disk(3, 64, 6)];
        let (tmp, storage) = stored(&disks);
        let path = layout::checkpoint_path(tmp.path(), LSN);
        let file = storage.open(&path, OpenMode::ReadWrite).unwrap();
        let header = *CheckpointIndex::open(storage.as_ref(), tmp.path(), VAULT, SEED, LSN)
            .unwrap()
            .header();
        let mut block_index = 0u64;
        for d in &disks {
            for (b, chunk) in d.pieces.chunks(PIECES_PER_BLOCK).enumerate() {
                let block_at = header.block_offset(block_index);
                let at = block_at + (block_index * 613 + 7) % BLOCK_BYTES as u64;
                let mut byte = [0u8];
                file.read_exact_at(&mut byte, at).unwrap();
                file.write_all_at(&[byte[0] ^ 0x04], at).unwrap();
                let index =
                    CheckpointIndex::open(storage.as_ref(), tmp.path(), VAULT, SEED, LSN).unwrap();
                let e = index.lookup(d.disk_id, chunk[0].start).unwrap_err();
                let offset = e.offset().unwrap();
                assert!(
                    (block_at..block_at + BLOCK_BYTES as u64).contains(&offset),
                    "block {b} of disk {}: {e}",
                    d.disk_id
                );
                assert!(e.to_string().contains(".idx"), "{e}");
                let all: Result<Vec<_>> = index
                    .pieces(d.disk_id, 0..u64::MAX)
                    .and_then(|it| it.collect());
                assert!(all.is_err(), "iteration over block {b}");
                file.write_all_at(&byte, at).unwrap();
                block_index += 1;
            }
        }
        // The header page and the directory are checked when the index opens.
        for at in [40, 4096 + 20] {
            let mut byte = [0u8];
            file.read_exact_at(&mut byte, at).unwrap();
            file.write_all_at(&[byte[0] ^ 0x04], at).unwrap();
            let opened = CheckpointIndex::open(storage.as_ref(), tmp.path(), VAULT, SEED, LSN);
            assert!(opened.is_err(), "byte {at}");
            file.write_all_at(&byte, at).unwrap();
        }
    }
}
