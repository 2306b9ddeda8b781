//! Shared helpers for replog's end-to-end, model and fault tests: the list of storage backends
//! every shared test runs against, and a model of the disks to check the vault against.

pub mod crash_sweep;
pub mod fuzz_vault;
pub mod qemu;
pub mod servers;

use std::path::PathBuf;
use std::sync::Arc;

use replog_io::Storage;
use replog_io::sim::SimStorage;

/// A backend under test and a vault directory on it.
#[derive(Debug)]
pub struct Backend {
    /// "sync", "uring" or "sim".
    pub name: &'static str,
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// The simulator, when this is the simulated backend.
    pub sim: Option<Arc<SimStorage>>,
    /// Where a test may create its vault and images.
    pub root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Every backend available here: plain syscalls and io_uring on a temporary directory (io_uring
/// skipped with a note where the kernel refuses it), and the simulator. `REPLOG_IO_BACKEND=sync`
/// leaves io_uring out, as on a machine without it.
pub fn backends(sim_seed: u64) -> Vec<Backend> {
    let mut out = Vec::new();
    let forced_sync = std::env::var(replog_io::BACKEND_ENV).is_ok_and(|v| v == "sync");
    let mut names = vec!["sync"];
    if !forced_sync {
        names.push("uring");
    }
    for name in names {
        match replog_io::backend(name) {
            Ok(storage) => {
                let tmp = tempfile::tempdir().expect("a temporary directory");
                out.push(Backend {
                    name,
                    storage,
                    sim: None,
                    root: tmp.path().to_path_buf(),
                    _tmp: Some(tmp),
                });
            }
            Err(e) => eprintln!("note: the {name} backend is unavailable here ({e}); skipped"),
        }
    }
    let sim = SimStorage::new(sim_seed);
    sim.create_dir_all(std::path::Path::new("/sim"))
        .expect("the simulator creates directories");
    sim.make_all_durable();
    let storage: Arc<dyn Storage> = sim.clone();
    out.push(Backend {
        name: "sim",
        storage,
        sim: Some(sim),
        root: PathBuf::from("/sim"),
        _tmp: None,
    });
    out
}

/// The `replog` binary of this build, which `cargo build -p replog` leaves next to the test
/// executables' directory (`target/<profile>/replog`).
pub fn replog_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target dir");
    let bin = dir.join("replog");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p replog` first",
        bin.display()
    );
    bin
}

/// The multiplier for case counts of the fault, flip and crash tests: `REPLOG_STRESS=n` runs `n`
/// times as many seeds or cases (default 1), for longer runs than `cargo test` makes by default.
pub fn stress() -> u64 {
    std::env::var("REPLOG_STRESS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n >= 1)
        .unwrap_or(1)
}

/// Vault settings with 4 KiB blocks and 64 KiB segments, so a few writes fill several segments.
pub fn small_segments(compression: replog_writer::Compression) -> replog_writer::VaultSettings {
    replog_writer::VaultSettings {
        block_bytes: 4096,
        segment_bytes: 64 << 10,
        compression,
    }
}

/// Copies the directory tree `from` to `to` (created), files by content.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("created");
    for entry in std::fs::read_dir(from).expect("listed") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copied");
        }
    }
}

/// A vault directory and its subdirectories, which must exist even when empty.
pub fn vault_dirs(dir: &std::path::Path) -> Vec<PathBuf> {
    use replog_format::layout::{BASES_DIR, DIGESTS_DIR, JOURNAL_DIR, QUARANTINE_DIR};
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend([JOURNAL_DIR, BASES_DIR, DIGESTS_DIR, QUARANTINE_DIR].map(|d| dir.join(d)));
    dirs
}

/// The files and directories of a simulator, captured after a clean shutdown, so a test can
/// start many cases from the same state without building it again.
#[derive(Clone, Debug, Default)]
pub struct SimImage {
    /// Every file's bytes, by absolute path.
    pub files: std::collections::BTreeMap<PathBuf, Vec<u8>>,
    /// Directories to create, even when empty.
    pub dirs: Vec<PathBuf>,
}

impl SimImage {
    /// Makes everything in `sim` durable, then copies every file and the given directories.
    pub fn capture(sim: &SimStorage, dirs: &[PathBuf]) -> SimImage {
        sim.make_all_durable();
        let files = sim
            .file_paths()
            .into_iter()
            .map(|p| {
                let bytes = sim.live_bytes(&p).expect("a listed file exists");
                (p, bytes)
            })
            .collect();
        SimImage {
            files,
            dirs: dirs.to_vec(),
        }
    }

    /// A new simulator (seeded with `seed`) holding exactly these files, all durable.
    pub fn restore(&self, seed: u64) -> Arc<SimStorage> {
        use replog_io::{OpenMode, WriteAt};
        let sim = SimStorage::new(seed);
        for d in &self.dirs {
            sim.create_dir_all(d)
                .expect("the simulator creates directories");
        }
        for (path, bytes) in &self.files {
            let parent = path.parent().expect("files live in directories");
            sim.create_dir_all(parent)
                .expect("the simulator creates directories");
            let f = sim
                .open(path, OpenMode::CreateTruncate)
                .expect("the simulator creates files");
            f.write_batch(
                &[WriteAt {
                    offset: 0,
                    data: bytes,
                }],
                false,
            )
            .expect("the simulator writes");
        }
        sim.make_all_durable();
        sim
    }
}

/// Writes `bytes` to a new file at `path`, synced: a raw disk image for `add_disk_from_image` or
/// `ingest`.
pub fn write_image(
    storage: &dyn Storage,
    path: &std::path::Path,
    bytes: &[u8],
) -> Arc<dyn replog_io::File> {
    let f = storage
        .open(path, replog_io::OpenMode::CreateTruncate)
        .expect("the image file is created");
    f.write_batch(
        &[replog_io::WriteAt {
            offset: 0,
            data: bytes,
        }],
        true,
    )
    .expect("the image file is written");
    f
}

/// Every record of every listed segment of the vault at `dir`, in LSN order (see
/// [`replog_reader::dump`]).
pub fn journal_records(
    storage: &dyn Storage,
    dir: &std::path::Path,
) -> Vec<replog_reader::DumpRecord> {
    let mut out = Vec::new();
    replog_reader::dump(storage, dir, None, |r| out.push(r.clone()), |_, _, _| {})
        .expect("the journal can be dumped");
    out
}

/// What the disks of a vault must hold: their staged content now, and their content at every
/// point the workload took or tried to take (captured before the point call, so a point whose
/// call failed but whose marker survived is still known).
#[derive(Clone, Debug, Default)]
pub struct PointModel {
    /// The staged content of each disk, by disk id.
    pub disks: std::collections::BTreeMap<u32, Vec<u8>>,
    /// The content of every disk at each point LSN.
    pub at_point: std::collections::BTreeMap<u64, std::collections::BTreeMap<u32, Vec<u8>>>,
    /// Acknowledged points, as (point id, LSN).
    pub acked: Vec<(u64, u64)>,
}

impl PointModel {
    /// A disk that now exists with `content`.
    pub fn add_disk(&mut self, disk_id: u32, content: Vec<u8>) {
        self.disks.insert(disk_id, content);
    }

    /// A disk of `bytes` zeros added as `name` on `w` and here; returns its id.
    pub fn add_zero_disk(
        &mut self,
        w: &mut replog_writer::Writer,
        name: &str,
        bytes: u64,
    ) -> Result<u32, replog_writer::WriteError> {
        let disk_id = w.add_disk(name, bytes)?.disk_id;
        self.add_disk(disk_id, vec![0; bytes as usize]);
        Ok(disk_id)
    }

    /// A disk added on `w` from a new image at `path` holding `content`, and here; the disk is
    /// named after the image's file name. Returns its id.
    pub fn add_image_disk(
        &mut self,
        w: &mut replog_writer::Writer,
        storage: &dyn Storage,
        path: &str,
        content: Vec<u8>,
    ) -> Result<u32, replog_writer::WriteError> {
        let path = std::path::Path::new(path);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("an image path names a file");
        let img = write_image(storage, path, &content);
        let disk_id = w.add_disk_from_image(name, img.as_ref(), path)?.disk_id;
        self.add_disk(disk_id, content);
        Ok(disk_id)
    }

    /// A staged write.
    pub fn write(&mut self, disk_id: u32, offset: u64, data: &[u8]) {
        let disk = self.disks.get_mut(&disk_id).expect("a known disk");
        disk[offset as usize..offset as usize + data.len()].copy_from_slice(data);
    }

    /// A staged zero range.
    pub fn zero(&mut self, disk_id: u32, offset: u64, len: u64) {
        let disk = self.disks.get_mut(&disk_id).expect("a known disk");
        disk[offset as usize..(offset + len) as usize].fill(0);
    }

    /// A point about to be taken at `lsn`: the disks as staged now.
    pub fn expect_point(&mut self, lsn: u64) {
        self.at_point.insert(lsn, self.disks.clone());
    }

    /// A point whose call returned `Ok`.
    pub fn ack(&mut self, point_id: u64, lsn: u64) {
        self.acked.push((point_id, lsn));
    }

    /// A crash-consistent point named `label` taken on `w`: expected with the disks as staged
    /// now, and acknowledged if the call returns `Ok`.
    pub fn point(
        &mut self,
        w: &mut replog_writer::Writer,
        label: &str,
    ) -> Result<replog_writer::PointInfo, replog_writer::WriteError> {
        self.point_of_kind(w, replog_writer::PointKind::CrashConsistent, label)
    }

    /// A point of `kind` named `label` taken on `w`, expected and acknowledged as in
    /// [`PointModel::point`].
    pub fn point_of_kind(
        &mut self,
        w: &mut replog_writer::Writer,
        kind: replog_writer::PointKind,
        label: &str,
    ) -> Result<replog_writer::PointInfo, replog_writer::WriteError> {
        self.expect_point(w.last_lsn() + 1);
        let p = w.point(kind, label)?;
        self.ack(p.point_id, p.lsn);
        Ok(p)
    }

    /// A write staged on `w` and in the model.
    pub fn stage_write(
        &mut self,
        w: &mut replog_writer::Writer,
        disk_id: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<(), replog_writer::WriteError> {
        self.write(disk_id, offset, data);
        w.write(disk_id, offset, data).map(drop)
    }

    /// A zero range staged on `w` and in the model.
    pub fn stage_zero(
        &mut self,
        w: &mut replog_writer::Writer,
        disk_id: u32,
        offset: u64,
        len: u64,
    ) -> Result<(), replog_writer::WriteError> {
        self.zero(disk_id, offset, len);
        w.zero(disk_id, offset, len).map(drop)
    }

    /// After a recovery, the staged state becomes what the vault holds at `w.last_lsn()`:
    /// unacknowledged records may or may not have survived, and the reader says which. Disks
    /// with no record yet read as `base_of(name, disk_bytes)`. Points are unaffected.
    pub fn resync(
        &mut self,
        storage: &Arc<dyn Storage>,
        dir: &std::path::Path,
        w: &replog_writer::Writer,
        base_of: impl Fn(&str, u64) -> Vec<u8>,
    ) -> Result<(), String> {
        let vault = replog_reader::Vault::open(storage.clone(), dir)
            .map_err(|e| format!("the recovered vault does not open for reading: {e}"))?;
        let view = vault
            .view_at_lsn(w.last_lsn())
            .map_err(|e| format!("no view at the recovered LSN {}: {e}", w.last_lsn()))?;
        let mut disks = std::collections::BTreeMap::new();
        for d in w.disks() {
            let content = match view.disks().iter().find(|v| v.disk_id() == d.disk_id) {
                Some(v) => {
                    let mut bytes = vec![0u8; v.size() as usize];
                    v.read_at(0, &mut bytes).map_err(|e| {
                        format!("reading disk {} at the recovered LSN: {e}", d.name)
                    })?;
                    bytes
                }
                None => base_of(&d.name, d.disk_bytes),
            };
            disks.insert(d.disk_id, content);
        }
        self.disks = disks;
        Ok(())
    }

    /// The points acknowledged so far, as the writer listed them.
    pub fn acked_lsns(&self) -> Vec<u64> {
        self.acked.iter().map(|a| a.1).collect()
    }
}

/// What happened after a crash, as [`recover_and_resume`] saw it.
#[derive(Debug, Default)]
pub struct AfterCrash {
    /// What the first recovery found and did, when it opened.
    pub recovery: Option<replog_writer::RecoveryReport>,
    /// Every broken promise found, empty when there was none.
    pub violations: Vec<String>,
}

/// After `sim` lost power (the caller crashed it, as [`crash_sweep::Leftovers::crash`] does):
/// recovers the vault at `dir`, checks every point against `model`, checks that a second
/// recovery finds the same LSN, points and disks and changes no file, resyncs the model
/// (`base_of` gives an added disk's base content), lets `resume` write on with the recovered
/// writer, crashes again (from `seed`) and checks everything once more.
pub fn recover_and_resume(
    sim: &Arc<SimStorage>,
    dir: &std::path::Path,
    model: &mut PointModel,
    seed: u64,
    base_of: impl Fn(&str, u64) -> Vec<u8>,
    resume: impl FnOnce(replog_writer::Writer, &mut PointModel) -> Result<(), String>,
) -> AfterCrash {
    use replog_writer::Writer;
    let storage: Arc<dyn Storage> = sim.clone();
    let mut out = AfterCrash::default();
    let w = match Writer::open(storage.clone(), dir) {
        Ok(w) => w,
        Err(e) => {
            out.violations = vec![format!("Writer::open after the crash failed: {e}")];
            return out;
        }
    };
    out.recovery = Some(w.recovery_report().clone());
    let state = (w.last_lsn(), w.points(), w.disks());
    drop(w);
    out.violations = check_vault(&storage, dir, model);
    let before = live_files(sim);
    let w = match Writer::open(storage.clone(), dir) {
        Ok(w) => w,
        Err(e) => {
            out.violations = vec![format!("the second Writer::open failed: {e}")];
            return out;
        }
    };
    if (w.last_lsn(), w.points(), w.disks()) != state {
        out.violations
            .push("a second recovery found another LSN, points or disks".to_owned());
    }
    if live_files(sim) != before {
        out.violations
            .push("a second recovery changed files".to_owned());
    }
    let resumed = match model.resync(&storage, dir, &w, base_of) {
        Ok(()) => resume(w, model),
        Err(e) => Err(e),
    };
    if let Err(e) = resumed {
        out.violations
            .push(format!("the recovered writer fails: {e}"));
        return out;
    }
    sim.crash(seed ^ 0xabcd);
    match Writer::open(storage.clone(), dir) {
        Ok(_) => out.violations.extend(check_vault(&storage, dir, model)),
        Err(e) => out
            .violations
            .push(format!("Writer::open after the new point failed: {e}")),
    }
    out
}

/// Where the files of the vault at `dir` differ from what its manifest names, one message per
/// directory (`bases/`, `journal/`), or why the vault does not open: after a prune, and after a
/// crash and a recovery, nothing is left over and nothing named is missing.
pub fn unnamed_files(storage: &Arc<dyn Storage>, dir: &std::path::Path) -> Vec<String> {
    use replog_format::layout;
    let vault = match replog_reader::Vault::open(storage.clone(), dir) {
        Ok(v) => v,
        Err(e) => return vec![format!("the vault does not open: {e}")],
    };
    let m = vault.manifest();
    let bases: Vec<String> = m
        .disks
        .iter()
        .map(|d| format!("{}.{}.base", d.disk_id, d.base_generation))
        .collect();
    let segments: Vec<String> = m
        .segments
        .iter()
        .map(|s| layout::segment_file_name(s.segment_id))
        .collect();
    let mut out = Vec::new();
    for (sub, want) in [(layout::BASES_DIR, bases), (layout::JOURNAL_DIR, segments)] {
        let want: std::collections::BTreeSet<String> = want.into_iter().collect();
        let found: std::collections::BTreeSet<String> = storage
            .read_dir(&dir.join(sub))
            .expect("listed")
            .into_iter()
            .collect();
        if found != want {
            out.push(format!(
                "{sub}/ holds {found:?}, the manifest names {want:?}"
            ));
        }
    }
    out
}

/// Every file of `sim` with its live bytes (what a reader would see now), to compare the state
/// before and after a recovery: recovering twice must leave them the same.
pub fn live_files(sim: &SimStorage) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    sim.file_paths()
        .into_iter()
        .map(|p| {
            let b = sim.live_bytes(&p).expect("listed");
            (p, b)
        })
        .collect()
}

/// Checks the vault at `dir` against `model` through the reader, returning every violation:
/// the vault must open, list every acknowledged point, and every listed point (acknowledged or
/// not) must be one the workload took and read back byte-exact on every disk that existed then.
pub fn check_vault(
    storage: &Arc<dyn Storage>,
    dir: &std::path::Path,
    model: &PointModel,
) -> Vec<String> {
    let vault = match replog_reader::Vault::open(storage.clone(), dir) {
        Ok(v) => v,
        Err(e) => return vec![format!("the vault does not open for reading: {e}")],
    };
    let mut violations = Vec::new();
    if let Some(e) = vault.damage() {
        violations.push(format!("the reader finds damage in the open segment: {e}"));
    }
    let listed: Vec<(u64, u64)> = vault.points().iter().map(|p| (p.point_id, p.lsn)).collect();
    for acked in &model.acked {
        if !listed.contains(acked) {
            violations.push(format!(
                "acknowledged point {acked:?} (id, lsn) is not listed; listed: {listed:?}"
            ));
        }
    }
    violations.extend(check_listed_points(&vault, model));
    violations
}

/// Reads every disk at every point `vault` lists and compares it with `model`; returns every
/// violation (a point the workload never took, a failed read, a wrong byte).
pub fn check_listed_points(vault: &replog_reader::Vault, model: &PointModel) -> Vec<String> {
    let mut violations = Vec::new();
    for p in vault.points() {
        let Some(want) = model.at_point.get(&p.lsn) else {
            violations.push(format!(
                "point {} at LSN {} was never taken",
                p.point_id, p.lsn
            ));
            continue;
        };
        if let Err(v) = check_point(vault, p, want) {
            violations.push(v);
        }
    }
    violations
}

/// Reads every disk of `vault` at point `p` and compares it with `want`.
fn check_point(
    vault: &replog_reader::Vault,
    p: &replog_reader::PointInfo,
    want: &std::collections::BTreeMap<u32, Vec<u8>>,
) -> Result<(), String> {
    let view = vault
        .view(p)
        .map_err(|e| format!("point {} (LSN {}): view failed: {e}", p.point_id, p.lsn))?;
    let ids: Vec<u32> = view.disks().iter().map(|d| d.disk_id()).collect();
    let want_ids: Vec<u32> = want.keys().copied().collect();
    if ids != want_ids {
        return Err(format!(
            "point {} (LSN {}): disks {ids:?}, the model has {want_ids:?}",
            p.point_id, p.lsn
        ));
    }
    for d in view.disks() {
        let mut got = vec![0u8; d.size() as usize];
        d.read_at(0, &mut got).map_err(|e| {
            format!(
                "point {} (LSN {}): reading disk {} failed: {e}",
                p.point_id,
                p.lsn,
                d.name()
            )
        })?;
        let expected = &want[&d.disk_id()];
        if &got != expected {
            let at = got.iter().zip(expected).position(|(a, b)| a != b);
            return Err(format!(
                "point {} (LSN {}): disk {} differs from the model at byte {at:?}",
                p.point_id,
                p.lsn,
                d.name()
            ));
        }
    }
    Ok(())
}

/// Deterministic bytes that do not compress (xorshift64), for payloads and images.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
