//! Fuzz target `vault_header`: the vault header page, `VAULT`.
//!
//! The oracle, `replog_format::fuzzing::vault_header`, is the one the corpus replay runs under
//! `cargo test`: no input may panic, and whatever decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replog_format::fuzzing::vault_header(data));
