//! `replog replicate`: the replication loop of `replog_vault::replicate`, run until SIGTERM or
//! `--cycles`, printing one line (or one JSON object) per cycle; and `--status`, which reads
//! what a running (or stopped) replication left in the vault. The work is the library's.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use replog_remote::SyncOptions;
use replog_vault::Vault;
use replog_vault::replicate::{
    self, CycleRecord, DiskSource, Event, Health, Hooks, LiveSource, Outputs, Policy, status,
};
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::cli::ReplicateArgs;
use crate::context::Ctx;
use crate::output::{human_age, human_bytes, print_json};
use crate::{CmdResult, EXIT_OK, Failure};

/// Runs `replog replicate`.
pub fn run(ctx: &Ctx, args: &ReplicateArgs) -> CmdResult {
    let vault = &ctx.open(&args.vault)?;
    if args.status {
        return show_status(vault, args);
    }
    let (Some(every), Some(qmp)) = (args.every, &args.qmp) else {
        return Err(Failure::new("give --every, --qmp and --disk, or --status"));
    };
    let source = LiveSource {
        qmp_socket: qmp.clone(),
        disks: args
            .disk
            .iter()
            .map(|(name, node)| DiskSource {
                name: name.clone(),
                node: node.clone(),
            })
            .collect(),
        nbd_socket: args.nbd_socket.clone(),
    };
    let policy = Policy {
        app_consistent_every: args.app_consistent_every,
        rpo_alert: args.rpo_alert,
        cycles: args.cycles,
        sync_every: args.sync_every,
        grow: args.grow,
        ..Policy::every(every)
    };
    let hooks = Hooks {
        freeze: args.freeze.clone(),
        thaw: args.thaw.clone(),
        pre_point: args.pre_point.clone(),
        post_point: args.post_point.clone(),
        timeout: args.hook_timeout,
    };
    let outputs = Outputs {
        metrics: args.metrics.clone(),
        remote: Some((ctx.remote().clone(), SyncOptions::default())),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // A second signal while the current cycle ends stops the process at once.
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .and_then(|_| signal_hook::flag::register(signal, stop.clone()))
            .map_err(|e| Failure::new(format!("cannot handle SIGINT and SIGTERM: {e}")))?;
    }
    let json = args.json;
    let alert = args.rpo_alert;
    let mut on_event = |event: Event<'_>| print_event(&event, json, alert);
    let last = replicate::replicate(
        vault,
        &source,
        (&policy, &hooks, &outputs),
        &stop,
        &mut on_event,
    )?;
    if !json {
        eprintln!(
            "replog: replication stopped after {} point(s) and {} failed cycle(s)",
            last.cycles_ok, last.cycles_failed
        );
    }
    Ok(EXIT_OK)
}

fn print_event(event: &Event<'_>, json: bool, alert: Option<Duration>) {
    match event {
        Event::Point { record, passes } => {
            let rpo = record.rpo(now());
            if json {
                json_line(&json!({
                    "event": "point",
                    "point": record.last_point_id,
                    "app_consistent": record.last_point_app_consistent,
                    "bytes_journaled": record.last_cycle_bytes,
                    "bytes_read": record.last_cycle_bytes_read,
                    "seconds": record.last_cycle_seconds,
                    "rpo_seconds": rpo.map(|r| r.as_secs_f64()),
                    "health": Health::of(rpo, alert),
                    "passes": passes,
                }));
                return;
            }
            println!(
                "point {} ({}): {} journaled, {} read in {:.2} s",
                record.last_point_id.unwrap_or_default(),
                if record.last_point_app_consistent {
                    "app-consistent"
                } else {
                    "crash-consistent"
                },
                human_bytes(record.last_cycle_bytes),
                human_bytes(record.last_cycle_bytes_read),
                record.last_cycle_seconds,
            );
            // A full pass costs the whole disk: say which, so a large read is not a mystery
            // (the first cycle, or QEMU lost or no longer vouches for the bitmap).
            let full: Vec<&str> = passes
                .iter()
                .filter(|p| p.mode == "full")
                .map(|p| p.disk.as_str())
                .collect();
            if !full.is_empty() {
                println!(
                    "  full pass of {} (no bitmap to continue from)",
                    full.join(", ")
                );
            }
        }
        Event::Failed { error, retry_in } => {
            if json {
                json_line(&json!({"event": "failed", "error": error.to_string(),
                                   "retry_in_seconds": retry_in.as_secs_f64()}));
            } else {
                eprintln!("replog: a cycle failed, retrying in {retry_in:?}: {error}");
            }
        }
    }
}

/// One event as one line of JSON (JSON lines: a reader takes each line as it comes).
fn json_line(value: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed pipe ends nothing here: the replication goes on, unwatched.
    let _ = writeln!(out, "{value}").and_then(|()| out.flush());
}

/// `replicate --status`: the RPO of the vault's newest point, and the last cycle as the
/// replication recorded it.
fn show_status(vault: &Vault, args: &ReplicateArgs) -> CmdResult {
    let snapshot = vault.snapshot()?;
    let record = recorded(vault, snapshot.header())?;
    let now = now();
    // The cut of the newest point if the replication recorded it, else the point's own time.
    let rpo = record.as_ref().and_then(|r| r.rpo(now)).or_else(|| {
        let newest = snapshot.latest_point()?;
        let at = Duration::from_nanos(u64::try_from(newest.time_unix_ns).ok()?);
        Some(now.saturating_sub(at))
    });
    let health = Health::of(rpo, args.rpo_alert);
    let running = record
        .as_ref()
        .is_some_and(|r| !r.stopped && process_alive(r.pid));
    if args.json {
        print_json(&json!({
            "rpo_seconds": rpo.map(|r| r.as_secs_f64()),
            "health": health,
            "running": running,
            "replication": record,
        }));
        return Ok(EXIT_OK);
    }
    print_status(rpo, health, record.as_ref());
    Ok(EXIT_OK)
}

fn print_status(rpo: Option<Duration>, health: Health, record: Option<&CycleRecord>) {
    match rpo {
        Some(rpo) => println!(
            "RPO         {} ({})",
            human_age(rpo.as_secs_f64()),
            health.name()
        ),
        None => println!("RPO         no point yet ({})", health.name()),
    }
    match record {
        Some(r) => print_record(r),
        None => println!("replicate   never ran on this vault"),
    }
}

/// What the vault's replication recorded, if one ever ran on it; `header` is the vault's, from
/// the snapshot the caller already opened.
pub fn recorded(
    vault: &Vault,
    header: &replog_format::header::VaultHeader,
) -> Result<Option<CycleRecord>, Failure> {
    let seed = replog_format::vault_seed(&header.vault_id);
    status::load(vault.storage().as_ref(), vault.dir(), seed)
        .map_err(|e| Failure::new(e.to_string()))
}

/// The replication's lines of `inspect` and `replicate --status`.
pub fn print_record(r: &CycleRecord) {
    let state = if !r.stopped && process_alive(r.pid) {
        "running"
    } else {
        "stopped"
    };
    println!(
        "replicate   {state} (pid {}), {} point(s), {} failed cycle(s); last cycle {} \
         journaled, {} read in {:.2} s",
        r.pid,
        r.cycles_ok,
        r.cycles_failed,
        human_bytes(r.last_cycle_bytes),
        human_bytes(r.last_cycle_bytes_read),
        r.last_cycle_seconds
    );
    match (&r.sync_error, r.remote_point_id) {
        (Some(e), _) => println!("remote      the last sync failed: {e}"),
        (None, Some(id)) if r.remote_behind => println!("remote      newest point {id} (behind)"),
        (None, Some(id)) => println!("remote      newest point {id}"),
        (None, None) => {}
    }
    if let Some(e) = &r.last_error {
        println!("last error  {e}");
    }
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
