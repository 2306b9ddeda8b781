//! Micro-benchmarks for replog. The benchmarks live in `benches/` and run with
//! `cargo bench -p replog-benches`; `benches/format.rs` covers the on-disk format's hot paths
//! (record framing, CRC32, LZ4 blocks, segment scans); `benches/pipeline.rs` the writer's ingest
//! pipeline (adaptive compression, parallel sealing, staging, `write` against `write_many`).
