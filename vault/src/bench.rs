//! The write benchmark's load, in the spirit of `rbd bench`: block writes through the real writer
//! API into one disk, a recovery point every so many bytes, and the latency of each point from its
//! request until the writer first reports it durable. Whoever runs it opens the writer and shows
//! the [`WriteBenchReport`].
//!
//! The payload comes from a pool filled before the clock starts (random bytes, zeros, or the start
//! of a file), so the figures measure replog, not the data generator. Memory: the pool (16 MiB,
//! or one block if larger), one batch of slices into it, and one latency per point.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, RngExt, SeedableRng};
use replog_io::Storage;
use replog_writer::{
    Compression, DiskInfo, PointKind, PointTicket, VaultSettings, Writer, WriterOptions,
};

use crate::error::{Result, VaultError, VaultErrorKind};

/// Largest data pool held in memory.
const POOL_BYTES_MAX: usize = 16 << 20;

/// Where the payload comes from.
#[derive(Clone, Debug)]
pub enum DataSource {
    Random,
    Zero,
    File(PathBuf),
}

/// The load: what to write, where, and how often to take a point.
#[derive(Clone, Debug)]
pub struct WriteLoad {
    /// Uniformly random block-aligned offsets, or one block after the other.
    pub random: bool,
    pub block_bytes: u64,
    pub total_bytes: u64,
    pub point_every_bytes: u64,
    pub data: DataSource,
    /// Points requested and not yet waited for; 0 waits for each point at once.
    pub points_in_flight: usize,
    /// Writes handed to the writer at once.
    pub batch: usize,
}

/// What the load measured.
#[derive(Clone, Debug)]
pub struct WriteBenchReport {
    pub bytes: u64,
    pub writes: u64,
    pub seconds: f64,
    /// Each point's latency, sorted.
    pub point_latencies: Vec<Duration>,
    /// Why the writer did not use the I/O asked for (direct I/O refused, say).
    pub io_note: Option<String>,
}

impl WriteBenchReport {
    /// The `p`-th percentile of the point latencies, in microseconds (0 without points).
    pub fn latency_us(&self, p: f64) -> f64 {
        let sorted = &self.point_latencies;
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[i].as_secs_f64() * 1e6
    }
}

fn bad(detail: String) -> VaultError {
    VaultError::new(VaultErrorKind::InvalidRequest, detail)
}

/// The payload pool, filled before the clock starts.
#[derive(Debug)]
pub struct Payload {
    data: Vec<u8>,
    block: usize,
}

impl Payload {
    /// The pool for writes of `block_bytes` from `source`: refused when a block is too large, or
    /// the file is shorter than one block or cannot be read.
    pub fn new(source: &DataSource, block_bytes: u64) -> Result<Payload> {
        let block =
            usize::try_from(block_bytes).map_err(|_| bad("block size too large".to_owned()))?;
        Ok(Payload {
            data: pool(source, block)?,
            block,
        })
    }
}

fn pool(source: &DataSource, block: usize) -> Result<Vec<u8>> {
    let len = POOL_BYTES_MAX.max(block);
    Ok(match source {
        DataSource::Zero => vec![0; len],
        DataSource::Random => {
            let mut v = vec![0; len];
            SmallRng::seed_from_u64(7).fill_bytes(&mut v);
            v
        }
        DataSource::File(path) => {
            use std::io::Read;
            let io = |e: std::io::Error| {
                VaultError::new(VaultErrorKind::Io, format!("{}: {e}", path.display()))
                    .in_file(path)
            };
            let f = std::fs::File::open(path).map_err(io)?;
            let mut v = Vec::with_capacity(len);
            f.take(len as u64).read_to_end(&mut v).map_err(io)?;
            if v.len() < block {
                return Err(bad(format!(
                    "{}: shorter than one block ({block} bytes)",
                    path.display()
                )));
            }
            v
        }
    })
}

/// Runs `load` with `payload` against disk `disk_id` (`disk_bytes` long) of `w`, then closes `w`;
/// refused when one block does not fit on the disk.
pub fn run_write_bench(
    mut w: Writer,
    disk_id: u32,
    disk_bytes: u64,
    load: &WriteLoad,
    payload: &Payload,
) -> Result<WriteBenchReport> {
    if disk_bytes < load.block_bytes {
        return Err(bad(format!(
            "disk bench is smaller than one block of {} bytes",
            load.block_bytes
        )));
    }
    let (data, block) = (&payload.data, payload.block);
    let blocks_on_disk = disk_bytes / load.block_bytes;
    let writes = load.total_bytes / load.block_bytes;
    let mut rng = SmallRng::seed_from_u64(11);
    let mut points = Points::default();
    let mut since_point = 0;
    let started = Instant::now();
    let mut batch: Vec<(u64, &[u8])> = Vec::with_capacity(load.batch.max(1));
    for i in 0..writes {
        let offset = if load.random {
            rng.random_range(0..blocks_on_disk)
        } else {
            i % blocks_on_disk
        } * load.block_bytes;
        let at = (i as usize * block) % (data.len() - block + 1);
        batch.push((offset, &data[at..at + block]));
        since_point += load.block_bytes;
        let point_due = since_point >= load.point_every_bytes;
        if batch.len() >= load.batch.max(1) || point_due || i + 1 == writes {
            match batch[..] {
                [(offset, one)] => w.write(disk_id, offset, one)?,
                _ => w.write_many(disk_id, &batch)?,
            };
            batch.clear();
        }
        if point_due {
            points.take(&mut w, load.points_in_flight)?;
            since_point = 0;
        }
        points.collect(&mut w, false)?;
    }
    points.collect(&mut w, true)?;
    let io_note = w.io_note().map(str::to_owned);
    w.close()?;
    let mut point_latencies = points.latencies;
    point_latencies.sort_unstable();
    Ok(WriteBenchReport {
        bytes: writes * load.block_bytes,
        writes,
        seconds: started.elapsed().as_secs_f64(),
        point_latencies,
        io_note,
    })
}

/// Points requested and not yet seen durable, and the latencies of those that were.
#[derive(Default)]
struct Points {
    pending: VecDeque<(PointTicket, Instant)>,
    latencies: Vec<Duration>,
}

impl Points {
    /// Takes a point: waits for it when `in_flight` is 0, otherwise requests it and waits only
    /// for the oldest ones beyond `in_flight`.
    fn take(&mut self, w: &mut Writer, in_flight: usize) -> Result<()> {
        let t = Instant::now();
        if in_flight == 0 {
            w.point(PointKind::CrashConsistent, "")?;
            self.latencies.push(t.elapsed());
            return Ok(());
        }
        self.pending
            .push_back((w.point_async(PointKind::CrashConsistent, "")?, t));
        while self.pending.len() > in_flight {
            let (ticket, t) = self.pending.pop_front().expect("more than zero");
            w.wait_point(ticket)?;
            self.latencies.push(t.elapsed());
        }
        Ok(())
    }

    /// Records the pending points that are durable; with `wait`, waits for all of them.
    fn collect(&mut self, w: &mut Writer, wait: bool) -> Result<()> {
        while let Some((ticket, _)) = self.pending.front() {
            if !wait && !w.point_is_durable(ticket)? {
                break;
            }
            let (ticket, t) = self.pending.pop_front().expect("checked");
            w.wait_point(ticket)?;
            self.latencies.push(t.elapsed());
        }
        Ok(())
    }
}

/// Opens the vault in `dir` for the write benchmark, or creates it (with `compression`) if it
/// does not exist; `opened` sees a writer that opened an existing vault (and what its recovery
/// did) first. Adds disk `bench` of `disk_bytes` if it is missing, and sets `options`. Returns
/// the writer and the disk.
pub fn open_bench_disk(
    storage: Arc<dyn Storage>,
    dir: &Path,
    compression: Compression,
    disk_bytes: u64,
    options: WriterOptions,
    opened: impl FnOnce(Writer) -> Writer,
) -> Result<(Writer, DiskInfo)> {
    let exists = storage.exists(&dir.join("VAULT")).unwrap_or(false);
    let mut w = if exists {
        opened(Writer::open(storage, dir)?)
    } else {
        let settings = VaultSettings {
            compression,
            ..VaultSettings::default()
        };
        Writer::create(storage, dir, settings)?
    };
    let disk = match w.disks().into_iter().find(|d| d.name == "bench") {
        Some(d) => d,
        None => w.add_disk("bench", disk_bytes)?,
    };
    w.set_options(options)?;
    Ok((w, disk))
}
