//! Reading a vault's files from a remote: the storage seam (`replog_io::Storage`) over a remote
//! manifest, so the reader, unchanged, reads a vault that is partly or wholly in object storage.
//!
//! [`TieredStorage`] has two modes. Over a local vault whose files were evicted, it serves each
//! file from the local disk when it is there and from the remote when the vault's last confirmed
//! remote manifest (`remote/LATEST`) names it. Over a remote alone (no local vault), it also
//! serves `VAULT` (the remote's copy), `MANIFEST` (the one embedded in the remote manifest) and
//! the open segment (the prefix the remote manifest names, up to the end of the newest point's
//! marker; a header and no record when it names none), and it is read-only. Paths outside the
//! vault go to the local backend either way, so images are written locally.
//!
//! A remote file is read a chunk at a time: the chunk's object is fetched whole, its BLAKE3
//! checked against its key and its length against the map, and then kept in a cache of a fixed
//! number of chunks shared by every file. Memory: `cache_chunks` x 4 MiB, plus the file maps
//! (32 bytes per 4 MiB of file).
//!
//! Journal segments are the exception for small reads. A failover reads a segment's records in
//! the order of the disk, not of the journal, so whole-chunk reads of a journal whose changes
//! are spread over the disk fetch each chunk once per disk range that needs a record of it. A
//! read of less than half of a segment's chunk, when the chunk is not cached and is larger than
//! [`RANGED_CHUNK_BYTES_MIN`], is therefore a ranged GET of just those bytes of the chunk's
//! object. (A smaller chunk, the last of a segment or any of a vault with small segments, is
//! fetched whole and cached: a request costs more than such a transfer, and every later read
//! of the chunk, for this point or another, is served from memory.) The chunk's BLAKE3 cannot
//! be checked on part of it; what is read is a record, a footer or a header, each of which the
//! reader checks against its own CRC before it uses a byte of it (FORMAT.md), so damage is
//! still found, and named by the segment and offset it is at. The open segment's prefix is not
//! such an exception: a reader scans an open segment to the first record that fails, and would
//! take damage there for a torn tail and quietly offer fewer points. Its chunks are always read
//! whole and checked against their keys, so damage is an error naming the object.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::local::LocalVault;

use bytes::Bytes;
use replog_format::layout;
use replog_format::remote::{
    self, FileId, FileKind, FileMap, REMOTE_CHUNK_BYTES, RemoteManifest, ZERO_CHUNK,
};
use replog_format::segment::SegmentHeader;
use replog_io::{BackendKind, File, Mapped, OpenMode, Storage, WriteAt};

use crate::error::{Refusal, RemoteError, Result};
use crate::prefix::prefix_segment;
use crate::store::{Remote, RemoteOptions};

/// Chunks cached by default: 32 x 4 MiB.
pub const CACHE_CHUNKS_DEFAULT: usize = 32;

/// Segment chunks larger than this are read by ranged GETs when a read needs less than half
/// of one; smaller ones are always fetched whole (see the module documentation).
pub const RANGED_CHUNK_BYTES_MIN: u64 = 1 << 20;

/// How to reach the remote: connected already, or on first need (a local vault whose evicted
/// files may never be read).
enum Connection {
    Ready(Arc<Remote>),
    Lazy {
        url: String,
        opts: RemoteOptions,
        remote: Option<Arc<Remote>>,
    },
}

/// The files of one remote manifest and the chunks read from them lately.
pub struct RemoteFiles {
    connection: Mutex<Connection>,
    seed: u32,
    manifest: RemoteManifest,
    maps: Mutex<HashMap<FileId, Arc<FileMap>>>,
    cache: Mutex<ChunkCache>,
    /// The segment whose prefix the manifest names ([`prefix_segment`]).
    prefix_segment: Option<u64>,
}

impl std::fmt::Debug for RemoteFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RemoteFiles(manifest {}, {} files)",
            self.manifest.seq,
            self.manifest.files.len()
        )
    }
}

struct ChunkCache {
    capacity: usize,
    chunks: HashMap<[u8; 32], Bytes>,
    order: VecDeque<[u8; 32]>,
}

impl ChunkCache {
    fn get(&mut self, hash: &[u8; 32]) -> Option<Bytes> {
        let got = self.chunks.get(hash).cloned()?;
        if let Some(i) = self.order.iter().position(|h| h == hash) {
            self.order.remove(i);
        }
        self.order.push_back(*hash);
        Some(got)
    }

    fn insert(&mut self, hash: [u8; 32], bytes: Bytes) {
        if self.capacity == 0 || self.chunks.contains_key(&hash) {
            return;
        }
        while self.chunks.len() >= self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.chunks.remove(&old);
        }
        self.chunks.insert(hash, bytes);
        self.order.push_back(hash);
    }
}

/// The vault-relative path of a file a remote manifest can name.
pub fn file_path(id: &FileId) -> PathBuf {
    match id.kind {
        FileKind::Segment => Path::new(layout::JOURNAL_DIR).join(layout::segment_file_name(id.a)),
        FileKind::Checkpoint => layout::checkpoint_path(Path::new(""), id.a),
        FileKind::Base => layout::base_path(Path::new(""), id.a as u32, id.b),
    }
}

/// The file a vault-relative path names, if a remote manifest can name it.
pub fn file_id(rel: &Path) -> Option<FileId> {
    let mut parts = rel.iter().map(|p| p.to_str());
    let (dir, name) = (parts.next()??, parts.next()??);
    if parts.next().is_some() {
        return None;
    }
    let id = |kind, a, b| Some(FileId { kind, a, b });
    match dir {
        layout::JOURNAL_DIR => id(FileKind::Segment, layout::parse_segment_file_name(name)?, 0),
        layout::INDEX_DIR => id(
            FileKind::Checkpoint,
            layout::parse_checkpoint_file_name(name)?,
            0,
        ),
        layout::BASES_DIR => {
            let (disk, rest) = name.strip_suffix(".base")?.split_once('.')?;
            let (disk, generation) = (disk.parse::<u32>().ok()?, rest.parse::<u64>().ok()?);
            // Only the canonical spelling: no leading zeros or signs.
            (layout::base_path(Path::new(""), disk, generation) == rel)
                .then_some(())
                .and(id(FileKind::Base, u64::from(disk), generation))
        }
        _ => None,
    }
}

impl RemoteFiles {
    /// The files of `manifest`, read through `remote`.
    pub fn new(
        remote: Arc<Remote>,
        manifest: RemoteManifest,
        seed: u32,
        cache_chunks: usize,
    ) -> Self {
        Self::with_connection(Connection::Ready(remote), manifest, seed, cache_chunks)
    }

    /// The files of `manifest`, read through a remote connected on first need.
    pub fn lazy(
        url: String,
        opts: RemoteOptions,
        manifest: RemoteManifest,
        seed: u32,
        cache_chunks: usize,
    ) -> Self {
        let connection = Connection::Lazy {
            url,
            opts,
            remote: None,
        };
        Self::with_connection(connection, manifest, seed, cache_chunks)
    }

    fn with_connection(
        connection: Connection,
        manifest: RemoteManifest,
        seed: u32,
        cache_chunks: usize,
    ) -> Self {
        RemoteFiles {
            connection: Mutex::new(connection),
            seed,
            prefix_segment: prefix_segment(&manifest),
            manifest,
            maps: Mutex::new(HashMap::new()),
            cache: Mutex::new(ChunkCache {
                capacity: cache_chunks,
                chunks: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// The remote manifest.
    pub fn manifest(&self) -> &RemoteManifest {
        &self.manifest
    }

    fn remote(&self) -> Result<Arc<Remote>> {
        let mut c = self.connection.lock().expect("connection lock");
        match &mut *c {
            Connection::Ready(r) => Ok(r.clone()),
            Connection::Lazy { url, opts, remote } => {
                if let Some(r) = remote {
                    return Ok(r.clone());
                }
                let r = Arc::new(Remote::open(url, opts)?);
                *remote = Some(r.clone());
                Ok(r)
            }
        }
    }

    /// The map of file `id`, fetched and checked on first use.
    pub fn map(&self, id: &FileId) -> Result<Arc<FileMap>> {
        if let Some(m) = self.maps.lock().expect("maps lock").get(id) {
            return Ok(m.clone());
        }
        let entry = self.manifest.file(id).ok_or_else(|| {
            Refusal::NotOnRemote.because(format!(
                "remote manifest {} does not name {}",
                self.manifest.seq,
                file_path(id).display()
            ))
        })?;
        let remote = self.remote()?;
        let map = fetch_map(&remote, &entry.map, self.seed)?;
        if map.id != *id
            || map.file_bytes != entry.file_bytes
            || map.vault_id != self.manifest.vault_id
        {
            return Err(remote.damaged(
                &remote::map_key(&entry.map),
                format!(
                    "the map describes {} ({} bytes), the manifest wants {} ({} bytes)",
                    file_path(&map.id).display(),
                    map.file_bytes,
                    file_path(id).display(),
                    entry.file_bytes
                ),
            ));
        }
        let map = Arc::new(map);
        self.maps
            .lock()
            .expect("maps lock")
            .insert(*id, map.clone());
        Ok(map)
    }

    /// Bytes `[at, at + len)` of chunk `k` of `map`, from the cache when the chunk is there and
    /// otherwise by a ranged read of its object, checked for length only: the caller verifies
    /// them (see the module documentation).
    fn chunk_part(&self, map: &FileMap, k: usize, at: usize, len: usize) -> Result<Bytes> {
        let hash = map.chunks[k];
        let (start, end) = map.chunk_range(k);
        if hash == ZERO_CHUNK {
            return Ok(self.chunk(map, k)?.slice(at..at + len));
        }
        if let Some(b) = self.cache.lock().expect("cache lock").get(&hash) {
            return Ok(b.slice(at..at + len));
        }
        let remote = self.remote()?;
        let key = remote::chunk_key(&hash);
        let bytes = match remote.get_range(&key, at as u64..(at + len) as u64) {
            Ok(bytes) => bytes,
            // A range the store cannot serve (the object is shorter than its map says, for
            // one): the whole chunk, read and checked against its key and length, says
            // whether that is damage.
            Err(RemoteError::Store { .. }) => return Ok(self.chunk(map, k)?.slice(at..at + len)),
            Err(e) => return Err(e),
        };
        if bytes.len() != len {
            return Err(remote.damaged(
                &key,
                format!(
                    "a read of bytes {at}..{} of the chunk returned {} bytes (chunk {k} of {}, \
                     bytes {start}..{end})",
                    at + len,
                    bytes.len(),
                    file_path(&map.id).display()
                ),
            ));
        }
        Ok(bytes)
    }

    /// Chunk `k` of `map`, verified.
    fn chunk(&self, map: &FileMap, k: usize) -> Result<Bytes> {
        let hash = map.chunks[k];
        let (start, end) = map.chunk_range(k);
        if hash == ZERO_CHUNK {
            static ZEROS: [u8; REMOTE_CHUNK_BYTES as usize] = [0; REMOTE_CHUNK_BYTES as usize];
            return Ok(Bytes::from_static(&ZEROS[..(end - start) as usize]));
        }
        if let Some(b) = self.cache.lock().expect("cache lock").get(&hash) {
            return Ok(b);
        }
        let remote = self.remote()?;
        let key = remote::chunk_key(&hash);
        let bytes = remote.block_on(remote.get_required_async(&key))?;
        check_chunk(&remote, &key, &bytes, &hash, end - start).map_err(|e| match e {
            RemoteError::Damaged { url, key, detail } => RemoteError::Damaged {
                url,
                key,
                detail: format!(
                    "{detail} (chunk {k} of {}, bytes {start}..{end})",
                    file_path(&map.id).display()
                ),
            },
            e => e,
        })?;
        self.cache
            .lock()
            .expect("cache lock")
            .insert(hash, bytes.clone());
        Ok(bytes)
    }
}

/// Fetches and decodes a file map, checking it against its key.
pub fn fetch_map(remote: &Remote, hash: &[u8; 32], seed: u32) -> Result<FileMap> {
    let key = remote::map_key(hash);
    let bytes = remote.get(&key)?.ok_or_else(|| {
        remote.damaged(
            &key,
            "the file map is missing: removed by remote retention, or never uploaded",
        )
    })?;
    if blake3::hash(&bytes).as_bytes() != hash {
        return Err(remote.damaged(&key, "the file map's bytes do not hash to its key"));
    }
    FileMap::decode(&bytes, seed).map_err(|e| remote.damaged(&key, e.to_string()))
}

/// Checks a chunk's bytes against its key and expected length.
pub fn check_chunk(
    remote: &Remote,
    key: &str,
    bytes: &[u8],
    hash: &[u8; 32],
    len: u64,
) -> Result<()> {
    if bytes.len() as u64 != len {
        return Err(remote.damaged(
            key,
            format!("the chunk is {} bytes, expected {len}", bytes.len()),
        ));
    }
    if blake3::hash(bytes).as_bytes() != hash {
        return Err(remote.damaged(key, "the chunk's bytes do not hash to its key"));
    }
    Ok(())
}

/// A file of a remote vault: read from the remote chunk by chunk, or held in memory (the
/// remote's `VAULT`, the embedded `MANIFEST`, the open segment's header). Read-only.
#[derive(Debug)]
enum VaultFile {
    Remote {
        files: Arc<RemoteFiles>,
        map: Arc<FileMap>,
        /// Small reads may be ranged GETs (a sealed segment; see the module documentation).
        ranged: bool,
    },
    Memory(Vec<u8>),
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::ReadOnlyFilesystem,
        "a file in object storage is read-only",
    )
}

impl File for VaultFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let (files, map, ranged) = match self {
            VaultFile::Memory(bytes) => {
                let rest = &bytes[offset.min(bytes.len() as u64) as usize..];
                let n = rest.len().min(buf.len());
                buf[..n].copy_from_slice(&rest[..n]);
                return Ok(n);
            }
            VaultFile::Remote { files, map, ranged } => (files, map, *ranged),
        };
        if offset >= map.file_bytes || buf.is_empty() {
            return Ok(0);
        }
        let k = (offset / REMOTE_CHUNK_BYTES) as usize;
        let (start, end) = map.chunk_range(k);
        let n = buf.len().min((end - offset) as usize);
        let at = (offset - start) as usize;
        if ranged && end - start > RANGED_CHUNK_BYTES_MIN && 2 * n < (end - start) as usize {
            let part = files
                .chunk_part(map, k, at, n)
                .map_err(RemoteError::into_io)?;
            buf[..n].copy_from_slice(&part);
            return Ok(n);
        }
        let chunk = files.chunk(map, k).map_err(RemoteError::into_io)?;
        buf[..n].copy_from_slice(&chunk[at..at + n]);
        Ok(n)
    }
    fn write_batch(&self, _: &[WriteAt<'_>], _: bool) -> io::Result<()> {
        Err(read_only())
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(match self {
            VaultFile::Remote { map, .. } => map.file_bytes,
            VaultFile::Memory(bytes) => bytes.len() as u64,
        })
    }
    fn set_len(&self, _: u64) -> io::Result<()> {
        Err(read_only())
    }
    fn allocate(&self, _: u64, _: u64) -> io::Result<()> {
        Err(read_only())
    }
    fn zero_range(&self, _: u64, _: u64) -> io::Result<()> {
        Err(read_only())
    }
    fn map(&self) -> io::Result<Mapped> {
        let mut all = vec![0u8; self.len()? as usize];
        self.read_exact_at(&mut all, 0)?;
        Ok(Mapped::Owned(all))
    }
}

/// A vault's files, local where they are and remote where they are not; see the module
/// documentation.
#[derive(Debug)]
pub struct TieredStorage {
    local: Arc<dyn Storage>,
    root: PathBuf,
    /// The remote manifest whose files are served; over a local vault, replaced when a newer
    /// `remote/LATEST` names a file that is not local.
    files: Mutex<Option<Arc<RemoteFiles>>>,
    /// Over a local vault: where to find a newer `remote/LATEST` and how to reach its remote.
    reload: Option<Reload>,
    /// `Some(VAULT bytes)` when there is no local vault: the remote alone.
    remote_only: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Reload {
    vault: LocalVault,
    url: String,
    opts: RemoteOptions,
    /// A remote already connected, used instead of connecting to `url` with `opts`.
    connected: Option<Arc<Remote>>,
}

impl TieredStorage {
    /// The local vault `vault`, whose evicted files are read from the remote at `url` as the
    /// vault's `remote/LATEST` names them (read again whenever a file is missing locally and the
    /// copy held does not name it: a sync may have evicted it since).
    pub fn over_local(
        local: Arc<dyn Storage>,
        vault: LocalVault,
        url: String,
        opts: RemoteOptions,
    ) -> Self {
        TieredStorage {
            local,
            root: vault.dir.clone(),
            files: Mutex::new(None),
            reload: Some(Reload {
                vault,
                url,
                opts,
                connected: None,
            }),
            remote_only: None,
        }
    }

    /// [`TieredStorage::over_local`] through `remote`, already connected (a store of the
    /// caller's, such as an in-memory one in tests).
    pub fn over_local_connected(
        local: Arc<dyn Storage>,
        vault: LocalVault,
        remote: Arc<Remote>,
    ) -> Self {
        let url = remote.url().to_owned();
        let mut storage = TieredStorage::over_local(local, vault, url, RemoteOptions::default());
        if let Some(reload) = storage.reload.as_mut() {
            reload.connected = Some(remote);
        }
        storage
    }

    /// The vault in `files` alone, under the made-up directory `root` (its URL), with the
    /// remote's `VAULT` bytes; other paths go to `local`.
    pub fn remote_only(
        local: Arc<dyn Storage>,
        root: &Path,
        files: Arc<RemoteFiles>,
        vault_header: Vec<u8>,
    ) -> Self {
        TieredStorage {
            local,
            root: root.to_path_buf(),
            files: Mutex::new(Some(files)),
            reload: None,
            remote_only: Some(vault_header),
        }
    }

    fn rel<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        path.strip_prefix(&self.root).ok()
    }

    fn current(&self) -> Option<Arc<RemoteFiles>> {
        self.files.lock().expect("files lock").clone()
    }

    /// The remote files that name `id`: the ones held, or those of a newer `remote/LATEST`.
    fn naming(&self, id: &FileId) -> Option<Arc<RemoteFiles>> {
        let current = self.current();
        if current
            .as_ref()
            .is_some_and(|f| f.manifest.file(id).is_some())
        {
            return current;
        }
        let reload = self.reload.as_ref()?;
        let latest = reload.vault.latest().ok()??;
        if current.is_some_and(|f| f.manifest.seq == latest.seq) {
            return None;
        }
        let files = Arc::new(match &reload.connected {
            Some(remote) => RemoteFiles::new(
                remote.clone(),
                latest,
                reload.vault.seed,
                CACHE_CHUNKS_DEFAULT,
            ),
            None => RemoteFiles::lazy(
                reload.url.clone(),
                reload.opts.clone(),
                latest,
                reload.vault.seed,
                CACHE_CHUNKS_DEFAULT,
            ),
        });
        *self.files.lock().expect("files lock") = Some(files.clone());
        files.manifest.file(id).is_some().then_some(files)
    }

    fn remote_file(files: Arc<RemoteFiles>, id: &FileId) -> io::Result<Arc<dyn File>> {
        let map = files.map(id).map_err(RemoteError::into_io)?;
        let ranged = id.kind == FileKind::Segment && files.prefix_segment != Some(id.a);
        Ok(Arc::new(VaultFile::Remote { files, map, ranged }))
    }

    /// The open segment of the embedded manifest, when `id` names it and the remote manifest
    /// names no prefix of it (remote only: it reads as a header and no record).
    fn open_segment(files: &RemoteFiles, id: &FileId) -> Option<Vec<u8>> {
        if id.kind != FileKind::Segment || files.manifest.file(id).is_some() {
            return None;
        }
        let m = replog_format::manifest::Manifest::decode(&files.manifest.manifest).ok()?;
        let open = m
            .segments
            .last()
            .filter(|s| s.sealed.is_none() && s.segment_id == id.a)?;
        let header = SegmentHeader {
            vault_id: files.manifest.vault_id,
            segment_id: open.segment_id,
            first_lsn: open.first_lsn,
            created_unix_ns: files.manifest.time_unix_ns,
            // Not known here; the header stands for a segment with no record, which has
            // nothing to chain.
            chain_start: None,
        };
        Some(header.encode(files.seed))
    }

    fn names_in(files: &RemoteFiles, dir: &str) -> Vec<String> {
        files
            .manifest
            .files
            .iter()
            .map(|f| file_path(&f.id))
            .filter(|p| p.starts_with(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect()
    }
}

impl Storage for TieredStorage {
    fn kind(&self) -> BackendKind {
        self.local.kind()
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        let Some(rel) = self.rel(path) else {
            return self.local.open(path, mode);
        };
        let id = file_id(rel);
        let (Some(vault_header), Some(files)) = (&self.remote_only, self.current()) else {
            return match (self.local.open(path, mode), id) {
                (Err(e), Some(id))
                    if e.kind() == io::ErrorKind::NotFound && mode == OpenMode::Read =>
                {
                    match self.naming(&id) {
                        Some(files) => Self::remote_file(files, &id),
                        None => Err(e),
                    }
                }
                (result, _) => result,
            };
        };
        if mode != OpenMode::Read {
            return Err(read_only());
        }
        if rel == Path::new(layout::VAULT_FILE) {
            return Ok(Arc::new(VaultFile::Memory(vault_header.clone())));
        }
        if rel == Path::new(layout::MANIFEST_FILE) {
            return Ok(Arc::new(VaultFile::Memory(files.manifest.manifest.clone())));
        }
        match id {
            Some(id) if files.manifest.file(&id).is_some() => Self::remote_file(files, &id),
            _ => match id.and_then(|id| Self::open_segment(&files, &id)) {
                Some(header) => Ok(Arc::new(VaultFile::Memory(header))),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} is not in the remote vault", rel.display()),
                )),
            },
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        match (self.rel(path), &self.remote_only) {
            (Some(_), Some(_)) => Err(read_only()),
            _ => self.local.create_dir_all(path),
        }
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        match (self.rel(path), &self.remote_only) {
            (Some(rel), Some(_)) => match rel.to_str() {
                Some(d @ (layout::JOURNAL_DIR | layout::INDEX_DIR | layout::BASES_DIR)) => Ok(self
                    .current()
                    .map_or_else(Vec::new, |files| Self::names_in(&files, d))),
                Some("") => Ok([layout::VAULT_FILE, layout::MANIFEST_FILE]
                    .into_iter()
                    .chain([layout::JOURNAL_DIR, layout::INDEX_DIR, layout::BASES_DIR])
                    .map(str::to_owned)
                    .collect()),
                _ => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} is not in the remote vault", rel.display()),
                )),
            },
            _ => self.local.read_dir(path),
        }
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let Some(rel) = self.rel(path) else {
            return self.local.exists(path);
        };
        let id = file_id(rel);
        if self.remote_only.is_some() {
            let fixed = [
                "",
                layout::VAULT_FILE,
                layout::MANIFEST_FILE,
                layout::JOURNAL_DIR,
                layout::INDEX_DIR,
                layout::BASES_DIR,
            ];
            let remote_has = id.is_some_and(|id| {
                self.current()
                    .is_some_and(|f| f.manifest.file(&id).is_some())
            });
            return Ok(remote_has || rel.to_str().is_some_and(|r| fixed.contains(&r)));
        }
        Ok(self.local.exists(path)? || id.is_some_and(|id| self.naming(&id).is_some()))
    }

    /// What is there locally: an evicted file is not a local entry, though [`Storage::exists`]
    /// says it exists.
    fn entry_kind(&self, path: &Path) -> io::Result<Option<replog_io::EntryKind>> {
        self.local.entry_kind(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        match (self.rel(from).or(self.rel(to)), &self.remote_only) {
            (Some(_), Some(_)) => Err(read_only()),
            _ => self.local.rename(from, to),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match (self.rel(path), &self.remote_only) {
            (Some(_), Some(_)) => Err(read_only()),
            _ => self.local.remove_file(path),
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        match (self.rel(path), &self.remote_only) {
            (Some(_), Some(_)) => Ok(()),
            _ => self.local.sync_dir(path),
        }
    }

    fn open_lock_file(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        match (self.rel(path), &self.remote_only) {
            (Some(_), Some(_)) => Err(read_only()),
            _ => self.local.open_lock_file(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_and_ids_round_trip_and_odd_spellings_do_not_parse() {
        for id in [
            FileId {
                kind: FileKind::Segment,
                a: 26,
                b: 0,
            },
            FileId {
                kind: FileKind::Checkpoint,
                a: 1 << 40,
                b: 0,
            },
            FileId {
                kind: FileKind::Base,
                a: 3,
                b: 7,
            },
        ] {
            assert_eq!(file_id(&file_path(&id)), Some(id));
        }
        assert_eq!(file_id(Path::new("bases/03.7.base")), None);
        assert_eq!(file_id(Path::new("bases/3.+7.base")), None);
        assert_eq!(file_id(Path::new("journal/x/0000000000000001.seg")), None);
        assert_eq!(file_id(Path::new("digests/1.dig")), None);
    }

    #[test]
    fn the_chunk_cache_keeps_the_most_recently_used() {
        let mut c = ChunkCache {
            capacity: 2,
            chunks: HashMap::new(),
            order: VecDeque::new(),
        };
        c.insert([1; 32], Bytes::from_static(b"a"));
        c.insert([2; 32], Bytes::from_static(b"b"));
        assert!(c.get(&[1; 32]).is_some());
        c.insert([3; 32], Bytes::from_static(b"c"));
        assert!(c.get(&[2; 32]).is_none());
        assert!(c.get(&[1; 32]).is_some() && c.get(&[3; 32]).is_some());
    }
}
