//! `ingest`: replicate the current content of a raw image by journaling only the blocks that
//! differ from the replica's latest state. Differences are found with the digest cache, never
//! by reading the replica: the image is read once, sequentially, in windows, each window's blocks
//! hashed and (when compression is on) compressed in parallel.
//!
//! A block counts as changed when its digest differs from the cache, when the cache is missing or
//! does not match the disk, or when a record newer than the cache touched it. Changed runs of
//! zero blocks become zero records; other changed runs become write records.

use std::borrow::Cow;
use std::path::Path;

use rayon::prelude::*;
use replog_format::digest::DigestHeader;
use replog_format::layout;
use replog_format::limits::RECORD_DATA_BYTES_MAX;
use replog_format::record::RecordKind;
use replog_format::segment::{self, Expect, FooterIndex};
use replog_io::{File, OpenMode};

use crate::batch::NewRecord;
use crate::blocks::{BlockFacts, WINDOW_BYTES, window_facts};
use crate::digest::{DigestReader, DigestWriter};
use crate::error::{Result, WriteError, WriteErrorKind};
use crate::writer::{DiskInfo, Writer};

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

/// The image being ingested.
struct Source<'a> {
    image: &'a dyn File,
    image_path: &'a Path,
    progress: &'a dyn Fn(u64),
}

/// What the scan compares with and writes: the old digest cache, the ranges newer records
/// touched, the new cache.
struct Scan<'a> {
    cache: Option<&'a mut DigestReader>,
    stale: &'a [(u64, u64)],
    digests: &'a mut DigestWriter,
}

/// A run of changed blocks of one kind.
struct Run {
    start: usize,
    end: usize,
    zero: bool,
}

impl Writer {
    /// Journals the blocks of `image` that differ from disk `name`'s latest state, makes them
    /// durable, and updates the digest cache. `progress` is called with the bytes scanned.
    pub fn ingest(
        &mut self,
        name: &str,
        image: &dyn File,
        image_path: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<IngestStats> {
        self.journal.check_poison()?;
        let disk = self.disk_for_image(name, image, image_path)?;
        let (mut cache, stale) = self.digest_cache(&disk)?;
        let mut stats = IngestStats {
            digest_cache: match (&cache, stale.is_empty()) {
                (None, _) => "missing",
                (Some(_), true) => "valid",
                (Some(_), false) => "stale",
            },
            ..IngestStats::default()
        };
        let mut digests = DigestWriter::create(
            self.storage().as_ref(),
            self.dir(),
            disk.disk_id,
            self.seed(),
        )?;
        let source = Source {
            image,
            image_path,
            progress,
        };
        let mut scan = Scan {
            cache: cache.as_mut(),
            stale: &stale,
            digests: &mut digests,
        };
        self.journal_changes(&disk, &source, &mut scan, &mut stats)?;
        if cache.as_ref().is_some_and(|c| !c.body_intact()) {
            // The cache lied somewhere: we cannot know which blocks were skipped wrongly, so
            // journal the whole image once more. Rare, and always correct.
            drop(digests);
            return self.ingest_all_over(name, image, image_path, progress);
        }
        self.sync()?;
        let header = DigestHeader {
            vault_id: self.header().vault_id,
            disk_id: disk.disk_id,
            block_bytes: self.header().block_bytes,
            disk_bytes: disk.disk_bytes,
            valid_lsn: self.last_lsn(),
            body_crc: 0,
        };
        digests.finish(self.storage().as_ref(), header, self.seed())?;
        Ok(stats)
    }

    /// Disk `name`, which `image` must match in length.
    fn disk_for_image(&self, name: &str, image: &dyn File, image_path: &Path) -> Result<DiskInfo> {
        let disk = self.disk(name)?;
        let len = image
            .len()
            .map_err(|e| WriteError::io(image_path, None, "reading the length", e))?;
        if len != disk.disk_bytes {
            return Err(WriteError::new(
                WriteErrorKind::InvalidRequest,
                format!(
                    "the image is {len} bytes but disk {name:?} is {} bytes",
                    disk.disk_bytes
                ),
            )
            .in_file(image_path)
            .for_disk(disk.disk_id));
        }
        Ok(disk)
    }

    /// The digest cache of `disk` when there is a valid one, and the ranges records newer than
    /// it touched (which must be sent again whatever the cache says).
    fn digest_cache(&self, disk: &DiskInfo) -> Result<(Option<DigestReader>, Ranges)> {
        let cache = DigestReader::open(
            self.storage().as_ref(),
            self.dir(),
            disk.disk_id,
            self.seed(),
            disk.disk_bytes,
            self.header().block_bytes,
        );
        let stale = match &cache {
            Some(c) => self.ranges_touched_after(disk.disk_id, c.header.valid_lsn)?,
            None => Vec::new(),
        };
        Ok((cache, stale))
    }

    /// Reads the image window by window, journals the changed runs and streams every block's
    /// digest to the new cache.
    fn journal_changes(
        &mut self,
        disk: &DiskInfo,
        source: &Source<'_>,
        scan: &mut Scan<'_>,
        stats: &mut IngestStats,
    ) -> Result<()> {
        let block = self.header().block_bytes as usize;
        let (disk_id, len) = (disk.disk_id, disk.disk_bytes);
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
                    old.as_ref().is_none_or(|o| o[i] != f.digest)
                        || overlaps(scan.stale, start, start + block as u64)
                })
                .collect();
            self.journal_runs(disk_id, at, buf, &runs(&changed, &facts), block, stats)?;
            for f in &facts {
                scan.digests.push(f.digest)?;
            }
            at += n as u64;
            stats.bytes_scanned = at;
            (source.progress)(at);
        }
        Ok(())
    }

    /// Removes the digest cache of `name` and ingests with every block treated as changed.
    fn ingest_all_over(
        &mut self,
        name: &str,
        image: &dyn File,
        image_path: &Path,
        progress: &dyn Fn(u64),
    ) -> Result<IngestStats> {
        let disk = self.disk(name)?;
        let path = layout::digest_path(self.dir(), disk.disk_id);
        self.storage()
            .remove_file(&path)
            .map_err(|e| WriteError::io(&path, None, "removing the damaged digest cache", e))?;
        let mut stats = self.ingest(name, image, image_path, progress)?;
        stats.digest_cache = "damaged";
        Ok(stats)
    }

    /// Journals each run of changed blocks of one window.
    fn journal_runs(
        &mut self,
        disk_id: u32,
        at: u64,
        buf: &[u8],
        runs: &[Run],
        block: usize,
        stats: &mut IngestStats,
    ) -> Result<()> {
        let compression = self.header().compression;
        // Split runs into record-sized pieces and encode their payloads in parallel.
        let piece_blocks = (RECORD_DATA_BYTES_MAX as usize / block).max(1);
        let pieces: Vec<(usize, usize, bool)> = runs
            .iter()
            .flat_map(|r| {
                (r.start..r.end)
                    .step_by(piece_blocks)
                    .map(move |s| (s, (s + piece_blocks).min(r.end), r.zero))
            })
            .collect();
        let records: Vec<NewRecord<'_>> = pieces
            .par_iter()
            .map(|&(s, e, zero)| {
                let data = &buf[s * block..(e * block).min(buf.len())];
                let disk_offset = at + (s * block) as u64;
                if zero {
                    NewRecord {
                        kind: RecordKind::Zero,
                        flags: 0,
                        disk_id,
                        disk_offset,
                        length: data.len() as u64,
                        payload: Cow::Borrowed(&[][..]),
                    }
                } else {
                    NewRecord::write(compression, disk_id, disk_offset, data)
                }
            })
            .collect();
        for r in &records {
            stats.bytes_stored += r.payload.len() as u64;
            stats.records += 1;
            stats.bytes_changed += r.length;
        }
        // Framed and checksummed in parallel, in order.
        self.append_records(&records)?;
        Ok(())
    }

    /// Byte ranges of disk `disk_id` written or zeroed by records after `lsn`: from the footers
    /// of sealed segments that end after it and from the open segment's index.
    pub(crate) fn ranges_touched_after(&self, disk_id: u32, lsn: u64) -> Result<Vec<(u64, u64)>> {
        let mut ranges = Vec::new();
        let mut take = |lsn_rec: u64, d: u32, off: u64, len: u64| {
            if lsn_rec > lsn && d == disk_id {
                ranges.push((off, off + len));
            }
        };
        for seg in &self.manifest().segments {
            let Some(info) = seg.sealed else { continue };
            if info.last_lsn <= lsn {
                continue;
            }
            for e in self
                .read_footer(seg.segment_id, info.footer_offset)?
                .extents
            {
                take(e.lsn, e.disk_id, e.disk_offset, e.length);
            }
        }
        for e in &self.journal.active().extents {
            take(e.lsn, e.disk_id, e.disk_offset, e.length);
        }
        ranges.sort_unstable();
        Ok(ranges)
    }

    fn read_footer(&self, segment_id: u64, footer_offset: u64) -> Result<FooterIndex> {
        let path = layout::segment_path(self.dir(), segment_id);
        let file = self
            .storage()
            .open(&path, OpenMode::Read)
            .map_err(|e| WriteError::io(&path, None, "opening", e))?;
        let bytes = file
            .map()
            .map_err(|e| WriteError::io(&path, None, "reading", e))?;
        let expect = Expect {
            vault_id: self.header().vault_id,
            seed: self.seed(),
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

/// Whether `[start, end)` overlaps any of the sorted `ranges`.
fn overlaps(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    let i = ranges.partition_point(|r| r.0 < end);
    ranges[..i].iter().rev().any(|r| r.1 > start)
}

/// Maximal runs of changed blocks that are all zero or all non-zero.
fn runs(changed: &[bool], facts: &[BlockFacts]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (i, (&c, f)) in changed.iter().zip(facts).enumerate() {
        if !c {
            continue;
        }
        match out.last_mut() {
            Some(r) if r.end == i && r.zero == f.zero => r.end = i + 1,
            _ => out.push(Run {
                start: i,
                end: i + 1,
                zero: f.zero,
            }),
        }
    }
    out
}
