//! Which journal records the kept recovery points still read: the garbage a prune may give
//! back, and the check `verify` makes that no kept point reads a record the manifest lists as
//! dead.
//!
//! A write record at LSN `L` after the base is *dead* when no piece of any disk's extent map
//! reads it at the first kept point at or after `L`. Maps only accumulate overwrites, so a record
//! not read there is not read at any later point either. A zero record is never read at all
//! (a view takes its zeros from the footer's extent, not from the record), so it is dead as soon
//! as a kept point follows it. Records after the newest kept point are never dead: a later point
//! may need them. Resize and point records are never candidates.
//!
//! [`KeptPass`] decides this for every kept point in one pass over the journal in LSN order,
//! with one extent map per disk ([`ExtentMap`], the view's own) that grows record by record: at
//! each kept point it looks up, for each record since the previous kept point, whether the
//! map's pieces over the record's disk range still read it. Whether a record is still read
//! depends only on the records after it, so once a kept point is decided the maps are emptied:
//! they only ever hold the records between two consecutive kept points. Memory: the maps and
//! the tracked records of one such interval (about 120 bytes a record), whatever the journal's
//! length, never a whole view and never one view per point.

use replog_format::manifest::Manifest;
use replog_format::record::RecordKind;
use replog_format::segment::ExtentEntry;

use crate::error::Result;
use crate::extent_map::{ExtentMap, RecordRef, Source};
use crate::vault::Vault;

/// A record the pass decided on: where it is and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackedRecord {
    /// The segment holding it.
    pub segment_id: u64,
    /// Its LSN.
    pub lsn: u64,
    /// Where its header starts in the segment.
    pub start: u64,
    /// Where it ends (its header, 64 bytes, plus its stored payload).
    pub end: u64,
    /// Write or zero.
    pub kind: RecordKind,
    disk_id: u32,
    disk_offset: u64,
    length: u64,
}

impl TrackedRecord {
    fn of(segment_id: u64, e: &ExtentEntry) -> TrackedRecord {
        TrackedRecord {
            segment_id,
            lsn: e.lsn,
            start: e.record_offset,
            end: e.record_offset + 64 + u64::from(e.stored_len),
            kind: e.kind,
            disk_id: e.disk_id,
            disk_offset: e.disk_offset,
            length: e.length,
        }
    }
}

/// What the pass found of a tracked record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No kept point reads it.
    Dead,
    /// The view at the kept point of this LSN reads it.
    Read {
        /// The kept point's LSN.
        point_lsn: u64,
    },
    /// No kept point follows it: a later point may read it.
    AfterNewest,
}

/// The one pass: extent maps of every disk, advanced record by record, and the tracked records
/// since the previous kept point. Feed it the journal's write, zero and resize records in LSN
/// order ([`KeptPass::feed`]), then [`KeptPass::finish`].
#[derive(Debug)]
pub struct KeptPass {
    base_lsn: u64,
    /// Kept point LSNs after the base, increasing.
    kept: Vec<u64>,
    next_kept: usize,
    /// Maps by disk id, each the size of the manifest's disk (its newest size: resizes only
    /// grow a disk, and a grown range reads no record until one writes it).
    maps: Vec<(u32, ExtentMap)>,
    pending: Vec<TrackedRecord>,
    segment_index: u32,
    last_segment: Option<u64>,
}

impl KeptPass {
    /// A pass over the journal of `manifest` after its base, deciding at the kept points at
    /// `kept_lsns` (any order; those at or below the base are dropped).
    pub fn new(manifest: &Manifest, kept_lsns: &[u64]) -> KeptPass {
        let mut kept: Vec<u64> = kept_lsns
            .iter()
            .copied()
            .filter(|&l| l > manifest.base_lsn)
            .collect();
        kept.sort_unstable();
        kept.dedup();
        KeptPass {
            base_lsn: manifest.base_lsn,
            kept,
            next_kept: 0,
            maps: manifest
                .disks
                .iter()
                .map(|d| (d.disk_id, ExtentMap::new(d.disk_bytes)))
                .collect(),
            pending: Vec::new(),
            segment_index: 0,
            last_segment: None,
        }
    }

    /// Adds kept points (the open segment's, found by scanning it), all after every record fed
    /// so far.
    pub fn add_kept(&mut self, lsns: impl IntoIterator<Item = u64>) {
        for lsn in lsns {
            if lsn > self.base_lsn && self.kept.last().is_none_or(|&l| l < lsn) {
                self.kept.push(lsn);
            }
        }
    }

    /// Applies the record `e` of segment `segment_id` (records in LSN order; those at or below
    /// the base are passed over). Every kept point before it is decided first, each tracked
    /// record reported to `out`. When `track`, the record is decided at the next kept point.
    /// A record outside its disk is passed over (damage that views and `verify` report).
    pub fn feed(
        &mut self,
        segment_id: u64,
        e: &ExtentEntry,
        track: bool,
        out: &mut impl FnMut(&TrackedRecord, Verdict),
    ) {
        if e.lsn <= self.base_lsn {
            return;
        }
        while self.next_kept < self.kept.len() && self.kept[self.next_kept] < e.lsn {
            self.decide(out);
        }
        if self.last_segment != Some(segment_id) {
            self.segment_index += u32::from(self.last_segment.is_some());
            self.last_segment = Some(segment_id);
        }
        let Ok(i) = self.maps.binary_search_by_key(&e.disk_id, |(id, _)| *id) else {
            return;
        };
        let map = &mut self.maps[i].1;
        let end = e.disk_offset.checked_add(e.length);
        let Some(end) = end.filter(|&end| end <= map.size() && e.length > 0) else {
            return;
        };
        match e.kind {
            RecordKind::Zero => map.insert(e.disk_offset, end, Source::Zero),
            RecordKind::Write if e.length <= u64::from(u32::MAX) => {
                let r = RecordRef::of_extent(self.segment_index, e);
                map.insert(e.disk_offset, end, Source::Record(r));
            }
            _ => return,
        }
        if track {
            self.pending.push(TrackedRecord::of(segment_id, e));
        }
    }

    /// Decides every kept point left, then reports the records after the newest.
    pub fn finish(mut self, out: &mut impl FnMut(&TrackedRecord, Verdict)) {
        while self.next_kept < self.kept.len() {
            self.decide(out);
        }
        for r in &self.pending {
            out(r, Verdict::AfterNewest);
        }
    }

    /// Decides the tracked records at the next kept point.
    fn decide(&mut self, out: &mut impl FnMut(&TrackedRecord, Verdict)) {
        let point_lsn = self.kept[self.next_kept];
        self.next_kept += 1;
        for r in self.pending.drain(..) {
            let read = r.kind == RecordKind::Write && {
                let i = self
                    .maps
                    .binary_search_by_key(&r.disk_id, |(id, _)| *id)
                    .expect("tracked records are of listed disks");
                let map = &self.maps[i].1;
                map.pieces_in(r.disk_offset, r.disk_offset + r.length)
                    .any(|(_, p)| matches!(p.source, Source::Record(s) if s.lsn == r.lsn))
            };
            let verdict = if read {
                Verdict::Read { point_lsn }
            } else {
                Verdict::Dead
            };
            out(&r, verdict);
        }
        // Pieces of records at or before this point cannot decide any later record: start the
        // next interval with empty maps.
        for (_, map) in &mut self.maps {
            *map = ExtentMap::new(map.size());
        }
    }
}

/// Reports every dead record of `vault`'s journal to `dead`, in LSN order: write and zero
/// records after the base that no point at `kept_lsns` reads (see the module). The segments'
/// extents come from their footers (each read once, and not kept loaded) and the open segment's
/// scan; no record is read.
pub fn dead_records(
    vault: &Vault,
    kept_lsns: &[u64],
    mut dead: impl FnMut(&TrackedRecord),
) -> Result<()> {
    let inner = &vault.inner;
    let mut pass = KeptPass::new(&inner.manifest, kept_lsns);
    let mut out = |r: &TrackedRecord, v: Verdict| {
        if v == Verdict::Dead {
            dead(r)
        }
    };
    let ctx = inner.segment_ctx();
    for slot in &inner.segments {
        if slot.last_lsn() <= inner.manifest.base_lsn {
            continue;
        }
        // Footers are not kept loaded: at 10^8 records they would be gigabytes.
        slot.with_extents(&ctx, |extents| {
            for e in extents {
                let track = matches!(e.kind, RecordKind::Write | RecordKind::Zero);
                pass.feed(slot.id, e, track, &mut out);
            }
        })?;
    }
    pass.finish(&mut out);
    Ok(())
}
