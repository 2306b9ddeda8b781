//! Bytes of the handshake: the greeting, option headers, the option data replog understands
//! (`NBD_OPT_GO`/`INFO`, the metadata context options) and every option reply. Pure functions
//! over byte slices, so hostile input is tested without a socket: decoders check every length
//! against the bytes actually present and never allocate more than the input holds.

use super::proto::{self, STRING_BYTES_MAX};

/// Bytes of an option header: magic, option, length.
pub const OPTION_HEADER_BYTES: usize = 16;

/// Why option data was refused; the text goes back to the client with `NBD_REP_ERR_INVALID`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// A client option's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionHeader {
    /// `NBD_OPT_*`.
    pub option: u32,
    /// Bytes of data that follow.
    pub length: u32,
}

/// The option header in `b`, or `None` when its magic is not `IHAVEOPT` (the stream cannot be
/// followed any further).
pub fn decode_option_header(b: &[u8; OPTION_HEADER_BYTES]) -> Option<OptionHeader> {
    let mut c = Reader::new(b);
    (c.u64() == Ok(proto::OPTS_MAGIC)).then(|| OptionHeader {
        option: c.u32().expect("16 bytes hold the header"),
        length: c.u32().expect("16 bytes hold the header"),
    })
}

/// The server's greeting: `NBDMAGIC`, `IHAVEOPT`, handshake flags.
pub fn greeting() -> Vec<u8> {
    let mut b = Vec::with_capacity(18);
    b.extend_from_slice(&proto::INIT_MAGIC.to_be_bytes());
    b.extend_from_slice(&proto::OPTS_MAGIC.to_be_bytes());
    b.extend_from_slice(&(proto::FLAG_FIXED_NEWSTYLE | proto::FLAG_NO_ZEROES).to_be_bytes());
    b
}

/// One option reply: magic, the option it answers, reply type, data.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend_from_slice(&proto::REP_MAGIC.to_be_bytes());
    b.extend_from_slice(&option.to_be_bytes());
    b.extend_from_slice(&reply.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// An error reply with a message for humans (cut to the protocol's string limit).
pub fn option_error(option: u32, reply: u32, message: &str) -> Vec<u8> {
    option_reply(option, reply, clip(message).as_bytes())
}

/// The data of `NBD_REP_SERVER`: the export's name, then a description.
pub fn rep_server(name: &str, description: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(name.len() as u32).to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(clip(description).as_bytes());
    b
}

/// The data of `NBD_REP_INFO` / `NBD_INFO_EXPORT`.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(12);
    b.extend_from_slice(&proto::INFO_EXPORT.to_be_bytes());
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    b
}

/// The data of `NBD_REP_INFO` / `NBD_INFO_NAME` or `NBD_INFO_DESCRIPTION`.
pub fn info_text(info: u16, text: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&info.to_be_bytes());
    b.extend_from_slice(clip(text).as_bytes());
    b
}

/// The data of `NBD_REP_INFO` / `NBD_INFO_BLOCK_SIZE`.
pub fn info_block_size(minimum: u32, preferred: u32, maximum: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(14);
    b.extend_from_slice(&proto::INFO_BLOCK_SIZE.to_be_bytes());
    for v in [minimum, preferred, maximum] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b
}

/// The data of `NBD_REP_META_CONTEXT`.
pub fn meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 + name.len());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(name.as_bytes());
    b
}

/// The reply to `NBD_OPT_EXPORT_NAME`: size, transmission flags, and 124 zero bytes unless the
/// client asked to omit them.
pub fn export_name_reply(size: u64, flags: u16, no_zeroes: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(134);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&flags.to_be_bytes());
    if !no_zeroes {
        b.resize(b.len() + 124, 0);
    }
    b
}

/// `NBD_OPT_INFO` / `NBD_OPT_GO` data: an export name and the information types asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoRequest {
    /// The export's name (empty: the default export).
    pub name: String,
    /// `NBD_INFO_*` types asked for.
    pub infos: Vec<u16>,
}

/// Decodes `NBD_OPT_INFO` / `NBD_OPT_GO` data: u32 name length, name, u16 count, count x u16.
pub fn decode_go(data: &[u8]) -> Result<GoRequest, Invalid> {
    let mut c = Reader::new(data);
    let name = c.string()?;
    let count = c.u16()?;
    let mut infos = Vec::with_capacity(usize::from(count).min(c.remaining() / 2));
    for _ in 0..count {
        infos.push(c.u16()?);
    }
    c.end()?;
    Ok(GoRequest { name, infos })
}

/// `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT` data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaRequest {
    /// The export the contexts are for.
    pub name: String,
    /// The queries (empty: every context, for a list).
    pub queries: Vec<String>,
}

/// Decodes metadata context option data: u32 name length, name, u32 query count, then for each
/// query a u32 length and the query.
pub fn decode_meta(data: &[u8]) -> Result<MetaRequest, Invalid> {
    let mut c = Reader::new(data);
    let name = c.string()?;
    let count = c.u32()?;
    // Every query takes at least its 4-byte length: a larger count cannot be honest.
    if u64::from(count) * 4 > c.remaining() as u64 {
        return Err(Invalid("the query count is larger than the data holds"));
    }
    let mut queries = Vec::with_capacity(count as usize);
    for _ in 0..count {
        queries.push(c.string()?);
    }
    c.end()?;
    Ok(MetaRequest { name, queries })
}

/// `s` cut to at most the protocol's string limit, at a character boundary.
fn clip(s: &str) -> &str {
    if s.len() <= STRING_BYTES_MAX {
        return s;
    }
    let mut end = STRING_BYTES_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Big-endian reads from a slice; every read checks the bytes remain.
#[derive(Debug)]
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the start of `b`.
    pub fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b, at: 0 }
    }

    fn remaining(&self) -> usize {
        self.b.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        if n > self.remaining() {
            return Err(Invalid("the data is shorter than its lengths say"));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> Result<u16, Invalid> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("two bytes"),
        ))
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> Result<u32, Invalid> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("four bytes"),
        ))
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> Result<u64, Invalid> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("eight bytes"),
        ))
    }

    /// A u32 length and that many bytes of UTF-8 without NUL, at most 4096 bytes.
    fn string(&mut self) -> Result<String, Invalid> {
        let len = self.u32()? as usize;
        if len > STRING_BYTES_MAX {
            return Err(Invalid("a string is longer than 4096 bytes"));
        }
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| Invalid("a string is not UTF-8"))?;
        if s.contains('\0') {
            return Err(Invalid("a string contains NUL"));
        }
        Ok(s.to_owned())
    }

    /// Fails unless every byte was read.
    fn end(&self) -> Result<(), Invalid> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(Invalid("the data is longer than its lengths say"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn go_data(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            b.extend_from_slice(&i.to_be_bytes());
        }
        b
    }

    fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            b.extend_from_slice(&(q.len() as u32).to_be_bytes());
            b.extend_from_slice(q.as_bytes());
        }
        b
    }

    #[test]
    fn go_data_round_trips() {
        let got = decode_go(&go_data("os", &[3, 1])).unwrap();
        assert_eq!(
            got,
            GoRequest {
                name: "os".into(),
                infos: vec![3, 1]
            }
        );
        assert_eq!(decode_go(&go_data("", &[])).unwrap().name, "");
    }

    #[test]
    fn go_data_with_lying_lengths_is_invalid() {
        let mut long_name = go_data("os", &[]);
        long_name[3] = 200;
        assert!(decode_go(&long_name).is_err());
        let mut many_infos = go_data("os", &[1]);
        many_infos[7] = 9;
        assert!(decode_go(&many_infos).is_err());
        let mut trailing = go_data("os", &[1]);
        trailing.push(0);
        assert!(decode_go(&trailing).is_err());
        assert!(decode_go(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_go(&go_data("a\0b", &[])).is_err());
        assert!(decode_go(&go_data(&"x".repeat(4097), &[])).is_err());
    }

    #[test]
    fn meta_data_round_trips_and_refuses_impossible_counts() {
        let got = decode_meta(&meta_data("os", &["base:allocation", "x-a:b"])).unwrap();
        assert_eq!(got.queries, vec!["base:allocation", "x-a:b"]);
        let mut huge = meta_data("os", &[]);
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            decode_meta(&huge),
            Err(Invalid("the query count is larger than the data holds"))
        );
    }

    #[test]
    fn option_header_needs_the_magic() {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&proto::OPTS_MAGIC.to_be_bytes());
        b[8..12].copy_from_slice(&7u32.to_be_bytes());
        b[12..].copy_from_slice(&5u32.to_be_bytes());
        assert_eq!(
            decode_option_header(&b),
            Some(OptionHeader {
                option: 7,
                length: 5
            })
        );
        b[0] ^= 1;
        assert_eq!(decode_option_header(&b), None);
    }

    #[test]
    fn messages_are_clipped_at_a_character_boundary() {
        let long = "é".repeat(3000);
        let reply = option_error(1, proto::REP_ERR_INVALID, &long);
        let len = u32::from_be_bytes(reply[16..20].try_into().unwrap()) as usize;
        assert!(len <= STRING_BYTES_MAX);
        assert!(std::str::from_utf8(&reply[20..]).is_ok());
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_go(&data);
            let _ = decode_meta(&data);
        }

        #[test]
        fn decoded_go_requests_re_encode_to_the_input(name in "[a-z]{0,20}", infos in prop::collection::vec(any::<u16>(), 0..20)) {
            let data = go_data(&name, &infos);
            let got = decode_go(&data).unwrap();
            prop_assert_eq!(got, GoRequest { name, infos });
        }
    }
}
