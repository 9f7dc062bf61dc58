//! The filesystem's logic apart from reading and writing bytes: namespace operations,
//! opening and releasing handles, and the shared state (`SongFs`) the read path
//! (`read.rs`) and the write path (`write.rs`) work on. It knows nothing of FUSE types
//! (the shim in `fuse.rs` converts); every operation returns `FsResult` with the errno
//! the caller will see.
//!
//! Lock order: `handles` → `staged` map → one `Staged` → `Handle::source`; the catalog's
//! own lock is taken last and never held across a call into this module.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::error::{FsError, FsResult};
use super::read::Handle;
use super::staging::Staged;
use crate::cache::Cache;
use crate::catalog::{AttrChange, Catalog, CatalogError, Kind, Node, RenameMode};

/// SHA-256 of zero bytes: the content of every new file.
pub use crate::content::EMPTY_HASH;

/// What the filesystem needs besides the catalog and the cache.
pub struct FsOptions {
    /// Where local-only files keep their bytes (`$SONGFS_HOME/local`).
    pub local_dir: PathBuf,
    /// Where uncommitted bytes left by a crash are saved (`$SONGFS_HOME/lost+found`).
    pub rescue_dir: PathBuf,
    /// Glob patterns of file names that never reach the store.
    pub local_only_patterns: Vec<glob::Pattern>,
}

impl FsOptions {
    /// The one local-only rule (`config::name_is_local_only`).
    pub fn is_local_only(&self, name: &str) -> bool {
        crate::config::name_is_local_only(&self.local_only_patterns, name)
    }
}

/// Attribute changes requested by `setattr`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime_ns: Option<i64>,
    pub mtime_ns: Option<i64>,
}

/// Result of `open`/`create`.
pub struct Opened {
    pub fh: u64,
    /// The content is the same as at the last open: the kernel may keep its page cache.
    pub keep_cache: bool,
    /// A read-only open of content wholly in the cache (and in the store): its hash and
    /// the cache file, which the kernel may read directly (`passthrough.rs`).
    pub backing: Option<(String, std::fs::File)>,
}

/// A directory listing taken at `opendir`, served to successive `readdir` calls.
pub struct DirSnapshot {
    pub dir: Node,
    pub parent: Node,
    pub entries: Vec<Node>,
}

pub struct SongFs {
    pub(super) catalog: Arc<Catalog>,
    pub(super) cache: Arc<Cache>,
    pub(super) opts: FsOptions,
    pub(super) handles: Mutex<HashMap<u64, Arc<Handle>>>,
    pub(super) dirs: Mutex<HashMap<u64, Arc<DirSnapshot>>>,
    pub(super) next_fh: AtomicU64,
    pub(super) staged: Mutex<HashMap<u64, Arc<Mutex<Staged>>>>,
    /// Hash each inode had when last opened (decides FOPEN_KEEP_CACHE).
    pub(super) last_open_hash: Mutex<HashMap<u64, Option<String>>>,
    /// Files whose last name went while a handle had them open: `fstat` and reads
    /// through those handles still see them (as on ext4) until the last close.
    pub(super) orphans: Mutex<HashMap<u64, Node>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn ebadf() -> FsError {
    FsError::new(libc::EBADF, "unknown file handle")
}

impl SongFs {
    pub fn new(catalog: Arc<Catalog>, cache: Arc<Cache>, opts: FsOptions) -> FsResult<SongFs> {
        std::fs::create_dir_all(&opts.local_dir)?;
        super::staging::rescue_leftovers(&cache.staging_dir(), &opts.rescue_dir);
        let fs = SongFs {
            catalog,
            cache,
            opts,
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            staged: Mutex::new(HashMap::new()),
            last_open_hash: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
        };
        fs.recover_closed();
        Ok(fs)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub(super) fn local_path(&self, ino: u64) -> PathBuf {
        self.opts.local_dir.join(ino.to_string())
    }

    pub(super) fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles).get(&fh).cloned().ok_or_else(ebadf)
    }

    /// A node as the user sees it: a staged file shows its uncommitted size and mtime.
    pub(super) fn overlay(&self, mut n: Node) -> Node {
        if let Some(st) = self.staged_of(n.ino) {
            let st = lock(&st);
            if !st.is_staged() {
                // A release may have committed while we waited for the lock: `n` may
                // be older than that commit.
                drop(st);
                return self.catalog.get(n.ino).unwrap_or(n);
            }
            n.size = st.size();
            if st.dirty {
                n.mtime_ns = st.mtime_ns;
                // A change of the bytes is a change of the inode too.
                n.ctime_ns = n.ctime_ns.max(st.mtime_ns);
            }
        }
        n
    }

    // ---- namespace ----

    pub fn lookup(&self, parent: u64, name: &str) -> FsResult<Node> {
        Ok(self.overlay(self.catalog.lookup(parent, name)?))
    }

    pub fn getattr(&self, ino: u64) -> FsResult<Node> {
        Ok(self.overlay(self.node_of(ino)?))
    }

    /// The inode, also when it is unlinked but still open.
    pub(super) fn node_of(&self, ino: u64) -> FsResult<Node> {
        match self.catalog.get(ino) {
            Err(CatalogError::NotFound) => lock(&self.orphans)
                .get(&ino)
                .cloned()
                .ok_or_else(|| CatalogError::NotFound.into()),
            r => Ok(r?),
        }
    }

    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let dir = self.catalog.get(ino)?;
        if !dir.is_dir() {
            return Err(CatalogError::NotDir.into());
        }
        let parent = self.catalog.get(dir.parent).unwrap_or_else(|_| dir.clone());
        let entries = self
            .catalog
            .children(ino)?
            .into_iter()
            .map(|n| self.overlay(n))
            .collect();
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.dirs).insert(
            fh,
            Arc::new(DirSnapshot {
                dir,
                parent,
                entries,
            }),
        );
        Ok(fh)
    }

    pub fn dir_snapshot(&self, fh: u64) -> FsResult<Arc<DirSnapshot>> {
        lock(&self.dirs).get(&fh).cloned().ok_or_else(ebadf)
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.dirs).remove(&fh);
    }

    pub fn mkdir(&self, parent: u64, name: &str, mode: u32, uid: u32, gid: u32) -> FsResult<Node> {
        Ok(self
            .catalog
            .create(parent, name, Kind::Dir, mode, uid, gid, None, false)?)
    }

    pub fn rmdir(&self, parent: u64, name: &str) -> FsResult<()> {
        self.catalog.rmdir(parent, name)?;
        Ok(())
    }

    pub fn unlink(&self, parent: u64, name: &str) -> FsResult<()> {
        let gone = self.catalog.unlink(parent, name)?;
        self.forget_content(&gone);
        Ok(())
    }

    /// After an entry left the namespace: its local-only bytes go, and uncommitted
    /// bytes of it are dropped once no handle writes it any more.
    fn forget_content(&self, gone: &Node) {
        if gone.nlink == 0 && self.has_open_handles(gone.ino) {
            lock(&self.orphans).insert(gone.ino, gone.clone());
        }
        if gone.nlink == 0 && gone.local_only && !self.has_open_handles(gone.ino) {
            let _ = std::fs::remove_file(self.local_path(gone.ino));
        }
    }

    fn has_open_handles(&self, ino: u64) -> bool {
        lock(&self.handles).values().any(|h| h.ino == ino)
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        mode: RenameMode,
    ) -> FsResult<()> {
        let replaced = self
            .catalog
            .rename(parent, name, new_parent, new_name, mode)?;
        if let Some(gone) = replaced {
            self.forget_content(&gone);
        }
        let moved = self.catalog.lookup(new_parent, new_name)?;
        if moved.kind == Kind::File && self.opts.is_local_only(new_name) != moved.local_only {
            self.switch_locality(moved)?;
        }
        Ok(())
    }

    /// A file renamed into or out of the local-only names moves its bytes: into
    /// `local/` (it stops being synced), or into the cache as a new blob to upload.
    fn switch_locality(&self, n: Node) -> FsResult<()> {
        let to_local = !n.local_only;
        if to_local {
            let src = match &n.hash {
                Some(h) if n.size > 0 => self.cache.complete_path(h),
                _ => None,
            };
            let dst = self.local_path(n.ino);
            match src {
                Some(src) => {
                    std::fs::copy(&src, &dst)?;
                }
                None if n.size == 0 => {
                    std::fs::File::create(&dst)?;
                }
                None => {
                    // Not local: leave it a synced file rather than lose it.
                    tracing::warn!(ino = n.ino, name = %n.name, "renamed to a local-only name but its content is not on this machine: it stays synced");
                    return Ok(());
                }
            }
            self.catalog
                .set_content(n.ino, None, n.size, n.mtime_ns, true)?;
        } else {
            let src = self.local_path(n.ino);
            let mut st = Staged::default();
            st.stage_copy(&self.cache.staging_dir(), n.ino, &src)?;
            st.truncate(n.size)?;
            st.mtime_ns = n.mtime_ns;
            let sealed = st.seal()?.expect("a fresh copy is dirty");
            self.cache.commit_new(&sealed.path, &sealed.info)?;
            self.catalog
                .set_chunk_root(&sealed.info.hash, &sealed.info.chunk_root())?;
            self.catalog.set_content(
                n.ino,
                Some(&sealed.info.hash),
                sealed.info.size,
                n.mtime_ns,
                false,
            )?;
            let _ = std::fs::remove_file(src);
        }
        Ok(())
    }

    /// chmod/chown/utimens, and truncate. `Ok(None)`: the truncate needs the current
    /// content fetched first (`prepare_staging`, then call again).
    pub fn setattr(&self, ino: u64, a: SetAttr) -> FsResult<Option<Node>> {
        if let Some(size) = a.size {
            if !self.truncate(ino, size)? {
                return Ok(None);
            }
        }
        let change = AttrChange {
            mode: a.mode,
            uid: a.uid,
            gid: a.gid,
            atime_ns: a.atime_ns,
            mtime_ns: a.mtime_ns,
        };
        if !change.is_empty() {
            self.catalog.set_attr(ino, change)?;
            if let (Some(t), Some(st)) = (a.mtime_ns, self.staged_of(ino)) {
                lock(&st).mtime_ns = t;
            }
        }
        self.getattr(ino).map(Some)
    }

    // ---- open, create, release ----

    pub fn open(&self, ino: u64, writable: bool) -> FsResult<Opened> {
        // Whether it is staged first: that waits for a commit in progress (the release
        // of a handle just closed), so the entry read next is not older than it.
        let staged = self.staged_of(ino).is_some_and(|st| {
            let g = lock(&st);
            g.writers > 0 || g.is_staged()
        });
        let node = self.catalog.get(ino)?;
        if node.is_dir() {
            return Err(CatalogError::IsDir.into());
        }
        if writable {
            self.writer_entry(ino, true);
        }
        let keep_cache = {
            let mut last = lock(&self.last_open_hash);
            let same = last.get(&ino) == Some(&node.hash) && !node.local_only;
            last.insert(ino, node.hash.clone());
            same
        };
        let backing = match &node.hash {
            Some(h) if !writable && !staged && !node.local_only => {
                self.cache.open_clean(h).map(|f| (h.clone(), f))
            }
            _ => None,
        };
        Ok(Opened {
            fh: self.new_handle(ino, writable),
            keep_cache,
            backing,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn create(
        &self,
        parent: u64,
        name: &str,
        mode: u32,
        uid: u32,
        gid: u32,
        writable: bool,
    ) -> FsResult<(Node, Opened)> {
        let local_only = self.opts.is_local_only(name);
        let hash = (!local_only).then_some(EMPTY_HASH);
        let node =
            self.catalog
                .create(parent, name, Kind::File, mode, uid, gid, hash, local_only)?;
        if local_only {
            std::fs::File::create(self.local_path(node.ino))?;
        }
        if writable {
            self.writer_entry(node.ino, true);
        }
        lock(&self.last_open_hash).insert(node.ino, node.hash.clone());
        let fh = self.new_handle(node.ino, writable);
        Ok((
            node,
            Opened {
                fh,
                keep_cache: false,
                backing: None,
            },
        ))
    }

    fn new_handle(&self, ino: u64, writable: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(Handle::new(ino, writable)));
        fh
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(h) = lock(&self.handles).remove(&fh) else {
            return Err(ebadf());
        };
        let result = if h.writable {
            self.release_writer(h.ino)
        } else {
            Ok(())
        };
        if self.catalog.get(h.ino).is_err() && !self.has_open_handles(h.ino) {
            // Unlinked while open: now nothing refers to its bytes.
            let _ = std::fs::remove_file(self.local_path(h.ino));
            lock(&self.staged).remove(&h.ino);
            lock(&self.orphans).remove(&h.ino);
        }
        result
    }

    /// Committed-and-open view for `statfs`: how many entries the namespace has.
    pub fn entry_count(&self) -> u64 {
        self.catalog.len() as u64
    }
}
