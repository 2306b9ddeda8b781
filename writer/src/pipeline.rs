//! The ingest pipeline of the open segment: records are framed into one staging buffer while
//! up to [`WriterOptions::buffers_in_flight`] earlier buffers are being written by the backend's
//! write pipe (`replog_io::pipe`), and data syncs are group-committed.
//!
//! Invariants (on top of `journal`'s):
//! - The staging buffer holds the file's bytes `[base, base + buf.len())`; its first `head`
//!   bytes were framed before and already handed over (or were read back from the file), so
//!   `SegmentFile::written == base + head` and `end() == written + staged()`.
//! - Buffered I/O: `head` is always 0 and every buffer goes out whole.
//! - Direct I/O (alignment `A`): `base` is a multiple of `A`. A buffer handed over without a
//!   sync goes out up to its last whole block; the partial block stays as the next buffer's
//!   head. A buffer handed over with a sync goes out padded with zeros to a whole block, and
//!   its partial block is rewritten, with the same bytes followed by new records, by the next
//!   buffer. The zeros read as a clean end of the journal (recovery rule A) and the rewritten
//!   bytes are identical, so a torn rewrite leaves each byte old or new, both valid; the pipe
//!   never lets the rewrite race the write it replaces.
//! - Completions come back in order. `synced` and `durable_lsn` advance only on a successful
//!   completion that asked for a sync: every byte before its end is then durable.
//! - Memory: at most `buffers_in_flight + 1` buffers of `buffer_bytes` plus 1 MiB and two
//!   blocks (and growth for a record larger than what is left), whatever the size of the
//!   journal: about 45 MiB with the defaults.

use std::collections::VecDeque;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use replog_io::{File, IoBuf, PipeOptions, WritePipe, open_pipe};

/// Staged bytes that trigger handing the staging buffer to the disk (written, not synced), by
/// default (see `WriterOptions::buffer_bytes`).
pub const FLUSH_BYTES: usize = 8 << 20;

/// The smallest staging buffer [`WriterOptions::buffer_bytes`] accepts.
pub const BUFFER_BYTES_MIN: usize = 16 << 10;

/// How the writer moves bytes to the disk. Not part of the vault: each writer chooses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterOptions {
    /// Staging buffers handed to the disk and not yet written back, at most (at least 1).
    /// Memory is about `(buffers_in_flight + 1) * (buffer_bytes + 1 MiB)`.
    pub buffers_in_flight: usize,
    /// Staged bytes at which a buffer is handed to the disk (at least [`BUFFER_BYTES_MIN`]).
    pub buffer_bytes: usize,
    /// Write the journal with `O_DIRECT` where the filesystem allows it (falls back to the
    /// page cache with a note, see [`crate::Writer::io_note`]). Off by default: the file then
    /// ends exactly at its last record, as tools that look at segment files expect; on, a
    /// point's sync finds its data already on the disk and ingest does not evict the page
    /// cache, at the price of a zero-padded last block.
    pub direct: bool,
    /// Reserve each new segment's space on the disk (`fallocate` keeping the size) when it is
    /// created, when writing through the page cache. Never with direct I/O, where converting
    /// the reserved extents on every write measured slower than allocating.
    pub preallocate: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            buffers_in_flight: 4,
            buffer_bytes: FLUSH_BYTES,
            direct: false,
            preallocate: true,
        }
    }
}

/// A buffer handed to the pipe.
#[derive(Debug)]
struct Inflight {
    ticket: u64,
    /// The segment offset where its new bytes end.
    end: u64,
    sync: bool,
    /// The LSN of the last record in it (or before it).
    last_lsn: u64,
}

/// The staging side of the open segment; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Stage {
    pub(crate) options: WriterOptions,
    buf: IoBuf,
    base: u64,
    head: usize,
    free: Vec<IoBuf>,
    buffers_made: usize,
    pipe: Option<Box<dyn WritePipe>>,
    /// Direct-I/O alignment, 1 when writing through the page cache.
    align: u64,
    inflight: VecDeque<Inflight>,
    /// Every record up to this LSN is durable.
    pub(crate) durable_lsn: u64,
    /// Why direct I/O is not used although asked for.
    pub(crate) note: Option<String>,
    /// The segment's space is reserved up to here (see `Journal::reserve_ahead`).
    pub(crate) reserved: u64,
}

impl WriterOptions {
    /// Capacity of each staging buffer: a flush's worth, most records that may start just
    /// below it, and a block of head and one of padding.
    fn capacity_bytes(&self) -> usize {
        self.buffer_bytes + (1 << 20) + 2 * 4096
    }
}

impl Stage {
    /// Whether new segments should be preallocated: asked for, and not written directly (the
    /// last pipe wrote directly, or, before any, direct I/O is asked for).
    pub(crate) fn preallocates(&self) -> bool {
        let direct = match self.pipe {
            Some(_) => self.align > 1,
            None => self.options.direct,
        };
        self.options.preallocate && !direct
    }

    /// Bytes framed and not yet handed over.
    pub(crate) fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    /// Whether nothing handed over is still unreported.
    pub(crate) fn idle(&self) -> bool {
        self.inflight.is_empty()
    }

    /// The stage for the next segment: the options, the buffers and the durable LSN carry
    /// over; the pipe (of the old file) is closed. Call only when nothing is in flight.
    pub(crate) fn carry_over(&mut self) -> Stage {
        assert!(
            self.idle(),
            "a segment is left only once everything is written"
        );
        let mut old = std::mem::take(self);
        let mut free = std::mem::take(&mut old.free);
        if old.buf.capacity() > 0 {
            free.push(std::mem::take(&mut old.buf));
        }
        Stage {
            options: old.options,
            free,
            buffers_made: old.buffers_made,
            durable_lsn: old.durable_lsn,
            note: old.note.take(),
            ..Stage::default()
        }
    }

    /// Takes `options` for the buffers to come. Call only with nothing in flight or staged.
    pub(crate) fn set_options(&mut self, options: WriterOptions) {
        if options.buffer_bytes != self.options.buffer_bytes {
            // Buffers of the old size are let go (none is in flight); new ones are made as
            // needed.
            self.buffers_made = 0;
            self.free.clear();
            self.buf = IoBuf::default();
        }
        self.options = WriterOptions {
            buffers_in_flight: options.buffers_in_flight.max(1),
            buffer_bytes: options.buffer_bytes.max(BUFFER_BYTES_MIN),
            ..options
        };
    }

    /// A buffer for framing: a free one, a new one while fewer than the limit exist, or the
    /// next one the pipe gives back.
    fn take_buffer(&mut self, seg_synced: &mut u64) -> io::Result<IoBuf> {
        loop {
            if let Some(mut b) = self.free.pop() {
                b.clear();
                return Ok(b);
            }
            if self.buffers_made < self.options.buffers_in_flight.max(1) + 1 {
                self.buffers_made += 1;
                return Ok(IoBuf::with_capacity(self.options.capacity_bytes()));
            }
            if !self.reap_one(true, seg_synced)? {
                // Nothing in flight yet every buffer is gone: only after an error dropped one.
                self.buffers_made -= 1;
            }
        }
    }

    /// Takes the oldest completion (waiting for it with `wait`); `false` if there was none.
    fn reap_one(&mut self, wait: bool, seg_synced: &mut u64) -> io::Result<bool> {
        if self.inflight.is_empty() {
            return Ok(false);
        }
        let pipe = self.pipe.as_mut().expect("buffers in flight have a pipe");
        let Some(c) = pipe.next_completion(wait) else {
            return Ok(false);
        };
        let done = self.inflight.pop_front().expect("checked above");
        assert_eq!(c.ticket, done.ticket, "the pipe returns tickets in order");
        self.free.push(c.buf);
        c.result?;
        if done.sync {
            *seg_synced = (*seg_synced).max(done.end);
            self.durable_lsn = self.durable_lsn.max(done.last_lsn);
        }
        Ok(true)
    }
}

/// The open segment's file as the pipeline writes it: where the handed-over bytes end, what is
/// known durable, and the staging side.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn File>,
    /// Bytes handed to the file (maybe still being written): the offset where the staged
    /// bytes start.
    pub(crate) written: u64,
    /// Bytes known durable.
    pub(crate) synced: u64,
    /// Framed records not yet handed to the file, the buffers in flight and the write pipe.
    pub(crate) pending: Stage,
}

impl SegmentFile {
    /// A segment file whose first `durable` bytes are on the disk, with nothing staged.
    pub(crate) fn new(path: PathBuf, file: Arc<dyn File>, durable: u64) -> SegmentFile {
        SegmentFile {
            path,
            file,
            written: durable,
            synced: durable,
            pending: Stage::default(),
        }
    }

    /// Offset where the next record goes.
    pub(crate) fn end(&self) -> u64 {
        self.written + self.pending.len() as u64
    }

    /// Bytes framed and not yet handed to the file.
    pub(crate) fn staged(&self) -> usize {
        self.pending.len()
    }

    /// The bytes staged from segment offset `from` to the end. `from` must not be before the
    /// bytes the last hand-over took (everything up to `end` is hashed before each one).
    pub(crate) fn staged_from(&self, from: u64) -> &[u8] {
        if from == self.end() {
            return &[];
        }
        let st = &self.pending;
        &st.buf.as_slice()[(from - st.base) as usize..]
    }

    /// Opens the pipe and positions the staging buffer at `written`, reading back the partial
    /// block a direct write must rewrite.
    fn bind(&mut self) -> io::Result<()> {
        if self.pending.pipe.is_some() {
            return Ok(());
        }
        let options = PipeOptions {
            direct: self.pending.options.direct,
        };
        let opened = open_pipe(&self.file, &self.path, options)?;
        let st = &mut self.pending;
        st.align = opened.pipe.direct().map_or(1, |a| a.offset_bytes);
        st.note = opened.note;
        st.pipe = Some(opened.pipe);
        st.base = self.written - self.written % st.align;
        st.head = (self.written - st.base) as usize;
        if st.buf.capacity() == 0 {
            st.buf = match st.free.pop() {
                Some(b) => b,
                None => {
                    st.buffers_made += 1;
                    IoBuf::with_capacity(st.options.capacity_bytes())
                }
            };
        }
        st.buf.clear();
        let head = st.buf.extend_uninit(st.head);
        self.file.read_exact_at(head, st.base)
    }

    /// Frames bytes (a sealed record header, its payload, a trailer) into the staging buffer.
    pub(crate) fn stage(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        self.bind()?;
        let buf = &mut self.pending.buf;
        for part in parts {
            buf.extend_from_slice(part);
        }
        Ok(())
    }

    /// Hands the staged bytes to the pipe (padded and with a data sync if `sync`), takes the
    /// next buffer, and collects the completions that are ready. `last_lsn` is the LSN of the
    /// last record staged.
    pub(crate) fn hand_over(&mut self, sync: bool, last_lsn: u64) -> io::Result<()> {
        self.bind()?;
        let st = &mut self.pending;
        let total = st.buf.len();
        let whole = total - total % st.align as usize;
        if !sync && whole == 0 {
            return Ok(());
        }
        let mut next = st.take_buffer(&mut self.synced)?;
        next.extend_from_slice(&st.buf.as_slice()[whole..total]);
        let mut buf = std::mem::replace(&mut st.buf, next);
        if sync {
            buf.pad_to(st.align as usize);
        } else {
            buf.truncate(whole);
        }
        let pipe = st.pipe.as_mut().expect("bound above");
        let ticket = pipe.submit(st.base, buf, sync);
        let end = st.base + total as u64;
        st.inflight.push_back(Inflight {
            ticket,
            end,
            sync,
            last_lsn,
        });
        st.base += whole as u64;
        st.head = total - whole;
        self.written = end;
        while st.reap_one(false, &mut self.synced)? {}
        Ok(())
    }

    /// Collects completions: all of them with `wait`, otherwise those that are ready.
    pub(crate) fn collect(&mut self, wait: bool) -> io::Result<()> {
        while self.pending.reap_one(wait, &mut self.synced)? {}
        Ok(())
    }

    /// Waits for the oldest buffer in flight to complete; `false` if none was in flight.
    pub(crate) fn wait_one(&mut self) -> io::Result<bool> {
        self.pending.reap_one(true, &mut self.synced)
    }

    /// Waits until every buffer handed over is written, then closes the pipe so that the next
    /// write opens one with the current options. Call only after a sync with nothing staged
    /// since: the next pipe reads a partial last block back from the file.
    pub(crate) fn close_pipe(&mut self) -> io::Result<()> {
        self.collect(true)?;
        let st = &mut self.pending;
        st.pipe = None;
        assert_eq!(st.len(), 0, "a pipe is closed only with nothing staged");
        st.buf.clear();
        st.head = 0;
        Ok(())
    }
}
