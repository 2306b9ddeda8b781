//! Failover into an NBD export: a target machine's disk served by qemu-nbd, or a cloud disk
//! attached elsewhere and exported.
//!
//! Before anything is written, the export must take writes (no `NBD_FLAG_READ_ONLY`) and be at
//! least as large as the disk; bytes past the disk's size are left as they were. The disk is
//! then walked in order ([`walk`]) over one connection: data runs become `NBD_CMD_WRITE`s and
//! zero runs `NBD_CMD_WRITE_ZEROES` (the server may deallocate them), [`IN_FLIGHT`] requests
//! outstanding, so the export ends byte-exact whatever it held before. A server that does not
//! take `WRITE_ZEROES` is sent the zeros as plain writes over every zero run (nothing is
//! assumed about what it held). Then `NBD_CMD_FLUSH` (where the server takes it), and the
//! disk's range is read back, [`IN_FLIGHT`] reads of [`WINDOW_BYTES`] in flight, and its
//! [`ContentSum`] compared with the one computed from the bytes sent: a wrong byte fails the
//! run. Memory: one window of the disk, plus [`IN_FLIGHT`] windows while reading back.

use std::ops::ControlFlow;

use replog_io::ContentSum;
use replog_io::content_sum::ContentKey;
use replog_nbd::Client;
use replog_reader::DiskView;

use crate::capture::NbdUri;
use crate::error::{Result, VaultError, VaultErrorKind};
use crate::failover_target::TargetWritten;
use crate::failover_target::{Run, WINDOW_BYTES, walk};

/// Requests outstanding on the connection, writing and reading back. qemu-nbd works on up to
/// 16 at once.
pub const IN_FLIGHT: usize = 8;

/// An export, connected and checked, that one disk is written to.
#[derive(Debug)]
pub struct NbdOutput {
    uri: NbdUri,
    client: Client,
}

/// Connects to `uri` and checks that the export can hold `disk`.
pub fn open(uri: &NbdUri, disk: &DiskView) -> Result<NbdOutput> {
    let client = uri.connect(&[])?;
    let refuse = |m: String| VaultError::new(VaultErrorKind::InvalidRequest, format!("{uri}: {m}"));
    if !client.writable() {
        return Err(refuse(
            "the export is read-only (the server set NBD_FLAG_READ_ONLY); serve it writable (qemu-nbd without -r) to fail over into it".to_owned(),
        ));
    }
    if client.size() < disk.size() {
        return Err(refuse(format!(
            "the export is {} bytes, smaller than disk {} ({} bytes); grow it to at least the disk's size",
            client.size(),
            disk.name(),
            disk.size()
        )));
    }
    Ok(NbdOutput {
        uri: uri.clone(),
        client,
    })
}

impl NbdOutput {
    /// Writes `disk` into the export, flushes, reads it back and checks it; `progress` gets
    /// the disk bytes done so far.
    pub fn write(mut self, disk: &DiskView, progress: &dyn Fn(u64)) -> Result<TargetWritten> {
        let uri = self.uri.clone();
        let err = |e| uri.error(e);
        let key = ContentKey::random();
        let mut sum = ContentSum::new(key);
        let zeroes = self.client.can_write_zeroes();
        let target_size = self.client.size();
        let (mut data_bytes, mut zero_bytes) = (0u64, 0u64);
        let mut zeros: Vec<u8> = Vec::new();
        let mut w = self.client.writes(IN_FLIGHT).map_err(err)?;
        walk(disk, &mut |run| {
            match run {
                Run::Data { offset, data } => {
                    sum.add(offset, data);
                    w.write(offset, data).map_err(err)?;
                    data_bytes += data.len() as u64;
                    progress(offset + data.len() as u64);
                }
                Run::Zero { offset, len } if zeroes => {
                    w.write_zeroes(offset, len).map_err(err)?;
                    zero_bytes += len;
                    progress(offset + len);
                }
                Run::Zero { offset, len } => {
                    zeros.resize(WINDOW_BYTES as usize, 0);
                    let mut at = offset;
                    while at < offset + len {
                        let n = (offset + len - at).min(WINDOW_BYTES);
                        w.write(at, &zeros[..n as usize]).map_err(err)?;
                        at += n;
                        progress(at);
                    }
                    zero_bytes += len;
                }
            }
            Ok(())
        })?;
        w.flush().map_err(err)?;
        drop(w);
        let read = read_back(&mut self.client, disk.size(), key).map_err(err)?;
        if read != sum {
            return Err(VaultError::new(
                VaultErrorKind::Io,
                format!(
                    "{}: the export read back after the flush is not what was written for disk {} (its {} bytes differ in content): the server or the disk behind it lost or changed writes; run the failover again",
                    self.uri,
                    disk.name(),
                    disk.size()
                ),
            ));
        }
        // The disconnect has no reply; the data is flushed and checked already.
        let _ = self.client.disconnect();
        Ok(TargetWritten {
            name: disk.name().to_owned(),
            target: self.uri.to_string(),
            kind: "nbd",
            size_bytes: disk.size(),
            target_size_bytes: target_size,
            data_bytes,
            zero_bytes,
            zeroed_by: if zeroes { "write_zeroes" } else { "writes" },
        })
    }
}

/// The sum of the export's bytes `[0, size)`, read with [`IN_FLIGHT`] reads in flight.
fn read_back(
    client: &mut Client,
    size: u64,
    key: ContentKey,
) -> std::result::Result<ContentSum, replog_nbd::NbdError> {
    let mut sum = ContentSum::new(key);
    let mut ranges = (0..size.div_ceil(WINDOW_BYTES)).map(|i| {
        let offset = i * WINDOW_BYTES;
        (offset, (size - offset).min(WINDOW_BYTES) as u32)
    });
    client.read_many(&mut ranges, IN_FLIGHT, &mut |offset, bytes| {
        sum.add(offset, &bytes);
        ControlFlow::Continue(())
    })?;
    Ok(sum)
}
