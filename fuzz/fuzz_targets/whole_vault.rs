//! Fuzz target `whole_vault`: byte flips and truncations of a small real vault, which is then
//! opened, listed, read at every point and verified.
//!
//! The oracle, `replog_tests::fuzz_vault::whole_vault`, is the one the corpus replay runs under
//! `cargo test`: no panic, any changed byte is reported by `verify`, and with a single flipped
//! byte every successful read returns exactly the original bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replog_tests::fuzz_vault::whole_vault(data));
