//! The spec against the code: `tests/independent/reader.py`, a reader written from FORMAT.md
//! alone, must read every disk at every point of vaults the library writes exactly as
//! `replog_reader::materialize` does. The vaults cover what FORMAT.md describes for the bytes of
//! a point: base images with 4 KiB and 64 KiB chunks and sizes that end mid-chunk, several
//! sealed segments and an open one, write and zero records (trims are zero records), LZ4
//! payloads, several disks, disks added after the base (with a point at `added_lsn`), and
//! compaction (new base generations, a segment straddling `base_lsn`, retired points, a disk
//! whose base predates the manifest's `base_lsn`, checkpoints the base passed).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use replog_format::record::RecordKind;
use replog_io::Storage;
use replog_reader::{MaterializeOptions, Vault, checkpoint, materialize};
use replog_tests::{noise, write_image};
use replog_writer::{Compression, PointKind, PruneOptions, RetentionPolicy, VaultSettings, Writer};

/// What one vault of the test holds, for the counts it prints.
struct Built {
    name: &'static str,
    dir: PathBuf,
}

/// Data for one write: noise, or (when `compressible`) runs of a few repeated bytes with some
/// noise, which LZ4 packs.
fn payload(seed: u64, len: usize, compressible: bool) -> Vec<u8> {
    if !compressible {
        return noise(seed, len);
    }
    let mut out = Vec::with_capacity(len);
    let spice = noise(seed, len / 16 + 1);
    let mut i = 0usize;
    while out.len() < len {
        let run = 64 + (spice[i % spice.len()] as usize) * 3;
        out.extend(std::iter::repeat_n(spice[(i + 1) % spice.len()], run));
        out.extend_from_slice(&spice[..spice.len().min(24)]);
        i += 2;
    }
    out.truncate(len);
    out
}

/// Stages `ops` writes and zero ranges spread over `disks` (id, size), a point every third
/// operation; `seed` varies the offsets and data.
fn churn(w: &mut Writer, disks: &[(u32, u64)], ops: u64, seed: u64, compressible: bool) {
    for op in 0..ops {
        let (disk, size) = disks[((op + seed) % disks.len() as u64) as usize];
        let x = noise(seed * 7919 + op, 16);
        let r = u64::from_le_bytes(x[..8].try_into().expect("8 bytes"));
        let len = (1 + r % 20_000).min(size);
        let at = (r >> 20) % (size - len + 1);
        if op % 5 == 4 {
            w.zero(disk, at, len).expect("zero staged");
        } else {
            let data = payload(seed * 1000 + op, len as usize, compressible);
            w.write(disk, at, &data).expect("write staged");
        }
        if op % 3 == 2 {
            w.point(PointKind::CrashConsistent, &format!("s{seed}-{op}"))
                .expect("point taken");
        }
    }
}

/// Adds a disk from a raw image of `bytes` (written beside the vault).
fn add_from_image(
    w: &mut Writer,
    storage: &Arc<dyn Storage>,
    root: &Path,
    name: &str,
    bytes: &[u8],
) -> (u32, u64) {
    let path = root.join(format!("{name}.img"));
    let img = write_image(storage.as_ref(), &path, bytes);
    let d = w
        .add_disk_from_image(name, img.as_ref(), &path)
        .expect("disk added");
    (d.disk_id, d.disk_bytes)
}

/// 4 KiB chunks, 64 KiB segments, no compression: two disks from the start (one from an image
/// whose size ends mid-chunk), a point before any record, a third disk added later with a
/// point at its `added_lsn`, points left in the open segment.
fn plain(storage: &Arc<dyn Storage>, root: &Path) -> Built {
    let dir = root.join("plain");
    let settings = VaultSettings {
        block_bytes: 4096,
        segment_bytes: 64 << 10,
        compression: Compression::None,
    };
    let mut w = Writer::create(storage.clone(), &dir, settings).expect("vault created");
    let a = add_from_image(&mut w, storage, root, "os", &noise(1, 100_003));
    let b = w.add_disk("data", 192 << 10).expect("disk added");
    let b = (b.disk_id, b.disk_bytes);
    w.point(PointKind::AppConsistent, "before any record")
        .expect("point taken");
    churn(&mut w, &[a, b], 40, 1, false);
    let c = add_from_image(&mut w, storage, root, "late", &noise(2, 50_000));
    w.point(PointKind::CrashConsistent, "at added_lsn")
        .expect("point taken");
    churn(&mut w, &[a, b, c], 40, 2, false);
    w.close().expect("closed");
    Built { name: "plain", dir }
}

/// 64 KiB chunks (where the base table's offset is `4096 + roundup(disk_bytes, 64 KiB)`), LZ4,
/// compressible and incompressible data, a disk added later from an image.
fn lz4(storage: &Arc<dyn Storage>, root: &Path) -> Built {
    let dir = root.join("lz4");
    let settings = VaultSettings {
        block_bytes: 64 << 10,
        segment_bytes: 64 << 10,
        compression: Compression::Lz4,
    };
    let mut w = Writer::create(storage.clone(), &dir, settings).expect("vault created");
    let a = add_from_image(&mut w, storage, root, "os", &payload(3, 300_001, true));
    churn(&mut w, &[a], 30, 3, true);
    let b = add_from_image(&mut w, storage, root, "data", &noise(4, 200_000));
    churn(&mut w, &[a, b], 30, 4, true);
    churn(&mut w, &[a, b], 15, 5, false);
    w.close().expect("closed");
    Built { name: "lz4", dir }
}

/// Compaction three times: `keep_last` moving the base into the middle of the journal, then,
/// after a disk was added, to a point before that disk's `added_lsn` (so its base keeps an older
/// `base_lsn`), then a policy with a pin, still before that disk, that retires the points between
/// the pin and the newest. Checkpoints are written at every sealed segment's end first, so some
/// end up below the base. A copy of the vault is kept after each compaction: every one is read.
fn compacted(storage: &Arc<dyn Storage>, root: &Path) -> Vec<Built> {
    let dir = root.join("compacted");
    let settings = VaultSettings {
        block_bytes: 16 << 10,
        segment_bytes: 64 << 10,
        compression: Compression::Lz4,
    };
    let mut w = Writer::create(storage.clone(), &dir, settings).expect("vault created");
    let a = add_from_image(&mut w, storage, root, "os", &payload(6, 150_000, true));
    let b = w.add_disk("data", 100_000).expect("disk added");
    let b = (b.disk_id, b.disk_bytes);
    churn(&mut w, &[a, b], 45, 6, false);
    churn(&mut w, &[a, b], 15, 9, true);
    w.close().expect("closed");
    write_checkpoints(storage, &dir);
    let mut w = Writer::open(storage.clone(), &dir).expect("vault opened");
    prune_into_a_segment(&mut w);
    w.close().expect("closed");
    let stage1 = snapshot(&dir, root, "compacted-1");
    let mut w = Writer::open(storage.clone(), &dir).expect("vault opened");
    let c = add_from_image(&mut w, storage, root, "late", &noise(7, 70_000));
    w.point(PointKind::CrashConsistent, "at added_lsn")
        .expect("point taken");
    churn(&mut w, &[a, b, c], 30, 7, false);
    // The 11 points since "late" was added are the newest; keeping 14 puts the base before it.
    prune(&mut w, keep_last(14));
    let late = w.manifest().disks.last().expect("a disk").clone();
    assert!(
        late.base_generation == 1 && late.added_lsn > w.manifest().base_lsn,
        "\"late\" keeps the base it was added with"
    );
    w.close().expect("closed");
    let stage2 = snapshot(&dir, root, "compacted-2");
    let mut w = Writer::open(storage.clone(), &dir).expect("vault opened");
    // The pin, the new base, is also before "late" was added, whose base then stays older
    // than the manifest's `base_lsn`.
    prune_to_pin_retiring(&mut w, 1);
    churn(&mut w, &[a, b, c], 10, 8, false);
    w.close().expect("closed");
    vec![
        stage1,
        stage2,
        Built {
            name: "compacted-3",
            dir,
        },
    ]
}

/// Prunes with `keep_last` to a point neither first nor last in its segment, so that segment
/// straddles the new base.
fn prune_into_a_segment(w: &mut Writer) {
    let edges: Vec<u64> = w
        .manifest()
        .segments
        .iter()
        .flat_map(|s| [s.first_lsn, s.sealed.map_or(0, |i| i.last_lsn)])
        .collect();
    let points = w.points();
    let n = (10..=14)
        .find(|&n| !edges.contains(&points[points.len() - n].lsn))
        .expect("a point inside a segment");
    prune(w, keep_last(n));
    let first = w.manifest().segments[0].first_lsn;
    assert!(
        first < w.manifest().base_lsn,
        "the first segment straddles the base"
    );
}

/// Pins the offered point at `index` and prunes by a policy as if a day had passed: the base
/// moves to the pin and every point between it and the newest is retired.
fn prune_to_pin_retiring(w: &mut Writer, index: usize) {
    let pin = w.points()[index].point_id;
    w.pin(pin).expect("pinned");
    w.set_retention(Some(RetentionPolicy::with_window(3600)))
        .expect("policy set");
    prune(
        w,
        PruneOptions {
            now_unix_ns: Some(replog_writer::now_unix_ns() + 24 * 3600 * 1_000_000_000),
            ..PruneOptions::default()
        },
    );
    assert!(
        !w.manifest().lifecycle.retired.is_empty(),
        "the policy retires points"
    );
}

/// A copy of the closed vault at `dir`, as it is now.
fn snapshot(dir: &Path, root: &Path, name: &'static str) -> Built {
    let copy_dir = root.join(name);
    replog_tests::copy_dir(dir, &copy_dir);
    Built {
        name,
        dir: copy_dir,
    }
}

fn keep_last(n: usize) -> PruneOptions {
    PruneOptions {
        keep_last: Some(n),
        ..PruneOptions::default()
    }
}

fn prune(w: &mut Writer, opts: PruneOptions) {
    let before = w.manifest().base_lsn;
    let report = w.prune(&opts).expect("pruned");
    assert!(
        report.compaction.is_some() && w.manifest().base_lsn > before,
        "the prune moves the base: {report:?}"
    );
}

fn write_checkpoints(storage: &Arc<dyn Storage>, dir: &Path) {
    let vault = Vault::open(storage.clone(), dir).expect("vault opened");
    for lsn in vault.sealed_segment_ends() {
        checkpoint::write(&vault, lsn).expect("checkpoint written");
    }
}

/// Checks that the vaults hold what the test claims to cover, so a change to the writer cannot
/// quietly make it test less: several sealed segments and an open one with points, LZ4 records
/// and raw ones, zero records, a point at a disk's `added_lsn`, views the Rust reader starts from
/// a checkpoint (which the independent reader ignores).
fn check_coverage(storage: &Arc<dyn Storage>, vaults: &[Built]) {
    let (mut lz4, mut raw, mut zero, mut at_added, mut from_checkpoint) = (0, 0, 0, 0, 0);
    for built in vaults {
        let vault = Vault::open(storage.clone(), &built.dir).expect("vault opened");
        let m = vault.manifest();
        let sealed = m.segments.iter().filter(|s| s.sealed.is_some()).count();
        println!(
            "{}: base LSN {}, {} segments ({sealed} sealed), {} points offered, last LSN {}",
            built.name,
            m.base_lsn,
            m.segments.len(),
            vault.points().len(),
            vault.last_lsn()
        );
        assert!(sealed >= 2, "{}: {sealed} sealed segments", built.name);
        let open = vault.open_segment().expect("an open segment");
        let open_points = vault
            .points()
            .iter()
            .filter(|p| p.segment_id == open.segment_id)
            .count();
        assert!(
            open_points > 0,
            "{}: no point in the open segment",
            built.name
        );
        for r in replog_tests::journal_records(storage.as_ref(), &built.dir) {
            match r.kind {
                RecordKind::Write if r.lz4 => lz4 += 1,
                RecordKind::Write => raw += 1,
                RecordKind::Zero => zero += 1,
                _ => {}
            }
        }
        at_added += vault
            .points()
            .iter()
            .filter(|p| vault.disks().iter().any(|d| d.added_lsn == p.lsn))
            .count();
        from_checkpoint += vault
            .points()
            .iter()
            .filter(|p| vault.view(p).expect("view").checkpoint_lsn().is_some())
            .count();
    }
    assert!(
        lz4 > 0 && raw > 0 && zero > 0 && at_added > 0 && from_checkpoint > 0,
        "LZ4 {lz4}, raw {raw}, zero {zero} records; {at_added} points at added_lsn, \
         {from_checkpoint} read from a checkpoint"
    );
}

fn reader_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("independent/reader.py")
}

/// Runs the independent reader; its stdout on success.
fn run_reader(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("python3")
        .arg(reader_py())
        .args(args)
        .output()
        .expect("python3 runs (the independent reader needs Python 3.11)");
    assert!(
        out.status.success(),
        "reader.py {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The independent reader's points: (id, LSN, disk names).
fn listed(json: &str) -> Vec<(u64, u64, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_str(json).expect("reader.py prints JSON");
    v["points"]
        .as_array()
        .expect("a points array")
        .iter()
        .map(|p| {
            let disks = p["disks"].as_array().expect("disks");
            (
                p["id"].as_u64().expect("id"),
                p["lsn"].as_u64().expect("lsn"),
                disks
                    .iter()
                    .map(|d| d.as_str().expect("name").to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// Compares every disk at every point of the vault; returns the point × disk pairs matched.
fn compare_vault(storage: &Arc<dyn Storage>, built: &Built, scratch: &Path) -> usize {
    let py_dir = scratch.join(format!("{}-py", built.name));
    let json = run_reader(&[
        built.dir.as_os_str(),
        "--all".as_ref(),
        "--out".as_ref(),
        py_dir.as_os_str(),
    ]);
    let py_points = listed(&json);
    let vault = Vault::open(storage.clone(), &built.dir).expect("vault opened");
    let ours: Vec<(u64, u64)> = vault.points().iter().map(|p| (p.point_id, p.lsn)).collect();
    let theirs: Vec<(u64, u64)> = py_points.iter().map(|(id, lsn, _)| (*id, *lsn)).collect();
    assert_eq!(theirs, ours, "{}: the points offered differ", built.name);
    let newest = vault.points().last().expect("the vault has points");
    let one_dir = scratch.join(format!("{}-py-one", built.name));
    let id = newest.point_id.to_string();
    run_reader(&[
        built.dir.as_os_str(),
        "--point".as_ref(),
        id.as_ref(),
        "--out".as_ref(),
        one_dir.as_os_str(),
    ]);
    let mut pairs = 0;
    for (p, (_, _, py_disks)) in vault.points().iter().zip(&py_points) {
        let view = vault.view(p).expect("view");
        let names: Vec<String> = view.disks().iter().map(|d| d.name().to_owned()).collect();
        assert_eq!(
            py_disks, &names,
            "{}: point {}: disks",
            built.name, p.point_id
        );
        let rust_dir = scratch.join(format!("{}-rs/{}", built.name, p.point_id));
        materialize(&view, &rust_dir, &MaterializeOptions::default()).expect("materialized");
        for name in &names {
            let file = format!("{}/{name}.raw", p.point_id);
            let want = std::fs::read(scratch.join(format!("{}-rs", built.name)).join(&file))
                .expect("the Rust image");
            let got = std::fs::read(py_dir.join(&file)).expect("the Python image");
            if p.point_id == newest.point_id {
                let one = std::fs::read(one_dir.join(format!("{name}.raw"))).expect("an image");
                assert!(one == got, "{}: --point and --all differ", built.name);
            }
            assert!(
                got == want,
                "{}: point {} (LSN {}), disk {name}: the independent reader differs at byte {:?} \
                 (lengths {} and {})",
                built.name,
                p.point_id,
                p.lsn,
                got.iter().zip(&want).position(|(a, b)| a != b),
                got.len(),
                want.len()
            );
            pairs += 1;
        }
    }
    pairs
}

/// The FORMAT.md errors of finding 14 (the base table's offset, the base `base_lsn` of a disk
/// added later, checkpoints below the base, the LZ4 framing, a point at `added_lsn`, ...) made a
/// reader written from the spec alone misread or refuse vaults the code writes. The reader
/// written from the corrected spec must match the code on every disk at every point.
#[test]
fn finding_14_independent_reader_matches_every_disk_at_every_point() {
    let storage = super::storage();
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let root = tmp.path();
    let mut vaults = vec![plain(&storage, root), lz4(&storage, root)];
    vaults.extend(compacted(&storage, root));
    check_coverage(&storage, &vaults);
    let scratch = root.join("out");
    let mut total = 0;
    for built in &vaults {
        let pairs = compare_vault(&storage, built, &scratch);
        println!("{}: {pairs} point x disk pairs match", built.name);
        total += pairs;
    }
    println!("independent reader: {total} point x disk pairs match");
    assert!(total >= 100, "only {total} pairs compared");
}
