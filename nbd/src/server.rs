//! Listening, accepting and stopping: one thread per client, at most `--max-clients` served at
//! once. A client past the limit still gets the greeting and has every option answered with
//! `NBD_REP_ERR_POLICY` naming the limit, so it fails with a message instead of a reset; such
//! refusals are themselves capped (at [`REFUSING_MIN`] or the limit, whichever is more) and
//! get [`REFUSAL_TIMEOUT`] at most. A connection past both caps is closed at once, and the
//! server logs why.
//!
//! A client has `--handshake-timeout` (30 s) to finish the whole handshake, however it spaces
//! its bytes, so slow connections cannot hold the slots. A negotiated client keeps its slot
//! while idle unless a new client needs it: when every slot is taken, the connection idle the
//! longest, if for more than `--idle-timeout`, is closed to make room. Stopping (SIGINT or
//! SIGTERM) closes the listener, then shuts the read side of every connection: each finishes
//! the request it is serving, replies, reads end-of-file and leaves. Connections still running
//! after [`DRAIN_TIMEOUT`] are cut.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::error::{NbdError, NbdErrorKind};
use super::export::Backend;
use super::handshake::{self, Admission, Ended, Offer};
use super::stream::Stream;
use super::timed::{Activity, Timed};
use super::transmission::{self, Closed};

/// How long a refused client is answered before it is cut (less if the handshake timeout is).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Refused clients answered at once, at least: enough that a few slow connections past the
/// limit do not leave a real client with a bare reset instead of the reason.
pub const REFUSING_MIN: usize = 64;
/// How long stopping waits for connections to finish their requests, twice: once before and
/// once after cutting them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered per connection for small messages; payloads larger than this pass through.
const SOCKET_BUFFER_BYTES: usize = 128 << 10;

/// Where the server listens.
#[derive(Debug)]
pub enum Listener {
    /// A TCP address.
    Tcp(TcpListener),
    /// A Unix socket, removed when the listener is dropped.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Listens on TCP `addr` (`HOST:PORT`; port 0 picks a free one).
    pub fn tcp(addr: &str) -> Result<Listener, NbdError> {
        TcpListener::bind(addr)
            .map(Listener::Tcp)
            .map_err(|e| NbdError::io(format!("cannot listen on {addr}"), e))
    }

    /// Listens on the Unix socket `path`, replacing a stale socket nobody listens on.
    pub fn unix(path: &Path) -> Result<Listener, NbdError> {
        bind_unix(path).map(|l| Listener::Unix(l, path.to_path_buf()))
    }

    fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                // Replies are written whole; small ones must not wait for more.
                s.set_nodelay(true)?;
                Ok((Stream::Tcp(s), peer.to_string()))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept()?;
                Ok((Stream::Unix(s), format!("a client of {}", path.display())))
            }
        }
    }

    /// The address, as an NBD URI.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("nbd://{a}"),
                Err(_) => "nbd://(unknown address)".into(),
            },
            Listener::Unix(_, path) => format!("nbd+unix:///?socket={}", path.display()),
        }
    }

    /// What unblocks `accept`: a connection to the listener itself.
    pub fn waker(&self) -> Waker {
        match self {
            Listener::Tcp(l) => Waker::Tcp(l.local_addr().ok().map(loopback_if_unspecified)),
            Listener::Unix(_, path) => Waker::Unix(path.clone()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Binds a Unix socket at `path`: a socket file left by a server that died is replaced, one a
/// live server answers on is not, and nor is any other kind of file.
pub fn bind_unix(path: &Path) -> Result<UnixListener, NbdError> {
    let taken = |why: &str| {
        NbdError::new(
            NbdErrorKind::AddressInUse,
            format!("{}: {why}", path.display()),
        )
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(taken("another server is listening on this socket"));
            }
            std::fs::remove_file(path).map_err(|e| {
                NbdError::io(
                    format!("{}: cannot remove the stale socket", path.display()),
                    e,
                )
            })?;
        }
        Ok(_) => {
            return Err(taken(
                "the file exists and is not a socket; choose another path",
            ));
        }
        Err(_) => {}
    }
    UnixListener::bind(path)
        .map_err(|e| NbdError::io(format!("cannot listen on {}", path.display()), e))
}

fn loopback_if_unspecified(mut a: SocketAddr) -> SocketAddr {
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

/// Connects to a listener so that a thread blocked in `accept` returns.
#[derive(Clone, Debug)]
pub enum Waker {
    /// A TCP listener's address.
    Tcp(Option<SocketAddr>),
    /// A Unix socket's path.
    Unix(PathBuf),
}

impl Waker {
    /// Connects and closes at once.
    pub fn wake(&self) {
        // Best effort: if the listener is gone, nothing is blocked on it.
        match self {
            Waker::Tcp(Some(a)) => drop(TcpStream::connect_timeout(a, Duration::from_secs(1))),
            Waker::Tcp(None) => {}
            Waker::Unix(p) => drop(UnixStream::connect(p)),
        }
    }
}

/// The time limits of connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client has to finish the whole handshake.
    pub handshake: Duration,
    /// How long a negotiated client may move no bytes before its slot may go to a new client;
    /// `None`: never.
    pub idle: Option<Duration>,
}

/// The connections being served, for the limit and for stopping.
#[derive(Debug, Default)]
struct Registry {
    inner: Mutex<Clients>,
    changed: Condvar,
}

/// A connection being served.
#[derive(Debug)]
struct Served {
    stream: Stream,
    peer: String,
    activity: Arc<Activity>,
}

#[derive(Debug, Default)]
struct Clients {
    next_id: u64,
    served: HashMap<u64, Served>,
    refusing: usize,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Clients> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shutdown_all(&self, how: Shutdown) {
        for s in self.lock().served.values() {
            s.stream.shutdown(how);
        }
    }

    /// Waits until no connection is left, at most `timeout`; whether none is.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut c = self.lock();
        while !c.served.is_empty() || c.refusing > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            c = self
                .changed
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

/// Removes a connection from the registry when its thread ends, however it ends.
struct Registered<'a> {
    registry: &'a Registry,
    id: Option<u64>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut c = self.registry.lock();
        match self.id {
            // Gone already when its slot was given to a new client.
            Some(id) => drop(c.served.remove(&id)),
            None => c.refusing -= 1,
        }
        drop(c);
        self.registry.changed.notify_all();
    }
}

/// One client counted as served for as long as this lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(connected: &'a AtomicUsize) -> Counted<'a> {
        connected.fetch_add(1, Ordering::SeqCst);
        Counted(connected)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection admitted: how, its id when served, and its activity.
struct Admitted {
    admission: Admission,
    id: Option<u64>,
    activity: Arc<Activity>,
}

/// Accepts and serves clients until `stop` is set (and the waker connects), then stops every
/// connection as the module documentation says.
pub fn serve(
    listener: &Listener,
    backend: &Arc<dyn Backend>,
    max_clients: usize,
    limits: Limits,
    stop: &AtomicBool,
) {
    serve_counted(
        listener,
        backend,
        max_clients,
        limits,
        stop,
        &AtomicUsize::new(0),
    );
}

/// [`serve`], keeping in `connected` the number of clients being served (admitted under the
/// limit, from their admission until their connection ends), so that a caller can tell when
/// no client is left.
pub fn serve_counted(
    listener: &Listener,
    backend: &Arc<dyn Backend>,
    max_clients: usize,
    limits: Limits,
    stop: &AtomicBool,
    connected: &AtomicUsize,
) {
    let registry = Arc::new(Registry::default());
    std::thread::scope(|scope| {
        loop {
            let accepted = listener.accept();
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("replog: nbd: accepting a connection failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let Some(admitted) = admit(&registry, &stream, &peer, max_clients, limits.idle) else {
                continue;
            };
            let registry = registry.clone();
            let backend = backend.clone();
            let counted = admitted.id.map(|_| Counted::new(connected));
            scope.spawn(move || {
                let _counted = counted;
                let _registered = Registered {
                    registry: &registry,
                    id: admitted.id,
                };
                client(stream, &peer, backend.as_ref(), &admitted, limits);
            });
        }
        registry.shutdown_all(Shutdown::Read);
        if !registry.wait_idle(DRAIN_TIMEOUT) {
            eprintln!("replog: nbd: connections still busy after {DRAIN_TIMEOUT:?}; cutting them");
            registry.shutdown_all(Shutdown::Both);
            registry.wait_idle(DRAIN_TIMEOUT);
        }
    });
}

/// Registers a new connection: served (with its id) under the limit, or in the slot of a
/// connection idle for longer than `idle`; refused over it; or closed at once, with a line in
/// the log, when even the refusals are at their cap.
fn admit(
    registry: &Registry,
    stream: &Stream,
    peer: &str,
    max_clients: usize,
    idle: Option<Duration>,
) -> Option<Admitted> {
    let mut c = registry.lock();
    let activity = Activity::new();
    if c.served.len() >= max_clients
        && let Some(idle) = idle
    {
        reclaim_idle(&mut c, idle);
    }
    if c.served.len() < max_clients {
        let id = c.next_id;
        c.next_id += 1;
        let served = Served {
            stream: stream.try_clone().ok()?,
            peer: peer.to_owned(),
            activity: activity.clone(),
        };
        c.served.insert(id, served);
        return Some(Admitted {
            admission: Admission::Serve,
            id: Some(id),
            activity,
        });
    }
    if c.refusing < max_clients.max(REFUSING_MIN) {
        c.refusing += 1;
        eprintln!(
            "replog: nbd: {peer}: refused: {max_clients} clients are served, the limit (--max-clients)"
        );
        let message = format!(
            "the server already serves {max_clients} clients, its limit (--max-clients); try again later"
        );
        return Some(Admitted {
            admission: Admission::Refuse(message),
            id: None,
            activity,
        });
    }
    eprintln!(
        "replog: nbd: {peer}: closed at once: {max_clients} clients are served (--max-clients) and {} more are being refused already",
        c.refusing
    );
    stream.shutdown(Shutdown::Both);
    None
}

/// Closes the negotiated connection idle the longest, if it is idle for `idle` or more, and
/// frees its slot.
fn reclaim_idle(c: &mut Clients, idle: Duration) {
    let longest = c
        .served
        .iter()
        .filter_map(|(id, s)| Some((*id, s.activity.idle_for()?)))
        .filter(|(_, t)| *t >= idle)
        .max_by_key(|(_, t)| *t);
    let Some((id, t)) = longest else { return };
    let Some(s) = c.served.remove(&id) else {
        return;
    };
    eprintln!(
        "replog: nbd: {}: closed after {} s without a request, to serve a new client (--idle-timeout)",
        s.peer,
        t.as_secs()
    );
    s.stream.shutdown(Shutdown::Both);
}

/// One connection, from the greeting to the last reply.
fn client(stream: Stream, peer: &str, backend: &dyn Backend, admitted: &Admitted, limits: Limits) {
    let refused = admitted.admission != Admission::Serve;
    let allowed = if refused {
        REFUSAL_TIMEOUT.min(limits.handshake)
    } else {
        limits.handshake
    };
    let deadline = Instant::now() + allowed;
    let reader = match stream.try_clone() {
        Ok(r) => r,
        Err(e) => return eprintln!("replog: nbd: {peer}: cannot set up the connection: {e}"),
    };
    let timed = |s| Timed::new(s, deadline, admitted.activity.clone());
    let mut r = BufReader::with_capacity(SOCKET_BUFFER_BYTES, timed(reader));
    let mut w = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, timed(stream));
    let offer = Offer { backend };
    let terms = match handshake::negotiate(&mut r, &mut w, offer, &admitted.admission) {
        Ok(Ok(terms)) => terms,
        Ok(Err(Ended::Aborted)) => return,
        Ok(Err(Ended::Violation(why))) => {
            return eprintln!("replog: nbd: {peer}: handshake ended: {why}");
        }
        Err(e) if refused => return log_io(peer, "while refused", &e),
        Err(e) if is_timeout(&e) => {
            return eprintln!(
                "replog: nbd: {peer}: closed: the handshake was not finished within {} s (--handshake-timeout)",
                allowed.as_secs_f64()
            );
        }
        Err(e) => return log_io(peer, "during the handshake", &e),
    };
    if let Err(e) = r.get_mut().negotiated().and(w.get_mut().negotiated()) {
        return eprintln!("replog: nbd: {peer}: cannot clear the handshake timeout: {e}");
    }
    transmit(&mut r, &mut w, peer, backend, terms);
}

/// The transmission phase of a negotiated connection.
fn transmit(
    r: &mut BufReader<Timed>,
    w: &mut BufWriter<Timed>,
    peer: &str,
    backend: &dyn Backend,
    terms: handshake::Negotiated,
) {
    let name = &backend.exports()[terms.export].name;
    let mut disk = backend.open(terms.export);
    let ended = transmission::serve(r, w, disk.as_mut(), terms, name);
    drop(disk);
    backend.connection_closed();
    match ended {
        Ok(Closed::Disconnected | Closed::Gone) => {}
        Ok(Closed::Violation(why)) => eprintln!("replog: nbd: {peer}: connection closed: {why}"),
        Err(e) => log_io(peer, "while serving", &e),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Logs an I/O error, except the ordinary ways a client leaves.
fn log_io(peer: &str, when: &str, e: &io::Error) {
    use io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted | NotConnected => {}
        _ if is_timeout(e) => {
            eprintln!("replog: nbd: {peer}: closed {when}: the client sent nothing in time");
        }
        _ => eprintln!("replog: nbd: {peer}: connection lost {when}: {e}"),
    }
}
