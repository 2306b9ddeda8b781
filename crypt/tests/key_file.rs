//! Key files on a real filesystem: creation, the checks made before a key file is trusted, and
//! that no secret shows in `Debug` or an error.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use replog_crypt::{CryptErrorKind, KeyFile, hex};

/// Writes `bytes` to a new file at `path` with `mode`, as a user's editor or a bad copy might.
fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
    // The umask may have taken bits away; set exactly what the test asks for.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn generated(dir: &Path) -> (std::path::PathBuf, KeyFile, Vec<u8>) {
    let path = dir.join("vault.key");
    let key = KeyFile::generate(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    (path, key, bytes)
}

#[test]
fn a_generated_key_file_loads_with_the_same_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key, bytes) = generated(dir.path());
    assert_eq!(bytes.len(), 64);
    assert_eq!(&bytes[..8], b"RPLG-KEY");
    assert_eq!(bytes[8..16], [1, 0, 0, 0, 0, 0, 0, 0]);
    let loaded = KeyFile::load(&path).unwrap();
    assert_eq!(loaded.fingerprint(), key.fingerprint());
    assert_eq!(loaded.path(), path);
    let via_env_or = KeyFile::from_env_or(Some(&path)).unwrap();
    assert_eq!(via_env_or.fingerprint(), key.fingerprint());
}

#[test]
fn two_generated_key_files_differ() {
    let dir = tempfile::tempdir().unwrap();
    let a = KeyFile::generate(&dir.path().join("a")).unwrap();
    let b = KeyFile::generate(&dir.path().join("b")).unwrap();
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_ne!(
        fs::read(dir.path().join("a")).unwrap(),
        fs::read(dir.path().join("b")).unwrap()
    );
}

#[test]
fn a_key_file_is_created_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = generated(dir.path());
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
}

#[test]
fn an_existing_file_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("precious");
    fs::write(&path, b"not a key").unwrap();
    let error = KeyFile::generate(&path).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::Exists);
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"not a key");
    // A key file is not replaced by a second one either.
    let (path, key, bytes) = generated(dir.path());
    assert_eq!(
        KeyFile::generate(&path).unwrap_err().kind(),
        CryptErrorKind::Exists
    );
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(
        KeyFile::load(&path).unwrap().fingerprint(),
        key.fingerprint()
    );
}

#[test]
fn a_key_file_others_can_read_is_refused_with_the_chmod_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, bytes) = generated(dir.path());
    for mode in [0o644, 0o640, 0o604, 0o660] {
        let path = dir.path().join(format!("loose-{mode:o}"));
        write_with_mode(&path, &bytes, mode);
        let error = KeyFile::load(&path).unwrap_err();
        assert_eq!(error.kind(), CryptErrorKind::KeyFilePermissions, "{mode:o}");
        let message = error.to_string();
        assert!(message.contains(&format!("{mode:04o}")), "{message}");
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        // Once fixed, the same file loads.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        KeyFile::load(&path).unwrap();
    }
    // Owner-only modes narrower than 0600 are fine.
    let path = dir.path().join("read-only");
    write_with_mode(&path, &bytes, 0o400);
    KeyFile::load(&path).unwrap();
}

#[test]
fn a_symbolic_link_to_a_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = generated(dir.path());
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let error = KeyFile::load(&link).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::KeyFilePermissions);
    assert!(error.to_string().contains("symbolic link"), "{error}");
    assert_eq!(error.path(), Some(link.as_path()));
}

#[test]
fn a_truncated_key_file_is_refused_naming_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, bytes) = generated(dir.path());
    let path = dir.path().join("short.key");
    write_with_mode(&path, &bytes[..40], 0o600);
    let error = KeyFile::load(&path).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::Truncated);
    let expected = format!("truncated key file {}: 40 of 64 bytes", path.display());
    assert_eq!(error.to_string(), expected);
    let empty = dir.path().join("empty.key");
    write_with_mode(&empty, &[], 0o600);
    assert!(
        KeyFile::load(&empty)
            .unwrap_err()
            .to_string()
            .contains("0 of 64 bytes")
    );
}

#[test]
fn a_key_file_with_bytes_after_its_end_is_refused_naming_its_length() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, bytes) = generated(dir.path());
    for extra in [1, 4096] {
        let path = dir.path().join(format!("long-{extra}.key"));
        let mut long = bytes.clone();
        long.extend(std::iter::repeat_n(b'\n', extra));
        write_with_mode(&path, &long, 0o600);
        let error = KeyFile::load(&path).unwrap_err();
        assert_eq!(error.kind(), CryptErrorKind::KeyFileDamaged);
        let message = error.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        // At most 65 bytes are read, so the length shown is 65 however long the file is.
        assert!(message.contains("(65 or more)"), "{message}");
    }
}

#[test]
fn a_flipped_secret_byte_is_refused_by_the_check_field() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, bytes) = generated(dir.path());
    for index in [16, 30, 47, 48, 63] {
        let path = dir.path().join(format!("flipped-{index}.key"));
        let mut damaged = bytes.clone();
        damaged[index] ^= 0x01;
        write_with_mode(&path, &damaged, 0o600);
        let error = KeyFile::load(&path).unwrap_err();
        assert_eq!(error.kind(), CryptErrorKind::KeyFileDamaged, "byte {index}");
        assert_eq!(error.offset(), Some(48));
        assert!(error.to_string().contains("at byte 48"), "{error}");
    }
}

#[test]
fn a_bad_magic_or_reserved_field_is_refused_naming_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, bytes) = generated(dir.path());
    for (index, kind) in [
        (0, CryptErrorKind::KeyFileDamaged),
        (8, CryptErrorKind::Unsupported),
        (12, CryptErrorKind::KeyFileDamaged),
    ] {
        let path = dir.path().join(format!("bad-{index}.key"));
        let mut damaged = bytes.clone();
        damaged[index] ^= 0x02;
        write_with_mode(&path, &damaged, 0o600);
        let error = KeyFile::load(&path).unwrap_err();
        assert_eq!(
            (error.kind(), error.offset()),
            (kind, Some(index as u64)),
            "{error}"
        );
    }
}

#[test]
fn a_directory_or_fifo_at_the_key_path_is_refused_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("dir.key");
    fs::create_dir(&sub).unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
    let error = KeyFile::load(&sub).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::KeyFilePermissions);
    assert!(error.to_string().contains("not a regular file"), "{error}");

    // A FIFO with no writer would block a plain open forever.
    let fifo = dir.path().join("fifo.key");
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(&fifo)
        .status();
    if made.is_ok_and(|status| status.success()) {
        let error = KeyFile::load(&fifo).unwrap_err();
        assert_eq!(error.kind(), CryptErrorKind::KeyFilePermissions);
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }
}

#[test]
fn a_key_file_owned_by_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = generated(dir.path());
    // Only root can give a file away; elsewhere this test has nothing to check.
    if std::os::unix::fs::chown(&path, Some(4242), None).is_err() {
        eprintln!("skipped: cannot chown as this user");
        return;
    }
    let error = KeyFile::load(&path).unwrap_err();
    assert_eq!(error.kind(), CryptErrorKind::KeyFilePermissions);
    assert!(error.to_string().contains("uid 4242"), "{error}");
    // Owned by root is accepted whoever runs (a key file root provisioned).
    std::os::unix::fs::chown(&path, Some(0), None).unwrap();
    KeyFile::load(&path).unwrap();
}

#[test]
fn no_secret_byte_shows_in_debug_or_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, key, bytes) = generated(dir.path());
    let secret_hex = hex(&bytes[16..48]);
    let check_hex = hex(&bytes[48..64]);
    let mut shown = vec![
        format!("{key:?}"),
        format!("{:?}", KeyFile::load(&path).unwrap()),
    ];
    assert!(shown[0].contains(&hex(&key.fingerprint())));
    // Errors made while reading this very file.
    let loose = dir.path().join("loose");
    write_with_mode(&loose, &bytes, 0o644);
    shown.push(format!("{0} {0:?}", KeyFile::load(&loose).unwrap_err()));
    let mut damaged = bytes.clone();
    damaged[20] ^= 1;
    let flipped = dir.path().join("flipped");
    write_with_mode(&flipped, &damaged, 0o600);
    shown.push(format!("{0} {0:?}", KeyFile::load(&flipped).unwrap_err()));
    for text in &shown {
        for window in bytes[16..48].windows(4) {
            assert!(!text.contains(&hex(window)), "secret bytes in {text}");
        }
        assert!(
            !text.contains(&secret_hex) && !text.contains(&check_hex),
            "{text}"
        );
    }
}
