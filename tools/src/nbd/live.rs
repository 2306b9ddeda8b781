//! `replog failover --live`: every disk of the point served over NBD at once, writable, while
//! `DIR/NAME.raw` is hydrated in the background (the work is `replog_vault::nbd::live`'s).
//!
//! Threads: the server's (this one, and one per client), and one that hydrates, reports
//! progress, and once every disk is complete waits for the last client to leave and stops the
//! server. SIGINT or SIGTERM stop the server and the hydration; what was hydrated and written
//! is made durable, with the hydration maps, and the command exits with
//! [`EXIT_INTERRUPTED`]: run it again to resume.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use replog_nbd::{Backend, Limits, Listener};
use replog_vault::OutputFormat;
use replog_vault::nbd::LiveFailover;
use replog_vault::nbd::live::{LiveDiskInfo, LiveEvent, Progress};
use serde_json::json;

use crate::cli::FailoverArgs;
use crate::exit::EXIT_INTERRUPTED;
use crate::output::{human_bytes, point_json};
use crate::{CmdResult, EXIT_OK, Failure};

/// The address listened on without `--unix` or `--listen`, as for `serve-nbd`.
const LISTEN_DEFAULT: &str = "127.0.0.1:10809";
/// Clients served at once.
const MAX_CLIENTS: usize = 8;
/// How often the end of hydration looks whether a client is still connected.
const CLIENT_POLL: Duration = Duration::from_millis(100);

/// Runs a live failover to its end, or until a signal.
pub fn run(ctx: &crate::context::Ctx, args: &FailoverArgs) -> CmdResult {
    if args.format != OutputFormat::Raw {
        return Err(Failure::new(
            "--live writes raw images; convert them once the failover is complete",
        ));
    }
    let Some(out) = args.out.as_deref() else {
        return Err(Failure::new(
            "--live hydrates images into --out DIR; it cannot write into --to targets",
        ));
    };
    super::ignore_sigpipe()?;
    let vault = ctx.open(&args.vault)?;
    let source = vault.failover_source(&crate::read_commands::point_choice(args)?)?;
    if let Some(expected) = &args.expect_point {
        vault.check_expected(&source.snapshot, expected)?;
    }
    if let Some(e) = &source.unprotected {
        eprintln!(
            "replog: warning: {}: cannot take a lease ({e}); the point is not protected from a concurrent prune",
            args.vault.display()
        );
    }
    let shown = args.vault.display().to_string();
    let live = Arc::new(LiveFailover::open(source, out, args.force, &shown)?);
    let listener = match (&args.unix, &args.listen) {
        (Some(path), _) => Listener::unix(path),
        (None, addr) => Listener::tcp(addr.as_deref().unwrap_or(LISTEN_DEFAULT)),
    }?;
    let stop = Arc::new(AtomicBool::new(false));
    super::watch_signals(stop.clone(), listener.waker())?;
    let mut report = Report::new(args.json, &live.disks());
    report.serving(&live, &listener);
    let connected = Arc::new(AtomicUsize::new(0));
    let hydration = {
        let (live, stop, connected) = (live.clone(), stop.clone(), connected.clone());
        let (rate, waker) = (args.rate, listener.waker());
        std::thread::Builder::new()
            .name("hydrate".into())
            .spawn(move || {
                let result = live.hydrate(rate, &stop, &mut |e| report.event(&e));
                if let Ok(true) = result {
                    report.hydrated();
                    // Serve from the images alone until the last client leaves.
                    while connected.load(Ordering::SeqCst) > 0 && !stop.load(Ordering::SeqCst) {
                        std::thread::sleep(CLIENT_POLL);
                    }
                }
                stop.store(true, Ordering::SeqCst);
                waker.wake();
                (result, report)
            })
            .map_err(|e| Failure::new(format!("cannot start the hydration thread: {e}")))?
    };
    let backend: Arc<dyn Backend> = live.clone();
    let limits = Limits {
        handshake: Duration::from_secs(30),
        idle: None,
    };
    replog_nbd::serve_counted(&listener, &backend, MAX_CLIENTS, limits, &stop, &connected);
    drop(backend);
    let (result, report) = hydration
        .join()
        .expect("the hydration thread does not panic");
    drop(listener);
    match result {
        Ok(true) => {
            live.finish()?;
            report.finished(true);
            Ok(EXIT_OK)
        }
        Ok(false) => {
            live.persist()?;
            report.finished(false);
            Ok(EXIT_INTERRUPTED)
        }
        Err(e) => {
            if let Err(p) = live.persist() {
                eprintln!("replog: live failover: cannot keep what was done: {p}");
            }
            Err(e.into())
        }
    }
}

/// Prints what happens: JSON lines on stdout with `--json`; otherwise the exports and
/// completions on stdout and progress with an estimate of the time left on stderr.
struct Report {
    json: bool,
    started: Instant,
    /// Per disk: its size and the bytes done at the start and now.
    disks: Vec<(u64, u64, u64)>,
}

impl Report {
    fn new(json: bool, disks: &[LiveDiskInfo]) -> Report {
        Report {
            json,
            started: Instant::now(),
            disks: disks
                .iter()
                .map(|d| (d.size_bytes, d.resumed_bytes, d.resumed_bytes))
                .collect(),
        }
    }

    fn serving(&self, live: &LiveFailover, listener: &Listener) {
        let socket = listener.describe();
        let uri = |name: &str| match socket.split_once(":///?") {
            Some((scheme, query)) => format!("{scheme}:///{name}?{query}"),
            None => format!("{socket}/{name}"),
        };
        let disks = live.disks();
        if self.json {
            let exports: Vec<_> = disks
                .iter()
                .map(|d| json!({"name": d.name, "uri": uri(&d.name), "path": d.path.display().to_string(), "size_bytes": d.size_bytes, "resumed_bytes": d.resumed_bytes}))
                .collect();
            line(
                &json!({"event": "serving", "socket": socket, "point": point_json(live.point()), "exports": exports}),
            );
            return;
        }
        for d in &disks {
            let resumed = if d.resumed_bytes > 0 {
                format!(", resuming: {} done", human_bytes(d.resumed_bytes))
            } else {
                String::new()
            };
            println!(
                "export {}: {} into {}{resumed}",
                d.name,
                human_bytes(d.size_bytes),
                d.path.display()
            );
        }
        println!("listening on {socket}");
    }

    fn event(&mut self, e: &LiveEvent) {
        let (p, complete) = match e {
            LiveEvent::Progress(p) => (p, false),
            LiveEvent::DiskComplete(p) => (p, true),
        };
        self.disks[p.disk_index].2 = p.done_bytes;
        let (total, done) = self.totals();
        let eta = self.eta_s(total, done);
        if self.json {
            let event = if complete {
                "disk_complete"
            } else {
                "progress"
            };
            line(
                &json!({"event": event, "disk": p.disk, "size_bytes": p.size_bytes, "done_bytes": p.done_bytes, "durable_bytes": p.durable_bytes, "copied_bytes": p.copied_bytes, "cursor_bytes": p.cursor_bytes, "total_bytes": total, "total_done_bytes": done, "eta_s": eta, "seconds": self.started.elapsed().as_secs_f64()}),
            );
            return;
        }
        if complete {
            println!(
                "disk {} complete: {} copied, synced",
                p.disk,
                human_bytes(p.copied_bytes)
            );
        } else {
            eprintln!(
                "replog: live failover: {}",
                progress_line(p, total, done, eta)
            );
        }
    }

    /// Bytes of all disks, and bytes done.
    fn totals(&self) -> (u64, u64) {
        let total = self.disks.iter().map(|d| d.0).sum();
        let done = self.disks.iter().map(|d| d.2).sum();
        (total, done)
    }

    /// Seconds left at the pace of this run so far; `None` before there is a pace.
    fn eta_s(&self, total: u64, done: u64) -> Option<f64> {
        let since_start: u64 = self.disks.iter().map(|d| d.2.saturating_sub(d.1)).sum();
        let elapsed = self.started.elapsed().as_secs_f64();
        (since_start > 0 && elapsed > 0.0)
            .then(|| (total - done.min(total)) as f64 / (since_start as f64 / elapsed))
    }

    fn hydrated(&self) {
        if self.json {
            line(&json!({"event": "hydrated", "seconds": self.started.elapsed().as_secs_f64()}));
        } else {
            println!(
                "every disk is complete; serving from the images until the last client disconnects"
            );
        }
    }

    fn finished(&self, complete: bool) {
        let seconds = self.started.elapsed().as_secs_f64();
        let code = if complete { EXIT_OK } else { EXIT_INTERRUPTED };
        if self.json {
            line(
                &json!({"event": "finished", "complete": complete, "exit_code": code, "seconds": seconds, "peak_rss_bytes": replog_vault::peak_rss_bytes()}),
            );
        } else if complete {
            println!("live failover complete in {seconds:.2}s: every image is synced");
        } else {
            println!(
                "live failover stopped after {seconds:.2}s; what was copied and written is kept: run the same command again to resume"
            );
        }
    }
}

fn progress_line(p: &Progress, total: u64, done: u64, eta: Option<f64>) -> String {
    let percent = |d: u64, t: u64| {
        if t == 0 {
            100.0
        } else {
            d as f64 * 100.0 / t as f64
        }
    };
    format!(
        "{} {:.0}% ({} of {}), all disks {:.0}%{}",
        p.disk,
        percent(p.done_bytes, p.size_bytes),
        human_bytes(p.done_bytes),
        human_bytes(p.size_bytes),
        percent(done, total),
        eta.map(|s| format!(", about {s:.0}s left"))
            .unwrap_or_default()
    )
}

/// One JSON line on stdout, flushed with it.
fn line(v: &serde_json::Value) {
    println!("{v}");
}
