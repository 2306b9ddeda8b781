//! The remote layout: a vault's sealed files in object storage (S3, Azure Blob), under a prefix.
//!
//! Nothing remote is ever rewritten. Every file is cut into chunks of [`REMOTE_CHUNK_BYTES`]
//! stored under their BLAKE3 hash (all-zero chunks are not stored at all); a **file map** lists a
//! file's chunks and is itself stored under its hash; a **remote manifest**, numbered in
//! sequence, embeds the vault's `MANIFEST` and names the map of every file it needs. Keys,
//! relative to the prefix:
//!
//! ```text
//! VAULT                         the vault header, byte for byte: the prefix belongs to this vault
//! manifests/<seq:016x>.rman     remote manifest number <seq>, from 1
//! marks/<seq:016x>              empty: manifest <seq> was published and confirmed
//! maps/<blake3 hex>.map         a file map
//! chunks/<blake3 hex>           up to 4 MiB of a file, at a multiple of 4 MiB
//! ```
//!
//! Remote manifest (`RPLG-RMN`):
//!
//! ```text
//! offset size field
//!      0    8 magic "RPLG-RMN"
//!      8    4 format_version u32 (1)
//!     12    4 reserved, zero
//!     16   16 vault_id
//!     32    8 seq u64: from 1; the object's key says the same
//!     40    8 time_unix_ns i64: when it was made
//!     48    8 manifest_bytes u64: length of the embedded MANIFEST, at most 1 GiB
//!     56    4 file_count u32: at most 2^25
//!     60    4 reserved, zero
//!     64    . the vault's MANIFEST, byte for byte
//!      .  64n files, in increasing (kind, a, b) order:
//!             0 1 kind: 1 sealed segment (a = segment id), 2 checkpoint index (a = LSN),
//!                       3 base image (a = disk id, b = generation)
//!             1 7 reserved, zero
//!             8 8 a u64
//!            16 8 b u64 (zero unless a base image)
//!            24 8 file_bytes u64: the file's length (a sealed segment: up to its trailer)
//!            32 32 map: BLAKE3 of the file's map object
//!      .    4 crc32 (vault seed) of every byte before it
//! ```
//!
//! File map (`RPLG-RFM`):
//!
//! ```text
//! offset size field
//!      0    8 magic "RPLG-RFM"
//!      8    4 format_version u32 (1)
//!     12    4 chunk_bytes u32: 4 MiB
//!     16   16 vault_id
//!     32    1 kind, as in the remote manifest
//!     33    7 reserved, zero
//!     40    8 a u64
//!     48    8 b u64
//!     56    8 file_bytes u64: at most 2^47
//!     64    8 chunk_count u64: ceil(file_bytes / chunk_bytes)
//!     72  32n BLAKE3 of each chunk's bytes (the last chunk is not padded); all zero: the chunk
//!             is all zero bytes and is not stored
//!      .    4 crc32 (vault seed) of every byte before it
//! ```
//!
//! Remote configuration, `remote/CONFIG` in the local vault (`RPLG-RCF`):
//!
//! ```text
//! offset size field
//!      0    8 magic "RPLG-RCF"
//!      8    4 format_version u32 (1)
//!     12    4 keep_manifests u32: remote manifests kept (and every object they need), 1..=1000
//!     16   16 vault_id
//!     32    8 cache_limit_bytes u64: local bytes of sealed files to keep; 0: no limit
//!     40    2 url_len u16: 1..=2048
//!     42    . url: UTF-8, `s3://BUCKET[/PREFIX]` or `az://CONTAINER[/PREFIX]`
//!      .    4 crc32 (vault seed) of every byte before it
//! ```
//!
//! The local vault also keeps `remote/LATEST`: a copy of the newest remote manifest whose upload
//! was confirmed (read back and compared), which says what may be evicted and where an evicted
//! file is.

use crate::codec::{Cursor, Put, check_magic_version};
use crate::magic::{self, FormatVersion};
use crate::{DecodeError, DecodeErrorKind, VaultId};

/// Size of a remote chunk: every file is cut at multiples of it. At least the largest base
/// chunk, so a base chunk never spans two remote chunks.
pub const REMOTE_CHUNK_BYTES: u64 = 4 << 20;
/// Most files one remote manifest names.
pub const REMOTE_FILES_MAX: u32 = 1 << 25;
/// Largest file a map describes (2^47 bytes: above the largest base image).
pub const REMOTE_FILE_BYTES_MAX: u64 = 1 << 47;
/// Longest remote URL.
pub const REMOTE_URL_BYTES_MAX: usize = 2048;
/// Most remote manifests kept.
pub const KEEP_MANIFESTS_MAX: u32 = 1000;
/// The local directory of remote state, in the vault.
pub const REMOTE_DIR: &str = "remote";
/// The remote configuration, in [`REMOTE_DIR`].
pub const REMOTE_CONFIG_FILE: &str = "CONFIG";
/// The newest confirmed remote manifest, in [`REMOTE_DIR`].
pub const REMOTE_LATEST_FILE: &str = "LATEST";
/// Held (flock) by the one `sync` of a vault, in [`REMOTE_DIR`].
pub const REMOTE_LOCK_FILE: &str = "LOCK";
/// The hash a file map stores for a chunk of zeros (which is not stored).
pub const ZERO_CHUNK: [u8; 32] = [0; 32];

/// Bytes of the remote manifest before the embedded MANIFEST.
const RMN_FIXED_BYTES: usize = 64;
/// Bytes of one file entry.
const RMN_FILE_BYTES: usize = 64;
/// Bytes of the file map before the hashes.
const RFM_FIXED_BYTES: usize = 72;
/// Bytes of the configuration before the URL.
const RCF_FIXED_BYTES: usize = 42;

/// What a remote file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FileKind {
    /// A sealed journal segment; `a` is its id.
    Segment = 1,
    /// A checkpoint index; `a` is its LSN.
    Checkpoint = 2,
    /// A base image; `a` is the disk id, `b` the generation.
    Base = 3,
}

impl FileKind {
    fn from_u8(v: u8) -> Option<FileKind> {
        match v {
            1 => Some(FileKind::Segment),
            2 => Some(FileKind::Checkpoint),
            3 => Some(FileKind::Base),
            _ => None,
        }
    }
}

/// Which file: its kind and numbers, ordered as the remote manifest lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    /// What it is.
    pub kind: FileKind,
    /// Segment id, LSN or disk id.
    pub a: u64,
    /// The generation of a base image; zero otherwise.
    pub b: u64,
}

/// One file a remote manifest names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// Which file.
    pub id: FileId,
    /// Its length.
    pub file_bytes: u64,
    /// BLAKE3 of its map object.
    pub map: [u8; 32],
}

/// A remote manifest: the vault's MANIFEST and where every file it needs is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteManifest {
    /// The vault.
    pub vault_id: VaultId,
    /// Its number, from 1.
    pub seq: u64,
    /// When it was made.
    pub time_unix_ns: i64,
    /// The vault's MANIFEST, byte for byte.
    pub manifest: Vec<u8>,
    /// The files, in increasing [`FileId`] order.
    pub files: Vec<RemoteFile>,
}

/// A file's chunks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMap {
    /// The vault.
    pub vault_id: VaultId,
    /// Which file.
    pub id: FileId,
    /// Its length.
    pub file_bytes: u64,
    /// BLAKE3 of each chunk; [`ZERO_CHUNK`] for a chunk of zeros.
    pub chunks: Vec<[u8; 32]>,
}

/// A local vault's remote: where, and how much to keep locally.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteConfig {
    /// The vault.
    pub vault_id: VaultId,
    /// `s3://BUCKET[/PREFIX]` or `az://CONTAINER[/PREFIX]`.
    pub url: String,
    /// Local bytes of sealed files to keep; 0: no limit.
    pub cache_limit_bytes: u64,
    /// Remote manifests kept, with every object they need.
    pub keep_manifests: u32,
}

/// Lower-case hex of a hash.
pub fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 lower-case hex digits.
pub fn parse_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Key of the vault header.
pub const VAULT_KEY: &str = "VAULT";
/// Directory of remote manifests.
pub const MANIFESTS_DIR: &str = "manifests";
/// Directory of manifest marks (see [`mark_key`]).
pub const MARKS_DIR: &str = "marks";
/// Directory of file maps.
pub const MAPS_DIR: &str = "maps";
/// Directory of chunks.
pub const CHUNKS_DIR: &str = "chunks";

/// Key of remote manifest `seq`.
pub fn manifest_key(seq: u64) -> String {
    format!("{MANIFESTS_DIR}/{seq:016x}.rman")
}

/// The sequence number in a remote manifest's key, or `None` for any other name.
pub fn parse_manifest_key(key: &str) -> Option<u64> {
    parse_seq(key.strip_prefix("manifests/")?.strip_suffix(".rman")?)
}

/// A sequence number as keys spell it: exactly 16 lower-case hex digits, so that each number
/// has one key and listings sort in number order.
fn parse_seq(hex: &str) -> Option<u64> {
    (hex.len() == 16
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| u64::from_str_radix(hex, 16).ok())
    .flatten()
}

/// Key of the mark of remote manifest `seq`: an empty object written once the manifest is
/// confirmed and kept as long as any manifest at or below it, so that a manifest that is later
/// deleted still leaves its number behind, and a reader can tell that the newest manifest is
/// missing rather than take the one before it for the newest.
pub fn mark_key(seq: u64) -> String {
    format!("{MARKS_DIR}/{seq:016x}")
}

/// The sequence number in a manifest mark's key, or `None` for any other name.
pub fn parse_mark_key(key: &str) -> Option<u64> {
    parse_seq(key.strip_prefix("marks/")?)
}

/// Key of a file map.
pub fn map_key(hash: &[u8; 32]) -> String {
    format!("{MAPS_DIR}/{}.map", hex(hash))
}

/// The hash in a file map's key.
pub fn parse_map_key(key: &str) -> Option<[u8; 32]> {
    parse_hex(key.strip_prefix("maps/")?.strip_suffix(".map")?)
}

/// Key of a chunk.
pub fn chunk_key(hash: &[u8; 32]) -> String {
    format!("{CHUNKS_DIR}/{}", hex(hash))
}

/// The hash in a chunk's key.
pub fn parse_chunk_key(key: &str) -> Option<[u8; 32]> {
    parse_hex(key.strip_prefix("chunks/")?)
}

/// Number of chunks of a file of `file_bytes`.
pub fn chunk_count(file_bytes: u64) -> u64 {
    file_bytes.div_ceil(REMOTE_CHUNK_BYTES)
}

/// Checks the CRC in the last four bytes, after a minimum length check.
pub(crate) fn check_trailing_crc(
    c: &Cursor<'_>,
    bytes: &[u8],
    fixed: usize,
    seed: u32,
) -> Result<usize, DecodeError> {
    if bytes.len() < fixed + 4 {
        return Err(c.error_at(
            DecodeErrorKind::Truncated,
            bytes.len(),
            format!("at least {} bytes", fixed + 4),
        ));
    }
    let body = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[body..].try_into().expect("four bytes"));
    let actual = crate::crc32_seeded(seed, &[&bytes[..body]]);
    if stored != actual {
        return Err(c.error_at(
            DecodeErrorKind::Checksum,
            body,
            format!("stored checksum {stored:#010x}, bytes hash to {actual:#010x}"),
        ));
    }
    Ok(body)
}

pub(crate) fn seal(mut out: Vec<u8>, seed: u32) -> Vec<u8> {
    let crc = crate::crc32_seeded(seed, &[&out]);
    Put::new(&mut out).u32(crc);
    out
}

fn decode_id(c: &mut Cursor<'_>, at: usize) -> Result<FileId, DecodeError> {
    let raw = c.u8()?;
    let kind = FileKind::from_u8(raw).ok_or_else(|| {
        c.error_at(
            DecodeErrorKind::BadField,
            at,
            format!("unknown file kind {raw}"),
        )
    })?;
    c.zeros(7)?;
    let (a, b) = (c.u64()?, c.u64()?);
    if kind != FileKind::Base && b != 0 {
        return Err(c.error_at(
            DecodeErrorKind::BadField,
            at + 16,
            "only a base image has a second number",
        ));
    }
    Ok(FileId { kind, a, b })
}

fn put_id(p: &mut Put<'_>, id: &FileId) {
    p.u8(id.kind as u8).zeros(7).u64(id.a).u64(id.b);
}

impl RemoteManifest {
    /// Encodes the whole object. Panics on files out of order: callers sort.
    pub fn encode(&self, seed: u32) -> Vec<u8> {
        assert!(
            self.files.windows(2).all(|w| w[0].id < w[1].id),
            "remote manifest files must be in increasing order"
        );
        let mut out =
            Vec::with_capacity(RMN_FIXED_BYTES + self.manifest.len() + 64 * self.files.len() + 4);
        let mut p = Put::new(&mut out);
        p.bytes(&magic::REMOTE_MANIFEST)
            .u32(FormatVersion::CURRENT.as_u32())
            .u32(0)
            .bytes(&self.vault_id)
            .u64(self.seq)
            .i64(self.time_unix_ns)
            .u64(self.manifest.len() as u64)
            .u32(self.files.len() as u32)
            .u32(0)
            .bytes(&self.manifest);
        for f in &self.files {
            put_id(&mut p, &f.id);
            p.u64(f.file_bytes).bytes(&f.map);
        }
        seal(out, seed)
    }

    /// Decodes and validates a whole remote manifest (not the embedded MANIFEST, which has a
    /// decoder of its own).
    pub fn decode(bytes: &[u8], seed: u32) -> Result<RemoteManifest, DecodeError> {
        let mut c = Cursor::new(bytes, "remote manifest");
        check_magic_version(&mut c, magic::REMOTE_MANIFEST, "remote manifest")?;
        let body = check_trailing_crc(&c, bytes, RMN_FIXED_BYTES, seed)?;
        c.zeros(4)?;
        let vault_id = c.array()?;
        let seq = c.u64()?;
        let time_unix_ns = c.i64()?;
        let manifest_bytes = c.u64()?;
        let file_count = c.u32()?;
        c.zeros(4)?;
        if seq == 0 {
            return Err(c.error_at(DecodeErrorKind::BadField, 32, "sequence number 0"));
        }
        if file_count > REMOTE_FILES_MAX {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                56,
                format!("{file_count} files, more than {REMOTE_FILES_MAX}"),
            ));
        }
        let expected = (RMN_FIXED_BYTES as u64)
            .checked_add(manifest_bytes)
            .and_then(|n| n.checked_add(RMN_FILE_BYTES as u64 * u64::from(file_count)));
        if manifest_bytes > crate::limits::MANIFEST_BYTES_MAX || expected != Some(body as u64) {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                48,
                format!(
                    "a manifest of {manifest_bytes} bytes and {file_count} files do not fill the \
                     {body} bytes before the checksum"
                ),
            ));
        }
        let manifest = c.take(manifest_bytes as usize)?.to_vec();
        let mut files: Vec<RemoteFile> = Vec::with_capacity(file_count as usize);
        for _ in 0..file_count {
            let at = c.position();
            let id = decode_id(&mut c, at)?;
            let file_bytes = c.u64()?;
            let map = c.array()?;
            if file_bytes > REMOTE_FILE_BYTES_MAX {
                return Err(c.error_at(
                    DecodeErrorKind::BadField,
                    at + 24,
                    format!("file of {file_bytes} bytes"),
                ));
            }
            if files.last().is_some_and(|last| last.id >= id) {
                return Err(c.error_at(
                    DecodeErrorKind::BadField,
                    at,
                    "files are not in increasing order",
                ));
            }
            files.push(RemoteFile {
                id,
                file_bytes,
                map,
            });
        }
        Ok(RemoteManifest {
            vault_id,
            seq,
            time_unix_ns,
            manifest,
            files,
        })
    }

    /// The entry of file `id`.
    pub fn file(&self, id: &FileId) -> Option<&RemoteFile> {
        self.files
            .binary_search_by(|f| f.id.cmp(id))
            .ok()
            .map(|i| &self.files[i])
    }
}

impl FileMap {
    /// Encodes the whole object. Panics when the chunk count does not match the length.
    pub fn encode(&self, seed: u32) -> Vec<u8> {
        assert_eq!(self.chunks.len() as u64, chunk_count(self.file_bytes));
        let mut out = Vec::with_capacity(RFM_FIXED_BYTES + 32 * self.chunks.len() + 4);
        let mut p = Put::new(&mut out);
        p.bytes(&magic::REMOTE_FILE_MAP)
            .u32(FormatVersion::CURRENT.as_u32())
            .u32(REMOTE_CHUNK_BYTES as u32)
            .bytes(&self.vault_id);
        put_id(&mut p, &self.id);
        p.u64(self.file_bytes).u64(self.chunks.len() as u64);
        for h in &self.chunks {
            p.bytes(h);
        }
        seal(out, seed)
    }

    /// Decodes and validates a whole file map.
    pub fn decode(bytes: &[u8], seed: u32) -> Result<FileMap, DecodeError> {
        let mut c = Cursor::new(bytes, "file map");
        check_magic_version(&mut c, magic::REMOTE_FILE_MAP, "file map")?;
        let body = check_trailing_crc(&c, bytes, RFM_FIXED_BYTES, seed)?;
        let chunk_bytes = c.u32()?;
        if u64::from(chunk_bytes) != REMOTE_CHUNK_BYTES {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                12,
                format!("chunk size {chunk_bytes}, expected {REMOTE_CHUNK_BYTES}"),
            ));
        }
        let vault_id = c.array()?;
        let id = decode_id(&mut c, 32)?;
        let file_bytes = c.u64()?;
        let count = c.u64()?;
        if file_bytes > REMOTE_FILE_BYTES_MAX
            || count != chunk_count(file_bytes)
            || (RFM_FIXED_BYTES as u64).checked_add(count.saturating_mul(32)) != Some(body as u64)
        {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                56,
                format!(
                    "a file of {file_bytes} bytes in {count} chunks does not fill the {body} \
                     bytes before the checksum"
                ),
            ));
        }
        let mut chunks = Vec::with_capacity(count as usize);
        for _ in 0..count {
            chunks.push(c.array()?);
        }
        Ok(FileMap {
            vault_id,
            id,
            file_bytes,
            chunks,
        })
    }

    /// The byte range of the file chunk `k` holds.
    pub fn chunk_range(&self, k: usize) -> (u64, u64) {
        let start = k as u64 * REMOTE_CHUNK_BYTES;
        (start, (start + REMOTE_CHUNK_BYTES).min(self.file_bytes))
    }
}

/// Whether `url` names a remote replog understands: `s3://BUCKET[/PREFIX]` or
/// `az://CONTAINER[/PREFIX]` with a non-empty bucket or container. Says nothing of its length:
/// [`parse_remote_url`] checks everything.
pub fn is_remote_url(url: &str) -> bool {
    ["s3://", "az://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
    })
}

/// Whether `s` looks like a URL of some scheme (`gs://b`, `s3:/x`, `https://...`) rather than a
/// directory: a scheme of letters, digits, `+`, `-` or `.`, starting with a letter, then `:/`.
pub fn looks_like_url(s: &str) -> bool {
    s.split_once(":/").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}

/// A remote URL taken apart: `s3://BUCKET/PRE/FIX` is (`s3`, `BUCKET`, `PRE/FIX`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteUrl<'a> {
    /// `s3` or `az`.
    pub scheme: &'a str,
    /// The bucket or container.
    pub bucket: &'a str,
    /// The prefix, without leading or trailing slashes; may be empty.
    pub prefix: &'a str,
}

/// Why a remote URL cannot be used: a small `Copy` enum callers match, each case with what it
/// found. Its message says what to give instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Longer than [`REMOTE_URL_BYTES_MAX`] bytes (the remote configuration's limit).
    TooLong {
        /// Its length.
        bytes: usize,
    },
    /// Not `s3://BUCKET[/PREFIX]` or `az://CONTAINER[/PREFIX]`.
    Unsupported,
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlError::TooLong { bytes } => write!(
                f,
                "it is {bytes} bytes long, and a remote URL is at most {REMOTE_URL_BYTES_MAX}"
            ),
            UrlError::Unsupported => {
                f.write_str("give s3://BUCKET[/PREFIX] or az://CONTAINER[/PREFIX]")
            }
        }
    }
}

impl std::error::Error for UrlError {}

/// Checks every limit a remote URL must meet (scheme, bucket, length) and takes it apart. A URL
/// that passes can be stored in a [`RemoteConfig`].
pub fn parse_remote_url(url: &str) -> Result<RemoteUrl<'_>, UrlError> {
    if url.len() > REMOTE_URL_BYTES_MAX {
        return Err(UrlError::TooLong { bytes: url.len() });
    }
    if !is_remote_url(url) {
        return Err(UrlError::Unsupported);
    }
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::Unsupported)?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    Ok(RemoteUrl {
        scheme,
        bucket,
        prefix: prefix.trim_matches('/'),
    })
}

impl RemoteConfig {
    /// Encodes the whole file. Panics on a URL outside the limits: callers check it first with
    /// [`parse_remote_url`], before anything is written anywhere.
    pub fn encode(&self, seed: u32) -> Vec<u8> {
        assert!((1..=REMOTE_URL_BYTES_MAX).contains(&self.url.len()));
        let mut out = Vec::with_capacity(RCF_FIXED_BYTES + self.url.len() + 4);
        Put::new(&mut out)
            .bytes(&magic::REMOTE_CONFIG)
            .u32(FormatVersion::CURRENT.as_u32())
            .u32(self.keep_manifests)
            .bytes(&self.vault_id)
            .u64(self.cache_limit_bytes)
            .u16(self.url.len() as u16)
            .bytes(self.url.as_bytes());
        seal(out, seed)
    }

    /// Decodes and validates a whole configuration file.
    pub fn decode(bytes: &[u8], seed: u32) -> Result<RemoteConfig, DecodeError> {
        let mut c = Cursor::new(bytes, "remote configuration");
        check_magic_version(&mut c, magic::REMOTE_CONFIG, "remote configuration")?;
        let body = check_trailing_crc(&c, bytes, RCF_FIXED_BYTES, seed)?;
        let keep_manifests = c.u32()?;
        if !(1..=KEEP_MANIFESTS_MAX).contains(&keep_manifests) {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                12,
                format!("keep {keep_manifests} manifests: 1 to {KEEP_MANIFESTS_MAX}"),
            ));
        }
        let vault_id = c.array()?;
        let cache_limit_bytes = c.u64()?;
        let url_len = c.u16()? as usize;
        if !(1..=REMOTE_URL_BYTES_MAX).contains(&url_len) || RCF_FIXED_BYTES + url_len != body {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                40,
                format!("a URL of {url_len} bytes does not fill the file"),
            ));
        }
        let url = std::str::from_utf8(c.take(url_len)?)
            .ok()
            .filter(|u| is_remote_url(u))
            .ok_or_else(|| {
                c.error_at(
                    DecodeErrorKind::BadField,
                    RCF_FIXED_BYTES,
                    "the URL is not s3://BUCKET[/PREFIX] or az://CONTAINER[/PREFIX]",
                )
            })?
            .to_owned();
        Ok(RemoteConfig {
            vault_id,
            url,
            cache_limit_bytes,
            keep_manifests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: u32 = 0x1234_5678;

    fn manifest() -> RemoteManifest {
        RemoteManifest {
            vault_id: [7; 16],
            seq: 3,
            time_unix_ns: 1_700_000_000_000_000_000,
            manifest: b"embedded manifest bytes".to_vec(),
            files: vec![
                RemoteFile {
                    id: FileId {
                        kind: FileKind::Segment,
                        a: 1,
                        b: 0,
                    },
                    file_bytes: 5 << 20,
                    map: [1; 32],
                },
                RemoteFile {
                    id: FileId {
                        kind: FileKind::Base,
                        a: 1,
                        b: 2,
                    },
                    file_bytes: 4096 * 3,
                    map: [2; 32],
                },
            ],
        }
    }

    #[test]
    fn a_remote_manifest_round_trips_and_every_flipped_byte_is_caught() {
        let m = manifest();
        let bytes = m.encode(SEED);
        assert_eq!(RemoteManifest::decode(&bytes, SEED).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(RemoteManifest::decode(&bad, SEED).is_err(), "byte {i}");
        }
        for len in 0..bytes.len() {
            assert!(RemoteManifest::decode(&bytes[..len], SEED).is_err());
        }
        assert_eq!(
            RemoteManifest::decode(&bytes, SEED ^ 1).unwrap_err().kind,
            DecodeErrorKind::Checksum
        );
    }

    #[test]
    fn a_file_map_round_trips_and_rejects_a_count_that_does_not_fit() {
        let m = FileMap {
            vault_id: [9; 16],
            id: FileId {
                kind: FileKind::Checkpoint,
                a: 77,
                b: 0,
            },
            file_bytes: REMOTE_CHUNK_BYTES + 1,
            chunks: vec![[3; 32], ZERO_CHUNK],
        };
        let bytes = m.encode(SEED);
        assert_eq!(FileMap::decode(&bytes, SEED).unwrap(), m);
        assert_eq!(
            m.chunk_range(1),
            (REMOTE_CHUNK_BYTES, REMOTE_CHUNK_BYTES + 1)
        );
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(FileMap::decode(&bad, SEED).is_err(), "byte {i}");
        }
    }

    #[test]
    fn a_config_round_trips_and_refuses_a_url_of_another_scheme() {
        let c = RemoteConfig {
            vault_id: [5; 16],
            url: "s3://bucket/prefix".into(),
            cache_limit_bytes: 1 << 30,
            keep_manifests: 2,
        };
        let bytes = c.encode(SEED);
        assert_eq!(RemoteConfig::decode(&bytes, SEED).unwrap(), c);
        let other = RemoteConfig {
            url: "s3://bucket/prefi".into(),
            ..c.clone()
        };
        let mut bad = other.encode(SEED);
        let at = RCF_FIXED_BYTES;
        bad[at..at + 5].copy_from_slice(b"gs://");
        let len = bad.len() - 4;
        let crc = crate::crc32_seeded(SEED, &[&bad[..len]]);
        bad[len..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            RemoteConfig::decode(&bad, SEED).unwrap_err().kind,
            DecodeErrorKind::BadField
        );
    }

    #[test]
    fn keys_parse_back_and_nothing_else_does() {
        let h = [0xab; 32];
        assert_eq!(parse_chunk_key(&chunk_key(&h)), Some(h));
        assert_eq!(parse_map_key(&map_key(&h)), Some(h));
        assert_eq!(parse_manifest_key(&manifest_key(26)), Some(26));
        assert_eq!(parse_manifest_key("manifests/1a.rman"), None);
        assert_eq!(parse_mark_key(&mark_key(26)), Some(26));
        assert_eq!(parse_manifest_key(&mark_key(26)), None);
        assert_eq!(parse_mark_key(&manifest_key(26)), None);
        assert_eq!(parse_chunk_key("chunks/AB"), None);
        assert!(is_remote_url("s3://b/p") && is_remote_url("az://c"));
        assert!(!is_remote_url("s3://") && !is_remote_url("/tmp/v") && !is_remote_url("gs://b"));
    }

    #[test]
    fn remote_urls_are_checked_for_scheme_and_length() {
        assert_eq!(
            parse_remote_url("s3://b/p/q/"),
            Ok(RemoteUrl {
                scheme: "s3",
                bucket: "b",
                prefix: "p/q"
            })
        );
        let long = format!("s3://b/p{}", "/".repeat(2100));
        assert_eq!(
            parse_remote_url(&long),
            Err(UrlError::TooLong { bytes: long.len() })
        );
        let longest = format!("az://c/{}", "p".repeat(REMOTE_URL_BYTES_MAX - 7));
        assert!(parse_remote_url(&longest).is_ok());
        for bad in ["gs://b", "s3:/x", "s3://", "s3:///p", "b/p"] {
            assert_eq!(parse_remote_url(bad), Err(UrlError::Unsupported), "{bad}");
        }
        assert!(looks_like_url("gs://b") && looks_like_url("s3:/x"));
        assert!(!looks_like_url("/srv/vault") && !looks_like_url("./a:/b") && !looks_like_url("v"));
    }
}
