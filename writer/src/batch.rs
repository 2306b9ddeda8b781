//! Framing many records at once: payloads encoded (LZ4 where it pays, see `compress`) and
//! records sealed (their CRC over header and payload) in parallel with rayon, then laid out and
//! copied into the staging buffer in LSN order.
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
use replog_format::record::{RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use replog_format::segment::{ExtentEntry, FOOTER_EXTENT_BYTES};

use crate::compress::encode_payload;
use crate::error::Result;
use crate::journal::full_after;
use crate::writer::Writer;

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

impl Writer {
    /// Stages the writes `(offset, data)` to disk `disk_id`, as [`Writer::write`] would one
    /// after the other, but with compression and checksums computed in parallel. Returns the
    /// LSN of the last record. Not durable until a point, sync or close returns.
    ///
    /// Memory: the compressed payloads of the batch are held until it is framed.
    pub fn write_many(&mut self, disk_id: u32, writes: &[(u64, &[u8])]) -> Result<u64> {
        for (offset, data) in writes {
            self.check_range(disk_id, *offset, data.len() as u64)?;
        }
        let pieces: Vec<(u64, &[u8])> = writes
            .iter()
            .flat_map(|&(offset, data)| {
                data.chunks(RECORD_DATA_BYTES_MAX as usize)
                    .enumerate()
                    .map(move |(i, piece)| (offset + i as u64 * RECORD_DATA_BYTES_MAX, piece))
            })
            .collect();
        let compression = self.header.compression;
        let records: Vec<NewRecord<'_>> = pieces
            .par_iter()
            .map(|&(disk_offset, data)| NewRecord::write(compression, disk_id, disk_offset, data))
            .collect();
        self.append_many(&records)
    }

    /// Frames `records` in order, sealing them in parallel; returns the LSN of the last.
    pub(crate) fn append_many(&mut self, records: &[NewRecord<'_>]) -> Result<u64> {
        self.check_poison()?;
        let mut at = 0;
        while at < records.len() {
            let total = (RECORD_HEADER_BYTES + records[at].payload.len()) as u64;
            if self.active.is_full_for(total, self.header.segment_bytes) {
                self.seal_and_rotate()?;
            }
            let mut headers = self.lay_out(&records[at..]);
            let n = headers.len();
            let seed = self.seed;
            let sealed: Vec<[u8; RECORD_HEADER_BYTES]> = headers
                .par_iter_mut()
                .zip(&records[at..at + n])
                .map(|(h, r)| h.seal(seed, &r.payload))
                .collect();
            for ((h, head), r) in headers.iter().zip(&sealed).zip(&records[at..]) {
                let staged = self.active.stage(&[head, &r.payload]);
                self.poison_on(staged, "reading back the journal's last block")?;
                self.active.extents.push(ExtentEntry::from_header(h));
                self.active.footer_bytes += FOOTER_EXTENT_BYTES as u64;
                self.next_lsn += 1;
                if self.active.staged() >= self.active.pending.options.buffer_bytes {
                    self.flush(false)?;
                }
            }
            at += n;
        }
        Ok(self.last_lsn())
    }

    /// The headers (not yet sealed) of the longest prefix of `records` that fits in the open
    /// segment; at least one record.
    fn lay_out(&self, records: &[NewRecord<'_>]) -> Vec<RecordHeader> {
        let seg = &self.active;
        let (mut end, mut count, mut footer) = (seg.end(), seg.record_count(), seg.footer_bytes);
        let mut headers = Vec::new();
        for r in records {
            let total = (RECORD_HEADER_BYTES + r.payload.len()) as u64;
            if !headers.is_empty()
                && full_after(end, count, footer, total, self.header.segment_bytes)
            {
                break;
            }
            headers.push(RecordHeader {
                crc: 0,
                kind: r.kind,
                flags: r.flags,
                lsn: self.next_lsn + headers.len() as u64,
                segment_id: seg.id,
                segment_offset: end,
                synced_upto: seg.synced,
                disk_id: r.disk_id,
                stored_len: r.payload.len() as u32,
                disk_offset: r.disk_offset,
                length: r.length,
            });
            end += total;
            count += 1;
            footer += FOOTER_EXTENT_BYTES as u64;
        }
        headers
    }
}
