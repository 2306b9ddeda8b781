//! The replication loop: cut every disk at one instant, read what changed from each view,
//! take one point over all of them, and end the cut; again every [`Policy::every`], until
//! stopped. A cycle that fails anywhere takes no point and abandons its cut, so its changes
//! are read again by the next one (the capture merges its bitmaps back, and a half-journaled
//! pass stays pending until a later pass covers it); it is retried after a [`backoff`]. What
//! the loop knows of itself goes to `replicate.status` and the metrics textfile after every
//! cycle.
//!
//! Memory: one pass at a time (the capture module's bounded reads), one QMP answer, and the
//! status record.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use replog_format::record::PointKind;
use replog_qemu::{Capture, CaptureConfig, Cut, DiskSource, Lineage, Qmp, QmpError, QmpErrorKind};
use replog_remote::{RemoteOptions, SyncOptions};
use replog_writer::Writer;

use super::hooks::{HookContext, Hooks};
use super::policy::{Health, Policy, backoff};
use super::status::{self, CycleRecord};
use crate::capture::{Captured, NbdSource, NbdUri, ingest_nbd, point_unless_pending};
use crate::error::{Result, VaultError, VaultErrorKind};
use crate::location::Vault;

/// A running QEMU's disks.
#[derive(Clone, Debug)]
pub struct LiveSource {
    /// Its QMP socket.
    pub qmp_socket: PathBuf,
    /// Each disk: the vault's name for it and QEMU's block node.
    pub disks: Vec<DiskSource>,
    /// The Unix socket of an NBD server QEMU already runs (`None`: a private one is started).
    pub nbd_socket: Option<PathBuf>,
}

/// What the loop tells its caller as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A cycle ended in a durable point.
    Point {
        /// The status after it.
        record: &'a CycleRecord,
        /// Each disk's pass.
        passes: &'a [Captured],
    },
    /// A cycle failed; the next attempt starts after `retry_in`.
    Failed {
        /// Why.
        error: &'a VaultError,
        /// The wait before the retry.
        retry_in: Duration,
    },
}

/// Where the loop's results go besides the vault.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// The Prometheus textfile, if one is kept.
    pub metrics: Option<PathBuf>,
    /// How to reach the vault's remote, for [`Policy::sync_every`].
    pub remote: Option<(RemoteOptions, SyncOptions)>,
}

/// Replicates `source` into `vault` under `policy` until `stop` is set (checked between
/// cycles and while waiting, so a cycle in progress ends cleanly) or `policy.cycles` points
/// were taken. Returns the final status.
pub fn replicate(
    vault: &Vault,
    source: &LiveSource,
    (policy, hooks, outputs): (&Policy, &Hooks, &Outputs),
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(Event<'_>),
) -> Result<CycleRecord> {
    let scratch = tempfile::Builder::new()
        .prefix(".replicate-")
        .tempdir_in(vault.dir())
        .map_err(|e| {
            VaultError::new(
                VaultErrorKind::Io,
                format!("cannot create a scratch directory for fleecing views: {e}"),
            )
            .in_file(vault.dir())
        })?;
    // The status file's checksum seed: the vault's, read once (a vault's id never changes).
    let vault_id = vault.snapshot()?.header().vault_id;
    let seed = replog_format::vault_seed(&vault_id);
    // Where the last replication left off. A record that is missing or damaged only means
    // the first cut reads every disk.
    let previous = status::load(vault.storage().as_ref(), vault.dir(), seed)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut lp = Loop {
        vault,
        seed,
        tag: vault_id[..4].iter().map(|b| format!("{b:02x}")).collect(),
        source,
        policy,
        hooks,
        outputs,
        scratch: scratch.path().to_path_buf(),
        capture: None,
        writer: None,
        record: CycleRecord {
            pid: std::process::id(),
            started_unix_s: unix_now().as_secs() as i64,
            last_point_id: previous.last_point_id,
            last_point_app_consistent: previous.last_point_app_consistent,
            last_cut_unix_ms: previous.last_cut_unix_ms,
            last_cut_generation: previous.last_cut_generation,
            remote_point_id: previous.remote_point_id,
            ..CycleRecord::default()
        },
        last_app: None,
        last_sync: None,
        source_failed: false,
    };
    // The writer first: a second replication of the vault stops here, before it touches the
    // first one's objects in QEMU.
    let ran = lp.writer().map(drop).and_then(|()| lp.run(stop, on_event));
    // The last point goes to the remote too, whenever the previous sync was.
    lp.sync_if_due(true);
    lp.record.stopped = true;
    lp.store_status();
    if let Some(capture) = lp.capture.take() {
        let _ = capture.close();
    }
    ran.map(|()| lp.record)
}

struct Loop<'a> {
    vault: &'a Vault,
    seed: u32,
    /// The vault's mark on its objects in QEMU: the first 8 hex digits of its id.
    tag: String,
    source: &'a LiveSource,
    policy: &'a Policy,
    hooks: &'a Hooks,
    outputs: &'a Outputs,
    scratch: PathBuf,
    /// `None` until connected, and again after QEMU went away.
    capture: Option<Capture>,
    /// `None` until opened, and again after it failed (a failed writer is poisoned).
    writer: Option<Writer>,
    record: CycleRecord,
    last_app: Option<Instant>,
    last_sync: Option<Instant>,
    /// Whether the current cycle's failure came from QEMU (always retried).
    source_failed: bool,
}

impl Loop<'_> {
    /// Cycles until stopped or done. A failure that waiting cannot mend (a disk that no longer
    /// matches, a damaged vault, a migrated one) ends the loop with that error; the source's
    /// failures and the storage's (I/O, a full disk, a lock) are retried.
    fn run(&mut self, stop: &AtomicBool, on_event: &mut dyn FnMut(Event<'_>)) -> Result<()> {
        let mut next_start = Instant::now();
        let mut failures = 0u32;
        while !stop.load(Ordering::Relaxed) && !self.done() {
            if !sleep_until(next_start, stop) {
                break;
            }
            let started = Instant::now();
            self.source_failed = false;
            match self.cycle(started) {
                Ok(passes) => {
                    failures = 0;
                    next_start = started + self.policy.every;
                    self.sync_if_due(false);
                    self.store_status();
                    on_event(Event::Point {
                        record: &self.record,
                        passes: &passes,
                    });
                }
                Err(error) if !self.source_failed && !retried(error.kind()) => {
                    self.record.cycles_failed += 1;
                    self.record.last_error = Some(error.to_string());
                    return Err(error);
                }
                Err(error) => {
                    failures += 1;
                    let retry_in = backoff(failures, self.policy.every);
                    next_start = Instant::now() + retry_in;
                    self.record.cycles_failed += 1;
                    self.record.last_error = Some(error.to_string());
                    self.forget_broken();
                    self.store_status();
                    on_event(Event::Failed {
                        error: &error,
                        retry_in,
                    });
                }
            }
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.policy
            .cycles
            .is_some_and(|n| self.record.cycles_ok >= n)
    }

    /// After a failure: a writer that failed is poisoned, so it is opened again (recovering)
    /// at once, keeping the vault locked to this process as far as it can; if that fails, the
    /// next attempt opens it. A writer that did not fail (the source did) is kept.
    /// (A capture whose QEMU went away was dropped where that was seen.)
    fn forget_broken(&mut self) {
        if self.writer.as_ref().is_some_and(Writer::is_poisoned) {
            self.writer = None;
            let _ = self.writer();
        }
    }

    /// One cycle: the cut, the passes, the point, the end of the cut.
    fn cycle(&mut self, started: Instant) -> Result<Vec<Captured>> {
        self.connect()?;
        let app = self
            .policy
            .app_consistent_every
            .is_some_and(|every| self.last_app.is_none_or(|t| started - t >= every));
        let (cut, quiesced) = self.cut(app)?;
        let frozen = matches!(quiesced, Some(Ok(())));
        let cut_at = unix_now();
        let taken = self.passes(&cut).and_then(|passes| {
            let kind = PointKind::quiesced(frozen);
            let label = format!("replicate cycle {}", cut.generation);
            let storage = self.vault.storage().clone();
            let point = point_unless_pending(self.writer()?, storage.as_ref(), kind, &label)?;
            Ok((passes, point))
        });
        let capture = self.capture.as_mut().expect("connected above");
        let (passes, point) = match taken {
            Ok(taken) => taken,
            Err(e) => {
                let _ = capture.abandon(cut);
                return Err(e);
            }
        };
        // The point is durable: a failure to end the cut only makes the next pass larger.
        let generation = cut.generation;
        let ended = capture.finish(cut);
        if frozen {
            self.last_app = Some(started);
        }
        self.record.last_cut_generation = Some(generation);
        self.count(&passes, &point, cut_at, started.elapsed());
        if let Some(Err(e)) = quiesced {
            self.record.last_error =
                Some(format!("{e}; point {} is crash-consistent", point.point_id));
        }
        if let Err(e) = crate::maintain_checkpoint(self.vault.storage().clone(), self.vault.dir()) {
            // The point is durable; views replay the journal instead.
            self.record.last_error = Some(format!("the checkpoint index was not updated: {e}"));
        }
        self.post_point(&passes, point.point_id);
        ended.map_err(|e| self.source_error(e))?;
        Ok(passes)
    }

    /// Ships the newest point to the vault's remote when [`Policy::sync_every`] says it is
    /// time. A failed sync fails no cycle: the point is durable locally, the record says the
    /// remote is behind, and the next cycle tries again.
    fn sync_if_due(&mut self, last: bool) {
        let (Some(every), Some((remote, opts))) = (self.policy.sync_every, &self.outputs.remote)
        else {
            return;
        };
        let shipped = self.record.remote_point_id == self.record.last_point_id;
        if shipped || (!last && self.last_sync.is_some_and(|t| t.elapsed() < every)) {
            return;
        }
        let storage = self.vault.storage().clone();
        match crate::remote::sync(storage, self.vault.dir(), remote, opts, &|_, _| {}) {
            Ok(synced) => {
                self.last_sync = Some(Instant::now());
                self.record.remote_point_id = synced.rpo.newest_remote_point.map(|p| p.point_id);
                self.record.remote_behind = synced.rpo.behind;
                self.record.sync_error = None;
            }
            Err(e) => {
                self.record.remote_behind = true;
                self.record.sync_error = Some(e.to_string());
            }
        }
    }

    fn connect(&mut self) -> Result<()> {
        if self.capture.is_none() {
            let qmp = Qmp::connect(&self.source.qmp_socket).map_err(|e| self.source_error(e))?;
            let config = CaptureConfig {
                scratch_dir: self.scratch.clone(),
                nbd_socket: self.source.nbd_socket.clone(),
            };
            let lineage = self.lineage()?;
            let capture = Capture::continuing(qmp, self.source.disks.clone(), config, lineage)
                .map_err(|e| self.source_error(e))?;
            self.capture = Some(capture);
        }
        Ok(())
    }

    /// What the capture continues from: the cut of the vault's newest point, if the record
    /// says which it was. A record behind the vault (a point taken since by other means, or a
    /// record that did not get written after the last point) gives a full first pass.
    fn lineage(&mut self) -> Result<Lineage> {
        let newest = self.writer()?.points().last().map(|p| p.point_id);
        let generation = self.record.last_cut_generation.unwrap_or(0);
        Ok(Lineage {
            tag: self.tag.clone(),
            generation,
            resume: generation > 0 && newest.is_some() && newest == self.record.last_point_id,
        })
    }

    fn writer(&mut self) -> Result<&mut Writer> {
        if self.writer.is_none() {
            self.writer = Some(self.vault.writer()?);
        }
        Ok(self.writer.as_mut().expect("opened above"))
    }

    /// Cuts every disk; for an app-consistent cycle, inside the freeze. The point is
    /// app-consistent only if both the freeze and the thaw succeeded.
    fn cut(&mut self, app: bool) -> Result<(Cut, Option<Result<(), String>>)> {
        let context = self.context(None, None);
        let froze = app.then(|| {
            self.hooks
                .run("freeze", self.hooks.freeze.as_deref(), &context)
        });
        let cut = self.capture.as_mut().expect("connected").cut();
        let thawed = froze
            .is_some()
            .then(|| self.hooks.run("thaw", self.hooks.thaw.as_deref(), &context));
        let cut = cut.map_err(|e| self.source_error(e))?;
        // `None`: not an app-consistent cycle; `Some(Err)`: it was, and a hook failed.
        let quiesced = froze.map(|f| f.and(thawed.unwrap_or(Ok(()))));
        Ok((cut, quiesced))
    }

    /// Reads each disk's view into the journal, adding disks the vault lacks.
    fn passes(&mut self, cut: &Cut) -> Result<Vec<Captured>> {
        let storage = self.vault.storage().clone();
        let dir = self.vault.dir().to_path_buf();
        let grow = self.policy.grow;
        let mut passes = Vec::new();
        for d in &cut.disks {
            let context = self.context(Some(d.name.clone()), Some(d.uri()));
            if let Err(e) = self
                .hooks
                .run("pre-point", self.hooks.pre_point.as_deref(), &context)
            {
                // A hook's failure is the source's: the next cycle tries again.
                self.source_failed = true;
                return Err(VaultError::new(VaultErrorKind::InvalidRequest, e));
            }
            let w = self.writer()?;
            if w.disk(&d.name).is_err() {
                w.add_disk(&d.name, d.size_bytes)?;
            }
            let uri = NbdUri::parse(&d.uri())?;
            let source = NbdSource {
                uri: &uri,
                bitmap: d.dirty_bitmap.as_deref(),
                grow,
            };
            passes.push(ingest_nbd(
                w,
                storage.as_ref(),
                &dir,
                &d.name,
                source,
                &|_| {},
            )?);
        }
        Ok(passes)
    }

    fn post_point(&mut self, passes: &[Captured], point_id: u64) {
        for pass in passes {
            let mut context = self.context(Some(pass.disk.clone()), Some(pass.source.clone()));
            context.point = Some(point_id);
            if let Err(e) = self
                .hooks
                .run("post-point", self.hooks.post_point.as_deref(), &context)
            {
                self.record.last_error = Some(e);
            }
        }
    }

    fn count(
        &mut self,
        passes: &[Captured],
        point: &replog_reader::PointInfo,
        cut_at: Duration,
        took: Duration,
    ) {
        let r = &mut self.record;
        r.cycles_ok += 1;
        r.last_point_id = Some(point.point_id);
        r.last_point_app_consistent = point.kind == PointKind::AppConsistent;
        r.last_cut_unix_ms = Some(cut_at.as_millis() as i64);
        r.last_cycle_bytes = passes.iter().map(|p| p.bytes_written).sum();
        r.last_cycle_bytes_read = passes.iter().map(|p| p.bytes_read).sum();
        r.last_cycle_seconds = took.as_secs_f64();
        r.bytes_journaled += r.last_cycle_bytes;
        r.last_error = None;
    }

    fn context(&self, disk: Option<String>, uri: Option<String>) -> HookContext {
        HookContext {
            vault: self.vault.dir().to_path_buf(),
            cycle: self.record.cycles_ok + self.record.cycles_failed + 1,
            disk,
            uri,
            point: None,
        }
    }

    /// Writes the status file and the metrics; a failure to is reported in the record, never
    /// fatal (they are advisory).
    fn store_status(&mut self) {
        self.record.updated_unix_s = unix_now().as_secs() as i64;
        let storage = self.vault.storage().clone();
        let seed = self.seed;
        if let Err(e) = status::store(storage.as_ref(), self.vault.dir(), seed, &self.record) {
            self.record.last_error = Some(format!("the status file: {e}"));
        }
        if let Some(path) = &self.outputs.metrics {
            let rpo = self.record.rpo(unix_now());
            let text =
                status::metrics_text(&self.record, rpo, Health::of(rpo, self.policy.rpo_alert));
            if let Err(e) = status::store_metrics(storage.as_ref(), path, &text) {
                self.record.last_error = Some(format!("{}: {e}", path.display()));
            }
        }
    }

    /// A failure of QEMU as the vault's error. A QEMU that cannot be reached any more is
    /// forgotten: the next attempt connects again, and its first cut is a full pass (the
    /// bitmaps may be gone with the process).
    fn source_error(&mut self, e: QmpError) -> VaultError {
        self.source_failed = true;
        let kind = match e.kind() {
            QmpErrorKind::Io | QmpErrorKind::Timeout => {
                self.capture = None;
                VaultErrorKind::Io
            }
            QmpErrorKind::Tool => VaultErrorKind::Io,
            QmpErrorKind::Protocol | QmpErrorKind::Refused | QmpErrorKind::State => {
                VaultErrorKind::InvalidRequest
            }
        };
        VaultError::new(kind, format!("the capture from QEMU failed: {e}"))
    }
}

/// Whether a cycle that failed so is tried again: the storage may come back (I/O, space, a
/// lock, a lease, a writer to reopen), and an NBD view that broke is made again by the next cut.
fn retried(kind: VaultErrorKind) -> bool {
    matches!(
        kind,
        VaultErrorKind::Io
            | VaultErrorKind::NoSpace
            | VaultErrorKind::Locked
            | VaultErrorKind::Leased
            | VaultErrorKind::Poisoned
    )
}

/// Waits until `at`, or until `stop` is set; `false` if stopped.
fn sleep_until(at: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(Duration::from_millis(50)));
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
