//! Claims `FORMAT.md` makes about the bytes, checked against the encoders: field offsets from
//! the tables, magics and versions, which checksums are seeded and how.

use replog_format::base::{BaseHeader, ChunkSum, encode_table_page, table_crc_update};
use replog_format::digest::DigestHeader;
use replog_format::header::{Compression, VaultHeader};
use replog_format::magic::{self, FormatVersion};
use replog_format::manifest::Manifest;
use replog_format::record::{RecordHeader, RecordKind};
use replog_format::segment::{SegmentHeader, Trailer};
use replog_format::{VaultId, crc32_seeded, vault_seed};

const VAULT: VaultId = *b"0123456789abcdef";

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn a_seeded_crc_is_the_crc_of_the_vault_id_followed_by_the_bytes() {
    let seed = vault_seed(&VAULT);
    assert_eq!(seed, crc32fast::hash(&VAULT));
    let data = b"any bytes at all";
    let mut prefixed = VAULT.to_vec();
    prefixed.extend_from_slice(data);
    assert_eq!(crc32_seeded(seed, &[data]), crc32fast::hash(&prefixed));
    assert_eq!(
        crc32_seeded(0, &[data]),
        crc32fast::hash(data),
        "seed 0 is the plain CRC32"
    );
}

#[test]
fn the_base_table_crc_is_a_seeded_crc_over_the_page_crcs_in_order() {
    let seed = vault_seed(&VAULT);
    let pages: Vec<Vec<u8>> = (0..3)
        .map(|p| {
            encode_table_page(
                p,
                &[ChunkSum {
                    crc: p * 11,
                    zero: false,
                }],
                seed,
            )
        })
        .collect();
    let folded = pages
        .iter()
        .fold(seed, |running, page| table_crc_update(running, page));
    let stored: Vec<u8> = pages.iter().flat_map(|p| p[4092..].to_vec()).collect();
    assert_eq!(folded, crc32_seeded(seed, &[&stored]));
    for (p, page) in pages.iter().enumerate() {
        assert_eq!(u32_at(page, 4088), p as u32, "page_index at 4088");
        assert_eq!(
            u32_at(page, 4092),
            crc32_seeded(seed, &[&page[..4092]]),
            "page CRC at 4092, seeded"
        );
    }
}

#[test]
fn the_vault_header_is_laid_out_as_documented() {
    let h = VaultHeader {
        version: FormatVersion::V1,
        vault_id: VAULT,
        created_unix_ns: -5,
        block_bytes: 65536,
        compression: Compression::Lz4,
        segment_bytes: 1 << 30,
    };
    let b = h.encode();
    assert_eq!(
        (&b[..8], u32_at(&b, 8), u32_at(&b, 12)),
        (&magic::VAULT[..], 1, 4096)
    );
    assert_eq!(&b[16..32], &VAULT);
    assert_eq!(
        (u64_at(&b, 32) as i64, u32_at(&b, 40), b[44], u64_at(&b, 48)),
        (-5, 65536, 1, 1 << 30)
    );
    assert_eq!(
        u32_at(&b, 4092),
        crc32fast::hash(&b[..4092]),
        "VAULT's CRC is unseeded"
    );
}

#[test]
fn the_segment_header_record_and_trailer_are_laid_out_as_documented() {
    let seed = vault_seed(&VAULT);
    let b = SegmentHeader {
        vault_id: VAULT,
        segment_id: 7,
        first_lsn: 99,
        created_unix_ns: 3,
        chain_start: None,
    }
    .encode(seed);
    assert_eq!(
        (&b[..8], u32_at(&b, 8), u32_at(&b, 12)),
        (&magic::SEGMENT[..], 1, 4096)
    );
    assert_eq!(
        (&b[16..32], u64_at(&b, 32), u64_at(&b, 40), u64_at(&b, 48)),
        (&VAULT[..], 7, 99, 3)
    );
    assert_eq!(u32_at(&b, 4092), crc32_seeded(seed, &[&b[..4092]]));

    let payload = [9u8; 10];
    let mut h = RecordHeader {
        crc: 0,
        kind: RecordKind::Write,
        flags: 0,
        lsn: 99,
        segment_id: 7,
        segment_offset: 4096,
        synced_upto: 4096,
        disk_id: 2,
        stored_len: 10,
        disk_offset: 512,
        length: 10,
    };
    let r = h.seal(seed, &payload);
    assert_eq!(
        u32_at(&r, 0),
        crc32_seeded(seed, &[&r[4..], &payload]),
        "CRC of bytes 4..64 and the payload"
    );
    assert_eq!(
        (r[4], r[5], u64_at(&r, 8), u64_at(&r, 16), u64_at(&r, 24)),
        (1, 0, 99, 7, 4096)
    );
    assert_eq!(
        (
            u64_at(&r, 32),
            u32_at(&r, 40),
            u32_at(&r, 44),
            u64_at(&r, 48),
            u64_at(&r, 56)
        ),
        (4096, 2, 10, 512, 10)
    );

    let t = Trailer {
        segment_id: 7,
        footer_offset: 5000,
        first_lsn: 99,
        last_lsn: 120,
        record_count: 22,
        footer_crc: 0xAB,
    }
    .encode(seed);
    assert_eq!(t.len(), 64);
    assert_eq!(
        (&t[..8], u64_at(&t, 8), u64_at(&t, 16), u64_at(&t, 24)),
        (&magic::FOOTER_TRAILER[..], 7, 5000, 99)
    );
    assert_eq!(
        (u64_at(&t, 32), u32_at(&t, 40), u32_at(&t, 44)),
        (120, 22, 0xAB)
    );
    assert_eq!(u32_at(&t, 60), crc32_seeded(seed, &[&t[..60]]));
}

#[test]
fn the_base_and_digest_headers_are_laid_out_as_documented() {
    let seed = vault_seed(&VAULT);
    let base = BaseHeader {
        vault_id: VAULT,
        disk_id: 4,
        block_bytes: 4096,
        generation: 2,
        disk_bytes: 10_000,
        base_lsn: 8,
        table_crc: 0x55,
    };
    let b = base.encode(seed);
    assert_eq!(
        (&b[..8], u32_at(&b, 8), u32_at(&b, 12)),
        (&magic::BASE[..], 1, 4096)
    );
    assert_eq!(
        (
            u32_at(&b, 32),
            u32_at(&b, 36),
            u64_at(&b, 40),
            u64_at(&b, 48),
            u64_at(&b, 56)
        ),
        (4, 4096, 2, 10_000, 8)
    );
    assert_eq!(
        (
            u64_at(&b, 64),
            u64_at(&b, 72),
            u64_at(&b, 80),
            u32_at(&b, 88)
        ),
        (4096, 4096 + 12_288, 3, 0x55)
    );
    assert_eq!(u32_at(&b, 4092), crc32_seeded(seed, &[&b[..4092]]));
    assert_eq!(base.file_bytes(), 4096 + 12_288 + 4096);

    let d = DigestHeader {
        vault_id: VAULT,
        disk_id: 4,
        block_bytes: 4096,
        disk_bytes: 10_000,
        valid_lsn: 8,
        body_crc: 0x66,
    }
    .encode(seed);
    assert_eq!(
        (&d[..8], u32_at(&d, 8), u32_at(&d, 12)),
        (&magic::DIGEST[..], 1, 4096)
    );
    assert_eq!(
        (
            u32_at(&d, 32),
            u32_at(&d, 36),
            u64_at(&d, 40),
            u64_at(&d, 48)
        ),
        (4, 4096, 10_000, 8)
    );
    assert_eq!((u64_at(&d, 56), u32_at(&d, 64)), (3, 0x66));
    assert_eq!(u32_at(&d, 4092), crc32_seeded(seed, &[&d[..4092]]));
}

#[test]
fn the_manifest_header_is_laid_out_as_documented() {
    let m = Manifest {
        vault_id: VAULT,
        generation: 3,
        base_lsn: 0,
        disks: vec![],
        segments: vec![],
        points: vec![],
        lifecycle: Default::default(),
        resized: false,
        dead_ranges: vec![],
    };
    let b = m.encode();
    assert_eq!(
        (&b[..8], u32_at(&b, 8), u32_at(&b, 12)),
        (&magic::MANIFEST[..], 1, 0)
    );
    let body = &b[32..];
    assert_eq!(u64_at(&b, 16), body.len() as u64);
    assert_eq!(u32_at(&b, 24), crc32fast::hash(body), "body CRC, unseeded");
    assert_eq!(
        u32_at(&b, 28),
        crc32fast::hash(&b[..28]),
        "header CRC, unseeded"
    );
    assert_eq!(
        (&body[..16], u64_at(body, 16), u32_at(body, 36)),
        (&VAULT[..], 3, 0)
    );
    assert_eq!(
        body.len(),
        16 + 8 + 8 + 4 + 4 + 4 + 4,
        "an empty manifest body"
    );
}

#[test]
fn the_remote_manifest_and_file_map_are_laid_out_as_documented() {
    use replog_format::remote::{FileId, FileKind, FileMap, RemoteFile, RemoteManifest};
    let seed = 0xfeed_f00d;
    let m = RemoteManifest {
        vault_id: [3; 16],
        seq: 9,
        time_unix_ns: 77,
        manifest: vec![0xaa; 10],
        files: vec![RemoteFile {
            id: FileId {
                kind: FileKind::Base,
                a: 2,
                b: 5,
            },
            file_bytes: 123,
            map: [0x5c; 32],
        }],
    };
    let b = m.encode(seed);
    assert_eq!(&b[0..8], b"RPLG-RMN");
    assert_eq!(u32_at(&b, 8), 1);
    assert_eq!(&b[16..32], &[3; 16]);
    assert_eq!(u64_at(&b, 32), 9);
    assert_eq!(u64_at(&b, 48), 10);
    assert_eq!(u32_at(&b, 56), 1);
    assert_eq!(&b[64..74], &[0xaa; 10]);
    let e = 74;
    assert_eq!(b[e], 3);
    assert_eq!(
        (u64_at(&b, e + 8), u64_at(&b, e + 16), u64_at(&b, e + 24)),
        (2, 5, 123)
    );
    assert_eq!(&b[e + 32..e + 64], &[0x5c; 32]);
    assert_eq!(b.len(), e + 64 + 4);
    let crc = replog_format::crc32_seeded(seed, &[&b[..b.len() - 4]]);
    assert_eq!(u32_at(&b, b.len() - 4), crc);

    let map = FileMap {
        vault_id: [3; 16],
        id: FileId {
            kind: FileKind::Segment,
            a: 4,
            b: 0,
        },
        file_bytes: 5 << 20,
        chunks: vec![[1; 32], [0; 32]],
    };
    let b = map.encode(seed);
    assert_eq!(&b[0..8], b"RPLG-RFM");
    assert_eq!(u32_at(&b, 12), 4 << 20);
    assert_eq!(b[32], 1);
    assert_eq!(u64_at(&b, 40), 4);
    assert_eq!(u64_at(&b, 56), 5 << 20);
    assert_eq!(u64_at(&b, 64), 2);
    assert_eq!(&b[72..104], &[1; 32]);
    assert_eq!(b.len(), 72 + 64 + 4);
}
