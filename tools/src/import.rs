//! Source images for `disk add --from` and `ingest --from`: the formats (`replog-image`'s,
//! named on the command line through its clap feature), and the one place an image error
//! becomes a [`Failure`]. Reading the images is `replog-image`'s; a conversion's scratch file
//! goes in the vault directory, on the filesystem where the disk's base image will go too.

use std::path::Path;

pub use replog_image::SourceFormat;
use replog_image::{ImageError, Source};
use replog_io::Storage;

use crate::Failure;

/// Every image error is a failure of the request as given (exit 1), reported by its sentence.
impl From<ImageError> for Failure {
    fn from(e: ImageError) -> Failure {
        Failure::new(e.to_string())
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
