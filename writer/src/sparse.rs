//! Reading source images without reading their holes. A 1 TiB image holding 100 MiB of data
//! would otherwise be read, hashed and checked for zeros whole; asking the file where its data
//! lies (`SEEK_DATA`/`SEEK_HOLE` on a real file, through [`File::next_data`]) makes a window
//! that is all hole free: it is never read, and its blocks are known zero without looking.

use std::io;

use replog_io::File;

/// What a window of a source image turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    /// All hole: every byte reads as zero. The buffer was not touched.
    Hole,
    /// Some data: the buffer holds the window's bytes, its holes zero-filled rather than read.
    Data,
}

/// Fills `buf` with the bytes of `image` at `at`, reading only the runs the file says hold
/// data; or, when the window holds none, leaves `buf` alone and says so.
pub(crate) fn read_window(image: &dyn File, buf: &mut [u8], at: u64) -> io::Result<Window> {
    let end = at + buf.len() as u64;
    let mut next = image.next_data(at)?;
    if next.is_none_or(|(start, _)| start >= end) {
        return Ok(Window::Hole);
    }
    let mut pos = at;
    while let Some((start, stop)) = next {
        if start >= end {
            break;
        }
        let start = start.max(pos);
        // A filesystem that reports no hole after the data leaves the rest of the window data.
        let stop = if stop > start { stop.min(end) } else { end };
        let slice = |from: u64, to: u64| (from - at) as usize..(to - at) as usize;
        buf[slice(pos, start)].fill(0);
        image.read_exact_at(&mut buf[slice(start, stop)], start)?;
        pos = stop;
        if pos >= end {
            break;
        }
        next = image.next_data(pos)?;
    }
    buf[(pos - at) as usize..].fill(0);
    Ok(Window::Data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use replog_io::OpenMode;
    use std::os::unix::fs::FileExt;

    /// A sparse file: 8 MiB, with data at 1 MiB and at 5 MiB + 100; the rest holes.
    fn sparse() -> (tempfile::TempDir, std::sync::Arc<dyn File>) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("image");
        let f = std::fs::File::create(&path).expect("the image is created");
        f.set_len(8 << 20).expect("sized");
        f.write_all_at(&[7u8; 5000], 1 << 20).expect("written");
        f.write_all_at(&[9u8; 300], (5 << 20) + 100)
            .expect("written");
        drop(f);
        let storage = replog_io::backend("sync").expect("the sync backend");
        let file = storage.open(&path, OpenMode::Read).expect("opens");
        (dir, file)
    }

    #[test]
    fn a_window_reads_as_the_file_does_and_an_all_hole_window_is_not_touched() {
        let (_dir, file) = sparse();
        let mut want = vec![0u8; 8 << 20];
        file.read_exact_at(&mut want, 0).expect("reads");
        let mut got = vec![0xffu8; 4 << 20];
        for at in [0u64, 4 << 20] {
            assert_eq!(
                read_window(file.as_ref(), &mut got, at).expect("reads"),
                Window::Data
            );
            assert_eq!(got[..], want[at as usize..at as usize + (4 << 20)]);
            got.fill(0xff);
        }
        let mut hole = vec![0xffu8; 1 << 20];
        assert_eq!(
            read_window(file.as_ref(), &mut hole, 2 << 20).expect("reads"),
            Window::Hole
        );
        assert!(hole.iter().all(|&b| b == 0xff), "a hole window is not read");
    }
}
