use super::*;
use clap::CommandFactory;
use proptest::prelude::*;

/// Words the parser knows, so that random argument vectors reach past the subcommand into
/// the flags and their value parsers (sizes, durations, times, URLs, KEY=VALUE).
const WORDS: &[&str] = &[
    "init",
    "disk",
    "add",
    "ingest",
    "point",
    "points",
    "inspect",
    "dump",
    "verify",
    "checkpoint",
    "failover",
    "remote",
    "show",
    "sync",
    "serve-nbd",
    "retention",
    "prune",
    "test-failover",
    "complete-migration",
    "bench",
    "write",
    "resolve",
    "completions",
    "man",
    "--from",
    "--size",
    "--format",
    "--point",
    "--latest",
    "--at",
    "--out",
    "--force",
    "--json",
    "--label",
    "--window",
    "--keep-last",
    "--block-size",
    "--segment-size",
    "--cache-limit",
    "--remote-option",
    "--remote-retries",
    "--backend",
    "--parallel",
    "--listen",
    "--unix",
    "--max-clients",
    "--handshake-timeout",
    "--idle-timeout",
    "--allow-older",
    "--total",
    "--block",
    "s3://b/p",
    "az://c/p",
    "gs://x",
    "s3:/x",
    "-1",
    "0",
    "18446744073709551616",
    "1GiB",
    "9999999TiB",
    "72h",
    "1e9s",
    "bash",
    "=",
    "2026-12-06T00:00:00Z",
    "V",
    "",
];

fn argument() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => "[/a-z0-9:=.-]{0,40}".prop_map(|s| s.repeat(60)),
    ]
}

#[test]
fn the_command_line_definition_is_consistent() {
    Cli::command().debug_assert();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// No argument vector panics the parser or its value parsers, and every command it
    /// accepts answers which vault it names (review finding 5 was a panic reached from an
    /// argument; this covers the parsing half, the fuzz target `cli_args` the URL checks).
    #[test]
    fn no_argument_vector_panics_the_parser(args in proptest::collection::vec(argument(), 0..8)) {
        let argv = std::iter::once("replog".to_owned()).chain(args);
        if let Ok(cli) = Cli::try_parse_from(argv) {
            let _ = cli.command.vault();
        }
    }
}

#[test]
fn a_period_is_a_number_and_a_unit() {
    assert_eq!(parse_lock_period("30d"), Ok(30 * 86_400));
    assert_eq!(parse_lock_period("12h"), Ok(12 * 3600));
    assert_eq!(parse_lock_period("90m"), Ok(5400));
    assert_eq!(parse_lock_period("2w"), Ok(14 * 86_400));
    assert_eq!(parse_lock_period("1s"), Ok(1));
    for bad in [
        "",
        "30",
        "d",
        "30x",
        "-1d",
        "1.5d",
        "30 d",
        "0d",
        "36501d",
        "99999999999999999999d",
    ] {
        assert!(parse_lock_period(bad).is_err(), "{bad:?}");
    }
    assert!(parse_lock_period("0h").unwrap_err().contains("zero"));
    assert!(
        parse_lock_period("36501d")
            .unwrap_err()
            .contains("100 years")
    );
}
