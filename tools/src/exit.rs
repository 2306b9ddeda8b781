//! Exit codes, in one table: every kind of failure the libraries report maps to one code, and a
//! test checks that no kind is left out. README.md's "Exit codes" section says the same.

use replog_vault::VaultErrorKind;

/// Success.
pub const EXIT_OK: u8 = 0;
/// The operation failed: an I/O error, an invalid request, a refusal.
pub const EXIT_FAILED: u8 = 1;
/// Damage was found: a checksum, a length or a record that is wrong.
pub const EXIT_DAMAGED: u8 = 2;
/// A live failover was stopped (SIGINT or SIGTERM) before every disk was complete; what was
/// copied and written is kept, and running it again resumes (EX_TEMPFAIL: try again).
pub const EXIT_INTERRUPTED: u8 = 75;
/// The command line is invalid (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// The exit code of each kind of failure.
const EXIT_CODES: [(VaultErrorKind, u8); VaultErrorKind::ALL.len()] = [
    (VaultErrorKind::NotFound, EXIT_FAILED),
    (VaultErrorKind::NotAVault, EXIT_FAILED),
    (VaultErrorKind::Damaged, EXIT_DAMAGED),
    (VaultErrorKind::Io, EXIT_FAILED),
    (VaultErrorKind::NoSpace, EXIT_FAILED),
    (VaultErrorKind::InvalidRequest, EXIT_FAILED),
    (VaultErrorKind::AlreadyExists, EXIT_FAILED),
    (VaultErrorKind::Locked, EXIT_FAILED),
    (VaultErrorKind::Poisoned, EXIT_FAILED),
    (VaultErrorKind::Migrated, EXIT_FAILED),
    (VaultErrorKind::Leased, EXIT_FAILED),
    (VaultErrorKind::NoSuchPoint, EXIT_FAILED),
    (VaultErrorKind::NoPointAtTime, EXIT_FAILED),
    (VaultErrorKind::NoPoints, EXIT_FAILED),
    (VaultErrorKind::TestFailoverActive, EXIT_FAILED),
    (VaultErrorKind::NoRetentionPolicy, EXIT_FAILED),
    (VaultErrorKind::Remote, EXIT_FAILED),
];

/// The exit code for a failure of `kind`.
pub fn exit_code(kind: VaultErrorKind) -> u8 {
    EXIT_CODES
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(EXIT_FAILED, |&(_, code)| code)
}

#[cfg(test)]
mod tests;
