//! Eviction: making room under the byte limit, least recently used blob first, and
//! chunks of the blob being streamed as the last resort.
//!
//! The index is always updated before bytes are dropped (row, then unlink or punch),
//! so after a crash the index never claims bytes that are gone. Dirty, pinned and held
//! blobs are not in the LRU, so nothing here can touch them.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::Path;

use super::persist::row_of;
use super::state::State;
use super::{lock, Cache, CacheError};
use crate::content::CHUNK_SIZE;

impl Cache {
    /// Evicts until `need` more evictable bytes fit under the limit. `protect` is the
    /// blob (and its chunks) being written: never dropped whole, only its other
    /// chunks punched as a last resort. False if room could not be made.
    pub(super) fn make_room(
        &self,
        st: &mut State,
        need: u64,
        protect: Option<(&str, std::ops::Range<u64>)>,
    ) -> bool {
        // Evicting a little more than needed saves an index write per chunk when a
        // large file streams through.
        let slack = (self.limit / 16).min(4 << 20);
        if st.evictable_bytes + need <= self.limit {
            return true;
        }
        let keep = protect.as_ref().map(|(h, _)| *h);
        while st.evictable_bytes + need + slack > self.limit {
            let Some(victim) = st.coldest_except(keep) else {
                break;
            };
            if let Err(e) = self.drop_entry(st, &victim) {
                tracing::error!(hash = victim, "cannot evict: {e}");
                return false;
            }
        }
        if let Some((hash, run)) = protect {
            // Only the blob being written is left: punch its other chunks, lowest
            // index first (behind a sequential reader), several per index write.
            let mut victims = Vec::new();
            if let Some(e) = st.entries.get(hash).filter(|e| e.evictable()) {
                let mut left = st.evictable_bytes;
                for i in e.present.ones().filter(|i| !run.contains(i)) {
                    if left + need + slack <= self.limit {
                        break;
                    }
                    victims.push(i);
                    left -= e.chunk_len(i);
                }
            }
            if !victims.is_empty() {
                if let Err(e) = self.punch(st, hash, &victims) {
                    tracing::error!(hash, "cannot evict chunks: {e}");
                    return false;
                }
            }
        }
        st.evictable_bytes + need <= self.limit
    }

    /// Forgets a blob's local copy: index row first, then the file.
    pub(super) fn drop_entry(&self, st: &mut State, hash: &str) -> Result<(), CacheError> {
        lock(&self.index).delete_blob(hash)?;
        st.remove(hash);
        let path = self.data_path(hash);
        if let Err(e) = std::fs::remove_file(&path) {
            if e.kind() != ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), "cannot remove evicted cache file: {e}");
            }
        }
        tracing::debug!(hash, "evicted");
        Ok(())
    }

    /// Drops chunks of a partial blob: index first, then the holes.
    pub(super) fn punch(
        &self,
        st: &mut State,
        hash: &str,
        chunks: &[u64],
    ) -> Result<(), CacheError> {
        let gen = st.new_gen();
        let entry = st.entries.get(hash).expect("caller checked");
        let mut row = row_of(hash, entry);
        let mut synced = entry.synced.clone();
        for &i in chunks {
            synced.clear(i);
        }
        row.present = synced.as_bytes().to_vec();
        row.complete = false;
        lock(&self.index).upsert_blob(&row)?;
        let lens: Vec<u64> = chunks.iter().map(|&i| entry.chunk_len(i)).collect();
        st.update(hash, |e| {
            for &i in chunks {
                e.clear_present(i);
            }
            e.gen = gen;
        });
        let path = self.data_path(hash);
        for (&i, len) in chunks.iter().zip(lens) {
            if let Err(e) = punch_hole(&path, i * CHUNK_SIZE, len) {
                tracing::warn!(path = %path.display(), "cannot punch a hole (space not freed): {e}");
            }
        }
        Ok(())
    }
}

fn punch_hole(path: &Path, offset: u64, len: u64) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    crate::os::punch_hole(&f, offset, len)
}
