//! Failover targets other than image files: what `--to [NAME=]TARGET` names, and the walk over
//! a disk that both kinds of target write from.
//!
//! A target is an NBD export (`nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=PATH`;
//! `failover_nbd`) or a block device (an absolute path; `failover_device`). Each disk of the
//! point gets exactly one; a point of one disk may leave out `NAME=`.
//!
//! [`walk`] reads a disk in order, in windows of [`WINDOW_BYTES`], and hands its sink a run of
//! data or a run of zeros at a time, in increasing offsets: ranges the point holds as zero
//! (zero records, base chunks its checksum table marks as holes) become zero runs without any
//! read; data windows are read through the reader (every record and base chunk verified), and
//! stretches of at least [`ZERO_RUN_MIN_BYTES`] of all-zero 4 KiB blocks inside them become zero
//! runs too, so a target never receives zeros as data where it can be told to zero them.
//! Memory: one window, whatever the disk's size.

use std::path::PathBuf;

use replog_io::is_zero;
use replog_reader::{DiskReader, DiskView, ExtentKind};

use crate::capture::NbdUri;
use crate::error::{Result, VaultError, VaultErrorKind};

/// Bytes of data read from the vault at a time, and the largest data run handed to a sink.
pub const WINDOW_BYTES: u64 = 4 << 20;
/// Granularity of the all-zero test inside data windows.
const ZERO_BLOCK_BYTES: u64 = 4096;
/// The shortest stretch of zero blocks inside data that becomes a zero run (shorter ones are
/// sent as data: one more request or system call would cost more than the bytes).
pub const ZERO_RUN_MIN_BYTES: u64 = 64 << 10;

/// Where one disk is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An NBD export.
    Nbd(NbdUri),
    /// A block device.
    Device(PathBuf),
}

impl Target {
    /// The kind's name in output: `nbd` or `device`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Target::Nbd(_) => "nbd",
            Target::Device(_) => "device",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Nbd(uri) => write!(f, "{uri}"),
            Target::Device(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One `--to [NAME=]TARGET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskTarget {
    /// The disk's name; `None` for the only disk of a point.
    pub disk: Option<String>,
    /// Where it goes.
    pub target: Target,
}

impl DiskTarget {
    /// Parses `[NAME=]TARGET`: `TARGET` is an NBD URI or an absolute path to a block device.
    /// A `NAME=` prefix is recognized only before the target's own syntax starts (a URI's
    /// `?socket=` is no name).
    pub fn parse(s: &str) -> Result<DiskTarget> {
        let (disk, target) = match s.split_once('=') {
            Some((name, rest)) if !name.is_empty() && !name.contains([':', '/', '?']) => {
                (Some(name.to_owned()), rest)
            }
            _ => (None, s),
        };
        let target = if NbdUri::is_nbd(target) {
            Target::Nbd(NbdUri::parse(target)?)
        } else if target.starts_with('/') {
            Target::Device(PathBuf::from(target))
        } else {
            return Err(VaultError::new(
                VaultErrorKind::InvalidRequest,
                format!(
                    "{s:?} is not a failover target: expected [NAME=]nbd://HOST[:PORT]/EXPORT, [NAME=]nbd+unix:///EXPORT?socket=PATH or [NAME=]/dev/DEVICE (image files are written with --out DIR)"
                ),
            ));
        };
        Ok(DiskTarget { disk, target })
    }
}

/// Pairs every disk of `disks` (names, in the view's order) with its target: each disk exactly
/// one, each target a different place. Refuses before anything is opened.
pub fn assign<'t>(disks: &[&str], targets: &'t [DiskTarget]) -> Result<Vec<&'t Target>> {
    let invalid = |m: String| VaultError::new(VaultErrorKind::InvalidRequest, m);
    let mut assigned: Vec<Option<&Target>> = vec![None; disks.len()];
    for t in targets {
        let i = match &t.disk {
            None if disks.len() == 1 => 0,
            None => {
                return Err(invalid(format!(
                    "the point has {} disks ({}): name the disk of target {} as NAME={}",
                    disks.len(),
                    disks.join(", "),
                    t.target,
                    t.target
                )));
            }
            Some(name) => disks.iter().position(|d| d == name).ok_or_else(|| {
                invalid(format!(
                    "the point has no disk {name:?} (its disks: {})",
                    disks.join(", ")
                ))
            })?,
        };
        if assigned[i].is_some() {
            return Err(invalid(format!("disk {:?} is given two targets", disks[i])));
        }
        if assigned.iter().flatten().any(|other| **other == t.target) {
            return Err(invalid(format!("{} is the target of two disks", t.target)));
        }
        assigned[i] = Some(&t.target);
    }
    let missing: Vec<&str> = disks
        .iter()
        .zip(&assigned)
        .filter(|(_, t)| t.is_none())
        .map(|(d, _)| *d)
        .collect();
    if !missing.is_empty() {
        return Err(invalid(format!(
            "no target for disk {}: every disk of the point needs one --to NAME=TARGET",
            missing.join(", ")
        )));
    }
    Ok(assigned.into_iter().flatten().collect())
}

/// A run of a disk handed to a sink by [`walk`].
#[derive(Debug)]
pub enum Run<'a> {
    /// Bytes at an offset.
    Data {
        /// The disk offset of the first byte.
        offset: u64,
        /// The bytes (at most [`WINDOW_BYTES`]).
        data: &'a [u8],
    },
    /// A range that reads as zeros.
    Zero {
        /// The disk offset.
        offset: u64,
        /// Its length.
        len: u64,
    },
}

/// Hands every byte of `disk` to `sink` as runs in order; see the module documentation.
pub fn walk(disk: &DiskView, sink: &mut dyn FnMut(Run<'_>) -> Result<()>) -> Result<()> {
    let mut w = Walk {
        reader: disk.reader(),
        buf: Vec::new(),
        data: None,
        zero: None,
        sink,
    };
    for extent in disk.extents() {
        let extent = extent?;
        match extent.kind {
            ExtentKind::Zero => w.zero(extent.start, extent.end)?,
            ExtentKind::Journal => w.data(extent.start, extent.end)?,
            ExtentKind::Base => {
                let mut at = extent.start;
                while at < extent.end {
                    let (hole, chunk_end) = w.reader.base_hole_at(at)?;
                    let upto = chunk_end.min(extent.end);
                    if hole {
                        w.zero(at, upto)?;
                    } else {
                        w.data(at, upto)?;
                    }
                    at = upto;
                }
            }
        }
    }
    w.flush_data()?;
    w.flush_zero()
}

/// The state of a [`walk`]: the pending data span (read when it fills a window or a zero run
/// follows) and the pending zero run (merged with the next while they touch).
struct Walk<'d, 's> {
    reader: DiskReader<'d>,
    buf: Vec<u8>,
    data: Option<(u64, u64)>,
    zero: Option<(u64, u64)>,
    sink: &'s mut dyn FnMut(Run<'_>) -> Result<()>,
}

impl Walk<'_, '_> {
    fn zero(&mut self, start: u64, end: u64) -> Result<()> {
        self.flush_data()?;
        self.add_zero(start, end)
    }

    fn add_zero(&mut self, start: u64, end: u64) -> Result<()> {
        match &mut self.zero {
            Some((_, e)) if *e == start => *e = end,
            _ => {
                self.flush_zero()?;
                self.zero = Some((start, end));
            }
        }
        Ok(())
    }

    fn data(&mut self, mut start: u64, end: u64) -> Result<()> {
        while start < end {
            let s = match self.data {
                Some((s, e)) if e == start => s,
                Some(_) => {
                    self.flush_data()?;
                    start
                }
                None => start,
            };
            let upto = end.min(s + WINDOW_BYTES);
            self.data = Some((s, upto));
            if upto - s == WINDOW_BYTES {
                self.flush_data()?;
            }
            start = upto;
        }
        Ok(())
    }

    fn flush_zero(&mut self) -> Result<()> {
        match self.zero.take() {
            Some((offset, end)) => (self.sink)(Run::Zero {
                offset,
                len: end - offset,
            }),
            None => Ok(()),
        }
    }

    /// Reads the pending data span and hands it on, its long zero stretches as zero runs.
    fn flush_data(&mut self) -> Result<()> {
        let Some((start, end)) = self.data.take() else {
            return Ok(());
        };
        let len = (end - start) as usize;
        self.buf.resize(len, 0);
        self.reader.read_at(start, &mut self.buf)?;
        let buf = std::mem::take(&mut self.buf);
        let result = self.split(start, &buf);
        self.buf = buf;
        result
    }

    /// Hands `data` (at disk offset `start`) on as data runs and zero runs.
    fn split(&mut self, start: u64, data: &[u8]) -> Result<()> {
        let mut at = 0usize;
        // The start of the data not yet handed on.
        let mut from = 0usize;
        while at < data.len() {
            let zeros = zero_stretch(start + at as u64, &data[at..]);
            if zeros as u64 >= ZERO_RUN_MIN_BYTES {
                if from < at {
                    self.flush_zero()?;
                    (self.sink)(Run::Data {
                        offset: start + from as u64,
                        data: &data[from..at],
                    })?;
                }
                self.add_zero(start + at as u64, start + (at + zeros) as u64)?;
                at += zeros;
                from = at;
            } else {
                at += zeros.max(next_block_len(start + at as u64, data.len() - at));
            }
        }
        if from < data.len() {
            self.flush_zero()?;
            (self.sink)(Run::Data {
                offset: start + from as u64,
                data: &data[from..],
            })?;
        }
        Ok(())
    }
}

/// Bytes from the start of `data` (at disk offset `offset`) to the end of its block.
fn next_block_len(offset: u64, left: usize) -> usize {
    let block_end = (offset / ZERO_BLOCK_BYTES + 1) * ZERO_BLOCK_BYTES;
    ((block_end - offset) as usize).min(left)
}

/// The length of the all-zero blocks at the start of `data` (block boundaries aligned to the
/// disk); 0 when its first block holds a set byte.
fn zero_stretch(offset: u64, data: &[u8]) -> usize {
    let mut at = 0;
    while at < data.len() {
        let n = next_block_len(offset + at as u64, data.len() - at);
        if !is_zero(&data[at..at + n]) {
            break;
        }
        at += n;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_a_disk_name() {
        let t = DiskTarget::parse("os=nbd+unix:///d?socket=/run/s").unwrap();
        assert_eq!(t.disk.as_deref(), Some("os"));
        assert_eq!(t.target.kind_name(), "nbd");
        let t = DiskTarget::parse("nbd+unix:///d?socket=/run/s").unwrap();
        assert_eq!(t.disk, None);
        let t = DiskTarget::parse("data=/dev/loop3").unwrap();
        assert_eq!(t.target, Target::Device("/dev/loop3".into()));
        let t = DiskTarget::parse("/dev/disk/by-id/x=y").unwrap();
        assert_eq!(t.disk, None);
        assert_eq!(t.target, Target::Device("/dev/disk/by-id/x=y".into()));
        for bad in ["out.raw", "os=dir/x", "os=nbds://h/x", ""] {
            let e = DiskTarget::parse(bad).unwrap_err();
            assert_eq!(e.kind(), VaultErrorKind::InvalidRequest, "{bad}");
        }
    }

    #[test]
    fn every_disk_gets_exactly_one_target() {
        let p = |s: &str| DiskTarget::parse(s).unwrap();
        let one = [p("/dev/loop1")];
        assert_eq!(assign(&["os"], &one).unwrap().len(), 1);
        assert!(assign(&["os", "data"], &one).is_err());
        let two = [p("data=/dev/loop1"), p("os=/dev/loop2")];
        let got = assign(&["os", "data"], &two).unwrap();
        assert_eq!(got[0], &Target::Device("/dev/loop2".into()));
        for bad in [
            vec![p("os=/dev/loop1")],
            vec![p("os=/dev/loop1"), p("os=/dev/loop2")],
            vec![p("os=/dev/loop1"), p("data=/dev/loop1")],
            vec![p("os=/dev/loop1"), p("swap=/dev/loop2")],
        ] {
            let e = assign(&["os", "data"], &bad).unwrap_err();
            assert_eq!(e.kind(), VaultErrorKind::InvalidRequest);
        }
    }
}

/// What a failover wrote into one target (an NBD export or a block device).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetWritten {
    /// The disk's name.
    pub name: String,
    /// The target, as given (URI or device path).
    pub target: String,
    /// `nbd` or `device`.
    pub kind: &'static str,
    /// The disk's size: the bytes of the target written and checked.
    pub size_bytes: u64,
    /// The target's size; bytes past the disk's size are left as they were.
    pub target_size_bytes: u64,
    /// Bytes sent as data.
    pub data_bytes: u64,
    /// Bytes made to read as zeros without sending them.
    pub zero_bytes: u64,
    /// How: `write_zeroes` or `writes` (NBD), `discard`, `zeroout` or `writes` (a device),
    /// `nothing` when there were none.
    pub zeroed_by: &'static str,
}
