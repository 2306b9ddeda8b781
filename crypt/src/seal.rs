//! Sealing: XChaCha20-Poly1305 under the data key's record key, and the nonces it needs.
//!
//! A sealed object is `ciphertext || tag` ([`TAG_BYTES`] = 16); the caller stores the 24-byte
//! nonce next to it and supplies associated data (AAD) that binds it to its place (vault,
//! file, offset, LSN: whatever the caller's format says). Opening with the wrong key, nonce or
//! AAD, or opening damaged bytes, is an [`CryptErrorKind::Authentication`] error and returns
//! no bytes.
//!
//! ## Nonces never repeat
//!
//! A nonce is `salt (16 bytes) || counter (u64 little-endian)`:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | session salt, from the OS random source when the [`NonceSource`] is made |
//! | 16 | 8 | counter, u64 LE, 0 for the first nonce of the session |
//!
//! Every writer process session — every open of a vault for writing, every crash recovery,
//! every compaction run, every rewrite — makes a new [`NonceSource`] and so draws a fresh
//! 128-bit random salt. Nothing about a session is derived from the state on disk, so a
//! crash that loses the tail of a journal, a recovery that rewrites it, or a compaction that
//! rewrites old data under the same data key cannot bring a counter back to a value it had
//! with the same salt. Two sessions share a salt only by chance: over `s` sessions the chance
//! of any collision is about `s² / 2^129` (2^-89 after a billion sessions). Within a session
//! the counter only goes up and the source refuses (panics) rather than wrap past
//! `u64::MAX`. The nonce is stored with each sealed object, so a reader never derives one and
//! never depends on the counter's history.
//!
//! XChaCha20's 192-bit nonce is what makes a random 128-bit salt safe here; with a 96-bit
//! nonce there would be no room for both.
//!
//! This module owns the AEAD and the nonce scheme. It must not know what is sealed, where
//! nonces are stored or what the AAD holds.

use std::fmt;

use chacha20poly1305::aead::{Aead, AeadInOut, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::data_key::DataKey;
use crate::error::{CryptError, CryptErrorKind, Result};
use crate::random::os_random;

/// Length of the authentication tag appended to every sealed object.
pub const TAG_BYTES: usize = 16;
/// Length of an XChaCha20-Poly1305 nonce.
pub const NONCE_BYTES: usize = 24;
/// Length of a [`NonceSource`]'s random session salt.
pub const SALT_BYTES: usize = 16;

/// A 24-byte XChaCha20-Poly1305 nonce. Not secret; stored with what it sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Nonce24([u8; NONCE_BYTES]);

impl Nonce24 {
    /// The nonce stored with a sealed object.
    pub fn from_bytes(bytes: [u8; NONCE_BYTES]) -> Nonce24 {
        Nonce24(bytes)
    }

    /// The bytes to store with the sealed object.
    pub fn as_bytes(&self) -> &[u8; NONCE_BYTES] {
        &self.0
    }

    /// A nonce from the OS random source, for one-off seals with no session (key slots).
    pub fn random() -> Nonce24 {
        Nonce24(os_random())
    }

    fn xnonce(&self) -> XNonce {
        XNonce::from(self.0)
    }
}

/// The nonces of one writer session: a random salt and a counter. See the module doc for why
/// they never repeat.
#[derive(Debug)]
pub struct NonceSource {
    salt: [u8; SALT_BYTES],
    counter: u64,
    spent: bool,
}

impl NonceSource {
    /// A new session: a fresh salt from the OS random source, the counter at 0.
    #[allow(clippy::new_without_default)] // Each call draws randomness; `Default` would hide it.
    pub fn new() -> NonceSource {
        NonceSource::with_counter(os_random(), 0)
    }

    pub(crate) fn with_counter(salt: [u8; SALT_BYTES], counter: u64) -> NonceSource {
        NonceSource {
            salt,
            counter,
            spent: false,
        }
    }

    /// The session's salt (not secret; for logs and tests).
    pub fn salt(&self) -> [u8; SALT_BYTES] {
        self.salt
    }

    /// The next nonce: `salt || counter`, then the counter goes up.
    ///
    /// Not an `Iterator`: a nonce is never optional to a caller, and 2^64 seals in one session
    /// is a bug, so a spent source panics rather than hand back `None`.
    ///
    /// # Panics
    ///
    /// After 2^64 nonces, rather than wrap and repeat one.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Nonce24 {
        assert!(
            !self.spent,
            "nonce counter exhausted: a session never seals more than 2^64 objects"
        );
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..SALT_BYTES].copy_from_slice(&self.salt);
        nonce[SALT_BYTES..].copy_from_slice(&self.counter.to_le_bytes());
        match self.counter.checked_add(1) {
            Some(next) => self.counter = next,
            None => self.spent = true,
        }
        Nonce24(nonce)
    }
}

/// Seals and opens with a data key's record key.
#[derive(Clone)]
pub struct Sealer {
    aead: XChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn authentication_error() -> CryptError {
    CryptError::new(
        CryptErrorKind::Authentication,
        "sealed bytes fail authentication: the key, the nonce or the associated data is not the \
         one they were sealed with, or the bytes are damaged",
    )
}

impl Sealer {
    /// A sealer under `data_key`'s record key.
    pub fn new(data_key: &DataKey) -> Sealer {
        Sealer::from_key_bytes(data_key.record_key().as_bytes())
    }

    /// A sealer under a raw 32-byte key: the key slots wrap the data key with it.
    pub(crate) fn from_key_bytes(key: &[u8; 32]) -> Sealer {
        let aead = XChaCha20Poly1305::new_from_slice(key).expect("a 32-byte key is accepted");
        Sealer { aead }
    }

    /// `plaintext` sealed: ciphertext followed by the 16-byte tag.
    ///
    /// # Panics
    ///
    /// If `plaintext` is longer than XChaCha20 can encrypt under one nonce (256 GiB): callers
    /// seal records and chunks of a few MiB, so that is a bug.
    pub fn seal(&self, nonce: &Nonce24, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        self.aead
            .encrypt(&nonce.xnonce(), payload)
            .expect("plaintext within XChaCha20's length limit")
    }

    /// Seals `buffer` in place: its plaintext becomes ciphertext and the tag is appended.
    ///
    /// # Panics
    ///
    /// As [`Sealer::seal`].
    pub fn seal_in_place(&self, nonce: &Nonce24, aad: &[u8], buffer: &mut Vec<u8>) {
        self.aead
            .encrypt_in_place(&nonce.xnonce(), aad, buffer)
            .expect("plaintext within XChaCha20's length limit");
    }

    /// The plaintext of `sealed`, or an [`CryptErrorKind::Authentication`] error.
    pub fn open(&self, nonce: &Nonce24, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>> {
        let payload = Payload { msg: sealed, aad };
        self.aead
            .decrypt(&nonce.xnonce(), payload)
            .map_err(|_| authentication_error())
    }

    /// Opens `buffer` in place: on success it holds the plaintext (the tag removed); on
    /// failure it is cleared, so no unauthenticated bytes are ever handed on.
    pub fn open_in_place(&self, nonce: &Nonce24, aad: &[u8], buffer: &mut Vec<u8>) -> Result<()> {
        match self.aead.decrypt_in_place(&nonce.xnonce(), aad, buffer) {
            Ok(()) => Ok(()),
            Err(_) => {
                buffer.clear();
                Err(authentication_error())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonce_is_salt_then_little_endian_counter() {
        let mut source = NonceSource::with_counter([9; SALT_BYTES], 0x0102);
        let nonce = source.next();
        assert_eq!(nonce.as_bytes()[..16], [9; 16]);
        assert_eq!(nonce.as_bytes()[16..], [2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(source.next().as_bytes()[16], 3);
    }

    #[test]
    fn the_last_counter_value_is_issued_once_and_then_the_source_refuses() {
        let mut source = NonceSource::with_counter([1; SALT_BYTES], u64::MAX - 1);
        source.next();
        let last = source.next();
        assert_eq!(last.as_bytes()[16..], [0xff; 8]);
        let again = std::panic::catch_unwind(move || source.next());
        assert!(again.is_err(), "a spent source must not wrap to counter 0");
    }
}
