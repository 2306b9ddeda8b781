//! The extent maps of an NBD export, read whole before a pass journals anything: the dirty
//! extents of `qemu:dirty-bitmap:NAME` (flag bit 0) and the ranges `base:allocation` says read
//! as zeros (`NBD_STATE_ZERO`; a hole without that flag may read as data from a backing image,
//! so it is read). Memory: 16 bytes per extent kept.

use replog_nbd::{Client, proto};

use super::plan::Ranges;
use super::uri::NbdUri;
use crate::error::{Result, VaultError, VaultErrorKind};

/// The ranges of context `name` whose flags `keep` accepts, over the whole export.
pub fn ranges_where(
    client: &mut Client,
    uri: &NbdUri,
    name: &str,
    keep: impl Fn(u32) -> bool,
) -> Result<Ranges> {
    let id = client.context_id(name).ok_or_else(|| {
        VaultError::new(
            VaultErrorKind::InvalidRequest,
            format!("{uri}: the server did not select metadata context {name:?}"),
        )
    })?;
    let size = client.size();
    let mut out: Ranges = Vec::new();
    let mut at = 0u64;
    while at < size {
        // The rest of the export (at most 4 GiB - 1 without extended headers); the server may
        // describe less, and the map goes on from where its reply ended.
        let all = client
            .block_status_all(at, size - at)
            .map_err(|e| uri.error(e))?;
        let extents = all.into_iter().find(|c| c.0 == id).map(|c| c.1);
        let Some(extents) = extents else {
            return Err(uri.error(replog_nbd::NbdError::new(
                replog_nbd::NbdErrorKind::Protocol,
                format!("the block status at byte {at} has no extent of {name:?}"),
            )));
        };
        let start = at;
        for e in extents {
            let end = at.saturating_add(e.length).min(size);
            if end <= at {
                break;
            }
            if keep(e.flags) {
                match out.last_mut() {
                    Some(last) if last.1 == at => last.1 = end,
                    _ => out.push((at, end)),
                }
            }
            at = end;
        }
        if at == start {
            return Err(uri.error(replog_nbd::NbdError::new(
                replog_nbd::NbdErrorKind::Protocol,
                format!("the block status at byte {at} describes no bytes of {name:?}"),
            )));
        }
    }
    Ok(out)
}

/// The dirty extents of bitmap context `name`.
pub fn dirty(client: &mut Client, uri: &NbdUri, name: &str) -> Result<Ranges> {
    ranges_where(client, uri, name, |f| f & 1 != 0)
}

/// The ranges that read as zeros.
pub fn zeros(client: &mut Client, uri: &NbdUri) -> Result<Ranges> {
    ranges_where(client, uri, proto::BASE_ALLOCATION, |f| {
        f & proto::STATE_ZERO != 0
    })
}
