//! Checkpoint maintenance after the commands that journal: a checkpoint index is written when
//! enough has been sealed since the last one, so failovers never replay a long journal.

use std::path::Path;
use std::sync::Arc;

use replog_io::Storage;
use replog_reader::Vault;
use replog_reader::checkpoint::{self, CHECKPOINT_EVERY_LSNS};

/// Writes a checkpoint index if one is due. The command's own work is already durable, so a
/// failure here is a warning on stderr, not a failed command: views replay the journal instead.
pub fn maintain(storage: Arc<dyn Storage>, vault: &Path) {
    let done =
        Vault::open(storage, vault).and_then(|v| checkpoint::maintain(&v, CHECKPOINT_EVERY_LSNS));
    if let Err(e) = done {
        eprintln!("replog: warning: the checkpoint index was not updated: {e}");
    }
}
