//! Fuzz target `cli_args`: command-line arguments as the `replog` CLI receives them, run through
//! every check a vault or remote argument meets before anything is read or written: is it a
//! URL of some scheme, a remote URL replog knows, within the remote configuration's limits,
//! and a key of the remote layout.
//!
//! The input is an argument vector: arguments separated by NUL bytes, each taken as UTF-8 where
//! it is (lossily otherwise, as an `OsString` is shown). No argument may panic (finding 5 of
//! issue 16 was an assert reached from a 2,100-slash URL), and a URL `parse_remote_url` accepts
//! must be one a remote configuration can store: it encodes without the encoder's assert and
//! decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use replog_format::remote::{
    self, RemoteConfig, is_remote_url, looks_like_url, parse_remote_url,
};

fuzz_target!(|data: &[u8]| {
    for raw in data.split(|&b| b == 0) {
        let arg = String::from_utf8_lossy(raw);
        check_argument(&arg);
        // The same argument made long, as a careless or hostile operator might: the limits
        // must be met before any encoder sees it.
        if !arg.is_empty() && arg.len() < 64 {
            check_argument(&arg.repeat(2100 / arg.len() + 1));
        }
    }
});

fn check_argument(arg: &str) {
    let url_like = looks_like_url(arg);
    match parse_remote_url(arg) {
        Ok(parts) => {
            assert!(is_remote_url(arg) && url_like, "{arg:?}");
            assert!(arg.len() <= remote::REMOTE_URL_BYTES_MAX);
            assert!(matches!(parts.scheme, "s3" | "az"));
            assert!(!parts.bucket.is_empty() && !parts.bucket.contains('/'));
            assert!(!parts.prefix.starts_with('/') && !parts.prefix.ends_with('/'));
            let config = RemoteConfig {
                vault_id: [7; 16],
                url: arg.to_owned(),
                cache_limit_bytes: 1 << 30,
                keep_manifests: 2,
            };
            let bytes = config.encode(0x1234_5678);
            assert_eq!(RemoteConfig::decode(&bytes, 0x1234_5678).as_ref(), Ok(&config));
        }
        Err(remote::UrlError::TooLong { bytes }) => {
            assert_eq!(bytes, arg.len());
            assert!(bytes > remote::REMOTE_URL_BYTES_MAX);
        }
        Err(remote::UrlError::Unsupported) => assert!(!is_remote_url(arg), "{arg:?}"),
    }
    // Keys of the remote layout, which listings hand back: each parses to what names it.
    if let Some(seq) = remote::parse_manifest_key(arg) {
        assert_eq!(remote::manifest_key(seq), arg);
    }
    if let Some(seq) = remote::parse_mark_key(arg) {
        assert_eq!(remote::mark_key(seq), arg);
    }
    if let Some(hash) = remote::parse_chunk_key(arg) {
        assert_eq!(remote::chunk_key(&hash), arg);
    }
    if let Some(hash) = remote::parse_map_key(arg) {
        assert_eq!(remote::map_key(&hash), arg);
    }
}
