//! The write pipe of the plain-syscall backend: one thread per pipe does the `pwrite`s and
//! `fdatasync`s, so that the caller frames the next buffer while the kernel copies (or, with
//! `O_DIRECT`, the disk writes) the last one.
//!
//! Buffers travel to the thread and back by value through channels, so no memory is shared.
//! Through the page cache, each written buffer is handed to `sync_file_range` so the disk
//! starts writing it at once and the next data sync finds little left (measured: the sync at a
//! point every 64 MiB about twice as fast). The thread handles submissions in order; after writing one that asked for a sync, it writes
//! those already waiting too (up to [`GROUP_MAX`]), then syncs once for all of them (group
//! commit), and reports every one in order. After a failure it writes nothing more and fails
//! every later submission, like the other pipes.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::thread;

use crate::buf::IoBuf;
use crate::pipe::{Completion, DirectAlignment, FirstFailure, PIPE_CHUNK_BYTES, WritePipe};

/// Submissions written after one that asked for a sync, before that sync is issued.
pub const GROUP_MAX: usize = 8;

/// A submission on its way to the thread.
struct Job {
    ticket: u64,
    offset: u64,
    buf: IoBuf,
    sync: bool,
}

/// A write pipe served by a thread of its own.
pub struct ThreadPipe {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Completion>,
    worker: Option<thread::JoinHandle<()>>,
    direct: Option<DirectAlignment>,
    next_ticket: u64,
    outstanding: usize,
}

impl std::fmt::Debug for ThreadPipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPipe")
            .field("direct", &self.direct)
            .field("outstanding", &self.outstanding)
            .finish_non_exhaustive()
    }
}

impl ThreadPipe {
    /// A pipe writing through `file` on a new thread, checking submissions against `direct`.
    pub fn new(file: fs::File, direct: Option<DirectAlignment>) -> io::Result<ThreadPipe> {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, done) = mpsc::channel::<Completion>();
        let worker = thread::Builder::new()
            .name("replog-pipe".into())
            .spawn(move || Worker::new(file, direct, outbox).run(&inbox))?;
        Ok(ThreadPipe {
            jobs: Some(jobs),
            done,
            worker: Some(worker),
            direct,
            next_ticket: 1,
            outstanding: 0,
        })
    }
}

impl WritePipe for ThreadPipe {
    fn direct(&self) -> Option<DirectAlignment> {
        self.direct
    }

    fn submit(&mut self, offset: u64, buf: IoBuf, sync: bool) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.outstanding += 1;
        let job = Job {
            ticket,
            offset,
            buf,
            sync,
        };
        let sent = self.jobs.as_ref().map(|tx| tx.send(job));
        assert!(
            matches!(sent, Some(Ok(()))),
            "the pipe's thread lives as long as the pipe"
        );
        ticket
    }

    fn next_completion(&mut self, wait: bool) -> Option<Completion> {
        if self.outstanding == 0 {
            return None;
        }
        let c = if wait {
            self.done.recv().ok()
        } else {
            self.done.try_recv().ok()
        }?;
        self.outstanding -= 1;
        Some(c)
    }

    fn outstanding(&self) -> usize {
        self.outstanding
    }
}

impl Drop for ThreadPipe {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has handled what it was sent.
        self.jobs = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Writes `data` at `offset` in pieces of [`PIPE_CHUNK_BYTES`]: a buffer of many MiB in one
/// `pwrite` holds the file's lock while write-back of the same file waits, and measured several
/// times slower through the page cache.
fn write_in_pieces(file: &fs::File, offset: u64, data: &[u8]) -> io::Result<()> {
    for (i, piece) in data.chunks(PIPE_CHUNK_BYTES).enumerate() {
        // `write_all_at` loops over short writes and EINTR.
        file.write_all_at(piece, offset + (i * PIPE_CHUNK_BYTES) as u64)?;
    }
    Ok(())
}

/// Asks the kernel to start writing `[offset, offset + len)` back to the disk now
/// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`: it does not wait and promises nothing), so
/// that the disk writes while the caller frames, and the next data sync finds little left to
/// do. A hint: its failure changes nothing (the sync that follows reports real errors).
fn start_writeback(file: &fs::File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(offset),
        libc::off64_t::try_from(len),
    ) else {
        return;
    };
    // SAFETY: sync_file_range takes no pointers; the descriptor is open while `file` lives.
    let _ = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
}

/// The thread's side.
struct Worker {
    file: fs::File,
    direct: Option<DirectAlignment>,
    outbox: mpsc::Sender<Completion>,
    /// Written, waiting for a sync (or behind one that is), in order.
    waiting: VecDeque<(Job, io::Result<()>)>,
    failed: FirstFailure,
}

impl Worker {
    fn new(
        file: fs::File,
        direct: Option<DirectAlignment>,
        outbox: mpsc::Sender<Completion>,
    ) -> Worker {
        Worker {
            file,
            direct,
            outbox,
            waiting: VecDeque::new(),
            failed: FirstFailure::default(),
        }
    }

    fn run(mut self, inbox: &mpsc::Receiver<Job>) {
        while let Ok(job) = inbox.recv() {
            let wants_sync = job.sync;
            self.write(job);
            if wants_sync {
                for _ in 0..GROUP_MAX {
                    match inbox.try_recv() {
                        Ok(more) => self.write(more),
                        Err(_) => break,
                    }
                }
                self.sync_and_report();
            }
        }
        self.sync_and_report();
    }

    /// Writes one submission and queues its outcome; a submission with nothing waiting ahead
    /// and no sync asked is reported at once.
    fn write(&mut self, job: Job) {
        let result = match self.failed.refusal() {
            Some(e) => Err(e),
            None => match self.direct {
                Some(a) if !a.admits(job.offset, &job.buf) => {
                    Err(io::Error::from_raw_os_error(libc::EINVAL))
                }
                // A submission with a sync is written back by it: no hint to race it.
                None if job.sync => write_in_pieces(&self.file, job.offset, job.buf.as_slice()),
                None => write_in_pieces(&self.file, job.offset, job.buf.as_slice())
                    .map(|()| start_writeback(&self.file, job.offset, job.buf.len())),
                Some(_) => write_in_pieces(&self.file, job.offset, job.buf.as_slice()),
            },
        };
        if let Err(e) = &result {
            self.failed.record(e);
        }
        if self.waiting.is_empty() && !job.sync {
            self.report(job, result);
        } else {
            self.waiting.push_back((job, result));
        }
    }

    /// One sync for every written submission that waits, then their outcomes, in order.
    fn sync_and_report(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let synced = match self.failed.refusal() {
            Some(e) => Err(e),
            None => self.file.sync_data(),
        };
        if let Err(e) = &synced {
            self.failed.record(e);
        }
        let mut first_error = synced.err();
        while let Some((job, written)) = self.waiting.pop_front() {
            let result = match (written, job.sync) {
                (Err(e), _) => Err(e),
                (Ok(()), false) => Ok(()),
                (Ok(()), true) => match first_error.take() {
                    Some(e) => Err(e),
                    None => self.failed.refusal().map_or(Ok(()), Err),
                },
            };
            self.report(job, result);
        }
    }

    fn report(&self, job: Job, result: io::Result<()>) {
        // The pipe may be gone (dropped while this ran): nobody waits then.
        let _ = self.outbox.send(Completion {
            ticket: job.ticket,
            buf: job.buf,
            result,
        });
    }
}
