//! Keeping the index in step with the data files: the periodic flush of chunk
//! bitmaps and access times, and the recovery at open after a crash.
//!
//! The index may only claim chunks whose bytes reached the disk: a flush syncs the
//! data files first, then writes their bitmaps. Recovery trusts the index, drops rows
//! whose file is gone and files the index does not know.

use std::fs::File;
use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use super::bitmap::Bitmap;
use super::index::BlobRow;
use super::state::{Entry, State};
use super::{lock, Cache, CacheError};
use crate::content::{chunk_count, is_valid_hash};

impl Cache {
    /// Makes the index catch up with memory: chunk bitmaps (after syncing the data
    /// files they describe) and batched LRU touches. Runs every second and on drop.
    pub fn flush(&self) {
        let (batch, touches) = {
            let mut st = lock(&self.state);
            let batch: Vec<(String, u64, Bitmap)> = st
                .entries
                .iter()
                .filter(|(_, e)| e.present != e.synced)
                .map(|(h, e)| (h.clone(), e.gen, e.present.clone()))
                .collect();
            let touched: Vec<String> = st.touched.drain().collect();
            let touches: Vec<(String, i64)> = touched
                .into_iter()
                .filter_map(|h| st.entries.get(&h).map(|e| (h.clone(), e.last_access)))
                .collect();
            (batch, touches)
        };
        let mut synced = Vec::new();
        for (hash, gen, bits) in batch {
            let path = self.data_path(&hash);
            match File::open(&path).and_then(|f| f.sync_data()) {
                Ok(()) => synced.push((hash, gen, bits)),
                Err(e) => tracing::warn!(path = %path.display(), "cannot sync cache file: {e}"),
            }
        }
        let mut st = lock(&self.state);
        let mut index = lock(&self.index);
        for (hash, gen, bits) in synced {
            let Some(entry) = st.entries.get_mut(&hash) else {
                continue;
            };
            if entry.gen != gen {
                continue; // bytes dropped meanwhile: the next flush writes a fresh picture
            }
            let mut row = row_of(&hash, entry);
            row.present = bits.as_bytes().to_vec();
            match index.upsert_blob(&row) {
                Ok(()) => entry.synced = bits,
                Err(e) => tracing::warn!(hash, "cannot record cached chunks: {e}"),
            }
        }
        if !touches.is_empty() {
            if let Err(e) = index.touch_many(&touches) {
                tracing::warn!("cannot record cache access times: {e}");
            }
        }
    }
}

pub(super) fn row_of(hash: &str, e: &Entry) -> BlobRow {
    BlobRow {
        hash: hash.into(),
        size: e.size,
        present: e.synced.as_bytes().to_vec(),
        complete: e.complete,
        dirty: e.dirty,
        last_access: e.last_access,
    }
}

/// Rebuilds an entry from its row, if its data file is still there and whole-sized.
pub(super) fn recover_entry(blobs_dir: &Path, row: &BlobRow) -> Option<Entry> {
    if !is_valid_hash(&row.hash) {
        return None;
    }
    let path = blobs_dir.join(&row.hash[..2]).join(&row.hash);
    if std::fs::metadata(&path).ok()?.len() != row.size {
        return None;
    }
    let n = chunk_count(row.size);
    let mut entry = Entry::new(row.size, 0);
    let mut present = Bitmap::from_bytes(row.present.clone(), n)?;
    if row.complete {
        present.fill();
    }
    for i in present.ones() {
        entry.set_present(i);
    }
    entry.synced = present;
    entry.complete = row.complete;
    entry.dirty = row.dirty;
    entry.last_access = row.last_access;
    Some(entry)
}

/// Deletes data files the index does not know (a crash between creating a file and
/// recording it, or between forgetting a file and deleting it).
pub(super) fn remove_orphans(blobs_dir: &Path, st: &State) -> Result<(), CacheError> {
    let fans = std::fs::read_dir(blobs_dir).map_err(|e| CacheError::io(blobs_dir, e))?;
    for fan in fans.flatten() {
        let Ok(files) = std::fs::read_dir(fan.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if !st.entries.contains_key(&name) {
                tracing::debug!(path = %f.path().display(), "removing unrecorded cache file");
                let _ = std::fs::remove_file(f.path());
            }
        }
    }
    Ok(())
}

pub(super) fn empty_dir(dir: &Path) -> Result<(), CacheError> {
    for e in std::fs::read_dir(dir)
        .map_err(|e| CacheError::io(dir, e))?
        .flatten()
    {
        let p = e.path();
        tracing::info!(path = %p.display(), "removing a staging leftover of an unfinished write");
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|e| CacheError::io(&p, e))?;
    }
    Ok(())
}

/// Writes the index every second while the cache lives (holds only a weak reference).
pub(super) fn start_flusher(cache: Weak<Cache>) {
    let spawned = std::thread::Builder::new()
        .name("songfs-cache-flush".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(1000));
            match cache.upgrade() {
                Some(c) => c.flush(),
                None => return,
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the cache flusher (index written on drop only): {e}");
    }
}
