//! Keeping verified chunks: writing them into a blob's sparse data file (after making
//! room), and the whole-file check once every chunk is there.
//!
//! Only bytes that passed their chunk hash ever reach a data file; a bit is set only
//! after its bytes are written. Runs on blocking threads (called from flights).

use crate::os::FileExt;
use std::fs::{File, OpenOptions};

use bytes::Bytes;

use super::bitmap::Bitmap;
use super::persist::row_of;
use super::state::{Entry, State};
use super::{lock, Cache, CacheError};
use crate::content::{blob_key, chunk_count, BlobInfo, CHUNK_SIZE};

impl Cache {
    /// Creates the entry and its sparse data file if the blob has none yet.
    pub(super) fn ensure_entry(&self, st: &mut State, info: &BlobInfo) -> Result<(), CacheError> {
        if let Some(e) = st.entries.get(&info.hash) {
            if e.size != info.size {
                return Err(CacheError::BadInfo {
                    hash: info.hash.clone(),
                    why: format!("{} bytes asked, the cached copy has {}", info.size, e.size),
                });
            }
            return Ok(());
        }
        let path = self.data_path(&info.hash);
        let dir = path.parent().expect("data paths have a parent");
        std::fs::create_dir_all(dir).map_err(|e| CacheError::io(dir, e))?;
        let f = File::create(&path).map_err(|e| CacheError::io(&path, e))?;
        f.set_len(info.size).map_err(|e| CacheError::io(&path, e))?;
        // Chunk hashes of blobs we hold are kept so a restart can serve them.
        lock(&self.index).put_info(info)?;
        let gen = st.new_gen();
        st.insert(&info.hash, Entry::new(info.size, gen));
        Ok(())
    }

    /// Writes verified chunks `first..` of a blob into its data file (called by the
    /// flight that fetched them). Makes room first; stops keeping (the rest streams
    /// through) when no room can be made.
    pub(super) fn keep_chunks(
        &self,
        info: &BlobInfo,
        first: u64,
        chunks: &[Bytes],
    ) -> Result<(), CacheError> {
        let mut st = lock(&self.state);
        self.ensure_entry(&mut st, info)?;
        let path = self.data_path(&info.hash);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| CacheError::io(&path, e))?;
        let run = first..first + chunks.len() as u64;
        for (i, data) in run.clone().zip(chunks) {
            let entry = st.entries.get(&info.hash).expect("ensured above");
            if entry.present.get(i) {
                continue;
            }
            if entry.evictable()
                && !self.make_room(&mut st, data.len() as u64, Some((&info.hash, run.clone())))
            {
                tracing::debug!(hash = %info.hash, chunk = i, "cache full of kept blobs: streaming through");
                break;
            }
            file.write_all_at(data, i * CHUNK_SIZE)
                .map_err(|e| CacheError::io(&path, e))?;
            st.update(&info.hash, |e| e.set_present(i));
        }
        let start_verify = st.update(&info.hash, |e| {
            let go = e.all_present() && !e.complete && !e.verifying;
            e.verifying |= go;
            go
        });
        drop(st);
        if start_verify == Some(true) {
            let me = self.me.upgrade().expect("a cache in use is alive");
            let hash = info.hash.clone();
            let verify = move || {
                if let Err(e) = me.verify_whole(&hash) {
                    tracing::error!(hash, "whole-file check: {e}");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(verify)),
                Err(_) => verify(),
            }
        }
        Ok(())
    }

    /// Hashes a blob whose chunks are all present: a match marks it complete (and
    /// records that durably), a mismatch drops it.
    pub(super) fn verify_whole(&self, hash: &str) -> Result<(), CacheError> {
        let gen = {
            let st = lock(&self.state);
            match st.entries.get(hash) {
                Some(e) if e.complete => return Ok(()),
                Some(e) if e.all_present() => e.gen,
                _ => return Ok(()),
            }
        };
        let path = self.data_path(hash);
        // Every chunk was checked on arrival: only the whole-file hash is left to check.
        let whole = crate::content::hash_whole_file(&path).map_err(|e| CacheError::io(&path, e));
        let synced = File::open(&path)
            .and_then(|f| f.sync_data())
            .map_err(|e| CacheError::io(&path, e));
        let mut st = lock(&self.state);
        if st.entries.get(hash).map(|e| e.gen) != Some(gen) {
            // Changed meanwhile (a chunk evicted): a later fill checks again.
            st.update(hash, |e| e.verifying = false);
            return Ok(());
        }
        let (whole, size) = whole?;
        synced?;
        if whole != hash {
            tracing::error!(
                key = blob_key(hash),
                got = whole,
                "whole file does not match its hash although every chunk did: dropped"
            );
            self.drop_entry(&mut st, hash)?;
            return Err(CacheError::WholeMismatch { hash: hash.into() });
        }
        let mut row = row_of(hash, st.entries.get(hash).expect("checked above"));
        row.complete = true;
        row.present = {
            let mut b = Bitmap::new(chunk_count(size));
            b.fill();
            b.as_bytes().to_vec()
        };
        let written = lock(&self.index).upsert_blob(&row);
        st.update(hash, |e| {
            e.verifying = false;
            if written.is_ok() {
                e.complete = true;
                e.synced = e.present.clone();
            }
        });
        written
    }
}
