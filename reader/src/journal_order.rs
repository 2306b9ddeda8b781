//! Reading a disk's scattered journal pieces in journal order.
//!
//! A walk in disk order reads each journal piece's record where it lies in the journal. When a
//! disk's pieces are many, small and were written at random places (a database rewriting
//! scattered blocks), consecutive pieces of the disk come from records all over the journal:
//! one random read each, which is hours at 10^8 pieces once the journal no longer fits in the
//! page cache. In journal order ([`ReadOrder::Journal`]) the walk in disk order still handles
//! base, zero and large journal pieces, and sets each small journal piece aside ([`Deferred`]:
//! what is needed to read, verify and place it, 49 bytes) in an external sort by its record's
//! place in the journal ([`RunSorter`]). The sorted pieces are then read in one pass that moves forward through
//! each segment, one read for all the records within a window of [`WINDOW_BYTES`]: the journal
//! is read about once, sequentially, and each record is verified once however many of its
//! pieces are visible.
//!
//! **Memory** is the sort's run of [`SORT_RUN_PIECES`] entries in memory (about 56 MiB), a
//! few KiB of merge buffer per run written out, and one window: flat in the number of pieces.
//! **Scratch space** is 49 bytes a set-aside piece, in a private directory
//! (`.replog-sort-*`, mode 0700) under the scratch directory, removed when the pass ends.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;

use replog_format::record::RECORD_HEADER_BYTES;

use crate::disk_reader::decode_record;
use crate::error::{ReadError, Result};
use crate::extent_map::RecordRef;
use crate::view::DiskView;

/// The order in which a materialization or a read pass reads journal pieces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadOrder {
    /// Journal order for a disk whose view lies over a checkpoint (it is past the memory
    /// budget) or holds at least [`JOURNAL_ORDER_PIECES_MIN`] pieces; disk order otherwise.
    #[default]
    Auto,
    /// Every piece read where the walk in disk order meets it.
    Disk,
    /// Small journal pieces set aside, sorted and read in journal order; see the module
    /// documentation.
    Journal,
}

impl ReadOrder {
    /// Whether `disk` is read in journal order.
    pub(crate) fn journal_for(self, disk: &DiskView) -> bool {
        match self {
            ReadOrder::Disk => false,
            ReadOrder::Journal => true,
            ReadOrder::Auto => {
                disk.lower.is_some() || disk.map.len() >= JOURNAL_ORDER_PIECES_MIN as usize
            }
        }
    }
}

/// [`ReadOrder::Auto`] reads a disk in journal order from this many pieces in its map.
pub const JOURNAL_ORDER_PIECES_MIN: u64 = 1 << 20;
/// Journal pieces of records of at most this many stored bytes are set aside; larger records
/// are read where the walk meets them, their transfer outweighing the seek.
pub(crate) const DEFER_RECORD_BYTES_MAX: u32 = 64 << 10;
/// Pieces sorted in memory before a run is written to the scratch directory.
pub const SORT_RUN_PIECES: usize = 1 << 20;
/// The most journal bytes one read covers.
const WINDOW_BYTES: u64 = 4 << 20;
/// A gap between wanted records longer than this ends a read: reading through it would cost
/// more than starting another.
const GAP_BYTES_MAX: u64 = 64 << 10;
/// Bytes of a [`Deferred`] in the scratch files.
const DEFERRED_BYTES: usize = 49;

/// A journal piece set aside: its record, and how many bytes of it, from `r.data_offset`, the
/// disk shows (at disk byte `r.disk_offset + r.data_offset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deferred {
    pub r: RecordRef,
    pub len: u32,
}

impl Deferred {
    /// Where the piece lies on the disk.
    pub fn disk_at(&self) -> u64 {
        self.r.disk_offset + u64::from(self.r.data_offset)
    }

    /// The record's place in the journal, and the piece's in the record: the sort key.
    fn key(&self) -> (u32, u64, u32) {
        (
            self.r.segment_index,
            self.r.record_offset,
            self.r.data_offset,
        )
    }

    /// One past the record's last stored byte in its segment.
    fn record_end(&self) -> u64 {
        self.r.record_offset + RECORD_HEADER_BYTES as u64 + u64::from(self.r.stored_len)
    }
}

impl Deferred {
    fn encode(&self, w: &mut impl Write) -> io::Result<()> {
        let r = &self.r;
        let mut b = [0u8; DEFERRED_BYTES];
        b[0..4].copy_from_slice(&r.segment_index.to_le_bytes());
        b[4..12].copy_from_slice(&r.record_offset.to_le_bytes());
        b[12..20].copy_from_slice(&r.lsn.to_le_bytes());
        b[20..28].copy_from_slice(&r.disk_offset.to_le_bytes());
        b[28..32].copy_from_slice(&r.length.to_le_bytes());
        b[32..36].copy_from_slice(&r.stored_len.to_le_bytes());
        b[36..40].copy_from_slice(&r.record_crc.to_le_bytes());
        b[40] = r.flags;
        b[41..45].copy_from_slice(&r.data_offset.to_le_bytes());
        b[45..49].copy_from_slice(&self.len.to_le_bytes());
        w.write_all(&b)
    }

    fn decode(rd: &mut impl Read) -> io::Result<Deferred> {
        let mut b = [0u8; DEFERRED_BYTES];
        rd.read_exact(&mut b)?;
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(Deferred {
            r: RecordRef {
                segment_index: u32_at(0),
                record_offset: u64_at(4),
                lsn: u64_at(12),
                disk_offset: u64_at(20),
                length: u32_at(28),
                stored_len: u32_at(32),
                record_crc: u32_at(36),
                flags: b[40],
                data_offset: u32_at(41),
            },
            len: u32_at(45),
        })
    }
}

/// Sorts the batches of deferred pieces `batches` yields by their place in the journal, in a
/// private directory under `scratch` (runs of `run_pieces`), then calls `each` with every
/// piece, in journal order, and the piece's verified bytes; and `tick` with the pieces done so
/// far and their count after each read. Returns the count.
pub(crate) fn read_sorted(
    disk: &DiskView,
    scratch: &Path,
    batches: impl Iterator<Item = Vec<Deferred>>,
    run_pieces: usize,
    mut each: impl FnMut(&Deferred, &[u8]) -> Result<()>,
    mut tick: impl FnMut(u64, u64),
) -> Result<u64> {
    let sort_err = |e: io::Error| ReadError::io(scratch, "sort the scattered journal pieces in", e);
    let mut sorter = RunSorter::new(scratch, run_pieces);
    for batch in batches {
        sorter.push(batch).map_err(sort_err)?;
    }
    let count = sorter.count;
    let mut sorted = sorter.sorted().map_err(sort_err)?.peekable();
    let mut done = 0;
    let mut reader = WindowReader::new(disk);
    let mut window: Vec<Deferred> = Vec::new();
    while let Some(first) = sorted.next() {
        let first = first.map_err(sort_err)?;
        window.clear();
        window.push(first);
        let start = first.r.record_offset;
        let mut end = first.record_end();
        while let Some(Ok(next)) = sorted.peek() {
            if next.r.segment_index != first.r.segment_index
                || next.r.record_offset > end + GAP_BYTES_MAX
                || next.record_end() - start > WINDOW_BYTES.max(end - start)
            {
                break;
            }
            end = end.max(next.record_end());
            window.push(*next);
            sorted.next();
        }
        reader.read(first.r.segment_index, start, end)?;
        for d in &window {
            let data = reader.record(&d.r)?;
            each(d, &data[d.r.data_offset as usize..][..d.len as usize])?;
        }
        done += window.len() as u64;
        tick(done, count);
    }
    Ok(count)
}

/// An external sort of deferred pieces by [`Deferred::key`]: runs of `run_pieces` sorted in
/// memory and written to a private directory, merged as they are read back.
struct RunSorter {
    scratch: std::path::PathBuf,
    /// Made when the first run is written.
    dir: Option<tempfile::TempDir>,
    run_pieces: usize,
    buf: Vec<Deferred>,
    runs: Vec<File>,
    count: u64,
}

/// Buffer of each run's writer and reader.
const RUN_BUF_BYTES: usize = 64 << 10;

impl RunSorter {
    fn new(scratch: &Path, run_pieces: usize) -> RunSorter {
        RunSorter {
            scratch: scratch.to_path_buf(),
            dir: None,
            run_pieces: run_pieces.max(1),
            buf: Vec::new(),
            runs: Vec::new(),
            count: 0,
        }
    }

    fn push(&mut self, batch: Vec<Deferred>) -> io::Result<()> {
        self.count += batch.len() as u64;
        for d in batch {
            if self.buf.len() == self.run_pieces {
                self.write_run()?;
            }
            self.buf.push(d);
        }
        Ok(())
    }

    fn write_run(&mut self) -> io::Result<()> {
        self.buf.sort_unstable_by_key(Deferred::key);
        let dir = match &self.dir {
            Some(dir) => dir,
            None => self.dir.insert(
                tempfile::Builder::new()
                    .prefix(".replog-sort-")
                    .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                    .tempdir_in(&self.scratch)?,
            ),
        };
        let path = dir.path().join(format!("run-{}", self.runs.len()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let mut w = BufWriter::with_capacity(RUN_BUF_BYTES, file);
        for d in self.buf.drain(..) {
            d.encode(&mut w)?;
        }
        let mut file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.rewind()?;
        self.runs.push(file);
        Ok(())
    }

    /// Every piece pushed, in order. Errors are those of reading the runs back.
    fn sorted(mut self) -> io::Result<impl Iterator<Item = io::Result<Deferred>>> {
        self.buf.sort_unstable_by_key(Deferred::key);
        let mut readers: Vec<BufReader<File>> = self
            .runs
            .drain(..)
            .map(|f| BufReader::with_capacity(RUN_BUF_BYTES, f))
            .collect();
        // Each run's next piece, and a heap of their keys, least first; the pieces still in
        // memory are one more run.
        let mut next: Vec<Option<Deferred>> = Vec::with_capacity(readers.len());
        let mut heads = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            let d = read_next(r)?;
            if let Some(d) = &d {
                heads.push(Reverse((d.key(), i)));
            }
            next.push(d);
        }
        let mut in_memory = std::mem::take(&mut self.buf).into_iter().peekable();
        let dir = self.dir;
        Ok(std::iter::from_fn(move || {
            let _keep = &dir;
            let from_disk = heads.peek().map(|Reverse((key, _))| *key);
            let from_memory = in_memory.peek().map(Deferred::key);
            match (from_disk, from_memory) {
                (None, None) => None,
                (Some(a), Some(b)) if b < a => in_memory.next().map(Ok),
                (None, Some(_)) => in_memory.next().map(Ok),
                _ => {
                    let Reverse((_, i)) = heads.pop().expect("peeked");
                    let d = next[i].take().expect("a run in the heap has a next piece");
                    match read_next(&mut readers[i]) {
                        Ok(n) => {
                            if let Some(n) = &n {
                                heads.push(Reverse((n.key(), i)));
                            }
                            next[i] = n;
                        }
                        Err(e) => return Some(Err(e)),
                    }
                    Some(Ok(d))
                }
            }
        }))
    }
}

/// A run's next piece, or `None` at its end.
fn read_next(r: &mut BufReader<File>) -> io::Result<Option<Deferred>> {
    if r.fill_buf()?.is_empty() {
        return Ok(None);
    }
    Deferred::decode(r).map(Some)
}

/// One window of a segment, read at once, and the last record decoded from it.
struct WindowReader<'a> {
    disk: &'a DiskView,
    segment_index: u32,
    start: u64,
    raw: Vec<u8>,
    /// `(segment index, record offset)` of the record in `data`.
    decoded: Option<(u32, u64)>,
    data: Vec<u8>,
}

impl<'a> WindowReader<'a> {
    fn new(disk: &'a DiskView) -> WindowReader<'a> {
        WindowReader {
            disk,
            segment_index: 0,
            start: 0,
            raw: Vec::new(),
            decoded: None,
            data: Vec::new(),
        }
    }

    /// Reads bytes `[start, end)` of segment `segment_index`.
    fn read(&mut self, segment_index: u32, start: u64, end: u64) -> Result<()> {
        let vault = &self.disk.vault;
        let slot = &vault.segments[segment_index as usize];
        slot.read_record(&vault.segment_ctx(), start, end - start, &mut self.raw)?;
        self.segment_index = segment_index;
        self.start = start;
        Ok(())
    }

    /// The verified logical bytes of record `r`, which lies in the window read last.
    fn record(&mut self, r: &RecordRef) -> Result<&[u8]> {
        let key = (r.segment_index, r.record_offset);
        if self.decoded != Some(key) {
            self.decoded = None;
            debug_assert_eq!(r.segment_index, self.segment_index);
            let from = (r.record_offset - self.start) as usize;
            let raw = &self.raw[from..from + RECORD_HEADER_BYTES + r.stored_len as usize];
            decode_record(self.disk, r, raw, &mut self.data)?;
            self.decoded = Some(key);
        }
        Ok(&self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(segment_index: u32, record_offset: u64, data_offset: u32) -> Deferred {
        Deferred {
            r: RecordRef {
                segment_index,
                record_offset,
                lsn: record_offset,
                disk_offset: 0,
                length: 4096,
                stored_len: 4096,
                record_crc: 0,
                flags: 0,
                data_offset,
            },
            len: 512,
        }
    }

    #[test]
    fn the_sort_returns_every_piece_in_journal_order_whatever_the_runs() {
        let scratch = tempfile::tempdir().unwrap();
        // A fixed pseudo-random order, with repeated records (several pieces of one record).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let pieces: Vec<Deferred> = (0..1000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                piece((x % 5) as u32, (x >> 8) % 300, ((x >> 32) % 3) as u32 * 512)
            })
            .collect();
        let mut want = pieces.clone();
        want.sort_by_key(Deferred::key);
        // In memory only, one piece a run, runs that divide the count exactly and runs that
        // do not, and batches of every size.
        for run in [10_000, 1, 3, 7, 100, 999, 1000] {
            let mut sorter = RunSorter::new(scratch.path(), run);
            for batch in pieces.chunks(run % 13 + 1) {
                sorter.push(batch.to_vec()).unwrap();
            }
            assert_eq!(sorter.count, 1000);
            let runs_written = sorter.runs.len() + usize::from(!sorter.buf.is_empty());
            assert_eq!(runs_written, 1000usize.div_ceil(run), "run of {run}");
            let dir = sorter.dir.as_ref().map(|d| d.path().to_path_buf());
            assert_eq!(
                dir.is_some(),
                run < 1000,
                "a directory only for runs written out"
            );
            if let Some(dir) = &dir {
                let mode = dir.metadata().unwrap().permissions();
                let mode = std::os::unix::fs::PermissionsExt::mode(&mode);
                assert_eq!(mode & 0o777, 0o700, "the sort's directory is private");
            }
            let got: Vec<Deferred> = sorter.sorted().unwrap().map(Result::unwrap).collect();
            let keys = |v: &[Deferred]| v.iter().map(Deferred::key).collect::<Vec<_>>();
            assert_eq!(keys(&got), keys(&want), "run of {run}");
            assert!(
                !dir.is_some_and(|d| d.exists()),
                "the sort's directory is removed"
            );
        }
        assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_deferred_piece_encodes_and_decodes_to_itself() {
        let d = Deferred {
            r: RecordRef {
                segment_index: 0x0102_0304,
                record_offset: 0x1112_1314_1516_1718,
                lsn: u64::MAX - 7,
                disk_offset: 10 << 40,
                length: 65536,
                stored_len: 1234,
                record_crc: 0xdead_beef,
                flags: 1,
                data_offset: 4096,
            },
            len: 512,
        };
        let mut bytes = Vec::new();
        d.encode(&mut bytes).unwrap();
        assert_eq!(bytes.len(), DEFERRED_BYTES);
        assert_eq!(Deferred::decode(&mut bytes.as_slice()).unwrap(), d);
        let err = Deferred::decode(&mut &bytes[..DEFERRED_BYTES - 1]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
