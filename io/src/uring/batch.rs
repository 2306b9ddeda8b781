//! The decisions of one io_uring write batch, kept free of kernel calls so they can be tested
//! with made-up completions: what to submit next, what to resubmit after a short write or a
//! transient error, when the batch is finished, and whether its data sync counts.
//!
//! The rules:
//!
//! - A write that completes short is resubmitted for its remainder; a write or sync that fails
//!   with `EAGAIN`, `EINTR` or `ECANCELED` is resubmitted, at most [`RETRIES_MAX`] times each.
//!   Any other failure, or a write of zero bytes, is the batch's error.
//! - The data sync is submitted once every write has been submitted, with a drain flag so the
//!   kernel starts it only after every earlier submission has completed. If any write needed a
//!   resubmission, the sync waits until every write has completed.
//! - A sync counts only if no write was submitted after it, and every write had completed when
//!   its completion was handled. A sync that does not count is issued again.
//! - After an error nothing new is submitted, but the batch is finished only when nothing is in
//!   flight, since the kernel reads the caller's buffers until each completion arrives.

use std::collections::VecDeque;
use std::io;

/// Resubmissions allowed per write (and for the sync) after transient errors.
pub(crate) const RETRIES_MAX: u32 = 16;

/// The user data of the sync submission; writes use their index in the batch.
pub(crate) const SYNC_USER_DATA: u64 = u64::MAX;

/// One submission the driver should make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Write `len` bytes of write `index`, starting at byte `start` of its data.
    Write {
        /// Index of the write in the batch.
        index: usize,
        /// First byte of the write's data still to be written.
        start: usize,
        /// Bytes in this submission.
        len: usize,
    },
    /// A data sync ordered after every earlier submission.
    Sync,
}

impl Op {
    /// The user data that identifies this submission's completion.
    pub(crate) fn user_data(self) -> u64 {
        match self {
            Op::Write { index, .. } => index as u64,
            Op::Sync => SYNC_USER_DATA,
        }
    }
}

/// Progress of one write.
#[derive(Debug)]
struct WriteSlot {
    len: usize,
    done: usize,
    /// Bytes of the submission in flight, if one is.
    in_flight: Option<usize>,
    retries: u32,
}

/// Progress of the batch's sync.
#[derive(Debug, Default)]
struct SyncSlot {
    wanted: bool,
    /// A sync that counts has completed.
    durable: bool,
    in_flight: bool,
    /// No write was submitted since the sync in flight was.
    covers: bool,
    retries: u32,
}

/// The state of one batch; see the module documentation for the rules.
#[derive(Debug)]
pub(crate) struct BatchState {
    writes: Vec<WriteSlot>,
    /// Writes waiting for a submission, in order.
    queue: VecDeque<usize>,
    sync: SyncSlot,
    in_flight: usize,
    /// Some write needed more than one submission.
    resubmitted: bool,
    error: Option<io::Error>,
    op_bytes_max: usize,
}

impl BatchState {
    /// A batch of writes of the given lengths, followed by a sync if `sync`. No submission
    /// carries more than `op_bytes_max`.
    pub(crate) fn new(lens: &[usize], sync: bool, op_bytes_max: usize) -> Self {
        assert!(
            op_bytes_max > 0,
            "a submission must carry at least one byte"
        );
        let writes = lens
            .iter()
            .map(|&len| WriteSlot {
                len,
                done: 0,
                in_flight: None,
                retries: 0,
            })
            .collect();
        BatchState {
            writes,
            queue: (0..lens.len()).filter(|&i| lens[i] > 0).collect(),
            sync: SyncSlot {
                wanted: sync,
                ..SyncSlot::default()
            },
            in_flight: 0,
            resubmitted: false,
            error: None,
            op_bytes_max,
        }
    }

    /// Submissions made and not yet completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The next submission to make, already counted as in flight; `None` if there is nothing to
    /// submit until more completions arrive.
    pub(crate) fn next_op(&mut self) -> Option<Op> {
        if self.error.is_some() {
            return None;
        }
        if let Some(index) = self.queue.pop_front() {
            let slot = &mut self.writes[index];
            let len = (slot.len - slot.done).min(self.op_bytes_max);
            slot.in_flight = Some(len);
            self.in_flight += 1;
            // A write submitted after the sync is not ordered before it.
            self.sync.covers = false;
            return Some(Op::Write {
                index,
                start: slot.done,
                len,
            });
        }
        if self.sync_ready() {
            self.sync.in_flight = true;
            self.sync.covers = true;
            self.in_flight += 1;
            return Some(Op::Sync);
        }
        None
    }

    fn all_written(&self) -> bool {
        self.writes.iter().all(|w| w.done == w.len)
    }

    /// Every byte of every write is written or in a submission in flight.
    fn all_submitted(&self) -> bool {
        self.writes
            .iter()
            .all(|w| w.done + w.in_flight.unwrap_or(0) == w.len)
    }

    fn sync_ready(&self) -> bool {
        let s = &self.sync;
        s.wanted
            && !s.durable
            && !s.in_flight
            && self.all_submitted()
            && (!self.resubmitted || self.all_written())
    }

    /// Handles the completion with `user_data` and kernel result `result` (bytes, or a negated
    /// errno).
    pub(crate) fn complete(&mut self, user_data: u64, result: i32) {
        if user_data == SYNC_USER_DATA && self.sync.in_flight {
            self.complete_sync(result);
            return;
        }
        let slot = usize::try_from(user_data)
            .ok()
            .filter(|&i| i < self.writes.len() && self.writes[i].in_flight.is_some());
        match slot {
            Some(index) => self.complete_write(index, result),
            None => self.fail(io::Error::other(format!(
                "io_uring completed a submission this batch does not have in flight \
                 (user data {user_data}, result {result})"
            ))),
        }
    }

    fn complete_write(&mut self, index: usize, result: i32) {
        self.in_flight -= 1;
        let slot = &mut self.writes[index];
        let submitted = slot.in_flight.take().unwrap_or(0);
        match usize::try_from(result) {
            Ok(0) => self.fail(io::Error::new(
                io::ErrorKind::WriteZero,
                "io_uring wrote 0 bytes of a non-empty write",
            )),
            Ok(n) if n > submitted => self.fail(io::Error::other(format!(
                "io_uring reported {n} bytes written of a {submitted}-byte submission"
            ))),
            Ok(n) => {
                slot.done += n;
                if slot.done < slot.len {
                    self.resubmit(index);
                }
            }
            Err(_) => {
                let errno = result.saturating_neg();
                match retry_budget(errno, &mut slot.retries) {
                    Ok(()) => self.resubmit(index),
                    Err(e) => self.fail(e),
                }
            }
        }
    }

    fn complete_sync(&mut self, result: i32) {
        self.in_flight -= 1;
        self.sync.in_flight = false;
        if result >= 0 {
            // Only a sync that started after every byte of the batch was written counts.
            if self.sync.covers && self.all_written() {
                self.sync.durable = true;
            }
            return;
        }
        // Any other failure is final: the kernel may have dropped the dirty pages, so a later
        // sync that succeeds proves nothing about this batch.
        if let Err(e) = retry_budget(result.saturating_neg(), &mut self.sync.retries) {
            self.fail(e);
        }
    }

    fn resubmit(&mut self, index: usize) {
        self.resubmitted = true;
        if self.error.is_none() {
            self.queue.push_back(index);
        }
    }

    fn fail(&mut self, error: io::Error) {
        self.queue.clear();
        self.error.get_or_insert(error);
    }

    /// Whether the batch is over: nothing in flight, and either an error or every byte written
    /// and, if wanted, a sync that counts.
    pub(crate) fn is_done(&self) -> bool {
        self.in_flight == 0
            && (self.error.is_some()
                || (self.queue.is_empty()
                    && self.all_written()
                    && (!self.sync.wanted || self.sync.durable)))
    }

    /// The batch's outcome. Call only once [`BatchState::is_done`].
    pub(crate) fn finish(self) -> io::Result<()> {
        assert!(
            self.is_done(),
            "a batch finished with submissions outstanding"
        );
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Whether a failure with `errno` may be retried, counting the retry in `retries`. The batch and
/// the write pipe share this rule.
pub(crate) fn retry_budget(errno: i32, retries: &mut u32) -> io::Result<()> {
    let err = io::Error::from_raw_os_error(errno);
    if !matches!(errno, libc::EAGAIN | libc::EINTR | libc::ECANCELED) {
        return Err(err);
    }
    *retries += 1;
    if *retries > RETRIES_MAX {
        return Err(io::Error::new(
            err.kind(),
            format!("io_uring still failed after {RETRIES_MAX} retries: {err}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
