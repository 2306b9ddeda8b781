//! NBD URIs as qemu and nbdinfo write them: `nbd://HOST[:PORT]/EXPORT` over TCP (port 10809 by
//! default, `[v6 address]` in brackets) and `nbd+unix:///EXPORT?socket=PATH` over a Unix socket.
//! The export name is percent-decoded. Nothing else of the URI syntax (TLS schemes, other query
//! parameters) is accepted: an address replog cannot honour is refused, never half-used.

use std::fmt;
use std::path::PathBuf;

use replog_nbd::{Client, ClientOptions, NbdError};

use crate::error::{Result, VaultError, VaultErrorKind};

/// The NBD port when a `nbd://` URI names none.
pub const NBD_PORT: u16 = 10809;

/// Where an NBD export is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NbdAddress {
    /// TCP: `host:port` as `connect` takes it.
    Tcp(String),
    /// A Unix socket's path.
    Unix(PathBuf),
}

/// An NBD export: an address and an export name, with the URI it was given as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NbdUri {
    /// The server.
    pub address: NbdAddress,
    /// The export's name (may be empty: the server's default export).
    pub export: String,
    uri: String,
}

impl NbdUri {
    /// Whether `s` is meant as an NBD URI (rather than a file name).
    pub fn is_nbd(s: &str) -> bool {
        s.starts_with("nbd://") || s.starts_with("nbd+unix://")
    }

    /// Parses `nbd://HOST[:PORT]/EXPORT` or `nbd+unix:///EXPORT?socket=PATH`.
    pub fn parse(s: &str) -> Result<NbdUri> {
        let bad = |why: &str| {
            VaultError::new(
                VaultErrorKind::InvalidRequest,
                format!("{s:?} is not an NBD URI replog can use: {why}"),
            )
        };
        let (address, path) = if let Some(rest) = s.strip_prefix("nbd+unix://") {
            let (path, query) = rest.split_once('?').ok_or_else(|| bad("no ?socket=PATH"))?;
            let socket = query
                .strip_prefix("socket=")
                .filter(|p| !p.is_empty() && !p.contains('&'))
                .ok_or_else(|| bad("the only query taken is one socket=PATH"))?;
            if !path.is_empty() && !path.starts_with('/') {
                return Err(bad("a Unix socket URI has no host"));
            }
            (NbdAddress::Unix(decode(socket).map_err(bad)?.into()), path)
        } else if let Some(rest) = s.strip_prefix("nbd://") {
            let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
            if authority.contains('?') || path.contains('?') {
                return Err(bad("nbd:// takes no query"));
            }
            (NbdAddress::Tcp(tcp_address(authority).map_err(bad)?), path)
        } else {
            return Err(bad("it starts with neither nbd:// nor nbd+unix://"));
        };
        let export = decode(path.strip_prefix('/').unwrap_or(path)).map_err(bad)?;
        Ok(NbdUri {
            address,
            export,
            uri: s.to_owned(),
        })
    }

    /// Connects and negotiates `meta_contexts`; an error names the URI.
    pub fn connect(&self, meta_contexts: &[String]) -> Result<Client> {
        let mut opts = ClientOptions::new(self.export.clone());
        opts.meta_contexts = meta_contexts.to_vec();
        let connected = match &self.address {
            NbdAddress::Tcp(addr) => Client::connect_tcp(addr, &opts),
            NbdAddress::Unix(path) => Client::connect_unix(path, &opts),
        };
        connected.map_err(|e| self.error(e))
    }

    /// `e`, said about this export.
    pub fn error(&self, e: NbdError) -> VaultError {
        VaultError::from_nbd(&format!("{self} (export {:?})", self.export), e)
    }
}

impl fmt::Display for NbdUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// `host:port` from a URI's authority (`HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT`).
fn tcp_address(authority: &str) -> std::result::Result<String, &'static str> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']').ok_or("an unclosed [")?;
        (format!("[{host}]"), rest.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    if host.is_empty() || host == "[]" || host.contains('@') {
        return Err("no host (or a user name, which NBD has no use for)");
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| "the port is not a number")?,
        None => NBD_PORT,
    };
    Ok(format!("{host}:{port}"))
}

/// Percent-decodes `s`.
fn decode(s: &str) -> std::result::Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a % without two hex digits")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a % without two hex digits")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a name that is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_and_unix_uris_parse_as_qemu_writes_them() {
        let u = NbdUri::parse("nbd://10.0.0.5:10810/os%20disk").unwrap();
        assert_eq!(u.address, NbdAddress::Tcp("10.0.0.5:10810".into()));
        assert_eq!(u.export, "os disk");
        let u = NbdUri::parse("nbd://host").unwrap();
        assert_eq!(u.address, NbdAddress::Tcp("host:10809".into()));
        assert_eq!(u.export, "");
        let u = NbdUri::parse("nbd://[::1]:99/x").unwrap();
        assert_eq!(u.address, NbdAddress::Tcp("[::1]:99".into()));
        let u = NbdUri::parse("nbd+unix:///disk?socket=/run/n.sock").unwrap();
        assert_eq!(u.address, NbdAddress::Unix("/run/n.sock".into()));
        assert_eq!(u.export, "disk");
        assert_eq!(u.to_string(), "nbd+unix:///disk?socket=/run/n.sock");
        let u = NbdUri::parse("nbd+unix://?socket=s.sock").unwrap();
        assert_eq!(u.export, "");
    }

    #[test]
    fn uris_replog_cannot_honour_are_refused() {
        for s in [
            "nbds://host/x",
            "nbd://",
            "nbd://host:port/x",
            "nbd://user@host/x",
            "nbd://host/x?tls=on",
            "nbd+unix:///x",
            "nbd+unix:///x?socket=",
            "nbd+unix:///x?socket=a&tls=on",
            "nbd+unix://host/x?socket=s",
            "nbd://host/%zz",
        ] {
            let e = NbdUri::parse(s).unwrap_err();
            assert_eq!(e.kind(), VaultErrorKind::InvalidRequest, "{s}");
            assert!(e.to_string().contains(s), "{e}");
        }
    }
}
