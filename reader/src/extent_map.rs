//! The extent map of one disk at one point: which source holds each byte range, as disjoint
//! pieces keyed by their start.
//!
//! A map starts as one piece covering the whole disk from its base. Applying the journal's write
//! and zero records in LSN order with [`ExtentMap::insert`] leaves, for every byte, the last
//! record that touched it. Memory is proportional to the number of pieces (at most three new
//! pieces per insert, fewer after merging), never to the size of the disk: 20 bytes a piece in
//! a sorted array, plus each record's fields once in a table (48 bytes a record). A resize record
//! grows the map ([`ExtentMap::grow`]): the new range has no base and reads as zeros.

use std::collections::BTreeMap;

use replog_format::segment::ExtentEntry;

/// Where the bytes of a journal piece live: a range of one write record's logical data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef {
    /// Index of the segment in the vault's segment list.
    pub segment_index: u32,
    /// Where the record's header starts in its segment.
    pub record_offset: u64,
    /// The record's LSN, checked against the header when the record is read.
    pub lsn: u64,
    /// Where the record writes on the disk, checked against the header.
    pub disk_offset: u64,
    /// The record's logical length.
    pub length: u32,
    /// Payload bytes after the header.
    pub stored_len: u32,
    /// The record's CRC, as the index promised it.
    pub record_crc: u32,
    /// The record's flags (LZ4).
    pub flags: u8,
    /// Offset, within the record's logical data, of the piece's first byte.
    pub data_offset: u32,
}

impl RecordRef {
    /// The whole record an index entry describes, in the segment at `segment_index`. The
    /// caller has checked that `e.length` fits a `u32` (the views refuse an entry that does
    /// not).
    pub fn of_extent(segment_index: u32, e: &ExtentEntry) -> RecordRef {
        RecordRef {
            segment_index,
            record_offset: e.record_offset,
            lsn: e.lsn,
            disk_offset: e.disk_offset,
            length: e.length as u32,
            stored_len: e.stored_len,
            record_crc: e.record_crc,
            flags: e.flags,
            data_offset: 0,
        }
    }
}

/// The source of a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The disk's base image, at the same disk offset.
    Base,
    /// Zeros, from a zero record.
    Zero,
    /// The logical data of a write record.
    Record(RecordRef),
}

impl Source {
    #[cfg(test)]
    /// Whether a piece with source `next` can extend a piece of `len` bytes with this source.
    fn continues_into(self, len: u64, next: Source) -> bool {
        match (self, next) {
            (Source::Base, Source::Base) | (Source::Zero, Source::Zero) => true,
            (Source::Record(_), Source::Record(_)) => self.advanced_unchecked(len) == next,
            _ => false,
        }
    }

    #[cfg(test)]
    fn advanced_unchecked(self, by: u64) -> Source {
        match self {
            Source::Record(r) => {
                let data_offset = u64::from(r.data_offset) + by;
                Source::Record(RecordRef {
                    data_offset: data_offset.min(u64::from(u32::MAX)) as u32,
                    ..r
                })
            }
            other => other,
        }
    }
}

/// One piece: bytes `[start, end)` come from `source`; the start is given alongside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    /// One past the last byte of the piece.
    pub end: u64,
    /// Where its bytes come from.
    pub source: Source,
}

/// The source index of a zero piece.
const ZERO: u32 = 0;
/// The source index of a base piece: only the overlay stores one, to hide what lies below it.
const BASE: u32 = u32::MAX;
/// The overlay is merged into the sorted entries once it holds this many pieces, or a
/// sixteenth of the entries if that is more: each merge copies the entries once, so applying
/// the journal costs at most 16 entry copies per insert, and the overlay's nodes (about 40
/// bytes a piece) never add more than 2.5 bytes per stored piece.
const OVERLAY_MIN: usize = 4096;
const OVERLAY_SHARE: usize = 16;
/// Checkpoint loading remembers this many recent records (by a hash of their place in the
/// journal) to store a record split into several pieces once.
const RECENT_SLOTS: usize = 4096;

/// A stored piece, 20 bytes: its start and end and its source index (a record's index plus
/// one, or [`ZERO`], or [`BASE`] in the overlay). Kept as five `u32` words so a `Vec` of them
/// packs without padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry([u32; 5]);

impl Entry {
    fn new(start: u64, end: u64, src: u32) -> Entry {
        Entry([
            start as u32,
            (start >> 32) as u32,
            end as u32,
            (end >> 32) as u32,
            src,
        ])
    }

    fn start(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }

    fn end(self) -> u64 {
        u64::from(self.0[2]) | (u64::from(self.0[3]) << 32)
    }

    fn src(self) -> u32 {
        self.0[4]
    }

    /// The same piece cut to `[start, end)`; the data offset follows from the start.
    fn cut(self, start: u64, end: u64) -> Entry {
        Entry::new(start, end, self.src())
    }
}

/// A write record's fields, stored once however many pieces read from it. A piece's data
/// offset is not stored: it follows from the piece's start, `(start - disk_offset) + skew`
/// modulo 2^32, where `skew` is zero when the record is read at the offset it was written to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rec {
    record_offset: u64,
    lsn: u64,
    disk_offset: u64,
    segment_index: u32,
    length: u32,
    stored_len: u32,
    record_crc: u32,
    skew: u32,
    flags: u8,
}

impl Rec {
    /// The record of a piece of `r` that starts at `start`.
    fn of(r: &RecordRef, start: u64) -> Rec {
        Rec {
            record_offset: r.record_offset,
            lsn: r.lsn,
            disk_offset: r.disk_offset,
            segment_index: r.segment_index,
            length: r.length,
            stored_len: r.stored_len,
            record_crc: r.record_crc,
            skew: r
                .data_offset
                .wrapping_sub(start.wrapping_sub(r.disk_offset) as u32),
            flags: r.flags,
        }
    }

    /// The reference of a piece of this record that starts at `start`.
    fn at(&self, start: u64) -> RecordRef {
        RecordRef {
            segment_index: self.segment_index,
            record_offset: self.record_offset,
            lsn: self.lsn,
            disk_offset: self.disk_offset,
            length: self.length,
            stored_len: self.stored_len,
            record_crc: self.record_crc,
            flags: self.flags,
            data_offset: (start.wrapping_sub(self.disk_offset) as u32).wrapping_add(self.skew),
        }
    }
}

/// What an extent map keeps on the heap, for accounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapMemory {
    /// Bytes of the sorted piece array and the overlay (by capacity; the overlay estimated).
    pub piece_bytes: usize,
    /// Bytes of the record table (by capacity).
    pub record_bytes: usize,
    /// Records in the table.
    pub records: usize,
}

/// Disjoint pieces covering `[0, size)`. Only pieces that do not read from the base are
/// stored: every range between them reads from the base, so a disk with a few scattered writes
/// costs one entry per write, not three.
///
/// The pieces live in a sorted array of 20-byte entries whose source is an index into a table
/// of records (each record's fields stored once, however many pieces read from it). Inserts go
/// to a small overlay (a `BTreeMap` of the newest pieces, which hide whatever lies below them)
/// that is merged into the array in one pass when it reaches a sixteenth of it; readers see
/// the array and the overlay merged. [`ExtentMap::compact`] merges the overlay, drops records
/// no piece reads any more and returns spare capacity.
#[derive(Clone, Debug)]
pub struct ExtentMap {
    size: u64,
    /// Pieces whose source is not the base, sorted, disjoint, and merged where they read as one.
    entries: Vec<Entry>,
    /// Newer pieces by start, as `(end, src)`, disjoint; `BASE` ones hide the entries below.
    overlay: BTreeMap<u64, (u64, u32)>,
    /// The records pieces read from; a source index `i > 0` is `records[i - 1]`.
    records: Vec<Rec>,
}

impl ExtentMap {
    /// A map of a disk of `size` bytes that reads entirely from its base.
    pub fn new(size: u64) -> ExtentMap {
        ExtentMap {
            size,
            entries: Vec::new(),
            overlay: BTreeMap::new(),
            records: Vec::new(),
        }
    }

    /// The size of the disk the map covers.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The number of pieces that do not read from the base (journal and zero pieces). Counts
    /// the pieces one by one while inserts wait in the overlay; see [`ExtentMap::compact`].
    pub fn len(&self) -> usize {
        if self.overlay.is_empty() {
            self.entries.len()
        } else {
            self.stored(self.entries.iter().copied(), self.overlay_all())
                .count()
        }
    }

    /// Whether every byte reads from the base.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the map keeps on the heap.
    pub fn memory(&self) -> MapMemory {
        // A B-tree leaf holds up to 11 pieces of 24 bytes plus about 16 bytes of bookkeeping.
        let overlay = self.overlay.len() * 300 / 11;
        MapMemory {
            piece_bytes: self.entries.capacity() * size_of::<Entry>() + overlay,
            record_bytes: self.records.capacity() * size_of::<Rec>(),
            records: self.records.len(),
        }
    }

    /// Grows the disk to `new_size` bytes, as a resize record does: the grown range reads as
    /// zeros (the base holds only the old size) until a later record writes it. Callers check
    /// that the disk grows; a shrink is a bug.
    pub fn grow(&mut self, new_size: u64) {
        assert!(
            new_size > self.size,
            "a disk of {} bytes grows, it does not become {new_size}",
            self.size
        );
        let old_size = self.size;
        self.size = new_size;
        self.insert(old_size, new_size, Source::Zero);
    }

    /// Whether every range that reads from the base lies below `base_bytes`: a map that grew
    /// past its base covers the grown range with zero or journal pieces.
    pub fn base_reads_within(&self, base_bytes: u64) -> bool {
        base_bytes >= self.size
            || self
                .pieces_in(base_bytes, self.size)
                .all(|(_, p)| p.source != Source::Base)
    }

    /// Makes `[start, end)` come from `source`, replacing and splitting whatever covered it.
    /// Callers check the range against the disk; a range outside it is a bug.
    pub fn insert(&mut self, start: u64, end: u64, source: Source) {
        assert!(
            start < end && end <= self.size,
            "range {start}..{end} outside the disk of {} bytes",
            self.size
        );
        let src = self.intern(start, source);
        self.split_overlay_at(start);
        self.split_overlay_at(end);
        while let Some((&key, _)) = self.overlay.range(start..end).next() {
            self.overlay.remove(&key);
        }
        self.overlay.insert(start, (end, src));
        if self.overlay.len() >= OVERLAY_MIN.max(self.entries.len() / OVERLAY_SHARE) {
            self.merge_overlay();
        }
    }

    /// Merges the overlay into the sorted entries, drops records no piece reads any more and
    /// gives back spare capacity: the smallest form of the map, for after the last insert.
    pub fn compact(&mut self) {
        self.merge_overlay();
        self.drop_unread_records();
        self.entries.shrink_to_fit();
        self.records.shrink_to_fit();
    }

    /// The source index for a piece of `source` starting at `start`: a record is added to the
    /// table unless it is the one added last (a record applied once, or inserted again).
    fn intern(&mut self, start: u64, source: Source) -> u32 {
        match source {
            Source::Base => BASE,
            Source::Zero => ZERO,
            Source::Record(r) => {
                let rec = Rec::of(&r, start);
                if self.records.last() != Some(&rec) {
                    self.push_record(rec);
                }
                self.records.len() as u32
            }
        }
    }

    fn push_record(&mut self, rec: Rec) {
        assert!(
            self.records.len() < (BASE - 1) as usize,
            "an extent map holds fewer than 2^32 - 1 records"
        );
        self.records.push(rec);
    }

    /// Ensures no overlay piece spans `at`: one that does is cut in two there.
    fn split_overlay_at(&mut self, at: u64) {
        let Some((&key, &(end, src))) = self.overlay.range(..at).next_back() else {
            return;
        };
        if end > at {
            self.overlay.insert(key, (at, src));
            self.overlay.insert(at, (end, src));
        }
    }

    /// Merges the overlay into the entries in one pass: the runs of entries between overlay
    /// pieces are copied whole, and only the entries an overlay piece cuts or hides are looked
    /// at one by one.
    fn merge_overlay(&mut self) {
        if self.overlay.is_empty() {
            return;
        }
        let old = std::mem::take(&mut self.entries);
        let overlay = std::mem::take(&mut self.overlay);
        let mut out = Merged {
            out: Vec::with_capacity(old.len() + 2 * overlay.len()),
            records: &self.records,
        };
        // `head`, if any, is an entry (or the rest of one) that comes before `rest`.
        let mut rest: &[Entry] = &old;
        let mut head: Option<Entry> = None;
        for (&s, &(e, src)) in &overlay {
            if let Some(h) = head.filter(|h| h.end() <= s) {
                out.push(h);
                head = None;
            }
            if head.is_none() {
                let n = rest.partition_point(|x| x.end() <= s);
                out.extend(&rest[..n]);
                head = rest.get(n).copied();
                rest = rest.get(n + 1..).unwrap_or(&[]);
            }
            if let Some(h) = head.filter(|h| h.start() < s) {
                out.push(h.cut(h.start(), s));
            }
            if src != BASE {
                out.push(Entry::new(s, e, src));
            }
            if let Some(h) = head.filter(|h| h.end() > e) {
                head = Some(h.cut(e.max(h.start()), h.end()));
                continue;
            }
            let n = rest.partition_point(|x| x.end() <= e);
            head = rest
                .get(n)
                .filter(|x| x.start() < e)
                .map(|x| x.cut(e, x.end()));
            rest = &rest[n + usize::from(head.is_some())..];
        }
        out.extend(head.as_slice());
        out.extend(rest);
        let mut merged = out.out;
        if merged.capacity() > merged.len() + merged.len() / 8 + 16 {
            merged.shrink_to_fit();
        }
        self.entries = merged;
        if self.records.len() > 2 * self.entries.len() + OVERLAY_MIN {
            self.drop_unread_records();
        }
    }

    /// Removes the records no entry reads from the table and renumbers the rest. The overlay
    /// must be empty.
    fn drop_unread_records(&mut self) {
        debug_assert!(self.overlay.is_empty());
        let mut renumbered = vec![ZERO; self.records.len()];
        let mut kept = Vec::with_capacity(self.records.len().min(self.entries.len()));
        for entry in &mut self.entries {
            let src = entry.src();
            if src == ZERO {
                continue;
            }
            let slot = &mut renumbered[src as usize - 1];
            if *slot == ZERO {
                kept.push(self.records[src as usize - 1]);
                *slot = kept.len() as u32;
            }
            entry.0[4] = *slot;
        }
        self.records = kept;
    }

    /// Every overlay piece as an entry, in order.
    fn overlay_all(&self) -> impl Iterator<Item = Entry> + '_ {
        self.overlay
            .iter()
            .map(|(&s, &(e, src))| Entry::new(s, e, src))
    }

    /// The stored pieces `base` and `overlay` (both sorted) read as, merged where they read as
    /// one: the overlay hides the entries below it, and its base pieces are dropped.
    fn stored<'a>(
        &'a self,
        base: impl Iterator<Item = Entry> + 'a,
        overlay: impl Iterator<Item = Entry> + 'a,
    ) -> impl Iterator<Item = Entry> + 'a {
        Coalesce {
            inner: Layered {
                base,
                head: None,
                overlay: overlay.peekable(),
            },
            pending: None,
            records: &self.records,
        }
    }

    /// The source of a piece with source index `src` that starts at `start`.
    fn source_at(&self, src: u32, start: u64) -> Source {
        match src {
            ZERO => Source::Zero,
            BASE => Source::Base,
            i => Source::Record(self.records[i as usize - 1].at(start)),
        }
    }

    /// Every piece in disk order, as `(start, piece)`, base ranges included.
    pub fn iter(&self) -> impl Iterator<Item = (u64, Piece)> + '_ {
        self.pieces_in(0, self.size)
    }

    /// The pieces overlapping `[start, end)`, clipped to it, as `(start, piece)`, base ranges
    /// included: a clipped journal piece has its data offset moved to match its new start.
    pub fn pieces_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, Piece)> + '_ {
        let end = end.min(self.size).max(start);
        let lo = self.entries.partition_point(|e| e.end() <= start);
        let hi = self.entries.partition_point(|e| e.start() < end).max(lo);
        let first = self
            .overlay
            .range(..start)
            .next_back()
            .filter(|(_, (e, _))| *e > start);
        let overlay = first
            .into_iter()
            .chain(self.overlay.range(start..end))
            .map(|(&s, &(e, src))| Entry::new(s, e, src));
        let stored = self
            .stored(self.entries[lo..hi].iter().copied(), overlay)
            .filter(move |e| e.end() > start && e.start() < end)
            .map(move |e| {
                let (s, t) = (e.start().max(start), e.end().min(end));
                (
                    s,
                    Piece {
                        end: t,
                        source: self.source_at(e.src(), s),
                    },
                )
            })
            .peekable();
        WithGaps {
            stored,
            at: start,
            end,
        }
    }
}

/// The entries of a merge being built: each one pushed joins the last if they read as one.
struct Merged<'a> {
    out: Vec<Entry>,
    records: &'a [Rec],
}

impl Merged<'_> {
    fn push(&mut self, entry: Entry) {
        if let Some(last) = self.out.last_mut()
            && last.end() == entry.start()
            && same_source(self.records, last.src(), entry.src())
        {
            *last = last.cut(last.start(), entry.end());
            return;
        }
        self.out.push(entry);
    }

    /// Appends sorted, merged entries: only the first can join the last one out.
    fn extend(&mut self, entries: &[Entry]) {
        if let Some((&first, tail)) = entries.split_first() {
            self.push(first);
            self.out.extend_from_slice(tail);
        }
    }
}

/// Sorted entries with a sorted overlay laid over them: overlay pieces hide what they cover,
/// and those that read from the base are left out.
struct Layered<B: Iterator<Item = Entry>, O: Iterator<Item = Entry>> {
    base: B,
    /// The next entry of `base`, or the rest of one the overlay cut.
    head: Option<Entry>,
    overlay: std::iter::Peekable<O>,
}

impl<B: Iterator<Item = Entry>, O: Iterator<Item = Entry>> Iterator for Layered<B, O> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            if self.head.is_none() {
                self.head = self.base.next();
            }
            let Some(&o) = self.overlay.peek() else {
                return self.head.take();
            };
            match self.head {
                Some(b) if b.start() < o.start() => {
                    if b.end() <= o.start() {
                        self.head = None;
                        return Some(b);
                    }
                    self.head = Some(b.cut(o.start(), b.end()));
                    return Some(b.cut(b.start(), o.start()));
                }
                _ => {
                    self.overlay.next();
                    self.hide_under(o);
                    if o.src() != BASE {
                        return Some(o);
                    }
                }
            }
        }
    }
}

impl<B: Iterator<Item = Entry>, O: Iterator<Item = Entry>> Layered<B, O> {
    /// Drops the base entries `o` covers and cuts the one it covers the start of.
    fn hide_under(&mut self, o: Entry) {
        while let Some(b) = self.head.or_else(|| self.base.next()) {
            if b.start() >= o.end() {
                self.head = Some(b);
                return;
            }
            if b.end() > o.end() {
                self.head = Some(b.cut(o.end(), b.end()));
                return;
            }
            self.head = None;
        }
        self.head = None;
    }
}

/// Merges touching entries that read as one: both zeros, or the same record at continuing
/// data offsets (the same record fields, skew included).
struct Coalesce<'a, I: Iterator<Item = Entry>> {
    inner: I,
    pending: Option<Entry>,
    records: &'a [Rec],
}

impl<I: Iterator<Item = Entry>> Iterator for Coalesce<'_, I> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        let mut cur = self.pending.take().or_else(|| self.inner.next())?;
        for next in self.inner.by_ref() {
            if cur.end() == next.start() && same_source(self.records, cur.src(), next.src()) {
                cur = cur.cut(cur.start(), next.end());
            } else {
                self.pending = Some(next);
                return Some(cur);
            }
        }
        Some(cur)
    }
}

/// Whether pieces with source indices `a` and `b` read as one where they touch.
fn same_source(records: &[Rec], a: u32, b: u32) -> bool {
    a == b || (a != ZERO && b != ZERO && records[a as usize - 1] == records[b as usize - 1])
}

/// Fills the ranges between stored pieces with base pieces.
struct WithGaps<I: Iterator<Item = (u64, Piece)>> {
    stored: std::iter::Peekable<I>,
    /// Where the next piece starts.
    at: u64,
    end: u64,
}

impl<I: Iterator<Item = (u64, Piece)>> Iterator for WithGaps<I> {
    type Item = (u64, Piece);

    fn next(&mut self) -> Option<(u64, Piece)> {
        if self.at >= self.end {
            return None;
        }
        let gap_end = match self.stored.peek() {
            Some(&(start, _)) if start <= self.at => {
                let (start, piece) = self.stored.next().expect("peeked");
                self.at = piece.end;
                return Some((start, piece));
            }
            Some(&(start, _)) => start,
            None => self.end,
        };
        let start = self.at;
        self.at = gap_end;
        Some((
            start,
            Piece {
                end: gap_end,
                source: Source::Base,
            },
        ))
    }
}

/// Builds a map from pieces given in increasing disk order, such as a checkpoint holds; the
/// ranges between them read from the base. Each piece is appended to the sorted array (no
/// tree, no search); a record split into several nearby pieces is stored once.
#[derive(Debug)]
pub struct SortedBuilder {
    map: ExtentMap,
    at: u64,
    /// Source indices of recently added records, by a hash of their place in the journal.
    recent: Vec<u32>,
}

impl SortedBuilder {
    /// A builder for a disk of `size` bytes.
    pub fn new(size: u64) -> SortedBuilder {
        SortedBuilder::with_capacity(size, 0)
    }

    /// A builder for a disk of `size` bytes with room for `pieces` pieces (a hint: the array
    /// grows past it, and [`SortedBuilder::finish`] gives back what is left over).
    pub fn with_capacity(size: u64, pieces: usize) -> SortedBuilder {
        let mut map = ExtentMap::new(size);
        map.entries.reserve_exact(pieces);
        SortedBuilder {
            map,
            at: 0,
            recent: Vec::new(),
        }
    }

    /// Appends `[start, end)` read from `source`; false, appending nothing, if the piece is
    /// empty, starts before the end of the previous one, or runs past the disk.
    pub fn push(&mut self, start: u64, end: u64, source: Source) -> bool {
        if start < self.at || end <= start || end > self.map.size {
            return false;
        }
        self.at = end;
        let src = match source {
            Source::Base => return true,
            Source::Zero => ZERO,
            Source::Record(r) => self.record(Rec::of(&r, start)),
        };
        let entries = &mut self.map.entries;
        if let Some(last) = entries.last_mut()
            && last.end() == start
            && same_source(&self.map.records, last.src(), src)
        {
            *last = last.cut(last.start(), end);
            return true;
        }
        entries.push(Entry::new(start, end, src));
        true
    }

    /// The source index of `rec`, added to the table unless it was added recently.
    fn record(&mut self, rec: Rec) -> u32 {
        if self.recent.is_empty() {
            self.recent = vec![ZERO; RECENT_SLOTS];
        }
        let hash = (rec.record_offset ^ (u64::from(rec.segment_index) << 40) ^ rec.lsn)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let slot = (hash >> 52) as usize % RECENT_SLOTS;
        let known = self.recent[slot];
        if known != ZERO && self.map.records[known as usize - 1] == rec {
            return known;
        }
        self.map.push_record(rec);
        let src = self.map.records.len() as u32;
        self.recent[slot] = src;
        src
    }

    /// The map, the rest of the disk reading from the base. Every record in the table is read
    /// by a piece (the overlay is empty), so only spare capacity is given back.
    pub fn finish(self) -> ExtentMap {
        let mut map = self.map;
        map.entries.shrink_to_fit();
        map.records.shrink_to_fit();
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(id: u32, length: u32) -> Source {
        Source::Record(RecordRef {
            segment_index: 0,
            record_offset: 4096 + u64::from(id) * 100,
            lsn: u64::from(id),
            disk_offset: 0,
            length,
            stored_len: length,
            record_crc: id,
            flags: 0,
            data_offset: 0,
        })
    }

    /// What each byte reads as, for comparing with the naive model: (tag, offset in source).
    fn expand(map: &ExtentMap) -> Vec<(i64, u64)> {
        let mut out = Vec::with_capacity(map.size() as usize);
        let mut expected_start = 0;
        for (start, piece) in map.iter() {
            assert_eq!(start, expected_start, "pieces must tile the disk");
            assert!(piece.end > start);
            for at in start..piece.end {
                out.push(match piece.source {
                    Source::Base => (-1, at),
                    Source::Zero => (-2, 0),
                    Source::Record(r) => (r.lsn as i64, u64::from(r.data_offset) + at - start),
                });
            }
            expected_start = piece.end;
        }
        assert_eq!(expected_start, map.size());
        out
    }

    #[test]
    fn a_new_map_reads_everything_from_the_base() {
        let map = ExtentMap::new(100);
        assert_eq!(
            map.iter().collect::<Vec<_>>(),
            vec![(
                0,
                Piece {
                    end: 100,
                    source: Source::Base
                }
            )]
        );
        assert!(ExtentMap::new(100).is_empty());
        assert_eq!(ExtentMap::new(0).iter().count(), 0);
    }

    #[test]
    fn an_insert_inside_a_piece_splits_it_in_three() {
        let mut map = ExtentMap::new(100);
        map.insert(10, 20, Source::Zero);
        let starts: Vec<_> = map.iter().map(|(s, p)| (s, p.end)).collect();
        assert_eq!(starts, vec![(0, 10), (10, 20), (20, 100)]);
    }

    #[test]
    fn splitting_a_record_piece_moves_the_data_offset_of_the_tail() {
        let mut map = ExtentMap::new(100);
        map.insert(10, 60, record(1, 50));
        map.insert(20, 30, Source::Zero);
        let tail = map.iter().find(|(s, _)| *s == 30).unwrap().1;
        match tail.source {
            Source::Record(r) => assert_eq!(r.data_offset, 20),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn overwriting_the_same_range_keeps_the_piece_count_bounded() {
        let mut map = ExtentMap::new(1 << 40);
        for i in 1..1000u32 {
            map.insert(4096, 8192, record(i, 4096));
        }
        assert_eq!(map.len(), 1);
        assert_eq!(map.iter().count(), 3);
        map.insert(4096, 8192, Source::Base);
        assert_eq!(map.len(), 0);
        assert_eq!(
            map.iter().count(),
            1,
            "base next to base reads as one piece"
        );
    }

    #[test]
    fn pieces_in_clips_to_the_range_and_adjusts_offsets() {
        let mut map = ExtentMap::new(100);
        map.insert(10, 60, record(1, 50));
        let got: Vec<_> = map.pieces_in(15, 70).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 15);
        assert_eq!(got[0].1.end, 60);
        assert!(matches!(got[0].1.source, Source::Record(r) if r.data_offset == 5));
        assert_eq!(
            (got[1].0, got[1].1.end, got[1].1.source),
            (60, 70, Source::Base)
        );
        assert_eq!(map.pieces_in(0, 100).count(), 3);
        assert_eq!(map.pieces_in(20, 30).count(), 1);
    }

    #[test]
    fn a_grown_map_reads_zeros_past_its_old_end_and_only_the_base_below_it() {
        let mut map = ExtentMap::new(100);
        map.insert(90, 100, record(1, 10));
        map.grow(250);
        assert_eq!(map.size(), 250);
        let pieces: Vec<_> = map.iter().map(|(s, p)| (s, p.end, p.source)).collect();
        assert_eq!(pieces[0], (0, 90, Source::Base));
        assert_eq!((pieces[1].0, pieces[1].1), (90, 100));
        assert_eq!(pieces[2], (100, 250, Source::Zero));
        assert!(map.base_reads_within(90) && !map.base_reads_within(50));
        map.insert(150, 200, Source::Base);
        assert!(!map.base_reads_within(100), "a base piece past the old end");
    }

    /// Applies `(start, len, kind)` inserts to a map and to a byte model, compacting the map at
    /// every `kind` 3, and checks they agree after each `check_every` operations and at the end.
    fn against_the_model(size: u64, ops: &[(u64, u64, u8)], check_every: usize) -> ExtentMap {
        let mut map = ExtentMap::new(size);
        let mut model: Vec<(i64, u64)> = (0..size).map(|at| (-1, at)).collect();
        for (i, &(start, len, kind)) in ops.iter().enumerate() {
            if kind == 3 {
                map.compact();
                continue;
            }
            apply(&mut map, &mut model, i, (start, len, kind));
            if i % check_every == 0 {
                assert_eq!(expand(&map), model, "after operation {i}");
            }
        }
        assert_eq!(expand(&map), model);
        map
    }

    /// Applies operation `i`, `(start, len, kind)` (kind 0 zeros, 1 base, 2 a record of LSN
    /// `i + 1`; the range wraps into the disk and is clipped at its end), to the map and to the
    /// byte model: per byte, `(-1, at)` base, `(-2, 0)` zero, `(lsn, offset in the record)`.
    fn apply(map: &mut ExtentMap, model: &mut [(i64, u64)], i: usize, op: (u64, u64, u8)) {
        let (start, len, kind) = op;
        let size = map.size();
        let start = start % size;
        let end = (start + len).min(size);
        let lsn = i as u64 + 1;
        let source = match kind {
            0 => Source::Zero,
            1 => Source::Base,
            _ => record(lsn as u32, (end - start) as u32),
        };
        map.insert(start, end, source);
        for at in start..end {
            model[at as usize] = match source {
                Source::Base => (-1, at),
                Source::Zero => (-2, 0),
                Source::Record(_) => (lsn as i64, at - start),
            };
        }
    }

    /// A deterministic scatter of operations (an LCG).
    fn scattered_ops(n: usize, size: u64, max_len: u64) -> Vec<(u64, u64, u8)> {
        let mut x = 7u64;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        (0..n)
            .map(|_| (next() % size, 1 + next() % max_len, (next() % 3) as u8))
            .collect()
    }

    #[test]
    fn many_inserts_through_overlay_merges_match_the_model() {
        // Enough inserts that the overlay is merged into the array many times over.
        let ops = scattered_ops(30_000, 20_000, 40);
        let mut map = against_the_model(20_000, &ops, 2_999);
        let before: Vec<_> = map.iter().collect();
        let len = map.len();
        map.compact();
        assert_eq!(map.iter().collect::<Vec<_>>(), before);
        assert_eq!(map.len(), len);
        assert!(map.memory().records <= len, "unread records are dropped");
        // The same pieces, loaded as a checkpoint loads them, read the same.
        let mut sorted = SortedBuilder::new(map.size());
        for (start, piece) in map.iter() {
            assert!(sorted.push(start, piece.end, piece.source));
        }
        let loaded = sorted.finish();
        assert_eq!(loaded.iter().collect::<Vec<_>>(), before);
        assert_eq!(loaded.len(), len);
        for (a, b) in [(0, 20_000), (5, 17), (9_999, 10_050), (19_990, 30_000)] {
            assert_eq!(
                loaded.pieces_in(a, b).collect::<Vec<_>>(),
                map.pieces_in(a, b).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn a_sorted_load_stores_a_record_split_in_pieces_once_and_merges_what_continues() {
        let mut b = SortedBuilder::new(100);
        let Source::Record(r) = record(1, 50) else {
            unreachable!()
        };
        let at = |data_offset: u32| Source::Record(RecordRef { data_offset, ..r });
        assert!(b.push(10, 20, at(0)));
        assert!(b.push(20, 30, Source::Zero));
        assert!(b.push(30, 40, at(20)));
        assert!(b.push(40, 50, at(30)), "continues the piece before");
        assert!(!b.push(45, 60, Source::Zero), "overlaps");
        let map = b.finish();
        assert_eq!(map.len(), 3);
        assert_eq!(map.memory().records, 1);
        let got: Vec<_> = map.iter().map(|(s, p)| (s, p.end)).collect();
        assert_eq!(got, vec![(0, 10), (10, 20), (20, 30), (30, 50), (50, 100)]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn inserts_and_compactions_match_a_naive_byte_model(
            size in 1u64..300,
            ops in prop::collection::vec((0u64..300, 1u64..120, 0u8..4), 0..60),
        ) {
            against_the_model(size, &ops, 1);
        }

        #[test]
        fn inserts_match_a_naive_byte_model(
            size in 1u64..300,
            ops in prop::collection::vec((0u64..300, 1u64..120, 0u8..3), 0..60),
        ) {
            let mut map = ExtentMap::new(size);
            let mut model: Vec<(i64, u64)> = (0..size).map(|at| (-1, at)).collect();
            for (i, (start, len, kind)) in ops.into_iter().enumerate() {
                apply(&mut map, &mut model, i, (start, len, kind));
                prop_assert_eq!(&expand(&map), &model);
                let pieces: Vec<_> = map.iter().collect();
                for pair in pieces.windows(2) {
                    prop_assert!(!pair[0].1.source.continues_into(pair[0].1.end - pair[0].0, pair[1].1.source),
                        "adjacent pieces that read as one must be merged");
                }
            }
            let a = size / 3;
            let b = (2 * size / 3).max(a + 1).min(size);
            let mut clipped = Vec::new();
            for (start, piece) in map.pieces_in(a, b) {
                for at in start..piece.end {
                    clipped.push(match piece.source {
                        Source::Base => (-1, at),
                        Source::Zero => (-2, 0),
                        Source::Record(r) => (r.lsn as i64, u64::from(r.data_offset) + at - start),
                    });
                }
            }
            prop_assert_eq!(&clipped[..], &model[a as usize..b as usize]);
        }
    }
}
