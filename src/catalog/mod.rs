//! The namespace the mount shows: every directory, file, symlink and special file, with
//! its blob hash, size, times, mode and owner, kept in `mount.db` (tables prefixed `ns_`).
//!
//! `lookup`, `getattr` and `readdir` are answered from an in-memory index loaded at open
//! and kept in step with the database (every change is written to SQLite first, in one
//! transaction, then applied to the index), so `ls -l` never waits for disk or network.
//! This module must never talk to the store or the cache: it only records which blob a
//! path names. Inode numbers are the table's rowids: stable across restarts.
//!
//! `node.rs` is what an entry is, `schema.rs` how it is stored, `index.rs` the in-memory
//! copy and its name bookkeeping (hard links), `paths.rs` the path-based access the sync
//! uses, `roots.rs` the chunk roots that bind a blob's chunk-hash record to its name,
//! `reserve.rs` the room kept so removals work on a full disk, `batch.rs` the relaxed
//! commits a sync applies many entries with; this file holds the operations.

mod batch;
mod index;
mod node;
mod paths;
mod reserve;
mod roots;
mod schema;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub use batch::Relaxed;
use index::{Index, NameGone};
pub use node::{
    now_ns, ns_to_time, time_to_ns, AttrChange, CatalogError, CatalogResult, Kind, NewNode, Node,
    RenameMode, LINK_MAX, NAME_MAX, ROOT_INO, TARGET_MAX,
};
pub use schema::open_db;

/// How stale the in-memory index may be with respect to changes another process (or
/// connection) made to the namespace, e.g. a sync run outside the daemon.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

pub struct Catalog {
    inner: Mutex<Index>,
    reserve: reserve::Reserve,
}

fn check_name(name: &str) -> CatalogResult<()> {
    if name.len() > NAME_MAX {
        return Err(CatalogError::NameTooLong(name.len()));
    }
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(CatalogError::InvalidName(name.to_string()));
    }
    Ok(())
}

impl Catalog {
    /// Opens (creating if needed) the namespace in `state_db`; the root directory is made
    /// with `root_uid`/`root_gid` as owner the first time.
    pub fn open(state_db: &Path, root_uid: u32, root_gid: u32) -> CatalogResult<Catalog> {
        let mut db = open_db(state_db)?;
        schema::create_or_upgrade(&mut db)?;
        schema::insert_root(&db, now_ns(), root_uid, root_gid)?;
        Ok(Catalog {
            inner: Mutex::new(Index::open(db)?),
            reserve: reserve::Reserve::beside(state_db),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        // A panic while holding the lock leaves the index as consistent as the last
        // finished change (the database is the truth), so keep going.
        let mut ix = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if ix.checked.elapsed() >= REFRESH_INTERVAL {
            if let Err(e) = ix.refresh() {
                tracing::warn!(error = %e, "cannot check the namespace for outside changes");
            }
        }
        ix
    }

    /// The index for a change: always checked against the database first, so a change
    /// made elsewhere is loaded before ours is applied (and never mistaken for ours).
    fn index_for_change(&self) -> std::sync::MutexGuard<'_, Index> {
        let mut ix = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = ix.refresh() {
            tracing::warn!(error = %e, "cannot check the namespace for outside changes");
        }
        ix
    }

    pub fn get(&self, ino: u64) -> CatalogResult<Node> {
        self.index().node(ino)
    }

    pub fn lookup(&self, parent: u64, name: &str) -> CatalogResult<Node> {
        check_name(name)?;
        let ix = self.index();
        let ino = ix.ino_at(parent, name)?;
        Ok(ix.entry(parent, name, ino))
    }

    /// The entries of a directory, in name order.
    pub fn children(&self, dir: u64) -> CatalogResult<Vec<Node>> {
        let ix = self.index();
        let kids = ix.dir(dir)?;
        Ok(kids
            .iter()
            .map(|(name, &ino)| ix.entry(dir, name, ino))
            .collect())
    }

    /// The path of an inode relative to the mount root ("a/b/c.mp3"), by its first name.
    pub fn path_of(&self, ino: u64) -> CatalogResult<String> {
        let ix = self.index();
        let mut parts = Vec::new();
        let mut cur = ino;
        while cur != ROOT_INO {
            let n = ix.nodes.get(&cur).ok_or(CatalogError::NotFound)?;
            parts.push(n.name.clone());
            cur = n.parent;
        }
        parts.reverse();
        Ok(parts.join("/"))
    }

    /// Number of inodes (for statfs).
    pub fn len(&self) -> usize {
        self.index().nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= 1
    }

    /// Every distinct blob hash the namespace names (the cache keeps these pinned or
    /// fetchable; nothing else may be deleted from the store by this device).
    pub fn hashes(&self) -> Vec<String> {
        let ix = self.index();
        let mut v: Vec<String> = ix.nodes.values().filter_map(|n| n.hash.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Creates a directory or a file. `hash` gives a file's initial content.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        parent: u64,
        name: &str,
        kind: Kind,
        mode: u32,
        uid: u32,
        gid: u32,
        hash: Option<&str>,
        local_only: bool,
    ) -> CatalogResult<Node> {
        let new = NewNode {
            mode,
            uid,
            gid,
            hash,
            local_only,
            ..NewNode::default()
        };
        self.create_node(parent, name, kind, &new)
    }

    /// Creates an entry of any kind. In a set-group-ID directory the entry takes the
    /// directory's group, and a subdirectory the set-group-ID bit too (as on ext4).
    pub fn create_node(
        &self,
        parent: u64,
        name: &str,
        kind: Kind,
        new: &NewNode<'_>,
    ) -> CatalogResult<Node> {
        check_name(name)?;
        let mut ix = self.index_for_change();
        let dir = ix.node(parent)?;
        if ix.dir(parent)?.contains_key(name) {
            return Err(CatalogError::Exists(name.to_string()));
        }
        let mut mode = new.mode & 0o7777;
        let mut gid = new.gid;
        if dir.mode & node::mode_bits::S_ISGID != 0 {
            gid = dir.gid;
            if kind == Kind::Dir {
                mode |= node::mode_bits::S_ISGID;
            }
        }
        let now = now_ns();
        let mut node = Node {
            ino: 0,
            parent,
            name: name.to_string(),
            kind,
            hash: new.hash.map(str::to_string),
            size: new.target.map_or(new.size, |t| t.len() as u64),
            atime_ns: now,
            mtime_ns: new.mtime_ns.unwrap_or(now),
            ctime_ns: now,
            mode,
            uid: new.uid,
            gid,
            local_only: new.local_only || kind.is_special(),
            target: new.target.map(str::to_string),
            rdev: new.rdev,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
        };
        ix.atomically(|ix| {
            node.ino = schema::insert_node(&ix.db, &node)?;
            ix.insert(node.clone());
            ix.touch_dir(parent, now)?;
            Ok(node)
        })
    }

    /// A new name `new_parent/new_name` for the existing inode `ino` (`link(2)`).
    pub fn link(&self, ino: u64, new_parent: u64, new_name: &str) -> CatalogResult<Node> {
        check_name(new_name)?;
        let mut ix = self.index_for_change();
        let n = ix.node(ino)?;
        if n.is_dir() {
            return Err(CatalogError::LinkDir);
        }
        if n.nlink >= LINK_MAX {
            return Err(CatalogError::TooManyLinks);
        }
        if ix.dir(new_parent)?.contains_key(new_name) {
            return Err(CatalogError::Exists(new_name.to_string()));
        }
        let now = now_ns();
        ix.atomically(|ix| {
            ix.add_link(ino, new_parent, new_name)?;
            ix.touch_ctime(ino, now)?;
            ix.touch_dir(new_parent, now)?;
            Ok(ix.entry(new_parent, new_name, ino))
        })
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: u64) -> CatalogResult<String> {
        let n = self.get(ino)?;
        n.target.ok_or(CatalogError::NotSymlink)
    }

    /// Runs a removal; if the disk is too full for SQLite to record it, gives up the
    /// space reserve and runs it again (`reserve.rs`). The reserve is made again after.
    fn freeing_space<T>(&self, op: impl Fn() -> CatalogResult<T>) -> CatalogResult<T> {
        let result = match op() {
            Err(e) if reserve::is_disk_full(&e) && self.reserve.release() => op(),
            other => other,
        };
        self.reserve.refill();
        result
    }

    /// Removes a name that is not a directory. Returns the node with `nlink` the names
    /// it has left: 0 when the inode is gone (its content may be dropped by the caller).
    pub fn unlink(&self, parent: u64, name: &str) -> CatalogResult<Node> {
        self.freeing_space(|| self.unlink_once(parent, name))
    }

    fn unlink_once(&self, parent: u64, name: &str) -> CatalogResult<Node> {
        check_name(name)?;
        let mut ix = self.index_for_change();
        let ino = ix.ino_at(parent, name)?;
        if ix.nodes[&ino].is_dir() {
            return Err(CatalogError::IsDir);
        }
        let now = now_ns();
        ix.atomically(|ix| {
            let gone = ix.remove_name(parent, name, ino)?;
            ix.touch_dir(parent, now)?;
            Ok(match gone {
                NameGone::LastName(mut n) => {
                    n.nlink = 0;
                    n
                }
                NameGone::OtherNamesLeft(mut n) => {
                    ix.touch_ctime(ino, now)?;
                    n.ctime_ns = now;
                    n
                }
            })
        })
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> CatalogResult<Node> {
        self.freeing_space(|| self.rmdir_once(parent, name))
    }

    fn rmdir_once(&self, parent: u64, name: &str) -> CatalogResult<Node> {
        check_name(name)?;
        let mut ix = self.index_for_change();
        let ino = ix.ino_at(parent, name)?;
        if !ix.nodes[&ino].is_dir() {
            return Err(CatalogError::NotDir);
        }
        if !ix.children.get(&ino).is_none_or(|c| c.is_empty()) {
            return Err(CatalogError::NotEmpty);
        }
        let now = now_ns();
        ix.atomically(|ix| {
            let NameGone::LastName(mut n) = ix.remove_name(parent, name, ino)? else {
                unreachable!("a directory has one name");
            };
            ix.touch_dir(parent, now)?;
            n.nlink = 0;
            Ok(n)
        })
    }

    /// Moves `parent/name` to `new_parent/new_name`, replacing a non-directory or an
    /// empty directory there (POSIX rename). Returns the entry it replaced, if any, with
    /// `nlink` the names it has left (0: gone).
    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        mode: RenameMode,
    ) -> CatalogResult<Option<Node>> {
        check_name(name)?;
        check_name(new_name)?;
        if mode.exchange {
            return Err(CatalogError::Unsupported);
        }
        let mut ix = self.index_for_change();
        let ino = ix.ino_at(parent, name)?;
        let target = ix.dir(new_parent)?.get(new_name).copied();
        if target == Some(ino) {
            // Two names of one inode (or the same name): POSIX says do nothing.
            return Ok(None);
        }
        let moving_dir = ix.nodes[&ino].is_dir();
        if moving_dir {
            // new_parent must not be ino or one of its descendants.
            let mut cur = new_parent;
            loop {
                if cur == ino {
                    return Err(CatalogError::IntoItself);
                }
                if cur == ROOT_INO {
                    break;
                }
                cur = ix.nodes.get(&cur).map(|n| n.parent).unwrap_or(ROOT_INO);
            }
        }
        if let Some(t) = target {
            if mode.no_replace {
                return Err(CatalogError::Exists(new_name.to_string()));
            }
            let t_dir = ix.nodes[&t].is_dir();
            match (moving_dir, t_dir) {
                (false, true) => return Err(CatalogError::IsDir),
                (true, false) => return Err(CatalogError::NotDir),
                (true, true) if !ix.children.get(&t).is_none_or(|c| c.is_empty()) => {
                    return Err(CatalogError::NotEmpty)
                }
                _ => {}
            }
        }
        let now = now_ns();
        ix.atomically(|ix| {
            let replaced = match target {
                Some(t) => Some(match ix.remove_name(new_parent, new_name, t)? {
                    NameGone::LastName(mut n) => {
                        n.nlink = 0;
                        n
                    }
                    NameGone::OtherNamesLeft(n) => {
                        ix.touch_ctime(t, now)?;
                        n
                    }
                }),
                None => None,
            };
            ix.move_name(parent, name, ino, new_parent, new_name)?;
            ix.touch_ctime(ino, now)?;
            ix.touch_dir(parent, now)?;
            ix.touch_dir(new_parent, now)?;
            Ok(replaced)
        })
    }

    /// chmod, chown, utimens. ctime moves to now, as for every attribute change.
    pub fn set_attr(&self, ino: u64, ch: AttrChange) -> CatalogResult<Node> {
        let mut ix = self.index_for_change();
        let mut n = ix.node(ino)?;
        if let Some(m) = ch.mode {
            n.mode = m & 0o7777;
        }
        if let Some(u) = ch.uid {
            n.uid = u;
        }
        if let Some(g) = ch.gid {
            n.gid = g;
        }
        if let Some(t) = ch.atime_ns {
            n.atime_ns = t;
        }
        if let Some(t) = ch.mtime_ns {
            n.mtime_ns = t;
        }
        n.ctime_ns = now_ns();
        ix.atomically(|ix| {
            ix.update(&n)?;
            ix.node(ino)
        })
    }

    /// Records new content for a file (after its bytes were committed to the cache or
    /// to the local-only folder). The entry may have been unlinked meanwhile: then the
    /// write is dropped (NotFound), like a write to an unlinked file on any filesystem.
    pub fn set_content(
        &self,
        ino: u64,
        hash: Option<&str>,
        size: u64,
        mtime_ns: i64,
        local_only: bool,
    ) -> CatalogResult<Node> {
        let mut ix = self.index_for_change();
        let mut n = ix.node(ino)?;
        if n.is_dir() {
            return Err(CatalogError::IsDir);
        }
        n.hash = hash.map(str::to_string);
        n.size = size;
        n.mtime_ns = mtime_ns;
        n.ctime_ns = mtime_ns.max(n.ctime_ns);
        n.local_only = local_only;
        ix.atomically(|ix| {
            ix.update(&n)?;
            ix.node(ino)
        })
    }
}

/// Number of namespace entries, read straight from the database (for `songfs status`,
/// which holds no Catalog).
pub fn count_entries(state_db: &Path) -> CatalogResult<u64> {
    let db = open_db(state_db)?;
    let n: i64 = db.query_row("SELECT COUNT(*) FROM ns_inodes", [], |r| r.get(0))?;
    Ok(n as u64)
}
