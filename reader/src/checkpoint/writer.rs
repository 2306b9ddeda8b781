//! Writing a checkpoint as a stream of pieces in disk order: blocks go out 1 MiB at a time to a
//! temporary file in `index/`, then the directory and the header, one data sync, a rename to
//! `index/<lsn>.idx` and a sync of `index/`.
//!
//! Memory: one 1 MiB write buffer, one block of pieces being filled, and the directory (32
//! bytes a disk), however many pieces are written.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use replog_format::VaultId;
use replog_format::checkpoint::{
    BLOCK_BYTES, BlockTrailer, CHECKPOINT_HEADER_BYTES, CheckpointHeader, CheckpointPiece,
    DirectoryEntry, PIECES_PER_BLOCK, PieceSource, blocks_for, directory_pages, encode_block,
    encode_directory,
};
use replog_format::layout::{self, INDEX_DIR};
use replog_io::{File, OpenMode, Storage, WriteAt};

use super::CheckpointInfo;
use crate::error::{ReadError, Result};

/// Bytes written at a time.
const WRITE_BYTES: usize = 1 << 20;

/// Where a checkpoint goes and what it says of itself.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target<'a> {
    pub storage: &'a dyn Storage,
    pub dir: &'a Path,
    pub vault_id: VaultId,
    pub seed: u32,
    pub lsn: u64,
    pub last_segment_id: u64,
}

/// A checkpoint being written. Disks are given in increasing id, each with its pieces in
/// increasing, non-overlapping disk order; a piece that continues the one before (the same
/// record's next bytes, or zeros after zeros) joins it.
pub(crate) struct IndexWriter<'a> {
    target: Target<'a>,
    file: Arc<dyn File>,
    tmp: PathBuf,
    disk_count: u32,
    entries: Vec<DirectoryEntry>,
    /// The disk being written and its pieces so far.
    current: Option<DirectoryEntry>,
    pending: Option<CheckpointPiece>,
    block: Vec<CheckpointPiece>,
    buf: Vec<u8>,
    /// Where `buf` goes.
    offset: u64,
    blocks: u64,
    pieces: u64,
}

impl<'a> IndexWriter<'a> {
    /// Creates the temporary file for a checkpoint of `disk_count` disks.
    pub(crate) fn create(target: Target<'a>, disk_count: u32) -> Result<IndexWriter<'a>> {
        let storage = target.storage;
        let index_dir = target.dir.join(INDEX_DIR);
        let created = !storage
            .exists(&index_dir)
            .map_err(|e| ReadError::io(INDEX_DIR, "look for", e))?;
        storage
            .create_dir_all(&index_dir)
            .map_err(|e| ReadError::io(INDEX_DIR, "create", e))?;
        if created {
            storage
                .sync_dir(target.dir)
                .map_err(|e| ReadError::io(target.dir, "sync the directory", e))?;
        }
        static UNIQUE: AtomicU64 = AtomicU64::new(0);
        let tmp = index_dir.join(format!(
            ".{:016x}.{}.{}.tmp",
            target.lsn,
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        let file = storage
            .open(&tmp, OpenMode::CreateNew)
            .map_err(|e| ReadError::io(&tmp, "create", e))?;
        let first = (1 + directory_pages(disk_count)) * BLOCK_BYTES as u64;
        Ok(IndexWriter {
            target,
            file,
            tmp,
            disk_count,
            entries: Vec::with_capacity(disk_count as usize),
            current: None,
            pending: None,
            block: Vec::with_capacity(PIECES_PER_BLOCK),
            buf: Vec::with_capacity(WRITE_BYTES + BLOCK_BYTES),
            offset: first,
            blocks: 0,
            pieces: 0,
        })
    }

    /// Starts disk `disk_id`, `disk_bytes` long at the checkpoint's LSN.
    pub(crate) fn begin_disk(&mut self, disk_id: u32, disk_bytes: u64) -> Result<()> {
        self.end_disk()?;
        assert!(
            self.entries.last().is_none_or(|e| e.disk_id < disk_id)
                && self.entries.len() < self.disk_count as usize,
            "disks are written once each, in increasing id, as many as announced"
        );
        self.current = Some(DirectoryEntry {
            disk_id,
            disk_bytes,
            piece_count: 0,
            first_block: self.blocks,
        });
        Ok(())
    }

    /// Appends a piece of the current disk.
    pub(crate) fn push(&mut self, piece: CheckpointPiece) -> Result<()> {
        let disk = self.current.expect("a piece belongs to a disk");
        assert!(
            piece.len > 0 && piece.start + piece.len <= disk.disk_bytes,
            "piece {piece:?} inside disk {disk:?}"
        );
        if let Some(p) = &mut self.pending {
            assert!(p.start + p.len <= piece.start, "pieces in disk order");
            if continues(p, &piece) {
                p.len += piece.len;
                return Ok(());
            }
        }
        match self.pending.replace(piece) {
            Some(done) => self.add(done),
            None => Ok(()),
        }
    }

    fn add(&mut self, piece: CheckpointPiece) -> Result<()> {
        self.block.push(piece);
        if let Some(d) = &mut self.current {
            d.piece_count += 1;
        }
        if self.block.len() == PIECES_PER_BLOCK {
            self.seal_block()?;
        }
        Ok(())
    }

    fn seal_block(&mut self) -> Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let disk = self.current.expect("a block belongs to a disk");
        let in_disk = self.blocks - disk.first_block;
        let trailer = BlockTrailer {
            disk_id: disk.disk_id,
            count: self.block.len() as u32,
            block_index: self.blocks,
            lsn: self.target.lsn,
            first_piece: in_disk * PIECES_PER_BLOCK as u64,
        };
        encode_block(&self.block, &trailer, self.target.seed, &mut self.buf);
        self.pieces += self.block.len() as u64;
        self.blocks += 1;
        self.block.clear();
        if self.buf.len() >= WRITE_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn end_disk(&mut self) -> Result<()> {
        if let Some(p) = self.pending.take() {
            self.add(p)?;
        }
        self.seal_block()?;
        if let Some(d) = self.current.take() {
            debug_assert_eq!(d.first_block + blocks_for(d.piece_count), self.blocks);
            self.entries.push(d);
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(|e| ReadError::io(&self.tmp, "write", e).at(self.offset))?;
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes the directory and the header, syncs, and renames the file into place. An existing
    /// checkpoint at the same LSN is replaced by an identical map.
    pub(crate) fn finish(mut self) -> Result<CheckpointInfo> {
        let result = self.finish_inner();
        if result.is_err() {
            let _ = self.target.storage.remove_file(&self.tmp);
        }
        result
    }

    fn finish_inner(&mut self) -> Result<CheckpointInfo> {
        self.end_disk()?;
        assert_eq!(
            self.entries.len(),
            self.disk_count as usize,
            "every announced disk was written"
        );
        self.flush()?;
        let (directory, directory_crc) = encode_directory(&self.entries, self.target.seed);
        let header = CheckpointHeader {
            vault_id: self.target.vault_id,
            lsn: self.target.lsn,
            last_segment_id: self.target.last_segment_id,
            disk_count: self.disk_count,
            block_count: self.blocks,
            piece_count: self.pieces,
            directory_crc,
        };
        let page = header.encode(self.target.seed);
        self.file
            .write_batch(
                &[
                    WriteAt {
                        offset: CHECKPOINT_HEADER_BYTES as u64,
                        data: &directory,
                    },
                    WriteAt {
                        offset: 0,
                        data: &page,
                    },
                ],
                true,
            )
            .map_err(|e| ReadError::io(&self.tmp, "write and sync", e))?;
        let storage = self.target.storage;
        let path = layout::checkpoint_path(self.target.dir, self.target.lsn);
        storage
            .rename(&self.tmp, &path)
            .map_err(|e| ReadError::io(&self.tmp, "rename", e))?;
        let index_dir = self.target.dir.join(INDEX_DIR);
        storage
            .sync_dir(&index_dir)
            .map_err(|e| ReadError::io(&index_dir, "sync the directory", e))?;
        Ok(CheckpointInfo {
            lsn: self.target.lsn,
            path,
            pieces: self.pieces,
            file_bytes: header.file_bytes(),
        })
    }

    /// Gives up: removes the temporary file.
    pub(crate) fn abandon(self) {
        let _ = self.target.storage.remove_file(&self.tmp);
    }
}

/// Whether `next` reads on where `p` stops: zeros after zeros, or the same record's next bytes.
fn continues(p: &CheckpointPiece, next: &CheckpointPiece) -> bool {
    if p.start + p.len != next.start {
        return false;
    }
    match (p.source, next.source) {
        (PieceSource::Zero, PieceSource::Zero) => true,
        (PieceSource::Record(a), PieceSource::Record(b)) => {
            u64::from(a.data_offset) + p.len == u64::from(b.data_offset)
                && replog_format::checkpoint::RecordPiece {
                    data_offset: b.data_offset,
                    ..a
                } == b
        }
        _ => false,
    }
}
