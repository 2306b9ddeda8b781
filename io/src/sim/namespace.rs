//! The [`Storage`] side of the simulator: opening files and changing directory entries. Entry
//! changes touch the live view only; `sync_dir` copies a directory's live entries to its durable
//! view. Errors carry the errno the real filesystem would return.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::fault::FaultOp;
use super::tree::{Node, View, components, errno};
use super::{SimStorage, State};
use crate::{BackendKind, EntryKind, File, FileId, OpenMode, Storage};

impl Storage for SimStorage {
    fn kind(&self) -> BackendKind {
        BackendKind::Sim
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn File>> {
        match mode {
            OpenMode::Read | OpenMode::ReadWrite => self.open_existing(path, mode),
            OpenMode::CreateNew | OpenMode::CreateTruncate => self.open_create(path, mode),
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_plain(FaultOp::CreateDir, &[path])?;
        let names = components(path)?;
        let mut dir = super::tree::ROOT;
        for (i, name) in names.iter().enumerate() {
            dir = match state.tree.dir(dir).live.get(name).copied() {
                Some(Node::Dir(id)) => id,
                Some(Node::File(_)) if i + 1 == names.len() => return Err(errno(libc::EEXIST)),
                Some(Node::File(_)) => return Err(errno(libc::ENOTDIR)),
                None => state.tree.create_dir(dir, name.clone()),
            };
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.alive()?;
        match state.tree.resolve(&components(path)?, View::Live)? {
            // BTreeMap keys come out sorted.
            Node::Dir(id) => Ok(state.tree.dir(id).live.keys().cloned().collect()),
            Node::File(_) => Err(errno(libc::ENOTDIR)),
        }
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let state = self.lock();
        state.alive()?;
        match state.tree.resolve(&components(path)?, View::Live) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn entry_kind(&self, path: &Path) -> io::Result<Option<EntryKind>> {
        let state = self.lock();
        state.alive()?;
        // The simulator has no links, devices or sockets.
        match state.tree.resolve(&components(path)?, View::Live) {
            Ok(Node::Dir(_)) => Ok(Some(EntryKind::Dir)),
            Ok(Node::File(_)) => Ok(Some(EntryKind::File)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn file_id(&self, path: &Path) -> io::Result<Option<FileId>> {
        let state = self.lock();
        state.alive()?;
        // Files and directories share one space of inode numbers.
        match state.tree.resolve(&components(path)?, View::Live) {
            Ok(Node::Dir(ino) | Node::File(ino)) => Ok(Some(FileId { dev: 0, ino })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_plain(FaultOp::Rename, &[from, to])?;
        rename_live(&mut state, from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_plain(FaultOp::Remove, &[path])?;
        let (dir, name) = state.tree.parent(path)?;
        match state.tree.dir(dir).live.get(&name) {
            None => Err(errno(libc::ENOENT)),
            Some(Node::Dir(_)) => Err(errno(libc::EISDIR)),
            Some(Node::File(_)) => {
                state.tree.dir_mut(dir).live.remove(&name);
                Ok(())
            }
        }
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.begin_plain(FaultOp::SyncDir, &[path])?;
        match state.tree.resolve(&components(path)?, View::Live)? {
            Node::Dir(id) => {
                let dir = state.tree.dir_mut(id);
                dir.durable.clone_from(&dir.live);
                Ok(())
            }
            Node::File(_) => Err(errno(libc::ENOTDIR)),
        }
    }

    fn open_lock_file(&self, path: &Path) -> io::Result<Arc<dyn File>> {
        self.open_lock(path)
    }
}

/// `rename(2)` on the live entries: replaces a file, or an empty directory by a directory.
fn rename_live(state: &mut State, from: &Path, to: &Path) -> io::Result<()> {
    let (from_dir, from_name) = state.tree.parent(from)?;
    let node = *state
        .tree
        .dir(from_dir)
        .live
        .get(&from_name)
        .ok_or_else(|| errno(libc::ENOENT))?;
    let (to_dir, to_name) = state.tree.parent(to)?;
    if (from_dir, &from_name) == (to_dir, &to_name) {
        return Ok(());
    }
    if matches!(node, Node::Dir(_)) && components(to)?.starts_with(&components(from)?) {
        // A directory cannot move inside itself.
        return Err(errno(libc::EINVAL));
    }
    match (node, state.tree.dir(to_dir).live.get(&to_name)) {
        (_, None) | (Node::File(_), Some(Node::File(_))) => {}
        (Node::File(_), Some(Node::Dir(_))) => return Err(errno(libc::EISDIR)),
        (Node::Dir(_), Some(Node::File(_))) => return Err(errno(libc::ENOTDIR)),
        (Node::Dir(_), Some(Node::Dir(target))) => {
            if !state.tree.dir(*target).live.is_empty() {
                return Err(errno(libc::ENOTEMPTY));
            }
        }
    }
    state.tree.dir_mut(from_dir).live.remove(&from_name);
    state.tree.dir_mut(to_dir).live.insert(to_name, node);
    Ok(())
}
