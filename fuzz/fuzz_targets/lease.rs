//! Fuzz target `lease`: a whole lease file, `leases/<name>.lease`.
//!
//! The oracle, `replog_format::fuzzing::lease`, is the one the corpus replay runs under `cargo
//! test`: no input may panic, and whatever decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replog_format::fuzzing::lease(data));
