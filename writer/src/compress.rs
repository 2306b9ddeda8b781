//! Adaptive payload compression: LZ4 where it pays, the bytes as they are where it does not,
//! and a failed attempt that stays cheap.
//!
//! A payload is stored LZ4-compressed only when that saves at least 1/8 of it. Random or
//! encrypted data never does, and compressing a whole 4 MiB record of it only to throw the
//! result away costs more than writing it. So a payload of [`PROBE_FROM_BYTES`] or more is
//! first probed: three windows of [`PROBE_WINDOW_BYTES`] (its start, middle and end) are
//! compressed, and if together they do not save 1/8, the payload is stored raw without
//! compressing the rest. The probe costs about 1/20 of a whole attempt on a 256 KiB payload
//! and less on larger ones. The price: a payload whose three windows do not compress but whose
//! other bytes do is stored raw (correct, only larger). The on-disk format is unchanged: raw
//! and LZ4 payloads were always both allowed.

use std::borrow::Cow;

use replog_format::header::Compression;
use replog_format::record::FLAG_LZ4;

/// Payloads shorter than this are never compressed: the header would eat the gain.
pub const COMPRESS_FROM_BYTES: usize = 512;
/// Payloads of at least this many bytes are probed before being compressed whole.
pub const PROBE_FROM_BYTES: usize = 64 << 10;
/// Bytes of each probe window.
pub const PROBE_WINDOW_BYTES: usize = 4 << 10;

/// Whether `packed` bytes for `raw` bytes save at least 1/8.
fn saves(packed: usize, raw: usize) -> bool {
    packed <= raw - raw / 8
}

/// Whether the payload looks compressible: its start, middle and end windows, compressed,
/// save at least 1/8 together.
pub fn probe_compresses(data: &[u8]) -> bool {
    let w = PROBE_WINDOW_BYTES.min(data.len());
    let mid = (data.len() - w) / 2;
    let windows = [&data[..w], &data[mid..mid + w], &data[data.len() - w..]];
    let packed: usize = windows
        .iter()
        .map(|win| lz4_flex::block::compress(win).len())
        .sum();
    saves(packed, 3 * w)
}

/// The payload to store for `data`, and its record flags: LZ4 when compression is on and
/// saves at least 1/8 (probed first for large payloads), otherwise the bytes as they are.
/// Pure, so callers can run it in parallel.
pub fn encode_payload(compression: Compression, data: &[u8]) -> (Cow<'_, [u8]>, u8) {
    if compression != Compression::Lz4 || data.len() < COMPRESS_FROM_BYTES {
        return (Cow::Borrowed(data), 0);
    }
    if data.len() >= PROBE_FROM_BYTES && !probe_compresses(data) {
        return (Cow::Borrowed(data), 0);
    }
    let packed = lz4_flex::block::compress(data);
    if !packed.is_empty() && saves(packed.len(), data.len()) {
        return (Cow::Owned(packed), FLAG_LZ4);
    }
    (Cow::Borrowed(data), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn random_data_is_stored_raw_without_a_whole_attempt() {
        let data = random(1 << 20, 1);
        assert!(!probe_compresses(&data));
        let (payload, flags) = encode_payload(Compression::Lz4, &data);
        assert_eq!(flags, 0);
        assert!(matches!(payload, Cow::Borrowed(_)));
    }

    #[test]
    fn compressible_data_is_compressed_and_round_trips() {
        let data: Vec<u8> = (0..1 << 20).map(|i| (i / 64 % 7) as u8).collect();
        let (payload, flags) = encode_payload(Compression::Lz4, &data);
        assert_eq!(flags, FLAG_LZ4);
        assert!(payload.len() < data.len() / 8);
        let back = lz4_flex::block::decompress(&payload, data.len()).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn small_payloads_skip_the_probe_and_compression_off_stores_raw() {
        let small = vec![0u8; 4096];
        assert_eq!(encode_payload(Compression::Lz4, &small).1, FLAG_LZ4);
        assert_eq!(encode_payload(Compression::None, &small).1, 0);
        assert_eq!(encode_payload(Compression::Lz4, &small[..100]).1, 0);
    }

    /// The probe's blind spot, by design: windows that do not compress around bytes that do.
    #[test]
    fn a_payload_whose_windows_do_not_compress_is_stored_raw() {
        let mut data = vec![0u8; 256 << 10];
        let w = PROBE_WINDOW_BYTES;
        let mid = (data.len() - w) / 2;
        for start in [0, mid, data.len() - w] {
            data[start..start + w].copy_from_slice(&random(w, start as u64 + 1));
        }
        assert_eq!(encode_payload(Compression::Lz4, &data).1, 0);
    }
}
