//! Framing many records at once: payloads encoded (LZ4 where it pays, see `compress`) here, and
//! records sealed (their CRC over header and payload) in parallel with rayon by
//! `Journal::append_many`, then laid out and copied into the staging buffer in LSN order.
//!
//! Sealing in parallel needs every header field first, and they depend only on the records
//! before: the LSN and segment offset follow from the payload lengths, and `synced_upto` is the
//! durable length when the batch is laid out (a value that may be smaller than at the moment a
//! record is copied, which only vouches for less: still true). A batch that does not fit in the
//! open segment is framed up to the record that does not fit; the segment is then sealed and
//! the rest goes to the next one.

use std::borrow::Cow;

use rayon::prelude::*;
use replog_format::header::Compression;
use replog_format::limits::RECORD_DATA_BYTES_MAX;
use replog_format::record::RecordKind;

use crate::compress::encode_payload;

/// A write or zero record to frame: at most `RECORD_DATA_BYTES_MAX` bytes of the disk.
#[derive(Debug)]
pub(crate) struct NewRecord<'a> {
    /// `Write` or `Zero`.
    pub(crate) kind: RecordKind,
    /// Record flags (`FLAG_LZ4` for a compressed payload).
    pub(crate) flags: u8,
    pub(crate) disk_id: u32,
    pub(crate) disk_offset: u64,
    /// Logical bytes written or zeroed.
    pub(crate) length: u64,
    /// The stored payload (empty for a zero record).
    pub(crate) payload: Cow<'a, [u8]>,
}

impl<'a> NewRecord<'a> {
    /// A write record of `data` at `disk_offset`, its payload compressed as `compression` and
    /// [`encode_payload`] decide.
    pub(crate) fn write(
        compression: Compression,
        disk_id: u32,
        disk_offset: u64,
        data: &'a [u8],
    ) -> NewRecord<'a> {
        let (payload, flags) = encode_payload(compression, data);
        NewRecord {
            kind: RecordKind::Write,
            flags,
            disk_id,
            disk_offset,
            length: data.len() as u64,
            payload,
        }
    }
}

/// The records of the writes `(offset, data)` to disk `disk_id`, cut at
/// `RECORD_DATA_BYTES_MAX` as [`crate::Writer::write`] cuts them, their payloads encoded in
/// parallel.
pub(crate) fn write_records<'a>(
    compression: Compression,
    disk_id: u32,
    writes: &[(u64, &'a [u8])],
) -> Vec<NewRecord<'a>> {
    let pieces: Vec<(u64, &[u8])> = writes
        .iter()
        .flat_map(|&(offset, data)| {
            data.chunks(RECORD_DATA_BYTES_MAX as usize)
                .enumerate()
                .map(move |(i, piece)| (offset + i as u64 * RECORD_DATA_BYTES_MAX, piece))
        })
        .collect();
    pieces
        .par_iter()
        .map(|&(disk_offset, data)| NewRecord::write(compression, disk_id, disk_offset, data))
        .collect()
}
