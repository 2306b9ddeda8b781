//! The pull-mode capture cycle: a [`Cut`] is a point-in-time view of every disk, taken in one
//! QMP `transaction`, exported over NBD with the dirty bitmap that says what changed since the
//! previous cut. For each disk `d` at cut `g`:
//!
//! 1. before the transaction: a qcow2 overlay file (`qemu-img create`) is added as node
//!    `rlf<g>d<i>`, backed by the disk's node;
//! 2. the transaction: `block-dirty-bitmap-add` of `replog-<tag>-<g>` (it collects the writes
//!    after the cut; persistent in a qcow2 node, so it outlives a clean restart of QEMU), `block-dirty-bitmap-disable` of the previous bitmap (it stops growing:
//!    it now marks exactly what changed between the two cuts), and `blockdev-backup` with
//!    `sync: none` into the overlay (copy-before-write: from this instant the overlay reads as
//!    the disk was);
//! 3. `block-export-add` of the overlay with the previous bitmap, on the NBD server.
//!
//! [`Capture::finish`] (the point is durable) removes the export, the job, the overlay and the
//! previous bitmap. [`Capture::abandon`] (no point was taken) removes the same view but first
//! merges the previous bitmap into the new one, so the next cut still covers every write since
//! the last point. A disk without a usable previous bitmap (the first cut, a bitmap QEMU lost or
//! reports `inconsistent`) is cut without one: its reader must make a full pass.
//!
//! A capture can continue one that ended ([`Lineage`]): its caller's newest point came from
//! cut `g`, so a disk whose bitmap `replog-<tag>-<g>` QEMU still records and vouches for (it
//! was kept in memory, or stored in the qcow2 by a clean exit) marks every write since that
//! point, and its first cut reads only that. QEMU flags a persistent bitmap `inconsistent` after
//! a crash; such a disk, or one with any other bitmap of the tag, starts with a full pass.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::error::{QmpError, QmpErrorKind};
use crate::qmp::Qmp;

/// How long a cancelled backup job or a busy overlay node may take to go away.
const TEARDOWN_WAIT: Duration = Duration::from_secs(30);

/// One disk to capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSource {
    /// The caller's name for it (a vault's disk name).
    pub name: String,
    /// Its block node in QEMU.
    pub node: String,
}

/// Where the capture keeps its scratch files and serves its views.
#[derive(Clone, Debug)]
pub struct CaptureConfig {
    /// A directory QEMU can reach at the same path (it runs on this host): fleecing overlays,
    /// and the private NBD socket.
    pub scratch_dir: PathBuf,
    /// The Unix socket of an NBD server QEMU already runs; `None` starts a private one in
    /// `scratch_dir` (and stops it on [`Capture::close`]).
    pub nbd_socket: Option<PathBuf>,
}

/// One disk's view of a cut.
#[derive(Debug)]
pub struct DiskCut {
    /// The disk's name.
    pub name: String,
    /// Its size at the cut.
    pub size_bytes: u64,
    /// The NBD export of the view.
    pub export: String,
    /// The NBD server's Unix socket.
    pub socket: PathBuf,
    /// The bitmap exported with the view (`qemu:dirty-bitmap:<this>`) that marks what changed
    /// since the previous cut; `None`: read the whole view.
    pub dirty_bitmap: Option<String>,
    node: String,
    /// Whether the next bitmap is stored in the image (qcow2 nodes).
    persistent: bool,
    fleece_node: String,
    job: String,
    overlay: PathBuf,
    next_bitmap: String,
}

impl DiskCut {
    /// The view's URI, as NBD clients name it.
    pub fn uri(&self) -> String {
        format!(
            "nbd+unix:///{}?socket={}",
            self.export,
            self.socket.display()
        )
    }
}

/// What a capture continues from, and the names it owns in QEMU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Part of the name of every object the capture makes (`replog-<tag>-<g>` bitmaps,
    /// `rl<tag>f<g>d<i>` views), so captures of one QEMU by different callers (two vaults)
    /// leave each other's alone. Lowercase ASCII letters and digits, at most 12; empty in
    /// tests.
    pub tag: String,
    /// The generation of the last cut made under this tag; the next cut is one more, so names
    /// never repeat.
    pub generation: u64,
    /// Whether the caller's newest point came from cut `generation`: then a disk whose bitmap
    /// of that cut still records and is not `inconsistent` continues from it.
    pub resume: bool,
}

impl Lineage {
    fn prefix(&self) -> String {
        if self.tag.is_empty() {
            "replog-".to_owned()
        } else {
            format!("replog-{}-", self.tag)
        }
    }

    fn bitmap(&self, generation: u64) -> String {
        format!("{}{generation}", self.prefix())
    }

    /// Whether `name` is a bitmap of this tag.
    fn owns_bitmap(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix())
            .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
    }
}

/// A point-in-time view of every disk, open until finished or abandoned.
#[derive(Debug)]
#[must_use = "a cut holds QEMU objects until it is finished or abandoned"]
pub struct Cut {
    /// Its number in this capture.
    pub generation: u64,
    /// One view per disk, in the order the disks were given.
    pub disks: Vec<DiskCut>,
}

#[derive(Debug)]
struct DiskState {
    source: DiskSource,
    /// The bitmap that has collected the writes since the last finished cut.
    bitmap: Option<String>,
}

/// A capture of a set of disks of one QEMU process, cut after cut.
#[derive(Debug)]
pub struct Capture {
    qmp: Qmp,
    config: CaptureConfig,
    disks: Vec<DiskState>,
    socket: PathBuf,
    started_server: bool,
    lineage: Lineage,
}

impl Capture {
    /// Starts capturing `disks` over `qmp`. Objects a previous capture left behind (its views,
    /// jobs and bitmaps, named `rl…` and `replog-…`) are removed first, so the first cut of
    /// each disk is a full one.
    pub fn new(
        qmp: Qmp,
        disks: Vec<DiskSource>,
        config: CaptureConfig,
    ) -> Result<Capture, QmpError> {
        Capture::continuing(qmp, disks, config, Lineage::default())
    }

    /// Starts capturing `disks` over `qmp`, continuing `lineage`. The views and jobs an earlier
    /// capture of the tag left behind are removed, and so are its bitmaps, except each disk's
    /// bitmap of the resumed cut (see [`Lineage::resume`]).
    pub fn continuing(
        mut qmp: Qmp,
        disks: Vec<DiskSource>,
        config: CaptureConfig,
        lineage: Lineage,
    ) -> Result<Capture, QmpError> {
        let kept = sweep(&mut qmp, &disks, &lineage)?;
        let (socket, started_server) = match &config.nbd_socket {
            Some(socket) => (socket.clone(), false),
            None => (start_nbd_server(&mut qmp, &config.scratch_dir)?, true),
        };
        Ok(Capture {
            qmp,
            config,
            disks: disks
                .into_iter()
                .zip(kept)
                .map(|(source, bitmap)| DiskState { source, bitmap })
                .collect(),
            socket,
            started_server,
            lineage,
        })
    }

    /// The generation of the last cut made (it goes on from the lineage's).
    pub fn generation(&self) -> u64 {
        self.lineage.generation
    }

    /// The disks whose next cut reads a bitmap (the others' is a full pass).
    pub fn incremental_disks(&self) -> Vec<&str> {
        self.disks
            .iter()
            .filter(|d| d.bitmap.is_some())
            .map(|d| d.source.name.as_str())
            .collect()
    }

    /// Cuts every disk at one instant and exports the views. On failure, whatever was made
    /// is removed and the bitmaps are as before.
    pub fn cut(&mut self) -> Result<Cut, QmpError> {
        self.lineage.generation += 1;
        let g = self.lineage.generation;
        let nodes = self
            .qmp
            .execute("query-named-block-nodes", json!({"flat": true}))?;
        let mut cut = Cut {
            generation: g,
            disks: Vec::new(),
        };
        let made = self.prepare(&nodes, &mut cut).and_then(|()| {
            self.qmp
                .execute("transaction", json!({"actions": transaction(&cut)}))?;
            cut.disks.iter().try_for_each(|d| self.export(d))
        });
        match made {
            Ok(()) => Ok(cut),
            Err(e) => {
                // The transaction is all or nothing: if it ran, the bitmaps are merged back.
                let _ = self.abandon(cut);
                Err(e)
            }
        }
    }

    /// Adds each disk's overlay node, and describes its view.
    fn prepare(&mut self, nodes: &Value, cut: &mut Cut) -> Result<(), QmpError> {
        for (i, disk) in self.disks.iter().enumerate() {
            let info = node_info(nodes, &disk.source.node).ok_or_else(|| {
                QmpError::new(
                    QmpErrorKind::State,
                    self.qmp.socket(),
                    format!(
                        "no block node {} (disk {})",
                        disk.source.node, disk.source.name
                    ),
                )
            })?;
            let size_bytes = info["image"]["virtual-size"].as_u64().unwrap_or(0);
            let dirty_bitmap = disk.bitmap.clone().filter(|b| bitmap_usable(info, b));
            let (g, tag) = (cut.generation, &self.lineage.tag);
            let d = DiskCut {
                name: disk.source.name.clone(),
                size_bytes,
                export: format!("{}{}-{g}", self.lineage.prefix(), disk.source.name),
                socket: self.socket.clone(),
                dirty_bitmap,
                node: disk.source.node.clone(),
                persistent: stores_bitmaps(info),
                fleece_node: format!("rl{tag}f{g}d{i}"),
                job: format!("rl{tag}j{g}d{i}"),
                overlay: self
                    .config
                    .scratch_dir
                    .join(format!("fleece-{g}-{i}.qcow2")),
                next_bitmap: self.lineage.bitmap(g),
            };
            create_overlay(self.qmp.socket(), &d.overlay, size_bytes)?;
            let added = self.qmp.execute(
                "blockdev-add",
                json!({"driver": "qcow2", "node-name": d.fleece_node, "backing": d.node,
                       "file": {"driver": "file", "filename": d.overlay}}),
            );
            if let Err(e) = added {
                let _ = std::fs::remove_file(&d.overlay);
                return Err(e);
            }
            cut.disks.push(d);
        }
        Ok(())
    }

    fn export(&mut self, d: &DiskCut) -> Result<(), QmpError> {
        let bitmaps: Vec<Value> = d
            .dirty_bitmap
            .iter()
            .map(|b| json!({"node": d.node, "name": b}))
            .collect();
        self.qmp.execute(
            "block-export-add",
            json!({"type": "nbd", "id": d.export, "node-name": d.fleece_node,
                   "name": d.export, "writable": false, "bitmaps": bitmaps}),
        )?;
        Ok(())
    }

    /// The cut's point is durable: removes its views and the bitmaps it read, and keeps the
    /// new ones for the next cut. Every NBD client of the views must have disconnected.
    pub fn finish(&mut self, cut: Cut) -> Result<(), QmpError> {
        self.end(cut, true)
    }

    /// No point was taken from the cut: removes its views, and merges the bitmaps it would
    /// have read into the new ones, so the next cut reads everything again.
    pub fn abandon(&mut self, cut: Cut) -> Result<(), QmpError> {
        self.end(cut, false)
    }

    fn end(&mut self, cut: Cut, kept: bool) -> Result<(), QmpError> {
        let mut first_error = None;
        for d in &cut.disks {
            if let Err(e) = self.end_disk(d, kept) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Ends one disk's view: removes it (an exported bitmap is busy until then), then settles
    /// the bitmaps. If they cannot be settled, the disk is forgotten and its next cut is a full
    /// pass: the capture never goes on reading a bitmap that stopped growing.
    fn end_disk(&mut self, d: &DiskCut, kept: bool) -> Result<(), QmpError> {
        let removed = remove_view(&mut self.qmp, &d.export, &d.job, &d.fleece_node);
        let _ = std::fs::remove_file(&d.overlay);
        let i = self
            .disks
            .iter()
            .position(|s| s.source.name == d.name)
            .expect("a cut's disks are the capture's");
        let previous = self.disks[i].bitmap.take();
        match self.settle_bitmaps(d, kept, previous.as_deref()) {
            Ok(next) => self.disks[i].bitmap = next,
            Err(e) => {
                let _ = self.remove_bitmap(&d.node, &d.next_bitmap);
                let _ = previous.map(|old| self.remove_bitmap(&d.node, &old));
                return Err(removed.err().unwrap_or(e));
            }
        }
        removed
    }

    /// The bitmap the disk's next cut reads, after this cut is kept or abandoned; `previous`
    /// is the one the capture held before the cut.
    fn settle_bitmaps(
        &mut self,
        d: &DiskCut,
        kept: bool,
        previous: Option<&str>,
    ) -> Result<Option<String>, QmpError> {
        let nodes = self
            .qmp
            .execute("query-named-block-nodes", json!({"flat": true}))?;
        let next_made =
            node_info(&nodes, &d.node).is_some_and(|n| bitmap_usable(n, &d.next_bitmap));
        if !next_made {
            // The transaction did not run: the bitmaps are as they were.
            return Ok(previous.map(str::to_owned));
        }
        let next = match (kept, &d.dirty_bitmap) {
            (true, _) => Some(d.next_bitmap.clone()),
            (false, Some(read)) => {
                let merge = json!({"node": d.node, "target": d.next_bitmap, "bitmaps": [read]});
                self.qmp.execute("block-dirty-bitmap-merge", merge)?;
                Some(d.next_bitmap.clone())
            }
            // No point after a full pass: the next cut must be a full pass again.
            (false, None) => {
                self.remove_bitmap(&d.node, &d.next_bitmap)?;
                None
            }
        };
        if let Some(old) = previous {
            self.remove_bitmap(&d.node, old)?;
        }
        Ok(next)
    }

    fn remove_bitmap(&mut self, node: &str, name: &str) -> Result<(), QmpError> {
        match self.qmp.execute(
            "block-dirty-bitmap-remove",
            json!({"node": node, "name": name}),
        ) {
            // Gone already (QEMU restarted): nothing to remove.
            Err(e) if e.kind() == QmpErrorKind::Refused => Ok(()),
            other => other.map(drop),
        }
    }

    /// The QMP session, for queries of the caller's own (a monitor takes one client at a time).
    pub fn qmp(&mut self) -> &mut Qmp {
        &mut self.qmp
    }

    /// Ends the capture: stops the private NBD server, if one was started. Bitmaps stay: a
    /// later capture of the same tag continues from them (see [`Lineage`]) or removes them.
    pub fn close(mut self) -> Result<(), QmpError> {
        if self.started_server {
            self.qmp.execute("nbd-server-stop", json!({}))?;
            let _ = std::fs::remove_file(&self.socket);
        }
        Ok(())
    }
}

/// The transaction's actions for every disk of `cut`.
fn transaction(cut: &Cut) -> Vec<Value> {
    let mut actions = Vec::new();
    for d in &cut.disks {
        actions.push(json!({"type": "block-dirty-bitmap-add",
            "data": {"node": d.node, "name": d.next_bitmap, "persistent": d.persistent}}));
        if let Some(old) = &d.dirty_bitmap {
            actions.push(json!({"type": "block-dirty-bitmap-disable",
                "data": {"node": d.node, "name": old}}));
        }
        actions.push(json!({"type": "blockdev-backup",
            "data": {"device": d.node, "target": d.fleece_node, "sync": "none", "job-id": d.job}}));
    }
    actions
}

/// The entry of `node` in a `query-named-block-nodes` answer.
fn node_info<'a>(nodes: &'a Value, node: &str) -> Option<&'a Value> {
    nodes
        .as_array()?
        .iter()
        .find(|n| n["node-name"].as_str() == Some(node))
}

/// Whether a bitmap of the node can be stored in its image: a writable qcow2 of version 3
/// (`compat` 1.1), which keeps bitmaps across a clean exit of QEMU.
fn stores_bitmaps(info: &Value) -> bool {
    let specific = &info["image"]["format-specific"];
    info["drv"].as_str() == Some("qcow2")
        && !info["ro"].as_bool().unwrap_or(true)
        && specific["type"].as_str() == Some("qcow2")
        && specific["data"]["compat"].as_str() == Some("1.1")
}

/// Whether the node has bitmap `name` and QEMU vouches for its content.
fn bitmap_usable(info: &Value, name: &str) -> bool {
    info["dirty-bitmaps"].as_array().is_some_and(|bitmaps| {
        bitmaps.iter().any(|b| {
            b["name"].as_str() == Some(name) && !b["inconsistent"].as_bool().unwrap_or(false)
        })
    })
}

fn create_overlay(socket: &Path, path: &Path, size_bytes: u64) -> Result<(), QmpError> {
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size_bytes.to_string())
        .output()
        .map_err(|e| QmpError::io(socket, "cannot run qemu-img for a fleecing overlay", e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(QmpError::new(
        QmpErrorKind::Tool,
        socket,
        format!(
            "qemu-img create {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    ))
}

fn start_nbd_server(qmp: &mut Qmp, scratch_dir: &Path) -> Result<PathBuf, QmpError> {
    let socket = scratch_dir.join("nbd.sock");
    let _ = std::fs::remove_file(&socket);
    let started = qmp.execute(
        "nbd-server-start",
        json!({"addr": {"type": "unix", "data": {"path": socket}}}),
    );
    match started {
        Ok(_) => Ok(socket),
        Err(e) if e.kind() == QmpErrorKind::Refused => Err(QmpError::new(
            QmpErrorKind::State,
            qmp.socket(),
            format!("{e}; QEMU already runs an NBD server: give its Unix socket"),
        )),
        Err(e) => Err(e),
    }
}

/// Removes a view: its export, its backup job (waiting until QEMU no longer lists it), and
/// its overlay node (retrying while QEMU still reports it busy).
fn remove_view(qmp: &mut Qmp, export: &str, job: &str, node: &str) -> Result<(), QmpError> {
    if let Err(e) = qmp.execute("block-export-del", json!({"id": export}))
        && e.kind() != QmpErrorKind::Refused
    {
        return Err(e);
    }
    let _ = qmp.execute("block-job-cancel", json!({"device": job, "force": true}));
    let deadline = Instant::now() + TEARDOWN_WAIT;
    loop {
        let jobs = qmp.execute("query-block-jobs", json!({}))?;
        let exports = qmp.execute("query-block-exports", json!({}))?;
        let listed = |v: &Value, key: &str, id: &str| {
            v.as_array()
                .is_some_and(|a| a.iter().any(|x| x[key].as_str() == Some(id)))
        };
        let busy = listed(&jobs, "device", job) || listed(&exports, "id", export);
        let removed = !busy
            && match qmp.execute("blockdev-del", json!({"node-name": node})) {
                Ok(_) => true,
                Err(e) if e.kind() != QmpErrorKind::Refused => return Err(e),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => false,
            };
        if removed {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(QmpError::new(
                QmpErrorKind::State,
                qmp.socket(),
                format!("the view {node} was still in use after {TEARDOWN_WAIT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes what an earlier capture of these disks under the lineage's tag left in QEMU: views,
/// jobs and bitmaps, except for each disk the bitmap of the resumed cut, if it is the disk's only
/// bitmap of the tag, still records, and QEMU vouches for it. Returns those kept, per disk.
fn sweep(
    qmp: &mut Qmp,
    disks: &[DiskSource],
    lineage: &Lineage,
) -> Result<Vec<Option<String>>, QmpError> {
    let (prefix, tag) = (lineage.prefix(), &lineage.tag);
    let (view_node, job_node) = (format!("rl{tag}f"), format!("rl{tag}j"));
    let exports = qmp.execute("query-block-exports", json!({}))?;
    for e in exports.as_array().into_iter().flatten() {
        let id = e["id"].as_str().unwrap_or_default();
        let node = e["node-name"].as_str().unwrap_or_default();
        if id.starts_with(&prefix) && node.starts_with(&view_node) {
            let job = node.replacen(&view_node, &job_node, 1);
            remove_view(qmp, id, &job, node)?;
        }
    }
    let nodes = qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
    let resumed = lineage.bitmap(lineage.generation);
    let mut kept = Vec::new();
    for d in disks {
        let Some(info) = node_info(&nodes, &d.node) else {
            kept.push(None);
            continue;
        };
        let mine: Vec<&Value> = info["dirty-bitmaps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| lineage.owns_bitmap(b["name"].as_str().unwrap_or_default()))
            .collect();
        let keep = lineage.resume
            && lineage.generation > 0
            && matches!(mine.as_slice(), [b] if b["name"].as_str() == Some(&resumed)
                && b["recording"].as_bool() == Some(true)
                && !b["busy"].as_bool().unwrap_or(false))
            && bitmap_usable(info, &resumed);
        for b in mine {
            let name = b["name"].as_str().unwrap_or_default();
            if !(keep && name == resumed) {
                qmp.execute(
                    "block-dirty-bitmap-remove",
                    json!({"node": d.node, "name": name}),
                )?;
            }
        }
        kept.push(keep.then(|| resumed.clone()));
    }
    Ok(kept)
}
