use super::*;

#[test]
fn every_kind_has_exactly_one_exit_code() {
    for kind in VaultErrorKind::ALL {
        let n = EXIT_CODES.iter().filter(|(k, _)| *k == kind).count();
        assert_eq!(n, 1, "{kind:?} is in the exit-code table {n} times");
    }
}

#[test]
fn readme_documents_every_exit_code() {
    let readme = include_str!("../../../README.md");
    let section = readme
        .split("## Exit codes")
        .nth(1)
        .expect("README.md has an \"Exit codes\" section");
    for code in [
        EXIT_OK,
        EXIT_FAILED,
        EXIT_DAMAGED,
        EXIT_INTERRUPTED,
        EXIT_USAGE,
    ] {
        assert!(
            section.contains(&format!("| {code} ")),
            "README.md's exit-code table lacks {code}"
        );
    }
}
