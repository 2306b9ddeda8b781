//! `verify`: checks every checksum and cross-reference of a vault without trusting any of it,
//! and names every damaged place (file, byte offset, what was expected). It never stops at the
//! first finding, and never panics on hostile bytes.
//!
//! What is checked: the vault header; the manifest and its agreement with the vault; every
//! segment record by record (CRC, own position, LSN order, disk and range against the disk's
//! size at that LSN, which starts at its base's and grows at each resize record, LZ4 payloads
//! decompress to their length); every sealed segment's footer and trailer against its
//! records and the manifest; every base header, checksum table page and chunk, including that
//! hole chunks and the padding after the disk's end read as zero; every digest cache's body CRC;
//! every lease file's CRC; that no segment file the manifest does not list holds records (a
//! manifest rolled back to an older copy).
//!
//! Dead ranges the manifest lists (version 5) are stepped over: their records are not checked
//! (their whole pages may be a hole), while a hole or damage anywhere else is. What is checked
//! of them instead: each lies on record boundaries the scan reaches, holds only write and zero
//! records of the footer, and no kept point reads any of its records: one pass over the
//! journal's extents with extent maps of the records between two kept points
//! (`liveness::KeptPass`) decides, at every offered point, whether the view there reads a listed
//! record.
//!
//! Memory is one segment mapping and one window of base chunks at a time, plus, when the
//! manifest lists dead ranges, the extent maps of the records between two kept points.
//!
//! A file verify is not allowed to read (`EACCES`, `EPERM`) says nothing about the vault's bytes:
//! it is not damage but a finding of its own ([`VerifyReport::unreadable`]), and the vault is then
//! not reported intact either.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use replog_format::base::{
    BASE_HEADER_BYTES, BaseHeader, ChunkSum, TABLE_ENTRIES_PER_PAGE, TABLE_PAGE_BYTES,
    decode_table_page, table_crc_update,
};
use replog_format::chain::ChainKey;
use replog_format::digest::{DIGEST_BYTES, DIGEST_HEADER_BYTES, DigestHeader};
use replog_format::garbage::{self, DeadRange};
use replog_format::header::VaultHeader;
use replog_format::layout;
use replog_format::lease::{LEASE_SUFFIX, LEASES_DIR, LeaseRecord};
use replog_format::manifest::{DiskEntry, Manifest, SegmentEntry};
use replog_format::record::{PointPayload, RecordKind};
use replog_format::segment::{self, Expect, ExtentEntry, PointEntry, SegmentEnd, SegmentHeader};
use replog_format::{DecodeError, vault_seed};
use replog_io::{OpenMode, Storage};

use crate::base_image::base_bytes_or_manifest;
pub use crate::chain_walk::ChainSummary;
use crate::chain_walk::ChainWalk;
use crate::liveness::{KeptPass, TrackedRecord, Verdict};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Bytes are wrong: a checksum, a cross-reference, a field.
    Damage,
    /// Bytes after the last valid record of the open segment: the tail of an interrupted write
    /// (the next writer open cuts it), or damage to the last records; the two cannot be told apart.
    TornTail,
    /// Worth knowing, not damage: leftovers of interrupted operations, kept torn tails.
    Notice,
}

/// One finding, naming the file (relative to the vault) and the byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// The file, relative to the vault directory.
    pub path: PathBuf,
    /// The byte offset in it, where one applies.
    pub offset: Option<u64>,
    /// What was expected and what was found.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{} at byte {o}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

/// The result of [`verify`].
#[derive(Clone, Debug, Default)]
pub struct VerifyReport {
    findings: Vec<Finding>,
    unreadable: Vec<Finding>,
    files_checked: u64,
    bytes_checked: u64,
    records_checked: u64,
    chunks_checked: u64,
    chain: ChainSummary,
}

impl VerifyReport {
    /// True when every file was read, nothing is damaged and no torn tail is pending.
    pub fn is_intact(&self) -> bool {
        self.unreadable.is_empty() && !self.is_damaged()
    }
    /// True when damage or a torn tail was found.
    pub fn is_damaged(&self) -> bool {
        self.findings.iter().any(|f| f.severity != Severity::Notice)
    }
    /// Every finding, in the order found.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }
    /// Files verify was not allowed to read or list (permission denied): not damage, but
    /// nothing was checked in them. Each finding's message is the operating system's error.
    pub fn unreadable(&self) -> &[Finding] {
        &self.unreadable
    }
    /// Files read.
    pub fn files_checked(&self) -> u64 {
        self.files_checked
    }
    /// Bytes read.
    pub fn bytes_checked(&self) -> u64 {
        self.bytes_checked
    }
    /// Journal records checked.
    pub fn records_checked(&self) -> u64 {
        self.records_checked
    }
    /// Base chunks checked.
    pub fn chunks_checked(&self) -> u64 {
        self.chunks_checked
    }
    /// What the journal's hash chain proved.
    pub fn chain(&self) -> &ChainSummary {
        &self.chain
    }
}

struct Checker<'a> {
    storage: &'a dyn Storage,
    dir: &'a Path,
    report: VerifyReport,
    /// The LSN of the last valid record of the journal, once the open segment scanned cleanly.
    journal_end: Option<u64>,
    /// Unlisted segments hold records past the manifest: it was rolled back.
    rolled_back: bool,
    /// Each disk's size (by disk id) at the record being checked: its base's, then each resize
    /// record's as the segments are walked in order.
    sizes: HashMap<u32, u64>,
    /// When the manifest lists dead ranges: the pass deciding whether a kept point reads one
    /// of their records. Dropped once a segment cannot be scanned (its damage is reported).
    kept: Option<KeptPass>,
    /// The journal's hash chain, walked record by record.
    chain: ChainWalk,
}

impl Checker<'_> {
    fn find(
        &mut self,
        severity: Severity,
        path: impl AsRef<Path>,
        offset: Option<u64>,
        message: impl Into<String>,
    ) {
        let path = path.as_ref();
        let rel = path.strip_prefix(self.dir).unwrap_or(path).to_path_buf();
        self.report.findings.push(Finding {
            severity,
            path: rel,
            offset,
            message: message.into(),
        });
    }

    fn damage(&mut self, path: impl AsRef<Path>, offset: Option<u64>, message: impl Into<String>) {
        self.find(Severity::Damage, path, offset, message);
    }

    fn decode_damage(&mut self, path: impl AsRef<Path>, base: u64, e: DecodeError) {
        let offset = base + e.offset;
        self.damage(path, Some(offset), format!("{}: {}", e.what, e.detail));
    }

    /// The whole file, or a finding and `None`.
    fn read_all(&mut self, path: &Path) -> Option<replog_io::Mapped> {
        let mapped = self
            .storage
            .open(path, OpenMode::Read)
            .and_then(|f| f.map());
        match mapped {
            Ok(m) => {
                self.report.files_checked += 1;
                self.report.bytes_checked += m.len() as u64;
                Some(m)
            }
            Err(e) => {
                self.cannot_read(path, "cannot be read", &e);
                None
            }
        }
    }

    /// Records a failure to open or read `path`: a permission error is no statement about the
    /// bytes, so it goes to the unreadable list; any other error (the file is missing, the
    /// medium fails) is damage.
    fn cannot_read(&mut self, path: &Path, what: &str, e: &std::io::Error) {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            let rel = path.strip_prefix(self.dir).unwrap_or(path).to_path_buf();
            self.report.unreadable.push(Finding {
                severity: Severity::Notice,
                path: rel,
                offset: None,
                message: e.to_string(),
            });
        } else {
            self.damage(path, None, format!("{what}: {e}"));
        }
    }

    /// The names in directory `dir`; none when it does not exist. A directory that cannot be
    /// listed is reported like a file that cannot be read.
    fn list(&mut self, dir: &Path) -> Vec<String> {
        match self.storage.read_dir(dir) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                self.cannot_read(dir, "cannot be listed", &e);
                Vec::new()
            }
        }
    }
}

/// Checks the vault at `dir`. Problems are findings in the report, never errors.
pub fn verify(storage: &dyn Storage, dir: &Path) -> VerifyReport {
    let mut c = Checker {
        storage,
        dir,
        report: VerifyReport::default(),
        journal_end: None,
        rolled_back: false,
        sizes: HashMap::new(),
        kept: None,
        chain: ChainWalk::new(ChainKey::public(&[0; 16])),
    };
    let vault_path = dir.join(layout::VAULT_FILE);
    let Some(bytes) = c.read_all(&vault_path) else {
        return c.report;
    };
    let header = match VaultHeader::decode(&bytes) {
        Ok(h) => h,
        Err(e) => {
            c.decode_damage(&vault_path, 0, e);
            return c.report;
        }
    };
    let manifest_path = dir.join(layout::MANIFEST_FILE);
    let manifest = c
        .read_all(&manifest_path)
        .and_then(|bytes| match Manifest::decode(&bytes) {
            Ok(m) => Some(m),
            Err(e) => {
                c.decode_damage(&manifest_path, 0, e);
                None
            }
        });
    let Some(manifest) = manifest else {
        return c.report;
    };
    if manifest.vault_id != header.vault_id {
        c.damage(
            &manifest_path,
            Some(32),
            "belongs to another vault than VAULT",
        );
        return c.report;
    }
    let seed = vault_seed(&header.vault_id);
    c.chain = ChainWalk::new(ChainKey::public(&header.vault_id));
    c.sizes = base_sizes(&c, &manifest, seed);
    if !manifest.dead_ranges.is_empty() {
        let offered = manifest
            .points
            .iter()
            .filter(|p| manifest.offers(p.point.point_id, p.lsn));
        let lsns: Vec<u64> = offered.map(|p| p.lsn).collect();
        c.kept = Some(KeptPass::new(&manifest, &lsns));
    }
    // First: whether the manifest was rolled back changes what a sealed open segment means.
    check_leftovers(&mut c, &header, seed, &manifest);
    for (i, seg) in manifest.segments.iter().enumerate() {
        let points: Vec<_> = manifest
            .points
            .iter()
            .filter(|p| p.segment_id == seg.segment_id)
            .collect();
        check_segment(
            &mut c,
            &header,
            seed,
            &manifest,
            seg,
            &points,
            i + 1 == manifest.segments.len(),
        );
    }
    check_kept_reads(&mut c);
    for disk in &manifest.disks {
        check_base(&mut c, &header, seed, disk, manifest.resized);
        check_digest(&mut c, seed, disk);
        check_added_lsn(&mut c, disk);
    }
    check_leases(&mut c, &header, seed);
    check_checkpoints(&mut c, &header, seed, &manifest);
    c.report.chain = std::mem::take(&mut c.chain.summary);
    c.report
}

/// Each disk's size at its base, by disk id: where the walk of the journal's sizes starts.
fn base_sizes(c: &Checker<'_>, manifest: &Manifest, seed: u32) -> HashMap<u32, u64> {
    let size = |d: &DiskEntry| base_bytes_or_manifest(c.storage, c.dir, manifest, d, seed);
    manifest
        .disks
        .iter()
        .map(|d| (d.disk_id, size(d)))
        .collect()
}

/// Every checkpoint at or after the base must load against the manifest; older ones are
/// leftovers the next checkpoint maintenance removes. Once Complete Migration removed the
/// journal, no checkpoint has a segment to end: any left is a leftover of its interrupted
/// cleanup, which its next run removes.
fn check_checkpoints(c: &mut Checker<'_>, header: &VaultHeader, seed: u32, manifest: &Manifest) {
    let index = c.dir.join(layout::INDEX_DIR);
    for name in c.list(&index) {
        let path = index.join(&name);
        let Some(lsn) = layout::parse_checkpoint_file_name(&name) else {
            c.find(
                Severity::Notice,
                &path,
                None,
                "not a checkpoint (a temporary file of an interrupted checkpoint write)",
            );
            continue;
        };
        // At the base LSN too: compaction drops every segment ending at or below the base, so
        // such a checkpoint names deleted segments and no view starts from it.
        if lsn <= manifest.base_lsn && manifest.base_lsn > 0 {
            c.find(
                Severity::Notice,
                &path,
                None,
                "older than the base images; no longer used",
            );
            continue;
        }
        if journal_removed(manifest) {
            c.find(
                Severity::Notice,
                &path,
                None,
                "left from before Complete Migration removed the journal; no longer used (`replog complete-migration` run again removes it)",
            );
            continue;
        }
        c.report.files_checked += 1;
        let checked =
            crate::checkpoint::check(c.storage, c.dir, header.vault_id, seed, manifest, lsn);
        let Err(e) = checked else {
            continue;
        };
        if let Some(io) = permission_error(&e) {
            let file = e.path().map_or(path.clone(), |p| c.dir.join(p));
            c.cannot_read(&file, "cannot be read", &io);
            continue;
        }
        if e.kind() == crate::ReadErrorKind::Unsupported {
            c.find(
                Severity::Notice,
                &path,
                None,
                "an older checkpoint format (derived data): views ignore it and the next checkpoint maintenance rewrites it",
            );
            continue;
        }
        c.damage(
            &path,
            e.offset(),
            format!(
                "checkpoint: {} (views pass it over and replay the journal)",
                e.detail()
            ),
        );
    }
}

/// Whether Complete Migration removed the journal: the manifest lists no segment any more.
fn journal_removed(manifest: &Manifest) -> bool {
    manifest.segments.is_empty()
        && manifest
            .lifecycle
            .migration
            .as_ref()
            .is_some_and(|m| m.phase == replog_format::lifecycle::MigrationPhase::Complete)
}

/// The permission error under a reader error, if that is what it is.
fn permission_error(e: &crate::ReadError) -> Option<std::io::Error> {
    let io = std::error::Error::source(e)?.downcast_ref::<std::io::Error>()?;
    (io.kind() == std::io::ErrorKind::PermissionDenied)
        .then(|| std::io::Error::new(io.kind(), io.to_string()))
}

/// Checks one listed segment: its records against the manifest, its first LSN, and how it
/// ends against what the manifest records of its seal. A released dead prefix is not read (it
/// may be a hole, or the old records if the release did not reach the disk): the scan starts
/// at the base point's marker.
fn check_segment(
    c: &mut Checker<'_>,
    header: &VaultHeader,
    seed: u32,
    manifest: &Manifest,
    seg: &SegmentEntry,
    manifest_points: &[&replog_format::manifest::PointRef],
    is_last: bool,
) {
    let path = layout::segment_path(c.dir, seg.segment_id);
    let Some(bytes) = c.read_all(&path) else {
        return;
    };
    let expect = Expect {
        vault_id: header.vault_id,
        seed,
        segment_id: seg.segment_id,
    };
    let live = manifest.live_start(seg.segment_id);
    let dead = manifest.dead_ranges_of(seg.segment_id);
    // The scan decodes the header again, and reports it when it is damaged.
    if let Ok(h) = SegmentHeader::decode(&bytes, seed) {
        let problem = c.chain.segment(h.chain_start, h.first_lsn, live.is_some());
        if let Some(problem) = problem {
            c.damage(&path, Some(60), problem);
        }
    }
    let scanned = scan_records(c, &path, &bytes, &expect, manifest, (live, dead));
    let Some((scan, records)) = scanned else {
        c.kept = None;
        c.chain.lost();
        return;
    };
    let sealed = seg.sealed.is_some();
    feed_kept(c, manifest, (seg.segment_id, sealed), &scan, &records);
    if is_last {
        c.journal_end = Some(scan.last_lsn);
    }
    if scan.header.first_lsn != seg.first_lsn {
        c.damage(
            &path,
            Some(40),
            format!(
                "starts at LSN {}, the manifest says {}",
                scan.header.first_lsn, seg.first_lsn
            ),
        );
    }
    match (&scan.end, seg.sealed) {
        (
            SegmentEnd::Sealed {
                footer_offset,
                trailer,
            },
            Some(info),
        ) => {
            if !seal_agrees(&info, *footer_offset, trailer, scan.valid_end) {
                c.damage(
                    &path,
                    Some(*footer_offset),
                    "the footer and trailer disagree with the manifest's record of the seal",
                );
            }
            let footer = scan.footer.as_ref().expect("a sealed scan has its footer");
            let from = live.map_or(0, |l| l.lsn);
            check_dead_kinds(c, &path, footer, dead);
            check_footer_index(
                c,
                (&path, seg.segment_id, *footer_offset),
                &footer_from(footer, from, dead),
                &records,
                &points_from(manifest_points, from),
            );
        }
        (end, _) => check_unsealed_end(
            c,
            &path,
            end,
            seg.sealed.is_some(),
            is_last,
            bytes.len() as u64,
        ),
    }
}

/// The write, zero and point records a segment scan found, as its footer would index them.
struct SegmentRecords {
    extents: Vec<ExtentEntry>,
    points: Vec<PointEntry>,
}

/// Scans a segment, collecting its records and reporting each write or zero record that
/// disagrees with the manifest and each point payload that does not decode. Returns nothing
/// when the scan itself fails, which is reported too.
fn scan_records(
    c: &mut Checker<'_>,
    path: &Path,
    bytes: &[u8],
    expect: &Expect,
    manifest: &Manifest,
    (live, dead): (Option<segment::LiveStart>, &[DeadRange]),
) -> Option<(segment::Scan, SegmentRecords)> {
    let mut extents = Vec::new();
    let mut points = Vec::new();
    let mut problems = Vec::new();
    let sizes = &mut c.sizes;
    let chain = &mut c.chain;
    let scan = segment::scan_skipping(bytes, expect, live, dead, |h, payload| {
        let mut point = None;
        match h.kind {
            RecordKind::Write | RecordKind::Zero => {
                if let Some(problem) = check_extent(manifest, sizes, h, payload) {
                    problems.push((h.segment_offset, problem));
                }
                extents.push(ExtentEntry::from_header(h));
            }
            RecordKind::Resize => {
                if let Some(problem) = check_resize(manifest, sizes, h) {
                    problems.push((h.segment_offset, problem));
                }
                extents.push(ExtentEntry::from_header(h));
            }
            RecordKind::Point => match PointPayload::decode(payload) {
                Ok(p) => point = Some(p),
                Err(e) => problems.push((
                    h.segment_offset + 64 + e.offset,
                    format!("point payload: {}", e.detail),
                )),
            },
            RecordKind::Footer => return,
        }
        if let Some(problem) = chain.record(h, payload, point.as_ref()) {
            problems.push((h.segment_offset, problem));
        }
        if let Some(point) = point {
            points.push(PointEntry {
                lsn: h.lsn,
                record_offset: h.segment_offset,
                point,
            });
        }
    });
    c.report.records_checked += (extents.len() + points.len()) as u64;
    for (offset, problem) in problems {
        c.damage(path, Some(offset), problem);
    }
    match scan {
        Ok(scan) => Some((scan, SegmentRecords { extents, points })),
        Err(e) => {
            c.decode_damage(path, 0, e);
            None
        }
    }
}

/// Whether the seal found in a segment is the one the manifest records.
fn seal_agrees(
    info: &replog_format::manifest::SealedInfo,
    footer_offset: u64,
    trailer: &segment::Trailer,
    valid_end: u64,
) -> bool {
    info.last_lsn == trailer.last_lsn
        && info.footer_offset == footer_offset
        && info.footer_crc == trailer.footer_crc
        && info.file_bytes == valid_end
}

/// The entries of `footer` from LSN `from` on and outside the `dead` ranges: those of the
/// records a scan from a released prefix's live start, stepping over the dead ranges, reads.
fn footer_from(
    footer: &segment::FooterIndex,
    from: u64,
    dead: &[DeadRange],
) -> segment::FooterIndex {
    let read = |lsn: u64| lsn >= from && !garbage::holds_lsn(dead, lsn);
    let extents = footer.extents.iter().filter(|e| read(e.lsn));
    let points = footer.points.iter().filter(|p| read(p.lsn));
    segment::FooterIndex {
        extents: extents.cloned().collect(),
        points: points.cloned().collect(),
    }
}

/// A dead range may hold only write and zero records: a point or resize record inside one
/// would be skipped by every reader.
fn check_dead_kinds(
    c: &mut Checker<'_>,
    path: &Path,
    footer: &segment::FooterIndex,
    dead: &[DeadRange],
) {
    let resizes = footer
        .extents
        .iter()
        .filter(|e| e.kind == RecordKind::Resize);
    let kept = resizes.map(|e| (e.lsn, e.record_offset, "resize")).chain(
        footer
            .points
            .iter()
            .map(|p| (p.lsn, p.record_offset, "point")),
    );
    let inside: Vec<_> = kept
        .filter(|(lsn, ..)| garbage::holds_lsn(dead, *lsn))
        .collect();
    for (lsn, offset, what) in inside {
        c.damage(
            path,
            Some(offset),
            format!("the {what} record of LSN {lsn} lies in a dead range the manifest lists; only write and zero records may"),
        );
    }
}

/// Feeds a scanned segment's extents to the kept-point pass: a sealed segment's from its footer
/// (the records of its dead ranges included, which the scan stepped over), tracking those of
/// its dead ranges; the open segment's (which has none) from the scan, after its offered
/// points join the kept, even when the scan found it sealed and the manifest does not say so
/// yet.
fn feed_kept(
    c: &mut Checker<'_>,
    manifest: &Manifest,
    (segment_id, sealed): (u64, bool),
    scan: &segment::Scan,
    records: &SegmentRecords,
) {
    let Some(pass) = c.kept.as_mut() else {
        return;
    };
    let dead = manifest.dead_ranges_of(segment_id);
    let mut found = Vec::new();
    let mut out = |r: &TrackedRecord, v: Verdict| found.push((*r, v));
    match (&scan.footer, sealed) {
        (Some(footer), true) => {
            for e in &footer.extents {
                pass.feed(segment_id, e, garbage::holds_lsn(dead, e.lsn), &mut out);
            }
        }
        _ => {
            let open = records.points.iter();
            pass.add_kept(
                open.filter(|p| manifest.offers(p.point.point_id, p.lsn))
                    .map(|p| p.lsn),
            );
            for e in &records.extents {
                pass.feed(segment_id, e, false, &mut out);
            }
        }
    }
    report_kept_reads(c, found);
}

/// Decides the kept points left after the last segment.
fn check_kept_reads(c: &mut Checker<'_>) {
    let Some(pass) = c.kept.take() else {
        return;
    };
    let mut found = Vec::new();
    pass.finish(&mut |r: &TrackedRecord, v: Verdict| found.push((*r, v)));
    report_kept_reads(c, found);
}

/// Reports each record of a dead range that a kept point reads, or that no kept point follows.
fn report_kept_reads(c: &mut Checker<'_>, found: Vec<(TrackedRecord, Verdict)>) {
    for (r, verdict) in found {
        let path = layout::segment_path(c.dir, r.segment_id);
        let why = match verdict {
            Verdict::Dead => continue,
            Verdict::Read { point_lsn } => format!(
                "the view at the point of LSN {point_lsn} reads the {} record of LSN {}, which lies in a dead range the manifest lists",
                r.kind.name(),
                r.lsn
            ),
            Verdict::AfterNewest => format!(
                "the {} record of LSN {} lies in a dead range the manifest lists, but no kept point follows it",
                r.kind.name(),
                r.lsn
            ),
        };
        c.damage(&path, Some(r.start), why);
    }
}

/// The manifest's points of a segment from LSN `from` on.
fn points_from<'m>(
    points: &[&'m replog_format::manifest::PointRef],
    from: u64,
) -> Vec<&'m replog_format::manifest::PointRef> {
    points.iter().copied().filter(|p| p.lsn >= from).collect()
}

/// Checks a sealed segment's footer index against the records scanned, and the points the
/// manifest lists for the segment against the footer's.
fn check_footer_index(
    c: &mut Checker<'_>,
    (path, segment_id, footer_offset): (&Path, u64, u64),
    footer: &segment::FooterIndex,
    records: &SegmentRecords,
    manifest_points: &[&replog_format::manifest::PointRef],
) {
    if footer.extents != records.extents || footer.points != records.points {
        c.damage(
            path,
            Some(footer_offset),
            "the footer index does not match the segment's records",
        );
    }
    let listed: Vec<_> = manifest_points
        .iter()
        .map(|p| (p.lsn, p.record_offset, &p.point))
        .collect();
    let found: Vec<_> = records
        .points
        .iter()
        .map(|p| (p.lsn, p.record_offset, &p.point))
        .collect();
    if listed != found {
        c.damage(
            c.dir.join(layout::MANIFEST_FILE),
            None,
            format!("the points listed for segment {segment_id} differ from its footer"),
        );
    }
}

/// Reports how a segment ends when the end and the manifest do not both say sealed: a seal
/// the manifest does not record yet, a torn or clean end of a segment the manifest says is
/// sealed (damage), or a torn tail of the open segment.
fn check_unsealed_end(
    c: &mut Checker<'_>,
    path: &Path,
    end: &SegmentEnd,
    manifest_sealed: bool,
    is_last: bool,
    file_bytes: u64,
) {
    match (end, manifest_sealed) {
        (SegmentEnd::Sealed { footer_offset, .. }, false) if is_last && c.rolled_back => c.find(
            Severity::Notice,
            path,
            Some(*footer_offset),
            "sealed, but the manifest does not record it: the manifest is older than the journal (see the unlisted segments after it)",
        ),
        (SegmentEnd::Sealed { footer_offset, .. }, false) if is_last => c.find(
            Severity::Notice,
            path,
            Some(*footer_offset),
            "sealed, but the manifest does not record it yet (an interrupted rotation; the next writer open completes it)",
        ),
        (SegmentEnd::Torn { offset, reason }, true) => c.damage(
            path,
            Some(*offset),
            format!("{} (the manifest says this segment was sealed, so every byte of it was acknowledged: this is damage, not a torn tail)", reason.detail),
        ),
        (SegmentEnd::Clean { offset }, true) => c.damage(path, Some(*offset), "the manifest says this segment is sealed, but its records end here with no footer and trailer"),
        (SegmentEnd::Torn { offset, reason }, false) => c.find(
            Severity::TornTail,
            path,
            Some(*offset),
            format!(
                "{} bytes after the last valid record are not a valid record ({}): the tail of an interrupted write, which the next writer open cuts, or damage to the last records",
                file_bytes - offset,
                reason.detail
            ),
        ),
        _ => {}
    }
}

/// The disk a write, zero or resize record targets, if the manifest lists it and the record
/// comes after it was added; otherwise a problem sentence.
fn target_disk<'m>(
    manifest: &'m Manifest,
    h: &replog_format::record::RecordHeader,
) -> Result<&'m DiskEntry, String> {
    let Some(disk) = manifest.disks.iter().find(|d| d.disk_id == h.disk_id) else {
        return Err(format!(
            "record LSN {} targets disk id {}, which the manifest does not list",
            h.lsn, h.disk_id
        ));
    };
    if h.lsn < disk.added_lsn {
        return Err(format!(
            "record LSN {} targets disk {:?}, added at LSN {}",
            h.lsn, disk.name, disk.added_lsn
        ));
    }
    Ok(disk)
}

/// Cross-checks a resize record against the disk's size before it (a record the base already
/// holds, at or below `base_lsn`, is not applied again) and the manifest's newest size, and
/// applies it to `sizes`; returns a problem sentence.
fn check_resize(
    manifest: &Manifest,
    sizes: &mut HashMap<u32, u64>,
    h: &replog_format::record::RecordHeader,
) -> Option<String> {
    let disk = match target_disk(manifest, h) {
        Ok(disk) => disk,
        Err(problem) => return Some(problem),
    };
    let (old_bytes, new_bytes) = h.resize_bytes().expect("a resize record");
    if h.lsn <= manifest.base_lsn {
        return None;
    }
    let size = sizes.entry(disk.disk_id).or_insert(disk.disk_bytes);
    let found = *size;
    *size = new_bytes;
    if old_bytes != found || !manifest.resized {
        return Some(format!(
            "record LSN {} grows disk {:?} from {old_bytes} bytes, but it is {found} bytes there{}",
            h.lsn,
            disk.name,
            if manifest.resized {
                ""
            } else {
                " (and the manifest does not say the vault holds resize records)"
            }
        ));
    }
    None
}

/// Cross-checks a write or zero record against the manifest and the disk's size at its LSN;
/// returns a problem sentence.
fn check_extent(
    manifest: &Manifest,
    sizes: &HashMap<u32, u64>,
    h: &replog_format::record::RecordHeader,
    payload: &[u8],
) -> Option<String> {
    let disk = match target_disk(manifest, h) {
        Ok(disk) => disk,
        Err(problem) => return Some(problem),
    };
    let size = sizes.get(&disk.disk_id).copied().unwrap_or(disk.disk_bytes);
    if h.disk_offset + h.length > size {
        return Some(format!(
            "record LSN {} ends at byte {} of disk {:?}, which has {size} bytes at that LSN",
            h.lsn,
            h.disk_offset + h.length,
            disk.name,
        ));
    }
    if h.kind == RecordKind::Write && h.is_lz4() {
        match lz4_flex::block::decompress(payload, h.length as usize) {
            Ok(out) if out.len() as u64 == h.length => {}
            _ => {
                return Some(format!(
                    "record LSN {} has an LZ4 payload that does not decompress to {} bytes",
                    h.lsn, h.length
                ));
            }
        }
    }
    None
}

/// Bytes of base data read and checked at a time.
const BASE_WINDOW_BYTES: u64 = 8 << 20;

fn check_base(
    c: &mut Checker<'_>,
    header: &VaultHeader,
    seed: u32,
    disk: &DiskEntry,
    resized: bool,
) {
    let path = layout::base_path(c.dir, disk.disk_id, disk.base_generation);
    let file = match c.storage.open(&path, OpenMode::Read) {
        Ok(f) => f,
        Err(e) => return c.cannot_read(&path, "cannot be opened", &e),
    };
    c.report.files_checked += 1;
    let mut head = vec![0u8; BASE_HEADER_BYTES];
    if let Err(e) = file.read_exact_at(&mut head, 0) {
        return c.damage(&path, Some(0), format!("the header cannot be read: {e}"));
    }
    let base = match BaseHeader::decode(&head, seed) {
        Ok(b) => b,
        Err(e) => return c.decode_damage(&path, 0, e),
    };
    let stored_crc = u32::from_le_bytes(head[BASE_HEADER_BYTES - 4..].try_into().expect("4 bytes"));
    if stored_crc != disk.base_header_crc
        || base.disk_id != disk.disk_id
        || (base.disk_bytes != disk.disk_bytes && !resized)
        || base.disk_bytes > disk.disk_bytes
        || base.generation != disk.base_generation
        || base.vault_id != header.vault_id
        || base.block_bytes != header.block_bytes
    {
        c.damage(
            &path,
            Some(0),
            format!(
                "the base header does not describe disk {:?} as the manifest does",
                disk.name
            ),
        );
        return;
    }
    match file.len() {
        Ok(len) if len == base.file_bytes() => {}
        Ok(len) => c.damage(
            &path,
            Some(len.min(base.file_bytes())),
            format!("is {len} bytes, the layout needs {}", base.file_bytes()),
        ),
        Err(e) => c.damage(&path, None, format!("cannot be measured: {e}")),
    }
    check_base_chunks(c, &path, file.as_ref(), &base, seed);
}

/// Checks every chunk of a base against its checksum table, one window of chunks at a time,
/// and the table against the table CRC in the header.
fn check_base_chunks(
    c: &mut Checker<'_>,
    path: &Path,
    file: &dyn replog_io::File,
    base: &BaseHeader,
    seed: u32,
) {
    let block = u64::from(base.block_bytes);
    let chunks = base.chunk_count();
    let mut table = TableReader::new(seed);
    let mut window = vec![0u8; BASE_WINDOW_BYTES.max(block).min(chunks.max(1) * block) as usize];
    let chunks_per_window = (window.len() as u64 / block).max(1);
    let mut k = 0;
    while k < chunks {
        let n = (chunks - k).min(chunks_per_window);
        let sums = match (k..k + n)
            .map(|chunk| table.sum(file, base, chunk))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(sums) => sums,
            Err((offset, message)) => return c.damage(path, Some(offset), message),
        };
        let start = k * block;
        let len = (n * block) as usize;
        let data = &mut window[..len];
        if let Err(e) = file.read_exact_at(data, base.data_offset() + start) {
            return c.damage(
                path,
                Some(base.data_offset() + start),
                format!("base data cannot be read: {e}"),
            );
        }
        let bad: Vec<(u64, String)> = data
            .par_chunks(block as usize)
            .zip(sums.par_iter())
            .enumerate()
            .filter_map(|(i, (bytes, sum))| chunk_problem(base, k + i as u64, bytes, sum))
            .collect();
        for (offset, message) in bad {
            c.damage(path, Some(offset), message);
        }
        c.report.chunks_checked += n;
        c.report.bytes_checked += len as u64;
        k += n;
    }
    if table.crc != base.table_crc {
        c.damage(
            path,
            Some(88),
            "the checksum table does not match the table CRC in the header",
        );
    }
}

/// Reads a base's checksum table one page at a time, in order, folding each page into the
/// table CRC as it is loaded.
struct TableReader {
    seed: u32,
    page: Vec<u8>,
    sums: Vec<ChunkSum>,
    loaded: u64,
    crc: u32,
}

impl TableReader {
    fn new(seed: u32) -> TableReader {
        TableReader {
            seed,
            page: vec![0u8; TABLE_PAGE_BYTES],
            sums: Vec::new(),
            loaded: u64::MAX,
            crc: seed,
        }
    }

    /// The table entry of `chunk`, loading its page if it is not the current one. A page that
    /// cannot be read or decoded is returned as its offset and a problem sentence.
    fn sum(
        &mut self,
        file: &dyn replog_io::File,
        base: &BaseHeader,
        chunk: u64,
    ) -> Result<ChunkSum, (u64, String)> {
        let page_index = chunk / TABLE_ENTRIES_PER_PAGE as u64;
        if page_index != self.loaded {
            let offset = base.table_offset() + page_index * TABLE_PAGE_BYTES as u64;
            let entries = (base.chunk_count() - page_index * TABLE_ENTRIES_PER_PAGE as u64)
                .min(TABLE_ENTRIES_PER_PAGE as u64) as usize;
            self.sums = file
                .read_exact_at(&mut self.page, offset)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    decode_table_page(&self.page, page_index as u32, entries, self.seed)
                        .map_err(|e| format!("{}: {}", e.what, e.detail))
                })
                .map_err(|m| (offset, m))?;
            self.crc = table_crc_update(self.crc, &self.page);
            self.loaded = page_index;
        }
        Ok(self.sums[(chunk % TABLE_ENTRIES_PER_PAGE as u64) as usize])
    }
}

/// Checks chunk `chunk` of a base, read as `bytes`, against its table entry: zero padding after
/// the disk's end, no data in a hole, and its CRC. Returns the offset and a problem sentence.
fn chunk_problem(
    base: &BaseHeader,
    chunk: u64,
    bytes: &[u8],
    sum: &ChunkSum,
) -> Option<(u64, String)> {
    let block = u64::from(base.block_bytes);
    let chunk_start = chunk * block;
    let within = (base.disk_bytes - chunk_start).min(block) as usize;
    let (inside, padding) = bytes.split_at(within);
    let at = base.data_offset() + chunk_start;
    if padding.iter().any(|&b| b != 0) {
        return Some((
            at + within as u64,
            "bytes after the end of the disk are not zero".to_owned(),
        ));
    }
    if sum.zero && inside.iter().any(|&b| b != 0) {
        return Some((
            at,
            format!("chunk {chunk} is recorded as a hole but holds data"),
        ));
    }
    let crc = crc32fast::hash(inside);
    (crc != sum.crc).then(|| {
        (
            at,
            format!(
                "chunk {chunk} fails its checksum (table {:#010x}, data {crc:#010x})",
                sum.crc
            ),
        )
    })
}

/// A disk is added only after every record before it is durable: the journal must reach there.
fn check_added_lsn(c: &mut Checker<'_>, disk: &DiskEntry) {
    if let Some(end) = c.journal_end
        && disk.added_lsn > end + 1
    {
        c.damage(
            c.dir.join(layout::MANIFEST_FILE),
            None,
            format!("disk {:?} was added after LSN {} was durable, but the journal ends at LSN {end}: acknowledged records are missing", disk.name, disk.added_lsn - 1),
        );
    }
}

fn check_digest(c: &mut Checker<'_>, seed: u32, disk: &DiskEntry) {
    let path = layout::digest_path(c.dir, disk.disk_id);
    let exists = c.storage.exists(&path).unwrap_or(false);
    if !exists {
        return c.find(
            Severity::Notice,
            &path,
            None,
            format!(
                "no digest cache for disk {:?}; the next ingest sends every block",
                disk.name
            ),
        );
    }
    let Some(bytes) = c.read_all(&path) else {
        return;
    };
    if bytes.len() < DIGEST_HEADER_BYTES {
        return c.damage(
            &path,
            Some(0),
            "the digest cache is shorter than its header",
        );
    }
    let header = match DigestHeader::decode(&bytes[..DIGEST_HEADER_BYTES], seed) {
        Ok(h) => h,
        Err(e) => return c.decode_damage(&path, 0, e),
    };
    let body = &bytes[DIGEST_HEADER_BYTES..];
    if body.len() as u64 != header.block_count() * DIGEST_BYTES as u64 {
        return c.damage(
            &path,
            Some(DIGEST_HEADER_BYTES as u64),
            "the digest cache body has the wrong length",
        );
    }
    if let Some(end) = c.journal_end
        && header.valid_lsn > end
    {
        c.damage(
            &path,
            Some(48),
            format!("the digest cache was written after LSN {} was durable, but the journal ends at LSN {end}: acknowledged records are missing", header.valid_lsn),
        );
    }
    if replog_format::crc32_seeded(seed, &[body]) != header.body_crc {
        c.damage(&path, Some(DIGEST_HEADER_BYTES as u64), "the digest cache body fails its checksum (advisory data: the next ingest re-sends the disk)");
    }
}

/// What a segment file that the manifest does not list is, and so what may be done with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnlistedSegment {
    /// Older than the first listed segment, or any segment once Complete Migration removed the
    /// journal: a committed compaction or migration had not deleted it yet.
    Superseded,
    /// The segment after the manifest's open one, holding no record: an interrupted rotation
    /// created it and stopped before the manifest listed it. It holds nothing acknowledged.
    InterruptedRotation,
    /// Anything else, such as a segment holding records after the manifest's open segment. A
    /// rotation leaves at most one empty segment, so this is a manifest older than the journal
    /// (restored from an older copy): the segment holds history that must not be removed.
    RolledBack,
}

/// Classifies segment `id`, whose file holds `bytes`, which `manifest` does not list. `expect`
/// names the vault and segment `id`. Both the writer's recovery and `verify` decide by this.
pub fn classify_unlisted_segment(
    manifest: &Manifest,
    id: u64,
    bytes: &[u8],
    expect: &Expect,
) -> UnlistedSegment {
    let (Some(first), Some(open)) = (manifest.segments.first(), manifest.segments.last()) else {
        return UnlistedSegment::Superseded;
    };
    if id < first.segment_id {
        return UnlistedSegment::Superseded;
    }
    // A rotation writes the header, syncs it and then lists the segment before any record
    // goes in: a crash leaves the header at most, maybe torn.
    let empty = bytes.len() <= segment::SEGMENT_HEADER_BYTES
        || segment::scan(bytes, expect, |_, _| {}).is_ok_and(|s| {
            s.record_count == 0 && s.footer.is_none() && matches!(s.end, SegmentEnd::Clean { .. })
        });
    if id == open.segment_id + 1 && empty {
        UnlistedSegment::InterruptedRotation
    } else {
        UnlistedSegment::RolledBack
    }
}

/// What an unlisted segment that is not an interrupted rotation's holds, in a few words.
pub fn describe_unlisted_segment(bytes: &[u8], expect: &Expect) -> String {
    match segment::scan(bytes, expect, |_, _| {}) {
        Ok(s) if s.record_count > 0 => format!(
            "holds {} record{}, LSN {} to {}",
            s.record_count,
            if s.record_count == 1 { "" } else { "s" },
            s.header.first_lsn,
            s.last_lsn
        ),
        Ok(_) => "is not the one empty segment an interrupted rotation leaves".to_owned(),
        Err(e) => format!("is not an empty segment ({}: {})", e.what, e.detail),
    }
}

fn check_leftovers(c: &mut Checker<'_>, header: &VaultHeader, seed: u32, manifest: &Manifest) {
    let journal = c.dir.join(layout::JOURNAL_DIR);
    for name in c.list(&journal) {
        let Some(id) = layout::parse_segment_file_name(&name) else {
            continue;
        };
        if manifest.segments.iter().any(|s| s.segment_id == id) {
            continue;
        }
        let path = journal.join(&name);
        let Some(bytes) = c.read_all(&path) else {
            continue;
        };
        let expect = Expect {
            vault_id: header.vault_id,
            seed,
            segment_id: id,
        };
        match classify_unlisted_segment(manifest, id, &bytes, &expect) {
            UnlistedSegment::Superseded => c.find(Severity::Notice, &path, None, "not listed in the manifest and older than its journal (a compaction or migration had not deleted it yet; the next writer open or migration run removes it)"),
            UnlistedSegment::InterruptedRotation => c.find(Severity::Notice, &path, None, "not listed in the manifest (left empty by an interrupted rotation; the next writer open removes it)"),
            UnlistedSegment::RolledBack => {
                c.rolled_back = true;
                let what = describe_unlisted_segment(&bytes, &expect);
                c.damage(&path, None, format!("not listed in the manifest, but {what}: an interrupted rotation leaves at most one empty segment, so MANIFEST is older than the journal (restored from an older copy?). The writer refuses to open the vault; put back the MANIFEST that belongs with this journal"));
            }
        }
    }
    let quarantine = c.dir.join(layout::QUARANTINE_DIR);
    for name in c.list(&quarantine) {
        c.find(
            Severity::Notice,
            quarantine.join(&name),
            None,
            "a torn tail cut by recovery, kept for inspection",
        );
    }
}

/// Every lease file must decode and pass its CRC, and belong to this vault. An empty one is a
/// lease being registered right now (created, not yet written) or left by a holder that died in
/// between: compaction removes it once nobody holds it.
fn check_leases(c: &mut Checker<'_>, header: &VaultHeader, seed: u32) {
    let leases = c.dir.join(LEASES_DIR);
    for name in c.list(&leases) {
        if !name.ends_with(LEASE_SUFFIX) {
            continue;
        }
        let path = leases.join(&name);
        let Some(bytes) = c.read_all(&path) else {
            continue;
        };
        if bytes.is_empty() {
            c.find(
                Severity::Notice,
                &path,
                None,
                "an empty lease: being registered, or its holder died before writing it",
            );
            continue;
        }
        match LeaseRecord::decode(&bytes, seed) {
            Ok(lease) if lease.vault_id != header.vault_id => {
                c.damage(&path, Some(16), "the lease belongs to another vault")
            }
            Ok(_) => {}
            Err(e) => c.decode_damage(&path, 0, e),
        }
    }
}
