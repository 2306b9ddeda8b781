//! End-of-log defects, in the manner of PostgreSQL's `039_end_of_wal.pl`: a vault whose last
//! acknowledged point P is followed by one crafted defect in the open segment, and the decision
//! recovery must take for it. For every row: the writer opens (or refuses, for damage), every
//! acknowledged point reads back exactly, recovery run twice gives the same state, and the vault
//! takes and keeps a new point afterwards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::record::{RECORD_HEADER_BYTES, RecordHeader, RecordKind};
use replog_format::segment::{FooterIndex, SegmentEnd, Trailer};
use replog_format::vault_seed;
use replog_io::sim::SimStorage;
use replog_io::{OpenMode, Storage, WriteAt};
use replog_reader::Vault;
use replog_tests::{SimImage, vault_dirs};
use replog_writer::{PointKind, VaultSettings, WriteErrorKind, Writer};

/// What recovery must decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Nothing to cut: the log ends cleanly at P's end.
    Clean,
    /// A torn tail at P's end: cut and quarantined.
    Cut,
    /// Damage before the tail: the writer refuses, naming the segment.
    Refused,
}

/// The state after P: the segment, where P's record ends, the next LSN, the vault seed.
struct Tail {
    segment: PathBuf,
    end: u64,
    next_lsn: u64,
    segment_id: u64,
    seed: u32,
}

fn record(
    t: &Tail,
    at: u64,
    lsn: u64,
    synced_upto: u64,
    kind: RecordKind,
    payload: &[u8],
) -> Vec<u8> {
    let (disk_id, disk_offset, length) = match kind {
        RecordKind::Write => (1, 0, payload.len() as u64),
        _ => (0, 0, 0),
    };
    let mut h = RecordHeader {
        crc: 0,
        kind,
        flags: 0,
        lsn,
        segment_id: t.segment_id,
        segment_offset: at,
        synced_upto,
        disk_id,
        stored_len: payload.len() as u32,
        disk_offset,
        length,
    };
    let mut out = h.seal(t.seed, payload).to_vec();
    out.extend_from_slice(payload);
    out
}

type Defect = fn(&Tail) -> Vec<(u64, Vec<u8>)>;

/// The table: name, the bytes written after P (offset, bytes), what recovery must decide.
fn table() -> Vec<(&'static str, Defect, Expect)> {
    vec![
        ("nothing after the last point", |_| vec![], Expect::Clean),
        (
            "zeros after the last point",
            |t| vec![(t.end, vec![0; 8192])],
            Expect::Clean,
        ),
        (
            "a record header cut after 10 bytes",
            |t| {
                vec![(
                    t.end,
                    record(t, t.end, t.next_lsn, t.end, RecordKind::Write, &[7; 100])[..10]
                        .to_vec(),
                )]
            },
            Expect::Cut,
        ),
        (
            "a whole header, its payload cut short",
            |t| {
                vec![(
                    t.end,
                    record(t, t.end, t.next_lsn, t.end, RecordKind::Write, &[7; 4000])
                        [..RECORD_HEADER_BYTES + 100]
                        .to_vec(),
                )]
            },
            Expect::Cut,
        ),
        (
            "a hostile payload length (u32::MAX)",
            |t| {
                let mut r = record(t, t.end, t.next_lsn, t.end, RecordKind::Write, &[7; 64]);
                r[44..48].copy_from_slice(&u32::MAX.to_le_bytes());
                vec![(t.end, r)]
            },
            Expect::Cut,
        ),
        (
            "an unknown record kind",
            |t| {
                let mut r = record(t, t.end, t.next_lsn, t.end, RecordKind::Write, &[7; 64]);
                r[4] = 9;
                vec![(t.end, r)]
            },
            Expect::Cut,
        ),
        (
            "a flipped payload bit",
            |t| {
                let mut r = record(t, t.end, t.next_lsn, t.end, RecordKind::Write, &[7; 64]);
                r[RECORD_HEADER_BYTES + 3] ^= 1;
                vec![(t.end, r)]
            },
            Expect::Cut,
        ),
        (
            "a stale record: intact, but an LSN from the past",
            |t| {
                vec![(
                    t.end,
                    record(t, t.end, t.next_lsn - 3, t.end, RecordKind::Write, &[7; 64]),
                )]
            },
            Expect::Cut,
        ),
        (
            "a recycled record: intact, but from another segment",
            |t| {
                let other = Tail {
                    segment_id: t.segment_id + 7,
                    segment: t.segment.clone(),
                    ..*t
                };
                vec![(
                    t.end,
                    record(
                        &other,
                        t.end,
                        t.next_lsn,
                        t.end,
                        RecordKind::Write,
                        &[7; 64],
                    ),
                )]
            },
            Expect::Cut,
        ),
        (
            "a record framed for another offset",
            |t| {
                vec![(
                    t.end,
                    record(
                        t,
                        t.end + 512,
                        t.next_lsn,
                        t.end,
                        RecordKind::Write,
                        &[7; 64],
                    ),
                )]
            },
            Expect::Cut,
        ),
        (
            "a page of garbage",
            |t| {
                vec![(
                    t.end,
                    (0..4096u32)
                        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                        .collect(),
                )]
            },
            Expect::Cut,
        ),
        (
            "a lost write then a kept later one (unsynced both)",
            |t| {
                let later = t.end + 4096;
                vec![
                    (t.end, vec![0; 4096]),
                    (
                        later,
                        record(t, later, t.next_lsn + 1, t.end, RecordKind::Write, &[7; 64]),
                    ),
                ]
            },
            Expect::Cut,
        ),
        (
            "a lost write then a later record that says it was synced",
            |t| {
                let later = t.end + 4096;
                vec![
                    (t.end, vec![0; 4096]),
                    (
                        later,
                        record(t, later, t.next_lsn + 1, later, RecordKind::Write, &[7; 64]),
                    ),
                ]
            },
            Expect::Refused,
        ),
        (
            "a footer with no trailer",
            |t| {
                let footer = FooterIndex::default().encode();
                vec![(
                    t.end,
                    record(t, t.end, t.next_lsn - 1, t.end, RecordKind::Footer, &footer),
                )]
            },
            Expect::Cut,
        ),
        (
            "a footer with another segment's trailer",
            |t| {
                let footer = FooterIndex::default().encode();
                let r = record(t, t.end, t.next_lsn - 1, t.end, RecordKind::Footer, &footer);
                let trailer = Trailer {
                    segment_id: t.segment_id + 1,
                    footer_offset: t.end,
                    first_lsn: 1,
                    last_lsn: t.next_lsn - 1,
                    record_count: 0,
                    footer_crc: 0,
                };
                let at = t.end + r.len() as u64;
                vec![(t.end, r), (at, trailer.encode(t.seed))]
            },
            Expect::Cut,
        ),
    ]
}

fn build() -> (SimImage, PathBuf, Vec<(u64, Vec<u8>)>) {
    let sim = SimStorage::new(0);
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = PathBuf::from("/v");
    let settings = VaultSettings {
        block_bytes: 4096,
        segment_bytes: 1 << 20,
        ..VaultSettings::default()
    };
    let mut w = Writer::create(storage.clone(), &dir, settings).unwrap();
    let d = w.add_disk("d", 64 << 10).unwrap();
    let mut model = vec![0u8; 64 << 10];
    let mut acked = Vec::new();
    for i in 0..5u8 {
        let data = vec![i + 1; 5000];
        w.write(d.disk_id, u64::from(i) * 3000, &data).unwrap();
        model[i as usize * 3000..i as usize * 3000 + 5000].copy_from_slice(&data);
        let p = w.point(PointKind::CrashConsistent, "").unwrap();
        acked.push((p.lsn, model.clone()));
    }
    w.close().unwrap();
    (SimImage::capture(&sim, &vault_dirs(&dir)), dir, acked)
}

fn tail_of(storage: &Arc<dyn Storage>, dir: &Path) -> Tail {
    let vault = Vault::open(storage.clone(), dir).unwrap();
    let open = vault.open_segment().unwrap();
    assert!(matches!(open.end, SegmentEnd::Clean { .. }));
    Tail {
        segment: replog_format::layout::segment_path(dir, open.segment_id),
        end: open.end.append_offset(),
        next_lsn: open.last_lsn + 1,
        segment_id: open.segment_id,
        seed: vault_seed(&vault.header().vault_id),
    }
}

fn check_points(storage: &Arc<dyn Storage>, dir: &Path, acked: &[(u64, Vec<u8>)], case: &str) {
    let vault = Vault::open(storage.clone(), dir).unwrap_or_else(|e| panic!("{case}: {e}"));
    for (lsn, want) in acked {
        let p = vault
            .points()
            .iter()
            .find(|p| p.lsn == *lsn)
            .unwrap_or_else(|| panic!("{case}: point at LSN {lsn} lost"));
        let mut got = vec![0u8; want.len()];
        vault.view(p).unwrap().disks()[0]
            .read_at(0, &mut got)
            .unwrap();
        assert!(&got == want, "{case}: point at LSN {lsn} reads back wrong");
    }
}

#[test]
fn every_end_of_log_defect_gets_its_recovery_decision() {
    let (image, dir, acked) = build();
    let rows = table();
    for (name, defect, expect) in &rows {
        let sim = image.restore(1);
        let storage: Arc<dyn Storage> = sim.clone();
        let t = tail_of(&storage, &dir);
        let f = storage.open(&t.segment, OpenMode::ReadWrite).unwrap();
        for (at, bytes) in defect(&t) {
            f.write_batch(
                &[WriteAt {
                    offset: at,
                    data: &bytes,
                }],
                true,
            )
            .unwrap();
        }
        match (Writer::open(storage.clone(), &dir), expect) {
            (Ok(w), Expect::Clean) => assert!(
                w.recovery_report().torn_tail.is_none(),
                "{name}: nothing was to be cut"
            ),
            (Ok(w), Expect::Cut) => {
                let (_, offset, _, kept) = w
                    .recovery_report()
                    .torn_tail
                    .clone()
                    .unwrap_or_else(|| panic!("{name}: the tail was not cut"));
                assert_eq!(offset, t.end, "{name}: cut at the end of the last point");
                assert!(
                    storage.exists(&kept).unwrap(),
                    "{name}: the cut bytes are kept"
                );
            }
            (Err(e), Expect::Refused) => {
                assert_eq!(e.kind, WriteErrorKind::Damaged, "{name}: {e}");
                assert!(
                    e.to_string().contains(&t.segment.display().to_string()),
                    "{name}: the error names the segment: {e}"
                );
                check_points(&storage, &dir, &acked, name);
                continue;
            }
            (other, _) => panic!(
                "{name}: expected {expect:?}, got {:?}",
                other.map(|w| w.recovery_report().clone())
            ),
        }
        check_points(&storage, &dir, &acked, name);
        // Recovery run twice gives the same state, and the vault keeps working.
        let mut w = Writer::open(storage.clone(), &dir).unwrap();
        assert!(
            w.recovery_report().torn_tail.is_none(),
            "{name}: the second recovery found more to cut"
        );
        w.write(1, 0, &[0xEE; 100]).unwrap();
        let p = w.point(PointKind::AppConsistent, "after").unwrap();
        w.close().unwrap();
        sim.crash(7);
        let vault = Vault::open(storage.clone(), &dir).unwrap();
        assert!(
            vault.points().iter().any(|q| q.lsn == p.lsn),
            "{name}: the point after recovery was lost"
        );
        check_points(&storage, &dir, &acked, name);
    }
    eprintln!(
        "end-of-log defect table: {} rows, each with its recovery decision, 0 violations",
        rows.len()
    );
}
