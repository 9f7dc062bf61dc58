//! Blobs written on this machine: a staged file adopted as a dirty blob (`commit_new`),
//! made durable by `make_durable` (fsync(2), and the flusher within a second), and the
//! upload queue the uploader drains (`upload_queue`, `mark_uploaded`, `upload_wakeup`).
//! A dirty blob is never evicted.
//!
//! close() is not fsync(): `commit_new` does not wait for the disk. Its row claims no
//! chunk until their bytes are synced (`persist.rs`), so after a power loss the index
//! never vouches for bytes that did not reach the disk: `Cache::open` checks such a
//! blob's chunks against its chunk hashes, recorded in the same transaction.

use std::fs::File;
use std::path::Path;

use super::persist::row_of;
use super::state::Entry;
use super::{check_info, lock, Cache, CacheError};
use crate::content::BlobInfo;

impl Cache {
    /// Adopts a freshly written file: `staged` (in `staging_dir`, hashed as `info`) is
    /// renamed into the cache as a dirty blob and queued for upload (the queue entry is
    /// durable; the bytes are durable after `make_durable` or the next flush). If the blob is already here, `staged` is just removed (dedup).
    /// On error nothing is recorded and `staged` is left where it was.
    pub fn commit_new(&self, staged: &Path, info: &BlobInfo) -> Result<(), CacheError> {
        check_info(info)?;
        let meta = std::fs::metadata(staged).map_err(|e| CacheError::io(staged, e))?;
        if meta.len() != info.size {
            return Err(CacheError::BadInfo {
                hash: info.hash.clone(),
                why: format!(
                    "{} has {} bytes, not {}",
                    staged.display(),
                    meta.len(),
                    info.size
                ),
            });
        }
        let already = lock(&self.state)
            .entries
            .get(&info.hash)
            .is_some_and(|e| e.complete || e.dirty);
        if already {
            std::fs::remove_file(staged).map_err(|e| CacheError::io(staged, e))?;
            return Ok(());
        }
        let target = self.data_path(&info.hash);
        let dir = target
            .parent()
            .expect("data paths have a parent")
            .to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| CacheError::io(&dir, e))?;

        let mut st = lock(&self.state);
        let mut entry = Entry::new(info.size, st.new_gen());
        entry.present.fill();
        entry.bytes = info.size;
        entry.complete = true;
        entry.dirty = true;
        // Row first, then the rename: a crash in between leaves a row without a file
        // (dropped at open) and the written file still in staging, where the filesystem
        // rescues it. The other order would leave an unrecorded file in blobs/, which
        // open deletes.
        lock(&self.index).commit_new(&row_of(&info.hash, &entry), info)?;
        let moved = std::fs::rename(staged, &target).map_err(|e| CacheError::io(&target, e));
        if let Err(e) = moved {
            // Undo: the file goes back to the writer, the index to what it was.
            if !staged.exists() {
                let _ = std::fs::rename(&target, staged);
            }
            let index = lock(&self.index);
            let restored = match st.entries.get(&info.hash) {
                Some(old) => index.upsert_blob(&row_of(&info.hash, old)),
                None => index.delete_blob(&info.hash),
            };
            if let Err(r) = restored {
                tracing::error!(hash = %info.hash, "cannot undo a failed commit in the index: {r}");
            }
            return Err(e);
        }
        st.insert(&info.hash, entry);
        drop(st);
        self.upload_wakeup.notify_one();
        tracing::debug!(hash = %info.hash, size = info.size, "committed, queued for upload");
        Ok(())
    }

    /// Dirty blobs (the durable upload queue), oldest first by hash order.
    pub fn upload_queue(&self) -> Vec<(String, u64)> {
        let st = lock(&self.state);
        let mut q: Vec<_> = st
            .entries
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(h, e)| (h.clone(), e.size))
            .collect();
        q.sort();
        q
    }

    /// fsync(2) of a committed blob: its bytes and its name in the cache folder reach
    /// the disk, then the index records its chunks as there.
    pub fn make_durable(&self, hash: &str) -> Result<(), CacheError> {
        let Some(gen) = lock(&self.state)
            .entries
            .get(hash)
            .filter(|e| e.synced != e.present)
            .map(|e| e.gen)
        else {
            return Ok(());
        };
        let path = self.data_path(hash);
        let dir = path.parent().expect("data paths have a parent");
        File::open(&path)
            .and_then(|f| f.sync_all())
            .and_then(|()| File::open(dir).and_then(|d| d.sync_all()))
            .map_err(|e| CacheError::io(&path, e))?;
        let mut st = lock(&self.state);
        let Some(entry) = st.entries.get_mut(hash).filter(|e| e.gen == gen) else {
            return Ok(()); // dropped meanwhile
        };
        entry.synced = entry.present.clone();
        lock(&self.index).upsert_blob(&row_of(hash, entry))
    }

    /// Records that a dirty blob is safely in the store: it becomes evictable (its
    /// bytes synced first, so the index never calls unsynced bytes a clean copy).
    pub fn mark_uploaded(&self, hash: &str) -> Result<(), CacheError> {
        self.make_durable(hash)?;
        let mut st = lock(&self.state);
        lock(&self.index).set_uploaded(hash)?;
        st.update(hash, |e| e.dirty = false);
        self.make_room(&mut st, 0, None);
        Ok(())
    }

    /// Notified whenever a blob is queued for upload.
    pub fn upload_wakeup(&self) -> &tokio::sync::Notify {
        &self.upload_wakeup
    }
}
