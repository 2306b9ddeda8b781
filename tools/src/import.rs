//! Source images for `disk add --from` and `ingest --from`: the formats (`replog-image`'s,
//! named on the command line through its clap feature), and the one place an image error
//! becomes a [`Failure`]. Reading the images is `replog-image`'s; a conversion's scratch file
//! goes in the vault directory, on the filesystem where the disk's base image will go too.

use std::path::Path;

pub use replog_image::SourceFormat;
use replog_image::{ImageError, ImageErrorKind, Source};
use replog_io::Storage;
use replog_vault::VaultErrorKind;

use crate::Failure;

/// An image error, reported by its sentence, as the failure of its kind. A damaged source image
/// is no damage to the vault: it is refused as a request the image cannot serve.
impl From<ImageError> for Failure {
    fn from(e: ImageError) -> Failure {
        let kind = match e.kind() {
            ImageErrorKind::NotFound => VaultErrorKind::NotFound,
            ImageErrorKind::Io => VaultErrorKind::Io,
            ImageErrorKind::Truncated
            | ImageErrorKind::BadFooter
            | ImageErrorKind::Corrupt
            | ImageErrorKind::Unsupported
            | ImageErrorKind::ToolMissing
            | ImageErrorKind::ToolFailed => VaultErrorKind::InvalidRequest,
        };
        Failure::of(kind, e.to_string())
    }
}

/// Opens `image` as `format`; a conversion's temporary file goes in `vault`.
pub fn open(
    storage: &dyn Storage,
    image: &Path,
    format: SourceFormat,
    vault: &Path,
) -> Result<Source, Failure> {
    Ok(replog_image::open(storage, image, format, vault)?)
}
