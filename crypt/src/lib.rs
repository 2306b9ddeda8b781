//! Key handling and sealing primitives for encryption at rest.
//!
//! This crate owns the data key of a vault and the subkeys derived from it (`data_key`), the
//! AEAD that seals journal records, base chunks, checkpoints and manifests and the nonce scheme
//! that keeps its nonces unique (`seal`), key files (`key_file`), the key slots that keep
//! wrapped copies of the data key for key files, passphrases and age recipients (`slots`), and
//! the passphrase prompt (`passphrase`). `KEYS.md` beside this crate draws its byte layouts.
//!
//! It must not know vaults, journals, segments or the remote store: callers hand it bytes,
//! nonces and associated data, and store what it returns where their own formats say. It does
//! no I/O except reading and creating key and identity files, and it never hand-writes
//! cryptography: XChaCha20-Poly1305 and Argon2id come from the RustCrypto crates, recipient
//! encryption from `age`, hashing and key derivation from `blake3`.
//!
//! No secret ever appears in an error, a `Debug` output or a log line: keys show as their
//! fingerprints, and every type holding secret bytes wipes them when dropped.
#![forbid(unsafe_code)]

pub mod data_key;
pub mod error;
/// The fuzz oracle, for `fuzz/` and the corpus replay test only: behind the `fuzzing` feature,
/// so not part of the crate's API by default.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod key_file;
pub mod passphrase;
mod random;
pub mod seal;
mod secret_file;
pub mod slots;

pub use data_key::{ChainKey, DataKey, FINGERPRINT_BYTES, KEY_BYTES, NameKey, RecordKey, hex};
pub use error::{CryptError, CryptErrorKind, Result};
pub use key_file::{KEY_FILE_ENV, KeyFile};
pub use passphrase::{PASSPHRASE_ENV, read_passphrase};
pub use seal::{NONCE_BYTES, Nonce24, NonceSource, Sealer, TAG_BYTES};
pub use slots::{AgeRecipient, Argon2Params, KeySlots, NewSlot, SlotInfo, SlotKind, Unlock};
