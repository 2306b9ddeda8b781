//! `ingest`: replicate the current content of a raw image by journaling only the blocks that
//! differ from the replica's latest state. Differences are found with the digest cache, never
//! by reading the replica: the image is read once, sequentially, in windows, each window's blocks
//! hashed and (when compression is on) compressed in parallel.
//!
//! A block counts as changed when its digest differs from the cache, when the cache is missing or
//! does not match the disk, or when a record newer than the cache touched it. Changed runs of
//! zero blocks become zero records; other changed runs become write records.

//!
//! [`Ingest`] owns the scan. Its one step that appends is [`Ingest::journal_changes`]: journal
//! these byte ranges of this disk, their bytes held in memory (or zero). Whatever finds the
//! changed ranges (the image scan here) calls it.

use std::borrow::Cow;
use std::path::Path;

use rayon::prelude::*;
use replog_format::digest::DigestHeader;
use replog_format::layout;
use replog_format::limits::RECORD_DATA_BYTES_MAX;
use replog_format::manifest::DiskEntry;
use replog_format::record::RecordKind;
use replog_format::segment::{self, Expect, ExtentEntry, FooterIndex};
use replog_io::{File, OpenMode};

use crate::batch::NewRecord;
use crate::blocks::{BlockFacts, WINDOW_BYTES, window_facts};
use crate::digest::{DigestReader, DigestWriter};
use crate::error::{Result, WriteError, WriteErrorKind};
use crate::journal::Journal;
use crate::state::VaultState;

/// What an ingest did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Bytes of the image read.
    pub bytes_scanned: u64,
    /// Bytes found changed and journaled (as writes or zero ranges).
    pub bytes_changed: u64,
    /// Bytes stored in the journal for them (payloads, after compression).
    pub bytes_stored: u64,
    /// Records appended.
    pub records: u64,
    /// How the digest cache was used: "valid", "stale" (some blocks re-sent because newer
    /// records touched them) or "missing" (every block treated as changed).
    pub digest_cache: &'static str,
}

/// Byte ranges `[start, end)` of a disk, sorted by start.
type Ranges = Vec<(u64, u64)>;

/// The image being ingested, and who hears of the progress.
pub(crate) struct ImageSource<'a> {
    pub(crate) image: &'a dyn File,
    pub(crate) image_path: &'a Path,
    pub(crate) progress: &'a dyn Fn(u64),
}

/// What the scan compares with and writes: the old digest cache, the ranges newer records
/// touched, the new cache.
struct Scan<'a> {
    cache: Option<&'a mut DigestReader>,
    stale: &'a [(u64, u64)],
    digests: &'a mut DigestWriter,
}

/// A changed byte range `[start, end)` of a disk, all zero or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) zero: bool,
}

/// Bytes of a disk held in memory: `bytes[0]` is disk byte `at`.
#[derive(Clone, Copy)]
pub(crate) struct Held<'a> {
    pub(crate) at: u64,
    pub(crate) bytes: &'a [u8],
}

/// An ingest: the vault it reads (manifest, footers, digest caches) and the journal it appends
/// to. The `Writer` checks the request and hands itself over in these two parts.
pub(crate) struct Ingest<'w> {
    vault: &'w mut VaultState,
    journal: &'w mut Journal,
}

impl<'w> Ingest<'w> {
    pub(crate) fn new(vault: &'w mut VaultState, journal: &'w mut Journal) -> Ingest<'w> {
        Ingest { vault, journal }
    }

    /// Journals the blocks of the image that differ from `disk`'s latest state, makes them
    /// durable, and updates the digest cache.
    pub(crate) fn image(
        &mut self,
        disk: &DiskEntry,
        source: &ImageSource<'_>,
    ) -> Result<IngestStats> {
        check_image_length(disk, source)?;
        let (mut cache, stale) = self.digest_cache(disk)?;
        let mut stats = IngestStats {
            // A cache of a disk that grew since holds for its old blocks only: stale too.
            digest_cache: match (&cache, stale.is_empty()) {
                (None, _) => "missing",
                (Some(c), true) if c.header.disk_bytes == disk.disk_bytes => "valid",
                (Some(_), _) => "stale",
            },
            ..IngestStats::default()
        };
        let v = &*self.vault;
        let mut digests =
            DigestWriter::create(v.storage.as_ref(), v.dir(), disk.disk_id, v.seed())?;
        let mut scan = Scan {
            cache: cache.as_mut(),
            stale: &stale,
            digests: &mut digests,
        };
        self.scan_image(disk, source, &mut scan, &mut stats)?;
        if cache.as_ref().is_some_and(|c| !c.body_intact()) {
            // The cache lied somewhere: we cannot know which blocks were skipped wrongly, so
            // journal the whole image once more. Rare, and always correct.
            drop(digests);
            return self.image_all_over(disk, source);
        }
        self.journal.flush(true)?;
        let v = &*self.vault;
        let header = DigestHeader {
            vault_id: v.header.vault_id,
            disk_id: disk.disk_id,
            block_bytes: v.header.block_bytes,
            disk_bytes: disk.disk_bytes,
            valid_lsn: self.journal.last_lsn(),
            body_crc: 0,
        };
        digests.finish(v.storage.as_ref(), header, v.seed())?;
        Ok(stats)
    }

    /// The digest cache of `disk` when there is a valid one, and the ranges records newer than
    /// it touched (which must be sent again whatever the cache says).
    fn digest_cache(&self, disk: &DiskEntry) -> Result<(Option<DigestReader>, Ranges)> {
        let v = &*self.vault;
        let cache = DigestReader::open(
            v.storage.as_ref(),
            v.dir(),
            disk.disk_id,
            v.seed(),
            disk.disk_bytes,
            v.header.block_bytes,
        );
        let stale = match &cache {
            Some(c) => self.ranges_touched_after(disk.disk_id, c.header.valid_lsn)?,
            None => Vec::new(),
        };
        Ok((cache, stale))
    }

    /// Reads the image window by window, journals the changed runs and streams every block's
    /// digest to the new cache.
    fn scan_image(
        &mut self,
        disk: &DiskEntry,
        source: &ImageSource<'_>,
        scan: &mut Scan<'_>,
        stats: &mut IngestStats,
    ) -> Result<()> {
        let block = self.vault.header.block_bytes as usize;
        let len = disk.disk_bytes;
        let mut window = vec![0u8; WINDOW_BYTES as usize];
        let mut at = 0u64;
        while at < len {
            let n = (len - at).min(WINDOW_BYTES) as usize;
            let buf = &mut window[..n];
            let facts = window_facts(source.image, source.image_path, buf, at, block)?;
            let old = scan.cache.as_mut().and_then(|c| c.next(facts.len()));
            let changed: Vec<bool> = facts
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let start = at + (i * block) as u64;
                    old.as_ref().and_then(|o| o.get(i)) != Some(&f.digest)
                        || overlaps(scan.stale, start, start + block as u64)
                })
                .collect();
            let changes = changes(at, n as u64, block, &changed, &facts);
            let held = Held { at, bytes: buf };
            self.journal_changes(disk.disk_id, held, &changes, stats)?;
            for f in &facts {
                scan.digests.push(f.digest)?;
            }
            at += n as u64;
            stats.bytes_scanned = at;
            (source.progress)(at);
        }
        Ok(())
    }

    /// Removes the digest cache of `disk` and ingests with every block treated as changed.
    fn image_all_over(
        &mut self,
        disk: &DiskEntry,
        source: &ImageSource<'_>,
    ) -> Result<IngestStats> {
        let path = layout::digest_path(self.vault.dir(), disk.disk_id);
        self.vault
            .storage
            .remove_file(&path)
            .map_err(|e| WriteError::io(&path, None, "removing the damaged digest cache", e))?;
        let mut stats = self.image(disk, source)?;
        stats.digest_cache = "damaged";
        Ok(stats)
    }

    /// Journals the `changes` of disk `disk_id` (sorted, within the disk): zero ranges as zero
    /// records, the others as write records of their bytes in `held`, cut into record-sized
    /// pieces encoded in parallel and framed in order; counts them in `stats`. Not durable
    /// until the journal is synced.
    ///
    /// The digest cache stays correct without being touched here: a cache holds for the
    /// records up to its `valid_lsn`, and these records are newer, so the next scan treats
    /// their blocks as changed ([`Ingest::ranges_touched_after`]) unless a cache written after
    /// them replaces it, as the image scan's does.
    pub(crate) fn journal_changes(
        &mut self,
        disk_id: u32,
        held: Held<'_>,
        changes: &[Change],
        stats: &mut IngestStats,
    ) -> Result<()> {
        let compression = self.vault.header.compression;
        let held_end = held.at + held.bytes.len() as u64;
        let pieces: Vec<Change> = changes
            .iter()
            .flat_map(|c| {
                (c.start..c.end)
                    .step_by(RECORD_DATA_BYTES_MAX as usize)
                    .map(move |s| Change {
                        start: s,
                        end: (s + RECORD_DATA_BYTES_MAX).min(c.end),
                        zero: c.zero,
                    })
            })
            .collect();
        let records: Vec<NewRecord<'_>> = pieces
            .par_iter()
            .map(|c| {
                if c.zero {
                    return NewRecord {
                        kind: RecordKind::Zero,
                        flags: 0,
                        disk_id,
                        disk_offset: c.start,
                        length: c.end - c.start,
                        payload: Cow::Borrowed(&[][..]),
                    };
                }
                assert!(
                    held.at <= c.start && c.end <= held_end,
                    "a changed range's bytes are held"
                );
                let data = &held.bytes[(c.start - held.at) as usize..(c.end - held.at) as usize];
                NewRecord::write(compression, disk_id, c.start, data)
            })
            .collect();
        for r in &records {
            stats.bytes_stored += r.payload.len() as u64;
            stats.records += 1;
            stats.bytes_changed += r.length;
        }
        self.journal
            .append_many(&mut self.vault.manifest, &records)?;
        Ok(())
    }

    /// Byte ranges of disk `disk_id` written or zeroed by records after `lsn`: from the footers
    /// of sealed segments that end after it and from the open segment's index.
    fn ranges_touched_after(&self, disk_id: u32, lsn: u64) -> Result<Ranges> {
        let mut ranges = Vec::new();
        // A resize changes no byte: the grown range needs no sending again for it.
        let mut take = |e: &ExtentEntry| {
            if e.lsn > lsn && e.disk_id == disk_id && e.kind != RecordKind::Resize {
                ranges.push((e.disk_offset, e.disk_offset + e.length));
            }
        };
        for seg in &self.vault.manifest.segments {
            let Some(info) = seg.sealed else { continue };
            if info.last_lsn <= lsn {
                continue;
            }
            for e in self
                .read_footer(seg.segment_id, info.footer_offset)?
                .extents
            {
                take(&e);
            }
        }
        for e in &self.journal.active().extents {
            take(e);
        }
        ranges.sort_unstable();
        Ok(ranges)
    }

    fn read_footer(&self, segment_id: u64, footer_offset: u64) -> Result<FooterIndex> {
        let v = &*self.vault;
        let path = layout::segment_path(v.dir(), segment_id);
        let file = v
            .storage
            .open(&path, OpenMode::Read)
            .map_err(|e| WriteError::io(&path, None, "opening", e))?;
        let bytes = file
            .map()
            .map_err(|e| WriteError::io(&path, None, "reading", e))?;
        let expect = Expect {
            vault_id: v.header.vault_id,
            seed: v.seed(),
            segment_id,
        };
        let (h, payload) = segment::record_at(&bytes, footer_offset, &expect)
            .map_err(|e| WriteError::damaged(&path, 0, e))?;
        if h.kind != RecordKind::Footer {
            return Err(WriteError::new(
                WriteErrorKind::Damaged,
                format!("no footer at byte {footer_offset}"),
            )
            .in_file(&path));
        }
        FooterIndex::decode(payload).map_err(|e| WriteError::damaged(&path, footer_offset + 64, e))
    }
}

/// Refuses an image whose length is not `disk`'s size.
fn check_image_length(disk: &DiskEntry, source: &ImageSource<'_>) -> Result<()> {
    let len = source
        .image
        .len()
        .map_err(|e| WriteError::io(source.image_path, None, "reading the length", e))?;
    if len != disk.disk_bytes {
        return Err(WriteError::new(
            WriteErrorKind::InvalidRequest,
            format!(
                "the image is {len} bytes but disk {:?} is {} bytes{}",
                disk.name,
                disk.disk_bytes,
                if len > disk.disk_bytes {
                    ": grow the disk first (a resize; `ingest --grow` does it)"
                } else {
                    ""
                }
            ),
        )
        .in_file(source.image_path)
        .for_disk(disk.disk_id));
    }
    Ok(())
}

/// Whether `[start, end)` overlaps any of the sorted `ranges`.
fn overlaps(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let i = ranges.partition_point(|r| r.0 < end);
    ranges[..i].iter().rev().any(|r| r.1 > start)
}

/// The maximal runs of changed blocks, all zero or all non-zero, of the window of `len` bytes
/// at disk byte `at`, as byte ranges of the disk (the last block may be short).
fn changes(at: u64, len: u64, block: usize, changed: &[bool], facts: &[BlockFacts]) -> Vec<Change> {
    let mut out: Vec<Change> = Vec::new();
    for (i, (&c, f)) in changed.iter().zip(facts).enumerate() {
        if !c {
            continue;
        }
        let start = at + (i * block) as u64;
        let end = (start + block as u64).min(at + len);
        match out.last_mut() {
            Some(r) if r.end == start && r.zero == f.zero => r.end = end,
            _ => out.push(Change {
                start,
                end,
                zero: f.zero,
            }),
        }
    }
    out
}
