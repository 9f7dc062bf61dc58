//! The blob cache: local copies of blobs between the filesystem and the store,
//! bounded in bytes, evicted least-recently-used. It must never serve a byte that was
//! not verified against its hash, never evict a blob that is not uploaded yet or is
//! pinned, and never wait for the store longer than `fetch_timeout`.
//!
//! # The read path
//!
//! A blob's local copy is one sparse data file, `blobs/ab/<hash>`, the size of the
//! blob, plus a bitmap of the 256 KiB chunks (`content::CHUNK_SIZE`) whose bytes are
//! in it. A read of `[offset, offset+len)`:
//!
//! 1. Under the `state` lock: touch the entry in the in-memory LRU (no SQLite write;
//!    touches reach the index in batches, see *Flushing*), note which chunks of the
//!    range are present and the entry's `gen`.
//! 2. A complete blob (every chunk present and the whole-file hash checked) is one
//!    `pread`. This is the hit path: one mutex, one open, one pread.
//! 3. Missing chunks are grouped into runs of consecutive chunks (at most 1 MiB) and
//!    fetched by *flights* (`fetch.rs`): one spawned task per run does one ranged GET,
//!    verifies each chunk against the blob's chunk hashes (a short or corrupt answer is
//!    an `EIO`, logged with the key, never cached), writes the chunks into the data
//!    file and only then sets their bits. A second reader of a chunk in the air joins
//!    its flight (singleflight). The reader waits at most `fetch_timeout`.
//! 4. Present chunks are `pread` from the file; the fetched ones come from memory.
//!    Afterwards the reader checks the entry's `gen` did not change: eviction bumps it
//!    *before* it punches a hole or unlinks, so a reader that raced an eviction retries
//!    instead of serving zeros. Its last try takes every chunk from flights, not the
//!    file, so a reader makes progress even while others evict its chunks as fast as
//!    they arrive (a cache much smaller than the reads in flight).
//! 5. When the last chunk of a blob arrives, a background task hashes the whole file;
//!    a match marks it complete (`complete_path` then hands it to the filesystem for
//!    direct reads), a mismatch drops it.
//!
//! Sequential readers go through `read_ahead` (`prefetch.rs`): it detects sequential
//! access per open file and starts flights ahead of the reader with a window that
//! doubles from 1 MiB to 32 MiB (at most half the cache), several GETs in parallel
//! (one GET stream is capped near 180 MiB/s). A seek resets the window; the foreground
//! read then fetches only the chunks it needs, joining prefetch flights that cover them.
//!
//! # Space
//!
//! The limit bounds *evictable* bytes (not dirty, not pinned, not held by a
//! `materialize`). Before a chunk is written, `make_room` evicts the least recently
//! used other blobs whole (unlink), and when only the blob being read is left (a file
//! larger than the cache) punches its own chunks, lowest index first (the ones a
//! sequential reader left behind). If even that cannot make room the chunk is served
//! without being kept: the file streams through.
//!
//! # Crash safety
//!
//! The index (`index.rs`, tables `cache_*` in mount.db) only ever claims chunks whose
//! bytes reached the disk: a chunk's bits are flushed (`flush`, every second and on
//! drop) after an `fdatasync` of its file. Dropping bytes goes the other way: the row
//! is updated first, then the hole is punched or the file unlinked. At `open`, files
//! without a row are deleted, rows without a file are dropped, staging is emptied, and
//! dirty rows are the upload queue the uploader resumes.
//!
//! # Files
//!
//! `dirty.rs` blobs written here and the upload queue; `info.rs` the chunk-hash
//! records; `fetch.rs` flights (ranged GETs, verification, singleflight); `keep.rs` writing
//! verified chunks and the whole-file check; `prefetch.rs` read-ahead; `evict.rs`
//! making room; `persist.rs` the flush and the recovery at open; `index.rs` the SQLite
//! tables; `state.rs` the in-memory entries, LRU and byte counts; `bitmap.rs`.
//!
//! # Lock order
//!
//! `flights` → `state` → `index`. A lock is never taken while holding one to its
//! right. Data-file writes for fetched chunks and evictions happen under `state`
//! (short: page-cache writes); store requests and fsyncs never hold a lock.

mod bitmap;
mod dirty;
mod evict;
mod fetch;
mod index;
mod info;
mod keep;
mod persist;
mod prefetch;
mod read;
mod state;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use crate::content::{chunk_count, is_valid_hash, BlobInfo};
use crate::store::{ObjectStore, StoreError};
pub use fetch::{EarlyChunk, Lookup};
use index::Index;
use info::check_info;
use persist::{empty_dir, recover_entry, remove_orphans, start_flusher};
pub use prefetch::ReadAhead;
use state::State;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error("blob {hash}: chunk {chunk} from the store does not match its hash (corrupt or truncated in the store)")]
    Corrupt { hash: String, chunk: u64 },
    #[error("blob {hash}: the whole file does not match its hash (corrupt in the store); dropped from the cache")]
    WholeMismatch { hash: String },
    #[error("{key} is not in the store (was it uploaded from the machine that wrote it?)")]
    NotInStore { key: String },
    #[error("blob {hash}: {source}")]
    Store {
        hash: String,
        #[source]
        source: Arc<StoreError>,
    },
    #[error("blob {hash}: the store did not answer within {secs} s (offline?)")]
    Timeout { hash: String, secs: f64 },
    #[error("blob {hash}: bad chunk list ({why})")]
    BadInfo { hash: String, why: String },
    #[error("{hash:?} is not a blob hash (64 lower-case hex digits)")]
    InvalidHash { hash: String },
    #[error("blob {hash} is not in the cache")]
    NotCached { hash: String },
    #[error("no space left for the cache at {path}: free disk space or lower cache_size")]
    NoSpace { path: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("cache index {path}: {source}")]
    Db {
        path: String,
        #[source]
        source: Arc<rusqlite::Error>,
    },
    #[error("cache: {what}")]
    Internal { what: String },
}

impl CacheError {
    /// The errno the filesystem replies with.
    pub fn errno(&self) -> i32 {
        match self {
            CacheError::NoSpace { .. } => libc::ENOSPC,
            CacheError::NotCached { .. } => libc::ENOENT,
            CacheError::InvalidHash { .. } => libc::EINVAL,
            _ => libc::EIO,
        }
    }

    fn io(path: &Path, e: std::io::Error) -> CacheError {
        if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == ErrorKind::StorageFull {
            return CacheError::NoSpace {
                path: path.display().to_string(),
            };
        }
        CacheError::Io {
            path: path.display().to_string(),
            source: Arc::new(e),
        }
    }
}

/// Where a blob's bytes are, as `songfs status` and the filesystem's xattrs show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Only in the store.
    Remote,
    /// Some chunks here.
    Partial,
    /// Whole and verified here, evictable.
    Cached,
    /// Pinned: kept here (or being made local).
    Pinned,
    /// Written here, not uploaded yet.
    Uploading,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheUsage {
    /// All local bytes (evictable or not).
    pub bytes: u64,
    /// The bound on evictable bytes.
    pub limit: u64,
    pub pinned_bytes: u64,
    pub dirty_bytes: u64,
    pub blobs: u64,
}

pub struct Cache {
    blobs_dir: PathBuf,
    staging: PathBuf,
    limit: u64,
    store: Arc<dyn ObjectStore>,
    fetch_timeout: Duration,
    /// Blobs whose fetch just ran out of time, and when: see `with_timeout`.
    gave_up: Mutex<HashMap<String, Instant>>,
    flights: Mutex<fetch::Flights>,
    /// Prefetch GETs in the air, over all open files: see `prefetch`.
    prefetch_slots: Arc<tokio::sync::Semaphore>,
    state: Mutex<State>,
    index: Mutex<Index>,
    upload_wakeup: tokio::sync::Notify,
    me: Weak<Cache>,
}

/// Locks ignoring poison: every critical section leaves the state consistent before
/// anything that can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// Opens (creating) the cache under `dir` and its index in `state_db`, and recovers
    /// after a crash: partial files keep their recorded chunks, files the index does
    /// not know and staging leftovers are removed, dirty blobs stay queued.
    pub fn open(
        dir: &Path,
        state_db: &Path,
        limit_bytes: u64,
        store: Arc<dyn ObjectStore>,
        fetch_timeout: Duration,
    ) -> Result<Arc<Cache>, CacheError> {
        let blobs_dir = dir.join("blobs");
        let staging = dir.join("staging");
        for d in [&blobs_dir, &staging] {
            std::fs::create_dir_all(d).map_err(|e| CacheError::io(d, e))?;
        }
        empty_dir(&staging)?;
        let index = Index::open(state_db)?;
        let pins: HashSet<String> = index.pins()?.into_iter().collect();
        let mut st = State::new(pins);
        for row in index.load_blobs()? {
            match recover_entry(&blobs_dir, &row, &index) {
                Some(mut entry) => {
                    entry.gen = st.new_gen();
                    st.insert(&row.hash, entry);
                }
                None => {
                    if row.dirty {
                        tracing::error!(
                            hash = %row.hash,
                            "a blob queued for upload has no cache file: either a crash \
                             interrupted its commit (the written file was left in staging) \
                             or the file was deleted"
                        );
                    } else {
                        tracing::info!(hash = %row.hash, "cache file missing; forgetting it");
                    }
                    index.delete_blob(&row.hash)?;
                }
            }
        }
        remove_orphans(&blobs_dir, &st)?;
        let cache = Arc::new_cyclic(|me| Cache {
            blobs_dir,
            staging,
            limit: limit_bytes,
            store,
            fetch_timeout,
            gave_up: Mutex::new(HashMap::new()),
            flights: Mutex::new(fetch::Flights::default()),
            prefetch_slots: Arc::new(tokio::sync::Semaphore::new(prefetch::PARALLEL_GETS)),
            state: Mutex::new(st),
            index: Mutex::new(index),
            upload_wakeup: tokio::sync::Notify::new(),
            me: me.clone(),
        });
        {
            // The limit may have been lowered since the last run.
            let mut st = lock(&cache.state);
            cache.make_room(&mut st, 0, None);
        }
        start_flusher(Arc::downgrade(&cache));
        Ok(cache)
    }

    /// Folder on the same filesystem as the cache, where the FS writes files being
    /// written (so commit is a rename).
    pub fn staging_dir(&self) -> PathBuf {
        self.staging.clone()
    }

    /// Path of a blob's data file (complete or not).
    pub fn data_path(&self, hash: &str) -> PathBuf {
        self.blobs_dir.join(&hash[..2.min(hash.len())]).join(hash)
    }

    /// Path of the complete, verified local copy, if the whole blob is here.
    pub fn complete_path(&self, hash: &str) -> Option<PathBuf> {
        let mut st = lock(&self.state);
        if st.entries.get(hash).is_some_and(|e| e.complete) {
            st.touch(hash);
            Some(self.data_path(hash))
        } else {
            None
        }
    }

    /// Opens the complete, verified local copy. Safer than opening `complete_path`
    /// later: the check and the open happen under one lock, so an eviction followed by a
    /// new partial fetch can never slip a sparse file in between. The open file stays
    /// valid after an eviction.
    pub fn open_complete(&self, hash: &str) -> Option<File> {
        let mut st = lock(&self.state);
        if !st.entries.get(hash).is_some_and(|e| e.complete) {
            return None;
        }
        st.touch(hash);
        File::open(self.data_path(hash)).ok()
    }

    /// Opens the complete copy of a blob that is also in the store (not dirty): the only
    /// kind the mount hands to the kernel for passthrough reads, because a passthrough
    /// file could in principle be written behind songfs's back (`recheck` catches that)
    /// and a clean blob can always be fetched again.
    pub fn open_clean(&self, hash: &str) -> Option<File> {
        let mut st = lock(&self.state);
        if !st.entries.get(hash).is_some_and(|e| e.complete && !e.dirty) {
            return None;
        }
        st.touch(hash);
        File::open(self.data_path(hash)).ok()
    }

    /// Hashes a complete blob's file again. One that no longer matches its name is
    /// dropped from the cache (the next read fetches it from the store) and handed back
    /// open, so the caller can keep what was written into it.
    pub fn take_if_changed(&self, hash: &str) -> Option<File> {
        let path = self.complete_path(hash)?;
        let file = File::open(&path).ok()?;
        if crate::content::hash_whole_file(&path).is_ok_and(|(h, _)| h == hash) {
            return None;
        }
        let mut st = lock(&self.state);
        if let Err(e) = self.drop_entry(&mut st, hash) {
            tracing::warn!(hash, "cannot drop a cached blob that changed on disk: {e}");
        }
        Some(file)
    }

    /// Makes the whole blob local (fetching what is missing) and returns its path.
    /// The path stays valid while the caller keeps the file open; the blob may be
    /// evicted afterwards like any other.
    pub async fn materialize(&self, blob: &BlobInfo) -> Result<PathBuf, CacheError> {
        check_info(blob)?;
        if let Some(p) = self.complete_path(&blob.hash) {
            return Ok(p);
        }
        {
            let mut st = lock(&self.state);
            self.ensure_entry(&mut st, blob)?;
            st.update(&blob.hash, |e| e.holds += 1);
        }
        let out = self.materialize_held(blob).await;
        let mut st = lock(&self.state);
        st.update(&blob.hash, |e| e.holds -= 1);
        self.make_room(&mut st, 0, None);
        out
    }

    async fn materialize_held(&self, blob: &BlobInfo) -> Result<PathBuf, CacheError> {
        use futures::StreamExt;
        let info = Arc::new(blob.clone());
        let n = chunk_count(blob.size);
        let step = fetch::MAX_RUN_CHUNKS;
        let groups: Vec<_> = (0..n.div_ceil(step))
            .map(|g| g * step..((g + 1) * step).min(n))
            .collect();
        let mut results = futures::stream::iter(groups)
            .map(|g| {
                let info = info.clone();
                async move {
                    self.with_timeout(&info.hash, self.fetch_missing(&info, g, false, true))
                        .await?
                }
            })
            .buffer_unordered(prefetch::PARALLEL_GETS);
        while let Some(r) = results.next().await {
            r?;
        }
        let all_here = lock(&self.state)
            .entries
            .get(&blob.hash)
            .map(|e| e.all_present());
        match all_here {
            Some(true) => {}
            // Held entries are never evicted: only a failed whole-file check drops one.
            None => {
                return Err(CacheError::WholeMismatch {
                    hash: blob.hash.clone(),
                })
            }
            Some(false) => {
                return Err(CacheError::NoSpace {
                    path: self.blobs_dir.display().to_string(),
                })
            }
        }
        let me = self.me.upgrade().expect("a cache in use is alive");
        let hash = blob.hash.clone();
        tokio::task::spawn_blocking(move || me.verify_whole(&hash))
            .await
            .map_err(|e| CacheError::Internal {
                what: format!("verify task failed: {e}"),
            })??;
        self.complete_path(&blob.hash)
            .ok_or_else(|| CacheError::WholeMismatch {
                hash: blob.hash.clone(),
            })
    }

    pub fn pin(&self, hash: &str) -> Result<(), CacheError> {
        self.set_pin(hash, true)
    }

    pub fn unpin(&self, hash: &str) -> Result<(), CacheError> {
        self.set_pin(hash, false)
    }

    fn set_pin(&self, hash: &str, pinned: bool) -> Result<(), CacheError> {
        if !is_valid_hash(hash) {
            return Err(CacheError::InvalidHash { hash: hash.into() });
        }
        let mut st = lock(&self.state);
        lock(&self.index).set_pin(hash, pinned)?;
        st.set_pinned(hash, pinned);
        if !pinned {
            self.make_room(&mut st, 0, None);
        }
        Ok(())
    }

    /// Frees an uploaded, unpinned blob's local copy. False if it is not here or must
    /// stay (dirty, pinned, in use).
    pub fn evict(&self, hash: &str) -> Result<bool, CacheError> {
        let mut st = lock(&self.state);
        if !st.entries.get(hash).is_some_and(|e| e.evictable()) {
            return Ok(false);
        }
        self.drop_entry(&mut st, hash)?;
        Ok(true)
    }

    pub fn state(&self, hash: &str) -> BlobState {
        let st = lock(&self.state);
        match st.entries.get(hash) {
            Some(e) if e.dirty => BlobState::Uploading,
            _ if st.pins.contains(hash) => BlobState::Pinned,
            Some(e) if e.complete => BlobState::Cached,
            Some(e) if e.bytes > 0 => BlobState::Partial,
            _ => BlobState::Remote,
        }
    }

    pub fn usage(&self) -> CacheUsage {
        let st = lock(&self.state);
        let mut u = CacheUsage {
            limit: self.limit,
            blobs: st.entries.len() as u64,
            ..CacheUsage::default()
        };
        for e in st.entries.values() {
            u.bytes += e.bytes;
            if e.dirty {
                u.dirty_bytes += e.bytes;
            } else if e.pinned {
                u.pinned_bytes += e.bytes;
            }
        }
        u
    }

    // ---- internals ----

    /// `f`, or `CacheError::Timeout` once `fetch_timeout` has passed. A blob whose fetch
    /// ran out of time less than `GAVE_UP_FOR` ago fails at once: the kernel answers an
    /// app's failed read by asking for the page again, which would otherwise double the
    /// app's wait on a store that does not answer.
    pub async fn with_timeout<T>(
        &self,
        hash: &str,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, CacheError> {
        const GAVE_UP_FOR: Duration = Duration::from_secs(2);
        let timeout = || CacheError::Timeout {
            hash: hash.into(),
            secs: self.fetch_timeout.as_secs_f64(),
        };
        if lock(&self.gave_up)
            .get(hash)
            .is_some_and(|at| at.elapsed() < GAVE_UP_FOR)
        {
            return Err(timeout());
        }
        match tokio::time::timeout(self.fetch_timeout, f).await {
            Ok(out) => Ok(out),
            Err(_) => {
                let mut gave_up = lock(&self.gave_up);
                gave_up.retain(|_, at| at.elapsed() < GAVE_UP_FOR);
                gave_up.insert(hash.to_string(), Instant::now());
                Err(timeout())
            }
        }
    }

    fn gen_of(&self, hash: &str) -> Option<u64> {
        lock(&self.state).entries.get(hash).map(|e| e.gen)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.flush();
    }
}
