//! The io_uring write pipe: each submitted buffer goes to the kernel as pieces of
//! [`PIPE_CHUNK_BYTES`] in flight at once, the buffers of several submissions in flight
//! together, and the data sync issued as soon as what it covers is written (see `pipe_state`
//! for the rules). The pipe has its own ring and its own descriptor (a duplicate of the file's,
//! or one opened with `O_DIRECT`), so nothing the caller does to the file disturbs it. Through
//! the page cache, each written buffer's range is handed to `sync_file_range` so the disk
//! starts writing it at once (measured: the sync at a point every 64 MiB about twice as fast).
//!
//! The invariant the `unsafe` rests on: a write submission points into a buffer the pipe owns
//! (in `bufs`), and the buffer leaves `bufs` only once `PipeState::pop_finished` says none of
//! its pieces is in flight. A buffer's bytes live on the heap, so moving the `IoBuf` value
//! inside the deque does not move them. Dropping the pipe waits for every submission in flight.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;

use io_uring::{IoUring, opcode, types};

use super::pipe_state::{PipeOp, PipeState};
use super::{RING_ENTRIES, STALL_SLEEP, STALLS_MAX, is_stall};
use crate::buf::IoBuf;
use crate::pipe::{Completion, DirectAlignment, PIPE_CHUNK_BYTES, WritePipe};

/// An asynchronous write pipe over io_uring.
pub(crate) struct UringPipe {
    /// `None` once the ring failed; every submission is then finished (failed).
    ring: Option<IoUring>,
    fd: fs::File,
    direct: Option<DirectAlignment>,
    state: PipeState,
    /// The buffers of the tickets not yet returned, in ticket order.
    bufs: VecDeque<(u64, IoBuf)>,
}

impl std::fmt::Debug for UringPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringPipe")
            .field("fd", &self.fd)
            .field("direct", &self.direct)
            .field("outstanding", &self.bufs.len())
            .finish_non_exhaustive()
    }
}

impl UringPipe {
    /// A pipe writing through `fd`, with `O_DIRECT` alignment `direct` if it was opened so.
    pub(crate) fn new(fd: fs::File, direct: Option<DirectAlignment>) -> io::Result<UringPipe> {
        Ok(UringPipe {
            ring: Some(IoUring::new(RING_ENTRIES)?),
            fd,
            direct,
            state: PipeState::new(PIPE_CHUNK_BYTES, direct.is_none()),
            bufs: VecDeque::new(),
        })
    }

    /// Queues what the state allows, enters the kernel (waiting for one completion if `wait`),
    /// and hands every completion to the state. Returns whether anything was in flight.
    fn pump(&mut self, wait: bool) -> bool {
        let Some(ring) = self.ring.as_mut() else {
            return false;
        };
        fill(ring, &self.fd, &self.bufs, &mut self.state);
        if self.state.in_flight() == 0 {
            return false;
        }
        let mut stalls = 0;
        loop {
            match ring.submit_and_wait(usize::from(wait)) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_stall(&e) && stalls < STALLS_MAX => {
                    stalls += 1;
                    std::thread::sleep(STALL_SLEEP);
                }
                Err(e) => {
                    self.ring_failed(e);
                    return true;
                }
            }
        }
        reap(ring, &mut self.state);
        true
    }

    /// After `io_uring_enter` failed: waits until the kernel has completed every submission it
    /// took (the rest die with the ring), then fails every ticket.
    fn ring_failed(&mut self, e: io::Error) {
        let Some(mut ring) = self.ring.take() else {
            return;
        };
        const POLLS_MAX: u32 = 60_000;
        for _ in 0..POLLS_MAX {
            reap(&mut ring, &mut self.state);
            if self.state.in_flight() <= ring.submission().len() {
                drop(ring);
                self.state.abandon_in_flight(e);
                return;
            }
            std::thread::sleep(STALL_SLEEP);
        }
        eprintln!(
            "replog-io: io_uring failed with writes in flight that never completed; aborting"
        );
        std::process::abort();
    }
}

/// Queues every submission the state allows and the ring has room for.
fn fill(ring: &mut IoUring, fd: &fs::File, bufs: &VecDeque<(u64, IoBuf)>, state: &mut PipeState) {
    let mut sq = ring.submission();
    while state.in_flight() < RING_ENTRIES as usize && !sq.is_full() {
        let Some(op) = state.next_op() else { break };
        let entry = match op {
            PipeOp::Write {
                ticket,
                buf_start,
                file_offset,
                len,
                ..
            } => {
                let buf = &bufs
                    .iter()
                    .find(|(id, _)| *id == ticket)
                    .expect("a ticket's buffer stays until it is returned")
                    .1;
                let data = &buf.as_slice()[buf_start..buf_start + len];
                let len = u32::try_from(len).expect("a piece is at most PIPE_CHUNK_BYTES");
                opcode::Write::new(types::Fd(fd.as_raw_fd()), data.as_ptr(), len)
                    .offset(file_offset)
                    .build()
            }
            PipeOp::Sync => opcode::Fsync::new(types::Fd(fd.as_raw_fd()))
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            PipeOp::Kick { file_offset, len } => {
                let len = u32::try_from(len).unwrap_or(u32::MAX);
                opcode::SyncFileRange::new(types::Fd(fd.as_raw_fd()), len)
                    .offset(file_offset)
                    .flags(libc::SYNC_FILE_RANGE_WRITE)
                    .build()
            }
        };
        let entry = entry.user_data(op.user_data());
        // SAFETY: a write entry points into the heap bytes of a buffer in `bufs`, which stays
        // there, unchanged, until `PipeState::pop_finished` reports none of its pieces in
        // flight, i.e. until this submission's completion has been reaped (or the ring that
        // held it was dropped unseen by the kernel, see `ring_failed`); dropping the pipe waits
        // for the same. Sync and write-back entries point at no memory. The descriptor is owned by the pipe,
        // which outlives every submission on it.
        let pushed = unsafe { sq.push(&entry) };
        pushed.expect("the submission queue was checked for room");
    }
}

/// Hands every completion waiting in the ring to the state.
fn reap(ring: &mut IoUring, state: &mut PipeState) {
    for cqe in ring.completion() {
        state.complete(cqe.user_data(), cqe.result());
    }
}

impl WritePipe for UringPipe {
    fn direct(&self) -> Option<DirectAlignment> {
        self.direct
    }

    fn submit(&mut self, offset: u64, buf: IoBuf, sync: bool) -> u64 {
        let ticket = self.state.push(offset, buf.len(), sync);
        self.bufs.push_back((ticket, buf));
        self.pump(false);
        ticket
    }

    fn next_completion(&mut self, wait: bool) -> Option<Completion> {
        loop {
            if let Some((ticket, result)) = self.state.pop_finished() {
                let (id, buf) = self.bufs.pop_front().expect("a buffer per ticket");
                assert_eq!(id, ticket, "tickets are returned in order");
                return Some(Completion {
                    ticket,
                    buf,
                    result,
                });
            }
            if self.bufs.is_empty() {
                return None;
            }
            let busy = self.pump(wait);
            if !wait {
                return self.state.pop_finished().map(|(ticket, result)| {
                    let (_, buf) = self.bufs.pop_front().expect("a buffer per ticket");
                    Completion {
                        ticket,
                        buf,
                        result,
                    }
                });
            }
            if !busy && self.ring.is_some() {
                // Nothing in flight and nothing to submit, yet a ticket is unfinished: a bug
                // in the rules; fail rather than spin. No buffer is with the kernel.
                self.state.abandon_in_flight(io::Error::other(
                    "the io_uring write pipe stalled with nothing in flight",
                ));
            }
        }
    }

    fn outstanding(&self) -> usize {
        self.state.outstanding()
    }
}

impl Drop for UringPipe {
    fn drop(&mut self) {
        // The kernel may still read buffers of submissions in flight: wait for them, and
        // submit nothing more.
        self.state
            .fail(io::Error::other("the write pipe was closed"));
        while self.ring.is_some() && self.state.in_flight() > 0 {
            self.pump(true);
        }
    }
}
