//! The pump of a pass: the source is read on a thread of its own, which hands each finished read
//! to a bounded queue, and the caller's thread journals what arrives (a few reads per
//! `write_many`, whose compression and checksums run in parallel) while the next reads are on
//! their way. Zero ranges are journaled first, without reading. If journaling fails, the queue
//! is closed and the reader stops at its next hand-over; if reading fails, the queue ends and
//! the read's error is returned. Either way the pass's records so far stay in the journal, and
//! the caller's pending record (`pending`) keeps any point from covering them.
//!
//! Memory: the reads in flight ([`READS_IN_FLIGHT`] x [`READ_BYTES`]), the queue
//! ([`QUEUE_READS`] reads) and one batch being journaled ([`BATCH_READS`] reads): at most
//! 28 x 2 MiB = 56 MiB of data, plus the writer's own buffers.

use std::ops::ControlFlow;
use std::sync::mpsc::{Receiver, sync_channel};

use replog_writer::Writer;

use super::plan::Plan;
use crate::error::Result;

/// Reads in flight at the source at once.
pub const READS_IN_FLIGHT: usize = 16;
/// The largest read asked for, in bytes.
pub const READ_BYTES: u32 = 2 << 20;
/// Finished reads waiting to be journaled.
pub const QUEUE_READS: usize = 8;
/// Finished reads journaled by one `write_many`.
pub const BATCH_READS: usize = 4;

/// Where a finished read goes: `(offset, bytes)`; `Break` stops the reads.
pub type Handover<'a> = dyn FnMut(u64, Vec<u8>) -> ControlFlow<()> + 'a;

/// Where the reads come from: given the reads to make and where to hand each finished one, it
/// makes them (stopping when the hand-over says so) and returns the bytes of data it read.
pub type ReadFn<'a> =
    dyn FnOnce(&mut dyn Iterator<Item = (u64, u32)>, &mut Handover<'_>) -> Result<u64> + Send + 'a;

/// What a pass journaled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pumped {
    /// Bytes of data the source read for it.
    pub bytes_read: u64,
    /// Bytes journaled as writes.
    pub bytes_written: u64,
    /// Bytes journaled as zeros.
    pub bytes_zeroed: u64,
}

/// Journals `plan` into disk `disk_id`: its zero ranges when `zeros` is set, then its reads as
/// `read` delivers them. `progress` gets the bytes journaled so far.
pub fn pump(
    w: &mut Writer,
    disk_id: u32,
    plan: &Plan,
    zeros: bool,
    read: Box<ReadFn<'_>>,
    progress: &dyn Fn(u64),
) -> Result<Pumped> {
    let mut done = Pumped::default();
    if zeros {
        for &(start, end) in &plan.zeros {
            w.zero(disk_id, start, end - start)?;
            done.bytes_zeroed += end - start;
            progress(done.bytes_zeroed);
        }
    }
    let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(QUEUE_READS);
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut reads = plan.reads.iter().copied();
            read(
                &mut reads,
                &mut |offset, buf| match tx.send((offset, buf)) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                },
            )
        });
        let journaled = journal_arrivals(w, disk_id, &rx, &mut done, progress);
        drop(rx);
        let read = match reader.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        journaled?;
        done.bytes_read = read?;
        Ok(done)
    })
}

/// Journals reads as they arrive, a few per batch, until the queue ends.
fn journal_arrivals(
    w: &mut Writer,
    disk_id: u32,
    rx: &Receiver<(u64, Vec<u8>)>,
    done: &mut Pumped,
    progress: &dyn Fn(u64),
) -> Result<()> {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH_READS {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let writes: Vec<(u64, &[u8])> = batch.iter().map(|(o, b)| (*o, b.as_slice())).collect();
        w.write_many(disk_id, &writes)?;
        done.bytes_written += writes.iter().map(|w| w.1.len() as u64).sum::<u64>();
        progress(done.bytes_zeroed + done.bytes_written);
    }
    Ok(())
}
