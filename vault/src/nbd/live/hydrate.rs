//! Hydration: each disk of the point copied into its image, in disk order, one window of
//! [`WINDOW_BYTES`] at a time, skipping what is done already (copied by an earlier run, or
//! written by the guest).
//!
//! For each window, the ranges not done are read from the point outside the image's lock
//! (verified, as every read of the point is), zero records and base chunks the checksum table
//! marks as holes without any read; blocks of [`ZERO_BLOCK_BYTES`] that read as zeros are not
//! written, so zeros stay holes. Then, under the lock, one [`FILL_SLICE_BYTES`] slice at a
//! time, whatever is still not done is written and marked done: a guest's write that landed
//! meanwhile is kept. About once a second (and at
//! the end of each disk) the image is synced and the hydration map rewritten.
//!
//! Memory: one window buffer, and the runs of one window.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use replog_reader::extent_map::Source;
use replog_reader::{DiskReader, DiskView};

use super::target::{Run, Target, io_error};
use crate::error::Result;

/// Bytes hydrated per step: the one buffer hydration holds.
pub const WINDOW_BYTES: u64 = 4 << 20;
/// Bytes written under the image's lock at once: a guest's request waits for at most one such
/// write by hydration.
const FILL_SLICE_BYTES: u64 = 1 << 20;
/// The unit in which zeros read from the point are left as holes.
const ZERO_BLOCK_BYTES: u64 = 4096;
/// How often the image is synced and the hydration map rewritten while hydrating.
const PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// The longest sleep of the throttle, so a stop is seen quickly.
const THROTTLE_SLICE: Duration = Duration::from_millis(50);

/// How far one disk's hydration is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The disk's index in the point (and export order).
    pub disk_index: usize,
    /// The disk's name.
    pub disk: String,
    /// The disk's size.
    pub size_bytes: u64,
    /// Bytes of the image that hold their final bytes (copied, zero, or written by the guest).
    pub done_bytes: u64,
    /// Of those, the bytes the hydration map claims (durable).
    pub durable_bytes: u64,
    /// Bytes read from the point and written by this run, for this disk.
    pub copied_bytes: u64,
    /// Where hydration is in the disk.
    pub cursor_bytes: u64,
}

/// What hydration reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveEvent {
    /// A disk's progress, about once a second.
    Progress(Progress),
    /// A disk is complete: every byte is in its image, which is synced.
    DiskComplete(Progress),
}

/// Limits the bytes read from the point per second.
#[derive(Debug)]
pub(super) struct Throttle {
    rate_bytes_per_s: Option<u64>,
    started: Instant,
    charged_bytes: u64,
}

impl Throttle {
    pub(super) fn new(rate_bytes_per_s: Option<u64>) -> Throttle {
        Throttle {
            rate_bytes_per_s: rate_bytes_per_s.filter(|r| *r > 0),
            started: Instant::now(),
            charged_bytes: 0,
        }
    }

    /// Counts `bytes` and sleeps until they are within the rate, or until `stop`.
    fn charge(&mut self, bytes: u64, stop: &AtomicBool) {
        let Some(rate) = self.rate_bytes_per_s else {
            return;
        };
        self.charged_bytes += bytes;
        let due = Duration::from_secs_f64(self.charged_bytes as f64 / rate as f64);
        while !stop.load(Ordering::SeqCst) {
            let elapsed = self.started.elapsed();
            if elapsed >= due {
                return;
            }
            std::thread::sleep((due - elapsed).min(THROTTLE_SLICE));
        }
    }
}

/// Hydrates one disk into `target` until it is complete (`true`) or `stop` is set (`false`).
pub(super) fn hydrate_disk(
    disk_index: usize,
    disk: &DiskView,
    target: &Target,
    throttle: &mut Throttle,
    stop: &AtomicBool,
    events: &mut dyn FnMut(LiveEvent),
) -> Result<bool> {
    let mut reader = disk.reader();
    let mut buf = vec![0u8; WINDOW_BYTES as usize];
    let mut copied_bytes = 0;
    let mut last_persist = Instant::now();
    let progress = |cursor_bytes, copied_bytes, durable_bytes| {
        let (done_bytes, _) = target.done_and_durable();
        Progress {
            disk_index,
            disk: target.name.clone(),
            size_bytes: target.size,
            done_bytes,
            durable_bytes,
            copied_bytes,
            cursor_bytes,
        }
    };
    let mut at = 0;
    while at < target.size {
        if stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        let end = (at + WINDOW_BYTES).min(target.size);
        let gaps = target.lock().gaps(at, end);
        if !gaps.is_empty() {
            let read = read_window(&mut reader, at, &gaps, &mut buf)?;
            let runs = runs_of(at, &read, &buf);
            let mut slice = at;
            while slice < end {
                let slice_end = (slice + FILL_SLICE_BYTES).min(end);
                copied_bytes += target
                    .fill(slice, slice_end, &runs)
                    .map_err(|e| io_error(&target.path, "write", &e))?;
                slice = slice_end;
            }
            let read_bytes = read.iter().filter(|r| r.2).map(|r| r.1 - r.0).sum();
            throttle.charge(read_bytes, stop);
        }
        at = end;
        if last_persist.elapsed() >= PERSIST_INTERVAL {
            let durable = target.persist()?;
            events(LiveEvent::Progress(progress(at, copied_bytes, durable)));
            last_persist = Instant::now();
        }
    }
    let durable = target.persist()?;
    events(LiveEvent::DiskComplete(progress(
        target.size,
        copied_bytes,
        durable,
    )));
    Ok(true)
}

/// Reads the point's bytes of `gaps` (within the window at `at`) into `buf`; returns the
/// ranges as `(start, end, data)`, data false where the point holds zeros (nothing read).
fn read_window(
    reader: &mut DiskReader<'_>,
    at: u64,
    gaps: &[(u64, u64)],
    buf: &mut [u8],
) -> Result<Vec<(u64, u64, bool)>> {
    let disk = reader.disk();
    let mut out = Vec::new();
    for &(gs, ge) in gaps {
        for (s, piece) in disk.extent_map().pieces_in(gs, ge) {
            match piece.source {
                Source::Zero => out.push((s, piece.end, false)),
                Source::Record(_) => out.push((s, piece.end, true)),
                Source::Base => {
                    let mut c = s;
                    while c < piece.end {
                        let (hole, chunk_end) = reader.base_hole_at(c)?;
                        let e = chunk_end.min(piece.end);
                        out.push((c, e, !hole));
                        c = e;
                    }
                }
            }
        }
    }
    for &(s, e, data) in &out {
        if data {
            reader.read_at(s, &mut buf[(s - at) as usize..(e - at) as usize])?;
        }
    }
    Ok(out)
}

/// The window's runs: data, with blocks that read as zeros turned into zero runs.
fn runs_of<'a>(at: u64, read: &[(u64, u64, bool)], buf: &'a [u8]) -> Vec<Run<'a>> {
    let mut runs: Vec<Run<'a>> = Vec::new();
    let mut push = |start: u64, end: u64, data: bool| {
        if let Some(last) = runs.last_mut()
            && last.end == start
            && last.data.is_some() == data
        {
            last.end = end;
            if data {
                last.data = Some(&buf[(last.start - at) as usize..(end - at) as usize]);
            }
            return;
        }
        let data = data.then(|| &buf[(start - at) as usize..(end - at) as usize]);
        runs.push(Run { start, end, data });
    };
    for &(s, e, data) in read {
        if !data {
            push(s, e, false);
            continue;
        }
        let mut b = s;
        while b < e {
            let next = ((b / ZERO_BLOCK_BYTES + 1) * ZERO_BLOCK_BYTES).min(e);
            let bytes = &buf[(b - at) as usize..(next - at) as usize];
            push(b, next, bytes.iter().any(|&x| x != 0));
            b = next;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_blocks_of_data_become_zero_runs_and_neighbours_merge() {
        let mut buf = vec![0u8; 16384];
        buf[5000] = 1; // block 1
        buf[12288] = 2; // block 3
        let read = [(0, 8192, true), (8192, 12288, false), (12288, 16000, true)];
        let runs = runs_of(0, &read, &buf);
        let shape: Vec<_> = runs
            .iter()
            .map(|r| (r.start, r.end, r.data.map(<[u8]>::len)))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, 4096, None),
                (4096, 8192, Some(4096)),
                (8192, 12288, None),
                (12288, 16000, Some(3712)),
            ]
        );
        assert_eq!(runs[1].data.unwrap()[5000 - 4096], 1);
        assert_eq!(runs[3].data.unwrap()[0], 2);
    }
}
