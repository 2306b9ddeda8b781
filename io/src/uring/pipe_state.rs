//! The decisions of the io_uring write pipe, kept free of kernel calls so they can be tested
//! with made-up completions. A pipe is a queue of tickets (one per submitted buffer), each
//! written in pieces of at most `chunk_bytes`, several in flight at once.
//!
//! The rules:
//!
//! - A piece that completes short is resubmitted for its remainder; a piece or sync that fails
//!   with `EAGAIN`, `EINTR` or `ECANCELED` is resubmitted, at most
//!   [`RETRIES_MAX`](crate::uring::batch::RETRIES_MAX) times each.
//!   Any other failure, or a write of zero bytes, fails the pipe: nothing new is submitted.
//! - A ticket's pieces are submitted only when no earlier ticket that overlaps it is still
//!   being written (the padded tail block of a direct write is rewritten by the next ticket).
//! - At most one data sync is in flight. It is issued when a ticket that asked for one has
//!   been written, as has every ticket before it, and it covers the longest prefix of tickets
//!   written at that moment: every byte it covers had completed before it started, so no drain
//!   flag is needed and later writes go on while it runs. Tickets that ask for a sync while one
//!   runs share the next one (group commit).
//! - A ticket is returned (in order) once none of its pieces is in flight, and it is finished:
//!   written and, if it asked, covered by a successful sync; or the pipe has failed.
//! - Through the page cache (`kick_writeback`), once a ticket without a sync is written, a
//!   `sync_file_range(SYNC_FILE_RANGE_WRITE)` of its range starts the disk writing it now, so a
//!   later sync finds little left to do. It is a hint: it proves nothing, counts for no ticket,
//!   and its result is ignored.

use std::collections::VecDeque;
use std::io;

use crate::uring::batch::retry_budget;

/// The user data of the sync and of write-back hints; writes carry `ticket << PIECE_BITS |
/// piece`, which never reaches these.
const SYNC_USER_DATA: u64 = u64::MAX;
const KICK_USER_DATA: u64 = u64::MAX - 1;
const PIECE_BITS: u32 = 24;

/// One submission the driver should make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PipeOp {
    /// Write `len` bytes from byte `buf_start` of ticket `ticket`'s buffer at `file_offset`.
    Write {
        ticket: u64,
        piece: usize,
        buf_start: usize,
        file_offset: u64,
        len: usize,
    },
    /// A data sync.
    Sync,
    /// Start write-back of `len` bytes at `file_offset` (a hint).
    Kick { file_offset: u64, len: u64 },
}

impl PipeOp {
    /// The user data that identifies this submission's completion.
    pub(crate) fn user_data(self) -> u64 {
        match self {
            PipeOp::Write { ticket, piece, .. } => (ticket << PIECE_BITS) | piece as u64,
            PipeOp::Sync => SYNC_USER_DATA,
            PipeOp::Kick { .. } => KICK_USER_DATA,
        }
    }
}

#[derive(Debug)]
struct Piece {
    start: usize,
    len: usize,
    done: usize,
    in_flight: Option<usize>,
    retries: u32,
}

#[derive(Debug)]
struct Ticket {
    id: u64,
    offset: u64,
    len: u64,
    pieces: Vec<Piece>,
    /// Pieces waiting for a submission, in order.
    queue: VecDeque<usize>,
    sync: bool,
    durable: bool,
}

impl Ticket {
    fn written(&self) -> bool {
        self.pieces.iter().all(|p| p.done == p.len)
    }

    fn pieces_in_flight(&self) -> bool {
        self.pieces.iter().any(|p| p.in_flight.is_some())
    }

    fn overlaps(&self, other: &Ticket) -> bool {
        self.offset < other.offset + other.len && other.offset < self.offset + self.len
    }
}

/// The state of one pipe; see the module documentation for the rules.
#[derive(Debug)]
pub(crate) struct PipeState {
    tickets: VecDeque<Ticket>,
    next_id: u64,
    in_flight: usize,
    /// The ticket id the sync in flight covers, up to and including.
    sync_in_flight: Option<u64>,
    sync_retries: u32,
    error: Option<io::Error>,
    chunk_bytes: usize,
    kick_writeback: bool,
    /// Ranges of tickets written since, waiting for their write-back hint.
    kicks: VecDeque<(u64, u64)>,
    kicks_in_flight: usize,
}

impl PipeState {
    /// An empty pipe writing in pieces of at most `chunk_bytes`, hinting write-back of each
    /// written ticket if `kick_writeback`.
    pub(crate) fn new(chunk_bytes: usize, kick_writeback: bool) -> PipeState {
        assert!(chunk_bytes > 0, "a piece must carry at least one byte");
        PipeState {
            tickets: VecDeque::new(),
            next_id: 1,
            in_flight: 0,
            sync_in_flight: None,
            sync_retries: 0,
            error: None,
            chunk_bytes,
            kick_writeback,
            kicks: VecDeque::new(),
            kicks_in_flight: 0,
        }
    }

    /// Queues a buffer of `len` bytes for `offset`; returns its ticket.
    pub(crate) fn push(&mut self, offset: u64, len: usize, sync: bool) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        assert!(
            id < 1 << (64 - PIECE_BITS) && len.div_ceil(self.chunk_bytes) < 1 << PIECE_BITS,
            "ticket ids and piece counts fit the user data"
        );
        let pieces: Vec<Piece> = (0..len)
            .step_by(self.chunk_bytes)
            .map(|start| Piece {
                start,
                len: self.chunk_bytes.min(len - start),
                done: 0,
                in_flight: None,
                retries: 0,
            })
            .collect();
        self.tickets.push_back(Ticket {
            id,
            offset,
            len: len as u64,
            queue: (0..pieces.len()).collect(),
            pieces,
            sync,
            durable: false,
        });
        id
    }

    /// Submissions made and not yet completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Tickets not yet returned.
    pub(crate) fn outstanding(&self) -> usize {
        self.tickets.len()
    }

    /// The next submission to make, counted as in flight; `None` if there is nothing to submit
    /// until more completions arrive.
    pub(crate) fn next_op(&mut self) -> Option<PipeOp> {
        if self.error.is_some() {
            return None;
        }
        if let Some(op) = self.next_write() {
            return Some(op);
        }
        self.next_sync().or_else(|| self.next_kick())
    }

    fn next_kick(&mut self) -> Option<PipeOp> {
        let (file_offset, len) = self.kicks.pop_front()?;
        self.in_flight += 1;
        self.kicks_in_flight += 1;
        Some(PipeOp::Kick { file_offset, len })
    }

    fn next_write(&mut self) -> Option<PipeOp> {
        let i = self.tickets.iter().position(|t| !t.queue.is_empty())?;
        let t = &self.tickets[i];
        if self
            .tickets
            .iter()
            .take(i)
            .any(|e| !e.written() && e.overlaps(t))
        {
            return None;
        }
        let t = &mut self.tickets[i];
        let piece = t.queue.pop_front().expect("the ticket has a queued piece");
        let p = &mut t.pieces[piece];
        let len = p.len - p.done;
        p.in_flight = Some(len);
        self.in_flight += 1;
        Some(PipeOp::Write {
            ticket: t.id,
            piece,
            buf_start: p.start + p.done,
            file_offset: t.offset + (p.start + p.done) as u64,
            len,
        })
    }

    fn next_sync(&mut self) -> Option<PipeOp> {
        if self.sync_in_flight.is_some() {
            return None;
        }
        let written = self.tickets.iter().take_while(|t| t.written()).count();
        let wanted = self
            .tickets
            .iter()
            .take(written)
            .any(|t| t.sync && !t.durable);
        if !wanted {
            return None;
        }
        self.sync_in_flight = Some(self.tickets[written - 1].id);
        self.in_flight += 1;
        Some(PipeOp::Sync)
    }

    /// Handles the completion with `user_data` and kernel result `result` (bytes, or a negated
    /// errno).
    pub(crate) fn complete(&mut self, user_data: u64, result: i32) {
        if user_data == SYNC_USER_DATA && self.sync_in_flight.is_some() {
            self.complete_sync(result);
            return;
        }
        if user_data == KICK_USER_DATA && self.kicks_in_flight > 0 {
            // A hint: whatever it says, the sync that follows decides.
            self.kicks_in_flight -= 1;
            self.in_flight -= 1;
            return;
        }
        let ticket = user_data >> PIECE_BITS;
        let piece = (user_data & ((1 << PIECE_BITS) - 1)) as usize;
        let found = self.tickets.iter().position(|t| {
            t.id == ticket && t.pieces.get(piece).is_some_and(|p| p.in_flight.is_some())
        });
        match found {
            Some(i) => self.complete_write(i, piece, result),
            None => self.fail(io::Error::other(format!(
                "io_uring completed a submission this pipe does not have in flight \
                 (user data {user_data}, result {result})"
            ))),
        }
    }

    fn complete_write(&mut self, i: usize, piece: usize, result: i32) {
        self.in_flight -= 1;
        let p = &mut self.tickets[i].pieces[piece];
        let submitted = p.in_flight.take().unwrap_or(0);
        let outcome = match usize::try_from(result) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "io_uring wrote 0 bytes of a non-empty write",
            )),
            Ok(n) if n > submitted => Err(io::Error::other(format!(
                "io_uring reported {n} bytes written of a {submitted}-byte submission"
            ))),
            Ok(n) => {
                p.done += n;
                Ok(p.done < p.len)
            }
            Err(_) => retry_budget(result.saturating_neg(), &mut p.retries).map(|()| true),
        };
        match outcome {
            Ok(true) if self.error.is_none() => self.tickets[i].queue.push_back(piece),
            Ok(_) => {
                let t = &self.tickets[i];
                // A ticket that asked for a sync is written back by it; a hint would only race
                // the sync for the same pages.
                if self.kick_writeback && t.written() && !t.sync {
                    self.kicks.push_back((t.offset, t.len));
                }
            }
            Err(e) => self.fail(e),
        }
    }

    fn complete_sync(&mut self, result: i32) {
        self.in_flight -= 1;
        let covers = self.sync_in_flight.take().expect("a sync is in flight");
        if result >= 0 {
            self.sync_retries = 0;
            for t in self.tickets.iter_mut().take_while(|t| t.id <= covers) {
                t.durable = true;
            }
            return;
        }
        // A failed sync is final (the kernel may have dropped the dirty pages); only the
        // transient errors are retried, by issuing a new sync that covers what is written then.
        if let Err(e) = retry_budget(result.saturating_neg(), &mut self.sync_retries) {
            self.fail(e);
        }
    }

    /// Fails the pipe: nothing new is submitted; tickets are returned as their pieces in
    /// flight complete.
    pub(crate) fn fail(&mut self, error: io::Error) {
        for t in &mut self.tickets {
            t.queue.clear();
        }
        self.error.get_or_insert(error);
    }

    /// After the ring itself failed and every submission the kernel took has completed: the
    /// rest were never seen by the kernel and are forgotten.
    pub(crate) fn abandon_in_flight(&mut self, error: io::Error) {
        self.fail(error);
        for t in &mut self.tickets {
            for p in &mut t.pieces {
                p.in_flight = None;
            }
        }
        self.sync_in_flight = None;
        self.kicks.clear();
        self.kicks_in_flight = 0;
        self.in_flight = 0;
    }

    /// The oldest ticket and its outcome, if it is finished and the kernel holds none of its
    /// buffer.
    pub(crate) fn pop_finished(&mut self) -> Option<(u64, io::Result<()>)> {
        let t = self.tickets.front()?;
        if t.pieces_in_flight() {
            return None;
        }
        let ok = t.written() && (!t.sync || t.durable);
        let outcome = match (&self.error, ok) {
            (_, true) => Ok(()),
            (Some(e), false) => Err(io::Error::new(
                e.kind(),
                format!("the write pipe failed: {e}"),
            )),
            (None, false) => return None,
        };
        let t = self.tickets.pop_front().expect("checked above");
        Some((t.id, outcome))
    }
}

#[cfg(test)]
mod tests;
