//! The oracle of the `key_slots` fuzz target (`fuzz/fuzz_targets/key_slots.rs`), which the
//! corpus replay test (`tests/fuzz_corpus_replay.rs`) runs too.

use crate::KeySlots;

/// A key slot file from hostile bytes: decoding must not panic, and a file that decodes must
/// encode back to the same bytes (the encoding is canonical, so nothing is silently dropped or
/// changed on the way through).
pub fn key_slots(data: &[u8]) {
    if let Ok(slots) = KeySlots::decode(data) {
        assert_eq!(
            slots.encode(),
            data,
            "a slot file that decodes encodes back to its bytes"
        );
        // What `replog key list` shows must be derivable without a key.
        let _ = slots.list();
    }
}
