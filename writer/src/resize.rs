//! Growing a disk: one resize record in the journal between two manifest commits (FORMAT.md,
//! durability step 8). The manifest is marked as holding resize records (version 3) before the
//! first record is written, so code that does not know them refuses the vault rather than cut
//! one as a torn tail; the record is acknowledged when a data sync covering it succeeds; then the
//! manifest takes the new size, and from then on the writer accepts writes past the old end.
//! Recovery commits a size that a crash kept out of the manifest (`recover::catch_up`, rule M).

use replog_format::limits::DISK_BYTES_MAX;
use replog_format::manifest::{DiskEntry, Manifest};
use replog_format::record::{RecordHeader, RecordKind};

use crate::error::{Result, WriteError, WriteErrorKind};
use crate::journal::{Journal, empty_header};
use crate::state::VaultState;

/// Grows `disk` of `vault` to `new_bytes` through `journal`. Returns the resize record's LSN,
/// or `None` when the disk has that size already (nothing is written). A smaller size, or one
/// past the largest disk, is refused.
pub(crate) fn grow(
    vault: &mut VaultState,
    journal: &mut Journal,
    disk: &DiskEntry,
    new_bytes: u64,
) -> Result<Option<u64>> {
    check_growth(disk, new_bytes)?;
    if new_bytes == disk.disk_bytes {
        return Ok(None);
    }
    if !vault.manifest.resized {
        let mut m = vault.manifest.clone();
        m.resized = true;
        m.generation += 1;
        vault.commit(m)?;
    }
    let h = RecordHeader {
        kind: RecordKind::Resize,
        disk_id: disk.disk_id,
        disk_offset: disk.disk_bytes,
        length: new_bytes,
        ..empty_header()
    };
    let lsn = journal.append(&mut vault.manifest, h, &[])?;
    journal.flush(true)?;
    let mut m = vault.manifest.clone();
    set_size(&mut m, disk.disk_id, new_bytes);
    m.generation += 1;
    let committed = vault.commit(m.clone());
    if committed.is_err() {
        // The record is durable: the disk has grown whatever the stored manifest says (the next
        // open commits the size, rule M), so later records must be checked against the new size.
        vault.manifest = m;
    }
    committed.map(|()| Some(lsn))
}

/// Refuses a size that would shrink `disk` or pass the largest disk.
fn check_growth(disk: &DiskEntry, new_bytes: u64) -> Result<()> {
    let refuse = |why: String| {
        Err(WriteError::new(WriteErrorKind::InvalidRequest, why).for_disk(disk.disk_id))
    };
    if new_bytes < disk.disk_bytes {
        return refuse(format!(
            "disk {:?} is {} bytes and cannot shrink to {new_bytes} bytes: disks only grow",
            disk.name, disk.disk_bytes
        ));
    }
    if new_bytes > DISK_BYTES_MAX {
        return refuse(format!(
            "disk {:?} cannot grow to {new_bytes} bytes: the largest disk is {DISK_BYTES_MAX} bytes",
            disk.name
        ));
    }
    Ok(())
}

fn set_size(m: &mut Manifest, disk_id: u32, bytes: u64) {
    let entry = m.disks.iter_mut().find(|d| d.disk_id == disk_id);
    entry.expect("a disk of the manifest").disk_bytes = bytes;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use replog_format::layout;
    use replog_format::manifest::Manifest;
    use replog_io::sim::SimStorage;
    use replog_io::{OpenMode, Storage, WriteAt};

    use crate::{PointKind, PruneOptions, VaultSettings, WriteErrorKind, Writer};

    const MIB: u64 = 1 << 20;

    fn vault() -> (Arc<dyn Storage>, Writer, u32) {
        let storage: Arc<dyn Storage> = SimStorage::new(0);
        let mut w = Writer::create(storage.clone(), "/v".as_ref(), VaultSettings::default())
            .expect("created");
        let d = w.add_disk("os", MIB).expect("added").disk_id;
        (storage, w, d)
    }

    fn reader(storage: &Arc<dyn Storage>) -> replog_reader::Vault {
        replog_reader::Vault::open(storage.clone(), "/v".as_ref()).expect("opens")
    }

    #[test]
    fn a_shrink_is_refused_naming_the_disk_and_both_sizes() {
        let (_, mut w, d) = vault();
        let e = w.resize_disk("os", MIB / 2).unwrap_err();
        assert_eq!(e.kind(), WriteErrorKind::InvalidRequest);
        assert_eq!(e.disk_id(), Some(d));
        let message = e.to_string();
        assert!(message.contains("\"os\" is 1048576 bytes"), "{message}");
        assert!(message.contains("524288 bytes"), "{message}");
        assert_eq!(w.disk("os").unwrap().disk_bytes, MIB);
        assert_eq!(w.manifest().version(), 1, "nothing was written");
    }

    #[test]
    fn the_same_size_writes_nothing() {
        let (_, mut w, _) = vault();
        let lsn = w.last_lsn();
        assert_eq!(w.resize_disk("os", MIB).unwrap().disk_bytes, MIB);
        assert_eq!((w.last_lsn(), w.manifest().resized), (lsn, false));
    }

    #[test]
    fn writes_past_the_old_end_are_refused_before_the_resize_and_accepted_after() {
        let (storage, mut w, d) = vault();
        w.write(d, 0, &[1; 4096]).unwrap();
        let before = w.point(PointKind::CrashConsistent, "before").unwrap();
        let refused = w.write(d, MIB, &[2; 4096]).unwrap_err();
        assert_eq!(refused.kind(), WriteErrorKind::InvalidRequest);
        assert_eq!(w.resize_disk("os", 2 * MIB).unwrap().disk_bytes, 2 * MIB);
        assert_eq!(w.manifest().version(), 3);
        w.write(d, MIB, &[2; 4096]).unwrap();
        let after = w.point(PointKind::CrashConsistent, "after").unwrap();
        w.close().unwrap();
        let v = reader(&storage);
        let sizes: Vec<u64> = [before, after]
            .iter()
            .map(|p| {
                let info = v.point(p.point_id).unwrap();
                v.view(info).unwrap().disks()[0].size()
            })
            .collect();
        assert_eq!(sizes, [MIB, 2 * MIB]);
        assert!(replog_reader::verify(storage.as_ref(), "/v".as_ref()).is_intact());
    }

    #[test]
    fn a_compaction_past_a_resize_writes_the_new_base_at_the_new_size() {
        let (storage, mut w, d) = vault();
        w.write(d, 4096, &[1; 4096]).unwrap();
        w.point(PointKind::CrashConsistent, "small").unwrap();
        w.resize_disk("os", 3 * MIB).unwrap();
        w.write(d, 2 * MIB, &[2; 4096]).unwrap();
        let kept = w.point(PointKind::CrashConsistent, "grown").unwrap();
        let opts = PruneOptions {
            keep_last: Some(1),
            ..PruneOptions::default()
        };
        w.prune(&opts).unwrap();
        assert_eq!(w.manifest().base_lsn, kept.lsn);
        w.close().unwrap();
        let v = reader(&storage);
        let view = v.view(v.point(kept.point_id).unwrap()).unwrap();
        let disk = &view.disks()[0];
        assert_eq!(disk.size(), 3 * MIB);
        let mut got = vec![0; 3 * MIB as usize];
        disk.read_at(0, &mut got).unwrap();
        let mut want = vec![0; 3 * MIB as usize];
        want[4096..8192].fill(1);
        want[2 * MIB as usize..2 * MIB as usize + 4096].fill(2);
        assert!(got == want, "the rolled base reads back the grown disk");
        assert!(replog_reader::verify(storage.as_ref(), "/v".as_ref()).is_intact());
    }

    /// After a resize, an ingest keeps the digest cache for the old blocks: only the grown
    /// range is journaled, not the whole disk again.
    #[test]
    fn an_ingest_after_a_resize_sends_only_the_grown_blocks() {
        let (storage, mut w, _) = vault();
        let image = |len: u64| {
            let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8 + 1).collect();
            let path = std::path::Path::new("/v").join(format!("img{len}"));
            let f = storage.open(&path, OpenMode::CreateTruncate).unwrap();
            f.write_batch(
                &[WriteAt {
                    offset: 0,
                    data: &bytes,
                }],
                true,
            )
            .unwrap();
            (f, path)
        };
        let (small, small_path) = image(MIB);
        w.ingest("os", small.as_ref(), &small_path, &|_| {})
            .unwrap();
        w.resize_disk("os", 2 * MIB).unwrap();
        let (big, big_path) = image(2 * MIB);
        let stats = w.ingest("os", big.as_ref(), &big_path, &|_| {}).unwrap();
        assert_eq!((stats.bytes_changed, stats.digest_cache), (MIB, "stale"));
        let again = w.ingest("os", big.as_ref(), &big_path, &|_| {}).unwrap();
        assert_eq!((again.bytes_changed, again.digest_cache), (0, "valid"));
    }

    /// A crash after the resize record was synced but before the manifest took the new size:
    /// the next open commits it (rule M), and writes past the old end are accepted again.
    #[test]
    fn recovery_commits_a_size_the_manifest_missed() {
        let (storage, mut w, d) = vault();
        w.resize_disk("os", 2 * MIB).unwrap();
        w.close().unwrap();
        let path = std::path::Path::new("/v").join(layout::MANIFEST_FILE);
        let file = storage.open(&path, OpenMode::ReadWrite).unwrap();
        let mut bytes = vec![0; file.len().unwrap() as usize];
        file.read_exact_at(&mut bytes, 0).unwrap();
        let mut lagging = Manifest::decode(&bytes).unwrap();
        lagging.disks[0].disk_bytes = MIB;
        let encoded = lagging.encode();
        file.write_batch(
            &[WriteAt {
                offset: 0,
                data: &encoded,
            }],
            true,
        )
        .unwrap();
        drop(file);
        let mut w = Writer::open(storage.clone(), "/v".as_ref()).unwrap();
        assert!(w.recovery_report().completed_resize);
        assert_eq!(w.disk("os").unwrap().disk_bytes, 2 * MIB);
        w.write(d, MIB, &[3; 512]).unwrap();
        w.close().unwrap();
        assert_eq!(reader(&storage).manifest().disks[0].disk_bytes, 2 * MIB);
    }
}
