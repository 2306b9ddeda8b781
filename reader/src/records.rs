//! Checking one journal record read on its own, away from the rest of its segment: that it is
//! intact (CRC), that it is where it says it is (segment id and offset), that it is the record
//! the index pointed at, and turning a write's payload back into its logical bytes.

use replog_format::record::{RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use replog_format::{DecodeError, DecodeErrorKind};

use crate::extent_map::RecordRef;

pub(crate) use replog_format::segment::record_in;

/// Checks that a verified write record is the one the index described. A mismatch means the
/// index and the segment disagree: an intact record in a place the index did not mean.
pub(crate) fn check_matches(h: &RecordHeader, r: &RecordRef) -> Result<(), DecodeError> {
    let matches = h.kind == RecordKind::Write
        && h.crc == r.record_crc
        && h.lsn == r.lsn
        && h.disk_offset == r.disk_offset
        && h.length == u64::from(r.length)
        && h.stored_len == r.stored_len
        && h.flags == r.flags;
    if matches {
        return Ok(());
    }
    Err(DecodeError::new(
        DecodeErrorKind::Misplaced,
        "record",
        h.segment_offset,
        format!(
            "expected the write of LSN {} (CRC {:#010x}, {} bytes at disk byte {}), \
             found a {} record of LSN {} (CRC {:#010x}, {} bytes at disk byte {})",
            r.lsn,
            r.record_crc,
            r.length,
            r.disk_offset,
            h.kind.name(),
            h.lsn,
            h.crc,
            h.length,
            h.disk_offset
        ),
    ))
}

/// Fills `out` with the logical bytes of a verified write record: a copy of a raw payload, or
/// the LZ4 block decompressed, which must produce exactly `length` bytes.
pub(crate) fn decode_write(
    h: &RecordHeader,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), DecodeError> {
    // `length` is at most RECORD_DATA_BYTES_MAX: the header decoder rejects more.
    let length = h.length as usize;
    out.clear();
    if !h.is_lz4() {
        out.extend_from_slice(payload);
        return Ok(());
    }
    out.resize(length, 0);
    let produced = lz4_flex::block::decompress_into(payload, out).map_err(|e| {
        DecodeError::new(
            DecodeErrorKind::BadField,
            "record payload",
            h.segment_offset + RECORD_HEADER_BYTES as u64,
            format!("the LZ4 block does not decompress to {length} bytes: {e}"),
        )
    })?;
    if produced != length {
        return Err(DecodeError::new(
            DecodeErrorKind::BadField,
            "record payload",
            h.segment_offset + RECORD_HEADER_BYTES as u64,
            format!("the LZ4 block decompresses to {produced} bytes, the record says {length}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_format::record::FLAG_LZ4;
    use replog_format::segment::Expect;

    fn expect() -> Expect {
        Expect {
            vault_id: [1; 16],
            seed: 11,
            segment_id: 2,
        }
    }

    fn write(data: &[u8], lz4: bool) -> (RecordHeader, Vec<u8>) {
        let payload = if lz4 {
            lz4_flex::block::compress(data)
        } else {
            data.to_vec()
        };
        let mut h = RecordHeader {
            crc: 0,
            kind: RecordKind::Write,
            flags: if lz4 { FLAG_LZ4 } else { 0 },
            lsn: 5,
            segment_id: 2,
            segment_offset: 8192,
            synced_upto: 4096,
            disk_id: 1,
            stored_len: payload.len() as u32,
            disk_offset: 512,
            length: data.len() as u64,
        };
        let mut bytes = h.seal(11, &payload).to_vec();
        bytes.extend_from_slice(&payload);
        (h, bytes)
    }

    #[test]
    fn a_record_read_alone_verifies_and_decodes() {
        let data = vec![7u8; 3000];
        for lz4 in [false, true] {
            let (_, bytes) = write(&data, lz4);
            let (h, payload) = record_in(&bytes, 8192, &expect()).unwrap();
            let mut out = Vec::new();
            decode_write(&h, payload, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn a_record_at_another_offset_is_misplaced() {
        let (_, bytes) = write(&[1, 2, 3], false);
        let e = record_in(&bytes, 4096, &expect()).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::Misplaced);
        assert_eq!(e.offset, 4096);
    }

    #[test]
    fn a_flipped_payload_byte_fails_the_checksum_at_the_record_offset() {
        let (_, mut bytes) = write(&[9; 100], false);
        bytes[100] ^= 1;
        let e = record_in(&bytes, 8192, &expect()).unwrap_err();
        assert_eq!((e.kind, e.offset), (DecodeErrorKind::Checksum, 8192));
    }

    #[test]
    fn a_short_lz4_block_is_rejected() {
        let data = vec![3u8; 1000];
        let (mut h, bytes) = write(&data, true);
        h.length = 2000;
        let payload = &bytes[RECORD_HEADER_BYTES..];
        assert_eq!(
            decode_write(&h, payload, &mut Vec::new()).unwrap_err().kind,
            DecodeErrorKind::BadField
        );
    }
}
