//! `replog serve-nbd`: an NBD server, so hypervisors and disk tools use a vault as a disk.
//!
//! Three modes, one export per disk named after it:
//! - a recovery point, read-only (`--point ID` or `--latest`), held under a lease so compaction
//!   cannot roll the bases past it while the server runs;
//! - the same with `--overlay`: writable through a copy-on-write overlay discarded on exit (a
//!   test failover booted straight from the vault);
//! - `--capture`: the replica's latest state, writable, every write, trim and write-zeroes
//!   appended to the journal, flush and FUA durable before the reply; `replog point` takes
//!   points meanwhile through the control socket.
//!
//! The protocol and the server are `replog-nbd`'s, the devices `replog_vault::nbd`'s; this
//! module parses the arguments, opens the device, handles signals and prints what is served.

pub mod control;
pub mod live;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use replog_io::Storage;
use replog_reader::{LeaseOptions, PointInfo, Vault};
use signal_hook::consts::{SIGINT, SIGPIPE, SIGTERM};

use crate::cli::ServeNbdArgs;
use crate::output::human_bytes;
use crate::{CmdResult, EXIT_OK, Failure};
use replog_nbd::{Backend, Limits, Listener, NbdError, Waker};
use replog_vault::nbd::{CaptureBackend, ControlServer, OverlayBackend, PointBackend};

/// Every NBD failure the command reports, in one place: its sentence, exit code 1.
impl From<NbdError> for Failure {
    fn from(e: NbdError) -> Failure {
        Failure::new(e.to_string())
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub fn run(storage: Arc<dyn Storage>, args: &ServeNbdArgs) -> CmdResult {
    ignore_sigpipe()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (backend, capture, serving) = open_backend(storage, args)?;
    let listener = match &args.unix {
        Some(path) => Listener::unix(path),
        None => Listener::tcp(&args.listen),
    }?;
    // Only now that the socket is bound: a server that cannot listen serves nothing.
    println!("{serving}");
    let control = match &capture {
        Some(c) => Some(ControlServer::start(&args.vault, c.clone(), stop.clone())?),
        None => None,
    };
    watch_signals(stop.clone(), listener.waker())?;
    for (index, e) in backend.exports().iter().enumerate() {
        let size = backend.open(index).size();
        println!("export {}: {} ({size} bytes)", e.name, human_bytes(size));
    }
    println!("listening on {}", listener.describe());
    replog_nbd::serve(
        &listener,
        &backend,
        args.max_clients as usize,
        limits(args),
        &stop,
    );
    if let Some(c) = control {
        c.stop();
    }
    drop(listener);
    if let Some(c) = capture {
        c.close()?;
    }
    eprintln!("replog: nbd: stopped");
    Ok(EXIT_OK)
}

/// The backend, the capture when capturing, and the line that says what is served.
type Opened = (Arc<dyn Backend>, Option<Arc<CaptureBackend>>, String);

fn open_backend(storage: Arc<dyn Storage>, args: &ServeNbdArgs) -> Result<Opened, Failure> {
    let vault_name = args.vault.display().to_string();
    if args.capture {
        let writer = crate::context::open_writer(storage.clone(), &args.vault)?;
        let (capture, started) = CaptureBackend::new(storage, &args.vault, writer)?;
        if let Some(p) = started {
            eprintln!(
                "replog: nbd: took point {} (capture start): a disk had no journal record yet",
                p.point_id
            );
        }
        let capture = Arc::new(capture);
        let serving = format!("capturing writes into {vault_name}");
        return Ok((capture.clone(), Some(capture), serving));
    }
    let leased = Vault::open_leased(
        storage,
        &args.vault,
        &LeaseOptions::new("nbd-export"),
        |v: &Vault| choose_point(v, args),
    )?;
    if let Some(damage) = leased.vault.damage() {
        eprintln!("replog: warning: {vault_name}: {damage}; run `replog verify`");
    }
    let view = leased.vault.view_with(
        &leased.point,
        &replog_reader::ViewOptions {
            memory_limit_bytes: args.memory_limit,
        },
    )?;
    let maps = match view.mode() {
        replog_reader::ViewMode::InMemory => "extent maps in memory".to_owned(),
        replog_reader::ViewMode::Layered { checkpoint_lsn } => {
            format!("extent maps layered over the checkpoint at LSN {checkpoint_lsn}")
        }
    };
    let maps = format!("{maps}, {}", human_bytes(view.memory_bytes()));
    let p = leased.point.clone();
    let point = PointBackend::new(view, &p, leased.lease, &vault_name);
    let mode = if args.overlay {
        "writable through an overlay discarded on exit"
    } else {
        "read-only"
    };
    let serving = format!(
        "serving point {} of {vault_name}, {mode} ({maps})",
        p.point_id
    );
    if !args.overlay {
        return Ok((Arc::new(point), None, serving));
    }
    let dir = args.overlay_dir.clone().unwrap_or_else(std::env::temp_dir);
    let overlay = OverlayBackend::new(point, &dir)?;
    Ok((Arc::new(overlay), None, serving))
}

fn choose_point(v: &Vault, args: &ServeNbdArgs) -> Result<PointInfo, Failure> {
    let found = match args.point {
        Some(id) => v.point(id).ok_or_else(|| {
            Failure::new(format!(
                "{}: there is no point {id}; `replog points` lists them",
                args.vault.display()
            ))
        })?,
        None => v.latest_point().ok_or_else(|| {
            Failure::new(format!(
                "{}: the vault has no recovery points yet; take one with `replog point`",
                args.vault.display()
            ))
        })?,
    };
    Ok(found.clone())
}

/// `main` restores SIGPIPE's default action so that `replog dump | head` ends quietly; a server
/// must instead see `EPIPE` when a client vanishes while it writes (writes to a Unix socket
/// raise SIGPIPE). A handler that only sets a flag nobody reads makes the signal harmless.
fn ignore_sigpipe() -> Result<(), Failure> {
    signal_hook::flag::register(SIGPIPE, Arc::new(AtomicBool::new(false)))
        .map(drop)
        .map_err(|e| Failure::new(format!("cannot handle SIGPIPE: {e}")))
}

/// On the first SIGINT or SIGTERM, sets `stop` and wakes the accept loop; a second one, while
/// the server is still stopping, ends the process at once with exit code 1 (like `kill -9`:
/// writes acknowledged but not flushed may be lost).
fn watch_signals(stop: Arc<AtomicBool>, waker: Waker) -> Result<(), Failure> {
    let failed = |e: std::io::Error| Failure::new(format!("cannot handle SIGINT and SIGTERM: {e}"));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())
            .map_err(failed)?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(failed)?;
    std::thread::Builder::new()
        .name("nbd-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stop.store(true, Ordering::SeqCst);
                waker.wake();
            }
        })
        .map(drop)
        .map_err(|e| Failure::new(format!("cannot start the signal thread: {e}")))
}

/// The server's limits against clients that stall, from the command line.
fn limits(args: &ServeNbdArgs) -> Limits {
    Limits {
        handshake: Duration::from_secs(args.handshake_timeout),
        idle: (args.idle_timeout > 0).then(|| Duration::from_secs(args.idle_timeout)),
    }
}
