//! `replog point` asks a capturing `serve-nbd` for a point through its control socket.

use std::path::Path;

use replog_writer::{PointInfo, PointKind};

use crate::Failure;

/// Asks the capturing server of `vault`, if one answers on its control socket, to take a point.
/// `Ok(None)` when no server answers (no socket, or a stale one).
pub fn request_point(
    vault: &Path,
    kind: PointKind,
    label: &str,
) -> Result<Option<PointInfo>, Failure> {
    Ok(replog_vault::nbd::control::request_point(
        vault, kind, label,
    )?)
}
