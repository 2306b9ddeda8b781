//! Scan tests: each recovery rule of `FORMAT.md` that a single segment image can show, built
//! byte by byte the way a writer lays records down, then damaged the ways the fault model allows
//! (cut, zeroed, overwritten with garbage, bit-flipped, copied elsewhere).

use super::*;
use crate::garbage::DeadRange;
use crate::vault_seed;

const VAULT: VaultId = [0x11; 16];
const OTHER_VAULT: VaultId = [0x22; 16];
const SEGMENT: u64 = 5;
const FIRST_LSN: u64 = 100;

/// One record as the builder framed it.
#[derive(Clone, Debug)]
struct Built {
    header: RecordHeader,
    bytes: Vec<u8>,
}

impl Built {
    fn start(&self) -> usize {
        self.header.segment_offset as usize
    }
    fn end(&self) -> usize {
        self.start() + self.bytes.len()
    }
}

/// Builds a segment image the way a writer does: the header is synced before any record, each
/// record carries the segment length durable when it was framed, and `sync` moves that length
/// to the current end.
#[derive(Clone, Debug)]
struct SegmentBuilder {
    vault_id: VaultId,
    segment_id: u64,
    bytes: Vec<u8>,
    next_lsn: u64,
    synced_upto: u64,
    records: Vec<Built>,
}

impl SegmentBuilder {
    fn new() -> SegmentBuilder {
        SegmentBuilder::for_place(VAULT, SEGMENT)
    }

    fn for_place(vault_id: VaultId, segment_id: u64) -> SegmentBuilder {
        let header = SegmentHeader {
            vault_id,
            segment_id,
            first_lsn: FIRST_LSN,
            created_unix_ns: 1_700_000_000,
            chain_start: None,
        };
        let bytes = header.encode(vault_seed(&vault_id));
        let synced_upto = bytes.len() as u64;
        SegmentBuilder {
            vault_id,
            segment_id,
            bytes,
            next_lsn: FIRST_LSN,
            synced_upto,
            records: Vec::new(),
        }
    }

    fn frame(
        &mut self,
        kind: RecordKind,
        flags: u8,
        disk: (u32, u64, u64),
        payload: &[u8],
    ) -> &mut Self {
        let (disk_id, disk_offset, length) = disk;
        let mut header = RecordHeader {
            crc: 0,
            kind,
            flags,
            lsn: self.next_lsn,
            segment_id: self.segment_id,
            segment_offset: self.bytes.len() as u64,
            synced_upto: self.synced_upto,
            disk_id,
            stored_len: payload.len() as u32,
            disk_offset,
            length,
        };
        let mut bytes = header.seal(vault_seed(&self.vault_id), payload).to_vec();
        bytes.extend_from_slice(payload);
        self.bytes.extend_from_slice(&bytes);
        if kind != RecordKind::Footer {
            self.next_lsn += 1;
        }
        self.records.push(Built { header, bytes });
        self
    }

    /// A write of `len` non-zero bytes, so zeroing any of them changes the record.
    fn write(&mut self, disk_offset: u64, len: usize) -> &mut Self {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
        self.frame(RecordKind::Write, 0, (1, disk_offset, len as u64), &data)
    }

    fn zero(&mut self, disk_offset: u64, len: u64) -> &mut Self {
        self.frame(RecordKind::Zero, 0, (2, disk_offset, len), &[])
    }

    /// Grows disk 1 from `old_bytes` to `new_bytes`.
    fn resize(&mut self, old_bytes: u64, new_bytes: u64) -> &mut Self {
        self.frame(RecordKind::Resize, 0, (1, old_bytes, new_bytes), &[])
    }

    fn point(&mut self, point_id: u64, label: &str) -> &mut Self {
        let payload = PointPayload {
            point_id,
            time_unix_ns: 42,
            kind: PointKind::CrashConsistent,
            label: label.into(),
            chain: None,
        }
        .encode();
        self.frame(RecordKind::Point, 0, (0, 0, 0), &payload)
    }

    /// Everything written so far is durable.
    fn sync(&mut self) -> &mut Self {
        self.synced_upto = self.bytes.len() as u64;
        self
    }

    /// The footer index of the records framed so far.
    fn footer_index(&self) -> FooterIndex {
        let mut footer = FooterIndex::default();
        for r in &self.records {
            match r.header.kind {
                RecordKind::Write | RecordKind::Zero | RecordKind::Resize => {
                    footer.extents.push(ExtentEntry::from_header(&r.header))
                }
                RecordKind::Point => footer.points.push(PointEntry {
                    lsn: r.header.lsn,
                    record_offset: r.header.segment_offset,
                    point: PointPayload::decode(&r.bytes[RECORD_HEADER_BYTES..]).unwrap(),
                }),
                RecordKind::Footer => unreachable!("sealed twice"),
            }
        }
        footer
    }

    /// Appends the footer record (LSN = the last record's LSN) and the trailer.
    fn seal(&mut self) -> &mut Self {
        let index = self.footer_index().encode();
        let record_count = self.records.len() as u32;
        let last_lsn = self.next_lsn - 1;
        self.next_lsn = last_lsn;
        self.frame(RecordKind::Footer, 0, (0, 0, 0), &index);
        self.next_lsn = last_lsn + 1;
        let footer = self.records.last().unwrap().header;
        let trailer = Trailer {
            segment_id: self.segment_id,
            footer_offset: footer.segment_offset,
            first_lsn: FIRST_LSN,
            last_lsn,
            record_count,
            footer_crc: footer.crc,
        };
        self.bytes
            .extend_from_slice(&trailer.encode(vault_seed(&self.vault_id)));
        self.sync()
    }

    fn expect(&self) -> Expect {
        Expect {
            vault_id: self.vault_id,
            seed: vault_seed(&self.vault_id),
            segment_id: self.segment_id,
        }
    }

    /// Write, zero and point records (not the footer).
    fn data_records(&self) -> Vec<Built> {
        self.records
            .iter()
            .filter(|r| r.header.kind != RecordKind::Footer)
            .cloned()
            .collect()
    }
}

/// Scans `bytes`, returning the result and every visited record's bytes.
fn scan_visits(bytes: &[u8], expect: &Expect) -> (Result<Scan, DecodeError>, Vec<Vec<u8>>) {
    let mut visits = Vec::new();
    let result = scan(bytes, expect, |h, payload| {
        let mut again = *h;
        let mut whole = again.seal(expect.seed, payload).to_vec();
        whole.extend_from_slice(payload);
        visits.push(whole);
    });
    (result, visits)
}

/// Asserts that exactly `records` were visited, intact and in order.
fn assert_visited(visits: &[Vec<u8>], records: &[Built], context: &str) {
    assert_eq!(
        visits.len(),
        records.len(),
        "{context}: visited {} records, expected {}",
        visits.len(),
        records.len()
    );
    for (i, (v, r)) in visits.iter().zip(records).enumerate() {
        assert!(
            v == &r.bytes,
            "{context}: record {i} visited with different bytes"
        );
    }
}

/// Four small records of mixed kinds with one sync in the middle.
fn mixed_segment() -> SegmentBuilder {
    let mut b = SegmentBuilder::new();
    b.write(0, 300)
        .zero(4096, 8192)
        .sync()
        .point(1, "nightly")
        .write(65536, 777);
    b
}

#[test]
fn records_that_end_at_eof_end_cleanly() {
    let b = mixed_segment();
    let (result, visits) = scan_visits(&b.bytes, &b.expect());
    let s = result.unwrap();
    assert_eq!(
        s.end,
        SegmentEnd::Clean {
            offset: b.bytes.len() as u64
        }
    );
    assert_eq!(s.record_count, 4);
    assert_eq!(s.last_lsn, FIRST_LSN + 3);
    assert!(s.footer.is_none());
    assert_eq!(s.header.segment_id, SEGMENT);
    assert_visited(&visits, &b.records, "clean end");
}

#[test]
fn a_segment_with_only_its_header_ends_cleanly_after_the_header() {
    let b = SegmentBuilder::new();
    let s = scan(&b.bytes, &b.expect(), |_, _| panic!("no record to visit")).unwrap();
    assert_eq!(
        s.end,
        SegmentEnd::Clean {
            offset: SEGMENT_HEADER_BYTES as u64
        }
    );
    assert_eq!((s.record_count, s.last_lsn), (0, FIRST_LSN - 1));
}

#[test]
fn zeros_after_the_last_record_are_a_clean_end() {
    let b = mixed_segment();
    for zeros in [1, 63, 64, 65, 4096, 70_000] {
        let mut bytes = b.bytes.clone();
        bytes.resize(bytes.len() + zeros, 0);
        let (result, visits) = scan_visits(&bytes, &b.expect());
        assert_eq!(
            result.unwrap().end,
            SegmentEnd::Clean {
                offset: b.bytes.len() as u64
            },
            "{zeros} zeros"
        );
        assert_visited(&visits, &b.records, "zeros after the end");
    }
}

#[test]
fn a_sealed_segment_decodes_with_its_footer_and_trailer() {
    let mut b = mixed_segment();
    let index = b.footer_index();
    b.seal();
    let footer = b.records.last().unwrap().header;
    assert_eq!(footer.lsn, FIRST_LSN + 3, "the footer carries the last LSN");
    let (result, visits) = scan_visits(&b.bytes, &b.expect());
    let s = result.unwrap();
    let SegmentEnd::Sealed {
        footer_offset,
        trailer,
    } = s.end
    else {
        panic!("not sealed: {:?}", s.end)
    };
    assert_eq!(footer_offset, footer.segment_offset);
    assert_eq!(s.end.append_offset(), footer.segment_offset);
    assert_eq!(
        (trailer.first_lsn, trailer.last_lsn, trailer.record_count),
        (FIRST_LSN, FIRST_LSN + 3, 4)
    );
    assert_eq!(trailer.footer_crc, footer.crc);
    assert_eq!(s.footer.as_ref(), Some(&index));
    assert_eq!(index.extents.len(), 3);
    assert_eq!(index.points[0].point.label, "nightly");
    assert_eq!((s.record_count, s.last_lsn), (4, FIRST_LSN + 3));
    assert_eq!(s.valid_end, b.bytes.len() as u64);
    assert_visited(&visits, &b.data_records(), "sealed");
}

#[test]
fn a_footer_whose_trailer_is_missing_or_torn_is_a_torn_tail_at_the_footer() {
    let mut b = mixed_segment();
    b.seal();
    let footer_at = b.records.last().unwrap().header.segment_offset;
    let trailer_at = b.bytes.len() - TRAILER_BYTES;
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for keep in [0, 1, 8, 59, 63] {
        cases.push((
            format!("trailer cut to {keep} bytes"),
            b.bytes[..trailer_at + keep].to_vec(),
        ));
    }
    for at in [0, 7, 8, 30, 47, 48, 60, 63] {
        let mut torn = b.bytes.clone();
        torn[trailer_at + at..].fill(0);
        cases.push((format!("trailer zeroed from byte {at}"), torn));
        let mut flipped = b.bytes.clone();
        flipped[trailer_at + at] ^= 0x40;
        cases.push((format!("trailer byte {at} flipped"), flipped));
    }
    for (case, bytes) in cases {
        let (result, visits) = scan_visits(&bytes, &b.expect());
        match result {
            Ok(Scan {
                end: SegmentEnd::Torn { offset, .. },
                footer: None,
                ..
            }) => {
                assert_eq!(offset, footer_at, "{case}");
            }
            other => panic!("{case}: expected a torn tail at the footer, got {other:?}"),
        }
        assert_visited(&visits, &b.data_records(), &case);
    }
}

#[test]
fn a_trailer_of_another_segment_does_not_seal_this_one() {
    let mut b = mixed_segment();
    b.seal();
    let footer = b.records.last().unwrap().header;
    let trailer_at = b.bytes.len() - TRAILER_BYTES;
    let mut other = Trailer::decode(&b.bytes[trailer_at..], b.expect().seed).unwrap();
    other.segment_id = SEGMENT + 1;
    let mut bytes = b.bytes.clone();
    bytes[trailer_at..].copy_from_slice(&other.encode(b.expect().seed));
    let s = scan(&bytes, &b.expect(), |_, _| {}).unwrap();
    assert!(
        matches!(s.end, SegmentEnd::Torn { offset, .. } if offset == footer.segment_offset),
        "{:?}",
        s.end
    );
}

#[test]
fn a_trailer_that_disagrees_with_the_records_it_seals_is_damage() {
    let mut b = mixed_segment();
    b.seal();
    let trailer_at = b.bytes.len() - TRAILER_BYTES;
    let seed = b.expect().seed;
    let good = Trailer::decode(&b.bytes[trailer_at..], seed).unwrap();
    let wrong = [
        Trailer {
            last_lsn: good.last_lsn + 1,
            ..good
        },
        Trailer {
            first_lsn: good.first_lsn - 1,
            ..good
        },
        Trailer {
            record_count: good.record_count - 1,
            ..good
        },
    ];
    for t in wrong {
        let mut bytes = b.bytes.clone();
        bytes[trailer_at..].copy_from_slice(&t.encode(seed));
        let err = scan(&bytes, &b.expect(), |_, _| {}).unwrap_err();
        assert_eq!(
            (err.what, err.offset),
            ("segment trailer", trailer_at as u64),
            "{t:?}: {err}"
        );
    }
}

#[test]
fn zeros_after_a_trailer_still_seal_the_segment() {
    // A torn tail cut before the seal is zeroed, not truncated, so a sealed segment may be
    // longer than its trailer's end.
    let mut b = mixed_segment();
    b.seal();
    for zeros in [1, 64, 4096, 70_000] {
        let mut bytes = b.bytes.clone();
        bytes.resize(bytes.len() + zeros, 0);
        let s = scan(&bytes, &b.expect(), |_, _| {}).unwrap();
        assert!(
            matches!(s.end, SegmentEnd::Sealed { .. }),
            "{zeros} zeros: {:?}",
            s.end
        );
        assert_eq!(s.valid_end, b.bytes.len() as u64);
    }
}

#[test]
fn non_zero_bytes_after_a_trailer_are_damage_naming_the_first_one() {
    let mut b = mixed_segment();
    b.seal();
    let end = b.bytes.len() as u64;
    let mut zeros_then_one = vec![0u8; 100];
    zeros_then_one.push(1);
    let cases = [
        (vec![0xEE; 3], end),
        (zeros_then_one, end + 100),
        (b.records[0].bytes.clone(), end),
    ];
    for (extra, at) in cases {
        let mut bytes = b.bytes.clone();
        bytes.extend_from_slice(&extra);
        let err = scan(&bytes, &b.expect(), |_, _| {}).unwrap_err();
        assert_eq!(err.offset, at, "{err}");
        assert!(err.to_string().contains("after the trailer"), "{err}");
    }
}

/// Damage applied from a byte offset to the end of the file.
#[derive(Clone, Copy, Debug)]
enum Tail {
    Cut,
    Zeros,
    Garbage,
}

fn damage_tail(bytes: &[u8], from: usize, tail: Tail, rng: &mut u64) -> Vec<u8> {
    let mut out = bytes.to_vec();
    match tail {
        Tail::Cut => out.truncate(from),
        Tail::Zeros => out[from..].fill(0),
        Tail::Garbage => out[from..]
            .iter_mut()
            .for_each(|b| *b = xorshift(rng) as u8),
    }
    out
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The first record whose bytes `damaged` does not hold intact.
fn first_damaged(records: &[Built], damaged: &[u8]) -> Option<usize> {
    records
        .iter()
        .position(|r| damaged.get(r.start()..r.end()) != Some(&r.bytes[..]))
}

#[test]
fn torn_tail_matrix_cut_zeros_or_garbage_from_every_offset_of_the_last_two_records() {
    // A sync between the last two records: the last one says its predecessor was durable, which
    // must not turn damage to both into an error.
    let mut b = SegmentBuilder::new();
    b.write(0, 500)
        .point(1, "a")
        .sync()
        .write(4096, 200)
        .zero(0, 4096)
        .write(8192, 130)
        .sync()
        .point(2, "last");
    let expect = b.expect();
    let records = &b.records;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut cases = 0;
    for from in records[records.len() - 2].start()..=b.bytes.len() {
        for tail in [Tail::Cut, Tail::Zeros, Tail::Garbage] {
            let damaged = damage_tail(&b.bytes, from, tail, &mut rng);
            let context = format!("{tail:?} from byte {from}");
            let (result, visits) = scan_visits(&damaged, &expect);
            let s = result.unwrap_or_else(|e| panic!("{context}: {e}"));
            match first_damaged(records, &damaged) {
                None => {
                    assert_eq!(s.end.append_offset(), b.bytes.len() as u64, "{context}");
                    assert!(
                        matches!(s.end, SegmentEnd::Clean { .. }),
                        "{context}: {:?}",
                        s.end
                    );
                    assert_visited(&visits, records, &context);
                }
                Some(i) => {
                    let at = records[i].start();
                    let all_zero = damaged[at..].iter().all(|&b| b == 0);
                    match &s.end {
                        SegmentEnd::Clean { offset } => {
                            assert!(all_zero && *offset == at as u64, "{context}: {:?}", s.end)
                        }
                        SegmentEnd::Torn { offset, .. } => {
                            assert!(!all_zero && *offset == at as u64, "{context}: {:?}", s.end)
                        }
                        SegmentEnd::Sealed { .. } => panic!("{context}: sealed"),
                    }
                    assert_eq!(s.last_lsn, FIRST_LSN + i as u64 - 1, "{context}");
                    assert_visited(&visits, &records[..i], &context);
                }
            }
            cases += 1;
        }
    }
    assert!(cases > 3 * 200, "the matrix covered {cases} cases");
}

#[test]
fn a_flipped_bit_before_a_durable_record_is_damage_naming_its_offset() {
    let mut b = SegmentBuilder::new();
    b.write(0, 120)
        .point(1, "p")
        .zero(0, 512)
        .sync()
        .write(512, 90);
    let expect = b.expect();
    for (i, r) in b.records[..3].iter().enumerate() {
        for at in r.start()..r.end() {
            let mut bytes = b.bytes.clone();
            bytes[at] ^= 1 << (at % 8);
            let (result, visits) = scan_visits(&bytes, &expect);
            let err = result.expect_err(&format!("flip at byte {at} of record {i} accepted"));
            assert_eq!(err.offset, r.start() as u64, "flip at {at}: {err}");
            assert!(
                err.to_string().contains(&format!("at byte {}", r.start())),
                "{err}"
            );
            assert!(err.detail.contains("durable past this point"), "{err}");
            assert_visited(&visits, &b.records[..i], "flip");
        }
    }
}

#[test]
fn the_same_flip_without_a_later_durable_record_is_a_torn_tail() {
    // Same records, but the only sync came before all of them: no later record proves the
    // flipped one was ever durable, so it is indistinguishable from a torn write.
    let mut b = SegmentBuilder::new();
    b.write(0, 120).point(1, "p").zero(0, 512).write(512, 90);
    let expect = b.expect();
    for (i, r) in b.records.iter().enumerate() {
        for at in r.start()..r.end() {
            let mut bytes = b.bytes.clone();
            bytes[at] ^= 1 << (at % 8);
            let (result, visits) = scan_visits(&bytes, &expect);
            match result {
                Ok(Scan {
                    end: SegmentEnd::Torn { offset, .. },
                    ..
                }) => assert_eq!(offset, r.start() as u64),
                other => panic!("flip at byte {at} of record {i}: {other:?}"),
            }
            assert_visited(&visits, &b.records[..i], "flip");
        }
    }
}

/// A segment of same-sized records, so any record's bytes fit in any other's place. Synced
/// every third record, so some positions have a later durable record and some do not.
fn uniform_segment(vault_id: VaultId, segment_id: u64) -> SegmentBuilder {
    let mut b = SegmentBuilder::for_place(vault_id, segment_id);
    for i in 0..8u64 {
        b.write(i * 4096, 256);
        if i % 3 == 2 {
            b.sync();
        }
    }
    b
}

/// Scans `bytes` whose record at `at` is a well-formed record that does not belong there, and
/// checks it is rejected with `kind`: an error at `at` when a later record was durable past it,
/// a torn tail at `at` otherwise.
fn assert_rejected_at(
    b: &SegmentBuilder,
    bytes: &[u8],
    at: usize,
    kind: DecodeErrorKind,
    context: &str,
) {
    let durable_later = b
        .records
        .iter()
        .any(|r| r.start() > at && r.header.synced_upto > at as u64);
    let (result, visits) = scan_visits(bytes, &b.expect());
    match result {
        Err(e) => {
            assert!(durable_later, "{context}: {e}");
            assert_eq!((e.kind, e.offset), (kind, at as u64), "{context}: {e}");
        }
        Ok(Scan {
            end: SegmentEnd::Torn { offset, reason },
            ..
        }) => {
            assert!(
                !durable_later,
                "{context}: torn although a later record was durable"
            );
            assert_eq!(
                (reason.kind, offset),
                (kind, at as u64),
                "{context}: {reason}"
            );
        }
        Ok(other) => panic!("{context}: accepted, {:?}", other.end),
    }
    let before = b
        .records
        .iter()
        .take_while(|r| r.start() < at)
        .cloned()
        .collect::<Vec<_>>();
    assert_visited(&visits, &before, context);
}

#[test]
fn a_record_copied_to_another_offset_is_misplaced_at_every_position() {
    let b = uniform_segment(VAULT, SEGMENT);
    let expect = b.expect();
    for (i, src) in b.records.iter().enumerate() {
        for dst in &b.records {
            if dst.start() == src.start() {
                continue;
            }
            let mut bytes = b.bytes.clone();
            bytes[dst.start()..dst.end()].copy_from_slice(&src.bytes);
            let err = record_at(&bytes, dst.start() as u64, &expect).unwrap_err();
            assert_eq!(err.kind, DecodeErrorKind::Misplaced, "{err}");
            let context = format!("record {i} copied to offset {}", dst.start());
            assert_rejected_at(
                &b,
                &bytes,
                dst.start(),
                DecodeErrorKind::Misplaced,
                &context,
            );
        }
        let mut appended = b.bytes.clone();
        appended.extend_from_slice(&src.bytes);
        let context = format!("record {i} copied after the last record");
        assert_rejected_at(
            &b,
            &appended,
            b.bytes.len(),
            DecodeErrorKind::Misplaced,
            &context,
        );
    }
}

#[test]
fn a_record_copied_from_another_segment_is_misplaced_at_every_position() {
    let b = uniform_segment(VAULT, SEGMENT);
    let other = uniform_segment(VAULT, SEGMENT + 1);
    for (i, (mine, theirs)) in b.records.iter().zip(&other.records).enumerate() {
        assert_eq!(mine.start(), theirs.start());
        let mut bytes = b.bytes.clone();
        bytes[mine.start()..mine.end()].copy_from_slice(&theirs.bytes);
        let context = format!("record {i} from segment {}", SEGMENT + 1);
        assert_rejected_at(
            &b,
            &bytes,
            mine.start(),
            DecodeErrorKind::Misplaced,
            &context,
        );
    }
}

#[test]
fn a_record_copied_from_another_vault_fails_its_checksum_at_every_position() {
    let b = uniform_segment(VAULT, SEGMENT);
    let other = uniform_segment(OTHER_VAULT, SEGMENT);
    for (i, (mine, theirs)) in b.records.iter().zip(&other.records).enumerate() {
        let mut bytes = b.bytes.clone();
        bytes[mine.start()..mine.end()].copy_from_slice(&theirs.bytes);
        let context = format!("record {i} from another vault");
        assert_rejected_at(
            &b,
            &bytes,
            mine.start(),
            DecodeErrorKind::Checksum,
            &context,
        );
    }
}

#[test]
fn a_segment_scanned_with_another_vaults_seed_is_rejected() {
    let b = mixed_segment();
    let wrong = Expect {
        seed: vault_seed(&OTHER_VAULT),
        ..b.expect()
    };
    let err = scan(&b.bytes, &wrong, |_, _| panic!("visited")).unwrap_err();
    assert_eq!(
        (err.kind, err.what),
        (DecodeErrorKind::Checksum, "segment header"),
        "{err}"
    );
    // The whole segment of another vault, header and all, is refused even with its own seed.
    let theirs = uniform_segment(OTHER_VAULT, SEGMENT);
    let foreign = Expect {
        seed: vault_seed(&OTHER_VAULT),
        ..b.expect()
    };
    let err = scan(&theirs.bytes, &foreign, |_, _| panic!("visited")).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::Misplaced, "{err}");
}

#[test]
fn a_segment_file_under_another_segments_name_is_misplaced() {
    let b = mixed_segment();
    let expect = Expect {
        segment_id: SEGMENT + 1,
        ..b.expect()
    };
    let err = scan(&b.bytes, &expect, |_, _| panic!("visited")).unwrap_err();
    assert_eq!(
        (err.kind, err.what),
        (DecodeErrorKind::Misplaced, "segment header"),
        "{err}"
    );
}

#[test]
fn an_lsn_gap_is_not_accepted_as_valid() {
    // Record 2 skips an LSN; record 3 was framed after a sync covering record 2, so the gap
    // is damage. Without record 3 it is a torn tail. Either way records 0 and 1 are all
    // that is visited.
    let mut b = SegmentBuilder::new();
    b.write(0, 64).write(64, 64);
    b.next_lsn += 1;
    b.write(128, 64).sync().write(192, 64);
    let gap_at = b.records[2].start();
    let (result, visits) = scan_visits(&b.bytes, &b.expect());
    let err = result.unwrap_err();
    assert_eq!(
        (err.kind, err.offset),
        (DecodeErrorKind::Misplaced, gap_at as u64),
        "{err}"
    );
    assert!(err.detail.contains("where LSN 102 was expected"), "{err}");
    assert_visited(&visits, &b.records[..2], "gap before a durable record");

    let cut = &b.bytes[..b.records[3].start()];
    let (result, visits) = scan_visits(cut, &b.expect());
    match result.unwrap().end {
        SegmentEnd::Torn { offset, reason } => {
            assert_eq!(
                (offset, reason.kind),
                (gap_at as u64, DecodeErrorKind::Misplaced)
            );
        }
        other => panic!("a gap at the tail: {other:?}"),
    }
    assert_visited(&visits, &b.records[..2], "gap at the tail");
}

#[test]
fn a_segment_cut_inside_its_header_is_refused() {
    let b = mixed_segment();
    for len in [0, 7, 8, 12, 100, SEGMENT_HEADER_BYTES - 1] {
        let err = scan(&b.bytes[..len], &b.expect(), |_, _| panic!("visited")).unwrap_err();
        assert_eq!(err.what, "segment header", "{len} bytes: {err}");
    }
}

#[test]
fn a_footer_whose_lsn_is_not_the_last_lsn_does_not_seal() {
    let mut b = mixed_segment();
    let index = b.footer_index().encode();
    // The footer claims the next LSN, not the last one.
    b.frame(RecordKind::Footer, 0, (0, 0, 0), &index);
    let footer = b.records.last().unwrap().header;
    let s = scan(&b.bytes, &b.expect(), |_, _| {}).unwrap();
    assert!(
        matches!(s.end, SegmentEnd::Torn { offset, .. } if offset == footer.segment_offset),
        "{:?}",
        s.end
    );
    // With a trailer naming it, the seal was written wrong: damage, not a tail to cut.
    let trailer = Trailer {
        segment_id: SEGMENT,
        footer_offset: footer.segment_offset,
        first_lsn: FIRST_LSN,
        last_lsn: FIRST_LSN + 3,
        record_count: 4,
        footer_crc: footer.crc,
    };
    b.bytes.extend_from_slice(&trailer.encode(b.expect().seed));
    let err = scan(&b.bytes, &b.expect(), |_, _| {}).unwrap_err();
    assert!(err.detail.contains("footer LSN 104"), "{err}");
}

/// Regression: a sealed segment with non-zero bytes after its trailer was reported as a torn
/// tail at the footer offset, so recovery would have cut a complete seal instead of reporting
/// the damage.
#[test]
fn regression_bytes_after_a_trailer_are_not_a_torn_tail() {
    let mut b = mixed_segment();
    b.seal();
    let mut bytes = b.bytes.clone();
    bytes.extend_from_slice(&[0x5A; 64]);
    assert!(scan(&bytes, &b.expect(), |_, _| {}).is_err());
}

/// Regression: a record with LSN u64::MAX made the scan's next-LSN counter overflow (a panic
/// in debug builds). Such an LSN is refused as a field error.
#[test]
fn regression_lsn_u64_max_is_refused_not_overflowed() {
    let header = SegmentHeader {
        vault_id: VAULT,
        segment_id: SEGMENT,
        first_lsn: u64::MAX,
        created_unix_ns: 0,
        chain_start: None,
    };
    let seed = vault_seed(&VAULT);
    let mut bytes = header.encode(seed);
    let mut h = RecordHeader {
        crc: 0,
        kind: RecordKind::Zero,
        flags: 0,
        lsn: u64::MAX,
        segment_id: SEGMENT,
        segment_offset: SEGMENT_HEADER_BYTES as u64,
        synced_upto: SEGMENT_HEADER_BYTES as u64,
        disk_id: 1,
        stored_len: 0,
        disk_offset: 0,
        length: 4096,
    };
    bytes.extend_from_slice(&h.seal(seed, &[]));
    let expect = Expect {
        vault_id: VAULT,
        seed,
        segment_id: SEGMENT,
    };
    let s = scan(&bytes, &expect, |_, _| panic!("visited")).unwrap();
    match s.end {
        SegmentEnd::Torn { offset, reason } => {
            assert_eq!(
                (offset, reason.kind, reason.offset),
                (SEGMENT_HEADER_BYTES as u64, DecodeErrorKind::BadField, 4104)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_resize_record_is_scanned_and_indexed_by_the_footer_as_an_extent() {
    let mut b = SegmentBuilder::new();
    b.write(0, 300).point(1, "small").resize(1 << 20, 2 << 20);
    b.write((1 << 20) + 512, 100).point(2, "grown");
    let index = b.footer_index();
    b.seal();
    let (result, visits) = scan_visits(&b.bytes, &b.expect());
    let s = result.unwrap();
    assert!(matches!(s.end, SegmentEnd::Sealed { .. }), "{:?}", s.end);
    assert_eq!(s.footer.as_ref(), Some(&index));
    let resize = index.extents[1];
    assert_eq!(
        (resize.kind, resize.disk_offset, resize.length),
        (RecordKind::Resize, 1 << 20, 2 << 20)
    );
    assert_eq!((index.extents.len(), index.points.len()), (3, 2));
    assert_visited(&visits, &b.data_records(), "resize");
}

#[test]
fn a_footer_resize_entry_that_shrinks_or_has_a_payload_is_refused() {
    let mut b = SegmentBuilder::new();
    b.resize(8192, 16384);
    let good = b.footer_index();
    FooterIndex::decode(&good.encode()).unwrap();
    let mut shrink = good.clone();
    shrink.extents[0].length = 4096;
    let mut payload = good.clone();
    payload.extents[0].stored_len = 8;
    let mut no_disk = good;
    no_disk.extents[0].disk_id = 0;
    for (bad, field) in [(shrink, 8 + 24), (payload, 8 + 36), (no_disk, 8 + 32)] {
        let e = FooterIndex::decode(&bad.encode()).unwrap_err();
        assert_eq!((e.kind, e.offset), (DecodeErrorKind::BadField, field));
    }
}

/// A sealed segment whose records 2 and 3 (two 5000-byte writes) are a dead range punched to
/// zeros over its whole pages scans as sealed, visiting every record outside the range and
/// counting the two inside; the same hole without the range, or a range that does not start
/// at a record, is refused.
#[test]
fn a_dead_range_is_stepped_over_and_a_hole_outside_one_is_refused() {
    let mut b = SegmentBuilder::new();
    b.write(0, 300)
        .write(8192, 5000)
        .write(16_384, 5000)
        .point(1, "kept")
        .write(0, 400)
        .sync();
    b.seal();
    let records = b.data_records();
    let dead = DeadRange {
        segment_id: SEGMENT,
        start: records[1].start() as u64,
        end: records[2].end() as u64,
        first_lsn: FIRST_LSN + 1,
        last_lsn: FIRST_LSN + 2,
    };
    let (hole_at, hole_len) = dead.hole().expect("the run covers a whole page");
    let mut punched = b.bytes.clone();
    punched[hole_at as usize..(hole_at + hole_len) as usize].fill(0);
    let mut visited = Vec::new();
    let s = scan_skipping(&punched, &b.expect(), None, &[dead], |h, _| {
        visited.push(h.lsn)
    })
    .expect("the punched segment scans");
    assert!(matches!(s.end, SegmentEnd::Sealed { .. }), "{:?}", s.end);
    assert_eq!((s.record_count, s.last_lsn), (5, FIRST_LSN + 4));
    assert_eq!(visited, vec![FIRST_LSN, FIRST_LSN + 3, FIRST_LSN + 4]);
    // Without the range, the hole is damage before the footer.
    assert!(scan(&punched, &b.expect(), |_, _| {}).is_err());
    // A range that starts inside a record, or at the wrong LSN, is refused.
    for wrong in [
        DeadRange {
            start: dead.start + 64,
            ..dead
        },
        DeadRange {
            first_lsn: FIRST_LSN + 2,
            ..dead
        },
    ] {
        assert!(
            scan_skipping(&punched, &b.expect(), None, &[wrong], |_, _| {}).is_err(),
            "{wrong:?}"
        );
    }
}
