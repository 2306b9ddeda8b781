//! Pipelined reads: several `NBD_CMD_READ` requests in flight on one connection, their replies
//! taken in whatever order the server sends them (each chunk names its request's handle), and
//! each finished read handed to the caller at once. A new request goes out as soon as one
//! finishes, so the server always has `in_flight` requests to work on while the caller consumes
//! what arrived. Memory: `in_flight` buffers of at most [`Client::read_bytes_max`] bytes.

use std::collections::HashMap;
use std::ops::ControlFlow;

use super::client::{Client, chunk_of};
use super::client_wire::{ReplyHeader, protocol};
use super::error::NbdError;
use super::proto;

/// A read in flight: where it starts and the buffer its chunks fill.
struct InFlight {
    offset: u64,
    buf: Vec<u8>,
}

impl Client {
    /// Reads every `(offset, length)` of `ranges` with up to `in_flight` requests outstanding,
    /// and hands each finished range to `done` as `(offset, bytes)`, in the order the replies
    /// complete. `done` may stop the reads with `ControlFlow::Break`; requests still in flight
    /// are then abandoned, and the connection must not be used again. An error names the range
    /// whose reply failed; whatever `done` was given before it stays given.
    pub fn read_many(
        &mut self,
        ranges: &mut dyn Iterator<Item = (u64, u32)>,
        in_flight: usize,
        done: &mut dyn FnMut(u64, Vec<u8>) -> ControlFlow<()>,
    ) -> Result<(), NbdError> {
        let in_flight = in_flight.max(1);
        let mut pending: HashMap<u64, InFlight> = HashMap::with_capacity(in_flight);
        let mut more = true;
        loop {
            while more && pending.len() < in_flight {
                let Some((offset, len)) = ranges.next() else {
                    more = false;
                    break;
                };
                let len = self.check_range(offset, u64::from(len))?;
                let handle = self
                    .send(proto::CMD_READ, offset, u64::from(len))
                    .map_err(|e| NbdError {
                        context: format!("the read of {len} bytes at byte {offset}: {}", e.context),
                        ..e
                    })?;
                let buf = vec![0u8; len as usize];
                pending.insert(handle, InFlight { offset, buf });
            }
            if pending.is_empty() {
                return Ok(());
            }
            if let Some(read) = self.next_read_chunk(&mut pending)?
                && done(read.offset, read.buf).is_break()
            {
                return Ok(());
            }
        }
    }

    /// Takes one reply chunk and places it in its request's buffer; returns the request when
    /// the chunk was its last.
    fn next_read_chunk(
        &mut self,
        pending: &mut HashMap<u64, InFlight>,
    ) -> Result<Option<InFlight>, NbdError> {
        let header = self.any_reply().map_err(|e| {
            let first = pending.values().map(|r| r.offset).min().unwrap_or(0);
            NbdError {
                context: format!(
                    "waiting for the replies to {} reads in flight (the first at byte {first}): {}",
                    pending.len(),
                    e.context
                ),
                ..e
            }
        })?;
        let handle = match &header {
            ReplyHeader::Chunk(c) => c.handle,
            ReplyHeader::Simple { handle, .. } => *handle,
        };
        let Some(read) = pending.get_mut(&handle) else {
            return Err(protocol(format!(
                "a reply for handle {handle}, which no read in flight has"
            )));
        };
        let what = format!("the read of {} bytes at {}", read.buf.len(), read.offset);
        let chunk = chunk_of(header, &what)?;
        self.read_chunk(&chunk, read.offset, &mut read.buf, &what)?;
        if chunk.flags & proto::REPLY_FLAG_DONE == 0 {
            return Ok(None);
        }
        Ok(pending.remove(&handle))
    }
}
