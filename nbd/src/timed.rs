//! Time on a connection. The handshake must be over by one deadline, however the client spaces
//! its bytes: a timeout per read would let a client that sends a byte every few seconds hold
//! its slot for ever. Once negotiated, a connection has no deadline (a VM booted from an export
//! may send nothing for hours), but it records when it last moved bytes, so that the server can
//! give the slot of one idle for longer than `--idle-timeout` to a new client.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::stream::Stream;

/// When a connection last sent or received bytes, and whether it is past the handshake.
#[derive(Debug)]
pub struct Activity {
    /// The instant `last_ms` counts from.
    epoch: Instant,
    /// Milliseconds from `epoch` to the last byte moved.
    last_ms: AtomicU64,
    negotiated: AtomicBool,
}

impl Activity {
    /// A connection that has just been accepted.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            negotiated: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has moved no bytes, if it is past the handshake; `None` while it
    /// negotiates (the handshake deadline covers that).
    pub fn idle_for(&self) -> Option<Duration> {
        if !self.negotiated.load(Ordering::Relaxed) {
            return None;
        }
        let since = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.epoch.elapsed().saturating_sub(since))
    }
}

/// One half of a connection (the reading or the writing one) under the connection's limits.
#[derive(Debug)]
pub struct Timed {
    stream: Stream,
    /// The end of the handshake; `None` after it.
    deadline: Option<Instant>,
    activity: Arc<Activity>,
}

impl Timed {
    /// `stream`, which must finish the handshake by `deadline`.
    pub fn new(stream: Stream, deadline: Instant, activity: Arc<Activity>) -> Timed {
        Timed {
            stream,
            deadline: Some(deadline),
            activity,
        }
    }

    /// Ends the handshake's deadline: reads and writes wait as long as they must from here on.
    /// Both halves share one socket and so its timeouts; each half must be told, so that it
    /// stops setting them.
    pub fn negotiated(&mut self) -> io::Result<()> {
        self.deadline = None;
        self.activity.touch();
        self.activity.negotiated.store(true, Ordering::Relaxed);
        self.stream.set_timeouts(None)
    }

    /// Sets the socket's timeouts to what is left until the deadline; an error once it passed.
    fn arm(&self) -> io::Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the handshake's deadline passed",
            ));
        }
        self.stream.set_timeouts(Some(left))
    }

    fn moved(&self, n: usize) -> usize {
        if n > 0 {
            self.activity.touch();
        }
        n
    }
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm()?;
        let n = self.stream.read(buf)?;
        Ok(self.moved(n))
    }
}

impl Write for Timed {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm()?;
        let n = self.stream.write(buf)?;
        Ok(self.moved(n))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A client that sends one byte every 50 ms cannot stretch a 300 ms deadline: the read of
    /// 100 bytes fails although no single wait was long.
    #[test]
    fn the_deadline_covers_the_whole_handshake_not_each_read() {
        let (server, mut client) = UnixStream::pair().expect("a socket pair");
        let trickle = std::thread::spawn(move || {
            for _ in 0..100 {
                if client.write_all(&[1]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let deadline = Instant::now() + Duration::from_millis(300);
        let mut timed = Timed::new(Stream::Unix(server), deadline, Activity::new());
        let mut buf = [0u8; 100];
        let err = timed.read_exact(&mut buf).expect_err("the deadline passes");
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            "{err}"
        );
        drop(timed);
        trickle.join().expect("the client thread ends");
    }

    #[test]
    fn a_connection_counts_as_idle_only_after_the_handshake() {
        let (server, _client) = UnixStream::pair().expect("a socket pair");
        let activity = Activity::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut timed = Timed::new(Stream::Unix(server), deadline, activity.clone());
        assert_eq!(activity.idle_for(), None);
        timed.negotiated().expect("the timeouts are cleared");
        assert!(activity.idle_for().is_some());
    }
}
