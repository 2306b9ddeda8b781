//! Sealing and opening: round trips, and every change to what was sealed or how it is opened
//! fails authentication without handing back bytes.

use std::collections::HashSet;

use replog_crypt::{CryptErrorKind, DataKey, NONCE_BYTES, Nonce24, NonceSource, Sealer, TAG_BYTES};

const AAD: &[u8] = b"vault 1, segment 7, offset 4096";

fn sealed_sample() -> (Sealer, Nonce24, Vec<u8>, Vec<u8>) {
    let sealer = Sealer::new(&DataKey::generate());
    let nonce = NonceSource::new().next();
    let plaintext: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let sealed = sealer.seal(&nonce, AAD, &plaintext);
    (sealer, nonce, plaintext, sealed)
}

fn assert_authentication_fails(sealer: &Sealer, nonce: &Nonce24, aad: &[u8], sealed: &[u8]) {
    let error = sealer.open(nonce, aad, sealed).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::Authentication);
    let mut buffer = sealed.to_vec();
    let error = sealer.open_in_place(nonce, aad, &mut buffer).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::Authentication);
    assert!(
        buffer.is_empty(),
        "a failed open must not leave bytes in the buffer"
    );
}

#[test]
fn sealed_bytes_open_to_the_plaintext() {
    let (sealer, nonce, plaintext, sealed) = sealed_sample();
    assert_eq!(sealed.len(), plaintext.len() + TAG_BYTES);
    assert_ne!(&sealed[..plaintext.len()], &plaintext[..]);
    assert_eq!(sealer.open(&nonce, AAD, &sealed).unwrap(), plaintext);
    // An empty plaintext seals to a tag alone.
    let empty = sealer.seal(&nonce, AAD, b"");
    assert_eq!(empty.len(), TAG_BYTES);
    assert!(sealer.open(&nonce, AAD, &empty).unwrap().is_empty());
}

#[test]
fn sealing_in_place_matches_sealing_and_opens_in_place() {
    let (sealer, nonce, plaintext, sealed) = sealed_sample();
    let mut buffer = plaintext.clone();
    sealer.seal_in_place(&nonce, AAD, &mut buffer);
    assert_eq!(buffer, sealed);
    sealer.open_in_place(&nonce, AAD, &mut buffer).unwrap();
    assert_eq!(buffer, plaintext);
}

#[test]
fn a_sealer_from_the_same_data_key_opens_what_another_sealed() {
    let key = DataKey::generate();
    let nonce = NonceSource::new().next();
    let sealed = Sealer::new(&key).seal(&nonce, AAD, b"record");
    assert_eq!(
        Sealer::new(&key.clone())
            .open(&nonce, AAD, &sealed)
            .unwrap(),
        b"record"
    );
}

#[test]
fn a_flipped_ciphertext_byte_fails_authentication() {
    let (sealer, nonce, plaintext, sealed) = sealed_sample();
    for index in [0, 1, plaintext.len() / 2, plaintext.len() - 1] {
        let mut damaged = sealed.clone();
        damaged[index] ^= 0x01;
        assert_authentication_fails(&sealer, &nonce, AAD, &damaged);
    }
}

#[test]
fn a_flipped_tag_byte_fails_authentication() {
    let (sealer, nonce, _, sealed) = sealed_sample();
    for index in sealed.len() - TAG_BYTES..sealed.len() {
        let mut damaged = sealed.clone();
        damaged[index] ^= 0x80;
        assert_authentication_fails(&sealer, &nonce, AAD, &damaged);
    }
}

#[test]
fn cut_or_extended_sealed_bytes_fail_authentication() {
    let (sealer, nonce, _, sealed) = sealed_sample();
    for len in [0, 1, TAG_BYTES - 1, TAG_BYTES, sealed.len() - 1] {
        assert_authentication_fails(&sealer, &nonce, AAD, &sealed[..len]);
    }
    let mut longer = sealed.clone();
    longer.push(0);
    assert_authentication_fails(&sealer, &nonce, AAD, &longer);
}

#[test]
fn other_associated_data_fails_authentication() {
    let (sealer, nonce, _, sealed) = sealed_sample();
    assert_authentication_fails(&sealer, &nonce, b"vault 1, segment 7, offset 8192", &sealed);
    assert_authentication_fails(&sealer, &nonce, b"", &sealed);
}

#[test]
fn another_nonce_fails_authentication() {
    let (sealer, nonce, _, sealed) = sealed_sample();
    for index in [0, 15, 16, 23] {
        let mut bytes = *nonce.as_bytes();
        bytes[index] ^= 0x01;
        assert_authentication_fails(&sealer, &Nonce24::from_bytes(bytes), AAD, &sealed);
    }
}

#[test]
fn another_data_key_fails_authentication() {
    let (_, nonce, _, sealed) = sealed_sample();
    assert_authentication_fails(&Sealer::new(&DataKey::generate()), &nonce, AAD, &sealed);
}

#[test]
fn a_nonce_source_never_repeats_a_nonce() {
    let mut source = NonceSource::new();
    let salt = source.salt();
    let mut seen = HashSet::new();
    for counter in 0..100_000u64 {
        let nonce = source.next();
        assert_eq!(nonce.as_bytes()[..16], salt);
        assert_eq!(nonce.as_bytes()[16..], counter.to_le_bytes());
        assert!(
            seen.insert(*nonce.as_bytes()),
            "nonce repeated at {counter}"
        );
    }
}

#[test]
fn two_nonce_sources_draw_different_salts() {
    let salts: HashSet<[u8; 16]> = (0..64).map(|_| NonceSource::new().salt()).collect();
    assert_eq!(salts.len(), 64);
    let (mut a, mut b) = (NonceSource::new(), NonceSource::new());
    assert_ne!(a.next(), b.next());
}

#[test]
fn a_nonce_round_trips_through_its_bytes() {
    let nonce = NonceSource::new().next();
    let bytes: [u8; NONCE_BYTES] = *nonce.as_bytes();
    assert_eq!(Nonce24::from_bytes(bytes), nonce);
}

#[test]
fn an_authentication_error_shows_no_key_material() {
    let key = DataKey::generate();
    let sealer = Sealer::new(&key);
    let error = sealer
        .open(&Nonce24::from_bytes([0; 24]), b"", &[0; 32])
        .unwrap_err();
    let text = format!("{error} {error:?} {sealer:?} {key:?}");
    assert!(text.contains("authentication"), "{text}");
    assert!(
        text.contains(&replog_crypt::hex(&key.fingerprint())),
        "{text}"
    );
    // A key would show as 64 hex digits; the only hex is the 32-digit fingerprint.
    let longest_hex_run = text
        .split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    assert_eq!(longest_hex_run, 32, "{text}");
}
