//! replog-image: disk image formats at the edges of replog. It owns reading source images
//! (raw, fixed VHD natively; qcow2, vmdk, vhdx, dynamic VHD, vdi through a `qemu-img convert`
//! to a raw scratch file), detecting an image's format, the fixed VHD footer replog writes, and
//! running `qemu-img` to write the formats it does not write itself. Its errors are one
//! [`ImageError`] with a matchable [`ImageErrorKind`].
//!
//! It must not know vaults, journals, recovery points or the command line: callers hand it a
//! [`replog_io::Storage`], paths and a scratch directory, and get back a read-only
//! [`replog_io::File`] view of a disk's bytes, or a file written in the format they asked for.

mod error;
pub mod qemu_img;
mod source;
pub mod vhd;

pub use error::{ImageError, ImageErrorKind};
pub use source::{Source, SourceFormat, open};
