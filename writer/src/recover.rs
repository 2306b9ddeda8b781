//! Opening a vault for writing after any crash: the `TolerateTornTail` policy.
//!
//! | found | action |
//! |---|---|
//! | `MANIFEST.tmp` | removed: an interrupted manifest replacement, never trusted |
//! | the segment after the open one, not listed, holding no record | removed: an interrupted rotation; records are only appended to listed segments |
//! | any other unlisted segment at or after the first listed (one holding records that continue the journal) | refused, naming the segments, nothing removed: the manifest is older than the journal (restored from an older copy), and removing them would lose history and reuse point ids |
//! | `digests/<disk>.dig.tmp` | removed: an interrupted ingest or disk addition; never renamed into place |
//! | a base generation newer than the manifest's, or of a disk it does not list | removed: an interrupted compaction or disk addition |
//! | an older base generation, a segment before the first listed | removed once no reader's lease names an older manifest: a compaction committed but did not finish deleting |
//! | a sealed segment marked as having its dead prefix released (manifest version 4) | the hole is punched again and synced, once no reader's lease names an older manifest: a compaction committed the mark and may not have punched |
//! | open segment ends cleanly (EOF or zeros) | append from there |
//! | open segment has a torn tail at X | bytes from X copied to `quarantine/`, zeroed, synced; append from X |
//! | open segment is sealed (footer + trailer) | the rotation is completed: next segment created, manifest updated |
//! | a resize record in the open segment grows a disk past the manifest's size | the manifest is stored with the size after it (a crash came between the record's sync and its manifest) |
//! | damage before the tail, a bad header, a manifest that fails its checksum | refused, naming the file and offset |

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::chain::ChainKey;
use replog_format::header::VaultHeader;
use replog_format::layout;
use replog_format::manifest::{Manifest, SealedInfo, SegmentEntry};
use replog_format::record::RecordKind;
use replog_format::segment::{
    self, Expect, ExtentEntry, IndexBuilder, PointEntry, SEGMENT_HEADER_BYTES, SegmentEnd,
    SegmentHeader,
};
use replog_format::vault_seed;
use replog_io::{File, OpenMode, Storage, WriteAt};
use replog_reader::verify::{
    UnlistedSegment, classify_unlisted_segment, describe_unlisted_segment,
};

use crate::error::{Result, WriteError, WriteErrorKind};
use crate::files::{live_leases, remove_files};
use crate::journal::{ActiveSegment, ChainRun, Journal, JournalFiles};
use crate::manifest_io::store;
use crate::pipeline::SegmentFile;

/// What [`crate::Writer::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// A torn tail that was cut: the segment file, the offset it was cut at, the bytes cut, and
    /// where they were kept.
    pub torn_tail: Option<(PathBuf, u64, u64, PathBuf)>,
    /// The open segment was found sealed, and the rotation was completed.
    pub completed_rotation: bool,
    /// A resize record of the open segment was ahead of the manifest, and the manifest now
    /// holds the disk's new size.
    pub completed_resize: bool,
    /// Files left by interrupted operations and removed (never listed, never acknowledged).
    pub removed: Vec<PathBuf>,
}

/// The durable state recovery found, ready to write on: the writer is built from it.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The journal, its open segment positioned after the last valid record.
    pub(crate) journal: Journal,
    /// The manifest, with an interrupted rotation completed.
    pub(crate) manifest: Manifest,
    /// What was found and done.
    pub(crate) report: RecoveryReport,
}

/// Reads and decodes `VAULT`.
pub(crate) fn read_vault_header(storage: &dyn Storage, dir: &Path) -> Result<VaultHeader> {
    let path = dir.join(layout::VAULT_FILE);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WriteError::new(
                WriteErrorKind::NotAVault,
                "not a replog vault (no VAULT file); create one with `replog init`",
            )
            .in_file(dir),
            _ => WriteError::io(&path, None, "opening", e),
        })?;
    let bytes = file
        .map()
        .map_err(|e| WriteError::io(&path, None, "reading", e))?;
    VaultHeader::decode(&bytes).map_err(|e| WriteError::damaged(&path, 0, e))
}

/// Applies the recovery rules to the vault at `dir` (header and manifest already read, the
/// writer lock held) and returns the state to write on.
pub(crate) fn recover(
    storage: &Arc<dyn Storage>,
    dir: &Path,
    header: &VaultHeader,
    manifest: Manifest,
) -> Result<Recovered> {
    let mut r = Recovery {
        storage: storage.as_ref(),
        dir,
        vault_id: header.vault_id,
        seed: vault_seed(&header.vault_id),
        manifest,
        report: RecoveryReport::default(),
    };
    r.remove_leftovers()?;
    let open = open_segment_entry(&r.manifest, dir)?;
    let files = JournalFiles::of(storage, dir, header);
    let scanned = r.scan_open_segment(&open, &files.chain_key)?;
    let completed_resize = catch_up(&mut r.manifest, &scanned.extents, &scanned.path)?;
    r.report.completed_resize = completed_resize;
    let next_point_id = scanned
        .points
        .last()
        .map(|p| p.point.point_id)
        .or(r.manifest.points.last().map(|p| p.point.point_id))
        .unwrap_or(0)
        + 1;
    let out = SegmentFile::new(scanned.path, scanned.file, scanned.end);
    let Recovery {
        mut manifest,
        mut report,
        ..
    } = r;
    let Some(sealed) = scanned.sealed else {
        if completed_resize {
            store(storage.as_ref(), dir, &manifest)?;
        }
        let active = ActiveSegment::new(
            open.segment_id,
            open.first_lsn,
            out,
            scanned.extents,
            scanned.points,
        );
        let journal = Journal::resume(
            files,
            active,
            scanned.last_lsn + 1,
            next_point_id,
            scanned.chain,
        );
        return Ok(Recovered {
            journal,
            manifest,
            report,
        });
    };
    // Sealed but not recorded: the rotation is completed, the points going to the manifest
    // (and a size `catch_up` brought up to date with them).
    let active = ActiveSegment::new(open.segment_id, open.first_lsn, out, Vec::new(), Vec::new());
    let mut journal = Journal::resume(
        files,
        active,
        scanned.last_lsn + 1,
        next_point_id,
        scanned.chain,
    );
    journal.start_next_segment(&mut manifest, sealed, scanned.points)?;
    report.completed_rotation = true;
    Ok(Recovered {
        journal,
        manifest,
        report,
    })
}

/// The manifest's open segment: its last, which must not be sealed.
fn open_segment_entry(manifest: &Manifest, dir: &Path) -> Result<SegmentEntry> {
    let open = manifest.segments.last().cloned().ok_or_else(|| {
        WriteError::new(WriteErrorKind::Damaged, "MANIFEST lists no journal segment").in_file(dir)
    })?;
    if open.sealed.is_some() {
        return Err(WriteError::new(
            WriteErrorKind::Damaged,
            format!(
                "MANIFEST lists no open segment after segment {}",
                open.segment_id
            ),
        )
        .in_file(dir));
    }
    Ok(open)
}

/// The open segment as recovery leaves it: every valid record indexed, what no record vouched
/// for written again and synced, a torn tail cut.
struct Scanned {
    path: PathBuf,
    file: Arc<dyn File>,
    /// Where the next record goes.
    end: u64,
    /// The hash chain's link over its records after its last point (`None`: a segment from
    /// before the chain).
    chain: Option<ChainRun>,
    last_lsn: u64,
    extents: Vec<ExtentEntry>,
    points: Vec<PointEntry>,
    /// The seal found, when the segment ends with a footer and trailer.
    sealed: Option<SealedInfo>,
}

/// The state of one recovery: the vault, the manifest and what was done so far.
struct Recovery<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    vault_id: replog_format::VaultId,
    seed: u32,
    manifest: Manifest,
    report: RecoveryReport,
}

impl Recovery<'_> {
    fn expect(&self, segment_id: u64) -> Expect {
        Expect {
            vault_id: self.vault_id,
            seed: self.seed,
            segment_id,
        }
    }

    /// Scans the open segment `open` and applies the rules to its end; folds its records into
    /// the hash chain under `chain_key` from the value its header holds.
    fn scan_open_segment(&mut self, open: &SegmentEntry, chain_key: &ChainKey) -> Result<Scanned> {
        let path = layout::segment_path(self.dir, open.segment_id);
        let file = self
            .storage
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| WriteError::io(&path, None, "opening", e))?;
        let bytes = file
            .map()
            .map_err(|e| WriteError::io(&path, None, "reading", e))?;
        let expect = self.expect(open.segment_id);
        let mut index = IndexBuilder::default();
        let mut vouched = SEGMENT_HEADER_BYTES as u64;
        // The chain's link is hashed again from the header's start value, a new link after
        // each point, as the writer made it. (The scan decodes the header again and refuses
        // one that is damaged.)
        let mut chain = SegmentHeader::decode(&bytes, self.seed)
            .ok()
            .and_then(|h| h.chain_start)
            .map(|start| chain_key.link(&start));
        let scan = segment::scan(&bytes, &expect, |h, payload| {
            vouched = h.synced_upto;
            index.visit(h, payload);
            if let Some(link) = &mut chain {
                if h.kind == RecordKind::Point {
                    *link = chain_key.link(&link.value());
                }
                link.record(&h.encode(), payload);
            }
        })
        .map_err(|e| WriteError::damaged(&path, 0, e))?;
        let IndexBuilder {
            extents,
            points,
            bad_point,
        } = index;
        if let Some(e) = bad_point {
            return Err(WriteError::damaged(&path, 0, e));
        }
        if scan.header.first_lsn != open.first_lsn {
            return Err(WriteError::new(
                WriteErrorKind::Damaged,
                format!(
                    "starts at LSN {}, the manifest says {}",
                    scan.header.first_lsn, open.first_lsn
                ),
            )
            .in_file(&path));
        }
        if let SegmentEnd::Sealed { footer_offset, .. } = scan.end {
            let (footer, _) = segment::record_at(&bytes, footer_offset, &expect)
                .map_err(|e| WriteError::damaged(&path, 0, e))?;
            vouched = footer.synced_upto;
        }
        repersist(&path, file.as_ref(), &bytes, vouched, scan.valid_end)?;
        let file_len = bytes.len() as u64;
        drop(bytes);
        if let SegmentEnd::Torn { offset, .. } = &scan.end {
            self.cut_torn_tail(&path, file.as_ref(), *offset, file_len)?;
        }
        let sealed = match scan.end {
            SegmentEnd::Sealed { trailer, .. } => Some(SealedInfo {
                last_lsn: trailer.last_lsn,
                footer_offset: trailer.footer_offset,
                file_bytes: scan.valid_end,
                footer_crc: trailer.footer_crc,
            }),
            _ => None,
        };
        let end = scan.end.append_offset();
        Ok(Scanned {
            end,
            path,
            file,
            chain: chain.map(|link| ChainRun::resume(link, end)),
            last_lsn: scan.last_lsn,
            extents,
            points,
            sealed,
        })
    }
}

/// Brings the disk sizes of `manifest` up to the resize records among `extents` (the open
/// segment's records, which a crash may have left ahead of the manifest: rule M). Returns
/// whether a size changed. A resize record of a disk the manifest does not list, or in a vault
/// whose manifest does not say it holds any, is damage in `segment`.
pub(crate) fn catch_up(
    manifest: &mut Manifest,
    extents: &[ExtentEntry],
    segment: &Path,
) -> Result<bool> {
    let mut changed = false;
    for e in extents.iter().filter(|e| e.kind == RecordKind::Resize) {
        let damaged = |why: String| {
            Err(WriteError::new(WriteErrorKind::Damaged, why)
                .in_file(segment)
                .at_offset(e.record_offset))
        };
        if !manifest.resized {
            return damaged(format!(
                "the resize record of LSN {} is in a vault whose manifest does not say it holds any",
                e.lsn
            ));
        }
        let Some(disk) = manifest.disks.iter_mut().find(|d| d.disk_id == e.disk_id) else {
            return damaged(format!(
                "the resize record of LSN {} grows disk {}, which the manifest does not list",
                e.lsn, e.disk_id
            ));
        };
        if e.length > disk.disk_bytes {
            disk.disk_bytes = e.length;
            changed = true;
        }
    }
    if changed {
        manifest.generation += 1;
    }
    Ok(changed)
}

/// Writes `[from, to)` of the open segment again and syncs it. No record vouches that those
/// bytes were ever durable: the writer that framed them may have died, or its sync may have
/// failed, in which case the kernel may have dropped them while reads still show them
/// (fsyncgate). Building on them unsynced could acknowledge a point that a power loss then
/// takes away. At most one staging batch and a footer, so it is cheap.
fn repersist(
    path: &Path,
    file: &dyn replog_io::File,
    bytes: &[u8],
    from: u64,
    to: u64,
) -> Result<()> {
    if from >= to {
        return Ok(());
    }
    let again = bytes[from as usize..to as usize].to_vec();
    file.write_batch(
        &[WriteAt {
            offset: from,
            data: &again,
        }],
        true,
    )
    .map_err(|e| WriteError::io(path, Some(from), "re-persisting the unsynced records", e))
}

/// Syncs the directories whose entries recovery is about to trust: a rename or creation whose
/// directory sync failed may show in the namespace without being durable.
pub(crate) fn sync_dirs(storage: &dyn Storage, dir: &Path) -> Result<()> {
    for sub in [
        "",
        layout::JOURNAL_DIR,
        layout::BASES_DIR,
        layout::DIGESTS_DIR,
    ] {
        let d = if sub.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(sub)
        };
        storage
            .sync_dir(&d)
            .map_err(|e| WriteError::io(&d, None, "syncing the directory", e))?;
    }
    Ok(())
}

impl Recovery<'_> {
    /// Removes `MANIFEST.tmp`, the empty segment an interrupted rotation left and digest caches an
    /// interrupted ingest left, after refusing a manifest older than the journal.
    fn remove_leftovers(&mut self) -> Result<()> {
        let debris = self.unlisted_segments()?;
        let s = self.storage;
        let tmp = self.dir.join(layout::MANIFEST_TMP_FILE);
        let mut removed_in_root = false;
        if s.exists(&tmp)
            .map_err(|e| WriteError::io(&tmp, None, "checking", e))?
        {
            s.remove_file(&tmp)
                .map_err(|e| WriteError::io(&tmp, None, "removing", e))?;
            self.report.removed.push(tmp);
            removed_in_root = true;
        }
        let journal = self.dir.join(layout::JOURNAL_DIR);
        for p in &debris {
            s.remove_file(p)
                .map_err(|e| WriteError::io(p, None, "removing", e))?;
        }
        for (dir, removed) in [
            (self.dir, removed_in_root),
            (journal.as_path(), !debris.is_empty()),
        ] {
            if removed {
                s.sync_dir(dir)
                    .map_err(|e| WriteError::io(dir, None, "syncing the directory", e))?;
            }
        }
        self.report.removed.extend(debris);
        self.remove_digest_temporaries()?;
        self.remove_superseded()
    }

    /// The unlisted segment files at or after the first listed one that an interrupted rotation
    /// left (at most one, empty), to be removed. Any other is evidence that the manifest was
    /// rolled back: the open is refused, naming them, and nothing is removed. (Segments before the
    /// first listed are a compaction's; `remove_superseded` decides.)
    fn unlisted_segments(&self) -> Result<Vec<PathBuf>> {
        let s = self.storage;
        let journal = self.dir.join(layout::JOURNAL_DIR);
        let mut debris = Vec::new();
        let mut rolled_back = Vec::new();
        let first_listed = self.manifest.segments.first().map(|seg| seg.segment_id);
        for name in s
            .read_dir(&journal)
            .map_err(|e| WriteError::io(&journal, None, "listing", e))?
        {
            let Some(id) = layout::parse_segment_file_name(&name) else {
                continue;
            };
            let listed = self
                .manifest
                .segments
                .iter()
                .any(|seg| seg.segment_id == id);
            if listed || first_listed.is_none_or(|first| id < first) {
                continue;
            }
            let p = journal.join(&name);
            let bytes = s
                .open(&p, OpenMode::Read)
                .and_then(|f| f.map())
                .map_err(|e| WriteError::io(&p, None, "reading", e))?;
            let expect = self.expect(id);
            match classify_unlisted_segment(&self.manifest, id, &bytes, &expect) {
                UnlistedSegment::InterruptedRotation | UnlistedSegment::Superseded => {
                    debris.push(p)
                }
                UnlistedSegment::RolledBack => rolled_back.push(format!(
                    "{}/{name} ({})",
                    layout::JOURNAL_DIR,
                    describe_unlisted_segment(&bytes, &expect)
                )),
            }
        }
        if rolled_back.is_empty() {
            return Ok(debris);
        }
        Err(WriteError::new(
            WriteErrorKind::Damaged,
            format!(
                "MANIFEST is older than the journal: it does not list {}. An interrupted rotation leaves at most one empty segment, so MANIFEST was rolled back (restored from an older copy?). Nothing was changed: opening for writing would remove that history and hand out its point ids again. Put back the MANIFEST that belongs with this journal; `replog verify` names what does not agree",
                rolled_back.join(", ")
            ),
        )
        .in_file(self.dir))
    }

    /// Removes `digests/*.dig.tmp`: a digest cache an ingest or disk addition was writing when it
    /// was stopped. It was never renamed into place, so nothing relies on it; left, it would hold
    /// up to a digest per block of the disk.
    fn remove_digest_temporaries(&mut self) -> Result<()> {
        let s = self.storage;
        let digests = self.dir.join(layout::DIGESTS_DIR);
        let names = s
            .read_dir(&digests)
            .map_err(|e| WriteError::io(&digests, None, "listing", e))?;
        let stale: Vec<PathBuf> = names
            .iter()
            .filter(|n| n.ends_with(crate::digest::DIGEST_TMP_SUFFIX))
            .map(|n| digests.join(n))
            .collect();
        remove_files(self.storage, stale.iter().cloned())?;
        self.report.removed.extend(stale);
        Ok(())
    }

    /// Removes what an interrupted compaction left: base generations newer than the manifest's
    /// (written, never committed) and files an older manifest named that a committed compaction did
    /// not get to delete (older base generations, segments before the first listed one). The
    /// latter only once no live lease was taken against an older manifest: a reader's snapshot may
    /// still name them (they are then left for a later open or prune). Under the same condition,
    /// releases the dead prefix the manifest marks (idempotent). `leases/` and `index/` are
    /// not touched.
    fn remove_superseded(&mut self) -> Result<()> {
        let s = self.storage;
        let bases = self.dir.join(layout::BASES_DIR);
        let journal = self.dir.join(layout::JOURNAL_DIR);
        let mut newer = Vec::new();
        let mut older = Vec::new();
        for name in s
            .read_dir(&bases)
            .map_err(|e| WriteError::io(&bases, None, "listing", e))?
        {
            let Some((disk_id, generation)) = parse_base_file_name(&name) else {
                continue;
            };
            match self.manifest.disks.iter().find(|d| d.disk_id == disk_id) {
                Some(d) if generation == d.base_generation => {}
                Some(d) if generation < d.base_generation => older.push(bases.join(&name)),
                _ => newer.push(bases.join(&name)),
            }
        }
        let first_listed = self.manifest.segments.first().map(|seg| seg.segment_id);
        for name in s
            .read_dir(&journal)
            .map_err(|e| WriteError::io(&journal, None, "listing", e))?
        {
            if let Some(id) = layout::parse_segment_file_name(&name)
                && first_listed.is_some_and(|first| id < first)
            {
                older.push(journal.join(&name));
            }
        }
        let marked = self.manifest.segments.iter().any(|s| s.prefix_released);
        let mut release = false;
        if !older.is_empty() || marked {
            let (registrations, live) = live_leases(self.storage, self.dir, self.seed)?;
            let base_lsn = self.manifest.base_lsn;
            if live.iter().all(|l| l.snapshot_base_lsn() >= base_lsn) {
                newer.append(&mut older);
                release = marked;
            }
            drop(registrations);
        }
        remove_files(self.storage, newer.iter().cloned())?;
        self.report.removed.extend(newer);
        if release {
            // A compaction committed the mark and may not have punched (or synced) the hole.
            crate::files::release_prefixes(self.storage, self.dir, &self.manifest)?;
        }
        // Rule O: a prune committed dead ranges and may not have punched (or synced) their
        // holes. No lease waits on them: every lease the prune saw was at a point it kept, and
        // later leases are taken on points the manifest offers, none of which reads them.
        crate::files::punch_dead_ranges(self.storage, self.dir, &self.manifest)?;
        Ok(())
    }

    /// Keeps the torn bytes `[offset, file_len)` in `quarantine/`, then zeroes them in the segment.
    fn cut_torn_tail(
        &mut self,
        path: &Path,
        file: &dyn replog_io::File,
        offset: u64,
        file_len: u64,
    ) -> Result<()> {
        let s = self.storage;
        let mut tail = vec![0u8; (file_len - offset) as usize];
        file.read_exact_at(&mut tail, offset)
            .map_err(|e| WriteError::io(path, Some(offset), "reading the torn tail", e))?;
        let qdir = self.dir.join(layout::QUARANTINE_DIR);
        let seg_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let qpath = qdir.join(format!("{seg_name}.{offset}.tail"));
        let q = s
            .open(&qpath, OpenMode::CreateTruncate)
            .map_err(|e| WriteError::io(&qpath, None, "creating", e))?;
        q.write_batch(
            &[WriteAt {
                offset: 0,
                data: &tail,
            }],
            true,
        )
        .map_err(|e| WriteError::io(&qpath, Some(0), "writing and syncing", e))?;
        s.sync_dir(&qdir)
            .map_err(|e| WriteError::io(&qdir, None, "syncing the directory", e))?;
        file.zero_range(offset, file_len - offset)
            .map_err(|e| WriteError::io(path, Some(offset), "zeroing the torn tail", e))?;
        file.sync_data().map_err(|e| {
            WriteError::io(path, Some(offset), "syncing after cutting the torn tail", e)
        })?;
        self.report.torn_tail = Some((path.to_path_buf(), offset, file_len - offset, qpath));
        Ok(())
    }
}

/// Parses `<disk>.<gen>.base` (decimal numbers) back to its disk id and generation.
fn parse_base_file_name(name: &str) -> Option<(u32, u64)> {
    let (disk, generation) = name.strip_suffix(".base")?.split_once('.')?;
    let canonical = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !canonical(disk) || !canonical(generation) {
        return None;
    }
    Some((disk.parse().ok()?, generation.parse().ok()?))
}
