//! Output helpers: tables for people, JSON for programs, progress bars only on a terminal.

use std::io::IsTerminal;

use comfy_table::{Table, presets};
use indicatif::{ProgressBar, ProgressStyle};

/// A borderless table with a header row.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING)
        .set_header(header.iter().copied());
    t
}

/// Prints a value as pretty JSON, its objects' keys in sorted order (through a
/// `serde_json::Value`, whatever the order of a struct's fields).
pub fn print_json<T: serde::Serialize + ?Sized>(value: &T) {
    let value = serde_json::to_value(value).expect("results serialize to JSON");
    println!(
        "{}",
        serde_json::to_string_pretty(&value).expect("JSON values always serialize")
    );
}

/// A byte progress bar on stderr, hidden when stderr is not a terminal.
pub fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// RFC 3339 time of a nanosecond Unix timestamp.
pub fn rfc3339(unix_ns: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(unix_ns))
        .map(|t| t.to_string())
        .unwrap_or_else(|_| format!("@{unix_ns}ns"))
}

/// A recovery point as JSON, as `points`, `point` and `failover` print it.
pub fn point_json(p: &replog_reader::PointInfo) -> serde_json::Value {
    let chain = p.chain.as_ref().map(replog_format::chain::hex);
    serde_json::json!({"id": p.point_id, "lsn": p.lsn, "time": rfc3339(p.time_unix_ns), "kind": p.kind.name(), "label": p.label, "chain": chain})
}

/// How a view holds its extent maps, as `failover --json` and `serve-nbd` report it: its mode,
/// the checkpoint it lies over, and the heap its maps take.
pub fn view_json(v: &replog_reader::PointView) -> serde_json::Value {
    let checkpoint_lsn = match v.mode() {
        replog_reader::ViewMode::Layered { checkpoint_lsn } => Some(checkpoint_lsn),
        replog_reader::ViewMode::InMemory => None,
    };
    serde_json::json!({"mode": v.mode().name(), "checkpoint_lsn": checkpoint_lsn, "memory_bytes": v.memory_bytes()})
}

/// Bytes as a short human string (binary units).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A duration in seconds as a short human string.
pub fn human_age(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0}s"),
        s if s < 7200.0 => format!("{:.0}m", s / 60.0),
        s if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        s => format!("{:.1}d", s / 86400.0),
    }
}

/// `s` with every control character escaped (`\u{1b}`, `\n`, ...), for text that came from
/// outside (a point's label) and is printed to a terminal: an escape sequence in a label must
/// not recolour, move or clear the operator's screen.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
