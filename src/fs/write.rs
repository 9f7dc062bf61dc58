//! The write path: staging an inode's new bytes and committing them.
//!
//! A handle opened for writing (or `create`) registers as a writer of the inode. The
//! first write or truncate stages the inode: an empty staging file when the content is
//! new or truncated to 0, else a copy of the current content (local-only file, complete
//! cached blob, or — the only slow case — the blob materialized by the cache first, on
//! the runtime). On a handle's release (sent by the kernel once close has returned: close
//! does not wait for the hash), on fsync, or on a truncate with no writer open, the
//! staged file is sealed (hashed), renamed into the cache as a dirty blob whose upload is
//! durably queued (`Cache::commit_new`), and only then the namespace entry gets the new
//! hash, size and mtime. So a file is always either the old content or the new one, both
//! present locally; a crash before the namespace update leaves the old entry pointing at
//! a blob that is still there, and a file closed but not committed yet is committed at
//! the next start (`recover_closed`). A later write on the same handle stages again.
//! Files whose names match the local-only patterns commit to `$SONGFS_HOME/local/`
//! instead and are never queued for upload. This module never fetches bytes itself
//! (`prepare_staging` asks the cache) and never touches the namespace beyond the
//! committed entry's content.

use std::path::Path;
use std::sync::{Arc, Mutex};

use super::error::{FsError, FsResult};
use super::filesystem::{ebadf, lock, SongFs, EMPTY_HASH};
use super::staging::Staged;
use crate::catalog::{now_ns, time_to_ns, CatalogError, Kind, Node};
use crate::content::BlobInfo;

impl SongFs {
    pub(super) fn staged_of(&self, ino: u64) -> Option<Arc<Mutex<Staged>>> {
        lock(&self.staged).get(&ino).cloned()
    }

    /// True while a file is open for writing or holds written bytes not committed yet:
    /// the sync must not export it (a file just created is empty until its first write
    /// arrives; exported then, other devices got a 0-byte version) nor replace its
    /// content underneath.
    pub fn has_unsaved_writes(&self, ino: u64) -> bool {
        self.staged_of(ino).is_some_and(|st| {
            let st = lock(&st);
            st.writers > 0 || st.is_staged()
        })
    }

    pub(super) fn truncate(&self, ino: u64, size: u64) -> FsResult<bool> {
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

    /// The inode's shared write state, created if needed; `writer` counts a new handle.
    pub(super) fn writer_entry(&self, ino: u64, writer: bool) -> Arc<Mutex<Staged>> {
        let st = lock(&self.staged).entry(ino).or_default().clone();
        if writer {
            let mut g = lock(&st);
            g.writers += 1;
            if let Err(e) = g.mark_open() {
                tracing::warn!(ino, "cannot mark a staged file open again: {e}");
            }
        }
        st
    }

    pub(super) fn drop_writer_entry_if_idle(&self, ino: u64) {
        let mut map = lock(&self.staged);
        if let Some(st) = map.get(&ino) {
            let g = lock(st);
            if g.writers == 0 && !g.dirty {
                drop(g);
                map.remove(&ino);
            }
        }
    }

    /// close(): returns without committing (hashing a large file takes longer than
    /// writing it); the handle's release, which the kernel sends after close returns,
    /// commits. The staging file is marked closed, so a crash in between commits it at
    /// the next start (`recover_closed`) instead of setting it aside.
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        if let Some(st) = self.staged_of(h.ino).filter(|_| h.writable) {
            let mut g = lock(&st);
            if g.dirty {
                g.mark_closed()?;
            }
        }
        Ok(())
    }

    /// fsync(2): commit, then wait for the disk (close does neither: see `flush` and
    /// `cache/dirty.rs`). The namespace entry is durable at commit already (SQLite FULL).
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        let h = self.handle(fh)?;
        if h.writable {
            self.commit(h.ino)?;
        }
        let node = self.catalog.get(h.ino)?;
        if node.local_only {
            // No file yet: nothing was ever written to it.
            if let Ok(f) = std::fs::File::open(self.local_path(node.ino)) {
                f.sync_all()?;
            }
        } else if let Some(hash) = node.hash.as_deref().filter(|_| node.size > 0) {
            self.cache.make_durable(hash)?;
        }
        Ok(())
    }

    pub(super) fn commit(&self, ino: u64) -> FsResult<()> {
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
                self.catalog
                    .set_chunk_root(&info.hash, &info.chunk_root())?;
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

    /// Writes at any offset. `Ok(None)`: the inode must be staged from content that is
    /// not local yet — run `prepare_staging` on the runtime, then call again.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<Option<u32>> {
        self.change_staged(fh, |g| g.write(offset, data))
    }

    /// fallocate(2) through a handle open for writing, as `write` (`Ok(None)`: stage first).
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> FsResult<Option<()>> {
        self.change_staged(fh, |g| g.fallocate(offset, len, mode))
    }

    /// Runs `change` on the handle's staged bytes, staging them from local content first.
    fn change_staged<T>(
        &self,
        fh: u64,
        change: impl FnOnce(&mut Staged) -> std::io::Result<T>,
    ) -> FsResult<Option<T>> {
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
        Ok(Some(change(&mut g)?))
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
            // Checked and opened under the cache's lock: an eviction can never hand us
            // a sparse file being fetched again.
            match self.cache.open_complete(hash) {
                Some(f) => st.stage_from(&dir, node.ino, &f)?,
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
            let info = self.blob_info(&node, None).await?;
            self.cache.materialize(&info).await?;
            let st = self.writer_entry(ino, false);
            let mut g = lock(&st);
            if g.is_staged() {
                return Ok(());
            }
            // False when a commit changed the entry or the blob was evicted meanwhile.
            let node = self.catalog.get(ino)?;
            if self.stage_locally(&node, &mut g)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The writer part of `release`: commit, then stop counting this handle (under one
    /// lock, so the sync never sees the file closed but not committed).
    pub(super) fn release_writer(&self, ino: u64) -> FsResult<()> {
        let result = match self.staged_of(ino) {
            Some(st) => {
                let mut g = lock(&st);
                let result = self.commit_locked(ino, &mut g);
                g.writers = g.writers.saturating_sub(1);
                if g.writers == 0 && g.dirty {
                    // The commit failed: the bytes stay staged for the next try
                    // rather than being lost; a later open/truncate commits them.
                    tracing::warn!(ino, "closing with uncommitted bytes kept in staging");
                }
                result
            }
            None => Ok(()),
        };
        self.drop_writer_entry_if_idle(ino);
        result
    }

    /// At start: commits the files that were closed but whose commit a crash cut short
    /// (`staging::closed_leftovers`), as their inodes' content. One whose inode is gone
    /// stays in lost+found.
    pub(super) fn recover_closed(&self) {
        for (path, ino) in super::staging::closed_leftovers(&self.opts.rescue_dir) {
            let recovered = (|| -> FsResult<()> {
                let node = self.catalog.get(ino)?;
                if node.kind != Kind::File {
                    return Err(CatalogError::IsDir.into());
                }
                let info = crate::content::hash_file(&path)?;
                let modified = std::fs::metadata(&path)?.modified();
                let mtime_ns = modified.map_or_else(|_| now_ns(), time_to_ns);
                self.publish(&node, &path, &info, mtime_ns)
            })();
            match recovered {
                Ok(()) => tracing::warn!(
                    ino,
                    "a file closed just before songfs stopped was committed now"
                ),
                Err(e) => {
                    tracing::error!(ino, file = %path.display(), "a file closed just before songfs stopped could not be committed; its bytes stay here: {e}")
                }
            }
        }
    }

    /// After the last close of an inode whose cache file the kernel had as a passthrough
    /// backing shared with a writer (`passthrough.rs`): a shared writable mmap writes
    /// that file directly. If it changed, its bytes are the inode's new content (or, if
    /// the inode moved on meanwhile, saved to lost+found); the cache drops the blob.
    pub fn settle_backing(&self, ino: u64, hash: &str) {
        let Some(changed) = self.cache.take_if_changed(hash) else {
            return;
        };
        let kept = (|| -> FsResult<String> {
            let node = self.catalog.get(ino)?;
            if node.hash.as_deref() == Some(hash) {
                let st = self.writer_entry(ino, false);
                let mut g = lock(&st);
                if !g.is_staged() {
                    g.stage_from(&self.cache.staging_dir(), ino, &changed)?;
                    g.dirty = true;
                    g.mtime_ns = now_ns();
                    self.commit_locked(ino, &mut g)?;
                    drop(g);
                    self.drop_writer_entry_if_idle(ino);
                    return Ok("committed as the file's new content".into());
                }
            }
            let to = self.opts.rescue_dir.join(format!("mmap-{ino}-{hash}"));
            std::fs::create_dir_all(&self.opts.rescue_dir)?;
            std::io::copy(&mut &changed, &mut std::fs::File::create(&to)?)?;
            Ok(format!("saved to {}", to.display()))
        })();
        match kept {
            Ok(how) => tracing::warn!(ino, hash, "bytes written through a shared mmap beside a passthrough reader: {how}"),
            Err(e) => tracing::error!(ino, hash, "bytes written through a shared mmap beside a passthrough reader could not be kept: {e}"),
        }
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
