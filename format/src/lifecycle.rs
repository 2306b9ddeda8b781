//! The lifecycle section of the manifest (manifest version 2): the retention policy, pinned
//! points, points retired by retention, and the record of a migration. It follows the points in
//! the manifest body and is covered by the body CRC, so it changes atomically with the base LSN
//! and the segment list: a prune commits its base roll-forward and its retired points in one
//! manifest replacement.
//!
//! ```text
//! offset size field
//!      0    4 flags u32: bit 0 a retention policy follows, bit 1 a migration record follows
//!      4    4 pin_count u32: at most 2^24
//!      8    4 retired_count u32: at most 2^24
//!     12    4 reserved, zero
//!     16   40 retention policy, when flag bit 0:
//!             window_s u64, recent_s u64, thin_s u64, app_window_s u64, app_thin_s u64
//!      .  8 n pins: point ids u64, increasing
//!      .  8 n retired: point ids u64, increasing
//!      .    . migration record, when flag bit 1:
//!             0  1 phase u8: 1 started, 2 verified, 3 sealed, 4 complete
//!             1  1 reserved, zero
//!             2  2 out_dir_len u16: 1..=4096
//!             4  4 disk_count u32: at most 1024
//!             8  8 point_id u64
//!            16  8 lsn u64
//!            24  8 started_unix_ns i64
//!            32  8 finished_unix_ns i64: 0 until complete
//!            40  . out_dir: UTF-8
//!             . 32 n disks, in increasing disk id order:
//!                   disk_id u32, reserved u32, size_bytes u64, xxh3_128 of the output image
//!                   (16 bytes, little-endian)
//! ```
//!
//! An empty section (no policy, pin, retired point or migration) is never written: such a
//! manifest is version 1, so every manifest has exactly one encoding.

use crate::codec::{Cursor, Put};
use crate::limits::{DISKS_MAX, POINTS_MAX};
use crate::{DecodeError, DecodeErrorKind};

/// Fixed bytes of the section before the policy.
const FIXED_BYTES: usize = 16;
const POLICY_BYTES: usize = 40;
const MIGRATION_FIXED_BYTES: usize = 40;
const MIGRATION_DISK_BYTES: usize = 32;
const FLAG_POLICY: u32 = 1;
const FLAG_MIGRATION: u32 = 2;
/// Longest output directory a migration record keeps.
pub const OUT_DIR_BYTES_MAX: usize = 4096;

/// How long recovery points are kept, thinned in the manner of Azure Site Recovery.
///
/// A point of age `a` (now minus its time) is kept when any of these holds: `a <= recent_s`;
/// `a <= window_s` and it is the newest point of its `thin_s` bucket (every point when
/// `thin_s` is 0); it is app-consistent, `a <= app_window_s`, and it is the newest
/// app-consistent point of its `app_thin_s` bucket (every one when `app_thin_s` is 0).
/// Buckets are aligned to the Unix epoch, so repeated prunes agree. Pinned points, points
/// under a lease and the newest point are always kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Points older than this are pruned (unless kept by the app-consistent rule or protected).
    pub window_s: u64,
    /// Every point younger than this is kept.
    pub recent_s: u64,
    /// Beyond `recent_s`, one point per bucket of this many seconds; 0 keeps every point.
    pub thin_s: u64,
    /// App-consistent points are kept this long.
    pub app_window_s: u64,
    /// One app-consistent point per bucket of this many seconds; 0 keeps every one.
    pub app_thin_s: u64,
}

impl RetentionPolicy {
    /// The default tiers for a window: every point of the last 2 hours, one per hour beyond,
    /// app-consistent points for the whole window, every one of them.
    pub fn with_window(window_s: u64) -> RetentionPolicy {
        RetentionPolicy {
            window_s,
            recent_s: 2 * 3600,
            thin_s: 3600,
            app_window_s: window_s,
            app_thin_s: 0,
        }
    }
}

/// The steps of a migration, each committed before the next begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MigrationPhase {
    /// The point and output directory are fixed; writes are refused from here on.
    Started = 1,
    /// Every disk is materialized, synced and read back; its checksum is recorded.
    Verified = 2,
    /// The vault is sealed: the migration will complete whatever happens.
    Sealed = 3,
    /// The journal is removed; the output disks are the result.
    Complete = 4,
}

impl MigrationPhase {
    /// Parses the stored byte.
    pub fn from_u8(v: u8) -> Option<MigrationPhase> {
        match v {
            1 => Some(MigrationPhase::Started),
            2 => Some(MigrationPhase::Verified),
            3 => Some(MigrationPhase::Sealed),
            4 => Some(MigrationPhase::Complete),
            _ => None,
        }
    }

    /// The name shown to people.
    pub fn name(self) -> &'static str {
        match self {
            MigrationPhase::Started => "started",
            MigrationPhase::Verified => "verified",
            MigrationPhase::Sealed => "sealed",
            MigrationPhase::Complete => "complete",
        }
    }
}

/// One output disk of a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationDisk {
    /// The disk.
    pub disk_id: u32,
    /// The image's length.
    pub size_bytes: u64,
    /// xxh3-128 of the whole image, as read back after it was synced.
    pub xxh3: u128,
}

/// The audit record of a migration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationRecord {
    /// How far it got.
    pub phase: MigrationPhase,
    /// The point migrated to.
    pub point_id: u64,
    /// Its LSN.
    pub lsn: u64,
    /// When it started.
    pub started_unix_ns: i64,
    /// When it completed; 0 before.
    pub finished_unix_ns: i64,
    /// Where the disks were written.
    pub out_dir: String,
    /// The output disks, from [`MigrationPhase::Verified`] on.
    pub disks: Vec<MigrationDisk>,
}

/// The lifecycle section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lifecycle {
    /// The retention policy, if one was set.
    pub retention: Option<RetentionPolicy>,
    /// Pinned point ids, increasing: never pruned.
    pub pins: Vec<u64>,
    /// Point ids retired by retention, increasing: their records stay (later points need them)
    /// but they are no longer offered.
    pub retired: Vec<u64>,
    /// The migration, once one started.
    pub migration: Option<MigrationRecord>,
}

impl Lifecycle {
    /// Whether there is nothing to write (the manifest is then version 1).
    pub fn is_empty(&self) -> bool {
        self.retention.is_none()
            && self.pins.is_empty()
            && self.retired.is_empty()
            && self.migration.is_none()
    }

    /// Whether a migration has started: the journal takes no more writes.
    pub fn migration_started(&self) -> bool {
        self.migration.is_some()
    }

    /// Appends the section.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut p = Put::new(out);
        let flags = u32::from(self.retention.is_some()) * FLAG_POLICY
            + u32::from(self.migration.is_some()) * FLAG_MIGRATION;
        p.u32(flags)
            .u32(self.pins.len() as u32)
            .u32(self.retired.len() as u32)
            .u32(0);
        if let Some(r) = &self.retention {
            p.u64(r.window_s)
                .u64(r.recent_s)
                .u64(r.thin_s)
                .u64(r.app_window_s)
                .u64(r.app_thin_s);
        }
        for id in self.pins.iter().chain(&self.retired) {
            p.u64(*id);
        }
        if let Some(m) = &self.migration {
            p.u8(m.phase as u8)
                .u8(0)
                .u16(m.out_dir.len() as u16)
                .u32(m.disks.len() as u32)
                .u64(m.point_id)
                .u64(m.lsn)
                .i64(m.started_unix_ns)
                .i64(m.finished_unix_ns)
                .bytes(m.out_dir.as_bytes());
            for d in &m.disks {
                p.u32(d.disk_id)
                    .u32(0)
                    .u64(d.size_bytes)
                    .bytes(&d.xxh3.to_le_bytes());
            }
        }
    }

    /// Decodes the section, which must end the cursor's bytes.
    pub fn decode(c: &mut Cursor<'_>) -> Result<Lifecycle, DecodeError> {
        let at = c.position();
        let flags = c.u32()?;
        if flags & !(FLAG_POLICY | FLAG_MIGRATION) != 0 {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                at,
                format!("lifecycle flags {flags:#x}"),
            ));
        }
        let pin_count = c.u32()?;
        let retired_count = c.u32()?;
        c.zeros(4)?;
        let retention = if flags & FLAG_POLICY != 0 {
            let at = c.position();
            let r = RetentionPolicy {
                window_s: c.u64()?,
                recent_s: c.u64()?,
                thin_s: c.u64()?,
                app_window_s: c.u64()?,
                app_thin_s: c.u64()?,
            };
            if r.window_s == 0 {
                return Err(c.error_at(DecodeErrorKind::BadField, at, "retention window is 0"));
            }
            Some(r)
        } else {
            None
        };
        let pins = id_list(c, pin_count, "pinned")?;
        let retired = id_list(c, retired_count, "retired")?;
        let migration = if flags & FLAG_MIGRATION != 0 {
            Some(decode_migration(c)?)
        } else {
            None
        };
        c.finish()?;
        let l = Lifecycle {
            retention,
            pins,
            retired,
            migration,
        };
        if l.is_empty() {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                at,
                "an empty lifecycle section (such a manifest is written as version 1)",
            ));
        }
        Ok(l)
    }
}

/// Reads `count` point ids, which must increase, after checking they fit.
fn id_list(c: &mut Cursor<'_>, count: u32, what: &str) -> Result<Vec<u64>, DecodeError> {
    let at = c.position();
    if count > POINTS_MAX || count as u64 * 8 > c.remaining() as u64 {
        return Err(c.error_at(
            DecodeErrorKind::BadField,
            at,
            format!("{count} {what} points do not fit the limit {POINTS_MAX} or the bytes left"),
        ));
    }
    let mut ids = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = c.u64()?;
        if ids.last().is_some_and(|&last| last >= id) {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                c.position() - 8,
                format!("{what} point ids are not increasing"),
            ));
        }
        ids.push(id);
    }
    Ok(ids)
}

fn decode_migration(c: &mut Cursor<'_>) -> Result<MigrationRecord, DecodeError> {
    let at = c.position();
    let phase = MigrationPhase::from_u8(c.u8()?)
        .ok_or_else(|| c.error_at(DecodeErrorKind::BadField, at, "unknown migration phase"))?;
    c.zeros(1)?;
    let out_dir_len = c.u16()? as usize;
    let disk_count = c.u32()?;
    let (point_id, lsn) = (c.u64()?, c.u64()?);
    let (started_unix_ns, finished_unix_ns) = (c.i64()?, c.i64()?);
    if (finished_unix_ns != 0) != (phase == MigrationPhase::Complete) {
        return Err(c.error_at(
            DecodeErrorKind::BadField,
            at + 32,
            "a finish time is set exactly when the migration is complete",
        ));
    }
    if out_dir_len == 0 || out_dir_len > OUT_DIR_BYTES_MAX {
        return Err(c.error_at(
            DecodeErrorKind::BadField,
            at + 2,
            format!("output directory of {out_dir_len} bytes"),
        ));
    }
    let out_dir = std::str::from_utf8(c.take(out_dir_len)?)
        .map_err(|_| {
            c.error_at(
                DecodeErrorKind::BadField,
                at + MIGRATION_FIXED_BYTES,
                "output directory is not UTF-8",
            )
        })?
        .to_owned();
    let disks = decode_migration_disks(c, disk_count, at)?;
    Ok(MigrationRecord {
        phase,
        point_id,
        lsn,
        started_unix_ns,
        finished_unix_ns,
        out_dir,
        disks,
    })
}

/// Reads the `disk_count` migrated disks of the migration record at `at`, in increasing id
/// order, after checking that they fit the limit and the bytes left.
fn decode_migration_disks(
    c: &mut Cursor<'_>,
    disk_count: u32,
    at: usize,
) -> Result<Vec<MigrationDisk>, DecodeError> {
    if disk_count > DISKS_MAX
        || disk_count as u64 * MIGRATION_DISK_BYTES as u64 > c.remaining() as u64
    {
        return Err(c.error_at(
            DecodeErrorKind::BadField,
            at + 4,
            format!("{disk_count} migrated disks do not fit the limit or the bytes left"),
        ));
    }
    let mut disks: Vec<MigrationDisk> = Vec::with_capacity(disk_count as usize);
    for _ in 0..disk_count {
        let d_at = c.position();
        let disk_id = c.u32()?;
        c.zeros(4)?;
        let size_bytes = c.u64()?;
        let xxh3 = u128::from_le_bytes(c.array()?);
        if disks.last().is_some_and(|last| last.disk_id >= disk_id) {
            return Err(c.error_at(
                DecodeErrorKind::BadField,
                d_at,
                "migrated disks are not in increasing id order",
            ));
        }
        disks.push(MigrationDisk {
            disk_id,
            size_bytes,
            xxh3,
        });
    }
    Ok(disks)
}

/// Bytes the section takes, for size checks.
pub fn encoded_len(l: &Lifecycle) -> usize {
    FIXED_BYTES
        + if l.retention.is_some() {
            POLICY_BYTES
        } else {
            0
        }
        + 8 * (l.pins.len() + l.retired.len())
        + l.migration.as_ref().map_or(0, |m| {
            MIGRATION_FIXED_BYTES + m.out_dir.len() + MIGRATION_DISK_BYTES * m.disks.len()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Lifecycle {
        Lifecycle {
            retention: Some(RetentionPolicy::with_window(72 * 3600)),
            pins: vec![3, 9],
            retired: vec![4, 5, 7],
            migration: Some(MigrationRecord {
                phase: MigrationPhase::Complete,
                point_id: 11,
                lsn: 500,
                started_unix_ns: 10,
                finished_unix_ns: 20,
                out_dir: "/srv/migrated".into(),
                disks: vec![MigrationDisk {
                    disk_id: 1,
                    size_bytes: 1 << 20,
                    xxh3: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
                }],
            }),
        }
    }

    #[test]
    fn lifecycle_round_trips_and_knows_its_length() {
        let l = sample();
        let mut bytes = Vec::new();
        l.encode(&mut bytes);
        assert_eq!(bytes.len(), encoded_len(&l));
        let mut c = Cursor::new(&bytes, "lifecycle");
        assert_eq!(Lifecycle::decode(&mut c).unwrap(), l);
    }

    #[test]
    fn an_empty_section_and_unordered_ids_are_rejected() {
        let mut bytes = Vec::new();
        Lifecycle::default().encode(&mut bytes);
        assert!(Lifecycle::decode(&mut Cursor::new(&bytes, "lifecycle")).is_err());
        let l = Lifecycle {
            pins: vec![5, 5],
            ..Lifecycle::default()
        };
        let mut bytes = Vec::new();
        l.encode(&mut bytes);
        assert!(Lifecycle::decode(&mut Cursor::new(&bytes, "lifecycle")).is_err());
    }
}
