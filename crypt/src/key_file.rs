//! Key files: a secret a user keeps in a file, which opens a key-file slot of a vault.
//!
//! ## Layout (64 bytes, integers little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RPLG-KEY` |
//! | 8 | 4 | version, u32 = 1 |
//! | 12 | 4 | reserved, u32 = 0 |
//! | 16 | 32 | secret: 32 bytes from the OS random source |
//! | 48 | 16 | check: first 16 bytes of `blake3::derive_key("replog 2026 key file check", secret)` |
//!
//! The check field tells a damaged key file from a wrong one: a flipped secret byte is refused
//! at load, naming the file, rather than failing later as "no slot opens with this key".
//!
//! Derived from the secret (each under its own `blake3::derive_key` context):
//!
//! | context | use |
//! |---|---|
//! | `replog 2026 key file check` | the check field above |
//! | `replog 2026 key fingerprint` | first 16 bytes: the key file's fingerprint, stored in plaintext in its slot |
//! | `replog 2026 key file wrap` | the 32-byte key that wraps the data key in the slot |
//!
//! The file is created with mode 0600 and never overwritten; it is read only when it is a
//! regular file, not a symbolic link, readable by its owner only and owned by this user or
//! root (see `secret_file`).
//!
//! This module owns the key file's bytes and checks. It must not know vaults or slots beyond
//! handing out the wrapping key.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::data_key::{FINGERPRINT_BYTES, KEY_BYTES, fingerprint_of, hex};
use crate::error::{CryptError, CryptErrorKind, Result};
use crate::random::os_random;
use crate::secret_file::{create_secret_file, read_secret_file};

/// Magic of a key file.
pub const KEY_FILE_MAGIC: [u8; 8] = *b"RPLG-KEY";
/// The key file version this code writes and reads.
pub const KEY_FILE_VERSION: u32 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + KEY_FILE_MAGIC.len();
const RESERVED_OFFSET: usize = VERSION_OFFSET + 4;
const SECRET_OFFSET: usize = RESERVED_OFFSET + 4;
const CHECK_OFFSET: usize = SECRET_OFFSET + KEY_BYTES;
const CHECK_BYTES: usize = 16;
/// Size of a key file.
pub const KEY_FILE_BYTES: usize = CHECK_OFFSET + CHECK_BYTES;
const _: () = assert!(KEY_FILE_BYTES == 64);

const CHECK_CONTEXT: &str = "replog 2026 key file check";
const FINGERPRINT_CONTEXT: &str = "replog 2026 key fingerprint";
const WRAP_CONTEXT: &str = "replog 2026 key file wrap";

/// The environment variable naming a key file when no path is given.
pub const KEY_FILE_ENV: &str = "REPLOG_KEY_FILE";

/// A loaded key file: its secret (wiped on drop) and where it came from. `Debug` shows the
/// path and fingerprint only.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct KeyFile {
    secret: [u8; KEY_BYTES],
    #[zeroize(skip)]
    path: PathBuf,
}

impl fmt::Debug for KeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFile")
            .field("path", &self.path)
            .field("fingerprint", &hex(&self.fingerprint()))
            .finish_non_exhaustive()
    }
}

impl KeyFile {
    /// Creates a new key file at `path` (mode 0600, synced, its directory synced) with a fresh
    /// secret. Refuses, with an [`CryptErrorKind::Exists`] error naming the path, if anything
    /// exists there.
    pub fn generate(path: &Path) -> Result<KeyFile> {
        let key_file = KeyFile {
            secret: os_random(),
            path: path.to_path_buf(),
        };
        let bytes = Zeroizing::new(key_file.encode());
        create_secret_file(path, "key file", &bytes[..])?;
        Ok(key_file)
    }

    /// Loads the key file at `path`, refusing a symbolic link, a file others can read, a file
    /// another user owns, a file of the wrong length and a damaged file.
    pub fn load(path: &Path) -> Result<KeyFile> {
        let bytes = read_secret_file(path, "key file", KEY_FILE_BYTES)?;
        KeyFile::decode(&bytes, path)
    }

    /// The key file at `path` if given, else the one `REPLOG_KEY_FILE` names, else a
    /// [`CryptErrorKind::NoKey`] error saying how to give one.
    pub fn from_env_or(path: Option<&Path>) -> Result<KeyFile> {
        KeyFile::load(&choose_path(path, std::env::var_os(KEY_FILE_ENV))?)
    }

    /// Where the key file was loaded from or created.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key file's public name: first 16 bytes of
    /// `blake3::derive_key("replog 2026 key fingerprint", secret)`.
    pub fn fingerprint(&self) -> [u8; FINGERPRINT_BYTES] {
        fingerprint_of(FINGERPRINT_CONTEXT, &self.secret)
    }

    /// The key that wraps the data key in this key file's slot.
    pub(crate) fn wrapping_key(&self) -> Zeroizing<[u8; KEY_BYTES]> {
        Zeroizing::new(blake3::derive_key(WRAP_CONTEXT, &self.secret))
    }

    fn check(secret: &[u8; KEY_BYTES]) -> [u8; CHECK_BYTES] {
        fingerprint_of(CHECK_CONTEXT, secret)
    }

    fn encode(&self) -> [u8; KEY_FILE_BYTES] {
        let mut bytes = [0u8; KEY_FILE_BYTES];
        bytes[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&KEY_FILE_MAGIC);
        bytes[VERSION_OFFSET..RESERVED_OFFSET].copy_from_slice(&KEY_FILE_VERSION.to_le_bytes());
        bytes[SECRET_OFFSET..CHECK_OFFSET].copy_from_slice(&self.secret);
        bytes[CHECK_OFFSET..].copy_from_slice(&KeyFile::check(&self.secret));
        bytes
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<KeyFile> {
        let damaged = |offset: usize, context: String| {
            Err(CryptError::new(CryptErrorKind::KeyFileDamaged, context)
                .in_file(path)
                .at(offset as u64))
        };
        if bytes.len() < KEY_FILE_BYTES {
            return Err(CryptError::new(
                CryptErrorKind::Truncated,
                format!(
                    "truncated key file {}: {} of {KEY_FILE_BYTES} bytes",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        if bytes.len() > KEY_FILE_BYTES {
            return Err(CryptError::new(
                CryptErrorKind::KeyFileDamaged,
                format!(
                    "key file {} is longer than {KEY_FILE_BYTES} bytes ({} or more); a key file \
                     is exactly {KEY_FILE_BYTES} bytes",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        if bytes[MAGIC_OFFSET..VERSION_OFFSET] != KEY_FILE_MAGIC {
            return damaged(
                MAGIC_OFFSET,
                "not a replog key file: it does not start with `RPLG-KEY`".into(),
            );
        }
        let version = read_u32(bytes, VERSION_OFFSET);
        if version != KEY_FILE_VERSION {
            return Err(CryptError::new(
                CryptErrorKind::Unsupported,
                format!("key file version {version}; this replog reads version {KEY_FILE_VERSION}"),
            )
            .in_file(path)
            .at(VERSION_OFFSET as u64));
        }
        let reserved = read_u32(bytes, RESERVED_OFFSET);
        if reserved != 0 {
            return damaged(
                RESERVED_OFFSET,
                format!("reserved field holds {reserved:#x}, expected 0"),
            );
        }
        let mut secret = Zeroizing::new([0u8; KEY_BYTES]);
        secret.copy_from_slice(&bytes[SECRET_OFFSET..CHECK_OFFSET]);
        if bytes[CHECK_OFFSET..] != KeyFile::check(&secret) {
            return damaged(
                CHECK_OFFSET,
                "the check field does not match the secret: the key file is damaged (restore it \
                 from its backup)"
                    .into(),
            );
        }
        Ok(KeyFile {
            secret: *secret,
            path: path.to_path_buf(),
        })
    }
}

fn read_u32(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"))
}

/// The path given, else the environment's (`env` is `REPLOG_KEY_FILE`'s value), else `NoKey`.
fn choose_path(given: Option<&Path>, env: Option<OsString>) -> Result<PathBuf> {
    match (given, env) {
        (Some(path), _) => Ok(path.to_path_buf()),
        (None, Some(path)) if !path.is_empty() => Ok(PathBuf::from(path)),
        (None, _) => Err(CryptError::new(
            CryptErrorKind::NoKey,
            format!(
                "no key file given: pass `--key-file PATH` or set {KEY_FILE_ENV}=PATH (create one \
                 with `replog key generate PATH`)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_path_wins_over_the_environment() {
        let chosen = choose_path(Some(Path::new("a")), Some("b".into())).unwrap();
        assert_eq!(chosen, Path::new("a"));
        let chosen = choose_path(None, Some("b".into())).unwrap();
        assert_eq!(chosen, Path::new("b"));
    }

    #[test]
    fn no_path_and_no_environment_is_no_key_and_says_how_to_give_one() {
        for env in [None, Some(OsString::new())] {
            let error = choose_path(None, env).unwrap_err();
            assert_eq!(error.kind(), CryptErrorKind::NoKey);
            let message = error.to_string();
            assert!(message.contains("--key-file") && message.contains(KEY_FILE_ENV));
        }
    }

    #[test]
    fn encoded_key_file_decodes_to_the_same_secret() {
        let key = KeyFile {
            secret: [5; KEY_BYTES],
            path: "k".into(),
        };
        let bytes = key.encode();
        assert_eq!(&bytes[..8], b"RPLG-KEY");
        assert_eq!(bytes[8..12], 1u32.to_le_bytes());
        let back = KeyFile::decode(&bytes, Path::new("k")).unwrap();
        assert_eq!(back.secret, key.secret);
    }

    #[test]
    fn each_header_field_is_checked_and_named_by_offset() {
        let key = KeyFile {
            secret: [5; KEY_BYTES],
            path: "k".into(),
        };
        // (flipped byte, kind, offset the error names): a damaged secret or check field is
        // found by the check, so both name the check field.
        for (flipped, kind, named) in [
            (0, CryptErrorKind::KeyFileDamaged, MAGIC_OFFSET),
            (8, CryptErrorKind::Unsupported, VERSION_OFFSET),
            (12, CryptErrorKind::KeyFileDamaged, RESERVED_OFFSET),
            (16, CryptErrorKind::KeyFileDamaged, CHECK_OFFSET),
            (63, CryptErrorKind::KeyFileDamaged, CHECK_OFFSET),
        ] {
            let mut bytes = key.encode();
            bytes[flipped] ^= 0x10;
            let error = KeyFile::decode(&bytes, Path::new("k")).unwrap_err();
            assert_eq!(error.kind(), kind, "byte {flipped}: {error}");
            assert_eq!(
                error.offset(),
                Some(named as u64),
                "byte {flipped}: {error}"
            );
        }
    }
}
