//! Key slots: a vault's list of wrapped copies of its data key, one per way to open it.
//!
//! Like the key slots of disk encryption, each slot holds the same data key wrapped under a
//! different key: a key file, a passphrase (Argon2id), or one or more age X25519 recipients.
//! Adding a slot first proves a current key; rotating replaces the slot a key opened with a
//! slot for a new key, re-wrapping the same data key, so no data is ever rewritten; the last
//! slot cannot be removed. `codec` draws the file's byte layout, `wrap` how each kind wraps.
//!
//! Visible in plaintext to anyone who reads the file: the vault id, the data key's
//! fingerprint (so a caller can tell a key opens this vault before reading any data), each
//! slot's kind, id and creation time, key file fingerprints, Argon2 parameters and salts, and
//! age recipients. None of them helps to open a slot without its key.
//!
//! This module owns slot bookkeeping and the slot file. It must not know where the file is
//! kept, how the vault stores it, or anything the data key seals.

mod codec;
mod wrap;

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::data_key::{DataKey, FINGERPRINT_BYTES, hex};
use crate::error::{CryptError, CryptErrorKind, Result};
use crate::key_file::KeyFile;
use crate::random::os_random;
use crate::secret_file::read_secret_file;

pub use codec::{
    MAX_AGE_FILE_BYTES, MAX_RECIPIENT_BYTES, MAX_RECIPIENTS, MAX_SLOTS, MAX_SLOTS_FILE_BYTES,
    SLOTS_MAGIC, SLOTS_VERSION,
};

/// An age X25519 recipient (`age1…`), the kind `age-keygen` makes and the one age slots wrap
/// to. age 0.13 marks it deprecated in favour of its post-quantum hybrid recipients; it is the
/// kind users hold today, and a slot of a post-quantum kind can be added beside it later
/// without touching the data.
#[allow(deprecated)]
pub type AgeRecipient = age::x25519::Recipient;

/// Argon2id cost parameters of a passphrase slot, stored in the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Params {
    /// Memory, KiB.
    pub m_cost_kib: u32,
    /// Passes over the memory.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl Argon2Params {
    /// The parameters of a new passphrase slot: 64 MiB, 3 passes, 1 lane (about a quarter of a
    /// second on a current core).
    pub const DEFAULT: Argon2Params = Argon2Params {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// The most memory a slot may ask for: a hostile slot file must not make an unlock
    /// allocate without bound.
    pub const MAX_M_COST_KIB: u32 = 1024 * 1024;
    /// The most passes a slot may ask for.
    pub const MAX_T_COST: u32 = 64;
    /// The most lanes a slot may ask for.
    pub const MAX_P_COST: u32 = 16;

    /// Refuses parameters outside the bounds above or below Argon2's minimum (8 KiB a lane).
    pub fn check(&self) -> Result<()> {
        let ok = (1..=Self::MAX_P_COST).contains(&self.p_cost)
            && (1..=Self::MAX_T_COST).contains(&self.t_cost)
            && (8 * self.p_cost..=Self::MAX_M_COST_KIB).contains(&self.m_cost_kib);
        if ok {
            return Ok(());
        }
        Err(CryptError::new(
            CryptErrorKind::Invalid,
            format!(
                "Argon2id parameters m={} KiB t={} p={} are out of bounds (p 1 to {}, t 1 to {}, \
                 m 8 x p to {} KiB)",
                self.m_cost_kib,
                self.t_cost,
                self.p_cost,
                Self::MAX_P_COST,
                Self::MAX_T_COST,
                Self::MAX_M_COST_KIB
            ),
        ))
    }
}

/// The kind of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotKind {
    /// Opened by a key file.
    KeyFile,
    /// Opened by a passphrase.
    Passphrase,
    /// Opened by the identity of one of its age recipients.
    Age,
}

impl SlotKind {
    fn name(self) -> &'static str {
        match self {
            SlotKind::KeyFile => "key file",
            SlotKind::Passphrase => "passphrase",
            SlotKind::Age => "age",
        }
    }
}

impl fmt::Display for SlotKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `list` shows of a slot: never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// The slot's id, unique in the vault and never reused.
    pub id: u32,
    /// The slot's kind.
    pub kind: SlotKind,
    /// The fingerprint (hex) of the key file that opens it; `None` for other kinds.
    pub key_fingerprint_hex: Option<String>,
    /// The age recipients it was wrapped to; empty for other kinds.
    pub recipients: Vec<String>,
    /// The Argon2id parameters of a passphrase slot.
    pub argon2: Option<Argon2Params>,
    /// When the slot was made, Unix seconds.
    pub created_unix_s: u64,
}

/// A key to open a slot with.
pub enum Unlock {
    /// A key file.
    KeyFile(KeyFile),
    /// A passphrase (see [`crate::read_passphrase`]).
    Passphrase(Zeroizing<String>),
    /// An age X25519 identity.
    AgeIdentity(age::x25519::Identity),
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unlock::KeyFile(key_file) => f.debug_tuple("KeyFile").field(key_file).finish(),
            Unlock::Passphrase(_) => f.write_str("Passphrase(..)"),
            Unlock::AgeIdentity(identity) => f
                .debug_tuple("AgeIdentity")
                .field(&identity.to_public().to_string())
                .finish(),
        }
    }
}

/// The longest age identity file read.
const MAX_IDENTITY_FILE_BYTES: usize = 64 * 1024;

impl Unlock {
    /// The first X25519 identity (`AGE-SECRET-KEY-1…`) of the age identity file at `path`,
    /// which is read under the same rules as a key file (no symbolic link, owner-only mode,
    /// owned by this user or root). Blank lines and `#` comments are skipped.
    pub fn age_identity_file(path: &Path) -> Result<Unlock> {
        let what = "age identity file";
        let bytes = read_secret_file(path, what, MAX_IDENTITY_FILE_BYTES)?;
        let invalid = |context: &str| {
            Err(CryptError::new(CryptErrorKind::Invalid, context.to_owned()).in_file(path))
        };
        if bytes.len() > MAX_IDENTITY_FILE_BYTES {
            return invalid("the age identity file is longer than 64 KiB");
        }
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return invalid("the age identity file is not UTF-8 text");
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'));
        // The line is never put in an error: it is the secret.
        match line.map(|line| line.parse::<age::x25519::Identity>()) {
            Some(Ok(identity)) => Ok(Unlock::AgeIdentity(identity)),
            _ => invalid(
                "the age identity file's first key line is not an X25519 identity \
                 (AGE-SECRET-KEY-1…)",
            ),
        }
    }

    fn kind(&self) -> SlotKind {
        match self {
            Unlock::KeyFile(_) => SlotKind::KeyFile,
            Unlock::Passphrase(_) => SlotKind::Passphrase,
            Unlock::AgeIdentity(_) => SlotKind::Age,
        }
    }

    fn describe(&self) -> String {
        match self {
            Unlock::KeyFile(key_file) => format!(
                "key file {} (fingerprint {})",
                key_file.path().display(),
                hex(&key_file.fingerprint())
            ),
            Unlock::Passphrase(_) => "this passphrase".into(),
            Unlock::AgeIdentity(identity) => {
                format!("the age identity of {}", identity.to_public())
            }
        }
    }
}

/// A slot to add.
pub enum NewSlot {
    /// Opened by this key file.
    KeyFile(KeyFile),
    /// Opened by a passphrase, stretched with these parameters.
    Passphrase {
        /// The passphrase.
        passphrase: Zeroizing<String>,
        /// Argon2id costs; [`Argon2Params::DEFAULT`] unless a test needs them small.
        params: Argon2Params,
    },
    /// Opened by the identity of any of these recipients.
    Age(Vec<AgeRecipient>),
}

impl fmt::Debug for NewSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NewSlot::KeyFile(key_file) => f.debug_tuple("KeyFile").field(key_file).finish(),
            NewSlot::Passphrase { params, .. } => f
                .debug_struct("Passphrase")
                .field("params", params)
                .finish_non_exhaustive(),
            NewSlot::Age(recipients) => {
                let names: Vec<String> = recipients.iter().map(ToString::to_string).collect();
                f.debug_tuple("Age").field(&names).finish()
            }
        }
    }
}

impl NewSlot {
    /// A passphrase slot with the default Argon2id parameters.
    pub fn passphrase(passphrase: Zeroizing<String>) -> NewSlot {
        NewSlot::Passphrase {
            passphrase,
            params: Argon2Params::DEFAULT,
        }
    }

    /// An age slot to the recipients written as `age1…` strings.
    pub fn age_recipients<S: AsRef<str>>(recipients: &[S]) -> Result<NewSlot> {
        let parsed = recipients
            .iter()
            .map(|text| {
                text.as_ref().parse::<AgeRecipient>().map_err(|error| {
                    CryptError::new(
                        CryptErrorKind::Invalid,
                        format!(
                            "`{}` is not an age X25519 recipient (age1…): {error}",
                            text.as_ref()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(NewSlot::Age(parsed))
    }
}

/// One slot as stored.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    id: u32,
    created_unix_s: u64,
    body: SlotBody,
}

#[derive(Clone, Debug)]
pub(crate) enum SlotBody {
    KeyFile {
        fingerprint: [u8; FINGERPRINT_BYTES],
        nonce: [u8; crate::NONCE_BYTES],
        wrapped: [u8; codec::WRAPPED_BYTES],
    },
    Passphrase {
        params: Argon2Params,
        salt: [u8; 16],
        nonce: [u8; crate::NONCE_BYTES],
        wrapped: [u8; codec::WRAPPED_BYTES],
    },
    Age {
        recipients: Vec<String>,
        age_file: Vec<u8>,
    },
}

impl SlotBody {
    fn kind(&self) -> SlotKind {
        match self {
            SlotBody::KeyFile { .. } => SlotKind::KeyFile,
            SlotBody::Passphrase { .. } => SlotKind::Passphrase,
            SlotBody::Age { .. } => SlotKind::Age,
        }
    }
}

/// A vault's key slots. Holds no secret: only wrapped keys and what names them.
#[derive(Clone)]
pub struct KeySlots {
    vault_id: [u8; 16],
    data_key_fingerprint: [u8; FINGERPRINT_BYTES],
    next_slot_id: u32,
    slots: Vec<Slot>,
}

impl fmt::Debug for KeySlots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySlots")
            .field("vault_id", &hex(&self.vault_id))
            .field("data_key_fingerprint", &hex(&self.data_key_fingerprint))
            .field("slots", &self.list())
            .finish()
    }
}

fn now_unix_s() -> u64 {
    // A clock before 1970 records 0: the time is shown, never trusted.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

impl KeySlots {
    /// The key slots of a vault whose data key is `data_key`, with one slot for `first`.
    pub fn new(vault_id: [u8; 16], data_key: &DataKey, first: &NewSlot) -> Result<KeySlots> {
        let mut slots = KeySlots {
            vault_id,
            data_key_fingerprint: data_key.fingerprint(),
            next_slot_id: 1,
            slots: Vec::new(),
        };
        let slot = slots.make_slot(data_key, first)?;
        slots.slots.push(slot);
        Ok(slots)
    }

    /// The vault id the slots are bound to.
    pub fn vault_id(&self) -> [u8; 16] {
        self.vault_id
    }

    /// The data key's fingerprint, kept in plaintext so a caller can check an unlocked key
    /// (or compare vaults) before reading anything.
    pub fn data_key_fingerprint(&self) -> [u8; FINGERPRINT_BYTES] {
        self.data_key_fingerprint
    }

    /// Refuses slots that belong to another vault (a slot file copied between vaults).
    pub fn check_vault(&self, vault_id: &[u8; 16]) -> Result<()> {
        if &self.vault_id == vault_id {
            return Ok(());
        }
        Err(CryptError::new(
            CryptErrorKind::SlotsDamaged,
            format!(
                "the key slots belong to vault {}, not to vault {}",
                hex(&self.vault_id),
                hex(vault_id)
            ),
        )
        .at(16))
    }

    /// Every slot, in file order, with nothing secret.
    pub fn list(&self) -> Vec<SlotInfo> {
        self.slots.iter().map(Slot::info).collect()
    }

    /// The data key, from the first slot `unlock` opens: key file slots with the key file's
    /// fingerprint, every passphrase slot, or every age slot. A [`CryptErrorKind::WrongKey`]
    /// error, naming the kinds of slot there are, when none opens.
    pub fn unlock(&self, unlock: &Unlock) -> Result<DataKey> {
        self.open_slot(unlock).map(|(_, key)| key)
    }

    /// Adds a slot for `new`, after `unlock_with` proved a current key. Returns its id.
    pub fn add(&mut self, unlock_with: &Unlock, new: &NewSlot) -> Result<u32> {
        let (_, data_key) = self.open_slot(unlock_with)?;
        if self.slots.len() >= MAX_SLOTS {
            return Err(CryptError::new(
                CryptErrorKind::Invalid,
                format!("a vault has at most {MAX_SLOTS} key slots; remove one first"),
            ));
        }
        self.refuse_duplicate(new, None)?;
        let slot = self.make_slot(&data_key, new)?;
        let id = slot.id;
        self.slots.push(slot);
        Ok(id)
    }

    /// Replaces the slot `unlock` opens with a slot for `new`, wrapping the same data key (no
    /// data is rewritten). The old key no longer opens the vault unless another slot holds it.
    /// Returns the new slot's id.
    pub fn rotate(&mut self, unlock: &Unlock, new: &NewSlot) -> Result<u32> {
        let (index, data_key) = self.open_slot(unlock)?;
        self.refuse_duplicate(new, Some(index))?;
        let slot = self.make_slot(&data_key, new)?;
        let id = slot.id;
        self.slots[index] = slot;
        Ok(id)
    }

    /// Removes slot `slot_id`. No key is asked for: removing grants nothing, and whoever can
    /// write the slot file can destroy it anyway. The last slot is refused
    /// ([`CryptErrorKind::LastSlot`]): without a slot the data could never be read again.
    pub fn remove(&mut self, slot_id: u32) -> Result<()> {
        let Some(index) = self.slots.iter().position(|slot| slot.id == slot_id) else {
            return Err(CryptError::new(
                CryptErrorKind::NoSuchSlot,
                format!("no key slot has id {slot_id}"),
            ));
        };
        if self.slots.len() == 1 {
            return Err(CryptError::new(
                CryptErrorKind::LastSlot,
                format!(
                    "slot {slot_id} is the vault's last key slot; removing it would make the \
                     data unreadable (add another slot first)"
                ),
            ));
        }
        self.slots.remove(index);
        Ok(())
    }

    /// The slot file's bytes (layout in `KEYS.md`).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Slots from a slot file's bytes, validated: never panics on hostile input, and every
    /// error names the offset.
    pub fn decode(bytes: &[u8]) -> Result<KeySlots> {
        codec::decode(bytes)
    }

    fn refuse_duplicate(&self, new: &NewSlot, replacing: Option<usize>) -> Result<()> {
        let NewSlot::KeyFile(key_file) = new else {
            return Ok(());
        };
        let fingerprint = key_file.fingerprint();
        let taken = self.slots.iter().enumerate().find(|(index, slot)| {
            Some(*index) != replacing
                && matches!(&slot.body, SlotBody::KeyFile { fingerprint: f, .. } if *f == fingerprint)
        });
        match taken {
            Some((_, slot)) => Err(CryptError::new(
                CryptErrorKind::Exists,
                format!(
                    "key slot {} already opens with key file fingerprint {}",
                    slot.id,
                    hex(&fingerprint)
                ),
            )),
            None => Ok(()),
        }
    }

    /// A new slot for `new` wrapping `data_key`, taking the next id.
    fn make_slot(&mut self, data_key: &DataKey, new: &NewSlot) -> Result<Slot> {
        debug_assert_eq!(data_key.fingerprint(), self.data_key_fingerprint);
        let id = self.next_slot_id;
        let next = id
            .checked_add(1)
            .ok_or_else(|| CryptError::new(CryptErrorKind::Invalid, "slot ids are exhausted"))?;
        let mut slot = Slot {
            id,
            created_unix_s: now_unix_s(),
            body: SlotBody::placeholder(new)?,
        };
        let bound = codec::bound_bytes(&slot, &self.vault_id);
        match (&mut slot.body, new) {
            (SlotBody::KeyFile { nonce, wrapped, .. }, NewSlot::KeyFile(key_file)) => {
                (*nonce, *wrapped) = wrap::seal_key(&key_file.wrapping_key(), &bound, data_key);
            }
            (
                SlotBody::Passphrase {
                    params,
                    salt,
                    nonce,
                    wrapped,
                },
                NewSlot::Passphrase { passphrase, .. },
            ) => {
                let key = wrap::passphrase_key(passphrase, params, salt)?;
                (*nonce, *wrapped) = wrap::seal_key(&key, &bound, data_key);
            }
            (SlotBody::Age { age_file, .. }, NewSlot::Age(recipients)) => {
                *age_file = wrap::age_seal(recipients, &bound, data_key)?;
            }
            _ => unreachable!("placeholder has the kind of the new slot"),
        }
        self.next_slot_id = next;
        Ok(slot)
    }

    /// The index of the first slot `unlock` opens and the data key in it.
    fn open_slot(&self, unlock: &Unlock) -> Result<(usize, DataKey)> {
        for (index, slot) in self.slots.iter().enumerate() {
            if let Some(key) = self.try_slot(slot, unlock)? {
                if key.fingerprint() != self.data_key_fingerprint {
                    return Err(CryptError::new(
                        CryptErrorKind::SlotsDamaged,
                        format!(
                            "key slot {} opens but holds a data key other than the one the \
                             file names ({})",
                            slot.id,
                            hex(&self.data_key_fingerprint)
                        ),
                    ));
                }
                return Ok((index, key));
            }
        }
        Err(self.wrong_key(unlock))
    }

    /// The data key if `unlock` opens `slot`; `None` if it is not the key of this slot.
    fn try_slot(&self, slot: &Slot, unlock: &Unlock) -> Result<Option<DataKey>> {
        let bound = || codec::bound_bytes(slot, &self.vault_id);
        Ok(match (&slot.body, unlock) {
            (
                SlotBody::KeyFile {
                    fingerprint,
                    nonce,
                    wrapped,
                },
                Unlock::KeyFile(key_file),
            ) if *fingerprint == key_file.fingerprint() => {
                wrap::open_key(&key_file.wrapping_key(), &bound(), nonce, wrapped)
            }
            (
                SlotBody::Passphrase {
                    params,
                    salt,
                    nonce,
                    wrapped,
                },
                Unlock::Passphrase(passphrase),
            ) => {
                let key = wrap::passphrase_key(passphrase, params, salt)?;
                wrap::open_key(&key, &bound(), nonce, wrapped)
            }
            (SlotBody::Age { age_file, .. }, Unlock::AgeIdentity(identity)) => {
                wrap::age_open(identity, &bound(), age_file)
            }
            _ => None,
        })
    }

    fn wrong_key(&self, unlock: &Unlock) -> CryptError {
        let mut kinds: Vec<String> = Vec::new();
        for kind in [SlotKind::KeyFile, SlotKind::Passphrase, SlotKind::Age] {
            let count = self.slots.iter().filter(|s| s.body.kind() == kind).count();
            if count > 0 {
                kinds.push(format!("{count} {kind}"));
            }
        }
        let none_of_kind = if self.slots.iter().any(|s| s.body.kind() == unlock.kind()) {
            String::new()
        } else {
            format!(" (there is no {} slot)", unlock.kind())
        };
        CryptError::new(
            CryptErrorKind::WrongKey,
            format!(
                "no key slot opens with {}{none_of_kind}; the vault's slots: {}",
                unlock.describe(),
                kinds.join(", ")
            ),
        )
    }
}

impl SlotBody {
    /// A body of `new`'s kind with its parameters and a fresh salt, its wrapped key not yet
    /// filled in (the wrapping binds the parameters, so they come first).
    fn placeholder(new: &NewSlot) -> Result<SlotBody> {
        Ok(match new {
            NewSlot::KeyFile(key_file) => SlotBody::KeyFile {
                fingerprint: key_file.fingerprint(),
                nonce: [0; crate::NONCE_BYTES],
                wrapped: [0; codec::WRAPPED_BYTES],
            },
            NewSlot::Passphrase { params, .. } => {
                params.check()?;
                SlotBody::Passphrase {
                    params: *params,
                    salt: os_random(),
                    nonce: [0; crate::NONCE_BYTES],
                    wrapped: [0; codec::WRAPPED_BYTES],
                }
            }
            NewSlot::Age(recipients) => {
                if recipients.is_empty() || recipients.len() > MAX_RECIPIENTS {
                    return Err(CryptError::new(
                        CryptErrorKind::Invalid,
                        format!(
                            "an age slot has 1 to {MAX_RECIPIENTS} recipients, not {}",
                            recipients.len()
                        ),
                    ));
                }
                SlotBody::Age {
                    recipients: recipients.iter().map(ToString::to_string).collect(),
                    age_file: Vec::new(),
                }
            }
        })
    }
}

impl Slot {
    fn info(&self) -> SlotInfo {
        let (key_fingerprint_hex, recipients, argon2) = match &self.body {
            SlotBody::KeyFile { fingerprint, .. } => (Some(hex(fingerprint)), Vec::new(), None),
            SlotBody::Passphrase { params, .. } => (None, Vec::new(), Some(*params)),
            SlotBody::Age { recipients, .. } => (None, recipients.clone(), None),
        };
        SlotInfo {
            id: self.id,
            kind: self.body.kind(),
            key_fingerprint_hex,
            recipients,
            argon2,
            created_unix_s: self.created_unix_s,
        }
    }
}
