//! Replays `fuzz/corpus/whole_vault/` through the whole-vault oracle under stable `cargo test`,
//! so a finding copied there stays a regression test. Also sweeps a single flipped byte across a
//! sample of every file of the fixture, which is the oracle's strongest case.

use std::path::Path;

use replog_tests::fuzz_vault::whole_vault;

#[test]
fn every_whole_vault_corpus_file_replays_through_the_oracle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/whole_vault");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no file", dir.display());
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/fuzz_targets/whole_vault.rs")
            .is_file(),
        "the whole_vault fuzz target exists"
    );
    for f in &files {
        whole_vault(&std::fs::read(f).unwrap());
    }
}

#[test]
fn single_byte_flips_across_the_fixture_are_caught_or_harmless() {
    let mut cases = 0;
    for file in 0..16u8 {
        for offset in (0..70_000u32).step_by(997) {
            let o = offset.to_le_bytes();
            whole_vault(&[file, o[0], o[1], o[2], o[3], 0x40]);
            cases += 1;
        }
    }
    eprintln!("whole-vault oracle: {cases} single-byte flips, 0 violations");
}
