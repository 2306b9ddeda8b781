//! `replog key`: the key files an encrypted vault will be opened with.

use serde_json::json;

use crate::cli::KeyGenerateArgs;
use crate::output::print_json;
use crate::{CmdResult, EXIT_OK, Failure};

/// `replog key generate FILE`: a new random key in a new file, mode 0600, never over an
/// existing one. Prints the key's fingerprint (which names it in a vault's key slots), never
/// the key.
pub fn generate(args: &KeyGenerateArgs) -> CmdResult {
    let key = replog_crypt::KeyFile::generate(&args.file).map_err(|e| {
        let kind = match e.kind() {
            replog_crypt::CryptErrorKind::Exists => replog_vault::VaultErrorKind::AlreadyExists,
            _ => replog_vault::VaultErrorKind::Io,
        };
        Failure::of_kind(kind, e.to_string())
    })?;
    let fingerprint = replog_crypt::hex(&key.fingerprint());
    if args.json {
        print_json(&json!({"file": args.file.display().to_string(), "fingerprint": fingerprint}));
    } else {
        println!(
            "wrote {} (mode 0600), key fingerprint {fingerprint}; keep a copy away from the vault and its remote",
            args.file.display()
        );
    }
    Ok(EXIT_OK)
}
