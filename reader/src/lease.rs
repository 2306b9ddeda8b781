//! Leases: how a reader keeps compaction from rolling the base images past the point it reads,
//! and from deleting a file its snapshot still names.
//!
//! A lease is a file in `VAULT/leases/` holding the point's id and LSN, the base LSN of the
//! manifest the reader read, a purpose, the holder's pid and the time. Its holder keeps an
//! advisory lock (`flock`) on it for as long as it runs, so a lease whose holder died is found
//! unlocked, taken as stale, and removed by the next compaction. A persistent lease (a test
//! failover) is never stale: it lasts until it is released explicitly.
//!
//! **No window between reading and registering.** A reader takes the registration lock
//! (`leases/.lock`) shared, opens the vault (reads the manifest), picks its point and writes its
//! lease, and only then lets the lock go ([`Vault::open_leased`]). Compaction takes the same lock
//! exclusive while it lists the leases and commits its manifest ([`Registrations`]). So either
//! the reader registered before compaction looked, and compaction sees the lease, or the reader
//! read the manifest after compaction committed, and its snapshot names only files that stay.
//! Compaction deletes the files an older manifest named only once no live lease was taken
//! against an older base ([`LiveLease::snapshot_base_lsn`]).
//!
//! Every file access goes through the vault's [`Storage`]: the lease files, `leases/` and its
//! registration lock ([`Storage::open_lock_file`], [`replog_io::File::lock`]). On a real
//! filesystem the locks are `flock`s, which the kernel drops when their holder dies; the
//! simulator keeps them the same way and drops them all at a simulated crash, so compaction
//! racing a reader can be crashed at every operation. A vault on a read-only filesystem takes
//! no lease (nothing can compact it).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use replog_format::lease::{
    LEASE_DETAIL_BYTES_MAX, LEASE_LOCK_FILE, LEASE_SUFFIX, LEASES_DIR, LeaseRecord,
    TEST_FAILOVER_LEASE_FILE, valid_purpose,
};
use replog_format::manifest::{MANIFEST_HEADER_BYTES, Manifest};
use replog_format::{layout, vault_seed};
use replog_io::{File, LockMode, OpenMode, Storage, WriteAt};

use crate::error::{ReadError, ReadErrorKind, Result};
use crate::points::PointInfo;
use crate::vault::Vault;

/// What a lease is for and how long it lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// 1 to 32 of `[a-z0-9-]`: `failover`, `test-failover`, `migration`, `nbd-export`, ...
    pub purpose: String,
    /// Outlives the process; released only by [`Lease::release`] or [`release_test_failover`].
    pub persistent: bool,
    /// Free text kept in the lease (a test failover's output directory), at most 4096 bytes.
    pub detail: String,
}

impl LeaseOptions {
    /// A lease held while this process uses the point.
    pub fn new(purpose: &str) -> LeaseOptions {
        LeaseOptions {
            purpose: purpose.to_owned(),
            persistent: false,
            detail: String::new(),
        }
    }
}

/// A registered lease. Dropping it releases a process lease; a persistent lease stays until
/// [`Lease::release`].
#[derive(Debug)]
pub struct Lease {
    held: Option<Held>,
}

#[derive(Debug)]
struct Held {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    record: LeaseRecord,
    /// Holds the lock that says the holder is alive.
    _file: Arc<dyn File>,
}

/// A vault opened under a lease on the point chosen from it.
#[derive(Debug)]
pub struct LeasedVault {
    /// The snapshot.
    pub vault: Vault,
    /// The point chosen.
    pub point: PointInfo,
    /// The lease on it; keep it until done with the point.
    pub lease: Lease,
}

impl Lease {
    /// A lease that records nothing: a read-only vault.
    fn none() -> Lease {
        Lease { held: None }
    }

    /// What the lease file holds; `None` when no lease could be recorded (read-only
    /// filesystem).
    pub fn record(&self) -> Option<&LeaseRecord> {
        self.held.as_ref().map(|h| &h.record)
    }

    /// The lease file.
    pub fn path(&self) -> Option<&Path> {
        self.held.as_ref().map(|h| h.path.as_path())
    }

    /// Removes the lease now, persistent or not, and makes the removal durable.
    pub fn release(mut self) -> Result<()> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        remove_and_sync(held.storage.as_ref(), &held.path)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(held) = self.held.take()
            && !held.record.persistent
        {
            // Best effort: a lease file left behind is unlocked once `held` closes, so the next
            // compaction finds it stale and removes it.
            let _ = held.storage.remove_file(&held.path);
        }
    }
}

fn remove_and_sync(storage: &dyn Storage, path: &Path) -> Result<()> {
    match storage.remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ReadError::io(path, "remove the lease", e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    storage
        .sync_dir(dir)
        .map_err(|e| ReadError::io(dir, "sync the directory", e))
}

/// The registration lock, held shared by a reader while it registers.
struct Registration {
    storage: Arc<dyn Storage>,
    leases: PathBuf,
    _lock: Arc<dyn File>,
}

/// The `leases/` directory of a vault.
fn leases_dir(dir: &Path) -> PathBuf {
    dir.join(LEASES_DIR)
}

/// Opens (creating it and `leases/` when missing) and locks the registration lock, waiting for
/// a holder of a conflicting lock. `None` on a read-only filesystem.
fn lock_registration(
    storage: &dyn Storage,
    leases: &Path,
    mode: LockMode,
) -> Result<Option<Arc<dyn File>>> {
    match storage.create_dir_all(leases) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc_erofs()) => return Ok(None),
        Err(e) => return Err(ReadError::io(leases, "create the lease directory", e)),
    }
    let path = leases.join(LEASE_LOCK_FILE);
    let file = match storage.open_lock_file(&path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc_erofs()) => return Ok(None),
        Err(e) => return Err(ReadError::io(&path, "open the lease registration lock", e)),
    };
    file.lock(mode, true)
        .map_err(|e| ReadError::io(&path, "lock the lease registration lock", e))?;
    Ok(Some(file))
}

/// `EROFS`, without a libc dependency in this crate.
const fn libc_erofs() -> i32 {
    30
}

impl Registration {
    fn shared(storage: &Arc<dyn Storage>, dir: &Path) -> Result<Option<Registration>> {
        let leases = leases_dir(dir);
        let lock = lock_registration(storage.as_ref(), &leases, LockMode::Shared)?;
        Ok(lock.map(|lock| Registration {
            storage: Arc::clone(storage),
            leases,
            _lock: lock,
        }))
    }

    /// Writes and locks a lease file for `point` of `vault`.
    fn register(&self, vault: &Vault, point: &PointInfo, opts: &LeaseOptions) -> Result<Lease> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let record = LeaseRecord {
            vault_id: vault.header().vault_id,
            persistent: opts.persistent,
            point_id: point.point_id,
            lsn: point.lsn,
            snapshot_base_lsn: vault.base_lsn(),
            time_unix_ns: now_unix_ns(),
            pid: std::process::id(),
            purpose: opts.purpose.clone(),
            detail: opts.detail.clone(),
        };
        let name = if opts.purpose == "test-failover" {
            TEST_FAILOVER_LEASE_FILE.to_owned()
        } else {
            format!(
                "{}-{}-{}{LEASE_SUFFIX}",
                record.pid,
                record.time_unix_ns,
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        };
        let path = self.leases.join(name);
        let file = (self.storage)
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    ReadError::new(
                        ReadErrorKind::AlreadyExists,
                        format!(
                            "{}: a lease of this kind is already held; release it first",
                            path.display()
                        ),
                    )
                } else {
                    ReadError::io(&path, "create the lease", e)
                }
            })?;
        let locked = file.lock(LockMode::Exclusive, true);
        if let Err(e) = locked {
            let _ = self.storage.remove_file(&path);
            return Err(ReadError::io(&path, "lock the lease", e));
        }
        let bytes = record.encode(vault_seed(&record.vault_id));
        if let Err(e) = self.write(&file, &bytes, opts.persistent) {
            let _ = self.storage.remove_file(&path);
            return Err(ReadError::io(&path, "write the lease", e));
        }
        Ok(Lease {
            held: Some(Held {
                storage: Arc::clone(&self.storage),
                path,
                record,
                _file: file,
            }),
        })
    }
}

impl Registration {
    /// Writes a lease's bytes; a persistent lease is then made durable, file and name.
    fn write(&self, file: &Arc<dyn File>, bytes: &[u8], persistent: bool) -> io::Result<()> {
        file.write_batch(
            &[WriteAt {
                offset: 0,
                data: bytes,
            }],
            persistent,
        )?;
        if persistent {
            self.storage.sync_dir(&self.leases)?;
            if let Some(vault_dir) = self.leases.parent() {
                self.storage.sync_dir(vault_dir)?;
            }
        }
        Ok(())
    }
}

fn check_options(opts: &LeaseOptions) -> Result<()> {
    if !valid_purpose(&opts.purpose) || opts.detail.len() > LEASE_DETAIL_BYTES_MAX {
        return Err(ReadError::new(
            ReadErrorKind::InvalidRequest,
            format!(
                "lease purpose {:?} is not 1 to 32 of a-z 0-9 -, or its detail is over {LEASE_DETAIL_BYTES_MAX} bytes",
                opts.purpose
            ),
        ));
    }
    Ok(())
}

impl Vault {
    /// Opens the vault at `dir`, lets `choose` pick a point from the snapshot, and leases that
    /// point, all under the registration lock: compaction cannot commit between the manifest
    /// being read and the lease being recorded, so it never rolls past the point or deletes a
    /// file the snapshot names while the lease is held.
    ///
    /// `choose` returns the point to lease (or an error, which is returned and leases nothing).
    pub fn open_leased<E: From<ReadError>>(
        storage: Arc<dyn Storage>,
        dir: &Path,
        opts: &LeaseOptions,
        choose: impl FnOnce(&Vault) -> std::result::Result<PointInfo, E>,
    ) -> std::result::Result<LeasedVault, E> {
        check_options(opts)?;
        let registration = Registration::shared(&storage, dir)?;
        let vault = Vault::open(storage, dir)?;
        let point = choose(&vault)?;
        let lease = match &registration {
            Some(r) => r.register(&vault, &point, opts)?,
            None => Lease::none(),
        };
        Ok(LeasedVault {
            vault,
            point,
            lease,
        })
    }

    /// Leases `point` of this already open snapshot. Fails if a compaction or migration
    /// committed since the snapshot was opened (its files may be gone): open the vault again,
    /// preferably with [`Vault::open_leased`], which has no such window.
    pub fn lease(&self, point: &PointInfo, opts: &LeaseOptions) -> Result<Lease> {
        check_options(opts)?;
        let Some(registration) = Registration::shared(self.storage(), self.dir())? else {
            return Ok(Lease::none());
        };
        let current = read_manifest(self.storage().as_ref(), self.dir())?;
        let first_segment = |m: &Manifest| m.segments.first().map(|s| s.segment_id);
        if current.base_lsn != self.base_lsn()
            || first_segment(&current) != first_segment(self.manifest())
        {
            return Err(ReadError::new(
                ReadErrorKind::InvalidRequest,
                format!(
                    "{}: the vault was compacted since this snapshot was opened (base LSN {} then, {} now); open it again",
                    self.dir().display(),
                    self.base_lsn(),
                    current.base_lsn
                ),
            ));
        }
        registration.register(self, point, opts)
    }
}

fn read_manifest(storage: &dyn Storage, dir: &Path) -> Result<Manifest> {
    let path = dir.join(layout::MANIFEST_FILE);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| ReadError::io(layout::MANIFEST_FILE, "open", e))?;
    let bytes = file
        .map()
        .map_err(|e| ReadError::io(layout::MANIFEST_FILE, "read", e))?;
    if bytes.len() < MANIFEST_HEADER_BYTES {
        return Err(ReadError::damaged(
            layout::MANIFEST_FILE,
            0,
            "the manifest is cut short",
        ));
    }
    Manifest::decode(&bytes).map_err(|e| ReadError::decode(layout::MANIFEST_FILE, 0, e))
}

/// Whether `e` (from [`Vault::open_leased`] or [`Vault::lease`]) says that this process may read
/// the vault but not register a lease in it: the operating system refused access to `leases/`
/// or its registration lock. A reader that can do without protection from compaction (a
/// failover of a vault it cannot write) may then read without a lease, and should say so.
pub fn lease_not_permitted(e: &ReadError) -> bool {
    let denied = std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some_and(|io| io.kind() == io::ErrorKind::PermissionDenied);
    let in_leases = e
        .path()
        .is_some_and(|p| p.components().any(|c| c.as_os_str() == LEASES_DIR));
    e.kind() == ReadErrorKind::Io && denied && in_leases
}

/// A lease that is held: by a running process (its file is locked) or persistently.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveLease {
    /// Its file.
    pub file: PathBuf,
    /// What it holds; `None` if a live holder's file does not decode (then it is taken as
    /// holding LSN 0, which blocks every compaction, rather than ignored).
    pub record: Option<LeaseRecord>,
}

impl LiveLease {
    /// The LSN compaction must not roll past.
    pub fn lsn(&self) -> u64 {
        self.record.as_ref().map_or(0, |r| r.lsn)
    }

    /// The base LSN of the snapshot it was taken against.
    pub fn snapshot_base_lsn(&self) -> u64 {
        self.record.as_ref().map_or(0, |r| r.snapshot_base_lsn)
    }

    /// A sentence naming it, for reports.
    pub fn describe(&self) -> String {
        match &self.record {
            Some(r) => format!(
                "{} lease on point {} (LSN {}) held by pid {}{}",
                r.purpose,
                r.point_id,
                r.lsn,
                r.pid,
                if r.persistent { ", persistent" } else { "" }
            ),
            None => format!("an unreadable live lease {}", self.file.display()),
        }
    }
}

/// The registration lock held exclusive, for compaction and other deleters: no reader
/// registers while it is held, so the leases listed when it was taken stay the complete set
/// until it is dropped.
#[derive(Debug)]
pub struct Registrations {
    live: Vec<LiveLease>,
    _lock: Option<Arc<dyn File>>,
}

impl Registrations {
    /// Waits for readers that are registering, then holds the registration lock exclusive and
    /// lists the leases; stale ones (nobody holds their lock, not persistent) are removed.
    pub fn lock(storage: &dyn Storage, dir: &Path, seed: u32) -> Result<Registrations> {
        let leases = leases_dir(dir);
        let Some(lock) = lock_registration(storage, &leases, LockMode::Exclusive)? else {
            return Ok(Registrations {
                live: Vec::new(),
                _lock: None,
            });
        };
        let mut live = Vec::new();
        for status in scan(storage, &leases, seed)? {
            if status.live {
                live.push(LiveLease {
                    file: status.file,
                    record: status.record,
                });
            } else {
                match storage.remove_file(&status.file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ReadError::io(&status.file, "remove the stale lease", e)),
                }
            }
        }
        Ok(Registrations {
            live,
            _lock: Some(lock),
        })
    }

    /// Every live lease, as listed when the lock was taken: none registered since, and a holder
    /// that died since is still counted (compaction then waits or skips for nothing worse than
    /// one round).
    pub fn live(&self) -> Result<Vec<LiveLease>> {
        Ok(self.live.clone())
    }
}

/// One lease file as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseStatus {
    /// Its file.
    pub file: PathBuf,
    /// What it holds, if it decodes.
    pub record: Option<LeaseRecord>,
    /// Whether it is held (locked by a running process, or persistent).
    pub live: bool,
}

/// Every lease file of the vault at `dir`, live or stale, without changing anything.
pub fn list_leases(storage: &dyn Storage, dir: &Path, seed: u32) -> Result<Vec<LeaseStatus>> {
    let leases = leases_dir(dir);
    // As `Path::exists`: a directory that cannot be looked at is taken as absent.
    if matches!(storage.exists(&leases), Ok(true)) {
        scan(storage, &leases, seed)
    } else {
        Ok(Vec::new())
    }
}

fn scan(storage: &dyn Storage, leases: &Path, seed: u32) -> Result<Vec<LeaseStatus>> {
    let names: Vec<String> = storage
        .read_dir(leases)
        .map_err(|e| ReadError::io(leases, "list the leases", e))?
        .into_iter()
        .filter(|n| n.ends_with(LEASE_SUFFIX))
        .collect();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let file = leases.join(name);
        let f = match storage.open(&file, OpenMode::Read) {
            Ok(f) => f,
            // Released between the listing and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ReadError::io(&file, "open the lease", e)),
        };
        let locked = !f
            .lock(LockMode::Shared, false)
            .map_err(|e| ReadError::io(&file, "test the lease", e))?;
        let record = read_prefix(f.as_ref(), 4 * LEASE_DETAIL_BYTES_MAX)
            .ok()
            .and_then(|bytes| LeaseRecord::decode(&bytes, seed).ok());
        let persistent = record.as_ref().is_some_and(|r| r.persistent);
        out.push(LeaseStatus {
            file,
            live: locked || persistent,
            record,
        });
    }
    Ok(out)
}

/// Up to `limit` bytes from the start of `file`.
fn read_prefix(file: &dyn File, limit: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; limit];
    let mut len = 0;
    while len < limit {
        match file.read_at(&mut bytes[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(len);
    Ok(bytes)
}

/// The vault's active test failover lease, if any.
pub fn test_failover_lease(
    storage: &dyn Storage,
    dir: &Path,
    seed: u32,
) -> Result<Option<LeaseRecord>> {
    Ok(list_leases(storage, dir, seed)?
        .into_iter()
        .find(|s| {
            s.file
                .file_name()
                .is_some_and(|n| n == TEST_FAILOVER_LEASE_FILE)
        })
        .and_then(|s| s.record))
}

/// Removes the vault's test failover lease; returns whether there was one.
pub fn release_test_failover(storage: &dyn Storage, dir: &Path) -> Result<bool> {
    let path = leases_dir(dir).join(TEST_FAILOVER_LEASE_FILE);
    if !matches!(storage.exists(&path), Ok(true)) {
        return Ok(false);
    }
    remove_and_sync(storage, &path)?;
    Ok(true)
}

fn now_unix_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}
