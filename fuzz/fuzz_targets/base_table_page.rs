//! Fuzz target `base_table_page`: a base checksum table page, after six bytes of parameters (the
//! entry count and page index the caller expects).
//!
//! The oracle, `replog_format::fuzzing::base_table_page`, is the one the corpus replay runs under
//! `cargo test`: no input may panic, and whatever decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replog_format::fuzzing::base_table_page(data));
