//! `replog key generate`: a new key file, private from its creation, never over another file.

use std::os::unix::fs::PermissionsExt;

mod support;

#[test]
fn key_generate_writes_a_private_key_file_and_never_replaces_one() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("vault.key");
    let f = file.to_str().unwrap();
    let doc = support::json_of(&["key", "generate", f, "--json"]);
    let fingerprint = doc["fingerprint"].as_str().unwrap().to_owned();
    assert!(fingerprint.len() == 32 && fingerprint.bytes().all(|b| b.is_ascii_hexdigit()));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 64);
    // The file loads as a key, with the fingerprint printed; nothing secret was printed.
    let key = replog_crypt::KeyFile::load(&file).unwrap();
    assert_eq!(replog_crypt::hex(&key.fingerprint()), fingerprint);
    let bytes = std::fs::read(&file).unwrap();
    let secret_hex = replog_crypt::hex(&bytes[16..48]);
    assert!(!doc.to_string().contains(&secret_hex));

    // Never over an existing file: the first key stays as it was.
    let out = support::replog(&["key", "generate", f]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(f) && !err.contains(&secret_hex), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // Two keys differ.
    let other = tmp.path().join("other.key");
    let out = support::replog_ok(&["key", "generate", other.to_str().unwrap()]);
    assert!(
        out.contains("mode 0600") && !out.contains(&fingerprint),
        "{out}"
    );
}
