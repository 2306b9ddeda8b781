//! File names inside a vault directory. Pure names, no I/O.
//!
//! ```text
//! VAULT                       vault header
//! MANIFEST                    manifest (replaced atomically via MANIFEST.tmp)
//! LOCK                        held (flock) by the one writer
//! bases/<disk>.<gen>.base     base image of disk <disk> (decimal), generation <gen> (decimal)
//! journal/<id>.seg            journal segment <id> (16 lower-case hex digits)
//! digests/<disk>.dig          block digest cache of disk <disk>
//! quarantine/                 torn tails cut by recovery, kept for inspection
//! index/<lsn>.idx             checkpoint index at LSN <lsn> (16 lower-case hex digits)
//! ```

use std::path::{Path, PathBuf};

/// Whether `path` names a vault file the way errors do: relative to the vault directory,
/// starting with one of the vault's own top-level names (`MANIFEST`, `journal/…`, ...).
pub fn is_vault_file(path: &Path) -> bool {
    let Some(std::path::Component::Normal(first)) = path.components().next() else {
        return false;
    };
    path.is_relative()
        && [
            VAULT_FILE,
            MANIFEST_FILE,
            MANIFEST_TMP_FILE,
            LOCK_FILE,
            BASES_DIR,
            JOURNAL_DIR,
            DIGESTS_DIR,
            QUARANTINE_DIR,
            INDEX_DIR,
            crate::lease::LEASES_DIR,
            crate::remote::REMOTE_DIR,
        ]
        .iter()
        .any(|name| first == *name)
}

/// The vault header file.
pub const VAULT_FILE: &str = "VAULT";
/// The manifest.
pub const MANIFEST_FILE: &str = "MANIFEST";
/// The manifest being written, before its rename.
pub const MANIFEST_TMP_FILE: &str = "MANIFEST.tmp";
/// The writer's lock file.
pub const LOCK_FILE: &str = "LOCK";
/// Directory of base images.
pub const BASES_DIR: &str = "bases";
/// Directory of journal segments.
pub const JOURNAL_DIR: &str = "journal";
/// Directory of digest caches.
pub const DIGESTS_DIR: &str = "digests";
/// Directory of cut tails.
pub const QUARANTINE_DIR: &str = "quarantine";

/// Directory of checkpoint indexes.
pub const INDEX_DIR: &str = "index";

/// `index/<lsn>.idx`.
pub fn checkpoint_path(vault: &Path, lsn: u64) -> PathBuf {
    vault.join(INDEX_DIR).join(format!("{lsn:016x}.idx"))
}

/// Parses a checkpoint file name back to its LSN.
pub fn parse_checkpoint_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".idx")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// `journal/<id>.seg`.
pub fn segment_path(vault: &Path, segment_id: u64) -> PathBuf {
    vault.join(JOURNAL_DIR).join(segment_file_name(segment_id))
}

/// `<id>.seg`, 16 hex digits.
pub fn segment_file_name(segment_id: u64) -> String {
    format!("{segment_id:016x}.seg")
}

/// Parses a segment file name back to its id.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".seg")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// `bases/<disk>.<gen>.base`.
pub fn base_path(vault: &Path, disk_id: u32, generation: u64) -> PathBuf {
    vault
        .join(BASES_DIR)
        .join(format!("{disk_id}.{generation}.base"))
}

/// `digests/<disk>.dig`.
pub fn digest_path(vault: &Path, disk_id: u32) -> PathBuf {
    vault.join(DIGESTS_DIR).join(format!("{disk_id}.dig"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(26), "000000000000001a.seg");
        assert_eq!(parse_segment_file_name("000000000000001a.seg"), Some(26));
        assert_eq!(parse_segment_file_name("1a.seg"), None);
    }
}
