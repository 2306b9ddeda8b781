//! Bounds-checked little-endian cursors over byte slices. Every read can fail with a
//! [`DecodeError`] naming the offset; nothing here panics on short input.

use crate::magic::FormatVersion;
use crate::{DecodeError, DecodeErrorKind};

/// Reads fixed-width little-endian integers from a slice.
#[derive(Debug)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`; `what` names the structure in errors.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Cursor<'a> {
        Cursor {
            bytes,
            pos: 0,
            what,
        }
    }

    /// The current offset.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left after the cursor.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Takes the next `len` bytes.
    pub fn take(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::new(
                DecodeErrorKind::Truncated,
                self.what,
                self.pos as u64,
                format!("expected {len} more bytes, found {}", self.remaining()),
            ));
        }
        let out = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// Takes `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a `u8`.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian `i64`.
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// Takes `len` bytes that must all be zero (reserved space).
    pub fn zeros(&mut self, len: usize) -> Result<(), DecodeError> {
        let start = self.pos;
        let bytes = self.take(len)?;
        match bytes.iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(DecodeError::new(
                DecodeErrorKind::BadField,
                self.what,
                (start + i) as u64,
                format!("reserved byte must be zero, found {:#04x}", bytes[i]),
            )),
        }
    }

    /// An error of `kind` at the current position.
    pub fn error(&self, kind: DecodeErrorKind, detail: impl Into<String>) -> DecodeError {
        DecodeError::new(kind, self.what, self.pos as u64, detail)
    }

    /// An error of `kind` at `offset`.
    pub fn error_at(
        &self,
        kind: DecodeErrorKind,
        offset: usize,
        detail: impl Into<String>,
    ) -> DecodeError {
        DecodeError::new(kind, self.what, offset as u64, detail)
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error(
                DecodeErrorKind::BadField,
                format!(
                    "{} trailing bytes after the end of the structure",
                    self.remaining()
                ),
            ))
        }
    }
}

/// Appends fixed-width little-endian integers to a buffer.
#[derive(Debug)]
pub struct Put<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Put<'a> {
    /// Appends to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Put<'a> {
        Put { out }
    }
    /// Appends bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }
    /// Appends a `u8`.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes(&[v])
    }
    /// Appends a little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// Appends a little-endian `u32`.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// Appends a little-endian `u64`.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// Appends a little-endian `i64`.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// Appends `len` zero bytes.
    pub fn zeros(&mut self, len: usize) -> &mut Self {
        self.out.resize(self.out.len() + len, 0);
        self
    }
}

/// Checks the CRC stored in the last four bytes of a fixed page-sized header, computed over all
/// the bytes before it.
pub fn check_page_crc(page: &[u8], what: &'static str, seed: u32) -> Result<(), DecodeError> {
    let body = page.len() - 4;
    let stored = u32::from_le_bytes([page[body], page[body + 1], page[body + 2], page[body + 3]]);
    let actual = crate::crc32_seeded(seed, &[&page[..body]]);
    if stored == actual {
        Ok(())
    } else {
        Err(DecodeError::new(
            DecodeErrorKind::Checksum,
            what,
            body as u64,
            format!("stored checksum {stored:#010x}, bytes hash to {actual:#010x}"),
        ))
    }
}

/// Checks the magic number and the format version a structure starts with, leaving `c` after
/// the version. `name` ends the sentence "not a replog ..." said of a wrong magic.
pub fn check_magic_version(
    c: &mut Cursor<'_>,
    magic: [u8; 8],
    name: &str,
) -> Result<(), DecodeError> {
    if c.array::<8>()? != magic {
        return Err(c.error_at(DecodeErrorKind::BadMagic, 0, format!("not a replog {name}")));
    }
    let version = c.u32()?;
    if FormatVersion::from_u32(version).is_none() {
        return Err(c.error_at(
            DecodeErrorKind::UnsupportedVersion,
            8,
            format!("format version {version}"),
        ));
    }
    Ok(())
}

/// Checks a page-sized header after its magic and version: it is exactly `page_bytes` long, its
/// checksum (the last four bytes) holds, and its own size field, at byte 12, says `page_bytes`.
/// Leaves `c` after the size field. `name` names the header in the error for a wrong length.
pub fn check_header_page(
    c: &mut Cursor<'_>,
    bytes: &[u8],
    page_bytes: usize,
    name: &str,
    seed: u32,
) -> Result<(), DecodeError> {
    if bytes.len() != page_bytes {
        return Err(c.error_at(
            DecodeErrorKind::Truncated,
            0,
            format!("{name} is not {page_bytes} bytes"),
        ));
    }
    check_page_crc(bytes, c.what, seed)?;
    if c.u32()? as usize != page_bytes {
        return Err(c.error_at(
            DecodeErrorKind::BadField,
            12,
            format!("header size is not {page_bytes}"),
        ));
    }
    Ok(())
}

/// Pads a header buffer with zeros to `len - 4` bytes and appends its CRC.
pub fn seal_page(buf: &mut Vec<u8>, len: usize, seed: u32) {
    assert!(buf.len() <= len - 4, "header fields overflow the page");
    buf.resize(len - 4, 0);
    let crc = crate::crc32_seeded(seed, &[buf]);
    buf.extend_from_slice(&crc.to_le_bytes());
}
