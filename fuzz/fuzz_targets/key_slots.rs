//! Fuzz target `key_slots`: a whole key slot file (`crypt/KEYS.md`).
//!
//! The oracle, `replog_crypt::fuzzing::key_slots`, is the one the corpus replay runs under
//! `cargo test -p replog-crypt`: no input may panic, and whatever decodes must encode back to
//! the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replog_crypt::fuzzing::key_slots(data));
