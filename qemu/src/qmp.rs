//! A QMP session: one JSON object per line each way. The monitor greets, the session leaves
//! capabilities negotiation with `qmp_capabilities`, and then each command is answered by a
//! `return` or an `error` carrying the command's `id`. Events may arrive between them at any
//! time; they are skipped. Every wait has a deadline ([`Qmp::set_timeout`]).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::{QmpError, QmpErrorKind};

/// The longest message accepted from the monitor. The longest answers replog asks for (the
/// block nodes of a machine with many disks) are a few hundred KiB.
pub const ANSWER_BYTES_MAX: u64 = 16 << 20;

/// How long an answer may take unless [`Qmp::set_timeout`] says otherwise.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// A connected QMP session, out of negotiation mode.
#[derive(Debug)]
pub struct Qmp {
    socket: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Qmp {
    /// Connects to the monitor at `socket`, reads its greeting and negotiates capabilities.
    pub fn connect(socket: &Path) -> Result<Qmp, QmpError> {
        let stream =
            UnixStream::connect(socket).map_err(|e| QmpError::io(socket, "cannot connect", e))?;
        let writer = stream
            .try_clone()
            .map_err(|e| QmpError::io(socket, "cannot use the connection", e))?;
        let mut qmp = Qmp {
            socket: socket.to_path_buf(),
            reader: BufReader::new(stream),
            writer,
            next_id: 0,
        };
        qmp.set_timeout(TIMEOUT_DEFAULT)?;
        let greeting = qmp.message()?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::new(
                QmpErrorKind::Protocol,
                socket,
                format!("the monitor's first message is not a QMP greeting: {greeting}"),
            ));
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    /// The socket this session is connected to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// How long each answer may take from now on.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), QmpError> {
        self.writer
            .set_read_timeout(Some(timeout))
            .and_then(|()| self.writer.set_write_timeout(Some(timeout)))
            .map_err(|e| QmpError::io(&self.socket, "cannot set a timeout", e))
    }

    /// Runs `command` with `arguments` and returns what it returned. QEMU's refusal is an error
    /// of kind [`QmpErrorKind::Refused`] carrying QEMU's class and description.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.execute_inner(command, arguments)
            .map_err(|e| e.in_command(command))
    }

    fn execute_inner(&mut self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.next_id += 1;
        let id = self.next_id;
        let mut request = json!({"execute": command, "arguments": arguments, "id": id}).to_string();
        request.push('\n');
        self.writer
            .write_all(request.as_bytes())
            .map_err(|e| QmpError::io(&self.socket, "cannot send", e))?;
        loop {
            let mut answer = self.message()?;
            if answer.get("event").is_some() || answer.get("id") != Some(&json!(id)) {
                // An event, or the late answer of a command that timed out before.
                continue;
            }
            if let Some(error) = answer.get("error") {
                return Err(QmpError::new(
                    QmpErrorKind::Refused,
                    &self.socket,
                    format!(
                        "{} ({})",
                        error["desc"].as_str().unwrap_or("no description"),
                        error["class"].as_str().unwrap_or("no class")
                    ),
                ));
            }
            return Ok(answer["return"].take());
        }
    }

    /// The next message, at most [`ANSWER_BYTES_MAX`] long.
    fn message(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(ANSWER_BYTES_MAX + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| QmpError::io(&self.socket, "cannot read an answer", e))?;
        if n == 0 {
            return Err(QmpError::new(
                QmpErrorKind::Io,
                &self.socket,
                "the monitor closed the connection",
            ));
        }
        if !line.ends_with(b"\n") {
            return Err(QmpError::new(
                QmpErrorKind::Protocol,
                &self.socket,
                format!("a message longer than {ANSWER_BYTES_MAX} bytes, or cut short"),
            ));
        }
        serde_json::from_slice(&line).map_err(|e| {
            QmpError::new(
                QmpErrorKind::Protocol,
                &self.socket,
                format!("a message that is not JSON ({e})"),
            )
        })
    }
}
