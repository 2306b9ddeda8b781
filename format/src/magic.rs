//! Every magic number and the format version, in one place.
//!
//! Each vault file starts with an 8-byte magic followed by the format version, except journal
//! records, which are identified by their kind byte and checksum.

/// The vault header file, `VAULT`.
pub const VAULT: [u8; 8] = *b"RPLG-VLT";
/// The manifest, `MANIFEST`.
pub const MANIFEST: [u8; 8] = *b"RPLG-MAN";
/// A journal segment header, `journal/<id>.seg`.
pub const SEGMENT: [u8; 8] = *b"RPLG-SEG";
/// The trailer that ends a sealed segment.
pub const FOOTER_TRAILER: [u8; 8] = *b"RPLG-FTR";
/// A base image, `bases/<disk>.<generation>.base`.
pub const BASE: [u8; 8] = *b"RPLG-BAS";
/// A checkpoint index, `index/<lsn>.idx`.
pub const CHECKPOINT: [u8; 8] = *b"RPLG-IDX";
/// A block digest cache, `digests/<disk>.dig`.
pub const DIGEST: [u8; 8] = *b"RPLG-DIG";
/// A reader's lease on a recovery point, `leases/<name>.lease`.
pub const LEASE: [u8; 8] = *b"RPLG-LSE";
/// A remote manifest, `manifests/<seq>.rman` in object storage.
pub const REMOTE_MANIFEST: [u8; 8] = *b"RPLG-RMN";
/// A remote file map, `maps/<hash>.map` in object storage.
pub const REMOTE_FILE_MAP: [u8; 8] = *b"RPLG-RFM";
/// A vault's remote configuration, `remote/CONFIG`.
pub const REMOTE_CONFIG: [u8; 8] = *b"RPLG-RCF";
/// A vault's remote immutability setting (S3 Object Lock), `remote/IMMUTABLE`.
pub const REMOTE_IMMUTABLE: [u8; 8] = *b"RPLG-RIM";
/// A live failover's hydration map, `.<disk>.hydration` beside its output image.
pub const HYDRATION: [u8; 8] = *b"RPLG-HYD";

/// The manifest versions this code reads. Version 1 is the initial manifest; version 2 appends
/// the lifecycle section (retention policy, pins, retired points, migration record). A manifest
/// is written as version 2 exactly when that section has something in it, so a vault that never
/// used those features keeps a version 1 manifest that older code still reads. Version 3 is
/// written once a disk was resized (body flag bit 0), so code that does not know resize records
/// refuses the vault instead of misreading one. Version 4 is written exactly when a listed
/// segment's dead prefix was released (segment entry flag bit 0: its bytes from the header to
/// the base point's page read as zeros), so older code refuses the vault instead of reporting
/// the hole as damage. Version 5 is written exactly when the manifest lists dead ranges (runs
/// of records no kept point reads, whose whole pages may read as zeros), for the same reason.
pub const MANIFEST_VERSIONS: [u32; 5] = [1, 2, 3, 4, 5];

/// The format versions this code knows. Capabilities hang off the version so that a later
/// version can add structures while old vaults keep opening.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FormatVersion {
    /// The first version: everything described in `FORMAT.md` 1.
    V1 = 1,
}

impl FormatVersion {
    /// The version new vaults are written with.
    pub const CURRENT: FormatVersion = FormatVersion::V1;

    /// Parses a version number read from disk.
    pub fn from_u32(value: u32) -> Option<FormatVersion> {
        match value {
            1 => Some(FormatVersion::V1),
            _ => None,
        }
    }

    /// The number stored on disk.
    pub fn as_u32(self) -> u32 {
        self as u32
    }
}
