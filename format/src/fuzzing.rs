//! Decode-then-round-trip oracles for every decoder, in one place: the `fuzz/` targets call them
//! on generated input and `tests/fuzz_corpus_replay.rs` calls them on every stored corpus file,
//! so an input that fails under the fuzzer fails the same way under stable `cargo test`.
//!
//! Each function accepts arbitrary bytes. A decode may fail, but nothing may panic except the
//! oracle's own assertions. Where a decode succeeds, the value is encoded again and
//! - the encoding must equal the input bytes: every encoding in this format is canonical
//!   (reserved bytes are zero, lengths and layout fields are implied by the contents, and every
//!   checksum is checked), so two different byte strings never decode to the same value;
//! - decoding the encoding must give the same value.
//!
//! Random bytes almost never carry a valid CRC, so each oracle runs twice: on the input as
//! given, and on a copy whose checksums were recomputed (every record's, in a segment), which
//! lets the fuzzer reach the field rules behind the checksum.
//!
//! Structures whose checksum is seeded are decoded with [`seed`], the seed of [`VAULT_ID`];
//! segment scans expect segment [`SEGMENT_ID`] of that vault. Nothing here does I/O.
//!
//! The lifecycle section of a version 2 manifest has no target of its own: it is only ever
//! decoded as the tail of a manifest body, so the [`manifest`] oracle reaches it.

use crate::base::{
    BASE_HEADER_BYTES, BaseHeader, TABLE_ENTRIES_PER_PAGE, TABLE_PAGE_BYTES, decode_table_page,
    encode_table_page,
};
use crate::checkpoint::{
    BLOCK_BYTES, BlockTrailer, CHECKPOINT_HEADER_BYTES, CheckpointHeader, CheckpointPiece,
    PieceSource, blocks_for, decode_block, decode_directory, decode_file, encode_block,
    encode_directory, encode_file,
};
use crate::digest::{DIGEST_HEADER_BYTES, DigestHeader};
use crate::header::{VAULT_HEADER_BYTES, VaultHeader};
use crate::lease::{LEASE_FIXED_BYTES, LeaseRecord};
use crate::limits::RECORD_DATA_BYTES_MAX;
use crate::manifest::{MANIFEST_HEADER_BYTES, Manifest};
use crate::record::{PointPayload, RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use crate::remote::{self, FileMap, RemoteConfig, RemoteManifest};
use crate::remote_lock::RemoteImmutability;
use crate::segment::{
    Expect, FooterIndex, SEGMENT_HEADER_BYTES, Scan, SegmentEnd, SegmentHeader, TRAILER_BYTES,
    Trailer, scan,
};
use crate::{DecodeError, VaultId, crc32_seeded, vault_seed};
use std::fmt::Debug;

/// The vault every seeded structure fed to the oracles belongs to.
pub const VAULT_ID: VaultId = *b"replog-fuzz-vlt1";

/// The segment id a fuzzed segment must carry to be scanned past its header.
pub const SEGMENT_ID: u64 = 1;

/// The CRC seed of [`VAULT_ID`].
pub fn seed() -> u32 {
    vault_seed(&VAULT_ID)
}

/// What [`segment_scan`] expects of a segment.
pub fn expect() -> Expect {
    Expect {
        vault_id: VAULT_ID,
        seed: seed(),
        segment_id: SEGMENT_ID,
    }
}

/// Runs `oracle` on `data`, then on a copy whose checksums `fix` recomputed, if that changed it.
fn with_fixed_checksums(data: &[u8], fix: impl Fn(&mut [u8]), oracle: impl Fn(&[u8])) {
    oracle(data);
    let mut fixed = data.to_vec();
    fix(&mut fixed);
    if fixed != data {
        oracle(&fixed);
    }
}

/// Stores the CRC of the first `len - 4` bytes in bytes `len - 4..len`, if there are `len`.
fn fix_page(bytes: &mut [u8], len: usize, seed: u32) {
    if let Some(page) = bytes.get_mut(..len) {
        let crc = crc32_seeded(seed, &[&page[..len - 4]]);
        page[len - 4..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Stores the CRC of the record at the start of `bytes`, if its header decodes and its payload
/// is all there; returns the header.
fn fix_record(bytes: &mut [u8], seed: u32) -> Option<RecordHeader> {
    let h = RecordHeader::decode(bytes).ok()?;
    let end = RECORD_HEADER_BYTES.checked_add(h.stored_len as usize)?;
    let whole = bytes.get_mut(..end)?;
    let crc = crc32_seeded(seed, &[&whole[4..]]);
    whole[..4].copy_from_slice(&crc.to_le_bytes());
    Some(h)
}

/// Sets the manifest's body length to the bytes present and recomputes both CRCs.
fn fix_manifest(bytes: &mut [u8]) {
    if bytes.len() < MANIFEST_HEADER_BYTES {
        return;
    }
    let (header, body) = bytes.split_at_mut(MANIFEST_HEADER_BYTES);
    header[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
    header[24..28].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    let header_crc = crc32fast::hash(&header[..28]);
    header[28..32].copy_from_slice(&header_crc.to_le_bytes());
}

/// Recomputes the segment header's CRC, then each record's in turn while they decode, and the
/// trailer's after a footer record.
fn fix_segment(bytes: &mut [u8]) {
    let seed = seed();
    fix_page(bytes, SEGMENT_HEADER_BYTES, seed);
    let mut pos = SEGMENT_HEADER_BYTES;
    while let Some(h) = bytes.get_mut(pos..).and_then(|rest| fix_record(rest, seed)) {
        pos += h.total_bytes() as usize;
        if h.kind == RecordKind::Footer {
            if let Some(trailer) = bytes.get_mut(pos..) {
                fix_page(trailer, TRAILER_BYTES, seed);
            }
            return;
        }
    }
}

/// Asserts that `value`, decoded from `input`, encodes back to exactly `input` and decodes again
/// to itself.
fn round_trip<T: PartialEq + Debug>(
    what: &str,
    input: &[u8],
    value: &T,
    encode: impl Fn(&T) -> Vec<u8>,
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
) {
    let bytes = encode(value);
    assert!(
        bytes == input,
        "{what}: re-encoding {value:?} changed the bytes"
    );
    match decode(&bytes) {
        Ok(again) => assert_eq!(&again, value, "{what}: decode(encode(x)) != x"),
        Err(e) => panic!("{what}: the re-encoding of {value:?} does not decode: {e}"),
    }
}

/// When `data` decodes, its value must round-trip (see [`round_trip`]).
fn round_trip_if_decodes<T: PartialEq + Debug>(
    what: &str,
    data: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
    encode: impl Fn(&T) -> Vec<u8>,
) {
    if let Ok(value) = decode(data) {
        round_trip(what, data, &value, encode, decode);
    }
}

/// `VAULT`: [`VaultHeader::decode`].
pub fn vault_header(data: &[u8]) {
    with_fixed_checksums(
        data,
        |b| fix_page(b, VAULT_HEADER_BYTES, 0),
        vault_header_as_is,
    );
}

fn vault_header_as_is(data: &[u8]) {
    round_trip_if_decodes(
        "vault header",
        data,
        VaultHeader::decode,
        VaultHeader::encode,
    );
}

/// A segment file's first page: [`SegmentHeader::decode`]. Bytes after the page are ignored
/// by the decoder (a scan hands it the whole file), so only the page must round-trip.
pub fn segment_header(data: &[u8]) {
    with_fixed_checksums(
        data,
        |b| fix_page(b, SEGMENT_HEADER_BYTES, seed()),
        segment_header_as_is,
    );
}

fn segment_header_as_is(data: &[u8]) {
    let seed = seed();
    if let Ok(h) = SegmentHeader::decode(data, seed) {
        round_trip(
            "segment header",
            &data[..SEGMENT_HEADER_BYTES],
            &h,
            |h| h.encode(seed),
            |b| SegmentHeader::decode(b, seed),
        );
    }
}

/// A journal record: header, then payload. The header is decoded; when the payload is all
/// there, a point or footer payload is decoded too (its decoder must survive anything, even
/// bytes whose CRC fails), and when the CRC holds the header is sealed again and compared.
pub fn record(data: &[u8]) {
    with_fixed_checksums(
        data,
        |b| {
            fix_record(b, seed());
        },
        record_as_is,
    );
}

fn record_as_is(data: &[u8]) {
    let Ok(h) = RecordHeader::decode(data) else {
        return;
    };
    let Some(payload) = data
        .get(RECORD_HEADER_BYTES..)
        .and_then(|rest| rest.get(..h.stored_len as usize))
    else {
        return;
    };
    match h.kind {
        RecordKind::Point => point_payload(payload),
        RecordKind::Footer => footer_index(payload),
        RecordKind::Write | RecordKind::Zero | RecordKind::Resize => {}
    }
    let seed = seed();
    if h.verify(seed, &data[..RECORD_HEADER_BYTES], payload)
        .is_err()
    {
        return;
    }
    let mut again = h;
    let sealed = again.seal(seed, payload);
    assert!(
        sealed[..] == data[..RECORD_HEADER_BYTES],
        "record header: sealing {h:?} again changed the bytes"
    );
    assert_eq!(again, h, "record header: sealing again changed the CRC");
    assert_eq!(
        RecordHeader::decode(&sealed),
        Ok(h),
        "record header: decode(seal(x)) != x"
    );
}

/// The payload of a point record: [`PointPayload::decode`].
pub fn point_payload(data: &[u8]) {
    if let Ok(p) = PointPayload::decode(data) {
        round_trip(
            "point payload",
            data,
            &p,
            PointPayload::encode,
            PointPayload::decode,
        );
    }
}

/// The payload of a footer record: [`FooterIndex::decode`].
pub fn footer_index(data: &[u8]) {
    if let Ok(f) = FooterIndex::decode(data) {
        round_trip(
            "footer index",
            data,
            &f,
            FooterIndex::encode,
            FooterIndex::decode,
        );
    }
}

/// The 64-byte trailer of a sealed segment: [`Trailer::decode`].
pub fn trailer(data: &[u8]) {
    with_fixed_checksums(data, |b| fix_page(b, TRAILER_BYTES, seed()), trailer_as_is);
}

fn trailer_as_is(data: &[u8]) {
    let seed = seed();
    round_trip_if_decodes(
        "segment trailer",
        data,
        |b| Trailer::decode(b, seed),
        |v| v.encode(seed),
    );
}

/// A whole `MANIFEST` file: [`Manifest::decode`].
pub fn manifest(data: &[u8]) {
    with_fixed_checksums(data, fix_manifest, manifest_as_is);
}

fn manifest_as_is(data: &[u8]) {
    round_trip_if_decodes("manifest", data, Manifest::decode, Manifest::encode);
}

/// A base file's header page: [`BaseHeader::decode`].
pub fn base_header(data: &[u8]) {
    with_fixed_checksums(
        data,
        |b| fix_page(b, BASE_HEADER_BYTES, seed()),
        base_header_as_is,
    );
}

fn base_header_as_is(data: &[u8]) {
    let seed = seed();
    round_trip_if_decodes(
        "base header",
        data,
        |b| BaseHeader::decode(b, seed),
        |v| v.encode(seed),
    );
}

/// Bytes before the page in a [`base_table_page`] input: the entry count (u16) and the page
/// index (u32) the caller expects, little-endian.
pub const TABLE_PAGE_PREFIX_BYTES: usize = 6;

/// A base checksum table page, preceded by [`TABLE_PAGE_PREFIX_BYTES`] of parameters:
/// `entry_count` u16 (taken modulo 512, so at most one past the page's capacity) and
/// `page_index` u32, then the page: [`decode_table_page`].
pub fn base_table_page(data: &[u8]) {
    with_fixed_checksums(
        data,
        |b| {
            if let Some(page) = b.get_mut(TABLE_PAGE_PREFIX_BYTES..) {
                fix_page(page, TABLE_PAGE_BYTES, seed());
            }
        },
        base_table_page_as_is,
    );
}

fn base_table_page_as_is(data: &[u8]) {
    let Some((params, page)) = data.split_at_checked(TABLE_PAGE_PREFIX_BYTES) else {
        return;
    };
    let entry_count =
        usize::from(u16::from_le_bytes([params[0], params[1]])) % (TABLE_ENTRIES_PER_PAGE + 1);
    let page_index = u32::from_le_bytes([params[2], params[3], params[4], params[5]]);
    let seed = seed();
    if let Ok(entries) = decode_table_page(page, page_index, entry_count, seed) {
        assert_eq!(page.len(), TABLE_PAGE_BYTES);
        round_trip(
            "base table page",
            page,
            &entries,
            |e| encode_table_page(page_index, e, seed),
            |b| decode_table_page(b, page_index, entry_count, seed),
        );
    }
}

/// A digest cache's header page: [`DigestHeader::decode`].
pub fn digest_header(data: &[u8]) {
    with_fixed_checksums(
        data,
        |b| fix_page(b, DIGEST_HEADER_BYTES, seed()),
        digest_header_as_is,
    );
}

fn digest_header_as_is(data: &[u8]) {
    let seed = seed();
    round_trip_if_decodes(
        "digest header",
        data,
        |b| DigestHeader::decode(b, seed),
        |v| v.encode(seed),
    );
}

/// A whole segment file image: [`scan`]. When the scan succeeds:
/// - every visited record lies where it says, in LSN order, and seals again to the same bytes;
/// - a clean end has only zeros after it; a torn end lies inside the file;
/// - cutting the file at a clean or torn end, or zeroing everything after it (what recovery
///   does), scans as a clean end at the same offset with the same records;
/// - a sealed segment's footer and trailer round-trip, and only zeros follow the trailer.
pub fn segment_scan(data: &[u8]) {
    with_fixed_checksums(data, fix_segment, segment_scan_as_is);
}

fn segment_scan_as_is(data: &[u8]) {
    let expect = expect();
    let mut visited = Vec::new();
    let Ok(s) = scan(data, &expect, |h, _| visited.push(*h)) else {
        return;
    };
    assert_eq!(
        visited.len(),
        s.record_count as usize,
        "scan: record_count disagrees with the visits"
    );
    let (next_lsn, next_offset) = check_visited_records(data, &expect, &s, &visited);
    assert_eq!(
        s.last_lsn,
        next_lsn - 1,
        "scan: last_lsn disagrees with the visits"
    );
    match &s.end {
        SegmentEnd::Clean { offset } | SegmentEnd::Torn { offset, .. } => {
            assert_eq!(
                *offset, next_offset,
                "scan: the end is not after the last visited record"
            );
            check_unsealed_end(data, &expect, &s, *offset);
        }
        SegmentEnd::Sealed {
            footer_offset,
            trailer,
        } => {
            assert_eq!(
                *footer_offset, next_offset,
                "scan: the footer is not after the last visited record"
            );
            check_sealed_end(data, &expect, &s, *footer_offset, trailer);
        }
    }
}

/// Every record [`scan`] visited lies where it says, in LSN order from the header's first LSN,
/// is no footer, and seals again to the same bytes. Returns the LSN and the offset that follow
/// the last visited record.
fn check_visited_records(
    data: &[u8],
    expect: &Expect,
    s: &Scan,
    visited: &[RecordHeader],
) -> (u64, u64) {
    let mut next_lsn = s.header.first_lsn;
    let mut next_offset = SEGMENT_HEADER_BYTES as u64;
    for h in visited {
        assert!(
            h.lsn == next_lsn && h.segment_offset == next_offset,
            "scan: visited {h:?} out of order"
        );
        assert_ne!(h.kind, RecordKind::Footer, "scan: visited a footer");
        let start = h.segment_offset as usize;
        let payload = &data[start + RECORD_HEADER_BYTES..start + h.total_bytes() as usize];
        record_as_is(&data[start..start + h.total_bytes() as usize]);
        let mut again = *h;
        assert!(again.seal(expect.seed, payload)[..] == data[start..start + RECORD_HEADER_BYTES]);
        next_lsn += 1;
        next_offset += h.total_bytes();
    }
    (next_lsn, next_offset)
}

/// A clean or torn end at `offset`: a clean end has only zeros after it, a torn end lies inside
/// the file, and cutting the file there or zeroing everything after it (what recovery does)
/// scans as a clean end at the same offset with the same records.
fn check_unsealed_end(data: &[u8], expect: &Expect, s: &Scan, offset: u64) {
    assert_eq!(
        s.valid_end, offset,
        "scan: valid_end is not the append offset"
    );
    assert!(s.footer.is_none());
    let end = offset as usize;
    if matches!(s.end, SegmentEnd::Clean { .. }) {
        assert!(
            data[end..].iter().all(|&b| b == 0),
            "scan: a clean end followed by non-zero bytes"
        );
    } else {
        assert!(end < data.len(), "scan: a torn end at the end of the file");
    }
    let mut zeroed = data.to_vec();
    zeroed[end..].fill(0);
    for cut in [&data[..end], &zeroed[..]] {
        let again = scan(cut, expect, |_, _| {}).expect("scan: the cut segment no longer scans");
        assert_eq!(
            again.end,
            SegmentEnd::Clean { offset },
            "scan: cutting at the end moved it"
        );
        assert_eq!(
            (again.record_count, again.last_lsn),
            (s.record_count, s.last_lsn)
        );
    }
}

/// A sealed segment whose footer record starts at `footer_offset`: its footer index and
/// trailer round-trip, and only zeros follow the trailer.
fn check_sealed_end(data: &[u8], expect: &Expect, s: &Scan, footer_offset: u64, trailer: &Trailer) {
    let footer = s
        .footer
        .as_ref()
        .expect("scan: a sealed segment without its footer");
    let start = footer_offset as usize + RECORD_HEADER_BYTES;
    let end = s.valid_end as usize - TRAILER_BYTES;
    round_trip(
        "footer index",
        &data[start..end],
        footer,
        FooterIndex::encode,
        FooterIndex::decode,
    );
    trailer_as_is(&data[end..end + TRAILER_BYTES]);
    assert_eq!(trailer.footer_offset, footer_offset);
    assert_eq!(
        Trailer::decode(&data[end..end + TRAILER_BYTES], expect.seed).as_ref(),
        Ok(trailer)
    );
    assert!(
        data[end + TRAILER_BYTES..].iter().all(|&b| b == 0),
        "scan: sealed with non-zero bytes after the trailer"
    );
}

/// A whole checkpoint index file, `index/<lsn>.idx`, walked as a reader walks it:
/// [`CheckpointHeader::decode`] on the header page, [`decode_directory`] on the directory, then
/// [`decode_block`] on each block of each disk, up to the first that fails. Every header,
/// directory and block that decodes must round-trip, and every piece must keep the promises
/// readers rely on (see [`check_piece`]).
///
/// The checksum fix-up also sets `block_count` to the whole blocks present, so that the fuzzer
/// reaches the blocks without having to keep the header in step with the length it gives.
pub fn checkpoint(data: &[u8]) {
    with_fixed_checksums(data, fix_checkpoint, checkpoint_as_is);
}

/// Sets the header's block count to the whole blocks after the directory, then recomputes the
/// directory CRC, each block's CRC and the page CRC.
fn fix_checkpoint(bytes: &mut [u8]) {
    let seed = seed();
    let Some((page, rest)) = bytes.split_at_mut_checked(CHECKPOINT_HEADER_BYTES) else {
        return;
    };
    let disk_count = u32::from_le_bytes([page[48], page[49], page[50], page[51]]);
    let dir_bytes =
        crate::checkpoint::directory_pages(disk_count.min(1 << 20)) as usize * BLOCK_BYTES;
    let Some((dir, blocks)) = rest.split_at_mut_checked(dir_bytes) else {
        return;
    };
    let block_count = (blocks.len() / BLOCK_BYTES) as u64;
    page[56..64].copy_from_slice(&block_count.to_le_bytes());
    page[72..76].copy_from_slice(&crc32_seeded(seed, &[dir]).to_le_bytes());
    for block in blocks.chunks_exact_mut(BLOCK_BYTES) {
        fix_page(block, BLOCK_BYTES, seed);
    }
    fix_page(page, CHECKPOINT_HEADER_BYTES, seed);
}

fn checkpoint_as_is(data: &[u8]) {
    let seed = seed();
    let page = data.get(..CHECKPOINT_HEADER_BYTES).unwrap_or(data);
    let Ok(header) = CheckpointHeader::decode(page, seed) else {
        return;
    };
    round_trip(
        "checkpoint header",
        page,
        &header,
        |h| h.encode(seed),
        |b| CheckpointHeader::decode(b, seed),
    );
    let dir_end = header.block_offset(0) as usize;
    let Some(dir) = data.get(CHECKPOINT_HEADER_BYTES..dir_end) else {
        return;
    };
    let Ok(entries) = decode_directory(dir, &header, seed) else {
        return;
    };
    assert!(
        encode_directory(&entries, seed).0 == dir,
        "checkpoint: re-encoding the directory changed the bytes"
    );
    let mut pieces = Vec::new();
    for entry in &entries {
        for block in 0..blocks_for(entry.piece_count) {
            let trailer = BlockTrailer::of(entry, header.lsn, block);
            let at = header.block_offset(trailer.block_index) as usize;
            let Some(bytes) = data.get(at..at + BLOCK_BYTES) else {
                return;
            };
            if decode_block(
                bytes,
                &header,
                &trailer,
                entry.disk_bytes,
                seed,
                &mut pieces,
            )
            .is_err()
            {
                return;
            }
            pieces.iter().for_each(|p| check_piece(&header, p));
            let mut again = Vec::with_capacity(BLOCK_BYTES);
            encode_block(&pieces, &trailer, seed, &mut again);
            assert!(
                again == bytes,
                "checkpoint: re-encoding a block changed the bytes"
            );
        }
    }
    if let Ok((h, disks)) = decode_file(data, seed) {
        let again = encode_file(h.vault_id, h.lsn, h.last_segment_id, &disks, seed);
        assert!(
            again == data,
            "checkpoint: re-encoding the whole file changed the bytes"
        );
    }
}

/// Asserts what [`crate::checkpoint::decode_piece_unit`] promises of a piece it accepts. Readers rely on it
/// without checking again: they compute the piece's end `start + len`, the disk offset of the
/// record it reads, `start - data_offset`, and read `len` bytes from `data_offset` of the
/// record's logical data.
fn check_piece(header: &CheckpointHeader, piece: &CheckpointPiece) {
    assert!(
        piece.len >= 1 && piece.start.checked_add(piece.len).is_some(),
        "checkpoint piece: accepted {piece:?}, an empty range or one past 2^64"
    );
    let PieceSource::Record(r) = piece.source else {
        return;
    };
    let data_end = u64::from(r.data_offset).checked_add(piece.len);
    assert!(
        (1..=RECORD_DATA_BYTES_MAX).contains(&u64::from(r.length))
            && (1..=r.length).contains(&r.stored_len)
            && data_end.is_some_and(|end| end <= u64::from(r.length)),
        "checkpoint piece: accepted {piece:?}, a range outside its record"
    );
    assert!(
        u64::from(r.data_offset) <= piece.start,
        "checkpoint piece: accepted {piece:?}, whose record would start before disk byte 0"
    );
    assert!(
        (1..=header.lsn).contains(&r.lsn) && r.segment_id <= header.last_segment_id,
        "checkpoint piece: accepted {piece:?}, a record after the checkpoint {header:?}"
    );
}

/// A whole lease file, `leases/<name>.lease`: [`LeaseRecord::decode`].
///
/// The checksum fix-up also sets `detail_len` to the bytes between the fixed part and the CRC,
/// so that the fuzzer reaches the fields behind the length check.
pub fn lease(data: &[u8]) {
    with_fixed_checksums(data, fix_lease, lease_as_is);
}

/// Sets the detail length to the bytes present (when it fits its field), then recomputes the
/// CRC over every byte before the last four.
fn fix_lease(bytes: &mut [u8]) {
    let Some(body) = bytes.len().checked_sub(4) else {
        return;
    };
    if body < LEASE_FIXED_BYTES {
        return;
    }
    if let Ok(detail_len) = u16::try_from(body - LEASE_FIXED_BYTES) {
        bytes[70..72].copy_from_slice(&detail_len.to_le_bytes());
    }
    let crc = crc32_seeded(seed(), &[&bytes[..body]]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
}

fn lease_as_is(data: &[u8]) {
    let seed = seed();
    round_trip_if_decodes(
        "lease",
        data,
        |b| LeaseRecord::decode(b, seed),
        |v| v.encode(seed),
    );
}

/// The remote objects and the local remote state: [`RemoteManifest::decode`],
/// [`FileMap::decode`], [`RemoteConfig::decode`] and [`RemoteImmutability::decode`] each get
/// the same bytes.
///
/// The checksum fix-up recomputes the trailing CRC, which all four share, so that the fuzzer
/// reaches the fields behind it.
pub fn remote(data: &[u8]) {
    with_fixed_checksums(data, fix_trailing_crc, remote_as_is);
}

fn fix_trailing_crc(bytes: &mut [u8]) {
    let Some(body) = bytes.len().checked_sub(4) else {
        return;
    };
    let crc = crc32_seeded(seed(), &[&bytes[..body]]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
}

fn remote_as_is(data: &[u8]) {
    let seed = seed();
    round_trip_if_decodes(
        "remote manifest",
        data,
        |b| RemoteManifest::decode(b, seed),
        |v| v.encode(seed),
    );
    round_trip_if_decodes(
        "file map",
        data,
        |b| FileMap::decode(b, seed),
        |v| v.encode(seed),
    );
    round_trip_if_decodes(
        "remote configuration",
        data,
        |b| RemoteConfig::decode(b, seed),
        |v| v.encode(seed),
    );
    round_trip_if_decodes(
        "remote immutability setting",
        data,
        |b| RemoteImmutability::decode(b, seed),
        |v| v.encode(seed),
    );
}

/// Command-line arguments as the `replog` CLI receives them (separated by NUL bytes, each taken
/// as UTF-8 where it is, lossily otherwise), run through every check a vault or remote argument
/// meets before anything is read or written: is it a URL of some scheme, a remote URL replog
/// knows, within the remote configuration's limits, a key of the remote layout. No argument may
/// panic (an assert reached from a 2,100-slash URL once did), and a URL `parse_remote_url`
/// accepts must be one a remote configuration stores: it encodes and decodes back to itself.
pub fn cli_args(data: &[u8]) {
    for raw in data.split(|&b| b == 0) {
        let arg = String::from_utf8_lossy(raw);
        cli_argument(&arg);
        // The same argument made long, as a careless or hostile operator might: the limits
        // must be met before any encoder sees it.
        if !arg.is_empty() && arg.len() < 64 {
            cli_argument(&arg.repeat(2100 / arg.len() + 1));
        }
    }
}

fn cli_argument(arg: &str) {
    let url_like = remote::looks_like_url(arg);
    match remote::parse_remote_url(arg) {
        Ok(parts) => {
            assert!(remote::is_remote_url(arg) && url_like, "{arg:?}");
            assert!(arg.len() <= remote::REMOTE_URL_BYTES_MAX);
            assert!(matches!(parts.scheme, "s3" | "az"));
            assert!(!parts.bucket.is_empty() && !parts.bucket.contains('/'));
            assert!(!parts.prefix.starts_with('/') && !parts.prefix.ends_with('/'));
            let config = RemoteConfig {
                vault_id: [7; 16],
                url: arg.to_owned(),
                cache_limit_bytes: 1 << 30,
                keep_manifests: 2,
            };
            let bytes = config.encode(0x1234_5678);
            assert_eq!(
                RemoteConfig::decode(&bytes, 0x1234_5678).as_ref(),
                Ok(&config)
            );
        }
        Err(remote::UrlError::TooLong { bytes }) => {
            assert_eq!(bytes, arg.len());
            assert!(bytes > remote::REMOTE_URL_BYTES_MAX);
        }
        Err(remote::UrlError::Unsupported) => {
            assert!(!remote::is_remote_url(arg), "{arg:?}")
        }
    }
    // Keys of the remote layout, which listings hand back: each parses to what names it.
    if let Some(seq) = remote::parse_manifest_key(arg) {
        assert_eq!(remote::manifest_key(seq), arg);
    }
    if let Some(seq) = remote::parse_mark_key(arg) {
        assert_eq!(remote::mark_key(seq), arg);
    }
    if let Some(hash) = remote::parse_chunk_key(arg) {
        assert_eq!(remote::chunk_key(&hash), arg);
    }
    if let Some(hash) = remote::parse_map_key(arg) {
        assert_eq!(remote::map_key(&hash), arg);
    }
}
