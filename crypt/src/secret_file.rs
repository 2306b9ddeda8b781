//! Reading a file that holds a secret (a key file, an age identity) without trusting where it
//! sits, and creating one that only its owner can read.
//!
//! Reading: the file is opened with `O_NOFOLLOW`, so a symbolic link planted at the path is
//! refused rather than followed (directories on the way are still resolved as usual), and with
//! `O_NONBLOCK`, so a FIFO planted there cannot hang the open. The checks that follow are made
//! on the opened descriptor (`fstat`), never on the path again, so the file cannot be swapped
//! between check and read. It must be a regular file, readable and writable by its owner only
//! (`mode & 0o077 == 0`), and owned by the process's effective user or by root. At most
//! `max_bytes + 1` bytes are read, so a huge file costs nothing and a long one is still seen
//! to be too long.
//!
//! Creating: `O_CREAT | O_EXCL` with mode 0600, the bytes written and synced, then the parent
//! directory synced so that the name survives a crash.
//!
//! This module owns those checks. It must not know what the bytes mean: the key file and
//! identity parsers decide that.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{CryptError, CryptErrorKind, Result};

/// The mode bits a secret file may not have: any access for group or others.
const LOOSE_MODE_BITS: u32 = 0o077;

/// The bytes of the secret file at `path`, at most `max_bytes + 1` of them, wiped on drop.
/// `what` names the file in messages ("key file", "age identity file").
pub(crate) fn read_secret_file(
    path: &Path,
    what: &str,
    max_bytes: usize,
) -> Result<Zeroizing<Vec<u8>>> {
    let file = open_no_follow(path, what)?;
    check_descriptor(&file, path, what)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(max_bytes + 1));
    // `take` bounds the read: a file longer than `max_bytes` shows as `max_bytes + 1` bytes.
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| CryptError::io(path, &format!("read the {what}"), error))?;
    Ok(bytes)
}

fn open_no_follow(path: &Path, what: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| {
            if error.raw_os_error() == Some(libc::ELOOP) {
                CryptError::new(
                    CryptErrorKind::KeyFilePermissions,
                    format!(
                        "the {what} is a symbolic link; replog opens a {what} only by its own \
                         path, never through a link (give the path of the file itself)"
                    ),
                )
                .in_file(path)
            } else {
                CryptError::io(path, &format!("open the {what}"), error)
            }
        })
}

fn check_descriptor(file: &File, path: &Path, what: &str) -> Result<()> {
    let metadata = file
        .metadata()
        .map_err(|error| CryptError::io(path, &format!("stat the {what}"), error))?;
    let refuse = |context: String| {
        Err(CryptError::new(CryptErrorKind::KeyFilePermissions, context).in_file(path))
    };
    if !metadata.file_type().is_file() {
        return refuse(format!("the {what} is not a regular file"));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & LOOSE_MODE_BITS != 0 {
        return refuse(format!(
            "the {what} has mode {mode:04o}, so other users may read it; a {what} must be \
             readable by its owner only: run `chmod 600 {}`",
            path.display()
        ));
    }
    let owner = metadata.uid();
    let me = rustix::process::geteuid().as_raw();
    if owner != me && owner != 0 {
        return refuse(format!(
            "the {what} is owned by uid {owner}, not by this user (uid {me}) or root; a {what} \
             another user owns may have been planted"
        ));
    }
    Ok(())
}

/// Creates `path` with mode 0600 holding `bytes`, refusing if anything exists there.
pub(crate) fn create_secret_file(path: &Path, what: &str, bytes: &[u8]) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|error| {
            if error.kind() == io::ErrorKind::AlreadyExists {
                CryptError::new(
                    CryptErrorKind::Exists,
                    format!(
                        "a file already exists here; replog never overwrites a {what} (move it \
                         away or choose another path)"
                    ),
                )
                .in_file(path)
            } else {
                CryptError::io(path, &format!("create the {what}"), error)
            }
        })?;
    file.write_all(bytes)
        .map_err(|error| CryptError::io(path, &format!("write the {what}"), error))?;
    file.sync_all()
        .map_err(|error| CryptError::io(path, &format!("sync the {what}"), error))?;
    sync_parent(path)
}

fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(|error| CryptError::io(parent, "sync the directory", error))
}
