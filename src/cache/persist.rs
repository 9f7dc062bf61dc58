//! Keeping the index in step with the data files: the periodic flush of chunk
//! bitmaps and access times, and the recovery at open after a crash.
//!
//! The index may only claim chunks whose bytes reached the disk: a flush syncs the
//! data files first, then writes their bitmaps. Recovery trusts the index, drops rows
//! whose file is gone and files the index does not know.

use crate::os::FileExt;
use std::fs::File;
use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use super::bitmap::Bitmap;
use super::index::{BlobRow, Index};
use super::state::{Entry, State};
use super::{lock, Cache, CacheError};
use crate::content::{chunk_count, is_valid_hash, BlobInfo};

impl Cache {
    /// Makes the index catch up with memory: chunk bitmaps (after syncing the data
    /// files they describe) and batched LRU touches. Runs every second and on drop.
    pub fn flush(&self) {
        let (batch, touches) = {
            let mut st = lock(&self.state);
            let batch: Vec<(String, u64, Bitmap, bool)> = st
                .entries
                .iter()
                .filter(|(_, e)| e.present != e.synced)
                .map(|(h, e)| (h.clone(), e.gen, e.present.clone(), e.dirty))
                .collect();
            let touched: Vec<String> = st.touched.drain().collect();
            let touches: Vec<(String, i64)> = touched
                .into_iter()
                .filter_map(|h| st.entries.get(&h).map(|e| (h.clone(), e.last_access)))
                .collect();
            (batch, touches)
        };
        let mut synced = Vec::new();
        for (hash, gen, bits, dirty) in batch {
            let path = self.data_path(&hash);
            // A blob written here was renamed in at commit: its name must last too.
            let dir = path.parent().expect("data paths have a parent");
            let done = File::open(&path)
                .and_then(|f| f.sync_data())
                .and_then(|()| match dirty {
                    true => File::open(dir).and_then(|d| d.sync_all()),
                    false => Ok(()),
                });
            match done {
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
            match index.upsert_blob(&row_with(&hash, entry, &bits)) {
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
    row_with(hash, e, &e.synced)
}

/// The row of an entry whose chunks `synced` reached the disk.
fn row_with(hash: &str, e: &Entry, synced: &Bitmap) -> BlobRow {
    BlobRow {
        hash: hash.into(),
        size: e.size,
        present: synced.as_bytes().to_vec(),
        // Complete only once every byte is synced: recovery trusts a complete row whole.
        complete: e.complete && synced.is_full(),
        dirty: e.dirty,
        last_access: e.last_access,
    }
}

/// Rebuilds an entry from its row, if its data file is still there and whole-sized.
/// A blob written here whose bytes were not all synced before songfs stopped (a power
/// loss after close, before fsync or the next flush) has the chunks its row does not
/// claim checked against its chunk hashes; if one fails, the file is moved to
/// `damaged/` beside `blobs/` (logged) and the blob forgotten.
pub(super) fn recover_entry(blobs_dir: &Path, row: &BlobRow, index: &Index) -> Option<Entry> {
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
    let mut complete = row.complete;
    if row.dirty && !complete {
        if !unsynced_chunks_hold(&path, &present, index.get_info(&row.hash).ok().flatten()) {
            set_aside_damaged(blobs_dir, &path);
            return None;
        }
        complete = true;
    }
    if complete {
        present.fill();
    }
    for i in present.ones() {
        entry.set_present(i);
    }
    entry.synced = present;
    entry.complete = complete;
    entry.dirty = row.dirty;
    entry.last_access = row.last_access;
    Some(entry)
}

/// True when every chunk `synced` does not vouch for matches its recorded hash.
fn unsynced_chunks_hold(path: &Path, synced: &Bitmap, info: Option<BlobInfo>) -> bool {
    let (Some(info), Ok(file)) = (info, File::open(path)) else {
        return false;
    };
    (0..info.chunk_count())
        .filter(|&i| !synced.get(i))
        .all(|i| {
            let range = info.chunk_range(i);
            let mut buf = vec![0; (range.end - range.start) as usize];
            file.read_exact_at(&mut buf, range.start).is_ok() && info.verify_chunk(i, &buf)
        })
}

fn set_aside_damaged(blobs_dir: &Path, path: &Path) {
    let dir = blobs_dir.with_file_name("damaged");
    let to = dir.join(path.file_name().expect("data paths have a name"));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::rename(path, &to)) {
        Ok(()) => tracing::error!(
            file = %to.display(),
            "a file written just before songfs stopped did not reach the disk whole (a power \
             loss before fsync): what did reach it was saved here; the file reads as an error \
             until it is written again"
        ),
        Err(e) => tracing::error!(
            path = %path.display(),
            "a blob written here did not reach the disk whole and cannot be set aside: {e}"
        ),
    }
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
