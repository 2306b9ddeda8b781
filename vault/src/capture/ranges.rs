//! Lists of changed ranges, for a pass that reads only what a list names: JSON lines
//! (`{"offset":N,"length":N}` one per line, optionally `"exists":false` for a range that now
//! reads as zeros) or `rbd diff --format json` output (one JSON array of objects with `offset`,
//! `length` and `exists` as the string `"true"` or `"false"`). A list is checked whole before
//! anything is journaled: an entry that does not parse, is empty, ends past the disk or overlaps
//! another is refused, naming its line (JSON lines) or its place in the array.

use serde_json::Value;

use crate::error::{Result, VaultError, VaultErrorKind};

/// One range of a list: `length` bytes at `offset`, holding data (`exists`) or zeroed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangedRange {
    /// Where it starts, in bytes.
    pub offset: u64,
    /// How long it is, in bytes.
    pub length: u64,
    /// `false`: the range was discarded and reads as zeros (nothing is read for it).
    pub exists: bool,
}

/// Parses the list `text` (named `name` in errors) for a disk of `disk_bytes`; the ranges come
/// back sorted by offset.
pub fn parse_changed_ranges(text: &str, name: &str, disk_bytes: u64) -> Result<Vec<ChangedRange>> {
    let refuse = |place: &str, why: String| {
        VaultError::new(
            VaultErrorKind::InvalidRequest,
            format!("changed-range list {name}, {place}: {why}; nothing was journaled"),
        )
    };
    let mut entries: Vec<(String, ChangedRange)> = Vec::new();
    if text.trim_start().starts_with('[') {
        let items: Vec<Value> = serde_json::from_str(text).map_err(|e| {
            refuse(
                &format!("line {}", e.line()),
                format!("not a JSON array: {e}"),
            )
        })?;
        for (i, item) in items.iter().enumerate() {
            let place = format!("array entry {}", i + 1);
            let r = entry(item).map_err(|why| refuse(&place, why))?;
            entries.push((place, r));
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let place = format!("line {}", i + 1);
            let item: Value = serde_json::from_str(line)
                .map_err(|e| refuse(&place, format!("not a JSON object: {e}")))?;
            let r = entry(&item).map_err(|why| refuse(&place, why))?;
            entries.push((place, r));
        }
    }
    for (place, r) in &entries {
        if r.offset
            .checked_add(r.length)
            .is_none_or(|end| end > disk_bytes)
        {
            let why = format!(
                "{} bytes at {} end past the disk's {disk_bytes} bytes",
                r.length, r.offset
            );
            return Err(refuse(place, why));
        }
    }
    entries.sort_by_key(|(_, r)| r.offset);
    for pair in entries.windows(2) {
        let ((a_place, a), (b_place, b)) = (&pair[0], &pair[1]);
        if b.offset < a.offset + a.length {
            let why = format!("it overlaps {a_place} ({} bytes at {})", a.length, a.offset);
            return Err(refuse(b_place, why));
        }
    }
    Ok(entries.into_iter().map(|(_, r)| r).collect())
}

/// One entry: an object with a non-zero `length`, an `offset`, and optionally `exists`.
fn entry(item: &Value) -> std::result::Result<ChangedRange, String> {
    let number = |key: &str| {
        item.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no {key:?} that is a whole number of bytes"))
    };
    let (offset, length) = (number("offset")?, number("length")?);
    if length == 0 {
        return Err("an empty range".into());
    }
    let exists = match item.get("exists") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(other) => return Err(format!("\"exists\" is {other}, not true or false")),
    };
    Ok(ChangedRange {
        offset,
        length,
        exists,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_and_rbd_diff_give_the_same_sorted_ranges() {
        let lines = "{\"offset\":8192,\"length\":4096}\n\n{\"offset\":0,\"length\":4096,\"exists\":false}\n";
        let rbd = r#"[{"offset":8192,"length":4096,"exists":"true"},{"offset":0,"length":4096,"exists":"false"}]"#;
        let want = vec![
            ChangedRange {
                offset: 0,
                length: 4096,
                exists: false,
            },
            ChangedRange {
                offset: 8192,
                length: 4096,
                exists: true,
            },
        ];
        assert_eq!(parse_changed_ranges(lines, "l", 1 << 20).unwrap(), want);
        assert_eq!(parse_changed_ranges(rbd, "r", 1 << 20).unwrap(), want);
    }

    #[test]
    fn a_bad_list_is_refused_naming_the_line() {
        let cases = [
            (
                "{\"offset\":0,\"length\":4096}\n{\"offset\":4096,",
                "line 2",
            ),
            ("{\"offset\":0,\"length\":0}", "line 1"),
            (
                "{\"offset\":0,\"length\":4096}\n{\"offset\":1044480,\"length\":8192}",
                "line 2",
            ),
            (
                "{\"offset\":0,\"length\":8192}\n{\"offset\":4096,\"length\":4096}",
                "line 2",
            ),
            ("{\"offset\":-1,\"length\":4096}", "line 1"),
            (
                r#"[{"offset":0,"length":4096,"exists":"maybe"}]"#,
                "array entry 1",
            ),
            ("[{\"offset\":0,\n\"length\":", "line 2"),
        ];
        for (text, place) in cases {
            let e = parse_changed_ranges(text, "list", 1 << 20).unwrap_err();
            assert_eq!(e.kind(), VaultErrorKind::InvalidRequest);
            assert!(e.to_string().contains(place), "{text}: {e}");
        }
    }
}
