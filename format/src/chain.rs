//! The journal's hash chain: every write, zero, resize and point record, in LSN order, is folded
//! into one running value, so a recovery point commits to every record before it and to the
//! point before it.
//!
//! ```text
//! key        = ChainKey: public (derived from the vault id) or secret (from the data key)
//! genesis    = BLAKE3-keyed(key, "replog journal genesis")
//! digest(r)  = BLAKE3-keyed(key, header bytes 4..64 of r || payload of r)
//! chain(r)   = BLAKE3-keyed(key, chain(previous record) || digest(r))   (genesis before the first)
//! ```
//!
//! A record's header names its LSN, segment, offset and vault seed-covered fields, so the same
//! bytes at another place, from another vault or from an older copy fold to another value. The
//! CRC (header bytes 0..4) is left out: it is a function of the rest. Footer records are not
//! chained: a footer is an index derived from the records before it, and is checked against them.
//!
//! Where the chain is carried:
//! - a point record's payload holds the chain value of the record before it (its *chain hash*,
//!   which `replog points --json` shows): it commits to every chained record of the vault before
//!   the point, including every earlier point;
//! - a segment header holds the chain value before its first record, so a writer that resumes
//!   after a crash, and a verify that starts at a segment, need only that segment.
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

    /// The value before the vault's first record.
    pub fn genesis(&self) -> ChainHash {
        *blake3::keyed_hash(&self.key, GENESIS).as_bytes()
    }

    /// The digest of one record: `header` as stored (64 bytes; its CRC, the first 4, is left
    /// out) and its payload.
    pub fn record_digest(&self, header: &[u8], payload: &[u8]) -> ChainHash {
        debug_assert_eq!(header.len(), 64, "a record header");
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&header[4..]);
        h.update(payload);
        *h.finalize().as_bytes()
    }

    /// The value after a record whose digest is `digest`, the value before it `prev`.
    pub fn link(&self, prev: &ChainHash, digest: &ChainHash) -> ChainHash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(prev);
        h.update(digest);
        *h.finalize().as_bytes()
    }

    /// The value after the record `header` + `payload`, the value before it `prev`.
    pub fn next(&self, prev: &ChainHash, header: &[u8], payload: &[u8]) -> ChainHash {
        self.link(prev, &self.record_digest(header, payload))
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
        let a = k.next(&k.genesis(), &header, b"abc");
        assert_ne!(a, k.next(&k.genesis(), &header, b"abd"));
        let mut h2 = header;
        h2[8] ^= 1;
        assert_ne!(a, k.next(&k.genesis(), &h2, b"abc"));
        // The CRC bytes are not part of a record's digest.
        h2 = header;
        h2[0] ^= 1;
        assert_eq!(a, k.next(&k.genesis(), &h2, b"abc"));
        assert_ne!(a, k.next(&a, &header, b"abc"));
        assert_eq!(hex(&a).len(), 64);
        assert_eq!(from_hex(&hex(&a)), Some(a));
        assert_eq!(from_hex(&hex(&a).to_uppercase()), Some(a));
        assert_eq!(from_hex(&hex(&a)[1..]), None);
        assert_eq!(from_hex(&format!("{}+0", &hex(&a)[2..])), None);
    }
}
