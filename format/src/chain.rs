//! The journal's hash chain: every write, zero, resize and point record, in LSN order, is
//! hashed into a chain of values, so a recovery point commits to every record before it and to
//! the point before it.
//!
//! ```text
//! key      = ChainKey: public (derived from the vault id) or secret (from the data key)
//! genesis  = BLAKE3-keyed(key, "replog journal genesis")
//! link     = BLAKE3-keyed(key, v || the bytes of the records that follow, as stored)
//! ```
//!
//! A *link* starts from a value `v`: at the start of every segment (`v` is the segment
//! header's `chain_start`; genesis for segment 1) and after every point (`v` is the point's
//! chain hash). It hashes the records that follow as they are stored, header (CRC included)
//! and payload, back to back, and ends at the next point, whose chain hash is its result, or at
//! the segment's end, whose result is the next segment's `chain_start`. Footer records and
//! trailers are not hashed: a footer is an index derived from the records and checked against
//! them. A record names its LSN, segment and offset, and its CRC is seeded by the vault, so the
//! same bytes at another place, from another vault or from an older copy change every later
//! value. Hashing runs as one stream per link, so the writer hashes whole staging buffers at
//! once.
//!
//! With a public key the chain proves, against an anchor kept elsewhere (a chain hash written
//! down), that the history up to it is the one that was written: changing any record changes
//! every later value. It does not stop someone who rewrites the whole journal and every later
//! point, and whose result nobody compared with an anchor; a secret key (an encrypted vault)
//! does, since nobody without the key can compute a value.

use crate::VaultId;

/// Bytes of a chain value.
pub const CHAIN_HASH_BYTES: usize = 32;

/// One value of the chain.
pub type ChainHash = [u8; CHAIN_HASH_BYTES];

const PUBLIC_CONTEXT: &str = "replog 2026-12 journal chain, public key";
const GENESIS: &[u8] = b"replog journal genesis";

/// The key of a vault's chain.
#[derive(Clone)]
pub struct ChainKey {
    key: [u8; 32],
}

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    /// The key of an unencrypted vault: derived from its id, so anyone can compute the chain.
    pub fn public(vault_id: &VaultId) -> ChainKey {
        ChainKey {
            key: blake3::derive_key(PUBLIC_CONTEXT, vault_id),
        }
    }

    /// A secret key (derived from an encrypted vault's data key).
    pub fn secret(key: [u8; 32]) -> ChainKey {
        ChainKey { key }
    }

    /// The value before the vault's first record: segment 1's `chain_start`.
    pub fn genesis(&self) -> ChainHash {
        *blake3::keyed_hash(&self.key, GENESIS).as_bytes()
    }

    /// A link starting from `value`.
    pub fn link(&self, value: &ChainHash) -> Link {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(value);
        Link { hasher }
    }
}

/// One link of the chain being hashed: give it the bytes of the records that follow its start,
/// in order, as stored; its value is the chain hash at its end.
#[derive(Clone)]
pub struct Link {
    hasher: blake3::Hasher,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Link(..)")
    }
}

impl Link {
    /// Hashes `bytes`: whole records or parts of them, in order.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Hashes `bytes` as [`Link::update`] does, on every core of the rayon pool: for long
    /// inputs (a staging buffer), where it is faster.
    #[cfg(feature = "rayon")]
    pub fn update_parallel(&mut self, bytes: &[u8]) {
        self.hasher.update_rayon(bytes);
    }

    /// Hashes one record: its header as stored (64 bytes) and its payload.
    pub fn record(&mut self, header: &[u8], payload: &[u8]) {
        self.hasher.update(header);
        self.hasher.update(payload);
    }

    /// The chain hash after the bytes given so far.
    pub fn value(&self) -> ChainHash {
        *self.hasher.finalize().as_bytes()
    }
}

/// Hex of a chain value, as shown to operators.
pub fn hex(value: &ChainHash) -> String {
    value.iter().map(|b| format!("{b:02x}")).collect()
}

/// A chain value from its hex (64 digits, either case); `None` for anything else.
pub fn from_hex(text: &str) -> Option<ChainHash> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * CHAIN_HASH_BYTES {
        return None;
    }
    let mut out = [0u8; CHAIN_HASH_BYTES];
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    for (o, pair) in out.iter_mut().zip(bytes.chunks(2)) {
        *o = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_the_value() {
        let k = ChainKey::public(&[1; 16]);
        let other = ChainKey::public(&[2; 16]);
        assert_ne!(k.genesis(), other.genesis());
        assert_ne!(k.genesis(), ChainKey::secret([1; 32]).genesis());
        let header = [7u8; 64];
        let value = |start: &ChainHash, header: &[u8], payload: &[u8]| {
            let mut l = k.link(start);
            l.record(header, payload);
            l.value()
        };
        let a = value(&k.genesis(), &header, b"abc");
        assert_ne!(a, value(&k.genesis(), &header, b"abd"));
        let mut h2 = header;
        h2[0] ^= 1;
        assert_ne!(a, value(&k.genesis(), &h2, b"abc"));
        assert_ne!(a, value(&a, &header, b"abc"));
        assert_ne!(a, k.link(&k.genesis()).value(), "an empty link differs");
        // A stream in any pieces hashes alike.
        let mut l = k.link(&k.genesis());
        l.update(&header[..10]);
        l.update(&header[10..]);
        l.update(b"ab");
        l.update(b"c");
        assert_eq!(l.value(), a);
        assert_eq!(hex(&a).len(), 64);
        assert_eq!(from_hex(&hex(&a)), Some(a));
        assert_eq!(from_hex(&hex(&a).to_uppercase()), Some(a));
        assert_eq!(from_hex(&hex(&a)[1..]), None);
        assert_eq!(from_hex(&format!("{}+0", &hex(&a)[2..])), None);
    }
}
