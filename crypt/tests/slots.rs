//! Key slots: every kind opens the vault with its own key and no other, slots are added,
//! removed and rotated without touching the data key, and the slot file's decoder refuses
//! every truncation and byte flip without panicking or unlocking.

use std::path::Path;

use replog_crypt::{
    AgeRecipient, Argon2Params, CryptErrorKind, DataKey, KeyFile, KeySlots, NewSlot, SlotKind,
    Unlock,
};
use zeroize::Zeroizing;

const VAULT: [u8; 16] = *b"vault-id-0000001";
const OTHER_VAULT: [u8; 16] = *b"vault-id-0000002";
/// Argon2id at its smallest, so a test can derive hundreds of keys.
const SMALL: Argon2Params = Argon2Params {
    m_cost_kib: 64,
    t_cost: 1,
    p_cost: 1,
};

#[allow(deprecated)] // X25519 identities are the kind age slots open with; see AgeRecipient.
fn age_identity() -> age::x25519::Identity {
    age::x25519::Identity::generate()
}

fn key_file(dir: &Path, name: &str) -> KeyFile {
    KeyFile::generate(&dir.join(name)).unwrap()
}

fn passphrase(text: &str) -> Zeroizing<String> {
    Zeroizing::new(text.to_owned())
}

fn passphrase_slot(text: &str) -> NewSlot {
    NewSlot::Passphrase {
        passphrase: passphrase(text),
        params: SMALL,
    }
}

fn age_slot(identity: &age::x25519::Identity) -> NewSlot {
    NewSlot::Age(vec![identity.to_public()])
}

/// A vault's slots with one slot of each kind, and the keys that open them.
struct ThreeSlots {
    _dir: tempfile::TempDir,
    data_key: DataKey,
    slots: KeySlots,
    key_file: Unlock,
    passphrase: Unlock,
    identity: Unlock,
}

fn three_slots() -> ThreeSlots {
    let dir = tempfile::tempdir().unwrap();
    let data_key = DataKey::generate();
    let file = key_file(dir.path(), "a.key");
    let mut slots = KeySlots::new(VAULT, &data_key, &NewSlot::KeyFile(file.clone())).unwrap();
    let key_file = Unlock::KeyFile(file);
    slots
        .add(&key_file, &passphrase_slot("correct horse"))
        .unwrap();
    let identity = age_identity();
    slots.add(&key_file, &age_slot(&identity)).unwrap();
    ThreeSlots {
        _dir: dir,
        data_key,
        slots,
        key_file,
        passphrase: Unlock::Passphrase(passphrase("correct horse")),
        identity: Unlock::AgeIdentity(identity),
    }
}

fn assert_opens(slots: &KeySlots, unlock: &Unlock, data_key: &DataKey) {
    let opened = slots.unlock(unlock).unwrap();
    assert_eq!(opened.fingerprint(), data_key.fingerprint());
    // The same key, not only the same fingerprint: it opens what the original sealed.
    let nonce = replog_crypt::NonceSource::new().next();
    let sealed = replog_crypt::Sealer::new(data_key).seal(&nonce, b"", b"data");
    assert_eq!(
        replog_crypt::Sealer::new(&opened)
            .open(&nonce, b"", &sealed)
            .unwrap(),
        b"data"
    );
}

fn assert_wrong_key(slots: &KeySlots, unlock: &Unlock) -> String {
    let error = slots.unlock(unlock).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::WrongKey, "{error}");
    error.to_string()
}

#[test]
fn each_kind_of_slot_opens_with_its_own_key() {
    let t = three_slots();
    assert_eq!(t.slots.data_key_fingerprint(), t.data_key.fingerprint());
    for unlock in [&t.key_file, &t.passphrase, &t.identity] {
        assert_opens(&t.slots, unlock, &t.data_key);
    }
    let kinds: Vec<SlotKind> = t.slots.list().iter().map(|info| info.kind).collect();
    assert_eq!(
        kinds,
        [SlotKind::KeyFile, SlotKind::Passphrase, SlotKind::Age]
    );
}

#[test]
fn a_wrong_key_of_each_kind_is_refused_naming_the_kinds_of_slot() {
    let t = three_slots();
    let dir = tempfile::tempdir().unwrap();
    let message = assert_wrong_key(&t.slots, &Unlock::KeyFile(key_file(dir.path(), "b.key")));
    assert!(
        message.contains("1 key file, 1 passphrase, 1 age"),
        "{message}"
    );
    assert_wrong_key(&t.slots, &Unlock::Passphrase(passphrase("correct horse ")));
    assert_wrong_key(&t.slots, &Unlock::AgeIdentity(age_identity()));
}

#[test]
fn a_key_of_a_kind_with_no_slot_is_refused_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let data_key = DataKey::generate();
    let slots = KeySlots::new(
        VAULT,
        &data_key,
        &NewSlot::KeyFile(key_file(dir.path(), "a")),
    )
    .unwrap();
    let message = assert_wrong_key(&slots, &Unlock::Passphrase(passphrase("anything")));
    assert!(message.contains("there is no passphrase slot"), "{message}");
    assert!(message.contains("1 key file"), "{message}");
}

#[test]
fn adding_a_slot_needs_a_current_key() {
    let mut t = three_slots();
    let before = t.slots.encode();
    let error = t
        .slots
        .add(
            &Unlock::Passphrase(passphrase("guess")),
            &passphrase_slot("mine now"),
        )
        .unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::WrongKey);
    assert_eq!(
        t.slots.encode(),
        before,
        "a refused add must change nothing"
    );
    assert_wrong_key(&t.slots, &Unlock::Passphrase(passphrase("mine now")));
}

#[test]
fn the_same_key_file_cannot_get_a_second_slot() {
    let dir = tempfile::tempdir().unwrap();
    let file = key_file(dir.path(), "a");
    let mut slots =
        KeySlots::new(VAULT, &DataKey::generate(), &NewSlot::KeyFile(file.clone())).unwrap();
    let error = slots
        .add(&Unlock::KeyFile(file.clone()), &NewSlot::KeyFile(file))
        .unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::Exists);
}

#[test]
fn an_age_slot_opens_with_any_of_its_recipients() {
    let dir = tempfile::tempdir().unwrap();
    let data_key = DataKey::generate();
    let file = Unlock::KeyFile(key_file(dir.path(), "a"));
    let Unlock::KeyFile(first) = &file else {
        unreachable!()
    };
    let mut slots = KeySlots::new(VAULT, &data_key, &NewSlot::KeyFile(first.clone())).unwrap();
    let (alice, bob) = (age_identity(), age_identity());
    let recipients = [alice.to_public().to_string(), bob.to_public().to_string()];
    slots
        .add(&file, &NewSlot::age_recipients(&recipients).unwrap())
        .unwrap();
    assert_opens(&slots, &Unlock::AgeIdentity(alice), &data_key);
    assert_opens(&slots, &Unlock::AgeIdentity(bob), &data_key);
    assert_eq!(slots.list()[1].recipients, recipients);
    let error = NewSlot::age_recipients(&["age1notarecipient"]).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::Invalid);
}

#[test]
fn an_age_identity_file_opens_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let identity = age_identity();
    let path = dir.path().join("identity.txt");
    let text = format!(
        "# created: today\n# public key: {}\n{}\n",
        identity.to_public(),
        age::secrecy::ExposeSecret::expose_secret(&identity.to_string())
    );
    std::fs::write(&path, &text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = Unlock::age_identity_file(&path).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::KeyFilePermissions, "{error}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let data_key = DataKey::generate();
    let slots = KeySlots::new(VAULT, &data_key, &age_slot(&identity)).unwrap();
    let unlock = Unlock::age_identity_file(&path).unwrap();
    assert!(
        !format!("{unlock:?}").contains("AGE-SECRET-KEY"),
        "{unlock:?}"
    );
    assert_opens(&slots, &unlock, &data_key);
    // A file with no identity line is refused without echoing what it holds.
    std::fs::write(&path, "# nothing\nAGE-SECRET-KEY-1NOTAKEY\n").unwrap();
    let error = Unlock::age_identity_file(&path).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::Invalid);
    assert!(!error.to_string().contains("NOTAKEY"), "{error}");
}

#[test]
fn removing_a_slot_stops_its_key_and_the_last_slot_stays() {
    let mut t = three_slots();
    let ids: Vec<u32> = t.slots.list().iter().map(|info| info.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    t.slots.remove(2).unwrap();
    assert_wrong_key(&t.slots, &t.passphrase);
    assert_opens(&t.slots, &t.key_file, &t.data_key);
    assert_eq!(
        t.slots.remove(2).unwrap_err().kind(),
        CryptErrorKind::NoSuchSlot
    );
    t.slots.remove(1).unwrap();
    let error = t.slots.remove(3).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::LastSlot);
    assert_opens(&t.slots, &t.identity, &t.data_key);
    // Ids are never reused, so a list read earlier never names a different slot.
    let id = t.slots.add(&t.identity, &passphrase_slot("again")).unwrap();
    assert_eq!(id, 4);
}

#[test]
fn rotating_keeps_the_data_key_and_retires_the_old_key() {
    let mut t = three_slots();
    let dir = tempfile::tempdir().unwrap();
    let new_file = key_file(dir.path(), "new.key");
    let id = t
        .slots
        .rotate(&t.key_file, &NewSlot::KeyFile(new_file.clone()))
        .unwrap();
    assert_eq!(t.slots.data_key_fingerprint(), t.data_key.fingerprint());
    assert_wrong_key(&t.slots, &t.key_file);
    assert_opens(&t.slots, &Unlock::KeyFile(new_file.clone()), &t.data_key);
    let list = t.slots.list();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].id, id);
    assert_eq!(
        list[0].key_fingerprint_hex,
        Some(replog_crypt::hex(&new_file.fingerprint()))
    );

    t.slots
        .rotate(&t.passphrase, &passphrase_slot("battery staple"))
        .unwrap();
    assert_wrong_key(&t.slots, &t.passphrase);
    assert_opens(
        &t.slots,
        &Unlock::Passphrase(passphrase("battery staple")),
        &t.data_key,
    );
    // The other slots still open.
    assert_opens(&t.slots, &t.identity, &t.data_key);
}

#[test]
fn list_shows_what_opens_each_slot_and_no_secret() {
    let t = three_slots();
    let Unlock::KeyFile(file) = &t.key_file else {
        unreachable!()
    };
    let list = t.slots.list();
    assert_eq!(
        list[0].key_fingerprint_hex,
        Some(replog_crypt::hex(&file.fingerprint()))
    );
    assert_eq!(list[1].argon2, Some(SMALL));
    let Unlock::AgeIdentity(identity) = &t.identity else {
        unreachable!()
    };
    assert_eq!(list[2].recipients, [identity.to_public().to_string()]);
    assert!(list.iter().all(|info| info.created_unix_s > 1_700_000_000));
    let shown = format!("{list:?} {:?}", t.slots);
    assert!(!shown.contains("correct horse"));
}

#[test]
fn slots_round_trip_through_their_encoding() {
    let t = three_slots();
    let bytes = t.slots.encode();
    assert_eq!(&bytes[..8], b"RPLG-KYS");
    // The vault id and the data key's fingerprint are readable without any key.
    assert_eq!(bytes[16..32], VAULT);
    assert_eq!(bytes[32..48], t.data_key.fingerprint());
    let decoded = KeySlots::decode(&bytes).unwrap();
    assert_eq!(decoded.encode(), bytes);
    assert_eq!(decoded.list(), t.slots.list());
    assert_eq!(decoded.vault_id(), VAULT);
    decoded.check_vault(&VAULT).unwrap();
    assert_eq!(
        decoded.check_vault(&OTHER_VAULT).unwrap_err().kind(),
        CryptErrorKind::SlotsDamaged
    );
    for unlock in [&t.key_file, &t.passphrase, &t.identity] {
        assert_opens(&decoded, unlock, &t.data_key);
    }
}

/// `bytes` with a new trailing CRC, as an attacker who edits the file would write it.
fn recrc(mut bytes: Vec<u8>) -> Vec<u8> {
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn slots_moved_to_another_vault_do_not_open() {
    let t = three_slots();
    let mut bytes = t.slots.encode();
    bytes[16..32].copy_from_slice(&OTHER_VAULT);
    let moved = KeySlots::decode(&recrc(bytes)).unwrap();
    assert_eq!(moved.vault_id(), OTHER_VAULT);
    for unlock in [&t.key_file, &t.passphrase, &t.identity] {
        assert_wrong_key(&moved, unlock);
    }
}

#[test]
fn a_changed_argon2_parameter_does_not_open() {
    let t = three_slots();
    let bytes = t.slots.encode();
    // Slot 2 (passphrase) starts after the header (56) and slot 1 (20 + 88); t_cost is the
    // second u32 of its body.
    let t_cost_at = 56 + 108 + 20 + 4;
    assert_eq!(bytes[t_cost_at..t_cost_at + 4], 1u32.to_le_bytes());
    let mut changed = bytes.clone();
    changed[t_cost_at] = 2;
    let changed = KeySlots::decode(&recrc(changed)).unwrap();
    assert_eq!(changed.list()[1].argon2.unwrap().t_cost, 2);
    assert_wrong_key(&changed, &t.passphrase);
}

#[test]
fn every_truncation_of_a_slot_file_is_refused() {
    let t = three_slots();
    let bytes = t.slots.encode();
    for len in 0..bytes.len() {
        let error = KeySlots::decode(&bytes[..len]).unwrap_err();
        assert!(
            matches!(
                error.kind(),
                CryptErrorKind::Truncated | CryptErrorKind::SlotsDamaged
            ),
            "length {len}: {error}"
        );
    }
}

#[test]
fn every_byte_flip_of_a_slot_file_is_refused() {
    let t = three_slots();
    let bytes = t.slots.encode();
    for index in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[index] ^= flip;
            let error = KeySlots::decode(&damaged).unwrap_err();
            assert!(error.offset().is_some(), "byte {index}: {error}");
        }
    }
}

/// The slot file's regions: the header, each slot, the CRC.
fn regions(bytes: &[u8]) -> [std::ops::Range<usize>; 3] {
    let key_file_slot = 56..56 + 20 + 88;
    let passphrase_slot = key_file_slot.end..key_file_slot.end + 20 + 100;
    let age_slot = passphrase_slot.end..bytes.len() - 4;
    [key_file_slot, passphrase_slot, age_slot]
}

#[test]
fn a_byte_flip_behind_a_fixed_checksum_never_opens_its_slot() {
    // An attacker can rewrite the CRC. Then every flip inside a slot must keep that slot's key
    // from opening it, and every flip in the header (other than the next free slot id, which
    // binds nothing) must keep every key out; the decoder must not panic either way.
    let t = three_slots();
    let bytes = t.slots.encode();
    let unlocks = [&t.key_file, &t.passphrase, &t.identity];
    let slot_regions = regions(&bytes);
    let mut decoded_count = 0;
    for index in 0..bytes.len() - 4 {
        for flip in [0x01, 0x80] {
            let mut damaged = bytes.clone();
            damaged[index] ^= flip;
            let Ok(slots) = KeySlots::decode(&recrc(damaged)) else {
                continue;
            };
            decoded_count += 1;
            for (slot, unlock) in slot_regions.iter().zip(unlocks) {
                let must_fail = slot.contains(&index) || (index < 56 && !(48..52).contains(&index));
                if must_fail {
                    let result = slots.unlock(unlock);
                    assert!(
                        result.is_err(),
                        "byte {index} ^ {flip:#x} still opens {unlock:?}"
                    );
                }
            }
        }
    }
    // Flips of ids, times, nonces, wrapped keys and age files decode; the test checked them.
    assert!(
        decoded_count > 200,
        "only {decoded_count} flipped files decoded"
    );
}

#[test]
fn hostile_counts_and_lengths_are_refused_before_allocating() {
    let t = three_slots();
    let bytes = t.slots.encode();
    let mut huge_count = bytes.clone();
    huge_count[52..56].copy_from_slice(&u32::MAX.to_le_bytes());
    let error = KeySlots::decode(&recrc(huge_count)).unwrap_err();
    assert_eq!(
        (error.kind(), error.offset()),
        (CryptErrorKind::SlotsDamaged, Some(52))
    );
    let [_, _, age] = regions(&bytes);
    let mut huge_body = bytes.clone();
    huge_body[age.start + 16..age.start + 20].copy_from_slice(&u32::MAX.to_le_bytes());
    let error = KeySlots::decode(&recrc(huge_body)).unwrap_err();
    assert_eq!(error.offset(), Some(age.start as u64 + 16), "{error}");
    let mut huge_argon = bytes.clone();
    huge_argon[56 + 108 + 20..56 + 108 + 24].copy_from_slice(&u32::MAX.to_le_bytes());
    let error = KeySlots::decode(&recrc(huge_argon)).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::SlotsDamaged, "{error}");
}

#[test]
fn argon2_parameters_out_of_bounds_are_refused_when_adding() {
    let dir = tempfile::tempdir().unwrap();
    let bad = NewSlot::Passphrase {
        passphrase: passphrase("p"),
        params: Argon2Params {
            m_cost_kib: 4,
            t_cost: 1,
            p_cost: 1,
        },
    };
    let error = KeySlots::new(VAULT, &DataKey::generate(), &bad).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::Invalid);
    let _ = key_file(dir.path(), "unused");
    assert_eq!(Argon2Params::DEFAULT.m_cost_kib, 64 * 1024);
    Argon2Params::DEFAULT.check().unwrap();
}

#[test]
fn at_most_32_slots() {
    let dir = tempfile::tempdir().unwrap();
    let first = key_file(dir.path(), "0");
    let unlock = Unlock::KeyFile(first.clone());
    let mut slots = KeySlots::new(VAULT, &DataKey::generate(), &NewSlot::KeyFile(first)).unwrap();
    for n in 1..32 {
        slots
            .add(
                &unlock,
                &NewSlot::KeyFile(key_file(dir.path(), &n.to_string())),
            )
            .unwrap();
    }
    let error = slots
        .add(&unlock, &NewSlot::KeyFile(key_file(dir.path(), "33")))
        .unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::Invalid);
    assert_eq!(KeySlots::decode(&slots.encode()).unwrap().list().len(), 32);
}

#[test]
fn age_recipient_alias_parses_age_keygen_output() {
    let identity = age_identity();
    let text = identity.to_public().to_string();
    assert!(text.starts_with("age1"));
    let parsed: AgeRecipient = text.parse().unwrap();
    assert_eq!(parsed.to_string(), text);
}

#[test]
fn a_slot_file_longer_than_its_bound_is_refused() {
    let t = three_slots();
    let mut bytes = t.slots.encode();
    bytes.resize(replog_crypt::slots::MAX_SLOTS_FILE_BYTES + 1, 0);
    let error = KeySlots::decode(&bytes).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::SlotsDamaged);
    assert!(error.to_string().contains("at most 329660"), "{error}");
}
