//! Write pipes on real files, on every real backend, through the page cache and direct: order
//! of completions, bytes on the file, rewrites of a block still in flight, and failures.

use std::path::Path;
use std::sync::Arc;

use replog_io::{File, IoBuf, OpenMode, PipeOptions, Storage, open_pipe};

/// The real backends available here.
fn backends() -> Vec<(&'static str, Arc<dyn Storage>)> {
    let mut out: Vec<(&'static str, Arc<dyn Storage>)> =
        vec![("sync", replog_io::backend("sync").expect("always there"))];
    match replog_io::backend("uring") {
        Ok(s) => out.push(("uring", s)),
        Err(e) => eprintln!("note: io_uring is unavailable here ({e}); skipped"),
    }
    out
}

fn buf(bytes: &[u8]) -> IoBuf {
    let mut b = IoBuf::with_capacity(bytes.len());
    b.extend_from_slice(bytes);
    b
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn open(storage: &Arc<dyn Storage>, dir: &Path, name: &str) -> Arc<dyn File> {
    storage
        .open(&dir.join(name), OpenMode::CreateNew)
        .expect("created")
}

#[test]
fn many_buffers_in_flight_complete_in_order_and_land_exactly() {
    for (name, storage) in backends() {
        for direct in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = open(&storage, dir.path(), "f");
            let opened = open_pipe(&file, &path, PipeOptions { direct }).expect("opens");
            let mut pipe = opened.pipe;
            let align = pipe.direct().map_or(1, |a| a.offset_bytes as usize);
            if direct {
                eprintln!("{name}: direct alignment {align}, note {:?}", opened.note);
            }
            let mut expect = Vec::new();
            let mut tickets = Vec::new();
            for i in 0..24usize {
                // Sizes around the 1 MiB piece size, multiples of the alignment.
                let len = ((i % 5) * 300_000 + 4096).next_multiple_of(align);
                let data = pattern(len, i as u8);
                tickets.push(pipe.submit(expect.len() as u64, buf(&data), i % 7 == 3));
                expect.extend_from_slice(&data);
            }
            assert_eq!(tickets, (1..=24).collect::<Vec<u64>>());
            assert!(pipe.outstanding() > 0);
            for t in tickets {
                let c = pipe.next_completion(true).expect("outstanding");
                assert_eq!(c.ticket, t, "{name} direct {direct}: in order");
                c.result
                    .unwrap_or_else(|e| panic!("{name} direct {direct}: {e}"));
            }
            assert!(pipe.next_completion(true).is_none());
            assert_eq!(pipe.outstanding(), 0);
            drop(pipe);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                expect,
                "{name} direct {direct}"
            );
        }
    }
}

#[test]
fn a_block_rewritten_while_its_first_write_is_in_flight_ends_with_the_rewrite() {
    for (name, storage) in backends() {
        for direct in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            let file = open(&storage, dir.path(), "f");
            let mut pipe = open_pipe(&file, &path, PipeOptions { direct })
                .unwrap()
                .pipe;
            let a = pipe.direct().map_or(4096, |a| a.offset_bytes as usize);
            // A padded tail block with a sync, then the same block with more, many times over.
            let mut last = Vec::new();
            for round in 0..30u8 {
                let mut block = pattern(a, round);
                block[a / 2..].fill(0);
                pipe.submit(0, buf(&block), true);
                last = pattern(2 * a, round.wrapping_add(100));
                pipe.submit(0, buf(&last), false);
            }
            while let Some(c) = pipe.next_completion(true) {
                c.result
                    .unwrap_or_else(|e| panic!("{name} direct {direct}: {e}"));
            }
            drop(pipe);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                last,
                "{name} direct {direct}"
            );
        }
    }
}

#[test]
fn a_failing_write_fails_it_and_every_later_submission() {
    for (name, storage) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        open(&storage, dir.path(), "f");
        // Opened for reading only: every write fails with EBADF.
        let file = storage.open(&path, OpenMode::Read).unwrap();
        let mut pipe = open_pipe(&file, &path, PipeOptions::default())
            .unwrap()
            .pipe;
        for i in 0..4u64 {
            pipe.submit(i * 4096, buf(&pattern(4096, 1)), i == 1);
        }
        for t in 1..=4 {
            let c = pipe.next_completion(true).unwrap();
            assert_eq!(c.ticket, t);
            assert!(c.result.is_err(), "{name}: ticket {t} must fail");
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}

#[test]
fn a_misaligned_direct_submission_is_refused_not_written() {
    for (name, storage) in backends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = open(&storage, dir.path(), "f");
        let mut pipe = open_pipe(&file, &path, PipeOptions { direct: true })
            .unwrap()
            .pipe;
        if pipe.direct().is_none() {
            eprintln!("note: {name}: no direct I/O on this filesystem; skipped");
            continue;
        }
        pipe.submit(0, buf(&pattern(100, 1)), false);
        let c = pipe.next_completion(true).unwrap();
        assert!(c.result.is_err(), "{name}: a 100-byte direct write");
    }
}
