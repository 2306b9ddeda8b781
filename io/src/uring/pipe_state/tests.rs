//! The pipe's rules fed with made-up completions.

use super::*;
use crate::uring::batch::RETRIES_MAX;

const EIO: i32 = -libc::EIO;
const EAGAIN: i32 = -libc::EAGAIN;

/// Every submission the state allows now.
fn ops(s: &mut PipeState) -> Vec<PipeOp> {
    std::iter::from_fn(|| s.next_op()).collect()
}

fn writes(ops: &[PipeOp]) -> Vec<(u64, usize, u64, usize)> {
    ops.iter()
        .filter_map(|op| match *op {
            PipeOp::Write {
                ticket,
                piece,
                file_offset,
                len,
                ..
            } => Some((ticket, piece, file_offset, len)),
            PipeOp::Sync | PipeOp::Kick { .. } => None,
        })
        .collect()
}

/// Completes every write in `ops` in full.
fn complete_all(s: &mut PipeState, ops: &[PipeOp]) {
    for op in ops {
        if let PipeOp::Write { len, .. } = *op {
            s.complete(op.user_data(), len as i32);
        }
    }
}

#[test]
fn a_buffer_goes_out_in_pieces_and_its_sync_waits_for_all_of_them() {
    let mut s = PipeState::new(100, false);
    assert_eq!(s.push(1000, 250, true), 1);
    let first = ops(&mut s);
    assert_eq!(
        writes(&first),
        [(1, 0, 1000, 100), (1, 1, 1100, 100), (1, 2, 1200, 50)]
    );
    assert!(
        !first.contains(&PipeOp::Sync),
        "no sync before the writes complete"
    );
    complete_all(&mut s, &first[..2]);
    assert_eq!(ops(&mut s), [], "one piece is still in flight");
    complete_all(&mut s, &first[2..]);
    assert_eq!(ops(&mut s), [PipeOp::Sync]);
    assert!(s.pop_finished().is_none(), "not durable yet");
    s.complete(PipeOp::Sync.user_data(), 0);
    let (id, r) = s.pop_finished().unwrap();
    assert_eq!(id, 1);
    r.unwrap();
    assert_eq!(s.in_flight(), 0);
    assert_eq!(s.outstanding(), 0);
}

#[test]
fn syncs_asked_while_one_runs_share_the_next() {
    let mut s = PipeState::new(100, false);
    s.push(0, 100, true);
    let w1 = ops(&mut s);
    complete_all(&mut s, &w1);
    assert_eq!(ops(&mut s), [PipeOp::Sync]);
    // While the first sync runs, two more tickets ask for syncs; their writes go on.
    s.push(100, 100, true);
    s.push(200, 100, true);
    let w23 = ops(&mut s);
    assert_eq!(writes(&w23).len(), 2);
    assert!(!w23.contains(&PipeOp::Sync), "one sync at a time");
    complete_all(&mut s, &w23);
    assert_eq!(ops(&mut s), []);
    s.complete(PipeOp::Sync.user_data(), 0);
    assert_eq!(s.pop_finished().unwrap().0, 1);
    assert!(s.pop_finished().is_none());
    assert_eq!(ops(&mut s), [PipeOp::Sync], "one sync for tickets 2 and 3");
    assert_eq!(ops(&mut s), []);
    s.complete(PipeOp::Sync.user_data(), 0);
    assert_eq!(s.pop_finished().unwrap().0, 2);
    assert_eq!(s.pop_finished().unwrap().0, 3);
}

#[test]
fn a_sync_covers_only_tickets_written_when_it_started() {
    let mut s = PipeState::new(100, false);
    s.push(0, 100, true);
    let w1 = ops(&mut s);
    s.push(100, 100, true);
    let w2 = ops(&mut s);
    complete_all(&mut s, &w1);
    assert_eq!(ops(&mut s), [PipeOp::Sync]);
    complete_all(&mut s, &w2);
    s.complete(PipeOp::Sync.user_data(), 0);
    assert_eq!(s.pop_finished().unwrap().0, 1);
    assert!(
        s.pop_finished().is_none(),
        "ticket 2 completed after the sync started"
    );
    assert_eq!(ops(&mut s), [PipeOp::Sync]);
    s.complete(PipeOp::Sync.user_data(), 0);
    assert_eq!(s.pop_finished().unwrap().0, 2);
}

#[test]
fn tickets_without_sync_finish_when_written_in_order() {
    let mut s = PipeState::new(100, false);
    s.push(0, 100, false);
    s.push(100, 100, false);
    let w = ops(&mut s);
    complete_all(&mut s, &w[1..]);
    assert!(
        s.pop_finished().is_none(),
        "ticket 1 is still being written"
    );
    complete_all(&mut s, &w[..1]);
    assert_eq!(s.pop_finished().unwrap().0, 1);
    assert_eq!(s.pop_finished().unwrap().0, 2);
    assert_eq!(ops(&mut s), [], "nobody asked for a sync");
}

#[test]
fn a_short_write_is_resubmitted_for_its_remainder() {
    let mut s = PipeState::new(100, false);
    s.push(0, 100, true);
    let w = ops(&mut s);
    s.complete(w[0].user_data(), 40);
    let again = ops(&mut s);
    assert_eq!(writes(&again), [(1, 0, 40, 60)]);
    complete_all(&mut s, &again);
    assert_eq!(ops(&mut s), [PipeOp::Sync]);
}

#[test]
fn transient_errors_are_retried_up_to_the_limit() {
    let mut s = PipeState::new(100, false);
    s.push(0, 100, false);
    for _ in 0..RETRIES_MAX {
        let w = ops(&mut s);
        assert_eq!(w.len(), 1);
        s.complete(w[0].user_data(), EAGAIN);
    }
    let w = ops(&mut s);
    s.complete(w[0].user_data(), -libc::ECANCELED);
    let (_, r) = s.pop_finished().unwrap();
    assert!(r.unwrap_err().to_string().contains("retries"));
}

#[test]
fn a_transient_sync_failure_issues_a_new_sync() {
    let mut s = PipeState::new(100, false);
    s.push(0, 100, true);
    let w = ops(&mut s);
    complete_all(&mut s, &w);
    assert_eq!(ops(&mut s), [PipeOp::Sync]);
    s.complete(PipeOp::Sync.user_data(), -libc::EINTR);
    assert_eq!(ops(&mut s), [PipeOp::Sync]);
    s.complete(PipeOp::Sync.user_data(), 0);
    s.pop_finished().unwrap().1.unwrap();
}

#[test]
fn a_failed_sync_fails_every_ticket_waiting_for_it_and_every_later_one() {
    let mut s = PipeState::new(100, false);
    s.push(0, 100, false);
    s.push(100, 100, true);
    let w = ops(&mut s);
    complete_all(&mut s, &w);
    assert_eq!(ops(&mut s), [PipeOp::Sync]);
    s.push(200, 100, false);
    assert_eq!(ops(&mut s).len(), 1);
    s.complete(PipeOp::Sync.user_data(), EIO);
    s.push(300, 100, false);
    assert_eq!(ops(&mut s), [], "nothing new after a failure");
    s.pop_finished()
        .unwrap()
        .1
        .expect("ticket 1 needed no sync and was written");
    assert!(s.pop_finished().unwrap().1.is_err());
    assert!(
        s.pop_finished().is_none(),
        "ticket 3 still has a piece in flight"
    );
    s.complete(
        PipeOp::Write {
            ticket: 3,
            piece: 0,
            buf_start: 0,
            file_offset: 200,
            len: 100,
        }
        .user_data(),
        100,
    );
    assert!(
        s.pop_finished().unwrap().1.is_ok(),
        "ticket 3 was written and asked no sync"
    );
    assert!(
        s.pop_finished().unwrap().1.is_err(),
        "ticket 4 never went out"
    );
    assert_eq!(s.in_flight(), 0);
}

#[test]
fn a_failed_piece_holds_its_buffer_until_its_other_pieces_complete() {
    let mut s = PipeState::new(100, false);
    s.push(0, 300, false);
    let w = ops(&mut s);
    s.complete(w[0].user_data(), EIO);
    assert!(
        s.pop_finished().is_none(),
        "two pieces still read the buffer"
    );
    complete_all(&mut s, &w[1..]);
    let (_, r) = s.pop_finished().unwrap();
    assert!(r.is_err());
}

#[test]
fn an_overlapping_ticket_waits_for_the_one_it_rewrites() {
    let mut s = PipeState::new(4096, false);
    s.push(4096, 8192, true);
    let w1 = ops(&mut s);
    // The next buffer starts with the last block of the first, padded then, rewritten now.
    s.push(8192, 4096, false);
    // A later, disjoint ticket behind it waits too: tickets go out in order.
    s.push(12288, 4096, false);
    assert_eq!(ops(&mut s), []);
    complete_all(&mut s, &w1);
    let next = ops(&mut s);
    assert_eq!(writes(&next), [(2, 0, 8192, 4096), (3, 0, 12288, 4096)]);
    assert!(next.contains(&PipeOp::Sync));
}

#[test]
fn a_completion_nobody_submitted_fails_the_pipe() {
    let mut s = PipeState::new(100, false);
    s.push(0, 100, false);
    let w = ops(&mut s);
    s.complete(12345, 100);
    assert_eq!(
        s.pop_finished().map(|(id, _)| id),
        None,
        "piece still in flight"
    );
    complete_all(&mut s, &w);
    let (_, r) = s.pop_finished().unwrap();
    assert!(
        r.is_ok(),
        "its own write completed before anything failed it"
    );
    s.push(100, 100, false);
    assert_eq!(ops(&mut s), []);
    assert!(
        s.pop_finished()
            .unwrap()
            .1
            .unwrap_err()
            .to_string()
            .contains("does not have in flight")
    );
}

#[test]
fn zero_and_oversized_results_fail_the_pipe() {
    for result in [0, 101] {
        let mut s = PipeState::new(100, false);
        s.push(0, 100, false);
        let w = ops(&mut s);
        s.complete(w[0].user_data(), result);
        assert!(s.pop_finished().unwrap().1.is_err(), "result {result}");
    }
}

#[test]
fn abandoning_after_a_ring_failure_returns_every_ticket_failed() {
    let mut s = PipeState::new(100, false);
    s.push(0, 200, true);
    let _ = ops(&mut s);
    s.abandon_in_flight(io::Error::other("ring gone"));
    assert_eq!(s.in_flight(), 0);
    assert!(s.pop_finished().unwrap().1.is_err());
    assert!(s.pop_finished().is_none());
}

#[test]
fn each_written_ticket_without_a_sync_gets_a_write_back_hint_whose_result_is_ignored() {
    let mut s = PipeState::new(100, true);
    s.push(0, 150, false);
    s.push(150, 50, true);
    let w = ops(&mut s);
    assert_eq!(writes(&w).len(), 3);
    complete_all(&mut s, &w);
    // Ticket 1 needs no sync: it is returned at once, and its hint still goes out. Ticket 2's
    // sync writes it back: no hint races it.
    assert_eq!(s.pop_finished().unwrap().0, 1);
    let next = ops(&mut s);
    assert_eq!(
        next,
        [
            PipeOp::Sync,
            PipeOp::Kick {
                file_offset: 0,
                len: 150
            },
        ]
    );
    // A failing hint changes nothing; tickets finish on their own terms.
    s.complete(next[1].user_data(), -libc::EINVAL);
    assert_eq!(s.in_flight(), 1, "the sync is still in flight");
    s.complete(next[0].user_data(), 0);
    assert_eq!(s.pop_finished().unwrap().0, 2);
    assert_eq!(s.in_flight(), 0);
    assert_eq!(ops(&mut s), []);
}
