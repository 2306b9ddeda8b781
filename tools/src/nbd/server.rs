//! Listening, accepting and stopping: one thread per client, at most `--max-clients` served at
//! once. A client past the limit still gets the greeting and has every option answered with
//! `NBD_REP_ERR_POLICY` naming the limit, so it fails with a message instead of a reset; such
//! refusals are themselves capped and time out.
//!
//! A client has [`HANDSHAKE_TIMEOUT`] to finish the handshake, so idle connections cannot hold
//! the slots. Stopping (SIGINT or SIGTERM) closes the listener, then shuts the read side of
//! every connection: each finishes the request it is serving, replies, reads end-of-file and
//! leaves. Connections still running after [`DRAIN_TIMEOUT`] are cut.

use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::export::Backend;
use super::handshake::{self, Admission, Ended, Offer};
use super::transmission::{self, Closed, Session};

/// How long a client may take to finish the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a refused client is answered before it is cut.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long stopping waits for connections to finish their requests, twice: once before and
/// once after cutting them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered per connection for small messages; payloads larger than this pass through.
const SOCKET_BUFFER_BYTES: usize = 128 << 10;

/// A client connection over TCP or a Unix socket.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix stream socket.
    Unix(UnixStream),
}

impl Stream {
    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self, how: Shutdown) {
        // The peer may be gone already; there is nothing to do about a failure here.
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        };
    }

    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

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
    pub fn tcp(addr: &str) -> Result<Listener, String> {
        TcpListener::bind(addr)
            .map(Listener::Tcp)
            .map_err(|e| format!("cannot listen on {addr}: {e}"))
    }

    /// Listens on the Unix socket `path`, replacing a stale socket nobody listens on.
    pub fn unix(path: &Path) -> Result<Listener, String> {
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
pub fn bind_unix(path: &Path) -> Result<UnixListener, String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "{}: another server is listening on this socket",
                    path.display()
                ));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("{}: cannot remove the stale socket: {e}", path.display()))?;
        }
        Ok(_) => {
            return Err(format!(
                "{}: the file exists and is not a socket; choose another path",
                path.display()
            ));
        }
        Err(_) => {}
    }
    UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))
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

/// The connections being served, for the limit and for stopping.
#[derive(Debug, Default)]
struct Registry {
    inner: Mutex<Clients>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Clients {
    next_id: u64,
    served: HashMap<u64, Stream>,
    refusing: usize,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Clients> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shutdown_all(&self, how: Shutdown) {
        for s in self.lock().served.values() {
            s.shutdown(how);
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
            Some(id) => drop(c.served.remove(&id)),
            None => c.refusing -= 1,
        }
        drop(c);
        self.registry.changed.notify_all();
    }
}

/// Accepts and serves clients until `stop` is set (and the waker connects), then stops every
/// connection as the module documentation says.
pub fn serve(
    listener: &Listener,
    backend: &Arc<dyn Backend>,
    max_clients: usize,
    stop: &AtomicBool,
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
            let Some((admission, id)) = admit(&registry, &stream, max_clients) else {
                continue;
            };
            let registry = registry.clone();
            let backend = backend.clone();
            scope.spawn(move || {
                let _registered = Registered {
                    registry: &registry,
                    id,
                };
                client(stream, &peer, backend.as_ref(), &admission);
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

/// Registers a new connection: served (with its id) under the limit, refused over it, or
/// dropped at once when even the refusals are at the limit.
fn admit(
    registry: &Registry,
    stream: &Stream,
    max_clients: usize,
) -> Option<(Admission, Option<u64>)> {
    let mut c = registry.lock();
    if c.served.len() < max_clients {
        let id = c.next_id;
        c.next_id += 1;
        let clone = stream.try_clone().ok()?;
        c.served.insert(id, clone);
        return Some((Admission::Serve, Some(id)));
    }
    if c.refusing < max_clients {
        c.refusing += 1;
        let message = format!(
            "the server already serves {max_clients} clients, its limit (--max-clients); try again later"
        );
        return Some((Admission::Refuse(message), None));
    }
    None
}

/// One connection, from the greeting to the last reply.
fn client(stream: Stream, peer: &str, backend: &dyn Backend, admission: &Admission) {
    let refused = *admission != Admission::Serve;
    let timeout = if refused {
        REFUSAL_TIMEOUT
    } else {
        HANDSHAKE_TIMEOUT
    };
    let halves = stream
        .set_timeouts(Some(timeout))
        .and_then(|()| stream.try_clone());
    let reader = match halves {
        Ok(r) => r,
        Err(e) => return eprintln!("replog: nbd: {peer}: cannot set up the connection: {e}"),
    };
    let mut r = BufReader::with_capacity(SOCKET_BUFFER_BYTES, reader);
    let mut w = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, stream);
    let offer = Offer {
        exports: backend.exports(),
        writable: backend.writable(),
    };
    let terms = match handshake::negotiate(&mut r, &mut w, offer, admission) {
        Ok(Ok(terms)) => terms,
        Ok(Err(Ended::Aborted)) => return,
        Ok(Err(Ended::Violation(why))) => {
            return eprintln!("replog: nbd: {peer}: handshake ended: {why}");
        }
        Err(e) => return log_io(peer, "during the handshake", &e),
    };
    if let Err(e) = w.get_ref().set_timeouts(None) {
        return eprintln!("replog: nbd: {peer}: cannot clear the handshake timeout: {e}");
    }
    let export = &offer.exports[terms.export];
    let session = Session {
        terms,
        name: &export.name,
        size: export.size,
        writable: offer.writable,
    };
    let mut disk = backend.open(terms.export);
    let ended = transmission::serve(&mut r, &mut w, disk.as_mut(), &session);
    drop(disk);
    backend.connection_closed();
    match ended {
        Ok(Closed::Disconnected | Closed::Gone) => {}
        Ok(Closed::Violation(why)) => eprintln!("replog: nbd: {peer}: connection closed: {why}"),
        Err(e) => log_io(peer, "while serving", &e),
    }
}

/// Logs an I/O error, except the ordinary ways a client leaves.
fn log_io(peer: &str, when: &str, e: &io::Error) {
    use io::ErrorKind::*;
    match e.kind() {
        UnexpectedEof | ConnectionReset | BrokenPipe | ConnectionAborted => {}
        WouldBlock | TimedOut => {
            eprintln!("replog: nbd: {peer}: closed {when}: the client sent nothing in time");
        }
        _ => eprintln!("replog: nbd: {peer}: connection lost {when}: {e}"),
    }
}
