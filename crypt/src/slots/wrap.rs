//! Wrapping the data key for one slot, and unwrapping it: the only place the slots touch
//! cryptography, all of it from the RustCrypto crates and `age`.
//!
//! - Key file and passphrase slots: XChaCha20-Poly1305 under the slot's wrapping key (the key
//!   file's wrap key; Argon2id of the passphrase), a random nonce, and as associated data the
//!   slot's bound bytes (kind, id, created, the key file's fingerprint or the Argon2
//!   parameters and salt) followed by the vault id. A slot moved to another vault, or with a
//!   changed parameter, fails to open.
//! - Age slots: an age file to the slot's recipients whose plaintext is the data key followed
//!   by `blake3::derive_key("replog 2026 age slot binding", bound bytes)`; age takes no
//!   associated data, so the binding is checked after decryption instead.

use std::io::Write;

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use crate::data_key::{DataKey, KEY_BYTES};
use crate::error::{CryptError, CryptErrorKind, Result};
use crate::seal::{NONCE_BYTES, Nonce24, Sealer};
use crate::slots::codec::WRAPPED_BYTES;
use crate::slots::{AgeRecipient, Argon2Params};

const AGE_BINDING_CONTEXT: &str = "replog 2026 age slot binding";

/// `data_key` sealed under `wrapping_key` with `bound` as associated data: the nonce and the
/// sealed bytes.
pub(crate) fn seal_key(
    wrapping_key: &[u8; KEY_BYTES],
    bound: &[u8],
    data_key: &DataKey,
) -> ([u8; NONCE_BYTES], [u8; WRAPPED_BYTES]) {
    let nonce = Nonce24::random();
    let sealed = Sealer::from_key_bytes(wrapping_key).seal(&nonce, bound, data_key.as_bytes());
    let wrapped = sealed.try_into().expect("32 bytes seal to 48");
    (*nonce.as_bytes(), wrapped)
}

/// The data key sealed by [`seal_key`], or `None` if the key or the bound bytes differ.
pub(crate) fn open_key(
    wrapping_key: &[u8; KEY_BYTES],
    bound: &[u8],
    nonce: &[u8; NONCE_BYTES],
    wrapped: &[u8; WRAPPED_BYTES],
) -> Option<DataKey> {
    let nonce = Nonce24::from_bytes(*nonce);
    let opened = Zeroizing::new(
        Sealer::from_key_bytes(wrapping_key)
            .open(&nonce, bound, wrapped)
            .ok()?,
    );
    let bytes: [u8; KEY_BYTES] = opened[..].try_into().ok()?;
    Some(DataKey::from_bytes(bytes))
}

/// The wrapping key of a passphrase slot: Argon2id (version 0x13) of `passphrase` with the
/// slot's parameters and salt.
pub(crate) fn passphrase_key(
    passphrase: &str,
    params: &Argon2Params,
    salt: &[u8; 16],
) -> Result<Zeroizing<[u8; KEY_BYTES]>> {
    params.check()?;
    let invalid = |error: argon2::Error| {
        CryptError::new(
            CryptErrorKind::Invalid,
            format!("Argon2id refused its parameters: {error}"),
        )
    };
    let argon_params = Params::new(
        params.m_cost_kib,
        params.t_cost,
        params.p_cost,
        Some(KEY_BYTES),
    )
    .map_err(invalid)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, argon_params);
    let mut key = Zeroizing::new([0u8; KEY_BYTES]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut key[..])
        .map_err(invalid)?;
    Ok(key)
}

fn age_binding(bound: &[u8]) -> [u8; 32] {
    blake3::derive_key(AGE_BINDING_CONTEXT, bound)
}

/// An age file to `recipients` holding `data_key` and the binding of `bound`.
pub(crate) fn age_seal(
    recipients: &[AgeRecipient],
    bound: &[u8],
    data_key: &DataKey,
) -> Result<Vec<u8>> {
    let age_error = |error: &dyn std::fmt::Display| {
        CryptError::new(
            CryptErrorKind::Invalid,
            format!("age could not encrypt to the recipients: {error}"),
        )
    };
    let encryptor = age::Encryptor::with_recipients(
        recipients
            .iter()
            .map(|recipient| recipient as &dyn age::Recipient),
    )
    .map_err(|error| age_error(&error))?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(2 * KEY_BYTES));
    plaintext.extend_from_slice(data_key.as_bytes());
    plaintext.extend_from_slice(&age_binding(bound));
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|error| age_error(&error))?;
    writer
        .write_all(&plaintext)
        .and_then(|()| writer.finish().map(drop))
        .map_err(|error| age_error(&error))?;
    Ok(out)
}

/// The data key in an age slot's file, or `None` if `identity` is not a recipient, the file is
/// damaged, or its binding is not `bound`'s (a slot moved to another vault or changed).
pub(crate) fn age_open(
    identity: &age::x25519::Identity,
    bound: &[u8],
    age_file: &[u8],
) -> Option<DataKey> {
    let plaintext = Zeroizing::new(age::decrypt(identity, age_file).ok()?);
    if plaintext.len() != 2 * KEY_BYTES || plaintext[KEY_BYTES..] != age_binding(bound) {
        return None;
    }
    let bytes: [u8; KEY_BYTES] = plaintext[..KEY_BYTES].try_into().ok()?;
    Some(DataKey::from_bytes(bytes))
}
