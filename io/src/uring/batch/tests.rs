//! The batch rules, driven by made-up completions: short writes, `EAGAIN`, `ECANCELED`,
//! completions out of order, and hard errors.

use super::*;

const BIG: usize = 1 << 30;

/// Takes every submission the state offers now.
fn drain(state: &mut BatchState) -> Vec<Op> {
    std::iter::from_fn(|| state.next_op()).collect()
}

fn write(index: usize, start: usize, len: usize) -> Op {
    Op::Write { index, start, len }
}

fn neg(errno: i32) -> i32 {
    -errno
}

#[test]
fn writes_then_one_drained_sync_in_order() {
    let mut s = BatchState::new(&[10, 20, 30], true, BIG);
    let ops = drain(&mut s);
    assert_eq!(
        ops,
        [write(0, 0, 10), write(1, 0, 20), write(2, 0, 30), Op::Sync]
    );
    s.complete(0, 10);
    s.complete(1, 20);
    s.complete(2, 30);
    assert!(!s.is_done(), "the sync is still in flight");
    s.complete(SYNC_USER_DATA, 0);
    assert!(s.is_done());
    assert!(drain(&mut s).is_empty());
    s.finish().unwrap();
}

#[test]
fn completions_out_of_order_finish_the_batch() {
    let mut s = BatchState::new(&[1, 2, 3], false, BIG);
    assert_eq!(drain(&mut s).len(), 3);
    s.complete(2, 3);
    s.complete(0, 1);
    assert!(!s.is_done());
    s.complete(1, 2);
    assert!(s.is_done());
    s.finish().unwrap();
}

#[test]
fn a_sync_handled_before_a_write_completion_does_not_count() {
    let mut s = BatchState::new(&[8, 8], true, BIG);
    assert_eq!(drain(&mut s).len(), 3);
    s.complete(1, 8);
    s.complete(SYNC_USER_DATA, 0);
    s.complete(0, 8);
    assert!(
        !s.is_done(),
        "the sync completed while write 0 was unfinished"
    );
    assert_eq!(drain(&mut s), [Op::Sync]);
    s.complete(SYNC_USER_DATA, 0);
    assert!(s.is_done());
    s.finish().unwrap();
}

#[test]
fn a_short_write_after_the_sync_was_submitted_voids_that_sync() {
    let mut s = BatchState::new(&[100, 50], true, BIG);
    assert_eq!(drain(&mut s).len(), 3);
    s.complete(0, 40);
    // The remainder goes out after the sync, so the sync cannot cover it.
    assert_eq!(drain(&mut s), [write(0, 40, 60)]);
    s.complete(1, 50);
    s.complete(SYNC_USER_DATA, 0);
    assert!(
        drain(&mut s).is_empty(),
        "no new sync while write 0 is unfinished"
    );
    s.complete(0, 60);
    assert!(!s.is_done());
    assert_eq!(drain(&mut s), [Op::Sync]);
    s.complete(SYNC_USER_DATA, 0);
    assert!(s.is_done());
    s.finish().unwrap();
}

#[test]
fn after_a_resubmission_the_sync_waits_for_every_write() {
    let mut s = BatchState::new(&[100, 50], true, BIG);
    // A driver with room for one submission at a time.
    assert_eq!(s.next_op(), Some(write(0, 0, 100)));
    s.complete(0, 30);
    assert_eq!(s.next_op(), Some(write(1, 0, 50)));
    assert_eq!(s.next_op(), Some(write(0, 30, 70)));
    assert_eq!(
        s.next_op(),
        None,
        "writes are in flight after a resubmission"
    );
    s.complete(1, 50);
    assert_eq!(s.next_op(), None);
    s.complete(0, 70);
    assert_eq!(drain(&mut s), [Op::Sync]);
    s.complete(SYNC_USER_DATA, 0);
    s.finish().unwrap();
}

#[test]
fn eagain_and_eintr_resubmit_the_same_bytes() {
    let mut s = BatchState::new(&[16], false, BIG);
    assert_eq!(drain(&mut s), [write(0, 0, 16)]);
    s.complete(0, neg(libc::EAGAIN));
    assert_eq!(drain(&mut s), [write(0, 0, 16)]);
    s.complete(0, neg(libc::EINTR));
    assert_eq!(drain(&mut s), [write(0, 0, 16)]);
    s.complete(0, 16);
    s.finish().unwrap();
}

#[test]
fn ecanceled_write_is_resubmitted_and_voids_the_sync() {
    let mut s = BatchState::new(&[4, 4], true, BIG);
    assert_eq!(drain(&mut s).len(), 3);
    s.complete(0, neg(libc::ECANCELED));
    assert_eq!(drain(&mut s), [write(0, 0, 4)]);
    s.complete(1, 4);
    s.complete(SYNC_USER_DATA, 0);
    s.complete(0, 4);
    assert_eq!(
        drain(&mut s),
        [Op::Sync],
        "the first sync did not cover write 0"
    );
    s.complete(SYNC_USER_DATA, 0);
    s.finish().unwrap();
}

#[test]
fn ecanceled_sync_is_issued_again() {
    let mut s = BatchState::new(&[4], true, BIG);
    assert_eq!(drain(&mut s).len(), 2);
    s.complete(0, 4);
    s.complete(SYNC_USER_DATA, neg(libc::ECANCELED));
    assert_eq!(drain(&mut s), [Op::Sync]);
    s.complete(SYNC_USER_DATA, 0);
    s.finish().unwrap();
}

#[test]
fn retries_are_bounded() {
    let mut s = BatchState::new(&[4], false, BIG);
    for _ in 0..RETRIES_MAX {
        assert_eq!(drain(&mut s), [write(0, 0, 4)]);
        s.complete(0, neg(libc::EAGAIN));
    }
    assert_eq!(drain(&mut s), [write(0, 0, 4)]);
    s.complete(0, neg(libc::EAGAIN));
    assert!(s.is_done());
    let err = s.finish().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
}

#[test]
fn eio_on_a_write_stops_submitting_but_waits_for_everything_in_flight() {
    let mut s = BatchState::new(&[4, 4, 4], true, BIG);
    assert_eq!(drain(&mut s).len(), 4);
    s.complete(1, neg(libc::EIO));
    assert!(!s.is_done(), "three submissions are still in flight");
    s.complete(0, 2);
    assert!(drain(&mut s).is_empty(), "no resubmission after an error");
    s.complete(SYNC_USER_DATA, 0);
    assert!(!s.is_done());
    s.complete(2, 4);
    assert!(s.is_done());
    assert_eq!(s.finish().unwrap_err().raw_os_error(), Some(libc::EIO));
}

#[test]
fn eio_on_the_sync_is_the_batch_error() {
    let mut s = BatchState::new(&[4], true, BIG);
    assert_eq!(drain(&mut s).len(), 2);
    s.complete(0, 4);
    s.complete(SYNC_USER_DATA, neg(libc::EIO));
    assert!(s.is_done());
    assert!(drain(&mut s).is_empty(), "a failed sync is never retried");
    assert_eq!(s.finish().unwrap_err().raw_os_error(), Some(libc::EIO));
}

#[test]
fn a_zero_byte_completion_is_an_error() {
    let mut s = BatchState::new(&[4], false, BIG);
    drain(&mut s);
    s.complete(0, 0);
    let err = s.finish().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WriteZero);
}

#[test]
fn long_writes_are_split_into_bounded_submissions() {
    let mut s = BatchState::new(&[10], true, 4);
    assert_eq!(drain(&mut s), [write(0, 0, 4)]);
    s.complete(0, 4);
    assert_eq!(drain(&mut s), [write(0, 4, 4)]);
    s.complete(0, 4);
    assert_eq!(drain(&mut s), [write(0, 8, 2)]);
    s.complete(0, 2);
    assert_eq!(drain(&mut s), [Op::Sync]);
    s.complete(SYNC_USER_DATA, 0);
    s.finish().unwrap();
}

#[test]
fn empty_writes_need_no_submission() {
    let mut s = BatchState::new(&[0, 0], true, BIG);
    assert_eq!(drain(&mut s), [Op::Sync]);
    s.complete(SYNC_USER_DATA, 0);
    s.finish().unwrap();

    let s = BatchState::new(&[], false, BIG);
    assert!(s.is_done());
    s.finish().unwrap();
}

#[test]
fn an_unknown_completion_is_an_error_after_the_rest_completes() {
    let mut s = BatchState::new(&[4], false, BIG);
    drain(&mut s);
    s.complete(7, 4);
    assert!(!s.is_done());
    s.complete(0, 4);
    assert!(s.is_done());
    assert!(s.finish().is_err());
}

#[test]
fn an_overlong_completion_is_an_error() {
    let mut s = BatchState::new(&[4], false, BIG);
    drain(&mut s);
    s.complete(0, 5);
    assert!(s.finish().is_err());
}
