//! The key slot file's bytes: encoder and validating decoder.
//!
//! ## Layout (integers little-endian)
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `RPLG-KYS` |
//! | 8 | 4 | version, u32 = 1 |
//! | 12 | 4 | reserved, u32 = 0 |
//! | 16 | 16 | vault id |
//! | 32 | 16 | data key fingerprint |
//! | 48 | 4 | next slot id, u32 (greater than every slot's id) |
//! | 52 | 4 | slot count, u32, 1 to 32 |
//! | 56 | … | the slots, one after another |
//! | n − 4 | 4 | CRC32 (IEEE) of bytes 0 to n − 4 |
//!
//! Each slot is a 20-byte header and a body whose length the header gives:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | kind: 1 key file, 2 passphrase, 3 age |
//! | 1 | 3 | reserved, 0 |
//! | 4 | 4 | slot id, u32, at least 1, unique in the file |
//! | 8 | 8 | created, Unix seconds, u64 |
//! | 16 | 4 | body length, u32 (88, 100, or the age body's length up to 10,280) |
//!
//! Key-file body (88 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | key file fingerprint |
//! | 16 | 24 | XChaCha20-Poly1305 nonce |
//! | 40 | 48 | wrapped data key: 32 bytes sealed, then the 16-byte tag |
//!
//! Passphrase body (100 bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | Argon2id m_cost, KiB, u32 (8 × p_cost to 1,048,576) |
//! | 4 | 4 | Argon2id t_cost, u32 (1 to 64) |
//! | 8 | 4 | Argon2id p_cost, u32 (1 to 16) |
//! | 12 | 16 | Argon2 salt |
//! | 28 | 24 | nonce |
//! | 52 | 48 | wrapped data key |
//!
//! Age body:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | recipient count, u32, 1 to 16 |
//! | 4 | … | each recipient: length u16 (1 to 128), then its `age1…` string |
//! | … | 4 | age file length, u32, 1 to 8,192 |
//! | … | … | the age file (binary, unarmored) |
//!
//! A file is at most 329,660 bytes (`MAX_SLOTS_FILE_BYTES`). The decoder never panics and never allocates more than the input's size: every count and
//! length is checked against its bound and against the bytes left before it is used.

use crate::slots::AgeRecipient;

use crate::data_key::FINGERPRINT_BYTES;
use crate::error::{CryptError, CryptErrorKind, Result};
use crate::seal::{NONCE_BYTES, TAG_BYTES};
use crate::slots::{Argon2Params, KeySlots, Slot, SlotBody};

/// Magic of a key slot file.
pub const SLOTS_MAGIC: [u8; 8] = *b"RPLG-KYS";
/// The key slot file version this code writes and reads.
pub const SLOTS_VERSION: u32 = 1;
/// At most this many slots in a file.
pub const MAX_SLOTS: usize = 32;
/// At most this many recipients in an age slot.
pub const MAX_RECIPIENTS: usize = 16;
/// The longest recipient string an age slot holds (an X25519 `age1…` string is 62).
pub const MAX_RECIPIENT_BYTES: usize = 128;
/// The longest age file an age slot holds (16 recipients take about 2 KiB).
pub const MAX_AGE_FILE_BYTES: usize = 8192;

const FILE_HEADER_BYTES: usize = 56;
const SLOT_HEADER_BYTES: usize = 20;
/// The slot header bytes the wrapping binds: kind, reserved, id, created (not the body length,
/// which an age slot knows only after encrypting).
const SLOT_BOUND_HEADER_BYTES: usize = 16;
const CRC_BYTES: usize = 4;
pub(crate) const WRAPPED_BYTES: usize = 32 + TAG_BYTES;
const KEY_FILE_BODY_BYTES: usize = FINGERPRINT_BYTES + NONCE_BYTES + WRAPPED_BYTES;
const PASSPHRASE_PARAMS_BYTES: usize = 12 + 16;
const PASSPHRASE_BODY_BYTES: usize = PASSPHRASE_PARAMS_BYTES + NONCE_BYTES + WRAPPED_BYTES;
const MAX_AGE_BODY_BYTES: usize =
    4 + MAX_RECIPIENTS * (2 + MAX_RECIPIENT_BYTES) + 4 + MAX_AGE_FILE_BYTES;
const _: () = assert!(KEY_FILE_BODY_BYTES == 88 && PASSPHRASE_BODY_BYTES == 100);
const _: () = assert!(MAX_AGE_BODY_BYTES == 10_280);
/// The longest slot file: 32 slots of the longest kind. A caller reads at most this many bytes
/// (plus one, to see a longer file) and the decoder refuses more.
pub const MAX_SLOTS_FILE_BYTES: usize =
    FILE_HEADER_BYTES + MAX_SLOTS * (SLOT_HEADER_BYTES + MAX_AGE_BODY_BYTES) + CRC_BYTES;
const _: () = assert!(MAX_SLOTS_FILE_BYTES == 329_660);

const KIND_KEY_FILE: u8 = 1;
const KIND_PASSPHRASE: u8 = 2;
const KIND_AGE: u8 = 3;

/// The bytes of `slot` that its wrapping binds (see `SlotBody::bound_params`), before the
/// vault id is appended.
pub(crate) fn bound_bytes(slot: &Slot, vault_id: &[u8; 16]) -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.push(slot.body.kind_byte());
    bytes.extend_from_slice(&[0; 3]);
    bytes.extend_from_slice(&slot.id.to_le_bytes());
    bytes.extend_from_slice(&slot.created_unix_s.to_le_bytes());
    debug_assert_eq!(bytes.len(), SLOT_BOUND_HEADER_BYTES);
    slot.body.encode_params(&mut bytes);
    bytes.extend_from_slice(vault_id);
    bytes
}

impl SlotBody {
    fn kind_byte(&self) -> u8 {
        match self {
            SlotBody::KeyFile { .. } => KIND_KEY_FILE,
            SlotBody::Passphrase { .. } => KIND_PASSPHRASE,
            SlotBody::Age { .. } => KIND_AGE,
        }
    }

    /// The body up to its nonce (key file, passphrase) or its age file (age): what names the
    /// key and how it is derived.
    fn encode_params(&self, out: &mut Vec<u8>) {
        match self {
            SlotBody::KeyFile { fingerprint, .. } => out.extend_from_slice(fingerprint),
            SlotBody::Passphrase { params, salt, .. } => {
                out.extend_from_slice(&params.m_cost_kib.to_le_bytes());
                out.extend_from_slice(&params.t_cost.to_le_bytes());
                out.extend_from_slice(&params.p_cost.to_le_bytes());
                out.extend_from_slice(salt);
            }
            SlotBody::Age { recipients, .. } => {
                out.extend_from_slice(&(recipients.len() as u32).to_le_bytes());
                for recipient in recipients {
                    out.extend_from_slice(&(recipient.len() as u16).to_le_bytes());
                    out.extend_from_slice(recipient.as_bytes());
                }
            }
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_params(out);
        match self {
            SlotBody::KeyFile { nonce, wrapped, .. }
            | SlotBody::Passphrase { nonce, wrapped, .. } => {
                out.extend_from_slice(nonce);
                out.extend_from_slice(wrapped);
            }
            SlotBody::Age { age_file, .. } => {
                out.extend_from_slice(&(age_file.len() as u32).to_le_bytes());
                out.extend_from_slice(age_file);
            }
        }
    }
}

pub(crate) fn encode(slots: &KeySlots) -> Vec<u8> {
    assert!(
        (1..=MAX_SLOTS).contains(&slots.slots.len()),
        "slot count out of bounds"
    );
    let mut out = Vec::with_capacity(FILE_HEADER_BYTES + 256 * slots.slots.len());
    out.extend_from_slice(&SLOTS_MAGIC);
    out.extend_from_slice(&SLOTS_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&slots.vault_id);
    out.extend_from_slice(&slots.data_key_fingerprint);
    out.extend_from_slice(&slots.next_slot_id.to_le_bytes());
    out.extend_from_slice(&(slots.slots.len() as u32).to_le_bytes());
    debug_assert_eq!(out.len(), FILE_HEADER_BYTES);
    for slot in &slots.slots {
        let slot_at = out.len();
        out.push(slot.body.kind_byte());
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&slot.id.to_le_bytes());
        out.extend_from_slice(&slot.created_unix_s.to_le_bytes());
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        debug_assert_eq!(out.len() - slot_at, SLOT_HEADER_BYTES);
        slot.body.encode(&mut out);
        let body_bytes = (out.len() - length_at - 4) as u32;
        out[length_at..length_at + 4].copy_from_slice(&body_bytes.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A cursor over the file that turns every short read into a `Truncated` error naming the
/// offset, and every bad field into a `SlotsDamaged` one.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

fn damaged(offset: usize, context: String) -> CryptError {
    CryptError::new(
        CryptErrorKind::SlotsDamaged,
        format!("key slot file: {context}"),
    )
    .at(offset as u64)
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8]> {
        let left = self.bytes.len() - self.at;
        if len > left {
            return Err(CryptError::new(
                CryptErrorKind::Truncated,
                format!("key slot file ends inside {what}: {len} bytes needed, {left} left"),
            )
            .at(self.at as u64));
        }
        let taken = &self.bytes[self.at..self.at + len];
        self.at += len;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("N bytes taken"))
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A u32 that must lie in `range`; the error names the field's own offset.
    fn bounded(&mut self, what: &str, range: std::ops::RangeInclusive<u32>) -> Result<u32> {
        let at = self.at;
        let value = self.u32(what)?;
        if !range.contains(&value) {
            return Err(damaged(
                at,
                format!(
                    "{what} is {value}, expected {} to {}",
                    range.start(),
                    range.end()
                ),
            ));
        }
        Ok(value)
    }
}

pub(crate) fn decode(bytes: &[u8]) -> Result<KeySlots> {
    if bytes.len() < FILE_HEADER_BYTES + CRC_BYTES {
        return Err(CryptError::new(
            CryptErrorKind::Truncated,
            format!(
                "key slot file is {} bytes, shorter than its {} bytes of header and checksum",
                bytes.len(),
                FILE_HEADER_BYTES + CRC_BYTES
            ),
        ));
    }
    if bytes.len() > MAX_SLOTS_FILE_BYTES {
        return Err(damaged(
            MAX_SLOTS_FILE_BYTES,
            format!(
                "the file is {} bytes; a key slot file is at most {MAX_SLOTS_FILE_BYTES}",
                bytes.len()
            ),
        ));
    }
    if bytes[..SLOTS_MAGIC.len()] != SLOTS_MAGIC {
        return Err(damaged(0, "does not start with `RPLG-KYS`".into()));
    }
    let crc_at = bytes.len() - CRC_BYTES;
    let stored = u32::from_le_bytes(bytes[crc_at..].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&bytes[..crc_at]);
    if stored != computed {
        return Err(damaged(
            crc_at,
            format!("checksum {stored:#010x} does not match the bytes ({computed:#010x})"),
        ));
    }
    let mut reader = Reader {
        bytes: &bytes[..crc_at],
        at: SLOTS_MAGIC.len(),
    };
    let version = reader.u32("the version")?;
    if version != SLOTS_VERSION {
        return Err(CryptError::new(
            CryptErrorKind::Unsupported,
            format!("key slot file version {version}; this replog reads version {SLOTS_VERSION}"),
        )
        .at(8));
    }
    let reserved = reader.bounded("the reserved field", 0..=0)?;
    debug_assert_eq!(reserved, 0);
    let vault_id = reader.array("the vault id")?;
    let data_key_fingerprint = reader.array("the data key fingerprint")?;
    let next_slot_id = reader.bounded("the next slot id", 2..=u32::MAX)?;
    let count = reader.bounded("the slot count", 1..=MAX_SLOTS as u32)?;
    let mut slots: Vec<Slot> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at = reader.at;
        let slot = decode_slot(&mut reader)?;
        if slot.id >= next_slot_id || slots.iter().any(|other| other.id == slot.id) {
            return Err(damaged(
                at + 4,
                format!(
                    "slot id {} is repeated or not below the next slot id",
                    slot.id
                ),
            ));
        }
        slots.push(slot);
    }
    if reader.at != crc_at {
        return Err(damaged(
            reader.at,
            format!("{} bytes follow the last slot", crc_at - reader.at),
        ));
    }
    Ok(KeySlots {
        vault_id,
        data_key_fingerprint,
        next_slot_id,
        slots,
    })
}

fn decode_slot(reader: &mut Reader<'_>) -> Result<Slot> {
    let kind_at = reader.at;
    let [kind, r0, r1, r2] = reader.array::<4>("a slot's kind")?;
    if [r0, r1, r2] != [0; 3] {
        return Err(damaged(
            kind_at + 1,
            "a slot's reserved bytes are not zero".into(),
        ));
    }
    let id = reader.bounded("a slot id", 1..=u32::MAX)?;
    let created_unix_s = reader.u64("a slot's creation time")?;
    let (min_body, max_body) = match kind {
        KIND_KEY_FILE => (KEY_FILE_BODY_BYTES, KEY_FILE_BODY_BYTES),
        KIND_PASSPHRASE => (PASSPHRASE_BODY_BYTES, PASSPHRASE_BODY_BYTES),
        KIND_AGE => (4 + 2 + 1 + 4 + 1, MAX_AGE_BODY_BYTES),
        other => return Err(damaged(kind_at, format!("unknown slot kind {other}"))),
    };
    let body_len = reader.bounded("a slot's body length", min_body as u32..=max_body as u32)?;
    let body_at = reader.at;
    let mut body = Reader {
        bytes: reader.take(body_len as usize, "a slot's body")?,
        at: 0,
    };
    let decoded = match kind {
        KIND_KEY_FILE => SlotBody::KeyFile {
            fingerprint: body.array("a key file fingerprint")?,
            nonce: body.array("a nonce")?,
            wrapped: body.array("a wrapped key")?,
        },
        KIND_PASSPHRASE => decode_passphrase(&mut body).map_err(|e| shift(e, body_at))?,
        _ => decode_age(&mut body).map_err(|e| shift(e, body_at))?,
    };
    if body.at != body.bytes.len() {
        return Err(damaged(
            body_at + body.at,
            "a slot's body is longer than its fields".into(),
        ));
    }
    Ok(Slot {
        id,
        created_unix_s,
        body: decoded,
    })
}

/// An error found in a body decoded on its own, moved to its offset in the file.
fn shift(error: CryptError, body_at: usize) -> CryptError {
    let offset = error.offset().unwrap_or(0) + body_at as u64;
    error.at(offset)
}

fn decode_passphrase(body: &mut Reader<'_>) -> Result<SlotBody> {
    let at = body.at;
    let params = Argon2Params {
        m_cost_kib: body.u32("the Argon2 memory cost")?,
        t_cost: body.u32("the Argon2 time cost")?,
        p_cost: body.u32("the Argon2 parallelism")?,
    };
    params
        .check()
        .map_err(|error| damaged(at, error.to_string()))?;
    Ok(SlotBody::Passphrase {
        params,
        salt: body.array("an Argon2 salt")?,
        nonce: body.array("a nonce")?,
        wrapped: body.array("a wrapped key")?,
    })
}

fn decode_age(body: &mut Reader<'_>) -> Result<SlotBody> {
    let count = body.bounded("the recipient count", 1..=MAX_RECIPIENTS as u32)?;
    let mut recipients = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let at = body.at;
        let len = body.u16("a recipient's length")? as usize;
        if len == 0 || len > MAX_RECIPIENT_BYTES {
            return Err(damaged(
                at,
                format!("a recipient's length is {len}, expected 1 to {MAX_RECIPIENT_BYTES}"),
            ));
        }
        let text = body.take(len, "a recipient")?;
        let recipient = std::str::from_utf8(text)
            .ok()
            .filter(|text| text.parse::<AgeRecipient>().is_ok())
            .ok_or_else(|| {
                damaged(
                    at + 2,
                    "a recipient is not an `age1…` X25519 recipient".into(),
                )
            })?;
        recipients.push(recipient.to_owned());
    }
    let age_file_len = body.bounded("the age file's length", 1..=MAX_AGE_FILE_BYTES as u32)?;
    let age_file = body.take(age_file_len as usize, "the age file")?.to_vec();
    Ok(SlotBody::Age {
        recipients,
        age_file,
    })
}
