//! Reading a passphrase: from `REPLOG_PASSPHRASE` when it is set (scripts and tests), else
//! from the terminal with echo off.
//!
//! The environment variable is for unattended use only: another process of the same user can
//! read a process's environment (`/proc/PID/environ`), so an interactive user should let the
//! prompt ask.
//!
//! This module owns where a passphrase comes from. It must not know what the passphrase opens.

use std::ffi::OsString;

use zeroize::Zeroizing;

use crate::error::{CryptError, CryptErrorKind, Result};

/// The environment variable read before prompting.
pub const PASSPHRASE_ENV: &str = "REPLOG_PASSPHRASE";

/// The passphrase from `REPLOG_PASSPHRASE` if set, else typed at the terminal after `prompt`
/// with the input hidden.
pub fn read_passphrase(prompt: &str) -> Result<Zeroizing<String>> {
    passphrase_from(std::env::var_os(PASSPHRASE_ENV), || {
        rpassword::prompt_password(prompt).map_err(|error| {
            CryptError::new(
                CryptErrorKind::NoKey,
                format!(
                    "cannot read a passphrase from the terminal ({error}); set {PASSPHRASE_ENV} \
                     when no terminal is attached"
                ),
            )
        })
    })
}

fn passphrase_from(
    env: Option<OsString>,
    prompt: impl FnOnce() -> Result<String>,
) -> Result<Zeroizing<String>> {
    let passphrase = match env {
        Some(value) => Zeroizing::new(value.into_string().map_err(|_| {
            CryptError::new(
                CryptErrorKind::Invalid,
                format!("{PASSPHRASE_ENV} is not valid UTF-8"),
            )
        })?),
        None => Zeroizing::new(prompt()?),
    };
    if passphrase.is_empty() {
        return Err(CryptError::new(
            CryptErrorKind::NoKey,
            "the passphrase is empty",
        ));
    }
    Ok(passphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_is_read_before_the_prompt() {
        let got = passphrase_from(Some("from env".into()), || panic!("prompted")).unwrap();
        assert_eq!(got.as_str(), "from env");
        let got = passphrase_from(None, || Ok("typed".into())).unwrap();
        assert_eq!(got.as_str(), "typed");
    }

    #[test]
    fn an_empty_passphrase_is_refused() {
        let error = passphrase_from(Some("".into()), || panic!("prompted")).unwrap_err();
        assert_eq!(error.kind(), CryptErrorKind::NoKey);
    }
}
