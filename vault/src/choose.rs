//! Choosing a recovery point: by id, by time, or the latest, with a typed refusal for each way
//! that can fail.

use replog_reader::PointInfo;

use crate::error::{Result, VaultError, VaultErrorKind};

/// Which recovery point an operation is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PointChoice {
    /// The point with this id.
    Id(u64),
    /// The newest point taken at or before this time.
    At {
        /// Nanoseconds since the Unix epoch.
        unix_ns: i64,
        /// The time as the operator gave it, for messages.
        given: String,
    },
    /// The newest point.
    Latest,
}

/// The point `choice` names in `snapshot`, whose vault is called `shown_as` in messages. A point
/// id that lies beyond damage that hides it is damage, not a typo.
pub fn choose<'a>(
    snapshot: &'a replog_reader::Vault,
    shown_as: &str,
    choice: &PointChoice,
) -> Result<&'a PointInfo> {
    match choice {
        PointChoice::Id(id) => snapshot.point(*id).ok_or_else(|| match snapshot.damage() {
            Some(damage) => VaultError::new(
                VaultErrorKind::Damaged,
                format!("{shown_as}: no readable recovery point {id}: {damage}"),
            ),
            None => VaultError::new(
                VaultErrorKind::NoSuchPoint,
                format!("{shown_as}: no recovery point {id}; `replog points` lists them"),
            ),
        }),
        PointChoice::At { unix_ns, given } => {
            snapshot.point_at_or_before(*unix_ns).ok_or_else(|| {
                VaultError::new(
                    VaultErrorKind::NoPointAtTime,
                    format!("{shown_as}: no recovery point at or before {given}"),
                )
            })
        }
        PointChoice::Latest => snapshot.latest_point().ok_or_else(|| {
            VaultError::new(
                VaultErrorKind::NoPoints,
                format!("{shown_as}: the vault has no recovery point yet"),
            )
        }),
    }
}
