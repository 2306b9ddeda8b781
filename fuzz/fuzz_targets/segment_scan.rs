//! Fuzz target `segment_scan`: arbitrary bytes as a whole segment file, through `segment::scan`.
//!
//! The oracle, `replog_format::fuzzing::segment_scan`, is the one the corpus replay runs under
//! `cargo test`: no input may panic, and whatever decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replog_format::fuzzing::segment_scan(data));
