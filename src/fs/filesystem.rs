//! The filesystem's logic: namespace operations, opening, reading, writing and
//! committing files. It knows nothing of FUSE types (the shim in `fuse.rs` converts);
//! every operation returns `FsResult` with the errno the caller will see.
//!
//! Write path: a handle opened for writing (or `create`) registers as a writer of the
//! inode. The first write or truncate stages the inode: an empty staging file when the
//! content is new or truncated to 0, else a copy of the current content (local-only
//! file, complete cached blob, or — the only slow case — the blob materialized by the
//! cache first, on the runtime). On flush, fsync, release, or a truncate with no writer
//! open, the staged file is sealed (hashed), renamed into the cache as a dirty blob whose
//! upload is durably queued (`Cache::commit_new`), and only then the namespace entry gets
//! the new hash, size and mtime. So a closed file is always either the old content or the
//! new one, both present locally, and a crash before the namespace update leaves the old
//! entry pointing at a blob that is still there. A later write on the same handle stages
//! again. Files whose names match the local-only patterns commit to `$SONGFS_HOME/local/`
//! instead and are never queued for upload.
//!
//! Lock order: `handles` → `staged` map → one `Staged` → `Handle::source`; the catalog's
//! own lock is taken last and never held across a call into this module.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::error::{FsError, FsResult};
use super::read::Handle;
use super::staging::{pread, Staged};
use crate::cache::Cache;
use crate::catalog::{now_ns, AttrChange, Catalog, CatalogError, Kind, Node, RenameMode};
use crate::content::BlobInfo;

/// SHA-256 of zero bytes: the content of every new file.
pub const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

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
    /// A name is local-only if it matches a pattern, or is the SQLite journal/WAL of one
    /// (a backup being written has a `-journal` beside it with the same secrets).
    pub fn is_local_only(&self, name: &str) -> bool {
        let base = ["-journal", "-wal", "-shm"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        self.local_only_patterns
            .iter()
            .any(|p| p.matches(name) || p.matches(base))
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
}

/// A directory listing taken at `opendir`, served to successive `readdir` calls.
pub struct DirSnapshot {
    pub dir: Node,
    pub parent: Node,
    pub entries: Vec<Node>,
}

pub struct SongFs {
    catalog: Arc<Catalog>,
    cache: Arc<Cache>,
    opts: FsOptions,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    dirs: Mutex<HashMap<u64, Arc<DirSnapshot>>>,
    next_fh: AtomicU64,
    staged: Mutex<HashMap<u64, Arc<Mutex<Staged>>>>,
    /// Hash each inode had when last opened (decides FOPEN_KEEP_CACHE).
    last_open_hash: Mutex<HashMap<u64, Option<String>>>,
    /// Files whose last name went while a handle had them open: `fstat` and reads
    /// through those handles still see them (as on ext4) until the last close.
    orphans: Mutex<HashMap<u64, Node>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ebadf() -> FsError {
    FsError::new(libc::EBADF, "unknown file handle")
}

impl SongFs {
    pub fn new(catalog: Arc<Catalog>, cache: Arc<Cache>, opts: FsOptions) -> FsResult<SongFs> {
        std::fs::create_dir_all(&opts.local_dir)?;
        super::staging::rescue_leftovers(&cache.staging_dir(), &opts.rescue_dir);
        Ok(SongFs {
            catalog,
            cache,
            opts,
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            staged: Mutex::new(HashMap::new()),
            last_open_hash: Mutex::new(HashMap::new()),
            orphans: Mutex::new(HashMap::new()),
        })
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    fn local_path(&self, ino: u64) -> PathBuf {
        self.opts.local_dir.join(ino.to_string())
    }

    fn handle(&self, fh: u64) -> FsResult<Arc<Handle>> {
        lock(&self.handles).get(&fh).cloned().ok_or_else(ebadf)
    }

    fn staged_of(&self, ino: u64) -> Option<Arc<Mutex<Staged>>> {
        lock(&self.staged).get(&ino).cloned()
    }

    /// True while a file holds written bytes not committed yet (open for writing): the
    /// sync must not replace its content underneath.
    pub fn has_unsaved_writes(&self, ino: u64) -> bool {
        self.staged_of(ino).is_some_and(|st| lock(&st).is_staged())
    }

    /// A node as the user sees it: a staged file shows its uncommitted size and mtime.
    pub(super) fn overlay(&self, mut n: Node) -> Node {
        if let Some(st) = self.staged_of(n.ino) {
            let st = lock(&st);
            if st.is_staged() {
                n.size = st.size();
                if st.dirty {
                    n.mtime_ns = st.mtime_ns;
                    // A change of the bytes is a change of the inode too.
                    n.ctime_ns = n.ctime_ns.max(st.mtime_ns);
                }
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
    fn node_of(&self, ino: u64) -> FsResult<Node> {
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

    fn truncate(&self, ino: u64, size: u64) -> FsResult<bool> {
        let node = self.catalog.get(ino)?;
        match node.kind {
            Kind::File => {}
            Kind::Dir => return Err(CatalogError::IsDir.into()),
            _ => {
                return Err(FsError::new(
                    libc::EINVAL,
                    "only regular files can be truncated",
                ))
            }
        }
        let st = self.writer_entry(ino, false);
        let result = (|| {
            let mut g = lock(&st);
            // Read the entry again under the lock: a commit by another handle (a close()
            // in any process sharing the file) may have changed it meanwhile, and staging
            // from the older content would lose that commit.
            let node = self.catalog.get(ino)?;
            if size == 0 {
                g.stage_empty(&self.cache.staging_dir(), ino)?;
                g.dirty = true;
                g.mtime_ns = now_ns();
            } else if !g.is_staged() && !self.stage_locally(&node, &mut g)? {
                return Ok(false);
            } else {
                g.truncate(size)?;
            }
            if g.writers == 0 {
                self.commit_locked(ino, &mut g)?;
            }
            Ok(true)
        })();
        self.drop_writer_entry_if_idle(ino);
        result
    }

    // ---- open, create, release ----

    pub fn open(&self, ino: u64, writable: bool) -> FsResult<Opened> {
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
        Ok(Opened {
            fh: self.new_handle(ino, writable),
            keep_cache,
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
            },
        ))
    }

    fn new_handle(&self, ino: u64, writable: bool) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(Handle::new(ino, writable)));
        fh
    }

    /// The inode's shared write state, created if needed; `writer` counts a new handle.
    fn writer_entry(&self, ino: u64, writer: bool) -> Arc<Mutex<Staged>> {
        let st = lock(&self.staged).entry(ino).or_default().clone();
        if writer {
            lock(&st).writers += 1;
        }
        st
    }

    fn drop_writer_entry_if_idle(&self, ino: u64) {
        let mut map = lock(&self.staged);
        if let Some(st) = map.get(&ino) {
            let g = lock(st);
            if g.writers == 0 && !g.dirty {
                drop(g);
                map.remove(&ino);
            }
        }
    }

    /// close(): commit what this handle (or another writer of the inode) wrote.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        if h.writable {
            self.commit(h.ino)?;
        }
        Ok(())
    }

    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        self.flush(fh)
    }

    pub fn release(&self, fh: u64) -> FsResult<()> {
        let Some(h) = lock(&self.handles).remove(&fh) else {
            return Err(ebadf());
        };
        let mut result = Ok(());
        if h.writable {
            result = self.commit(h.ino);
            if let Some(st) = self.staged_of(h.ino) {
                let mut g = lock(&st);
                g.writers = g.writers.saturating_sub(1);
                if g.writers == 0 && g.dirty {
                    // The commit failed: the bytes stay staged for the next try
                    // rather than being lost; a later open/truncate commits them.
                    tracing::warn!(
                        ino = h.ino,
                        "closing with uncommitted bytes kept in staging"
                    );
                }
            }
            self.drop_writer_entry_if_idle(h.ino);
        }
        if self.catalog.get(h.ino).is_err() && !self.has_open_handles(h.ino) {
            // Unlinked while open: now nothing refers to its bytes.
            let _ = std::fs::remove_file(self.local_path(h.ino));
            lock(&self.staged).remove(&h.ino);
            lock(&self.orphans).remove(&h.ino);
        }
        result
    }

    fn commit(&self, ino: u64) -> FsResult<()> {
        let Some(st) = self.staged_of(ino) else {
            return Ok(());
        };
        let mut g = lock(&st);
        self.commit_locked(ino, &mut g)
    }

    /// Seal the staged bytes and make them the inode's content (see the module header).
    fn commit_locked(&self, ino: u64, st: &mut Staged) -> FsResult<()> {
        let node = match self.catalog.get(ino) {
            Ok(n) => n,
            Err(CatalogError::NotFound) => {
                st.discard(); // unlinked: nobody can see these bytes any more
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let Some(sealed) = st.seal()? else {
            return Ok(());
        };
        let result = self.publish(&node, &sealed.path, &sealed.info, sealed.mtime_ns);
        if result.is_err() && sealed.path.exists() {
            st.restore(sealed)?;
        }
        result
    }

    fn publish(&self, node: &Node, staged: &Path, info: &BlobInfo, mtime_ns: i64) -> FsResult<()> {
        if node.local_only {
            let dst = self.local_path(node.ino);
            std::fs::rename(staged, &dst)?;
            self.catalog
                .set_content(node.ino, None, info.size, mtime_ns, true)?;
        } else {
            if info.size > 0 {
                self.cache.commit_new(staged, info)?;
            } else {
                // Empty content needs no blob: size 0 is never fetched.
                let _ = std::fs::remove_file(staged);
            }
            self.catalog
                .set_content(node.ino, Some(&info.hash), info.size, mtime_ns, false)?;
            // The kernel's page cache already holds what was written: keep it.
            lock(&self.last_open_hash).insert(node.ino, Some(info.hash.clone()));
        }
        Ok(())
    }

    // ---- write ----

    /// Writes at any offset. `Ok(None)`: the inode must be staged from content that is
    /// not local yet — run `prepare_staging` on the runtime, then call again.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<Option<u32>> {
        let h = self.handle(fh)?;
        if !h.writable {
            return Err(ebadf());
        }
        let st = self.writer_entry(h.ino, false);
        let mut g = lock(&st);
        if !g.is_staged() {
            let node = self.node_of(h.ino)?;
            if !self.stage_locally(&node, &mut g)? {
                return Ok(None);
            }
        }
        Ok(Some(g.write(offset, data)?))
    }

    /// Stages an inode from bytes already on this machine; false if they are not.
    fn stage_locally(&self, node: &Node, st: &mut Staged) -> FsResult<bool> {
        let dir = self.cache.staging_dir();
        if node.local_only {
            st.stage_copy(&dir, node.ino, &self.local_path(node.ino))?;
        } else if node.size == 0 {
            st.stage_empty(&dir, node.ino)?;
        } else {
            let hash = node.hash.as_deref().unwrap_or(EMPTY_HASH);
            match self.cache.complete_path(hash) {
                Some(p) => st.stage_copy(&dir, node.ino, &p)?,
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Brings the inode's whole content into the cache so it can be staged (slow: a
    /// download). Runs on the runtime, never on a FUSE thread.
    pub async fn prepare_staging(&self, ino: u64) -> FsResult<()> {
        // A commit may land while the download runs: stage only from the content the
        // entry still names, else fetch again (a few times, then let the caller retry).
        for _ in 0..3 {
            let node = self.catalog.get(ino)?;
            if node.local_only || node.size == 0 {
                return Ok(());
            }
            let info = self.blob_info(&node).await?;
            let path = self.cache.materialize(&info).await?;
            let st = self.writer_entry(ino, false);
            let mut g = lock(&st);
            if g.is_staged() {
                return Ok(());
            }
            if self.catalog.get(ino)?.hash == node.hash {
                g.stage_copy(&self.cache.staging_dir(), ino, &path)?;
                return Ok(());
            }
        }
        Ok(())
    }

    async fn blob_info(&self, node: &Node) -> FsResult<BlobInfo> {
        let hash = node.hash.as_deref().unwrap_or(EMPTY_HASH);
        match self.cache.blob_info(hash) {
            Some(i) => Ok(i),
            None => Ok(self.cache.fetch_info(hash, node.size).await?),
        }
    }

    // ---- read ----

    /// Reads from local bytes when they are here. `Ok(None)`: they must be fetched —
    /// run `read_fetch` on the runtime.
    pub fn read(&self, fh: u64, offset: u64, len: u32) -> FsResult<Option<Vec<u8>>> {
        let h = self.handle(fh)?;
        if let Some(st) = self.staged_of(h.ino) {
            let g = lock(&st);
            if g.is_staged() {
                return Ok(Some(g.read(offset, len)?));
            }
        }
        let node = self.node_of(h.ino)?;
        if node.local_only {
            let f = std::fs::File::open(self.local_path(node.ino))?;
            return Ok(Some(pread(&f, offset, len, node.size)?));
        }
        if offset >= node.size || len == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut src = h.source();
        src.retarget(node.hash.clone(), node.size);
        if src.file.is_none() {
            if let Some(p) = node
                .hash
                .as_deref()
                .and_then(|h| self.cache.complete_path(h))
            {
                src.file = std::fs::File::open(p).ok().map(Arc::new);
            }
        }
        match &src.file {
            Some(f) => Ok(Some(pread(f, offset, len, node.size)?)),
            None => Ok(None),
        }
    }

    /// The slow read: verified bytes through the cache, fetching what is missing.
    pub async fn read_fetch(&self, fh: u64, offset: u64, len: u32) -> FsResult<Bytes> {
        let h = self.handle(fh)?;
        let node = self.node_of(h.ino)?;
        if offset >= node.size {
            return Ok(Bytes::new());
        }
        let len = (len as u64).min(node.size - offset) as u32;
        let cached = {
            let mut src = h.source();
            src.retarget(node.hash.clone(), node.size);
            src.info.clone()
        };
        let info = match cached {
            Some(i) => i,
            None => {
                let i = Arc::new(self.blob_info(&node).await?);
                let mut src = h.source();
                if src.hash == node.hash {
                    src.info = Some(i.clone());
                }
                i
            }
        };
        Ok(self
            .cache
            .read_ahead(&h.read_ahead, &info, offset, len)
            .await?)
    }

    /// Committed-and-open view for `statfs`: how many entries the namespace has.
    pub fn entry_count(&self) -> u64 {
        self.catalog.len() as u64
    }

    /// Writes every staged file (used at unmount so nothing written is lost).
    pub fn commit_all(&self) {
        let inos: Vec<u64> = lock(&self.staged).keys().copied().collect();
        for ino in inos {
            if let Err(e) = self.commit(ino) {
                let kept = self.staged_of(ino).and_then(|st| lock(&st).keep());
                tracing::error!(ino, error = %e, staged = ?kept, "could not commit a file at unmount; its bytes are saved to lost+found at the next mount");
            }
        }
    }
}
