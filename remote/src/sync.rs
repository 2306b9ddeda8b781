//! `sync`: upload what a vault's manifest needs, publish a remote manifest, evict what the cache
//! limit says, and delete remote objects no kept manifest needs.
//!
//! The order is what makes a crash at any step harmless:
//!
//! 0. The remote must still hold the manifest `remote/LATEST` says this vault confirmed (or a
//!    newer one): a store that lost it (wiped, restored from an old backup, the object deleted
//!    or damaged) is refused, before anything is uploaded, published or evicted, since what
//!    the vault evicted may be gone with it. `--scrub` goes on and uploads every local file
//!    again.
//! 1. The files are those the vault's manifest needs, plus the open segment's prefix up to the
//!    end of the newest point's marker when that point is in the open segment (synced locally
//!    first; see `prefix.rs`). Every chunk and file map is written under its hash (create-if-absent) and read back and
//!    compared before anything names it. A chunk already there is read back and compared
//!    instead of written. Keys name their bytes, so a retry rewrites nothing and nothing is
//!    stored twice.
//! 2. The remote manifest, numbered one above every number in `manifests/`, `marks/` and
//!    `remote/LATEST`, is written (create-if-absent) and read back, then its mark. Only now
//!    does the remote name the new files. A run that finds the newest remote manifest already
//!    says what it would publish adopts it instead (and writes its mark).
//! 3. `remote/LATEST` records it locally (written, synced, renamed, directory synced).
//! 4. Local sealed segments and base images it names may now be evicted, oldest first, until
//!    the local cache limit holds (never the open segment).
//! 5. Remote manifests beyond the newest `keep_manifests` are deleted, then maps and chunks no
//!    kept manifest needs (left over by retention, compaction or a crashed run), and marks of
//!    manifests older than every kept one.
//!
//! A crash before 2 leaves objects nothing names, deleted by the next run's step 5. A crash
//! after 2 leaves a manifest the next run adopts. Memory: `concurrency` chunks in flight, each
//! with its read-back (8 MiB each), plus 32 bytes per remote chunk listed.

use std::collections::HashSet;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use replog_format::manifest::Manifest;
use replog_format::remote::{
    self, FileId, FileKind, FileMap, REMOTE_CHUNK_BYTES, RemoteFile, RemoteManifest, ZERO_CHUNK,
};
use replog_format::{VaultId, layout};
use replog_io::{File, OpenMode, Storage};
use replog_reader::{LeaseOptions, Vault};

use crate::error::{Refusal, RemoteError, Result};
use crate::files::{check_chunk, file_path};
use crate::local::{LocalVault, sync_dir};
use crate::lock::{self, KeptLocked};
use crate::prefix::{newest_point, open_prefix, prefix_segment};
use crate::store::{Put, Remote};

/// How to sync.
#[derive(Clone, Copy, Debug)]
pub struct SyncOptions {
    /// Chunks uploaded (and read back) at once.
    pub concurrency: usize,
    /// Read back every chunk of every local file, not only the new ones, and replace any that
    /// is damaged or missing on the remote.
    pub scrub: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            concurrency: 8,
            scrub: false,
        }
    }
}

/// What a sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The remote manifest now newest and recorded in `remote/LATEST`.
    pub manifest_seq: u64,
    /// Whether this run wrote it (false: an earlier run had, and it was adopted).
    pub published: bool,
    /// Files the manifest names.
    pub files: usize,
    /// Files read and cut into chunks by this run.
    pub files_uploaded: usize,
    /// Chunks written.
    pub chunks_written: u64,
    /// Bytes of chunks written.
    pub bytes_written: u64,
    /// Chunks found on the remote already (read back and compared, not written).
    pub chunks_present: u64,
    /// Chunks of zeros (not stored).
    pub zero_chunks: u64,
    /// Local files evicted, and their bytes.
    pub evicted_files: usize,
    /// Bytes evicted.
    pub evicted_bytes: u64,
    /// Bytes of sealed files still local after eviction.
    pub local_bytes: u64,
    /// Remote objects deleted (manifests, maps and chunks).
    pub deleted_objects: u64,
    /// On an immutable remote: how uploads were locked, and what garbage collection kept
    /// because it is still locked. `None`: the remote is not immutable.
    pub lock: Option<LockReport>,
    /// The newest point the remote manifest offers (in a sealed segment, or in the open
    /// segment's prefix it names); `None`: the remote has no point yet.
    pub newest_point: Option<replog_reader::PointInfo>,
}

/// How an immutable remote's sync locked its uploads, and what it could not delete yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockReport {
    /// The lock mode of the uploads.
    pub mode: replog_format::remote_lock::LockMode,
    /// Their retention, in seconds: the configured period or the retention window, the longer.
    pub period_s: u64,
    /// Remote objects no kept manifest needs that were kept because they are still locked
    /// (locked manifests, what those name, and the rest), and when the first may go.
    pub kept: KeptLocked,
}

/// Progress: bytes of files read so far, out of a total known at the start.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

/// Claims `remote` for the vault, or checks that it is already the vault's: its `VAULT` object
/// is written if missing (create-if-absent, read back) and must equal the local `VAULT`.
pub fn claim(local: &LocalVault, remote: &Remote) -> Result<()> {
    let key = remote::VAULT_KEY;
    let local_bytes = Bytes::from(local.header_bytes.clone());
    if remote.get(key)?.is_none() {
        remote.put_create(key, local_bytes.clone())?;
    }
    let found = remote.get(key)?.ok_or_else(|| {
        remote.damaged(key, "the vault header was written but cannot be read back")
    })?;
    if found != local_bytes {
        return Err(Refusal::OtherVault.because(format!(
            "{} holds another vault (its VAULT differs from {}'s): give another prefix",
            remote.url(),
            local.dir.display()
        )));
    }
    Ok(())
}

/// What the remote's `manifests/` holds.
#[derive(Clone, Debug, Default)]
pub struct ManifestScan {
    /// The newest remote manifest of the vault that decodes and is where its key says.
    pub newest: Option<RemoteManifest>,
    /// Every manifest number listed, ascending (a damaged one included, so no number is ever
    /// reused).
    pub seqs: Vec<u64>,
    /// The highest number any manifest or mark shows (0: none).
    pub highest: u64,
    /// Manifests above the newest that decodes that are there but damaged: key and what is
    /// wrong, newest first.
    pub damaged: Vec<(String, String)>,
}

impl ManifestScan {
    /// The number of the newest manifest that decodes (0: none).
    pub fn newest_seq(&self) -> u64 {
        self.newest.as_ref().map_or(0, |m| m.seq)
    }

    /// Checks that the newest manifest that decodes is the newest there is: no manifest above
    /// it is damaged, and none is missing that a mark shows or that the local vault confirmed
    /// (`confirmed_seq`, from `remote/LATEST`; 0 when unknown). Otherwise reading it would roll
    /// the vault back: an error ([`RemoteError::Damaged`] naming the damaged manifest, or
    /// [`RemoteError::Older`]), or with `allow_older` a warning to print.
    pub fn check_newest(
        &self,
        remote: &Remote,
        confirmed_seq: u64,
        allow_older: bool,
    ) -> Result<Option<String>> {
        let found = self.newest_seq();
        let expected = self.highest.max(confirmed_seq);
        if self.newest.is_none() && !self.damaged.is_empty() {
            let (key, detail) = &self.damaged[0];
            let all = self.damaged.len();
            return Err(remote.damaged(
                key,
                format!("{detail}; every remote manifest ({all}) is damaged, none can be read"),
            ));
        }
        if found >= expected {
            return Ok(None);
        }
        let older = if found == 0 {
            "there is no older one".to_owned()
        } else {
            format!("the newest that reads is manifest {found}")
        };
        if let Some((key, detail)) = self.damaged.first() {
            if !allow_older {
                return Err(remote.damaged(
                    key,
                    format!(
                        "{detail}; {older}, and reading it would roll the vault back \
                         (allow that with --allow-older)"
                    ),
                ));
            }
            return Ok(Some(format!(
                "{}/{key} is damaged ({detail}); reading the older remote manifest {found} \
                 instead: points after it are not offered",
                remote.url()
            )));
        }
        let source = if expected > self.highest {
            "the local vault confirmed it (remote/LATEST)"
        } else {
            "its mark is there"
        };
        let missing = remote::manifest_key(expected);
        if !allow_older {
            return Err(RemoteError::Older {
                url: remote.url().to_owned(),
                expected_seq: expected,
                found_seq: found,
                detail: format!(
                    "remote manifest {expected} ({missing}) is missing, though {source}; \
                     {older}, and reading it would roll the vault back (allow that with \
                     --allow-older)"
                ),
            });
        }
        Ok(Some(format!(
            "{}/{missing} is missing, though {source}; reading the older remote manifest \
             {found} instead: points after it are not offered",
            remote.url()
        )))
    }
}

/// Lists `manifests/` and reads the manifests from the newest down to the first that decodes.
pub fn scan_manifests(remote: &Remote, vault_id: &VaultId, seed: u32) -> Result<ManifestScan> {
    let mut seqs: Vec<u64> = remote
        .list(remote::MANIFESTS_DIR)?
        .iter()
        .filter_map(|(k, _)| remote::parse_manifest_key(k))
        .collect();
    seqs.sort_unstable();
    let marks = remote.list(remote::MARKS_DIR)?;
    let highest = (seqs.iter().copied())
        .chain(marks.iter().filter_map(|(k, _)| remote::parse_mark_key(k)))
        .max()
        .unwrap_or(0);
    let mut scan = ManifestScan {
        seqs,
        highest,
        ..ManifestScan::default()
    };
    for &seq in scan.seqs.iter().rev() {
        let key = remote::manifest_key(seq);
        // Deleted since the listing (a concurrent garbage collection): passed over.
        let Some(bytes) = remote.get(&key)? else {
            continue;
        };
        match RemoteManifest::decode(&bytes, seed) {
            Ok(m) if m.seq == seq && m.vault_id == *vault_id => {
                scan.newest = Some(m);
                break;
            }
            Ok(m) if m.vault_id != *vault_id => scan
                .damaged
                .push((key, "the manifest is another vault's".to_owned())),
            Ok(m) => scan
                .damaged
                .push((key, format!("the manifest says it is number {}", m.seq))),
            Err(e) => scan.damaged.push((key, e.to_string())),
        }
    }
    Ok(scan)
}

/// The newest remote manifest of the vault that decodes, with every manifest number listed (a
/// damaged one included, so no number is ever reused). See [`scan_manifests`], which also says
/// what is damaged or missing above it.
pub fn newest_manifest(
    remote: &Remote,
    vault_id: &VaultId,
    seed: u32,
) -> Result<(Option<RemoteManifest>, Vec<u64>)> {
    let scan = scan_manifests(remote, vault_id, seed)?;
    Ok((scan.newest, scan.seqs))
}

/// What the vault's manifest needs: the manifest's bytes, and each file with its length
/// (a sealed segment's from the manifest, a base's or checkpoint's local one; `u64::MAX` for a
/// base that is not local), and the open segment's prefix when it holds the newest point.
struct Wanted {
    manifest: Vec<u8>,
    files: Vec<(FileId, u64)>,
    /// The longest window of the vault's retention policy, in seconds (0: none set).
    retention_s: u64,
}

fn wanted(
    storage: Arc<dyn Storage>,
    dir: &Path,
    url: &str,
) -> Result<(Wanted, Option<replog_reader::Lease>)> {
    let (vault, lease) = open_snapshot(storage.clone(), dir, url)?;
    let m = vault.manifest();
    let (mut files, last_sealed) = sealed_segments(m);
    for d in &m.disks {
        let id = FileId {
            kind: FileKind::Base,
            a: u64::from(d.disk_id),
            b: d.base_generation,
        };
        let len = local_len(storage.as_ref(), &dir.join(file_path(&id))).ok();
        files.push((id, len.unwrap_or(u64::MAX)));
    }
    files.extend(checkpoints(storage.as_ref(), dir, m.base_lsn, last_sealed));
    files.extend(open_prefix(storage.as_ref(), dir, &vault)?);
    files.sort_by_key(|(id, _)| *id);
    Ok((
        Wanted {
            manifest: m.encode(),
            files,
            retention_s: lock::retention_window_s(m),
        },
        lease,
    ))
}

/// A snapshot of the vault, under a lease on its newest point (none while it has no point): a
/// lease keeps compaction from deleting what the snapshot names while it is uploaded.
fn open_snapshot(
    storage: Arc<dyn Storage>,
    dir: &Path,
    url: &str,
) -> Result<(Vault, Option<replog_reader::Lease>)> {
    let lease_opts = LeaseOptions {
        purpose: "sync".into(),
        persistent: false,
        detail: url.chars().take(4096).collect(),
    };
    match Vault::open_leased(storage.clone(), dir, &lease_opts, |v| {
        v.latest_point()
            .cloned()
            .ok_or_else(|| Refusal::NoPoint.because("the vault has no recovery point yet"))
    }) {
        Ok(leased) => Ok((leased.vault, Some(leased.lease))),
        Err(RemoteError::Refused {
            kind: Refusal::NoPoint,
            ..
        }) => Ok((Vault::open(storage, dir)?, None)),
        Err(e) => Err(e),
    }
}

/// The manifest's sealed segments with their lengths, and the last LSN they hold (0: none).
fn sealed_segments(m: &Manifest) -> (Vec<(FileId, u64)>, u64) {
    let mut files = Vec::new();
    let mut last_sealed = 0;
    for s in &m.segments {
        if let Some(info) = s.sealed {
            let id = FileId {
                kind: FileKind::Segment,
                a: s.segment_id,
                b: 0,
            };
            files.push((id, info.file_bytes));
            last_sealed = info.last_lsn;
        }
    }
    (files, last_sealed)
}

/// The local checkpoint indexes from `base_lsn` to `last_sealed`, with their lengths.
fn checkpoints(
    storage: &dyn Storage,
    dir: &Path,
    base_lsn: u64,
    last_sealed: u64,
) -> Vec<(FileId, u64)> {
    let index = dir.join(layout::INDEX_DIR);
    let Ok(names) = storage.read_dir(&index) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for name in names {
        let Some(lsn) = layout::parse_checkpoint_file_name(&name) else {
            continue;
        };
        if lsn >= base_lsn
            && lsn <= last_sealed
            && let Ok(len) = local_len(storage, &index.join(&name))
        {
            let id = FileId {
                kind: FileKind::Checkpoint,
                a: lsn,
                b: 0,
            };
            files.push((id, len));
        }
    }
    files
}

/// The length of the file at `path` if it is local; `NotFound` if it is not (evicted), even
/// where `storage` would serve it from the remote.
fn local_len(storage: &dyn Storage, path: &Path) -> io::Result<u64> {
    match storage.entry_kind(path)? {
        Some(_) => storage.open(path, OpenMode::Read)?.len(),
        None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
    }
}

/// Whether the file at `path` is local.
fn is_local(storage: &dyn Storage, path: &Path) -> bool {
    storage.entry_kind(path).is_ok_and(|k| k.is_some())
}

/// Shared by the uploads of one run.
struct Uploader<'a> {
    remote: &'a Remote,
    /// Reads the local files.
    storage: &'a dyn Storage,
    seed: u32,
    vault_id: VaultId,
    concurrency: usize,
    /// Chunks known to be on the remote: listed at the start, or confirmed by this run.
    present: Mutex<HashSet<[u8; 32]>>,
    /// Chunks confirmed (written or read back) by this run.
    confirmed: Mutex<HashSet<[u8; 32]>>,
    done_bytes: AtomicU64,
    chunks_written: AtomicU64,
    bytes_written: AtomicU64,
    chunks_present: AtomicU64,
    zero_chunks: AtomicU64,
}

impl Uploader<'_> {
    /// Writes `bytes` under `key` unless an identical object is there, then reads it back and
    /// compares. `present` says the listing saw the key.
    async fn ensure(
        &self,
        key: &str,
        bytes: Bytes,
        hash: &[u8; 32],
        present: bool,
    ) -> Result<bool> {
        if !present {
            match self.remote.put_create_async(key, bytes.clone()).await? {
                Put::Created => {}
                Put::Existed => return self.confirm_existing(key, bytes, hash).await,
            }
            let back = self.remote.get_required_async(key).await?;
            check_chunk(self.remote, key, &back, hash, bytes.len() as u64)?;
            return Ok(true);
        }
        self.confirm_existing(key, bytes, hash).await
    }

    /// An object that was there already: read back and compared. Returns whether it had to be
    /// written (it was damaged, and is replaced: its key names these bytes).
    async fn confirm_existing(&self, key: &str, bytes: Bytes, hash: &[u8; 32]) -> Result<bool> {
        let back = self.remote.get_async(key).await?;
        if let Some(back) = back
            && check_chunk(self.remote, key, &back, hash, bytes.len() as u64).is_ok()
        {
            // Named again: on an immutable remote, locked as if uploaded now.
            if let Some(locked) = self.remote.locked() {
                lock::renew_one(self.remote, locked, key).await?;
            }
            return Ok(false);
        }
        self.remote.delete_async(key).await?;
        self.remote.put_create_async(key, bytes.clone()).await?;
        let back = self.remote.get_required_async(key).await?;
        check_chunk(self.remote, key, &back, hash, bytes.len() as u64)?;
        Ok(true)
    }

    async fn chunk(
        &self,
        file: &dyn File,
        path: &Path,
        k: u64,
        file_bytes: u64,
    ) -> Result<[u8; 32]> {
        let start = k * REMOTE_CHUNK_BYTES;
        let len = REMOTE_CHUNK_BYTES.min(file_bytes - start) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, start)
            .map_err(|e| RemoteError::local(path, "read for upload", e))?;
        self.done_bytes.fetch_add(len as u64, Ordering::Relaxed);
        if buf.iter().all(|&b| b == 0) {
            self.zero_chunks.fetch_add(1, Ordering::Relaxed);
            return Ok(ZERO_CHUNK);
        }
        let hash = *blake3::hash(&buf).as_bytes();
        if self.confirmed.lock().expect("lock").contains(&hash) {
            self.chunks_present.fetch_add(1, Ordering::Relaxed);
            return Ok(hash);
        }
        let present = self.present.lock().expect("lock").contains(&hash);
        let written = self
            .ensure(&remote::chunk_key(&hash), Bytes::from(buf), &hash, present)
            .await?;
        if written {
            self.chunks_written.fetch_add(1, Ordering::Relaxed);
            self.bytes_written.fetch_add(len as u64, Ordering::Relaxed);
        } else {
            self.chunks_present.fetch_add(1, Ordering::Relaxed);
        }
        self.present.lock().expect("lock").insert(hash);
        self.confirmed.lock().expect("lock").insert(hash);
        Ok(hash)
    }

    /// Cuts one local file into chunks, uploads them and its map.
    async fn file(
        &self,
        dir: &Path,
        id: FileId,
        file_bytes: u64,
        maps: &HashSet<[u8; 32]>,
    ) -> Result<RemoteFile> {
        let path = dir.join(file_path(&id));
        let file = (self.storage)
            .open(&path, OpenMode::Read)
            .map_err(|e| RemoteError::local(&path, "open for upload", e))?;
        let chunks: Vec<[u8; 32]> = stream::iter(0..remote::chunk_count(file_bytes))
            .map(|k| self.chunk(file.as_ref(), &path, k, file_bytes))
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        let map = FileMap {
            vault_id: self.vault_id,
            id,
            file_bytes,
            chunks,
        };
        let bytes = Bytes::from(map.encode(self.seed));
        let hash = *blake3::hash(&bytes).as_bytes();
        self.ensure(&remote::map_key(&hash), bytes, &hash, maps.contains(&hash))
            .await?;
        Ok(RemoteFile {
            id,
            file_bytes,
            map: hash,
        })
    }
}

/// Syncs the vault in `dir` to its remote; see the module documentation. `storage` reads the
/// local vault (a tiered one, so a file evicted earlier is found remote), and every local file
/// of the sync (`remote/`, the leases, eviction) goes through it.
pub fn sync(
    storage: Arc<dyn Storage>,
    dir: &Path,
    remote: &Remote,
    opts: &SyncOptions,
    progress: Progress<'_>,
) -> Result<SyncReport> {
    let local = LocalVault::open_in(storage.clone(), dir)?;
    let _lock = local.lock_sync()?;
    let config = local.required_config()?;
    let started = jiff::Timestamp::now();
    // An immutable remote locks every upload, from the claim on.
    let locked = match local.immutability()? {
        Some(s) => Some(remote.lock_uploads(s.mode, s.period_s)?),
        None => None,
    };
    claim(&local, remote)?;
    let latest = local.latest()?;
    check_remote_holds_latest(remote, &local, latest.as_ref(), opts.scrub)?;
    let (wanted, lease) = wanted(storage.clone(), dir, remote.url())?;
    if let Some(l) = locked {
        // Locked at least as long as the retention policy keeps the points they hold.
        l.at_least(wanted.retention_s);
    }
    let (mut files, to_upload) = plan_uploads(&local, &wanted, latest.as_ref(), opts.scrub)?;
    let listed = Listed::list(remote)?;
    if opts.scrub {
        check_evicted_still_remote(remote, &local, &files, &listed.maps, &listed.chunks)?;
    }
    let up = Uploader::new(remote, &local, opts, &listed.chunks);
    files.extend(up.files(dir, &to_upload, &listed.maps, progress)?);
    files.sort_by_key(|f| f.id);

    // Publish, or adopt what an earlier run published.
    let (manifest, published) = publish(remote, &local, latest.as_ref(), wanted.manifest, files)?;
    local.write_latest(&manifest)?;
    drop(lease);
    if let Some(l) = locked {
        // Everything the manifest needs stays locked, however old its upload.
        lock::keep_horizon(remote, l, &local, started, || {
            needed_keys(remote, &local, &manifest)
        })?;
    }

    let mut report = up.report(&manifest, published, to_upload.len());
    report.newest_point = newest_point(storage.as_ref(), dir, &manifest, local.seed)?;
    (
        report.evicted_files,
        report.evicted_bytes,
        report.local_bytes,
    ) = evict(&local, &manifest, config.cache_limit_bytes)?;
    let (deleted, kept_locked) = collect_garbage(
        remote,
        &local,
        config.keep_manifests as usize,
        &listed.chunks,
        &listed.maps,
    )?;
    report.deleted_objects = deleted;
    report.lock = locked.map(|l| LockReport {
        mode: l.mode(),
        period_s: l.period_s(),
        kept: kept_locked,
    });
    Ok(report)
}

/// What the last confirmed remote manifest already holds, and what to read and upload (with
/// the lengths to upload).
type Plan = (Vec<RemoteFile>, Vec<(FileId, u64)>);

/// Splits what the vault's manifest needs into the files the last confirmed remote manifest
/// already holds (taken as they are) and those to read and upload, with their lengths.
fn plan_uploads(
    local: &LocalVault,
    wanted: &Wanted,
    latest: Option<&RemoteManifest>,
    scrub: bool,
) -> Result<Plan> {
    let mut files = Vec::with_capacity(wanted.files.len());
    let mut to_upload = Vec::new();
    for &(id, len) in &wanted.files {
        let known = latest.and_then(|l| l.file(&id));
        let path = local.dir.join(file_path(&id));
        let local_len = local_len(local.storage().as_ref(), &path);
        match (known, local_len) {
            // A sealed file's id names its bytes: confirmed once, it never changes (a scrub
            // confirms it again when it is local).
            (Some(f), local_len)
                if (id.kind != FileKind::Segment || f.file_bytes == len)
                    && !(scrub && local_len.is_ok()) =>
            {
                files.push(*f)
            }
            (_, Ok(local_len)) => {
                let file_bytes = if id.kind == FileKind::Segment {
                    len
                } else {
                    local_len
                };
                to_upload.push((id, file_bytes));
            }
            (_, Err(e)) => return Err(RemoteError::local(path, "read for upload", e)),
        }
    }
    Ok((files, to_upload))
}

/// The chunks and file maps the remote held when the run started.
struct Listed {
    chunks: HashSet<[u8; 32]>,
    maps: HashSet<[u8; 32]>,
}

impl Listed {
    fn list(remote: &Remote) -> Result<Listed> {
        let chunks = remote
            .list(remote::CHUNKS_DIR)?
            .iter()
            .filter_map(|(k, _)| remote::parse_chunk_key(k))
            .collect();
        let maps = remote
            .list(remote::MAPS_DIR)?
            .iter()
            .filter_map(|(k, _)| remote::parse_map_key(k))
            .collect();
        Ok(Listed { chunks, maps })
    }
}

impl<'a> Uploader<'a> {
    fn new(
        remote: &'a Remote,
        local: &'a LocalVault,
        opts: &SyncOptions,
        listed_chunks: &HashSet<[u8; 32]>,
    ) -> Uploader<'a> {
        Uploader {
            remote,
            storage: local.storage().as_ref(),
            seed: local.seed,
            vault_id: local.vault_id,
            concurrency: opts.concurrency.max(1),
            present: Mutex::new(listed_chunks.clone()),
            confirmed: Mutex::new(HashSet::new()),
            done_bytes: AtomicU64::new(0),
            chunks_written: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            chunks_present: AtomicU64::new(0),
            zero_chunks: AtomicU64::new(0),
        }
    }

    /// Uploads each of `to_upload` in turn, telling `progress` about every 200 ms.
    fn files(
        &self,
        dir: &Path,
        to_upload: &[(FileId, u64)],
        listed_maps: &HashSet<[u8; 32]>,
        progress: Progress<'_>,
    ) -> Result<Vec<RemoteFile>> {
        let total: u64 = to_upload.iter().map(|(_, n)| n).sum();
        progress(0, total);
        let mut files = Vec::with_capacity(to_upload.len());
        for &(id, file_bytes) in to_upload {
            let f = self.remote.block_on(async {
                let upload = self.file(dir, id, file_bytes, listed_maps);
                tokio::pin!(upload);
                loop {
                    tokio::select! {
                        r = &mut upload => break r,
                        () = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                            progress(self.done_bytes.load(Ordering::Relaxed), total);
                        }
                    }
                }
            })?;
            files.push(f);
            progress(self.done_bytes.load(Ordering::Relaxed), total);
        }
        Ok(files)
    }

    /// The report of a run that uploaded `files_uploaded` files and published or adopted
    /// `manifest`, before eviction and garbage collection.
    fn report(
        &self,
        manifest: &RemoteManifest,
        published: bool,
        files_uploaded: usize,
    ) -> SyncReport {
        SyncReport {
            manifest_seq: manifest.seq,
            published,
            files: manifest.files.len(),
            files_uploaded,
            chunks_written: self.chunks_written.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            chunks_present: self.chunks_present.load(Ordering::Relaxed),
            zero_chunks: self.zero_chunks.load(Ordering::Relaxed),
            ..SyncReport::default()
        }
    }
}

/// Publishes a remote manifest of `embedded` and `files`, numbered above every number the
/// remote and `remote/LATEST` show, or adopts the newest one when it says the same. Returns it
/// and whether this run wrote it. Its mark is written once it is confirmed.
fn publish(
    remote: &Remote,
    local: &LocalVault,
    latest: Option<&RemoteManifest>,
    embedded: Vec<u8>,
    files: Vec<RemoteFile>,
) -> Result<(RemoteManifest, bool)> {
    let scan = scan_manifests(remote, &local.vault_id, local.seed)?;
    if let Some(n) = &scan.newest
        && n.seq == scan.highest
        && n.manifest == embedded
        && n.files == files
    {
        remote.put_create(&remote::mark_key(n.seq), Bytes::new())?;
        return Ok((n.clone(), false));
    }
    let seq = scan.highest.max(latest.map_or(0, |l| l.seq)) + 1;
    let m = RemoteManifest {
        vault_id: local.vault_id,
        seq,
        time_unix_ns: now_ns(),
        manifest: embedded,
        files,
    };
    let key = remote::manifest_key(seq);
    let bytes = Bytes::from(m.encode(local.seed));
    let put = remote.put_create(&key, bytes.clone())?;
    let back = remote.get(&key)?;
    if back.as_ref() != Some(&bytes) {
        // A retried write finds its own first attempt there, byte for byte (the time makes
        // every manifest unique); anything else is another writer's.
        if put == Put::Existed {
            return Err(Refusal::SyncRunning.because(format!(
                "{}/{key} appeared while this sync ran: another sync of the vault is \
                 writing to the remote",
                remote.url()
            )));
        }
        return Err(remote.damaged(&key, "the manifest read back differs from what was written"));
    }
    remote.put_create(&remote::mark_key(seq), Bytes::new())?;
    Ok((m, true))
}

/// Refuses to sync when the remote no longer holds the manifest `remote/LATEST` says this
/// vault confirmed (the store lost data, or someone deleted or damaged it): publishing on top
/// would name objects the store may have lost, and evicting more would lose their last copy.
/// A scrub goes on: it uploads again every file that is still local, and checks that the
/// others are still whole on the remote.
fn check_remote_holds_latest(
    remote: &Remote,
    local: &LocalVault,
    latest: Option<&RemoteManifest>,
    scrub: bool,
) -> Result<()> {
    let Some(latest) = latest else {
        return Ok(());
    };
    let scan = scan_manifests(remote, &local.vault_id, local.seed)?;
    let e = match scan.check_newest(remote, latest.seq, false) {
        Ok(_) => return Ok(()),
        Err(_) if scrub => return Ok(()),
        Err(e) => e,
    };
    let evicted: Vec<String> = latest
        .files
        .iter()
        .map(|f| file_path(&f.id))
        .filter(|p| !is_local(local.storage().as_ref(), &local.dir.join(p)))
        .map(|p| p.display().to_string())
        .collect();
    let lost = if evicted.is_empty() {
        "every file it names is still local".to_owned()
    } else {
        format!(
            "{} files it names were evicted and may be lost with it ({}{})",
            evicted.len(),
            evicted[..evicted.len().min(3)].join(", "),
            if evicted.len() > 3 { ", ..." } else { "" }
        )
    };
    let advice = format!(
        "{lost}. Nothing was published or evicted: run `replog sync --scrub {}` to upload \
         again every file that is still local",
        local.dir.display()
    );
    Err(match e {
        RemoteError::Older {
            url,
            expected_seq,
            found_seq,
            ..
        } => RemoteError::Older {
            detail: format!(
                "remote manifest {expected_seq}, which this vault confirmed last \
                 (remote/LATEST), is not there (the newest there is {}): the store lost \
                 data; {advice}",
                if found_seq == 0 {
                    "none".to_owned()
                } else {
                    found_seq.to_string()
                }
            ),
            url,
            expected_seq,
            found_seq,
        },
        RemoteError::Damaged { url, key, detail } => RemoteError::Damaged {
            url,
            key,
            detail: format!("{detail}; {advice}"),
        },
        e => e,
    })
}

/// Under a scrub: the files the new manifest takes from the last confirmed one without reading
/// them (they are not local) must still be whole on the remote: their maps there, and every
/// chunk the maps name. Otherwise the manifest would name what the store lost.
fn check_evicted_still_remote(
    remote: &Remote,
    local: &LocalVault,
    kept: &[RemoteFile],
    listed_maps: &HashSet<[u8; 32]>,
    listed_chunks: &HashSet<[u8; 32]>,
) -> Result<()> {
    let mut lost = Vec::new();
    for f in kept {
        if is_local(local.storage().as_ref(), &local.dir.join(file_path(&f.id))) {
            continue;
        }
        let whole = listed_maps.contains(&f.map)
            && remote
                .block_on(fetch_map_async(remote, f.map, local.seed))
                .is_ok_and(|m| {
                    m.chunks
                        .iter()
                        .all(|c| *c == ZERO_CHUNK || listed_chunks.contains(c))
                });
        if !whole {
            lost.push(file_path(&f.id).display().to_string());
        }
    }
    if lost.is_empty() {
        return Ok(());
    }
    Err(RemoteError::Older {
        url: remote.url().to_owned(),
        expected_seq: 0,
        found_seq: 0,
        detail: format!(
            "{} files were evicted from {} and are no longer whole on the remote, so no sync \
             can upload them again: {}. Their data is lost; points that need them cannot be \
             served",
            lost.len(),
            local.dir.display(),
            lost.join(", ")
        ),
    })
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// Removes local sealed segments, then base images, oldest first, that `manifest` (confirmed)
/// names (never the open segment, whose prefix it may name), until the rest fit in `limit` bytes (0: no limit). Returns (files, bytes) evicted and
/// the bytes left.
fn evict(local: &LocalVault, manifest: &RemoteManifest, limit: u64) -> Result<(usize, u64, u64)> {
    let storage = local.storage().as_ref();
    let open = prefix_segment(manifest);
    let mut candidates = Vec::new();
    for f in &manifest.files {
        // The open segment is the writer's: the remote holds a prefix of it only.
        if f.id.kind == FileKind::Checkpoint
            || (f.id.kind == FileKind::Segment && Some(f.id.a) == open)
        {
            continue;
        }
        let path = local.dir.join(file_path(&f.id));
        match local_len(storage, &path) {
            Ok(len) => candidates.push((f.id.kind != FileKind::Segment, f.id, path, len)),
            // Evicted already.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Not knowing what the cache holds, evicting could overshoot; the error says why.
            Err(e) => return Err(RemoteError::local(&path, "look at for eviction", e)),
        }
    }
    let mut held: u64 = candidates.iter().map(|c| c.3).sum();
    if limit == 0 || held <= limit {
        return Ok((0, 0, held));
    }
    // Segments before bases, each oldest first.
    candidates.sort_by_key(|c| (c.0, c.1));
    let (mut files, mut bytes) = (0, 0);
    let mut dirs = HashSet::new();
    for (_, _, path, len) in candidates {
        if held <= limit {
            break;
        }
        storage
            .remove_file(&path)
            .map_err(|e| RemoteError::local(&path, "evict", e))?;
        dirs.insert(path.parent().expect("a file in a directory").to_path_buf());
        held -= len;
        files += 1;
        bytes += len;
    }
    for d in dirs {
        sync_dir(storage, &d)?;
    }
    Ok((files, bytes, held))
}

/// Deletes remote manifests beyond the newest `keep`, then maps and chunks (of those listed
/// at the start) that no kept manifest needs. On an immutable remote an object still locked is
/// not deleted: a locked manifest stays with everything it names (so no manifest on the remote
/// ever names a deleted object), and each object kept is counted in the [`KeptLocked`]
/// returned. Returns how many objects it deleted.
fn collect_garbage(
    remote: &Remote,
    local: &LocalVault,
    keep: usize,
    listed_chunks: &HashSet<[u8; 32]>,
    listed_maps: &HashSet<[u8; 32]>,
) -> Result<(u64, KeptLocked)> {
    let (mut kept, mut doomed) = manifests_to_keep(remote, local, keep)?;
    let mut kept_locked = KeptLocked::default();
    if kept.is_empty() {
        return Ok((0, kept_locked));
    }
    // Manifests past this one are kept only because they are locked.
    let kept_unlocked = kept.len();
    if let Some(locked) = remote.locked() {
        let held;
        (doomed, held) = lock::split_locked(remote, locked, doomed, &mut kept_locked)?;
        for key in held {
            if let Some(Ok(m)) = remote
                .get(&key)?
                .map(|b| RemoteManifest::decode(&b, local.seed))
                && m.vault_id == local.vault_id
            {
                kept.push(m);
            }
        }
    }
    // Marks of manifests older than every kept one say nothing the kept ones do not.
    let oldest_kept = kept.iter().map(|m| m.seq).min().unwrap_or(0);
    let old_marks: Vec<String> = remote
        .list(remote::MARKS_DIR)?
        .iter()
        .filter_map(|(k, _)| remote::parse_mark_key(k))
        .filter(|&seq| seq < oldest_kept)
        .map(remote::mark_key)
        .collect();
    let (live_maps, live_chunks) = live_objects(remote, local, &kept)?;
    if kept.len() > kept_unlocked {
        // What only the locked manifests need is kept because of their locks: counted so.
        let (maps, chunks) = live_objects(remote, local, &kept[..kept_unlocked])?;
        let extra = live_maps
            .difference(&maps)
            .filter(|h| listed_maps.contains(*h))
            .count()
            + (live_chunks.difference(&chunks))
                .filter(|h| listed_chunks.contains(*h))
                .count();
        kept_locked.objects += extra as u64;
    }
    doomed.extend(listed_maps.difference(&live_maps).map(remote::map_key));
    doomed.extend(
        listed_chunks
            .difference(&live_chunks)
            .map(remote::chunk_key),
    );
    doomed.extend(old_marks);
    if let Some(locked) = remote.locked() {
        let n = lock::delete_unless_locked(remote, locked, doomed, &mut kept_locked)?;
        return Ok((n, kept_locked));
    }
    let n = doomed.len() as u64;
    // In order: manifests first, so no manifest ever names a deleted object.
    for key in doomed {
        remote.block_on(remote.delete_async(&key))?;
    }
    Ok((n, kept_locked))
}

/// Every object `manifest` needs: `VAULT`, the manifest and its mark, its file maps and their
/// chunks.
fn needed_keys(
    remote: &Remote,
    local: &LocalVault,
    manifest: &RemoteManifest,
) -> Result<Vec<String>> {
    let (maps, chunks) = live_objects(remote, local, std::slice::from_ref(manifest))?;
    let mut keys = vec![
        remote::VAULT_KEY.to_owned(),
        remote::manifest_key(manifest.seq),
        remote::mark_key(manifest.seq),
    ];
    keys.extend(maps.iter().map(remote::map_key));
    keys.extend(
        chunks
            .iter()
            .filter(|c| **c != ZERO_CHUNK)
            .map(remote::chunk_key),
    );
    Ok(keys)
}

/// Hashes of file maps, or of chunks.
type Hashes = HashSet<[u8; 32]>;

/// The file maps `manifests` name, and the chunks those maps name.
fn live_objects(
    remote: &Remote,
    local: &LocalVault,
    manifests: &[RemoteManifest],
) -> Result<(Hashes, Hashes)> {
    let live_maps: HashSet<[u8; 32]> = manifests
        .iter()
        .flat_map(|m| m.files.iter().map(|f| f.map))
        .collect();
    let maps: Vec<FileMap> = remote.block_on(
        stream::iter(live_maps.iter().copied())
            .map(|h| async move { fetch_map_async(remote, h, local.seed).await })
            .buffer_unordered(16)
            .try_collect(),
    )?;
    let live_chunks = maps.iter().flat_map(|m| m.chunks.iter().copied()).collect();
    Ok((live_maps, live_chunks))
}

/// The newest `keep` remote manifests of the vault that decode, and the keys of every other
/// manifest (older ones, and damaged or foreign ones among the newest), newest first.
fn manifests_to_keep(
    remote: &Remote,
    local: &LocalVault,
    keep: usize,
) -> Result<(Vec<RemoteManifest>, Vec<String>)> {
    let mut seqs: Vec<u64> = remote
        .list(remote::MANIFESTS_DIR)?
        .iter()
        .filter_map(|(k, _)| remote::parse_manifest_key(k))
        .collect();
    seqs.sort_unstable_by(|a, b| b.cmp(a));
    let mut kept = Vec::new();
    let mut doomed = Vec::new();
    for seq in seqs {
        if kept.len() >= keep.max(1) {
            doomed.push(remote::manifest_key(seq));
            continue;
        }
        let key = remote::manifest_key(seq);
        match remote
            .get(&key)?
            .map(|b| RemoteManifest::decode(&b, local.seed))
        {
            Some(Ok(m)) if m.seq == seq && m.vault_id == local.vault_id => kept.push(m),
            _ => doomed.push(key),
        }
    }
    Ok((kept, doomed))
}

async fn fetch_map_async(remote: &Remote, hash: [u8; 32], seed: u32) -> Result<FileMap> {
    let key = remote::map_key(&hash);
    let bytes = remote.get_async(&key).await?.ok_or_else(|| {
        remote.damaged(
            &key,
            "a kept remote manifest names this file map, which is missing",
        )
    })?;
    if blake3::hash(&bytes).as_bytes() != &hash {
        return Err(remote.damaged(&key, "the file map's bytes do not hash to its key"));
    }
    FileMap::decode(&bytes, seed).map_err(|e| remote.damaged(&key, e.to_string()))
}
