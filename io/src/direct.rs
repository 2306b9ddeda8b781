//! Direct I/O on real files: opening a second descriptor with `O_DIRECT` and asking the
//! filesystem (`statx` with `STATX_DIOALIGN`) what alignment its direct writes need.
//!
//! Where direct I/O is not possible (the filesystem refuses `O_DIRECT`, as tmpfs does with
//! `EINVAL`; the kernel predates `STATX_DIOALIGN`; the file reports an alignment of 0; or the
//! memory alignment is more than [`IoBuf`](crate::buf::IoBuf) guarantees), the caller writes
//! through the page cache and says why: [`open_direct`] returns the reason as its error.

use std::ffi::CStr;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::buf::IO_BUF_ALIGN_BYTES;
use crate::pipe::{DirectAlignment, PipeOptions};

/// Why direct I/O is not used for a file, in a sentence for the user.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Direct I/O is not possible here; write through the page cache.
    Fallback(String),
    /// Opening failed for another reason (the file vanished, permissions): a real error.
    Error(io::Error),
}

/// Opens `path` for writing with `O_DIRECT` and returns the descriptor and the alignment its
/// writes need. A symbolic link at `path` is refused (`O_NOFOLLOW`): the file is one replog
/// opened already, never a link to somewhere else.
pub(crate) fn open_direct(path: &Path) -> Result<(fs::File, DirectAlignment), Refusal> {
    let file = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL | libc::EOPNOTSUPP) => Refusal::Fallback(format!(
                "{}: the filesystem refuses O_DIRECT ({e}); writing through the page cache",
                path.display()
            )),
            _ => Refusal::Error(e),
        })?;
    let align = dio_alignment(&file).map_err(|why| {
        Refusal::Fallback(format!(
            "{}: {why}; writing through the page cache",
            path.display()
        ))
    })?;
    Ok((file, align))
}

/// The descriptor a pipe onto `file` (opened from `path`) writes through: one opened with
/// `O_DIRECT` when `options` ask for it and the filesystem allows it, otherwise a duplicate of
/// the file's own; with the alignment direct writes need, and a note when direct I/O was asked
/// for and is not used.
pub(crate) fn pipe_descriptor(
    file: &fs::File,
    path: &Path,
    options: PipeOptions,
) -> io::Result<(fs::File, Option<DirectAlignment>, Option<String>)> {
    if options.direct {
        match open_direct(path) {
            Ok((fd, align)) => {
                same_file(file, &fd, path)?;
                return Ok((fd, Some(align), None));
            }
            Err(Refusal::Error(e)) => return Err(e),
            Err(Refusal::Fallback(note)) => {
                return Ok((file.try_clone()?, None, Some(note)));
            }
        }
    }
    Ok((file.try_clone()?, None, None))
}

/// Refuses a second descriptor that is not the file the first was opened on (the name was
/// replaced in between), so a pipe never writes a file other than the one opened.
fn same_file(first: &fs::File, second: &fs::File, path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (first.metadata()?, second.metadata()?);
    if (a.dev(), a.ino()) == (b.dev(), b.ino()) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{}: the file was replaced while it was being opened for direct I/O",
            path.display()
        )))
    }
}

/// The direct-I/O alignment `statx` reports for `file`.
fn dio_alignment(file: &fs::File) -> Result<DirectAlignment, String> {
    const EMPTY: &CStr = c"";
    // SAFETY: an all-zero `statx` is a valid value of the plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `EMPTY` is a NUL-terminated string that lives for the call; with AT_EMPTY_PATH
    // the kernel reads the descriptor, which `file` keeps open, and writes only into `stx`,
    // which is a valid, exclusively borrowed `statx`.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            EMPTY.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(format!(
            "statx failed ({}), so the direct-I/O alignment is unknown",
            io::Error::last_os_error()
        ));
    }
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Err("the kernel does not report a direct-I/O alignment (STATX_DIOALIGN)".into());
    }
    alignment_from(stx.stx_dio_mem_align, stx.stx_dio_offset_align)
}

/// Checks the alignments `statx` reported.
fn alignment_from(memory: u32, offset: u32) -> Result<DirectAlignment, String> {
    if memory == 0 || offset == 0 {
        return Err("the file does not support direct I/O (its alignment is 0)".into());
    }
    if memory as usize > IO_BUF_ALIGN_BYTES || !memory.is_power_of_two() {
        return Err(format!(
            "direct I/O needs memory aligned to {memory} bytes, more than the {IO_BUF_ALIGN_BYTES} replog's buffers have"
        ));
    }
    if !offset.is_power_of_two() || offset as usize > IO_BUF_ALIGN_BYTES {
        return Err(format!(
            "direct I/O needs offsets aligned to {offset} bytes; replog supports powers of two up to {IO_BUF_ALIGN_BYTES}"
        ));
    }
    Ok(DirectAlignment {
        memory_bytes: u64::from(memory),
        offset_bytes: u64::from(offset),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_oversized_alignments_fall_back() {
        assert!(alignment_from(0, 512).is_err());
        assert!(alignment_from(512, 0).is_err());
        assert!(alignment_from(8192, 512).is_err());
        assert!(alignment_from(512, 3000).is_err());
        assert_eq!(
            alignment_from(4, 512).unwrap(),
            DirectAlignment {
                memory_bytes: 4,
                offset_bytes: 512
            }
        );
    }

    /// On the test machine's filesystem direct I/O either works, with a sane alignment, or is
    /// refused with a reason; it never fails outright.
    #[test]
    fn a_real_file_opens_direct_or_says_why_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"").unwrap();
        match open_direct(&path) {
            Ok((_, a)) => {
                assert!(a.offset_bytes.is_power_of_two() && a.offset_bytes <= 4096);
            }
            Err(Refusal::Fallback(why)) => assert!(why.contains("page cache"), "{why}"),
            Err(Refusal::Error(e)) => panic!("opening a file that exists failed: {e}"),
        }
        let missing = dir.path().join("missing");
        assert!(matches!(open_direct(&missing), Err(Refusal::Error(_))));
    }
}
