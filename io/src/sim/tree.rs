//! The simulator's filesystem: a tree of directories whose entries have a live view (what the
//! running process sees) and a durable view (what a crash leaves), and file inodes with a
//! durable image, a live image, and the changes made since their last sync.
//!
//! Invariant: an inode's live image is its durable image with its pending changes replayed,
//! except after a failed sync dropped the pending changes (the pages the kernel marked clean),
//! when the live image still shows data that no sync will ever make durable.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};

/// An inode or directory number.
pub(super) type Id = u64;

/// The root directory; it always exists, durably.
pub(super) const ROOT: Id = 0;

/// A directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Node {
    File(Id),
    Dir(Id),
}

/// Which view of directory entries to resolve a path in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum View {
    Live,
    Durable,
}

/// A change made to a file since its last sync.
#[derive(Clone, Debug)]
pub(super) enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// A file's contents.
#[derive(Debug, Default)]
pub(super) struct Inode {
    pub(super) durable: Vec<u8>,
    pub(super) live: Vec<u8>,
    pub(super) pending: Vec<Pending>,
    /// Pages ([`PAGE_BYTES`] each, by index) whose space a hole punch released: they occupy
    /// nothing until written again.
    pub(super) holes: BTreeSet<u64>,
}

/// The unit of allocation the simulator models.
pub(super) const PAGE_BYTES: u64 = 4096;

impl Inode {
    /// Writes `data` at `offset` in the live image (zero-filling any gap) and records it.
    pub(super) fn write(&mut self, offset: u64, data: &[u8]) {
        if !data.is_empty() && !self.holes.is_empty() {
            let (first, end) = (offset / PAGE_BYTES, offset + data.len() as u64);
            let last = end.div_ceil(PAGE_BYTES);
            self.holes.retain(|&p| p < first || p >= last);
        }
        splice(&mut self.live, offset, data);
        self.pending.push(Pending::Write {
            offset,
            data: data.to_vec(),
        });
    }

    /// Sets the live length and records it.
    pub(super) fn set_len(&mut self, len: u64) {
        self.live.resize(to_usize(len), 0);
        self.pending.push(Pending::SetLen(len));
    }

    /// Punches a hole over the whole pages of `[offset, end)` inside the file: they read as
    /// zeros (a pending write of zeros, so a crash before the next sync may keep, drop or tear
    /// it, as a punch whose metadata was not yet durable) and occupy no space. Partial pages at
    /// either end are zeroed and stay allocated, as a real filesystem does.
    pub(super) fn punch(&mut self, offset: u64, end: u64) {
        let end = end.min(self.live.len() as u64);
        if offset >= end {
            return;
        }
        self.write(offset, &vec![0; to_usize(end - offset)]);
        let first = offset.div_ceil(PAGE_BYTES);
        let full_end = if end == self.live.len() as u64 {
            end.div_ceil(PAGE_BYTES)
        } else {
            end / PAGE_BYTES
        };
        self.holes.extend(first..full_end.max(first));
    }

    /// The bytes the file occupies: its whole pages less the punched ones.
    pub(super) fn allocated_bytes(&self) -> u64 {
        let pages = (self.live.len() as u64).div_ceil(PAGE_BYTES);
        let holes = self.holes.range(..pages).count() as u64;
        (pages - holes) * PAGE_BYTES
    }

    /// After a power loss: a punched page stays released only if what survived of it reads as
    /// zeros (the punch reached the disk and nothing written over it since did).
    pub(super) fn settle_holes(&mut self) {
        let image = &self.live;
        self.holes.retain(|&p| {
            let start = to_usize(p * PAGE_BYTES).min(image.len());
            let end = to_usize((p + 1) * PAGE_BYTES).min(image.len());
            start < end && image[start..end].iter().all(|&b| b == 0)
        });
    }

    /// A successful data sync: every pending change reaches the durable image.
    pub(super) fn sync(&mut self) {
        for change in self.pending.drain(..) {
            match change {
                Pending::Write { offset, data } => splice(&mut self.durable, offset, &data),
                Pending::SetLen(len) => self.durable.resize(to_usize(len), 0),
            }
        }
    }

    /// A failed data sync: the pending changes will never be durable, though the live image
    /// still shows them (the kernel marked the pages clean).
    pub(super) fn lose_pending(&mut self) {
        self.pending.clear();
    }
}

/// Copies `data` into `image` at `offset`, growing it with zeros as needed.
pub(super) fn splice(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    if data.is_empty() {
        // Writing nothing does not grow a file, wherever it is.
        return;
    }
    let start = to_usize(offset);
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

/// An offset the caller has already bounded by the simulator's file size limit.
pub(super) fn to_usize(n: u64) -> usize {
    usize::try_from(n).expect("simulated offsets are bounded by the file size limit")
}

/// A directory.
#[derive(Debug, Default)]
pub(super) struct Dir {
    pub(super) live: BTreeMap<String, Node>,
    pub(super) durable: BTreeMap<String, Node>,
}

impl Dir {
    fn entries(&self, view: View) -> &BTreeMap<String, Node> {
        match view {
            View::Live => &self.live,
            View::Durable => &self.durable,
        }
    }
}

/// The whole tree.
#[derive(Debug)]
pub(super) struct Tree {
    pub(super) dirs: BTreeMap<Id, Dir>,
    pub(super) inodes: BTreeMap<Id, Inode>,
    next_id: Id,
}

/// An error with an errno, as the real filesystem would report it.
pub(super) fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// The names along `path`; `.` is skipped and `..` refused (paths are taken as given).
pub(super) fn components(path: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(name) => {
                names.push(name.to_str().ok_or_else(|| errno(libc::EINVAL))?.to_owned())
            }
            Component::ParentDir => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the simulator does not resolve `..` in {}", path.display()),
                ));
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(names)
}

impl Tree {
    pub(super) fn new() -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(ROOT, Dir::default());
        Tree {
            dirs,
            inodes: BTreeMap::new(),
            next_id: ROOT + 1,
        }
    }

    fn fresh_id(&mut self) -> Id {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub(super) fn dir(&self, id: Id) -> &Dir {
        &self.dirs[&id]
    }

    pub(super) fn dir_mut(&mut self, id: Id) -> &mut Dir {
        self.dirs
            .get_mut(&id)
            .expect("directory entries point at directories")
    }

    pub(super) fn inode_mut(&mut self, id: Id) -> &mut Inode {
        self.inodes
            .get_mut(&id)
            .expect("file handles and entries point at inodes")
    }

    /// The node `names` leads to from the root, in `view`.
    pub(super) fn resolve(&self, names: &[String], view: View) -> io::Result<Node> {
        let mut node = Node::Dir(ROOT);
        for name in names {
            let Node::Dir(dir) = node else {
                return Err(errno(libc::ENOTDIR));
            };
            node = *self
                .dir(dir)
                .entries(view)
                .get(name)
                .ok_or_else(|| errno(libc::ENOENT))?;
        }
        Ok(node)
    }

    /// The live directory that holds `path`'s last component, and that component.
    pub(super) fn parent(&self, path: &Path) -> io::Result<(Id, String)> {
        let mut names = components(path)?;
        let name = names.pop().ok_or_else(|| errno(libc::EINVAL))?;
        match self.resolve(&names, View::Live)? {
            Node::Dir(dir) => Ok((dir, name)),
            Node::File(_) => Err(errno(libc::ENOTDIR)),
        }
    }

    /// A new, empty file linked (live) as `name` in `dir`.
    pub(super) fn create_file(&mut self, dir: Id, name: String) -> Id {
        let id = self.fresh_id();
        self.inodes.insert(id, Inode::default());
        self.dir_mut(dir).live.insert(name, Node::File(id));
        id
    }

    /// A new, empty directory linked (live) as `name` in `dir`.
    pub(super) fn create_dir(&mut self, dir: Id, name: String) -> Id {
        let id = self.fresh_id();
        self.dirs.insert(id, Dir::default());
        self.dir_mut(dir).live.insert(name, Node::Dir(id));
        id
    }

    /// Power loss for the namespace: every directory's live entries become its durable ones,
    /// and whatever is no longer reachable from the root is forgotten.
    pub(super) fn revert_entries(&mut self) {
        for dir in self.dirs.values_mut() {
            dir.live = dir.durable.clone();
        }
        let mut reachable = BTreeSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(dir) = stack.pop() {
            for node in self.dirs[&dir].durable.values() {
                match *node {
                    Node::Dir(id) => {
                        reachable.insert(id);
                        stack.push(id);
                    }
                    Node::File(id) => {
                        reachable.insert(id);
                    }
                }
            }
        }
        self.dirs.retain(|id, _| reachable.contains(id));
        self.inodes.retain(|id, _| reachable.contains(id));
    }

    /// Feeds `out` the live tree in one canonical order: each entry's path and kind, and for a
    /// file the order in which its inode was first met (so hard links show) and, the first
    /// time, its bytes and released pages. Two trees feed the same bytes exactly when they hold
    /// the same names, links, contents and holes.
    pub(super) fn describe_live(&self, out: &mut dyn FnMut(&[u8])) {
        let mut met: BTreeMap<Id, u64> = BTreeMap::new();
        let mut stack = vec![(ROOT, PathBuf::from("/"))];
        while let Some((dir, path)) = stack.pop() {
            for (name, node) in &self.dir(dir).live {
                let at = path.join(name);
                let name_bytes = at.as_os_str().as_encoded_bytes();
                out(&(name_bytes.len() as u64).to_le_bytes());
                out(name_bytes);
                match *node {
                    Node::Dir(id) => {
                        out(b"d");
                        stack.push((id, at));
                    }
                    Node::File(id) => {
                        let next = met.len() as u64;
                        let first = !met.contains_key(&id);
                        let order = *met.entry(id).or_insert(next);
                        out(b"f");
                        out(&order.to_le_bytes());
                        if first {
                            let inode = &self.inodes[&id];
                            out(&(inode.live.len() as u64).to_le_bytes());
                            out(&inode.live);
                            out(&(inode.holes.len() as u64).to_le_bytes());
                            for page in &inode.holes {
                                out(&page.to_le_bytes());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Every live file's path, from the root.
    pub(super) fn file_paths(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![(ROOT, PathBuf::from("/"))];
        while let Some((dir, path)) = stack.pop() {
            for (name, node) in &self.dir(dir).live {
                match *node {
                    Node::File(_) => out.push(path.join(name)),
                    Node::Dir(id) => stack.push((id, path.join(name))),
                }
            }
        }
        out.sort();
        out
    }
}
