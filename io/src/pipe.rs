//! Write pipes: asynchronous writes of owned buffers to one file, with group-committed data
//! syncs, so a writer can frame the next buffer while earlier ones are on their way to the disk.
//!
//! A pipe takes a buffer by value ([`WritePipe::submit`]) and gives it back in a
//! [`Completion`], in submission order, once the kernel is done with it. A submission made
//! with `sync` completes only when a data sync that started after every byte of it, and of
//! every earlier submission, had been written has succeeded. One sync serves every submission
//! that asked for one while the previous sync was running (group commit).
//!
//! Once a submission fails, the pipe is failed: every later submission completes with an error
//! without being written, as a failed sync may have dropped data (the caller stops
//! acknowledging anything). A submission whose range overlaps an earlier one still being
//! written starts only after it, so a rewritten block (the padded tail of a direct write) never
//! races with the write it replaces.
//!
//! Backends: io_uring has a truly asynchronous pipe (`uring::pipe`); the plain-syscall backend
//! a [`ThreadPipe`], whose thread does the `pwrite`s and `fdatasync`s; every other file gets
//! [`SyncPipe`], which writes at submission and syncs when a caller waits for a submission that
//! asked for one (several waiting submissions share that one sync). The simulator's pipe is a
//! `SyncPipe` over its own file, so every write and sync stays one counted operation, in the
//! caller's thread, and crash tests see the same semantics.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::buf::IoBuf;
use crate::{File, WriteAt};

mod thread;

pub use thread::ThreadPipe;

/// Bytes of each write a pipe issues: a buffer goes to the file in pieces of this size, several
/// in flight at once on io_uring.
pub const PIPE_CHUNK_BYTES: usize = 1 << 20;

/// How a pipe should write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeOptions {
    /// Write with `O_DIRECT`, bypassing the page cache, where the file allows it.
    pub direct: bool,
}

/// What direct I/O requires of every submission: the buffer's address a multiple of
/// `memory_bytes`, the offset and length multiples of `offset_bytes` (from `statx`'s
/// `STATX_DIOALIGN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectAlignment {
    /// Alignment of the buffer's address.
    pub memory_bytes: u64,
    /// Alignment of the file offset and of the length.
    pub offset_bytes: u64,
}

impl DirectAlignment {
    /// Whether a write of `buf` at `offset` meets the alignment.
    pub fn admits(&self, offset: u64, buf: &IoBuf) -> bool {
        offset.is_multiple_of(self.offset_bytes)
            && (buf.len() as u64).is_multiple_of(self.offset_bytes)
            && (buf.addr() as u64).is_multiple_of(self.memory_bytes)
    }
}

/// A finished submission: its buffer back, and whether it was written (and synced, if asked).
#[derive(Debug)]
pub struct Completion {
    /// The ticket [`WritePipe::submit`] returned.
    pub ticket: u64,
    /// The buffer, to be reused.
    pub buf: IoBuf,
    /// `Ok` when every byte was written and, for a submission with `sync`, made durable.
    pub result: io::Result<()>,
}

/// An asynchronous writer of owned buffers to one file; see the module documentation.
pub trait WritePipe: Send + std::fmt::Debug {
    /// The alignment every submission must meet when the pipe writes with `O_DIRECT`; `None`
    /// when it writes through the page cache.
    fn direct(&self) -> Option<DirectAlignment>;

    /// Starts writing all of `buf` at `offset`; with `sync`, the submission completes only
    /// once durable. Returns its ticket: 1, 2, ... in submission order.
    fn submit(&mut self, offset: u64, buf: IoBuf, sync: bool) -> u64;

    /// The oldest submission not yet returned, once it is finished. With `wait`, blocks until
    /// it is; without, returns `None` if it is still running. `None` when nothing is
    /// outstanding.
    fn next_completion(&mut self, wait: bool) -> Option<Completion>;

    /// Submissions made and not yet returned.
    fn outstanding(&self) -> usize;
}

/// A pipe and what opening it decided.
#[derive(Debug)]
pub struct OpenedPipe {
    /// The pipe.
    pub pipe: Box<dyn WritePipe>,
    /// Why the pipe does not do what the options asked (direct I/O refused), for the user.
    pub note: Option<String>,
}

/// Opens a write pipe onto `file`, which was opened from `path` for writing: the backend's own
/// where it has one, otherwise a [`SyncPipe`] over the file.
pub fn open_pipe(
    file: &Arc<dyn File>,
    path: &Path,
    options: PipeOptions,
) -> io::Result<OpenedPipe> {
    if let Some(opened) = file.open_pipe(path, options)? {
        return Ok(opened);
    }
    Ok(OpenedPipe {
        pipe: Box::new(SyncPipe::new(Arc::clone(file), None)),
        note: options.direct.then(|| {
            "direct I/O is not available on this backend; writing through the page cache".to_owned()
        }),
    })
}

/// Writes `data` at `offset` of `file` in pieces of [`PIPE_CHUNK_BYTES`], each one `WriteAt`
/// of a batch (one counted operation in the simulator).
fn write_pieces(file: &dyn File, offset: u64, data: &[u8]) -> io::Result<()> {
    let pieces: Vec<WriteAt<'_>> = data
        .chunks(PIPE_CHUNK_BYTES)
        .enumerate()
        .map(|(i, piece)| WriteAt {
            offset: offset + (i * PIPE_CHUNK_BYTES) as u64,
            data: piece,
        })
        .collect();
    file.write_batch(&pieces, false)
}

/// A submission of a [`SyncPipe`]: written already, maybe waiting for its sync.
#[derive(Debug)]
struct Done {
    ticket: u64,
    buf: IoBuf,
    /// `None` while it waits for a sync.
    result: Option<io::Result<()>>,
}

/// The pipe of backends without asynchronous writes: each submission is written when it is
/// made; the sync a submission asks for runs when a caller waits for it, and covers every
/// submission written by then.
#[derive(Debug)]
pub struct SyncPipe {
    file: Arc<dyn File>,
    direct: Option<DirectAlignment>,
    next_ticket: u64,
    done: VecDeque<Done>,
    failed: FirstFailure,
}

/// The first error a pipe met. After it the pipe refuses every submission: a write after a
/// failed one could leave a hole behind it, and a sync after a failed one proves nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct FirstFailure(Option<(io::ErrorKind, String)>);

impl FirstFailure {
    /// The error a submission gets once the pipe has failed.
    pub(crate) fn refusal(&self) -> Option<io::Error> {
        self.0.as_ref().map(|(kind, msg)| {
            io::Error::new(
                *kind,
                format!("an earlier write or sync of this file failed: {msg}"),
            )
        })
    }

    /// Keeps `e` unless an earlier failure is already kept.
    pub(crate) fn record(&mut self, e: &io::Error) {
        self.0.get_or_insert_with(|| (e.kind(), e.to_string()));
    }
}

impl SyncPipe {
    /// A pipe onto `file`. With `direct`, every submission is checked against it (`EINVAL`
    /// otherwise, as the kernel answers a misaligned direct write).
    pub fn new(file: Arc<dyn File>, direct: Option<DirectAlignment>) -> SyncPipe {
        SyncPipe {
            file,
            direct,
            next_ticket: 1,
            done: VecDeque::new(),
            failed: FirstFailure::default(),
        }
    }
}

impl WritePipe for SyncPipe {
    fn direct(&self) -> Option<DirectAlignment> {
        self.direct
    }

    fn submit(&mut self, offset: u64, buf: IoBuf, sync: bool) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let result = match self.failed.refusal() {
            Some(e) => Some(Err(e)),
            None => {
                let written = match self.direct {
                    Some(a) if !a.admits(offset, &buf) => {
                        Err(io::Error::from_raw_os_error(libc::EINVAL))
                    }
                    _ => write_pieces(self.file.as_ref(), offset, buf.as_slice()),
                };
                match written {
                    Err(e) => {
                        self.failed.record(&e);
                        Some(Err(e))
                    }
                    Ok(()) if sync => None,
                    Ok(()) => Some(Ok(())),
                }
            }
        };
        self.done.push_back(Done {
            ticket,
            buf,
            result,
        });
        ticket
    }

    fn next_completion(&mut self, wait: bool) -> Option<Completion> {
        let front = self.done.front()?;
        if front.result.is_none() {
            if !wait {
                return None;
            }
            // One sync covers every submission written so far: all waiting ones share it.
            let outcome = match self.failed.refusal() {
                Some(e) => Err(e),
                None => self.file.sync_data(),
            };
            if let Err(e) = &outcome {
                self.failed.record(e);
            }
            let mut first = Some(outcome);
            let failed = self.failed.clone();
            for d in self.done.iter_mut().filter(|d| d.result.is_none()) {
                d.result = Some(match first.take() {
                    Some(r) => r,
                    None => match &failed.0 {
                        Some((kind, msg)) => Err(io::Error::new(
                            *kind,
                            format!("a data sync of this file failed: {msg}"),
                        )),
                        None => Ok(()),
                    },
                });
            }
        }
        let d = self.done.pop_front()?;
        Some(Completion {
            ticket: d.ticket,
            buf: d.buf,
            result: d.result.expect("the sync filled in every waiting result"),
        })
    }

    fn outstanding(&self) -> usize {
        self.done.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{Fault, FaultError, FaultOp, SimStorage};
    use crate::{OpenMode, Storage};

    fn sim_file() -> (Arc<SimStorage>, Arc<dyn File>) {
        let sim = SimStorage::new(1);
        let f = sim.open(Path::new("/f"), OpenMode::CreateNew).unwrap();
        sim.sync_dir(Path::new("/")).unwrap();
        (sim, f)
    }

    fn buf(byte: u8, len: usize) -> IoBuf {
        let mut b = IoBuf::with_capacity(len);
        b.extend_from_slice(&vec![byte; len]);
        b
    }

    #[test]
    fn waiting_submissions_share_one_sync() {
        let (sim, f) = sim_file();
        let mut pipe = SyncPipe::new(f, None);
        let before = sim.ops();
        let t1 = pipe.submit(0, buf(1, 100), true);
        let t2 = pipe.submit(100, buf(2, 100), false);
        let t3 = pipe.submit(200, buf(3, 100), true);
        assert_eq!((t1, t2, t3), (1, 2, 3));
        assert_eq!(sim.ops() - before, 3, "three writes, no sync yet");
        assert!(pipe.next_completion(false).is_none(), "a sync is needed");
        for t in [1, 2, 3] {
            let c = pipe.next_completion(true).unwrap();
            assert_eq!(c.ticket, t);
            c.result.unwrap();
        }
        assert_eq!(sim.ops() - before, 4, "one sync for both");
        assert_eq!(sim.durable_bytes("/f").unwrap().len(), 300);
        assert!(pipe.next_completion(true).is_none());
    }

    #[test]
    fn after_a_failed_sync_nothing_more_is_written_or_acknowledged() {
        let (sim, f) = sim_file();
        let mut pipe = SyncPipe::new(f, None);
        sim.inject(Fault::once(FaultOp::Sync, FaultError::Eio));
        pipe.submit(0, buf(1, 10), true);
        assert!(pipe.next_completion(true).unwrap().result.is_err());
        let ops = sim.ops();
        pipe.submit(10, buf(2, 10), false);
        assert!(pipe.next_completion(true).unwrap().result.is_err());
        assert_eq!(sim.ops(), ops, "nothing written after the failure");
    }

    #[test]
    fn a_misaligned_direct_submission_is_refused() {
        let (_sim, f) = sim_file();
        let align = DirectAlignment {
            memory_bytes: 512,
            offset_bytes: 512,
        };
        let mut pipe = SyncPipe::new(f, Some(align));
        pipe.submit(0, buf(1, 512), false);
        pipe.submit(512, buf(1, 100), false);
        assert!(pipe.next_completion(true).unwrap().result.is_ok());
        let e = pipe.next_completion(true).unwrap().result.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }
}
