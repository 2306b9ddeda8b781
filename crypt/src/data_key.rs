//! The data key of a vault and the subkeys derived from it.
//!
//! The data key is 32 random bytes drawn once when encryption is turned on; it never changes
//! (rotation re-wraps it in a new key slot, the data is never rewritten) and is never stored
//! in plaintext. Everything that is sealed or keyed uses a subkey derived with
//! `blake3::derive_key` under a fixed context string, so that no two uses share a key:
//!
//! | subkey | context string | used for |
//! |---|---|---|
//! | fingerprint | `replog 2026 data key fingerprint` | first 16 bytes name the key in plaintext (key slot file, `Debug`) |
//! | [`RecordKey`] | `replog 2026 record key` | XChaCha20-Poly1305 key of journal records, base chunks, checkpoints, manifests ([`crate::Sealer`]) |
//! | [`NameKey`] | `replog 2026 remote chunk name key` | keyed BLAKE3 of a chunk's plaintext, its name in the remote store |
//! | [`ChainKey`] | `replog 2026 point chain key` | keyed BLAKE3 of the point hash chain |
//!
//! The context strings are part of the format: changing one makes every vault unreadable.
//!
//! This module owns the key bytes and their derivations. It must not know where a key comes
//! from (key slots) or how sealed bytes are laid out (the writer's formats).

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::random::os_random;

/// Length of the data key and of every subkey.
pub const KEY_BYTES: usize = 32;
/// Length of a key fingerprint: enough to tell keys apart, never enough to guess one.
pub const FINGERPRINT_BYTES: usize = 16;

const FINGERPRINT_CONTEXT: &str = "replog 2026 data key fingerprint";
const RECORD_KEY_CONTEXT: &str = "replog 2026 record key";
const NAME_KEY_CONTEXT: &str = "replog 2026 remote chunk name key";
const CHAIN_KEY_CONTEXT: &str = "replog 2026 point chain key";

/// The first [`FINGERPRINT_BYTES`] of `blake3::derive_key(context, material)`.
pub(crate) fn fingerprint_of(context: &str, material: &[u8]) -> [u8; FINGERPRINT_BYTES] {
    let derived = Zeroizing::new(blake3::derive_key(context, material));
    let mut fingerprint = [0u8; FINGERPRINT_BYTES];
    fingerprint.copy_from_slice(&derived[..FINGERPRINT_BYTES]);
    fingerprint
}

/// Lower-case hex of `bytes`, for fingerprints (never for secrets).
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// A vault's data key: 32 random bytes, wiped from memory when dropped. `Debug` shows only its
/// fingerprint.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey {
    bytes: [u8; KEY_BYTES],
}

impl DataKey {
    /// A new data key from the operating system's random source.
    pub fn generate() -> DataKey {
        DataKey { bytes: os_random() }
    }

    /// The key whose bytes were unwrapped from a key slot. Crate-private: a data key is either
    /// generated or unwrapped, never typed in.
    pub(crate) fn from_bytes(bytes: [u8; KEY_BYTES]) -> DataKey {
        DataKey { bytes }
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.bytes
    }

    /// The key's public name: the first 16 bytes of
    /// `blake3::derive_key("replog 2026 data key fingerprint", key)`.
    pub fn fingerprint(&self) -> [u8; FINGERPRINT_BYTES] {
        fingerprint_of(FINGERPRINT_CONTEXT, &self.bytes)
    }

    /// The AEAD key of journal records, base chunks, checkpoints and manifests.
    pub fn record_key(&self) -> RecordKey {
        RecordKey(blake3::derive_key(RECORD_KEY_CONTEXT, &self.bytes))
    }

    /// The key of remote chunk names.
    pub fn name_key(&self) -> NameKey {
        NameKey(blake3::derive_key(NAME_KEY_CONTEXT, &self.bytes))
    }

    /// The key of the point hash chain.
    pub fn chain_key(&self) -> ChainKey {
        ChainKey(blake3::derive_key(CHAIN_KEY_CONTEXT, &self.bytes))
    }

    /// The remote name of a chunk with this `plaintext`: equal plaintexts under one data key
    /// share a name (deduplication), and nothing about the plaintext can be learnt from it
    /// without the key. Shorthand for `self.name_key().chunk_name(plaintext)`.
    pub fn chunk_name(&self, plaintext: &[u8]) -> [u8; 32] {
        self.name_key().chunk_name(plaintext)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("fingerprint", &hex(&self.fingerprint()))
            .finish_non_exhaustive()
    }
}

/// The XChaCha20-Poly1305 key derived from a [`DataKey`]; see [`crate::Sealer`].
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RecordKey([u8; KEY_BYTES]);

impl RecordKey {
    pub(crate) fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

/// The keyed-BLAKE3 key of remote chunk names.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct NameKey([u8; KEY_BYTES]);

impl NameKey {
    /// `blake3::keyed_hash(name key, plaintext)`.
    pub fn chunk_name(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.0, plaintext).as_bytes()
    }
}

/// The keyed-BLAKE3 key of the point hash chain.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ChainKey([u8; KEY_BYTES]);

impl ChainKey {
    /// Keyed BLAKE3 of `parts` in order (a link of the chain: the previous link and the point).
    pub fn hash(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        for part in parts {
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }
}

macro_rules! redacted_debug {
    ($($name:ident),*) => {$(
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    )*};
}
redacted_debug!(RecordKey, NameKey, ChainKey);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_are_equal_for_equal_plaintext_under_one_key() {
        let key = DataKey::generate();
        assert_eq!(key.chunk_name(b"chunk"), key.chunk_name(b"chunk"));
        assert_ne!(key.chunk_name(b"chunk"), key.chunk_name(b"chunk2"));
    }

    #[test]
    fn chunk_names_differ_between_data_keys() {
        let (a, b) = (DataKey::generate(), DataKey::generate());
        assert_ne!(a.chunk_name(b"chunk"), b.chunk_name(b"chunk"));
    }

    #[test]
    fn subkeys_differ_from_each_other_and_from_the_data_key() {
        let key = DataKey::generate();
        let record = *key.record_key().as_bytes();
        let name = key.name_key().0;
        let chain = key.chain_key().0;
        let all = [*key.as_bytes(), record, name, chain];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j], "subkeys {i} and {j} are equal");
            }
        }
        assert_ne!(
            key.name_key().chunk_name(b"x"),
            key.chain_key().hash(&[b"x"])
        );
    }

    #[test]
    fn fingerprint_is_the_documented_derivation() {
        let key = DataKey::from_bytes([7; KEY_BYTES]);
        let full = blake3::derive_key("replog 2026 data key fingerprint", &[7; KEY_BYTES]);
        assert_eq!(key.fingerprint()[..], full[..16]);
        let chunk = blake3::keyed_hash(
            &blake3::derive_key("replog 2026 remote chunk name key", &[7; KEY_BYTES]),
            b"p",
        );
        assert_eq!(&key.chunk_name(b"p"), chunk.as_bytes());
    }

    #[test]
    fn debug_shows_the_fingerprint_and_never_the_key_bytes() {
        let key = DataKey::generate();
        let debug = format!("{key:?} {:?} {:?}", key.record_key(), key.name_key());
        assert!(debug.contains(&hex(&key.fingerprint())));
        assert!(!debug.contains(&hex(key.as_bytes())));
        assert!(!debug.contains(&hex(key.record_key().as_bytes())));
        // Not even a 4-byte piece of the key shows.
        for window in key.as_bytes().windows(4) {
            assert!(!debug.contains(&hex(window)), "{debug}");
        }
    }
}
