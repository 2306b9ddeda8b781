//! The NBD protocol, as its protocol document defines it, and a server that speaks it over any
//! block device. This crate owns the wire (`proto` holds the numbers, `wire` and `request`
//! the bytes), the two phases of a connection (`handshake`: fixed newstyle, `NBD_OPT_GO`,
//! `INFO`, `LIST`, structured replies, `base:allocation`; `transmission`: read, write, trim,
//! write-zeroes, flush, block status), the connections themselves (`server`, with `timed`
//! cutting clients that stall), what a server serves (a [`BlockDevice`], the one description of
//! an export: size, read-only, read, write, trim, write-zeroes, flush, block status; a
//! [`Backend`] names the exports and opens a device per connection), the client (reads, block
//! status, and pipelined writes, write-zeroes, trims and flushes: [`Writes`]), and the one
//! error shape of all of it, [`NbdError`]. [`RangeMap`] is a generic map of byte ranges for
//! devices that keep state per range (an overlay, staged writes).
//!
//! It must not know what holds the bytes: no vaults, journals, points or leases (those devices
//! live in `replog-vault`), and no command line, signals or output (those are `tools/`'s).
//! Memory: per connection, one buffer of at most one request (32 MiB) plus what its device keeps.
#![forbid(unsafe_code)]

mod client;
mod client_pipe;
mod client_wire;
mod client_write;
mod error;
mod export;
mod handshake;
pub mod proto;
mod rangemap;
mod request;
mod server;
mod stream;
mod timed;
mod transmission;
mod wire;

pub use client::{Client, ClientOptions, Extent};
pub use client_write::{Writes, ZERO_REQUEST_BYTES_MAX};
pub use error::{NbdError, NbdErrorKind};
pub use export::{Backend, BlockDevice, DATA, ExportInfo, Extents, HOLE};
pub use rangemap::{Piece, RangeMap};
pub use server::{Limits, Listener, Waker, serve, serve_counted};
