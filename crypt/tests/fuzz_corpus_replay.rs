//! Replays every file of the `key_slots` fuzz corpus (`fuzz/corpus/key_slots/`) through the
//! oracle the fuzz target runs, under stable `cargo test`, so a finding minimized into the
//! corpus stays a regression test. The seed (`seed-three-kinds`: a key file, a passphrase and
//! an age slot) is written by the ignored `write_seed_corpus`; it holds random salts and nonces,
//! so it is kept as written rather than compared with a new one.

use std::path::{Path, PathBuf};

use replog_crypt::{Argon2Params, DataKey, KeyFile, KeySlots, NewSlot, Unlock};
use zeroize::Zeroizing;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/key_slots")
}

#[test]
fn every_corpus_file_passes_the_oracle() {
    let mut files = 0;
    for entry in std::fs::read_dir(corpus()).expect("the corpus exists") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        replog_crypt::fuzzing::key_slots(&bytes);
        // Every truncation of it, too: the fuzzer's first mutations.
        for len in (0..bytes.len()).step_by(7) {
            replog_crypt::fuzzing::key_slots(&bytes[..len]);
        }
        files += 1;
    }
    assert!(files >= 1, "the corpus holds its seed");
    let seed = std::fs::read(corpus().join("seed-three-kinds")).unwrap();
    let slots = KeySlots::decode(&seed).expect("the seed decodes");
    assert_eq!(slots.list().len(), 3);
}

#[test]
#[ignore = "rewrites fuzz/corpus/key_slots/seed-three-kinds"]
fn write_seed_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let key_path = tmp.path().join("k");
    let key = KeyFile::generate(&key_path).unwrap();
    let data_key = DataKey::generate();
    let mut slots = KeySlots::new(*b"fuzz-corpus-vlt1", &data_key, &NewSlot::KeyFile(key)).unwrap();
    let unlock = Unlock::KeyFile(KeyFile::load(&key_path).unwrap());
    let small = Argon2Params {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };
    let passphrase = NewSlot::Passphrase {
        passphrase: Zeroizing::new("fuzz".to_owned()),
        params: small,
    };
    slots.add(&unlock, &passphrase).unwrap();
    #[allow(deprecated)] // X25519 identities are what age slots open with; see AgeRecipient.
    let recipient = age::x25519::Identity::generate().to_public();
    slots.add(&unlock, &NewSlot::Age(vec![recipient])).unwrap();
    std::fs::create_dir_all(corpus()).unwrap();
    std::fs::write(corpus().join("seed-three-kinds"), slots.encode()).unwrap();
}
