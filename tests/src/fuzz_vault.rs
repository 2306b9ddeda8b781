//! The whole-vault fuzz oracle: a small real vault (two disks, sealed and open segments, LZ4 and
//! raw payloads, zero ranges, points) is built once in the simulator; each input names byte
//! mutations and truncations of its files. The mutated vault is opened, its points listed, every
//! disk of every point read, and `verify` run. Nothing may panic or allocate without bound; any
//! change to any byte must make `verify` report damage; and with a single flipped byte, every read
//! that succeeds must return exactly the original bytes.
//!
//! Regression (`fuzz/corpus/whole_vault/regression-truncated-segment`): the first run cut the open
//! segment exactly where a record ends, and `verify` found nothing. No byte of the segment says
//! more records were written; that is the residual window of `FORMAT.md`. `verify` now
//! cross-checks the journal's end against the LSNs that digest caches and disk additions prove
//! durable, and the oracle still demands exact reads in that case, but not `verify`'s alarm.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use replog_io::Storage;
use replog_io::sim::SimStorage;
use replog_writer::{Compression, PointKind, VaultSettings, Writer};

use crate::{SimImage, vault_dirs};

/// Every disk's bytes at one point, by disk name.
type PointDisks = Vec<(String, Vec<u8>)>;

struct Fixture {
    image: SimImage,
    dir: PathBuf,
    /// Per point id: every disk's bytes (by disk name).
    points: Vec<(u64, PointDisks)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build)
}

fn build() -> Fixture {
    let sim = SimStorage::new(0);
    let storage: Arc<dyn Storage> = sim.clone();
    let dir = PathBuf::from("/v");
    let settings = VaultSettings {
        block_bytes: 4096,
        segment_bytes: 64 << 10,
        compression: Compression::Lz4,
    };
    let mut w = Writer::create(storage.clone(), &dir, settings).expect("create");
    let image: Vec<u8> = (0..24 << 10).map(|i: u32| (i / 97) as u8).collect();
    let img_path = Path::new("/seed.raw");
    crate::write_image(storage.as_ref(), img_path, &image);
    let img = storage
        .open(img_path, replog_io::OpenMode::Read)
        .expect("image");
    let a = w
        .add_disk_from_image("a", img.as_ref(), img_path)
        .expect("disk a");
    let b = w.add_disk("b", 16 << 10).expect("disk b");
    for round in 0..6u32 {
        let fill: Vec<u8> = (0..9000u32).map(|i| (i * (round + 3)) as u8).collect();
        w.write(a.disk_id, u64::from(round) * 1500, &fill)
            .expect("write");
        w.write(
            b.disk_id,
            u64::from(round) * 700 + 5,
            &[round as u8 + 1; 3000],
        )
        .expect("write");
        w.zero(a.disk_id, u64::from(round) * 2000 + 100, 700)
            .expect("zero");
        let kind = if round % 2 == 0 {
            PointKind::CrashConsistent
        } else {
            PointKind::AppConsistent
        };
        w.point(kind, &format!("round {round}")).expect("point");
    }
    w.close().expect("close");
    let vault = replog_reader::Vault::open(storage, &dir).expect("open");
    let points = vault
        .points()
        .iter()
        .map(|p| {
            let view = vault.view(p).expect("view");
            let disks = view
                .disks()
                .iter()
                .map(|d| {
                    let mut buf = vec![0u8; d.size() as usize];
                    d.read_at(0, &mut buf).expect("read");
                    (d.name().to_owned(), buf)
                })
                .collect();
            (p.point_id, disks)
        })
        .collect();
    let mut image = SimImage::capture(&sim, &vault_dirs(&dir));
    image.files.remove(Path::new("/seed.raw"));
    Fixture { image, dir, points }
}

/// Applies the mutations `data` describes: 6 bytes each (file index, 4-byte offset, xor mask;
/// a mask of 0 truncates the file at the offset), at most 16.
fn mutate(image: &SimImage, data: &[u8]) -> (SimImage, bool) {
    let mut out = image.clone();
    let paths: Vec<PathBuf> = out.files.keys().cloned().collect();
    let mut truncated = false;
    for m in data.chunks_exact(6).take(16) {
        let path = &paths[m[0] as usize % paths.len()];
        let bytes = out.files.get_mut(path).expect("listed");
        if bytes.is_empty() {
            continue;
        }
        let at = u32::from_le_bytes([m[1], m[2], m[3], m[4]]) as usize % bytes.len();
        match m[5] {
            0 => {
                bytes.truncate(at);
                truncated = true;
            }
            mask => bytes[at] ^= mask,
        }
    }
    (out, truncated)
}

/// The oracle; see the module documentation.
pub fn whole_vault(data: &[u8]) {
    let f = fixture();
    let (image, truncated) = mutate(&f.image, data);
    let changed_bytes: usize = image
        .files
        .iter()
        .map(|(p, b)| {
            let orig = &f.image.files[p];
            b.iter().zip(orig).filter(|(x, y)| x != y).count() + orig.len().abs_diff(b.len())
        })
        .sum();
    let storage: Arc<dyn Storage> = image.restore(1);
    let report = replog_reader::verify(storage.as_ref(), &f.dir);
    if changed_bytes > 0 && !cut_at_a_record_boundary(&f.image, &image) {
        assert!(
            !report.is_intact(),
            "verify missed {changed_bytes} changed bytes: {data:?}"
        );
    }
    let Ok(vault) = replog_reader::Vault::open(storage, &f.dir) else {
        return;
    };
    for p in vault.points() {
        let Ok(view) = vault.view(p) else { continue };
        for d in view.disks() {
            let mut buf = vec![0u8; d.size() as usize];
            if d.read_at(0, &mut buf).is_err() {
                continue;
            }
            let single_flip = changed_bytes <= 1 && !truncated;
            if single_flip
                && let Some((_, disks)) = f.points.iter().find(|(id, _)| *id == p.point_id)
            {
                let want = &disks
                    .iter()
                    .find(|(n, _)| n == d.name())
                    .expect("same disks")
                    .1;
                assert!(
                    &buf == want,
                    "point {} disk {} read wrong bytes: {data:?}",
                    p.point_id,
                    d.name()
                );
            }
        }
    }
}

/// Whether the only change is the open segment cut short exactly where one of its records ends:
/// the residual window of `FORMAT.md` (no byte says more records were ever written). Reads must
/// still be exact; only `verify`'s silence is allowed.
fn cut_at_a_record_boundary(original: &SimImage, mutated: &SimImage) -> bool {
    let last_segment = original
        .files
        .keys()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .max();
    original.files.iter().all(|(p, orig)| {
        let now = &mutated.files[p];
        now == orig
            || (Some(p) == last_segment
                && now.len() < orig.len()
                && orig.starts_with(now)
                && ends_a_record(orig, now.len()))
    })
}

/// Whether a record of the segment `bytes` ends exactly at `at` (or `at` is the header's end).
fn ends_a_record(bytes: &[u8], at: usize) -> bool {
    let mut pos = replog_format::segment::SEGMENT_HEADER_BYTES;
    while pos < at {
        let Some(head) = bytes.get(pos..pos + replog_format::record::RECORD_HEADER_BYTES) else {
            return false;
        };
        let Ok(h) = replog_format::record::RecordHeader::decode(head) else {
            return false;
        };
        pos += h.total_bytes() as usize;
    }
    pos == at
}
