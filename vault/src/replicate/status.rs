//! What an operator asks of a running replication, kept where another command can read it:
//! `replicate.status` in the vault directory (advisory: never needed to recover anything; a
//! record that is damaged, rolled back or behind the vault only costs the next replication a
//! full pass, see `run`), and
//! optionally a Prometheus textfile. Both are replaced atomically (written beside, synced,
//! renamed), so a reader sees the old state or the new one, never half of one.
//!
//! `replicate.status` is one line of JSON, then one line with the CRC32 (seeded with the
//! vault's seed) of that line's bytes as 8 lower-case hex digits. A file that fails its check is
//! reported as damaged, never half-believed.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use replog_format::crc32_seeded;
use replog_io::{OpenMode, Storage, WriteAt};
use serde::{Deserialize, Serialize};

use super::policy::Health;

/// The status file's name in the vault directory.
pub const STATUS_FILE: &str = "replicate.status";

/// The state of a replication, as its last cycle left it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleRecord {
    /// The replicating process.
    pub pid: u32,
    /// When it started (Unix seconds).
    pub started_unix_s: i64,
    /// When this was written (Unix seconds).
    pub updated_unix_s: i64,
    /// Cycles that ended in a point.
    pub cycles_ok: u64,
    /// Cycles that failed (each retried).
    pub cycles_failed: u64,
    /// The last cycle's point, if it took one.
    pub last_point_id: Option<u64>,
    /// Whether that point is app-consistent.
    pub last_point_app_consistent: bool,
    /// When the last point's cut was made (Unix milliseconds): the instant its data is from.
    /// The point's own time is when it became durable, up to one cycle later.
    pub last_cut_unix_ms: Option<i64>,
    /// The capture generation of the last point's cut: with the point's id, what lets the next
    /// replication continue from the dirty bitmaps QEMU kept (`replog-<tag>-<generation>`)
    /// instead of reading every disk again. Absent in records of older versions.
    #[serde(default)]
    pub last_cut_generation: Option<u64>,
    /// Bytes of data the last cycle journaled (zero records not counted).
    pub last_cycle_bytes: u64,
    /// Bytes the last cycle read from the source.
    pub last_cycle_bytes_read: u64,
    /// How long the last cycle took, in seconds.
    pub last_cycle_seconds: f64,
    /// Total bytes journaled since the start.
    pub bytes_journaled: u64,
    /// The newest point the vault's remote offers after the last sync (`--sync-every`).
    pub remote_point_id: Option<u64>,
    /// Whether the remote is behind the local vault (or the last sync failed).
    pub remote_behind: bool,
    /// The last sync's failure, if it failed.
    pub sync_error: Option<String>,
    /// The last failure, if the last cycle failed.
    pub last_error: Option<String>,
    /// Whether the process has stopped (SIGTERM, `--cycles`, or an error it gave up on).
    pub stopped: bool,
}

impl CycleRecord {
    /// The recovery point objective met now: `now` minus the instant the newest point's data
    /// is from; `None` before the first point.
    pub fn rpo(&self, now: Duration) -> Option<Duration> {
        let cut = Duration::from_millis(u64::try_from(self.last_cut_unix_ms?).ok()?);
        Some(now.saturating_sub(cut))
    }
}

/// Writes `record` as the vault's status file, atomically.
pub fn store(storage: &dyn Storage, dir: &Path, seed: u32, record: &CycleRecord) -> io::Result<()> {
    let mut text = serde_json::to_string(record).map_err(io::Error::other)?;
    let crc = crc32_seeded(seed, &[text.as_bytes()]);
    text.push_str(&format!("\n{crc:08x}\n"));
    replace(storage, &dir.join(STATUS_FILE), text.as_bytes())
}

/// Reads the vault's status file: `Ok(None)` if there is none, an error naming the file if it
/// is damaged.
pub fn load(storage: &dyn Storage, dir: &Path, seed: u32) -> io::Result<Option<CycleRecord>> {
    let path = dir.join(STATUS_FILE);
    if !storage.exists(&path)? {
        return Ok(None);
    }
    let file = storage.open(&path, OpenMode::Read)?;
    let len = file.len()?;
    if len > 64 << 10 {
        return Err(damaged(&path, "is longer than 64 KiB"));
    }
    let mut bytes = vec![0; len as usize];
    file.read_exact_at(&mut bytes, 0)?;
    let text = String::from_utf8(bytes).map_err(|_| damaged(&path, "is not UTF-8"))?;
    let mut lines = text.lines();
    let (Some(json), Some(crc), None) = (lines.next(), lines.next(), lines.next()) else {
        return Err(damaged(&path, "is not two lines"));
    };
    if u32::from_str_radix(crc, 16).ok() != Some(crc32_seeded(seed, &[json.as_bytes()])) {
        return Err(damaged(&path, "fails its checksum"));
    }
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| damaged(&path, &format!("does not parse ({e})")))
}

fn damaged(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{} {what}; it is advisory: delete it, and the next cycle writes it again",
            path.display()
        ),
    )
}

/// Replaces `path` with `bytes`: written to a sibling, synced, renamed over it, the directory
/// synced.
fn replace(storage: &dyn Storage, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = sibling(path, ".tmp");
    let file = storage.open(&tmp, OpenMode::CreateTruncate)?;
    file.write_batch(
        &[WriteAt {
            offset: 0,
            data: bytes,
        }],
        true,
    )?;
    drop(file);
    storage.rename(&tmp, path)?;
    storage.sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// The metrics of a replication, in the Prometheus text exposition format.
pub fn metrics_text(record: &CycleRecord, rpo: Option<Duration>, health: Health) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, value: String| {
        out.push_str(&format!(
            "# HELP replog_{name} {help}\n# TYPE replog_{name} {kind}\nreplog_{name} {value}\n"
        ));
    };
    let rpo = rpo.map_or("NaN".to_owned(), |r| format!("{:.3}", r.as_secs_f64()));
    metric(
        "rpo_seconds",
        "Now minus the newest recovery point.",
        "gauge",
        rpo,
    );
    metric(
        "health",
        "0 healthy, 1 warning, 2 critical (the RPO against --rpo-alert).",
        "gauge",
        (health as u8).to_string(),
    );
    metric(
        "bytes_journaled_total",
        "Bytes journaled since the start.",
        "counter",
        record.bytes_journaled.to_string(),
    );
    metric(
        "cycle_seconds",
        "How long the last cycle took.",
        "gauge",
        format!("{:.3}", record.last_cycle_seconds),
    );
    metric(
        "cycle_bytes",
        "Bytes the last cycle journaled.",
        "gauge",
        record.last_cycle_bytes.to_string(),
    );
    metric(
        "cycles_total",
        "Cycles that ended in a point.",
        "counter",
        record.cycles_ok.to_string(),
    );
    metric(
        "cycle_errors_total",
        "Cycles that failed.",
        "counter",
        record.cycles_failed.to_string(),
    );
    out
}

/// Writes the metrics textfile at `path`, atomically (a textfile collector never reads half).
pub fn store_metrics(storage: &dyn Storage, path: &Path, text: &str) -> io::Result<()> {
    replace(storage, path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use replog_io::sync::SyncStorage;

    use super::*;

    #[test]
    fn the_status_round_trips_and_a_changed_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(SyncStorage::new());
        assert_eq!(load(storage.as_ref(), dir.path(), 7).unwrap(), None);
        let record = CycleRecord {
            cycles_ok: 3,
            last_point_id: Some(9),
            last_cycle_bytes: 1 << 20,
            ..CycleRecord::default()
        };
        store(storage.as_ref(), dir.path(), 7, &record).unwrap();
        assert_eq!(load(storage.as_ref(), dir.path(), 7).unwrap(), Some(record));
        let path = dir.path().join(STATUS_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replacen("\"cycles_ok\":3", "\"cycles_ok\":4", 1),
        )
        .unwrap();
        let e = load(storage.as_ref(), dir.path(), 7).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains(STATUS_FILE), "{e}");
    }

    #[test]
    fn metrics_name_every_value_once() {
        let text = metrics_text(&CycleRecord::default(), None, Health::Critical);
        for name in [
            "rpo_seconds NaN",
            "health 2",
            "cycles_total 0",
            "cycle_errors_total 0",
        ] {
            assert_eq!(
                text.matches(&format!("replog_{name}\n")).count(),
                1,
                "{text}"
            );
        }
    }
}
