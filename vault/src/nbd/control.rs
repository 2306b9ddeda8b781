//! The control socket of a capturing server, `VAULT/control.sock`: how `replog point` takes a
//! recovery point while `serve-nbd --capture` holds the vault's writer lock.
//!
//! One request per connection, one JSON line each way, at most [`LINE_BYTES_MAX`]:
//!
//! ```text
//! -> {"op":"point","app_consistent":false,"label":"nightly"}
//! <- {"ok":true,"id":7,"lsn":1234,"time_unix_ns":...,"segment_id":3,"record_offset":4096,"kind":"crash-consistent","label":"nightly"}
//! <- {"ok":false,"error":"..."}
//! ```
//!
//! The server takes the point with the writer it serves from, so the point covers every write
//! the server acknowledged before it. The socket is created when the server starts (a stale one
//! is replaced: the writer lock proves no other server owns it) and removed when it stops.
//! Anyone who can connect can take points, as anyone who can write the vault could.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use replog_nbd::{NbdError, NbdErrorKind};
use replog_writer::{PointInfo, PointKind};
use serde_json::{Value, json};

use super::capture::CaptureBackend;

/// The socket's name in the vault directory.
pub const SOCKET_FILE: &str = "control.sock";
/// The longest request or reply line.
const LINE_BYTES_MAX: u64 = 16 << 10;
/// How long the server waits for a request once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `replog point` waits for the point (a sync of everything staged).
const REPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// The socket's path for the vault at `vault`.
pub fn socket_path(vault: &Path) -> PathBuf {
    vault.join(SOCKET_FILE)
}

/// A running control socket.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    thread: JoinHandle<()>,
}

impl ControlServer {
    /// Listens on the vault's control socket and takes points through `capture`, until `stop`
    /// is set and [`ControlServer::stop`] is called.
    pub fn start(
        vault: &Path,
        capture: Arc<CaptureBackend>,
        stop: Arc<AtomicBool>,
    ) -> Result<ControlServer, NbdError> {
        let path = socket_path(vault);
        // The writer lock is held: a socket here is a dead server's.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let what = format!("{}: cannot remove the old socket", path.display());
                return Err(NbdError::io(what, e));
            }
        }
        let listener = UnixListener::bind(&path)
            .map_err(|e| NbdError::io(format!("cannot listen on {}", path.display()), e))?;
        let thread = std::thread::Builder::new()
            .name("nbd-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(conn) => answer(conn, &capture),
                        Err(e) => eprintln!("replog: nbd: control socket: accepting failed: {e}"),
                    }
                }
            })
            .map_err(|e| NbdError::io("cannot start the control socket's thread", e))?;
        Ok(ControlServer { path, thread })
    }

    /// Ends the control socket (the stop flag must be set) and removes it.
    pub fn stop(self) {
        drop(UnixStream::connect(&self.path));
        let _ = self.thread.join();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one connection; a client that sends nothing is dropped after the timeout.
fn answer(conn: UnixStream, capture: &CaptureBackend) {
    if conn.set_read_timeout(Some(REQUEST_TIMEOUT)).is_err() {
        return;
    }
    let mut line = String::new();
    let read = BufReader::new((&conn).take(LINE_BYTES_MAX)).read_line(&mut line);
    if read.is_err() || line.is_empty() {
        return;
    }
    let reply = match take_point(&line, capture) {
        Ok(p) => {
            eprintln!(
                "replog: nbd: took point {} for a control socket client",
                p.point_id
            );
            json!({
            "ok": true,
            "id": p.point_id,
            "lsn": p.lsn,
            "time_unix_ns": p.time_unix_ns,
            "segment_id": p.segment_id,
            "record_offset": p.record_offset,
            "kind": p.kind.name(),
            "label": p.label,
            "chain": p.chain.as_ref().map(replog_format::chain::hex),
            })
        }
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    };
    let _ = writeln!(&conn, "{reply}");
}

fn take_point(line: &str, capture: &CaptureBackend) -> Result<PointInfo, NbdError> {
    let request: Value = serde_json::from_str(line).map_err(|e| {
        NbdError::new(NbdErrorKind::InvalidRequest, "the request is not JSON").with_source(e)
    })?;
    if request["op"] != "point" {
        return Err(NbdError::new(
            NbdErrorKind::InvalidRequest,
            format!(
                "unknown request {:?}; the one request is \"point\"",
                request["op"]
            ),
        ));
    }
    let kind = PointKind::quiesced(request["app_consistent"].as_bool() == Some(true));
    let label = request["label"].as_str().unwrap_or("");
    capture.point(kind, label)
}

/// Asks the capturing server of `vault`, if one answers on its control socket, to take a point.
/// `Ok(None)` when no server answers (no socket, or a stale one). The errors: `Io` when the
/// socket fails, `Protocol` when the reply cannot be read as a point, `Refused` when the server
/// could not take it.
pub fn request_point(
    vault: &Path,
    kind: PointKind,
    label: &str,
) -> Result<Option<PointInfo>, NbdError> {
    let path = socket_path(vault);
    let Ok(conn) = UnixStream::connect(&path) else {
        return Ok(None);
    };
    let failed = |e: std::io::Error| {
        let what = format!(
            "{}: asking the capturing server for a point failed",
            path.display()
        );
        NbdError::io(what, e)
    };
    conn.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(failed)?;
    let request =
        json!({"op": "point", "app_consistent": kind == PointKind::AppConsistent, "label": label});
    writeln!(&conn, "{request}").map_err(failed)?;
    let mut line = String::new();
    BufReader::new((&conn).take(LINE_BYTES_MAX))
        .read_line(&mut line)
        .map_err(failed)?;
    decode_reply(&path, &line, kind, label).map(Some)
}

/// The point in the capturing server's reply `line` to a request for a point of `kind`.
fn decode_reply(
    path: &Path,
    line: &str,
    kind: PointKind,
    label: &str,
) -> Result<PointInfo, NbdError> {
    let reply: Value = serde_json::from_str(line).map_err(|e| {
        let what = format!(
            "{}: the capturing server's reply is not JSON ({e}): {line:?}",
            path.display()
        );
        NbdError::new(NbdErrorKind::Protocol, what)
    })?;
    if reply["ok"] != true {
        let error = reply["error"].as_str().unwrap_or("no reason given");
        return Err(NbdError::new(
            NbdErrorKind::Refused,
            format!(
                "the capturing server ({}) could not take the point: {error}",
                path.display()
            ),
        ));
    }
    let number = |key: &str| reply[key].as_u64();
    let at = (number("segment_id"), number("record_offset"));
    let (Some(point_id), Some(lsn), Some(time), (Some(segment_id), Some(record_offset))) = (
        number("id"),
        number("lsn"),
        reply["time_unix_ns"].as_i64(),
        at,
    ) else {
        return Err(NbdError::new(
            NbdErrorKind::Protocol,
            format!(
                "{}: the capturing server's reply lacks the point: {line:?}",
                path.display()
            ),
        ));
    };
    Ok(PointInfo {
        point_id,
        lsn,
        time_unix_ns: time,
        kind,
        label: reply["label"].as_str().unwrap_or(label).to_owned(),
        segment_id,
        record_offset,
        chain: reply["chain"]
            .as_str()
            .and_then(replog_format::chain::from_hex),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(line: &str) -> Result<PointInfo, NbdError> {
        decode_reply(
            Path::new("v/control.sock"),
            line,
            PointKind::CrashConsistent,
            "asked",
        )
    }

    #[test]
    fn a_reply_is_a_point_a_refusal_or_a_protocol_error_by_kind() {
        let p = decode(
            r#"{"ok":true,"id":7,"lsn":1234,"time_unix_ns":5,"segment_id":3,"record_offset":4096,"kind":"crash-consistent","label":"nightly"}"#,
        )
        .unwrap();
        let got = (
            p.point_id,
            p.lsn,
            p.time_unix_ns,
            p.segment_id,
            p.record_offset,
        );
        assert_eq!(got, (7, 1234, 5, 3, 4096));
        assert_eq!(p.label, "nightly");
        let refused = decode(r#"{"ok":false,"error":"the vault is full"}"#).unwrap_err();
        assert_eq!(refused.kind, NbdErrorKind::Refused);
        assert!(
            refused.to_string().ends_with("the vault is full"),
            "{refused}"
        );
        for broken in ["not json", r#"{"ok":true,"id":7}"#] {
            assert_eq!(
                decode(broken).unwrap_err().kind,
                NbdErrorKind::Protocol,
                "{broken}"
            );
        }
    }
}
