//! `replog key generate`: a new key file, private from its creation, never over another file.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn replog(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_replog"))
        .args(args)
        .output()
        .expect("replog runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn key_generate_writes_a_private_key_file_and_never_replaces_one() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("vault.key");
    let f = file.to_str().unwrap();
    let (code, out, err) = replog(&["key", "generate", f, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
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
    assert!(!out.contains(&secret_hex) && !err.contains(&secret_hex));

    // Never over an existing file: the first key stays as it was.
    let (code, out, err) = replog(&["key", "generate", f]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(f), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    // Two keys differ.
    let other = tmp.path().join("other.key");
    let (code, out, _) = replog(&["key", "generate", other.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(
        out.contains("mode 0600") && !out.contains(&fingerprint),
        "{out}"
    );
}
