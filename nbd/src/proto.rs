//! The NBD protocol's numbers: magics, handshake and transmission flags, options, option
//! replies, info types, commands, command flags, structured reply types and error values, as
//! the protocol document (`doc/proto.md` of the reference implementation) defines them. Every
//! integer on the wire is big-endian.
//!
//! Only what replog speaks is here: fixed newstyle negotiation, `NBD_OPT_GO`/`INFO`/`LIST`,
//! structured replies and the `base:allocation` metadata context; the client also speaks extended
//! headers (64-bit requests, replies and block status). No TLS.

/// `NBDMAGIC`, the first 8 bytes the server sends.
pub const INIT_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: follows `INIT_MAGIC` in the greeting and starts every client option.
pub const OPTS_MAGIC: u64 = 0x4948_4156_454f_5054;
/// Starts every option reply.
pub const REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Starts every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Starts a simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Starts a structured reply chunk.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Starts every transmission request once extended headers are negotiated.
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Starts every reply chunk once extended headers are negotiated.
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

/// Handshake flag: the server speaks fixed newstyle.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
/// Handshake flag: the server can omit the 124 zero bytes after `NBD_OPT_EXPORT_NAME`.
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
/// Client flag: the client speaks fixed newstyle.
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
/// Client flag: omit the 124 zero bytes.
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

/// Transmission flag: always set.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
/// Transmission flag: writes, trims and write-zeroes fail with `EPERM`.
pub const FLAG_READ_ONLY: u16 = 1 << 1;
/// Transmission flag: `NBD_CMD_FLUSH` is supported.
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
/// Transmission flag: `NBD_CMD_FLAG_FUA` is supported.
pub const FLAG_SEND_FUA: u16 = 1 << 3;
/// Transmission flag: `NBD_CMD_TRIM` is supported.
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
/// Transmission flag: `NBD_CMD_WRITE_ZEROES` is supported.
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
/// Transmission flag: `NBD_CMD_FLAG_DF` is supported on reads.
pub const FLAG_SEND_DF: u16 = 1 << 7;
/// Transmission flag: flush and FUA on one connection cover every connection's writes.
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;
/// Transmission flag: `NBD_CMD_FLAG_FAST_ZERO` is supported.
pub const FLAG_SEND_FAST_ZERO: u16 = 1 << 11;

/// Option: choose an export and enter transmission (no error reply possible).
pub const OPT_EXPORT_NAME: u32 = 1;
/// Option: end the negotiation.
pub const OPT_ABORT: u32 = 2;
/// Option: list the exports.
pub const OPT_LIST: u32 = 3;
/// Option: describe an export without entering transmission.
pub const OPT_INFO: u32 = 6;
/// Option: describe an export and enter transmission.
pub const OPT_GO: u32 = 7;
/// Option: use structured replies.
pub const OPT_STRUCTURED_REPLY: u32 = 8;
/// Option: list metadata contexts.
pub const OPT_LIST_META_CONTEXT: u32 = 9;
/// Option: select metadata contexts.
pub const OPT_SET_META_CONTEXT: u32 = 10;
/// Option: use extended headers (64-bit lengths; implies structured replies).
pub const OPT_EXTENDED_HEADERS: u32 = 11;

/// Option reply: done, no data.
pub const REP_ACK: u32 = 1;
/// Option reply: one export of `NBD_OPT_LIST`.
pub const REP_SERVER: u32 = 2;
/// Option reply: one piece of information of `NBD_OPT_INFO`/`GO`.
pub const REP_INFO: u32 = 3;
/// Option reply: one metadata context.
pub const REP_META_CONTEXT: u32 = 4;
/// Option error: the option is unknown.
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
/// Option error: known, valid, but refused by policy.
pub const REP_ERR_POLICY: u32 = (1 << 31) + 2;
/// Option error: syntactically invalid.
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
/// Option error: no such export.
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
/// Option error: the option's data is too large to process.
pub const REP_ERR_TOO_BIG: u32 = (1 << 31) + 9;

/// Info: export size and transmission flags.
pub const INFO_EXPORT: u16 = 0;
/// Info: the export's canonical name.
pub const INFO_NAME: u16 = 1;
/// Info: a description for humans.
pub const INFO_DESCRIPTION: u16 = 2;
/// Info: minimum, preferred and maximum block sizes.
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Command: read.
pub const CMD_READ: u16 = 0;
/// Command: write (the payload follows the request).
pub const CMD_WRITE: u16 = 1;
/// Command: disconnect (no reply).
pub const CMD_DISC: u16 = 2;
/// Command: make every acknowledged write durable.
pub const CMD_FLUSH: u16 = 3;
/// Command: discard a range.
pub const CMD_TRIM: u16 = 4;
/// Command: set a range to zero.
pub const CMD_WRITE_ZEROES: u16 = 6;
/// Command: allocation status of a range.
pub const CMD_BLOCK_STATUS: u16 = 7;

/// Command flag: reply only once the command's writes are durable.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
/// Command flag (write-zeroes): prefer allocating over punching a hole.
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
/// Command flag (read): reply with at most one content chunk.
pub const CMD_FLAG_DF: u16 = 1 << 2;
/// Command flag (block status): one extent is enough.
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;
/// Command flag (write-zeroes): fail at once with `ENOTSUP` unless zeroing is fast.
pub const CMD_FLAG_FAST_ZERO: u16 = 1 << 4;

/// Structured reply flag: the last chunk of the reply.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
/// Chunk: offset and data.
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
/// Chunk: offset and length of a range that reads as zeros.
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
/// Chunk: block status descriptors of one metadata context.
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
/// Chunk: 64-bit block status descriptors of one metadata context (extended headers).
pub const REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;
/// Chunk: an error with a message.
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

/// `base:allocation`: the range is not allocated.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation`: the range reads as zeros.
pub const STATE_ZERO: u32 = 1 << 1;

/// Error: operation not permitted (a write to a read-only export).
pub const EPERM: u32 = 1;
/// Error: input/output error (a read that failed its checksum, a failed journal write).
pub const EIO: u32 = 5;
/// Error: invalid argument.
pub const EINVAL: u32 = 22;
/// Error: no space left (a write past the end, a full vault).
pub const ENOSPC: u32 = 28;
/// Error: the server is shutting down.
pub const ESHUTDOWN: u32 = 108;

/// The only metadata context: allocation status.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The id replog gives `base:allocation` in `NBD_REP_META_CONTEXT` and block status replies.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// The largest read or write payload served, advertised as the maximum block size. A request
/// with a larger payload gets `EINVAL` (its write payload is read and dropped, never held).
pub const PAYLOAD_BYTES_MAX: u32 = 32 << 20;
/// Advertised preferred block size.
pub const PREFERRED_BLOCK_BYTES: u32 = 4096;
/// The most option data read into memory. Names are at most 4096 bytes by the protocol; a
/// longer option is read and dropped and answered with `NBD_REP_ERR_TOO_BIG`.
pub const OPTION_DATA_BYTES_MAX: u32 = 64 << 10;
/// The longest string (export name, query) the protocol allows.
pub const STRING_BYTES_MAX: usize = 4096;
