//! Micro-benchmarks for replog. The benchmarks live in `benches/` and run with
//! `cargo bench -p replog-benches`; `benches/format.rs` covers the on-disk format's hot paths
//! (record framing, CRC32, LZ4 blocks, segment scans); `benches/pipeline.rs` the writer's ingest
//! pipeline (adaptive compression, parallel sealing, staging, `write` against `write_many`).
//!
//! The library holds the payloads both benchmarks feed their code.

/// Deterministic bytes that do not compress (xorshift64).
pub fn random_bytes(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes that compress about as well as a file system block of text or structured data (3 to 4
/// times): short repeated phrases with counters and some noise.
pub fn compressible_bytes(len: usize) -> Vec<u8> {
    let noise = random_bytes(len / 16 + 1, 7);
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0usize;
    while out.len() < len {
        out.extend_from_slice(format!("row {i:08} status=ok bytes={} ", i * 4096).as_bytes());
        out.push(noise[i % noise.len()]);
        i += 1;
    }
    out.truncate(len);
    out
}
