//! Builds small vaults by hand with the format crate's encoders, and keeps a byte model of
//! every disk at every LSN to check the reader against.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use replog_format::base::{self, BaseHeader, ChunkSum, TABLE_ENTRIES_PER_PAGE};
use replog_format::header::{Compression, VaultHeader};
use replog_format::magic::FormatVersion;
use replog_format::manifest::{DiskEntry, Manifest, PointRef, SealedInfo, SegmentEntry};
use replog_format::record::{FLAG_LZ4, PointKind, PointPayload, RecordHeader, RecordKind};
use replog_format::segment::{ExtentEntry, FooterIndex, PointEntry, SegmentHeader, Trailer};
use replog_format::{VaultId, layout, vault_seed};
use replog_io::{OpenMode, Storage};

pub const VAULT_ID: VaultId = *b"replog-test-vlt1";

pub fn storage() -> Arc<dyn Storage> {
    Arc::new(replog_io::sync::SyncStorage::new())
}

/// Writes `bytes` as the whole of `path`.
pub fn write_file(storage: &dyn Storage, path: &Path, bytes: &[u8]) {
    let f = storage.open(path, OpenMode::CreateTruncate).unwrap();
    f.write_all_at(bytes, 0).unwrap();
}

/// Reads the whole of `path`.
pub fn read_file(storage: &dyn Storage, path: &Path) -> Vec<u8> {
    let f = storage.open(path, OpenMode::Read).unwrap();
    let mut buf = vec![0; f.len().unwrap() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

/// XORs one byte of a file.
pub fn flip_byte(storage: &dyn Storage, path: &Path, offset: u64) {
    let f = storage.open(path, OpenMode::ReadWrite).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, offset).unwrap();
}

#[derive(Clone, Debug)]
pub struct Disk {
    pub id: u32,
    pub name: String,
    pub base: Vec<u8>,
    pub added_lsn: u64,
    pub base_generation: u64,
}

/// A segment being built.
#[derive(Debug)]
pub struct Segment {
    pub id: u64,
    pub first_lsn: u64,
    pub bytes: Vec<u8>,
    pub extents: Vec<ExtentEntry>,
    pub points: Vec<PointEntry>,
}

/// What a finished segment left behind.
#[derive(Clone, Debug)]
pub struct SegmentOut {
    pub id: u64,
    pub path: PathBuf,
    pub first_lsn: u64,
    pub sealed: Option<SealedInfo>,
    pub points: Vec<PointEntry>,
    pub extents: Vec<ExtentEntry>,
}

/// Builds a vault and a model of its disks at every LSN.
pub struct VaultBuilder {
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub storage: Arc<dyn Storage>,
    pub block_bytes: u32,
    pub seed: u32,
    pub disks: Vec<Disk>,
    pub next_lsn: u64,
    pub next_point_id: u64,
    pub segments: Vec<SegmentOut>,
    /// The disks' contents after each LSN (only disks added by then).
    pub model: BTreeMap<u64, BTreeMap<u32, Vec<u8>>>,
    current: BTreeMap<u32, Vec<u8>>,
    pub base_lsn: u64,
    /// Keep only the latest model (for large disks).
    pub light: bool,
    /// A resize record was framed: the manifest is written as version 3.
    pub resized: bool,
}

impl VaultBuilder {
    /// A vault in a new temporary directory, on the plain-syscall backend.
    pub fn new(block_bytes: u32) -> VaultBuilder {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        VaultBuilder::on(storage(), root, Some(tmp), block_bytes)
    }

    /// A vault in `root` (which must not hold one) on `storage`.
    pub fn on(
        storage: Arc<dyn Storage>,
        root: PathBuf,
        tmp: Option<tempfile::TempDir>,
        block_bytes: u32,
    ) -> VaultBuilder {
        for sub in [
            layout::BASES_DIR,
            layout::JOURNAL_DIR,
            layout::DIGESTS_DIR,
            layout::QUARANTINE_DIR,
        ] {
            storage.create_dir_all(&root.join(sub)).unwrap();
        }
        let header = VaultHeader {
            version: FormatVersion::CURRENT,
            vault_id: VAULT_ID,
            created_unix_ns: 1_700_000_000_000_000_000,
            block_bytes,
            compression: Compression::Lz4,
            segment_bytes: 1 << 20,
        };
        write_file(
            storage.as_ref(),
            &root.join(layout::VAULT_FILE),
            &header.encode(),
        );
        let mut model = BTreeMap::new();
        model.insert(0, BTreeMap::new());
        VaultBuilder {
            root,
            _tmp: tmp,
            storage,
            block_bytes,
            seed: vault_seed(&VAULT_ID),
            disks: Vec::new(),
            next_lsn: 1,
            next_point_id: 1,
            segments: Vec::new(),
            model,
            current: BTreeMap::new(),
            base_lsn: 0,
            light: false,
            resized: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Adds a disk whose base holds `base`, part of every view from `added_lsn` on. Records may
    /// touch it from `added_lsn` on.
    pub fn disk(&mut self, id: u32, name: &str, base: Vec<u8>, added_lsn: u64) {
        self.disks.push(Disk {
            id,
            name: name.into(),
            base: base.clone(),
            added_lsn,
            base_generation: 1,
        });
        self.current.insert(id, base);
        let snapshot = self.current.clone();
        self.model.insert(self.next_lsn - 1, snapshot);
    }

    pub fn segment(&mut self) -> Segment {
        let id = self.segments.len() as u64 + 1;
        let header = SegmentHeader {
            vault_id: VAULT_ID,
            segment_id: id,
            first_lsn: self.next_lsn,
            created_unix_ns: 5,
            chain_start: None,
        };
        Segment {
            id,
            first_lsn: self.next_lsn,
            bytes: header.encode(self.seed),
            extents: Vec::new(),
            points: Vec::new(),
        }
    }

    fn take_lsn(&mut self) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        lsn
    }

    fn frame(&self, seg: &mut Segment, mut h: RecordHeader, payload: &[u8]) -> u64 {
        let offset = self.frame_footer(seg, &mut h, payload);
        if matches!(
            h.kind,
            RecordKind::Write | RecordKind::Zero | RecordKind::Resize
        ) {
            seg.extents.push(ExtentEntry::from_header(&h));
        }
        offset
    }

    fn header(
        kind: RecordKind,
        lsn: u64,
        disk_id: u32,
        disk_offset: u64,
        length: u64,
    ) -> RecordHeader {
        RecordHeader {
            crc: 0,
            kind,
            flags: 0,
            lsn,
            segment_id: 0,
            segment_offset: 0,
            synced_upto: 0,
            disk_id,
            stored_len: 0,
            disk_offset,
            length,
        }
    }

    /// Appends a write record (LZ4 if `lz4` and it saves space); returns its offset.
    pub fn write(
        &mut self,
        seg: &mut Segment,
        disk_id: u32,
        offset: u64,
        data: &[u8],
        lz4: bool,
    ) -> u64 {
        let lsn = self.take_lsn();
        let mut h = Self::header(RecordKind::Write, lsn, disk_id, offset, data.len() as u64);
        let compressed = lz4_flex::block::compress(data);
        let payload = if lz4 && compressed.len() < data.len() {
            h.flags = FLAG_LZ4;
            compressed
        } else {
            data.to_vec()
        };
        let at = self.frame(seg, h, &payload);
        let disk = self
            .current
            .get_mut(&disk_id)
            .expect("write to a disk that exists");
        disk[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        self.snapshot(lsn);
        at
    }

    /// Appends a zero record; returns its offset.
    pub fn zero(&mut self, seg: &mut Segment, disk_id: u32, offset: u64, len: u64) -> u64 {
        let lsn = self.take_lsn();
        let h = Self::header(RecordKind::Zero, lsn, disk_id, offset, len);
        let at = self.frame(seg, h, &[]);
        let disk = self
            .current
            .get_mut(&disk_id)
            .expect("zero on a disk that exists");
        disk[offset as usize..(offset + len) as usize].fill(0);
        self.snapshot(lsn);
        at
    }

    /// Appends a resize record growing disk `disk_id` to `new_bytes` (the model grows with
    /// zeros); returns its LSN.
    pub fn resize(&mut self, seg: &mut Segment, disk_id: u32, new_bytes: u64) -> u64 {
        let lsn = self.take_lsn();
        let disk = self
            .current
            .get_mut(&disk_id)
            .expect("resize of a disk that exists");
        let old_bytes = disk.len() as u64;
        disk.resize(new_bytes as usize, 0);
        let h = Self::header(RecordKind::Resize, lsn, disk_id, old_bytes, new_bytes);
        self.frame(seg, h, &[]);
        self.resized = true;
        self.snapshot(lsn);
        lsn
    }

    /// Appends a point record; returns its LSN.
    pub fn point(&mut self, seg: &mut Segment, label: &str, time_unix_ns: i64) -> u64 {
        let lsn = self.take_lsn();
        let point = PointPayload {
            point_id: self.next_point_id,
            time_unix_ns,
            kind: PointKind::CrashConsistent,
            label: label.into(),
            chain: None,
        };
        self.next_point_id += 1;
        let h = Self::header(RecordKind::Point, lsn, 0, 0, 0);
        let at = self.frame(seg, h, &point.encode());
        seg.points.push(PointEntry {
            lsn,
            record_offset: at,
            point,
        });
        self.snapshot(lsn);
        lsn
    }

    fn snapshot(&mut self, lsn: u64) {
        if self.light {
            self.model.clear();
        }
        self.model.insert(lsn, self.current.clone());
    }

    /// The disks that exist after `lsn` and their contents, as the model has them.
    pub fn expected(&self, lsn: u64) -> BTreeMap<u32, Vec<u8>> {
        let all = self
            .model
            .range(..=lsn)
            .next_back()
            .expect("a model at or before every LSN")
            .1;
        all.iter()
            .filter(|(id, _)| {
                self.disks
                    .iter()
                    .any(|d| d.id == **id && d.added_lsn <= lsn)
            })
            .map(|(id, bytes)| (*id, bytes.clone()))
            .collect()
    }

    /// Writes the segment with a footer and trailer.
    pub fn seal(&mut self, mut seg: Segment) -> SegmentOut {
        let last_lsn = self.next_lsn - 1;
        let footer = FooterIndex {
            extents: seg.extents.clone(),
            points: seg.points.clone(),
        };
        let payload = footer.encode();
        let mut h = Self::header(RecordKind::Footer, last_lsn, 0, 0, 0);
        let footer_offset = self.frame_footer(&mut seg, &mut h, &payload);
        let trailer = Trailer {
            segment_id: seg.id,
            footer_offset,
            first_lsn: seg.first_lsn,
            last_lsn,
            record_count: (seg.extents.len() + seg.points.len()) as u32,
            footer_crc: h.crc,
        };
        seg.bytes.extend_from_slice(&trailer.encode(self.seed));
        let info = SealedInfo {
            last_lsn,
            footer_offset,
            file_bytes: seg.bytes.len() as u64,
            footer_crc: h.crc,
        };
        self.finish_segment(seg, Some(info))
    }

    /// Appends the record `h` with `payload`, sealed where it lands; returns its offset. A
    /// footer is framed by this alone; other records go through [`Self::frame`].
    fn frame_footer(&self, seg: &mut Segment, h: &mut RecordHeader, payload: &[u8]) -> u64 {
        let offset = seg.bytes.len() as u64;
        h.segment_id = seg.id;
        h.segment_offset = offset;
        h.synced_upto = offset;
        h.stored_len = payload.len() as u32;
        let head = h.seal(self.seed, payload);
        seg.bytes.extend_from_slice(&head);
        seg.bytes.extend_from_slice(payload);
        offset
    }

    /// Writes the segment as the open one (no footer).
    pub fn leave_open(&mut self, seg: Segment) -> SegmentOut {
        self.finish_segment(seg, None)
    }

    fn finish_segment(&mut self, seg: Segment, sealed: Option<SealedInfo>) -> SegmentOut {
        let path = layout::segment_path(self.path(), seg.id);
        write_file(self.storage.as_ref(), &path, &seg.bytes);
        let out = SegmentOut {
            id: seg.id,
            path,
            first_lsn: seg.first_lsn,
            sealed,
            points: seg.points,
            extents: seg.extents,
        };
        self.segments.push(out.clone());
        out
    }

    /// Writes every base image and the manifest; returns the manifest.
    pub fn finish(&mut self) -> Manifest {
        let mut disks = Vec::new();
        for d in self.disks.clone() {
            let crc = self.write_base(&d);
            disks.push(DiskEntry {
                disk_id: d.id,
                name: d.name.clone(),
                disk_bytes: self.current[&d.id].len() as u64,
                added_lsn: d.added_lsn,
                base_generation: d.base_generation,
                base_header_crc: crc,
            });
        }
        let segments = self
            .segments
            .iter()
            .map(|s| SegmentEntry {
                segment_id: s.id,
                first_lsn: s.first_lsn,
                sealed: s.sealed,
                prefix_released: false,
            })
            .collect();
        let points = self
            .segments
            .iter()
            .filter(|s| s.sealed.is_some())
            .flat_map(|s| {
                s.points.iter().map(|p| PointRef {
                    lsn: p.lsn,
                    segment_id: s.id,
                    record_offset: p.record_offset,
                    point: p.point.clone(),
                })
            })
            .collect();
        let manifest = Manifest {
            vault_id: VAULT_ID,
            generation: 1,
            base_lsn: self.base_lsn,
            disks,
            segments,
            points,
            lifecycle: Default::default(),
            resized: self.resized,
            dead_ranges: Vec::new(),
        };
        self.write_manifest(&manifest);
        manifest
    }

    pub fn write_manifest(&self, manifest: &Manifest) {
        write_file(
            self.storage.as_ref(),
            &self.path().join(layout::MANIFEST_FILE),
            &manifest.encode(),
        );
    }

    /// Writes a sparse base image of `d`; returns its header CRC.
    fn write_base(&self, d: &Disk) -> u32 {
        let block = self.block_bytes as usize;
        let sums: Vec<ChunkSum> = d
            .base
            .chunks(block)
            .map(|c| ChunkSum {
                crc: crc32fast::hash(c),
                zero: c.iter().all(|&b| b == 0),
            })
            .collect();
        let pages: Vec<Vec<u8>> = sums
            .chunks(TABLE_ENTRIES_PER_PAGE)
            .enumerate()
            .map(|(i, entries)| base::encode_table_page(i as u32, entries, self.seed))
            .collect();
        let table_crc = pages.iter().fold(self.seed, |running, page| {
            base::table_crc_update(running, page)
        });
        let header = BaseHeader {
            vault_id: VAULT_ID,
            disk_id: d.id,
            block_bytes: self.block_bytes,
            generation: d.base_generation,
            disk_bytes: d.base.len() as u64,
            base_lsn: self.base_lsn,
            table_crc,
        };
        let path = layout::base_path(self.path(), d.id, d.base_generation);
        let f = self.storage.open(&path, OpenMode::CreateTruncate).unwrap();
        f.set_len(header.file_bytes()).unwrap();
        let encoded = header.encode(self.seed);
        f.write_all_at(&encoded, 0).unwrap();
        for (k, chunk) in d.base.chunks(block).enumerate() {
            if !sums[k].zero {
                f.write_all_at(chunk, header.data_offset() + (k * block) as u64)
                    .unwrap();
            }
        }
        for (i, page) in pages.iter().enumerate() {
            f.write_all_at(page, header.table_offset() + (i * page.len()) as u64)
                .unwrap();
        }
        u32::from_le_bytes(encoded[encoded.len() - 4..].try_into().unwrap())
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Bytes that compress well.
pub fn pattern(byte: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| if i % 64 < 48 { byte } else { (i / 64) as u8 })
        .collect()
}

/// Layout of [`standard_vault`].
pub const OS_BYTES: usize = 5 * 4096 + 100;
pub const DATA_BYTES: usize = 3 * 4096;
pub const DATA_ADDED_LSN: u64 = 8;
pub const LAST_LSN: u64 = 13;

/// Offsets of records of [`standard_vault`] worth damaging.
#[derive(Debug)]
pub struct Standard {
    pub builder: VaultBuilder,
    /// The first write (LSN 1) in the sealed segment 1.
    pub first_write_offset: u64,
    /// A write (LSN 11) in the middle of the open segment 2.
    pub open_middle_offset: u64,
    pub sealed: SegmentOut,
    pub open: SegmentOut,
}

impl std::fmt::Debug for VaultBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultBuilder({})", self.path().display())
    }
}

/// A vault with block size 4096 and two disks:
/// - `os` (id 1, 5 chunks + 100 bytes; chunks 1 and 4 are holes in the base), from LSN 1;
/// - `data` (id 2, 3 chunks, all zero), added at LSN 8.
///
/// Segment 1 (sealed): LSN 1 write, 2 LZ4 write overlapping it, 3 zero range, 4 point p1,
/// 5 write of the disk's last bytes, 6 point p2. Segment 2 (open): LSN 7 LZ4 write, 8 write to
/// `data`, 9 zero on `data`, 10 point p3, 11 one-byte write, 12 point p4, 13 write (no point).
pub fn standard_vault() -> Standard {
    standard_vault_in(VaultBuilder::new(4096))
}

/// [`standard_vault`], built by `b` (block size 4096, nothing written yet).
pub fn standard_vault_in(mut b: VaultBuilder) -> Standard {
    let mut os = vec![0u8; OS_BYTES];
    os[..4096].copy_from_slice(&noise(1, 4096));
    os[2 * 4096..3 * 4096].copy_from_slice(&noise(2, 4096));
    os[3 * 4096..4 * 4096].copy_from_slice(&pattern(0x33, 4096));
    os[5 * 4096..].copy_from_slice(&noise(3, 100));
    b.disk(1, "os", os, 1);
    b.disk(2, "data", vec![0u8; DATA_BYTES], DATA_ADDED_LSN);

    let mut s1 = b.segment();
    let first_write_offset = b.write(&mut s1, 1, 100, &noise(10, 5000), false);
    b.write(&mut s1, 1, 3000, &pattern(0xA1, 2000), true);
    b.zero(&mut s1, 1, 4000, 9000);
    b.point(&mut s1, "p1", 1000);
    b.write(&mut s1, 1, 20000, &noise(11, 580), false);
    b.point(&mut s1, "p2", 2000);
    let sealed = b.seal(s1);

    let mut s2 = b.segment();
    b.write(&mut s2, 1, 8192, &pattern(0xB2, 8192), true);
    b.write(&mut s2, 2, 4096, &noise(12, 10), false);
    b.zero(&mut s2, 2, 4100, 4);
    b.point(&mut s2, "p3", 3000);
    let open_middle_offset = b.write(&mut s2, 1, 1, &[0xEE], false);
    b.point(&mut s2, "p4", 4000);
    b.write(&mut s2, 1, 5000, &noise(13, 1000), false);
    let open = b.leave_open(s2);
    assert_eq!(b.next_lsn - 1, LAST_LSN);
    b.finish();
    Standard {
        builder: b,
        first_write_offset,
        open_middle_offset,
        sealed,
        open,
    }
}

/// Reads a whole disk through `read_at` in steps of `step` bytes.
pub fn read_disk(disk: &replog_reader::DiskView, step: usize) -> Vec<u8> {
    let mut out = vec![0u8; disk.size() as usize];
    for (i, chunk) in out.chunks_mut(step).enumerate() {
        disk.read_at((i * step) as u64, chunk).unwrap();
    }
    out
}

/// Opens the builder's vault.
pub fn open(b: &VaultBuilder) -> replog_reader::Vault {
    replog_reader::Vault::open(b.storage.clone(), b.path()).unwrap()
}

impl VaultBuilder {
    /// Appends a write record of `data` at `offset` without checking it against the disk or
    /// changing the model: for records a correct writer never frames.
    pub fn write_unchecked(&mut self, seg: &mut Segment, disk_id: u32, offset: u64, data: &[u8]) {
        let lsn = self.take_lsn();
        let h = Self::header(RecordKind::Write, lsn, disk_id, offset, data.len() as u64);
        self.frame(seg, h, data);
        self.snapshot(lsn);
    }
}
