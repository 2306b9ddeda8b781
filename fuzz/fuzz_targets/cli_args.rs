//! Fuzz target `cli_args`: command-line arguments as the `replog` CLI receives them, run through
//! every check a vault or remote argument meets before anything is read or written: is it a
//! URL of some scheme, a remote URL replog knows, within the remote configuration's limits,
//! and a key of the remote layout.
//!
//! The input is an argument vector: arguments separated by NUL bytes, each taken as UTF-8 where
//! it is (lossily otherwise, as an `OsString` is shown). No argument may panic (finding 5 of
//! issue 16 was an assert reached from a 2,100-slash URL), and a URL `parse_remote_url` accepts
//! must be one a remote configuration can store: it encodes without the encoder's assert and
//! decodes back to itself.
//!
//! The oracle, `replog_format::fuzzing::cli_args`, is the one the corpus replay runs under
//! `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| replog_format::fuzzing::cli_args(data));
