//! Source images, in whatever format they come, opened as a raw view of the disk's bytes.
//!
//! The writer reads raw images. A raw image is read as it is; a fixed VHD is read natively, as
//! its data without the footer; every other format qemu-img reads (qcow2, with its backing
//! chain; vmdk, vhdx, dynamic VHD, vdi, ...) is checked with `qemu-img check` (every image of
//! the chain), then converted by `qemu-img convert -O raw` into a sparse temporary file in the
//! scratch directory the caller names, read from there and removed.
//!
//! The caller picks the scratch directory for its filesystem: the CLI passes the vault
//! directory, where the disk's base image will go too, so the space needed is the image's data
//! (holes stay holes), next to what the base image then takes. The file's name, `.import-*.raw`,
//! is one that no vault file has and that writer recovery and `verify` pass over; a run killed
//! during the conversion leaves it behind, and it may be deleted.
//!
//! Holes are not read: the writer asks the source where its data is ([`File::next_data`], which
//! `SEEK_DATA`/`SEEK_HOLE` answer for the image or the converted file), and [`Source`] counts
//! the bytes actually read, which `--json` reports.
//!
//! `--format auto` asks qemu-img what the image is (or, without qemu-img, looks for the magic
//! numbers of the common formats). Like qemu-img's own probing, that trusts the image's first
//! bytes: for a raw image whose content a guest wrote, pass `--format raw`.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use replog_io::{File, Mapped, OpenMode, Storage, WriteAt};

use crate::{ImageError, ImageErrorKind, qemu_img, vhd};

/// Formats of a source image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum SourceFormat {
    /// What qemu-img detects (raw without it, unless a known magic number says otherwise).
    Auto,
    /// Raw: the image's bytes are the disk's.
    Raw,
    /// VHD: fixed natively, dynamic and differencing by qemu-img.
    Vhd,
    /// qcow2, by qemu-img.
    Qcow2,
    /// VHDX, by qemu-img.
    Vhdx,
    /// VMDK, by qemu-img.
    Vmdk,
    /// VirtualBox VDI, by qemu-img.
    Vdi,
}

/// An opened source image: a raw view of the disk's bytes.
#[derive(Debug)]
pub struct Source {
    /// The disk's bytes, from offset 0 to `len()`; reads are counted.
    pub file: Arc<dyn File>,
    /// The bytes read through `file` so far.
    read: Arc<AtomicU64>,
    /// What the image was read as: `raw`, `vhd`, or the qemu-img format it was converted from.
    pub format: String,
    /// The converted copy, removed when the source is dropped.
    _temp: Option<tempfile::TempPath>,
}

/// Opens `image` as `format`; a conversion's temporary file goes in `scratch`.
pub fn open(
    storage: &dyn Storage,
    image: &Path,
    format: SourceFormat,
    scratch: &Path,
) -> Result<Source, ImageError> {
    let file = storage.open(image, OpenMode::Read).map_err(|e| {
        let message = format!("{}: cannot open the image: {e}", image.display());
        ImageError::io(image, e, message)
    })?;
    let qemu_format = match format {
        SourceFormat::Raw => return Ok(native(file, "raw")),
        SourceFormat::Auto => match detect(&file, image)? {
            Detected::Raw => return Ok(native(file, "raw")),
            Detected::FixedVhd(len) => return Ok(source(file, len, "vhd", None)),
            Detected::Qemu(f) => f,
        },
        SourceFormat::Vhd => match fixed_vhd(file.as_ref(), image)? {
            Some(len) => return Ok(source(file, len, "vhd", None)),
            None => "vpc".to_owned(),
        },
        SourceFormat::Qcow2 => "qcow2".to_owned(),
        SourceFormat::Vhdx => "vhdx".to_owned(),
        SourceFormat::Vmdk => "vmdk".to_owned(),
        SourceFormat::Vdi => "vdi".to_owned(),
    };
    drop(file);
    convert(storage, image, &qemu_format, scratch)
}

fn native(file: Arc<dyn File>, format: &str) -> Source {
    source(file, u64::MAX, format, None)
}

/// `file` read up to `limit` bytes (`u64::MAX`: all of it), with its reads counted.
fn source(
    file: Arc<dyn File>,
    limit: u64,
    format: &str,
    temp: Option<tempfile::TempPath>,
) -> Source {
    let read = Arc::new(AtomicU64::new(0));
    Source {
        file: view(file, limit, read.clone()),
        read,
        format: format.to_owned(),
        _temp: temp,
    }
}

impl Source {
    /// The bytes of the image (or of its converted copy) read so far: its data, not its holes.
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
}

/// What `--format auto` found.
enum Detected {
    Raw,
    /// A fixed VHD of this many data bytes.
    FixedVhd(u64),
    /// A format to convert with qemu-img (its name for it).
    Qemu(String),
}

fn detect(file: &Arc<dyn File>, image: &Path) -> Result<Detected, ImageError> {
    let probed = match qemu_img::check() {
        Ok(()) => {
            // Detection only reads the header: an image in use is not refused here (a raw one
            // is then read as before; any other format is opened again with qemu's lock).
            let info =
                qemu_img::info(image, None, false, qemu_img::Lock::ForceShare).map_err(|e| {
                    e.reworded(image, |m| {
                        format!("{}: cannot read the image: {m}", image.display())
                    })
                })?;
            info["format"].as_str().map(str::to_owned).ok_or_else(|| {
                ImageError::new(
                    ImageErrorKind::Unsupported,
                    format!("{}: qemu-img info names no format: {info}", image.display()),
                )
                .in_file(image)
            })?
        }
        Err(why) => match sniff(file.as_ref(), image)? {
            Some(name) => {
                return Err(ImageError::new(ImageErrorKind::ToolMissing, format!(
                    "{} looks like a {name} image; reading it needs qemu-img (Debian: apt-get install qemu-utils); raw images and fixed VHDs are read natively ({why}); pass --format raw to take its bytes as they are",
                    image.display()
                )).in_file(image).caused_by(why));
            }
            None => "raw".to_owned(),
        },
    };
    if probed != "raw" {
        return Ok(Detected::Qemu(probed));
    }
    Ok(match fixed_vhd(file.as_ref(), image)? {
        Some(len) => Detected::FixedVhd(len),
        None => Detected::Raw,
    })
}

/// The format whose magic number starts the image, among the common ones qemu-img reads.
fn sniff(file: &dyn File, image: &Path) -> Result<Option<&'static str>, ImageError> {
    let mut head = [0u8; 72];
    let n = read_up_to(file, &mut head, 0).map_err(|e| {
        let message = format!("{}: cannot read byte 0: {e}", image.display());
        ImageError::io(image, e, message).at(0)
    })?;
    let head = &head[..n];
    let magics: [(&[u8], &str); 7] = [
        (b"QFI\xfb", "qcow2"),
        (b"QED\0", "qed"),
        (b"KDMV", "vmdk"),
        (b"COWD", "vmdk"),
        (b"# Disk DescriptorFile", "vmdk"),
        (b"vhdxfile", "vhdx"),
        (b"conectix", "dynamic VHD"),
    ];
    if let Some((_, name)) = magics.iter().find(|(m, _)| head.starts_with(m)) {
        return Ok(Some(name));
    }
    // VDI: its signature is a little-endian u32 at byte 64.
    if head.get(64..68) == Some(&0xbeda_107f_u32.to_le_bytes()) {
        return Ok(Some("vdi"));
    }
    Ok(None)
}

/// The data bytes of a fixed VHD, when the image ends with a fixed VHD's footer; `None` when it
/// ends with no VHD footer or with a dynamic disk's.
fn fixed_vhd(file: &dyn File, image: &Path) -> Result<Option<u64>, ImageError> {
    let say = |m: String| format!("{}: {m}", image.display());
    let len = file.len().map_err(|e| {
        let message = say(format!("cannot read the length: {e}"));
        ImageError::io(image, e, message)
    })?;
    let Some(at) = len.checked_sub(vhd::FOOTER_BYTES as u64) else {
        return Ok(None);
    };
    let mut bytes = [0u8; vhd::FOOTER_BYTES];
    file.read_exact_at(&mut bytes, at).map_err(|e| {
        let message = say(format!("cannot read byte {at}: {e}"));
        ImageError::io(image, e, message).at(at)
    })?;
    let footer = match vhd::decode_footer(&bytes) {
        Ok(f) => f,
        Err(vhd::FooterError::NoCookie) => return Ok(None),
        Err(e) => {
            let message = say(format!(
                "ends with a damaged VHD footer at byte {at} ({e}); pass --format raw to take its bytes as they are"
            ));
            return Err(ImageError::new(ImageErrorKind::BadFooter, message)
                .in_file(image)
                .at(at)
                .caused_by(e));
        }
    };
    if footer.disk_type != vhd::DISK_TYPE_FIXED {
        return Ok(None);
    }
    if footer.current_size > at {
        let message = say(format!(
            "the VHD footer at byte {at} says the disk is {} bytes, but the file holds only {at}: it is truncated",
            footer.current_size
        ));
        return Err(ImageError::new(ImageErrorKind::Truncated, message)
            .in_file(image)
            .at(at));
    }
    Ok(Some(footer.current_size))
}

/// Converts `image` from `format` (qemu-img's name) to a raw temporary file in `scratch`.
fn convert(
    storage: &dyn Storage,
    image: &Path,
    format: &str,
    scratch: &Path,
) -> Result<Source, ImageError> {
    let shown = if format == "vpc" { "VHD" } else { format };
    let name = image.display();
    qemu_img::require(
        &format!("{name} is a {shown} image; reading it"),
        "raw images and fixed VHDs are read natively",
    )?;
    let info = qemu_img::info(image, Some(format), false, qemu_img::Lock::Shared)
        .map_err(|e| e.reworded(image, |m| format!("{name}: cannot read it as {shown}: {m}")))?;
    let chain = qemu_img::info(image, Some(format), true, qemu_img::Lock::Shared).map_err(|e| {
        e.reworded(image, |m| match info["backing-filename"].as_str() {
            Some(backing) => format!("{name}: its backing file {backing:?} cannot be opened: {m}"),
            None => format!("{name}: cannot read it as {shown}: {m}"),
        })
    })?;
    check_chain(image, &chain)?;
    let temp = tempfile::Builder::new()
        .prefix(".import-")
        .suffix(".raw")
        .tempfile_in(scratch)
        .map_err(|e| {
            let message = format!(
                "{}: cannot create a temporary file for the conversion: {e}",
                scratch.display()
            );
            ImageError::io(scratch, e, message)
        })?
        .into_temp_path();
    qemu_img::convert(image, format, &temp, "raw", None, qemu_img::Cache::Unsafe).map_err(|e| {
        e.reworded(image, |m| {
            format!(
                "{name}: cannot convert it to raw in {}: {m}",
                temp.display()
            )
        })
    })?;
    let file = storage.open(&temp, OpenMode::Read).map_err(|e| {
        let message = format!("{}: cannot open the converted image: {e}", temp.display());
        ImageError::io(&temp, e, message)
    })?;
    let format = if format == "vpc" { "vhd" } else { format };
    Ok(source(file, u64::MAX, format, Some(temp)))
}

/// Runs `qemu-img check` on every image of the chain (`qemu-img info --backing-chain`), so that
/// a damaged image is refused rather than read as whatever qemu makes of it (a truncated qcow2,
/// for one, reads as zeros where its clusters are missing).
fn check_chain(image: &Path, chain: &serde_json::Value) -> Result<(), ImageError> {
    let links = chain.as_array().map(Vec::as_slice).unwrap_or_default();
    for link in links {
        let (Some(file), Some(format)) = (link["filename"].as_str(), link["format"].as_str())
        else {
            let message = format!(
                "{}: qemu-img info names no file or format in the backing chain: {link}",
                image.display()
            );
            return Err(ImageError::new(ImageErrorKind::Unsupported, message).in_file(image));
        };
        qemu_img::check_image(Path::new(file), format).map_err(|e| {
            let what = if Path::new(file) == image {
                String::new()
            } else {
                format!(" (in its backing file {file})")
            };
            e.reworded(image, |m| {
                format!(
                    "{}: the image is damaged{what}: {m}; it was not read",
                    image.display()
                )
            })
        })?;
    }
    Ok(())
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
fn read_up_to(file: &dyn File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// What a command reads of a source image: the image's bytes up to `limit` (all of them for a
/// raw image; a fixed VHD's data without its footer), read-only, every read counted into
/// `read` so that the command can say how much it read.
#[derive(Debug)]
struct SourceView {
    inner: Arc<dyn File>,
    limit: u64,
    read: Arc<AtomicU64>,
}

/// The first `len` bytes of `inner`, read-only, with reads counted into `read`.
fn view(inner: Arc<dyn File>, len: u64, read: Arc<AtomicU64>) -> Arc<dyn File> {
    Arc::new(SourceView {
        inner,
        limit: len,
        read,
    })
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "a source image is only read",
    )
}

impl File for SourceView {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let left = self.limit.saturating_sub(offset);
        let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        let n = self.inner.read_at(&mut buf[..n], offset)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn next_data(&self, offset: u64) -> io::Result<Option<(u64, u64)>> {
        Ok(match self.inner.next_data(offset)? {
            Some((start, end)) if start < self.limit => Some((start, end.min(self.limit))),
            _ => None,
        })
    }

    fn write_batch(&self, _writes: &[WriteAt<'_>], _sync: bool) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_data(&self) -> io::Result<()> {
        Err(read_only())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.inner.len()?.min(self.limit))
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn allocate(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn zero_range(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn map(&self) -> io::Result<Mapped> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a source image is read through positional reads, which are counted, not mapped",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::path::PathBuf, Arc<dyn File>) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("image");
        std::fs::write(&path, bytes).expect("the image is written");
        let storage = replog_io::backend("sync").expect("the sync backend");
        let file = storage
            .open(&path, OpenMode::Read)
            .expect("the image opens");
        (dir, path, file)
    }

    #[test]
    fn sniff_names_the_common_formats_and_nothing_else() {
        let mut vdi = vec![0u8; 512];
        vdi[64..68].copy_from_slice(&0xbeda_107f_u32.to_le_bytes());
        let cases: [(&[u8], Option<&str>); 6] = [
            (b"QFI\xfb\0\0\0\x03", Some("qcow2")),
            (b"KDMV\x01\0\0\0", Some("vmdk")),
            (b"vhdxfile", Some("vhdx")),
            (b"conectix", Some("dynamic VHD")),
            (&vdi, Some("vdi")),
            (b"QFI", None),
        ];
        for (bytes, want) in cases {
            let (_dir, path, file) = file_with(bytes);
            assert_eq!(sniff(file.as_ref(), &path).expect("readable"), want);
        }
        let (_dir, path, file) = file_with(&[0u8; 4096]);
        assert_eq!(sniff(file.as_ref(), &path).expect("readable"), None);
    }

    #[test]
    fn a_fixed_vhd_is_its_data_without_the_footer() {
        let mut image = vec![0x5au8; 1 << 20];
        image.extend_from_slice(&vhd::encode_fixed_footer(1 << 20, 0, [1; 16]));
        let (_dir, path, file) = file_with(&image);
        let len = fixed_vhd(file.as_ref(), &path)
            .expect("readable")
            .expect("a fixed VHD");
        assert_eq!(len, 1 << 20);
        let data = view(file, len, Arc::new(AtomicU64::new(0)));
        assert_eq!(data.len().expect("a length"), 1 << 20);
        let mut tail = [0u8; 16];
        assert_eq!(data.read_at(&mut tail, (1 << 20) - 8).expect("reads"), 8);
        assert_eq!(tail[..8], [0x5a; 8]);
        assert_eq!(data.read_at(&mut tail, 1 << 20).expect("reads"), 0);
        assert!(data.write_all_at(b"x", 0).is_err(), "the view is read-only");
    }

    #[test]
    fn a_damaged_or_truncated_vhd_footer_is_refused_and_no_footer_is_raw() {
        let footer = vhd::encode_fixed_footer(1 << 20, 0, [1; 16]);
        let mut damaged = vec![0u8; 4096];
        let mut bad = footer;
        bad[40] ^= 1;
        damaged.extend_from_slice(&bad);
        let (_dir, path, file) = file_with(&damaged);
        let err = fixed_vhd(file.as_ref(), &path).expect_err("a damaged footer");
        assert_eq!(err.kind(), ImageErrorKind::BadFooter, "{err}");
        assert_eq!(err.offset(), Some(4096));
        let cause = std::error::Error::source(&err).and_then(|e| e.downcast_ref());
        assert!(
            matches!(cause, Some(vhd::FooterError::Checksum { .. })),
            "the footer's checksum error is the source: {cause:?}"
        );

        let mut truncated = vec![0u8; 4096];
        truncated.extend_from_slice(&footer);
        let (_dir, path, file) = file_with(&truncated);
        let err = fixed_vhd(file.as_ref(), &path).expect_err("a truncated VHD");
        assert_eq!(err.kind(), ImageErrorKind::Truncated, "{err}");

        let (_dir, path, file) = file_with(&[0u8; 100]);
        assert_eq!(fixed_vhd(file.as_ref(), &path).expect("readable"), None);
        let (_dir, path, file) = file_with(&[7u8; 8192]);
        assert_eq!(fixed_vhd(file.as_ref(), &path).expect("readable"), None);
    }
}
