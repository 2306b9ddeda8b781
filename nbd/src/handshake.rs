//! The fixed newstyle handshake, server side: the greeting, the client's flags, then options
//! until the client picks an export (`NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`) or leaves.
//!
//! Every option is answered as the protocol defines: unknown ones with `NBD_REP_ERR_UNSUP`,
//! malformed ones with `NBD_REP_ERR_INVALID`, unknown exports with `NBD_REP_ERR_UNKNOWN`, and
//! option data over [`OPTION_DATA_BYTES_MAX`] is read and dropped (never held) and answered with
//! `NBD_REP_ERR_TOO_BIG`. Only what makes the stream impossible to follow (a wrong magic,
//! unknown client flags, an `NBD_OPT_EXPORT_NAME` that cannot be served) ends the connection.

use std::io::{self, Read, Write};

use super::export::{Backend, ExportInfo};
use super::proto::{self, OPTION_DATA_BYTES_MAX};
use super::wire::{self, OPTION_HEADER_BYTES};

/// What the client and the server agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Index of the export in the list.
    pub export: usize,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected for this export.
    pub base_allocation: bool,
    /// The transmission flags sent.
    pub flags: u16,
}

/// How the handshake ended without an export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client sent `NBD_OPT_ABORT`.
    Aborted,
    /// The client broke the protocol in a way that cannot be answered; the reason, for the log.
    Violation(String),
}

/// Whether the server takes the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Serve it.
    Serve,
    /// Answer every option with `NBD_REP_ERR_POLICY` and this message (too many clients), until
    /// the client gives up.
    Refuse(String),
}

/// What the server offers: the backend's exports, each described by its device.
#[derive(Clone, Copy)]
pub struct Offer<'a> {
    /// The exports.
    pub backend: &'a dyn Backend,
}

impl Offer<'_> {
    fn exports(&self) -> &[ExportInfo] {
        self.backend.exports()
    }

    /// Export `index`'s size and whether it is read-only, as its device says.
    fn device(&self, index: usize) -> (u64, bool) {
        let device = self.backend.open(index);
        (device.size(), device.read_only())
    }
}

/// Negotiation state between options.
#[derive(Debug, Default)]
struct State {
    no_zeroes: bool,
    structured: bool,
    /// The export `base:allocation` was selected for by the last `NBD_OPT_SET_META_CONTEXT`.
    meta_export: Option<usize>,
}

/// Runs the handshake on `r`/`w`; `Ok(Err(..))` when it ended without an export.
pub fn negotiate(
    r: &mut impl Read,
    w: &mut impl Write,
    offer: Offer<'_>,
    admission: &Admission,
) -> io::Result<Result<Negotiated, Ended>> {
    w.write_all(&wire::greeting())?;
    w.flush()?;
    let mut flags = [0u8; 4];
    r.read_exact(&mut flags)?;
    let client_flags = u32::from_be_bytes(flags);
    let known = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;
    if client_flags & !known != 0 {
        return Ok(Err(Ended::Violation(format!(
            "unknown client flags {client_flags:#x}"
        ))));
    }
    let mut st = State {
        no_zeroes: client_flags & proto::FLAG_C_NO_ZEROES != 0,
        ..State::default()
    };
    loop {
        let mut header = [0u8; OPTION_HEADER_BYTES];
        r.read_exact(&mut header)?;
        let Some(h) = wire::decode_option_header(&header) else {
            return Ok(Err(Ended::Violation(
                "an option without the IHAVEOPT magic".into(),
            )));
        };
        if h.length > OPTION_DATA_BYTES_MAX {
            io::copy(&mut r.by_ref().take(u64::from(h.length)), &mut io::sink())?;
            if h.option == proto::OPT_EXPORT_NAME {
                return Ok(Err(Ended::Violation(format!(
                    "an export name of {} bytes",
                    h.length
                ))));
            }
            let message = format!(
                "option data of {} bytes; at most {OPTION_DATA_BYTES_MAX} are accepted",
                h.length
            );
            send(
                w,
                &wire::option_error(h.option, proto::REP_ERR_TOO_BIG, &message),
            )?;
            continue;
        }
        let mut data = vec![0u8; h.length as usize];
        r.read_exact(&mut data)?;
        if let Admission::Refuse(message) = admission {
            match h.option {
                proto::OPT_ABORT => return abort(w),
                proto::OPT_EXPORT_NAME => {
                    return Ok(Err(Ended::Violation(message.clone())));
                }
                option => send(
                    w,
                    &wire::option_error(option, proto::REP_ERR_POLICY, message),
                )?,
            }
            continue;
        }
        if let Some(end) = option(w, h.option, &data, offer, &mut st)? {
            return Ok(end);
        }
    }
}

/// Answers one option; `Some` when the handshake is over.
fn option(
    w: &mut impl Write,
    option: u32,
    data: &[u8],
    offer: Offer<'_>,
    st: &mut State,
) -> io::Result<Option<Result<Negotiated, Ended>>> {
    let invalid =
        |w: &mut _, why: &str| send(w, &wire::option_error(option, proto::REP_ERR_INVALID, why));
    match option {
        proto::OPT_EXPORT_NAME => return export_name(w, data, offer, st).map(Some),
        proto::OPT_ABORT => return abort(w).map(Some),
        proto::OPT_LIST if !data.is_empty() => invalid(w, "NBD_OPT_LIST takes no data")?,
        proto::OPT_LIST => {
            for e in offer.exports() {
                let server = wire::rep_server(&e.name, &e.description);
                send(w, &wire::option_reply(option, proto::REP_SERVER, &server))?;
            }
            send(w, &wire::option_reply(option, proto::REP_ACK, &[]))?;
        }
        proto::OPT_STRUCTURED_REPLY if !data.is_empty() => {
            invalid(w, "NBD_OPT_STRUCTURED_REPLY takes no data")?
        }
        proto::OPT_STRUCTURED_REPLY => {
            st.structured = true;
            send(w, &wire::option_reply(option, proto::REP_ACK, &[]))?;
        }
        proto::OPT_INFO | proto::OPT_GO => return info_or_go(w, option, data, offer, st),
        proto::OPT_LIST_META_CONTEXT | proto::OPT_SET_META_CONTEXT => {
            meta_context(w, option, data, offer, st)?
        }
        _ => send(
            w,
            &wire::option_error(
                option,
                proto::REP_ERR_UNSUP,
                &format!("option {option} is not supported by this server"),
            ),
        )?,
    }
    Ok(None)
}

fn send(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    w.write_all(bytes)?;
    w.flush()
}

fn abort(w: &mut impl Write) -> io::Result<Result<Negotiated, Ended>> {
    // The client may close without waiting for the reply: a failed send is no error.
    let _ = send(
        w,
        &wire::option_reply(proto::OPT_ABORT, proto::REP_ACK, &[]),
    );
    Ok(Err(Ended::Aborted))
}

/// The export called `name`; the empty name picks the only export, when there is one.
fn resolve(exports: &[ExportInfo], name: &str) -> Option<usize> {
    if name.is_empty() && exports.len() == 1 {
        return Some(0);
    }
    exports.iter().position(|e| e.name == name)
}

fn unknown_export(exports: &[ExportInfo], name: &str) -> String {
    let names: Vec<&str> = exports.iter().map(|e| e.name.as_str()).collect();
    format!(
        "there is no export named {name:?}; the exports are: {}",
        names.join(", ")
    )
}

fn transmission_flags(read_only: bool, structured: bool) -> u16 {
    let mut flags = proto::FLAG_HAS_FLAGS | proto::FLAG_CAN_MULTI_CONN;
    if structured {
        flags |= proto::FLAG_SEND_DF;
    }
    if !read_only {
        flags |= proto::FLAG_SEND_FLUSH
            | proto::FLAG_SEND_FUA
            | proto::FLAG_SEND_TRIM
            | proto::FLAG_SEND_WRITE_ZEROES
            | proto::FLAG_SEND_FAST_ZERO;
    } else {
        flags |= proto::FLAG_READ_ONLY;
    }
    flags
}

/// The terms for `export`, and its size.
fn negotiated(export: usize, offer: Offer<'_>, st: &State) -> (Negotiated, u64) {
    let (size, read_only) = offer.device(export);
    let n = Negotiated {
        export,
        structured: st.structured,
        base_allocation: st.structured && st.meta_export == Some(export),
        flags: transmission_flags(read_only, st.structured),
    };
    (n, size)
}

/// `NBD_OPT_EXPORT_NAME`: no error reply exists, so an unknown export ends the connection.
fn export_name(
    w: &mut impl Write,
    data: &[u8],
    offer: Offer<'_>,
    st: &State,
) -> io::Result<Result<Negotiated, Ended>> {
    let name = String::from_utf8_lossy(data);
    let Some(export) = resolve(offer.exports(), &name) else {
        return Ok(Err(Ended::Violation(unknown_export(
            offer.exports(),
            &name,
        ))));
    };
    let (n, size) = negotiated(export, offer, st);
    send(w, &wire::export_name_reply(size, n.flags, st.no_zeroes))?;
    Ok(Ok(n))
}

/// `NBD_OPT_INFO` and `NBD_OPT_GO`: the export's size and flags, block sizes (always: the
/// minimum of 1 imposes nothing), its name and description when asked; `GO` then starts
/// transmission.
fn info_or_go(
    w: &mut impl Write,
    option: u32,
    data: &[u8],
    offer: Offer<'_>,
    st: &State,
) -> io::Result<Option<Result<Negotiated, Ended>>> {
    let request = match wire::decode_go(data) {
        Ok(r) => r,
        Err(wire::Invalid(why)) => {
            send(w, &wire::option_error(option, proto::REP_ERR_INVALID, why))?;
            return Ok(None);
        }
    };
    let Some(export) = resolve(offer.exports(), &request.name) else {
        let message = unknown_export(offer.exports(), &request.name);
        send(
            w,
            &wire::option_error(option, proto::REP_ERR_UNKNOWN, &message),
        )?;
        return Ok(None);
    };
    let (n, size) = negotiated(export, offer, st);
    let e = &offer.exports()[export];
    let mut infos = vec![
        wire::info_export(size, n.flags),
        wire::info_block_size(1, proto::PREFERRED_BLOCK_BYTES, proto::PAYLOAD_BYTES_MAX),
    ];
    if request.infos.contains(&proto::INFO_NAME) {
        infos.push(wire::info_text(proto::INFO_NAME, &e.name));
    }
    if request.infos.contains(&proto::INFO_DESCRIPTION) {
        infos.push(wire::info_text(proto::INFO_DESCRIPTION, &e.description));
    }
    for info in infos {
        send(w, &wire::option_reply(option, proto::REP_INFO, &info))?;
    }
    send(w, &wire::option_reply(option, proto::REP_ACK, &[]))?;
    Ok((option == proto::OPT_GO).then_some(Ok(n)))
}

/// `NBD_OPT_LIST_META_CONTEXT` and `NBD_OPT_SET_META_CONTEXT`. The one context is
/// `base:allocation`; a list query of `base:` or no query at all also finds it. Unknown
/// queries select nothing, which is not an error.
fn meta_context(
    w: &mut impl Write,
    option: u32,
    data: &[u8],
    offer: Offer<'_>,
    st: &mut State,
) -> io::Result<()> {
    if !st.structured {
        let why = "structured replies must be negotiated before metadata contexts";
        return send(w, &wire::option_error(option, proto::REP_ERR_INVALID, why));
    }
    let request = match wire::decode_meta(data) {
        Ok(r) => r,
        Err(wire::Invalid(why)) => {
            return send(w, &wire::option_error(option, proto::REP_ERR_INVALID, why));
        }
    };
    let Some(export) = resolve(offer.exports(), &request.name) else {
        let message = unknown_export(offer.exports(), &request.name);
        return send(
            w,
            &wire::option_error(option, proto::REP_ERR_UNKNOWN, &message),
        );
    };
    let selected = if option == proto::OPT_LIST_META_CONTEXT {
        request.queries.is_empty()
            || request
                .queries
                .iter()
                .any(|q| q == "base:" || q == proto::BASE_ALLOCATION)
    } else {
        request.queries.iter().any(|q| q == proto::BASE_ALLOCATION)
    };
    if option == proto::OPT_SET_META_CONTEXT {
        st.meta_export = selected.then_some(export);
    }
    if selected {
        // A listed context's id is reserved and sent as zero; a selected one gets its id.
        let id = if option == proto::OPT_SET_META_CONTEXT {
            proto::BASE_ALLOCATION_ID
        } else {
            0
        };
        let context = wire::meta_context(id, proto::BASE_ALLOCATION);
        send(
            w,
            &wire::option_reply(option, proto::REP_META_CONTEXT, &context),
        )?;
    }
    send(w, &wire::option_reply(option, proto::REP_ACK, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NbdError;
    use crate::export::{BlockDevice, Extents, HOLE};
    use proptest::prelude::*;

    /// Two exports of 1 MiB reading as zeros: `os`, writable, and `data`, read-only.
    struct Disks(Vec<ExportInfo>);

    /// A disk of zeros; the flag says whether it is read-only.
    struct Zeros(bool);

    impl BlockDevice for Zeros {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn read_only(&self) -> bool {
            self.0
        }
        fn read(&mut self, _offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
            buf.fill(0);
            Ok(())
        }
        fn block_status(
            &mut self,
            offset: u64,
            end: u64,
            out: &mut Extents,
        ) -> Result<(), NbdError> {
            out.push(end - offset, HOLE);
            Ok(())
        }
    }

    impl Backend for Disks {
        fn exports(&self) -> &[ExportInfo] {
            &self.0
        }
        fn open(&self, index: usize) -> Box<dyn BlockDevice + '_> {
            Box::new(Zeros(self.0[index].name == "data"))
        }
    }

    fn disks() -> Disks {
        let exports = ["os", "data"]
            .iter()
            .map(|n| ExportInfo {
                name: (*n).into(),
                description: format!("disk {n}"),
            })
            .collect();
        Disks(exports)
    }

    fn opt(option: u32, data: &[u8]) -> Vec<u8> {
        let mut b = proto::OPTS_MAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&option.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    fn go(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            b.extend_from_slice(&i.to_be_bytes());
        }
        b
    }

    fn meta(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut b = (name.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            b.extend_from_slice(&(q.len() as u32).to_be_bytes());
            b.extend_from_slice(q.as_bytes());
        }
        b
    }

    type Outcome = io::Result<Result<Negotiated, Ended>>;

    /// Runs the handshake on a scripted client: `flags`, then the bytes of `options`.
    fn run(flags: u32, options: &[Vec<u8>], admission: &Admission) -> (Outcome, Vec<u8>) {
        let mut input = flags.to_be_bytes().to_vec();
        options.iter().for_each(|o| input.extend_from_slice(o));
        run_bytes(&input, admission)
    }

    fn run_bytes(input: &[u8], admission: &Admission) -> (Outcome, Vec<u8>) {
        let mut out = Vec::new();
        let disks = disks();
        let offer = Offer { backend: &disks };
        let result = negotiate(&mut &input[..], &mut out, offer, admission);
        (result, out)
    }

    /// The option replies after the greeting, as `(option, reply type, data)`; panics on a
    /// malformed one.
    fn replies(out: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        assert_eq!(&out[..18], wire::greeting().as_slice());
        let mut rest = &out[18..];
        let mut list = Vec::new();
        while !rest.is_empty() {
            let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
            assert_eq!(
                u64::from_be_bytes(rest[..8].try_into().unwrap()),
                proto::REP_MAGIC
            );
            let len = be32(&rest[16..20]) as usize;
            list.push((
                be32(&rest[8..12]),
                be32(&rest[12..16]),
                rest[20..20 + len].to_vec(),
            ));
            rest = &rest[20 + len..];
        }
        list
    }

    const FIXED: u32 = proto::FLAG_C_FIXED_NEWSTYLE | proto::FLAG_C_NO_ZEROES;

    #[test]
    fn go_after_structured_replies_and_base_allocation_enters_transmission() {
        let options = [
            opt(proto::OPT_STRUCTURED_REPLY, &[]),
            opt(
                proto::OPT_SET_META_CONTEXT,
                &meta("data", &[proto::BASE_ALLOCATION]),
            ),
            opt(proto::OPT_GO, &go("data", &[proto::INFO_NAME])),
        ];
        let (result, out) = run(FIXED, &options, &Admission::Serve);
        let n = result.unwrap().unwrap();
        assert_eq!(n.export, 1);
        assert!(n.structured && n.base_allocation);
        assert_ne!(n.flags & proto::FLAG_READ_ONLY, 0);
        assert_eq!(
            n.flags & proto::FLAG_SEND_FLUSH,
            0,
            "read-only: no flush offered"
        );
        let r = replies(&out);
        let kinds: Vec<u32> = r.iter().map(|x| x.1).collect();
        use proto::*;
        assert_eq!(
            kinds,
            [
                REP_ACK,
                REP_META_CONTEXT,
                REP_ACK,
                REP_INFO,
                REP_INFO,
                REP_INFO,
                REP_ACK
            ]
        );
        assert_eq!(&r[1].2[..4], &BASE_ALLOCATION_ID.to_be_bytes());
        assert_eq!(&r[1].2[4..], BASE_ALLOCATION.as_bytes());
        assert_eq!(r[3].2, wire::info_export(1 << 20, n.flags));
        assert_eq!(r[5].2, wire::info_text(INFO_NAME, "data"));
    }

    #[test]
    fn each_export_gets_the_flags_its_device_asks_for() {
        let options = [opt(proto::OPT_GO, &go("os", &[]))];
        let n = run(FIXED, &options, &Admission::Serve).0.unwrap().unwrap();
        assert_eq!(n.export, 0);
        assert_eq!(n.flags & proto::FLAG_READ_ONLY, 0, "os is writable");
        let writes = proto::FLAG_SEND_FLUSH
            | proto::FLAG_SEND_FUA
            | proto::FLAG_SEND_TRIM
            | proto::FLAG_SEND_WRITE_ZEROES;
        assert_eq!(n.flags & writes, writes);
    }

    #[test]
    fn contexts_selected_for_another_export_do_not_apply() {
        let options = [
            opt(proto::OPT_STRUCTURED_REPLY, &[]),
            opt(
                proto::OPT_SET_META_CONTEXT,
                &meta("os", &[proto::BASE_ALLOCATION]),
            ),
            opt(proto::OPT_GO, &go("data", &[])),
        ];
        let n = run(FIXED, &options, &Admission::Serve).0.unwrap().unwrap();
        assert!(!n.base_allocation);
    }

    #[test]
    fn unknown_and_malformed_options_are_answered_and_negotiation_goes_on() {
        let options = [
            opt(99, b"whatever"),
            opt(proto::OPT_LIST, b"x"),
            opt(proto::OPT_GO, &[0, 0, 0, 9]),
            opt(proto::OPT_INFO, &go("nope", &[])),
            opt(proto::OPT_LIST_META_CONTEXT, &meta("os", &[])),
            opt(proto::OPT_ABORT, &[]),
        ];
        let (result, out) = run(FIXED, &options, &Admission::Serve);
        assert_eq!(result.unwrap(), Err(Ended::Aborted));
        let r: Vec<(u32, u32)> = replies(&out).iter().map(|x| (x.0, x.1)).collect();
        use proto::*;
        assert_eq!(
            r,
            [
                (99, REP_ERR_UNSUP),
                (OPT_LIST, REP_ERR_INVALID),
                (OPT_GO, REP_ERR_INVALID),
                (OPT_INFO, REP_ERR_UNKNOWN),
                (OPT_LIST_META_CONTEXT, REP_ERR_INVALID),
                (OPT_ABORT, REP_ACK),
            ]
        );
    }

    #[test]
    fn oversized_option_data_is_dropped_unread_and_refused() {
        let big = vec![7u8; (OPTION_DATA_BYTES_MAX + 1) as usize];
        let options = [
            opt(proto::OPT_GO, &big),
            opt(proto::OPT_LIST, &[]),
            opt(proto::OPT_ABORT, &[]),
        ];
        let (result, out) = run(FIXED, &options, &Admission::Serve);
        assert_eq!(result.unwrap(), Err(Ended::Aborted));
        let r = replies(&out);
        assert_eq!((r[0].0, r[0].1), (proto::OPT_GO, proto::REP_ERR_TOO_BIG));
        let servers: Vec<_> = r.iter().filter(|x| x.1 == proto::REP_SERVER).collect();
        assert_eq!(
            servers.len(),
            2,
            "the next option is read at its right place"
        );
    }

    #[test]
    fn the_list_names_every_export() {
        let (_, out) = run(FIXED, &[opt(proto::OPT_LIST, &[])], &Admission::Serve);
        let r = replies(&out);
        assert_eq!(r.len(), 3);
        assert_eq!(&r[0].2[4..6], b"os");
        assert_eq!(&r[1].2[4..8], b"data");
        assert_eq!(r[2].1, proto::REP_ACK);
    }

    #[test]
    fn export_name_replies_with_size_and_flags_or_ends_the_connection() {
        let (result, out) = run(
            proto::FLAG_C_FIXED_NEWSTYLE,
            &[opt(proto::OPT_EXPORT_NAME, b"os")],
            &Admission::Serve,
        );
        let n = result.unwrap().unwrap();
        assert_eq!(
            &out[18..],
            wire::export_name_reply(1 << 20, n.flags, false).as_slice()
        );
        assert_eq!(out.len(), 18 + 10 + 124);
        let (result, _) = run(
            FIXED,
            &[opt(proto::OPT_EXPORT_NAME, b"nope")],
            &Admission::Serve,
        );
        assert!(matches!(result.unwrap(), Err(Ended::Violation(_))));
    }

    #[test]
    fn unknown_client_flags_and_a_wrong_magic_end_the_handshake() {
        let (result, _) = run(1 << 5, &[], &Admission::Serve);
        assert!(matches!(result.unwrap(), Err(Ended::Violation(_))));
        let mut bad = opt(proto::OPT_LIST, &[]);
        bad[0] ^= 0xff;
        let (result, _) = run(FIXED, &[bad], &Admission::Serve);
        assert!(matches!(result.unwrap(), Err(Ended::Violation(_))));
    }

    #[test]
    fn a_refused_client_gets_the_policy_error_for_every_option() {
        let refuse = Admission::Refuse("too many".into());
        let options = [
            opt(proto::OPT_GO, &go("os", &[])),
            opt(proto::OPT_LIST, &[]),
            opt(proto::OPT_ABORT, &[]),
        ];
        let (result, out) = run(FIXED, &options, &refuse);
        assert_eq!(result.unwrap(), Err(Ended::Aborted));
        let r = replies(&out);
        assert_eq!(r[0].1, proto::REP_ERR_POLICY);
        assert_eq!(r[0].2, b"too many");
        assert_eq!(r[1].1, proto::REP_ERR_POLICY);
    }

    #[test]
    fn a_client_that_leaves_mid_option_is_an_io_error_not_a_panic() {
        let mut partial = opt(proto::OPT_GO, &go("os", &[]));
        partial.truncate(20);
        let (result, _) = run(FIXED, &[partial], &Admission::Serve);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = run_bytes(&bytes, &Admission::Serve);
        }

        #[test]
        fn arbitrary_options_are_each_answered_with_well_formed_replies(
            options in prop::collection::vec((0u32..14, prop::collection::vec(any::<u8>(), 0..40)), 0..12),
        ) {
            let options: Vec<Vec<u8>> = options
                .iter()
                .filter(|(o, _)| *o != proto::OPT_EXPORT_NAME)
                .map(|(o, d)| opt(*o, d))
                .collect();
            let (_, out) = run(FIXED, &options, &Admission::Serve);
            for (option, kind, data) in replies(&out) {
                prop_assert!(option < 14);
                if kind & (1 << 31) != 0 {
                    prop_assert!(std::str::from_utf8(&data).is_ok());
                }
            }
        }
    }
}
