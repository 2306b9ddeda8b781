//! The decode error: a small matchable kind, the byte offset inside the structure being decoded,
//! and a sentence saying what was expected and what was found.

/// What kind of problem a decoder found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeErrorKind {
    /// Fewer bytes than the structure needs.
    Truncated,
    /// The magic number is not the one this structure starts with.
    BadMagic,
    /// A format version this code does not know.
    UnsupportedVersion,
    /// A stored checksum does not match the bytes.
    Checksum,
    /// A field holds a value outside what the format allows (a length over a limit, a reserved
    /// byte that is not zero, an unknown kind).
    BadField,
    /// The structure is intact but belongs elsewhere: another vault, segment, offset or LSN.
    Misplaced,
}

/// A structure failed to decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {offset}: {detail}")]
pub struct DecodeError {
    /// The kind of failure, for callers that react to it.
    pub kind: DecodeErrorKind,
    /// The structure being decoded ("segment header", "record", ...).
    pub what: &'static str,
    /// Byte offset of the problem, relative to the start of the slice handed to the decoder.
    pub offset: u64,
    /// What was expected and what was found.
    pub detail: String,
}

impl DecodeError {
    /// Builds an error; `detail` should say what was expected and what was found.
    pub fn new(
        kind: DecodeErrorKind,
        what: &'static str,
        offset: u64,
        detail: impl Into<String>,
    ) -> DecodeError {
        DecodeError {
            kind,
            what,
            offset,
            detail: detail.into(),
        }
    }

    /// What kind of failure it is (the same as the `kind` field).
    pub fn kind(&self) -> DecodeErrorKind {
        self.kind
    }

    /// The same error with its offset moved by `base`, for errors found inside a larger file.
    pub fn at(mut self, base: u64) -> DecodeError {
        self.offset += base;
        self
    }
}
