//! What an operator reads: errors that name the path and the vault, the same exit code for the
//! same damage from every command, tables that a hostile label cannot take over, no Rust debug
//! output, and shell completions and man pages. Each test is named after the review finding it
//! keeps fixed. The built `replog` binary runs as a child process, on real files.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::common::{Run, replog_run, s};

const EXIT_FAILED: i32 = 1;
const EXIT_DAMAGED: i32 = 2;

fn replog(args: &[&str]) -> Run {
    Run::from(replog_run(args))
}

fn ok(args: &[&str]) -> String {
    let r = replog(args);
    assert_eq!(r.code, 0, "replog {args:?} failed: {}", r.stderr);
    r.stdout
}

/// A vault with one 1 MiB disk and the given labelled points.
fn vault(root: &Path, labels: &[&str]) -> std::path::PathBuf {
    let v = root.join("vault");
    ok(&["init", s(&v)]);
    ok(&["disk", "add", s(&v), "os", "--size", "1MiB"]);
    for label in labels {
        ok(&["point", s(&v), "--label", label]);
    }
    v
}

/// Finding 15: `inspect FILE` said "VAULT: cannot look for: Not a directory", naming neither
/// the path given nor what was wrong with it; a missing directory read as "not a vault".
#[test]
fn finding_15_inspect_of_a_file_or_a_missing_directory_names_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a vault").unwrap();
    let r = replog(&["inspect", s(&file)]);
    assert_eq!(r.code, EXIT_FAILED);
    assert!(
        r.stderr.contains(&format!(
            "{} is not a replog vault: it is not a directory",
            s(&file)
        )),
        "{}",
        r.stderr
    );
    let missing = tmp.path().join("nowhere");
    let r = replog(&["points", s(&missing)]);
    assert_eq!(r.code, EXIT_FAILED);
    assert!(
        r.stderr
            .contains(&format!("{}: no such vault directory", s(&missing))),
        "{}",
        r.stderr
    );
}

/// Finding 15: a missing `MANIFEST` was damage (exit 2) for `verify` but a plain failure
/// (exit 1) for `failover`, `points` and `point`. Next to a `VAULT` file it is damage for all of them,
/// and the error names the vault as well as the vault-relative file.
#[test]
fn finding_15_a_missing_manifest_is_damage_for_every_command_and_names_the_vault() {
    let tmp = tempfile::tempdir().unwrap();
    let v = vault(tmp.path(), &["one"]);
    std::fs::remove_file(v.join("MANIFEST")).unwrap();
    let out = tmp.path().join("out");
    let commands: [&[&str]; 6] = [
        &["verify", s(&v)],
        &["points", s(&v)],
        &["inspect", s(&v)],
        &["dump", s(&v)],
        &["failover", s(&v), "--latest", "--out", s(&out)],
        &["point", s(&v)],
    ];
    for args in commands {
        let r = replog(args);
        // `verify` reports on standard output, the others on standard error.
        let said = format!("{}{}", r.stdout, r.stderr);
        assert_eq!(r.code, EXIT_DAMAGED, "replog {args:?}: {said}");
        assert!(said.contains("MANIFEST"), "{args:?}: {said}");
        assert!(said.contains(s(&v)), "{args:?}: {said}");
    }
    assert!(
        !out.exists(),
        "a failed failover created its output directory"
    );
}

/// Finding 15: reader errors name vault files relative to the vault, so an operator with
/// several vaults could not tell which one was damaged.
#[test]
fn finding_15_damage_in_a_vault_file_names_the_vault_too() {
    let tmp = tempfile::tempdir().unwrap();
    let v = vault(tmp.path(), &["one"]);
    let manifest = v.join("MANIFEST");
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(&manifest, &bytes).unwrap();
    let r = replog(&["points", s(&v)]);
    assert_eq!(r.code, EXIT_DAMAGED, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with(&format!("replog: vault {}: MANIFEST: ", s(&v))),
        "{}",
        r.stderr
    );
}

/// Finding 15: `points` printed labels raw, so a label could carry terminal escape codes that
/// recolour or clear the operator's screen. Tables escape control characters; JSON keeps the
/// label exact (JSON escapes it by itself).
#[test]
fn finding_15_labels_with_escape_codes_are_escaped_in_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let hostile = "\u{1b}[2J\u{1b}[31mred\u{1b}[0m\rover\u{9b}";
    let v = vault(tmp.path(), &[hostile]);
    let table = ok(&["points", s(&v)]);
    assert!(
        !table.chars().any(|c| c.is_control() && c != '\n'),
        "control characters reached the table: {table:?}"
    );
    assert!(table.contains("\\u{1b}[31mred"), "{table}");
    let json: Value = serde_json::from_str(&ok(&["points", s(&v), "--json"])).unwrap();
    assert_eq!(json[0]["label"], hostile, "{json}");
}

/// Finding 15: `inspect` printed the open segment's end as Rust debug output
/// (`Clean { offset: 4182 }`), in its table and in its JSON.
#[test]
fn finding_15_inspect_prints_no_rust_debug_output() {
    let tmp = tempfile::tempdir().unwrap();
    let v = vault(tmp.path(), &["one"]);
    let text = ok(&["inspect", s(&v)]);
    assert!(!text.contains('{') && !text.contains("Clean"), "{text}");
    assert!(text.contains("records end cleanly at byte"), "{text}");
    assert!(text.contains("compression none"), "{text}");
    let json: Value = serde_json::from_str(&ok(&["inspect", s(&v), "--json"])).unwrap();
    let end = &json["open_segment_end"];
    assert_eq!(end["state"], "clean", "{json}");
    assert!(end["offset"].as_u64().is_some_and(|o| o > 0), "{json}");
    assert_eq!(json["compression"], "none");
}

/// Finding 16: operators expect shell completions and man pages. `replog completions SHELL`
/// prints a script that the shell accepts, and `replog man DIR` writes one roff page per command.
#[test]
fn finding_16_completions_for_every_shell_and_a_man_page_per_command() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = ok(&["completions", shell]);
        assert!(
            script.contains("failover") && script.contains("complete-migration"),
            "{shell}: {script}"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("replog.bash");
    std::fs::write(&script, ok(&["completions", "bash"])).unwrap();
    let loaded = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p replog", s(&script)))
        .output()
        .unwrap();
    assert!(
        loaded.status.success() && String::from_utf8_lossy(&loaded.stdout).contains("replog"),
        "bash does not load the script: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert_eq!(replog(&["completions", "tcsh"]).code, 64);

    let man = tmp.path().join("man1");
    let listed = ok(&["man", s(&man)]);
    for page in [
        "replog.1",
        "replog-failover.1",
        "replog-disk-add.1",
        "replog-complete-migration.1",
    ] {
        let path = man.join(page);
        let roff = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(roff.starts_with(".ie") || roff.contains(".TH"), "{page}");
        assert!(listed.contains(s(&path)), "{listed}");
    }
    assert!(
        !man.join("replog-torture.1").exists(),
        "a hidden command got a page"
    );
}

/// Finding 15: a full disk during a failover read "…to byte 19595264 of: No space left on
/// device", the sentence cut off before its object. The output directory is on a 4 MiB tmpfs
/// (mounting one needs root, as CI is; the test says so if it cannot).
#[test]
fn finding_15_a_full_disk_is_reported_in_a_whole_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let v = tmp.path().join("vault");
    ok(&["init", s(&v)]);
    let image = tmp.path().join("os.img");
    let data: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8 | 1).collect();
    std::fs::write(&image, &data).unwrap();
    ok(&["disk", "add", s(&v), "os", "--from", s(&image)]);
    ok(&["point", s(&v)]);
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs", s(&small)])
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "mounting a small tmpfs needs root (CI runs as root)"
    );
    let out = small.join("out");
    let r = replog(&["failover", s(&v), "--latest", "--out", s(&out)]);
    let _ = Command::new("umount").arg(s(&small)).status();
    assert_eq!(r.code, EXIT_FAILED, "{}", r.stderr);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    assert!(
        !r.stderr.contains(" of:") && !r.stderr.contains(" of: "),
        "{}",
        r.stderr
    );
}
