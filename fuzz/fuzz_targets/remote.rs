//! Fuzz target `remote`: a remote manifest, a file map or a remote configuration (each decoder
//! gets the same bytes).
//!
//! The oracle, `replog_format::fuzzing::remote`, is the one the corpus replay runs under `cargo
//! test`: no input may panic, and whatever decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replog_format::fuzzing::remote(data));
