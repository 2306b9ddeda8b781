//! Fuzz target `checkpoint`: a whole checkpoint index file, `index/<lsn>.idx`.
//!
//! The oracle, `replog_format::fuzzing::checkpoint`, is the one the corpus replay runs under
//! `cargo test`: the header page, then each disk unit and its pieces, as a reader walks them; no
//! input may panic, every piece accepted keeps the promises readers rely on, and whatever
//! decodes must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replog_format::fuzzing::checkpoint(data));
